"""Validation at the edge: a proto ``SynthesizeRequest`` -> a checked ``ValidRequest``.

Every client mistake raises ``InvalidInputError`` whose ``field`` is the
proto field path (``text``, ``voice``, ``encoding``, ``sample_rate_hz``,
``options.sigma``, ...), and whose message names that field. Ranges of the
synthesis options are those of ``tts.options.SynthesisOptions`` (defined
once there).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass

from tts.errors import InvalidInputError
from tts.options import SynthesisOptions
from tts.server.audio import MAX_RATE_HZ, MIN_RATE_HZ, STREAMABLE, Encoding
from tts.server.errors import clip

logger = logging.getLogger(__name__)

#: proto ``SynthesisOptions`` field -> ``tts.options.SynthesisOptions`` field.
OPTION_FIELDS = {
    "speaking_rate": "speed",
    "denoiser_strength": "denoiser_strength",
    "sigma": "sigma",
    "seed": "seed",
    "max_decoder_steps": "max_decoder_steps",
    "gate_threshold": "gate_threshold",
    "prenet_dropout": "prenet_dropout",
    "text_normalizer": "text_normalizer",
    "stop_rule": "stop_rule",
}
_PROTO_NAME = {v: k for k, v in OPTION_FIELDS.items()}


@dataclass(frozen=True)
class ValidRequest:
    """A request that passed every edge check."""

    #: Text to speak (non-empty, within the server's maximum).
    text: str
    #: Resolved voice name (never empty).
    voice: str
    #: Output encoding (never UNSPECIFIED).
    encoding: Encoding
    #: Output rate in Hz; 0 = the voice's own.
    sample_rate_hz: int
    #: Per-call options; ``None`` fields take the voice's defaults.
    options: SynthesisOptions
    #: Whether the response carries word timings.
    word_timings: bool = False


def validate_request(request, *, voices: Collection[str], default_voice: str, max_text_chars: int,
                     streaming: bool = False) -> ValidRequest:
    """Checks a ``tts.v1.SynthesizeRequest``; raises InvalidInputError naming the field."""
    text = request.text
    if not text or not text.strip():
        raise InvalidInputError("text: must not be empty", field="text")
    if len(text) > max_text_chars:
        raise InvalidInputError(
            f"text: {len(text)} characters is over the maximum of {max_text_chars}", field="text")

    voice = request.voice or default_voice
    if voice not in voices:
        raise InvalidInputError(
            f"voice: unknown voice {clip(request.voice)!r}; available: {', '.join(sorted(voices))}", field="voice")

    raw_enc = int(request.encoding)
    try:
        encoding = Encoding(raw_enc)
    except ValueError:
        raise InvalidInputError(
            f"encoding: {raw_enc} is not an AudioEncoding value "
            f"({', '.join(f'{e.name}={e.value}' for e in Encoding)})", field="encoding") from None
    if streaming:
        if encoding == Encoding.UNSPECIFIED:
            encoding = Encoding.LINEAR_PCM16
        if encoding not in STREAMABLE:
            raise InvalidInputError(
                f"encoding: StreamingSynthesize sends raw samples; use "
                f"{', '.join(e.name for e in STREAMABLE)}, not {encoding.name}",
                field="encoding")
    elif encoding == Encoding.UNSPECIFIED:
        encoding = Encoding.WAV

    rate = int(request.sample_rate_hz)
    if rate != 0 and not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise InvalidInputError(
            f"sample_rate_hz: {rate} is outside {MIN_RATE_HZ}..{MAX_RATE_HZ} (or 0 = the voice's rate)",
            field="sample_rate_hz")

    return ValidRequest(text=text, voice=voice, encoding=encoding, sample_rate_hz=rate,
                        options=options_from_proto(request.options if request.HasField("options") else None),
                        word_timings=bool(getattr(request, "word_timings", False)))


def options_from_proto(msg) -> SynthesisOptions:
    """``tts.v1.SynthesisOptions`` (or None) -> ``tts.options.SynthesisOptions``; unset fields stay None."""
    if msg is None:
        return SynthesisOptions()
    values = {}
    for proto_name, name in OPTION_FIELDS.items():
        if msg.HasField(proto_name):
            value = getattr(msg, proto_name)
            # A string option is one of a few short names; a longer one is wrong whatever its end,
            # and its error message echoes it: cut it as every echoed user string is.
            values[name] = clip(value) if isinstance(value, str) else value
    try:
        return SynthesisOptions(**values)
    except InvalidInputError as exc:
        proto_name = _PROTO_NAME.get(exc.field or "", exc.field or "?")
        path = f"options.{proto_name}"
        message = str(exc).replace(exc.field or "", proto_name, 1) if exc.field else str(exc)
        raise InvalidInputError(f"{path}: {message}", field=path) from None
