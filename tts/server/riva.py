"""NVIDIA Riva's ``nvidia.riva.tts.RivaSpeechSynthesis``: a second door onto the same engine.

Riva clients (``nvidia-riva-client``'s ``SpeechSynthesisService``, ``riva_tts_client``,
anything generated from NVIDIA's ``riva_tts.proto``) talk to this server as they would
to a Riva server, on the same port as ``tts.v1``. Everything behind the door is shared
with ``tts.v1``: the ``ServingEngine`` (batching, scheduling, streaming), request
validation and limits (``validate_request``: text length, sample rate), the one
interceptor (auth, request ids, error -> status, call metrics) and the drain on
shutdown (calls are counted by the ``tts.v1`` servicer). This module only maps:

- ``voice_name``: empty -> the default voice; one of this server's voice names as
  it is; a Riva voice name of the English-US family (``English-US.Female-1``,
  ``English-US-Female-1``, ...) -> the default voice; anything else is
  INVALID_ARGUMENT naming the voices there are.
- ``language_code``: empty, ``en`` or ``en-XX`` / ``en_XX`` (the voices speak
  English); any other language is INVALID_ARGUMENT naming it.
- ``encoding`` (Riva's ``AudioEncoding``): ``LINEAR_PCM`` (raw 16-bit little-endian
  samples, no header, as Riva sends them; also for ``ENCODING_UNSPECIFIED``),
  ``FLAC``, ``OGGOPUS`` (48 kHz when the asked rate is not an Opus rate), ``MULAW``
  and ``ALAW`` (raw 8-bit G.711). ``SynthesizeOnline`` streams raw samples:
  ``LINEAR_PCM``, ``MULAW`` or ``ALAW``.
- ``sample_rate_hz``: 0 = the voice's rate; else the audio is resampled to it.
- ``custom_dictionary``: ``word  PHONEMES`` entries separated by commas, ARPAbet
  phonemes (``tts.text.lexicon.parse_custom_dictionary``), used for this call on top
  of the server's ``--lexicon``.
- ``zero_shot_data`` with an audio prompt is INVALID_ARGUMENT (no zero-shot voices
  here); fields this revision of the proto does not know (newer clients'
  ``custom_configuration``, ``enable_word_time_offsets``) are ignored.

Responses carry ``audio``, ``meta.text`` (the request's text), ``meta.processed_text``
(what was spoken, as ``tts.v1``'s ``normalized_text``) and the request's ``id``.
``SynthesizeOnline`` takes a stream of requests (newer clients send a text in several
requests), speaks each request's text in turn, and sends audio as it is vocoded;
the last response of each text carries its ``meta``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass

import numpy as np

from tts import audio as _audio
from tts.server import audio as server_audio
from tts.errors import InvalidInputError
from tts.options import SynthesisOptions
from tts.server.proto_gen import riva_audio_pb2, riva_tts_pb2, riva_tts_pb2_grpc, tts_pb2
from tts.server.servicer import TextToSpeechServicer, _deadline, _StreamResampler
from tts.server.validation import validate_request
from tts.text.lexicon import parse_custom_dictionary

logger = logging.getLogger(__name__)

SERVICE_NAME = riva_tts_pb2.DESCRIPTOR.services_by_name["RivaSpeechSynthesis"].full_name

_RIVA = riva_audio_pb2.AudioEncoding
#: Riva ``AudioEncoding`` value -> ``tts.audio`` encoding name.
ENCODINGS = {_RIVA.ENCODING_UNSPECIFIED: "LINEAR_PCM16", _RIVA.LINEAR_PCM: "LINEAR_PCM16", _RIVA.FLAC: "FLAC",
             _RIVA.OGGOPUS: "OGG_OPUS", _RIVA.MULAW: "MULAW", _RIVA.ALAW: "ALAW"}
#: Encodings ``SynthesizeOnline`` streams (headerless: chunks concatenate).
STREAMABLE = ("LINEAR_PCM16", "MULAW", "ALAW")

#: Riva's names of its English-US voices ("English-US.Female-1", "English-US-Male-2", ...).
RIVA_VOICE_RE = re.compile(r"^English-US(?:[.-].*)?$", re.IGNORECASE)
_ENGLISH_RE = re.compile(r"^en(?:[-_][A-Za-z0-9]+)*$", re.IGNORECASE)
#: The language every voice is listed with.
LANGUAGE_CODE = "en-US"


@dataclass(frozen=True)
class RivaRequest:
    """A Riva request that passed every check."""

    text: str
    voice: str
    #: ``tts.audio`` encoding name.
    encoding: str
    #: Output rate in Hz; 0 = the voice's own.
    sample_rate_hz: int
    #: The TextPlan (or, from a fake synthesizer, the text).
    plan: object


class RivaSpeechSynthesisServicer(riva_tts_pb2_grpc.RivaSpeechSynthesisServicer):
    """Riva's TTS service on top of the ``tts.v1`` servicer's engine, limits, metrics and drain."""

    def __init__(self, tts: TextToSpeechServicer) -> None:
        self.tts = tts
        self.engine = tts.engine

    # ------------------------------------------------------------ mapping
    def _voice(self, name: str) -> str:
        voices = self.engine.voice_names
        if not name or name in voices:
            return name or self.engine.default_voice
        if RIVA_VOICE_RE.match(name):
            return self.engine.default_voice
        raise InvalidInputError(
            f"voice_name: unknown voice {name!r}; available: {', '.join(sorted(voices))} (Riva's English-US.* "
            "names are the default voice)", field="voice_name")

    def _check(self, request, *, streaming: bool) -> RivaRequest:
        lang = request.language_code.strip()
        if lang and not _ENGLISH_RE.match(lang):
            raise InvalidInputError(f"language_code: {request.language_code!r} is not served here; the voices "
                                    f"speak English (en, {LANGUAGE_CODE})", field="language_code")
        voice = self._voice(request.voice_name)
        raw = int(request.encoding)
        encoding = ENCODINGS.get(raw)
        if encoding is None:
            known = ", ".join(f"{_RIVA.Name(v)}={v}" for v in ENCODINGS if v)
            raise InvalidInputError(f"encoding: {raw} is not an AudioEncoding this server sends ({known})",
                                    field="encoding")
        if streaming and encoding not in STREAMABLE:
            raise InvalidInputError(f"encoding: SynthesizeOnline streams raw samples; use LINEAR_PCM, MULAW or "
                                    f"ALAW, not {_RIVA.Name(raw)}", field="encoding")
        if request.HasField("zero_shot_data") and request.zero_shot_data.audio_prompt:
            raise InvalidInputError("zero_shot_data: zero-shot voices are not served here; leave it empty",
                                    field="zero_shot_data")
        # The shared edge checks (text, its length, the rate), on the equivalent tts.v1 request.
        valid = validate_request(
            tts_pb2.SynthesizeRequest(text=request.text, voice=voice, encoding=tts_pb2.LINEAR_PCM16,
                                      sample_rate_hz=request.sample_rate_hz),
            voices=self.engine.voice_names, default_voice=self.engine.default_voice,
            max_text_chars=self.tts.max_text_chars, streaming=streaming)
        lexicon = parse_custom_dictionary(request.custom_dictionary)
        plan = self.engine.check_text(voice, valid.text, valid.options, lexicon=lexicon)
        return RivaRequest(valid.text, voice, encoding, valid.sample_rate_hz,
                           valid.text if plan is None else plan)

    def _rate(self, voice: str, requested: int, encoding: str) -> int:
        rate = requested or self.engine.sample_rate(voice)
        if encoding == "OGG_OPUS" and rate not in _audio.OPUS_RATES:
            rate = 48000
        return rate

    @staticmethod
    def _meta(request, processed: str):
        return riva_tts_pb2.SynthesizeSpeechResponseMetadata(text=request.text, processed_text=processed)

    # ------------------------------------------------------------- unary
    async def Synthesize(self, request, context):
        self.tts._enter()
        try:
            return await self._synthesize(request, context)
        finally:
            self.tts._leave()

    async def _synthesize(self, request, context):
        t0 = time.perf_counter()
        req = self._check(request, streaming=False)
        out = await self.engine.synthesize(req.voice, req.plan, SynthesisOptions(), deadline=_deadline(context))
        result = out.result
        t_enc = time.perf_counter()
        rate = self._rate(req.voice, req.sample_rate_hz, req.encoding)

        def encode() -> tuple[bytes, int]:
            samples = _audio.resample(np.asarray(result.audio, np.float32).reshape(-1), result.sample_rate, rate)
            return _audio.encode(samples, rate, req.encoding), len(samples)

        cheap = server_audio.inline(len(result.audio), result.sample_rate, server_audio.Encoding[req.encoding], rate)
        data, n = encode() if cheap else await asyncio.to_thread(encode)        # raw samples: no thread hop
        encode_s = time.perf_counter() - t_enc
        self.tts._observe(out.queue_seconds, result.timings, encode_s, time.perf_counter() - t0, n / rate)
        response = riva_tts_pb2.SynthesizeSpeechResponse(audio=data, meta=self._meta(request, result.normalized_text))
        if request.HasField("id"):
            response.id.CopyFrom(request.id)
        return response

    # --------------------------------------------------------- streaming
    async def SynthesizeOnline(self, request_iterator, context):
        self.tts._enter()
        try:
            async for request in request_iterator:
                async for response in self._stream(request, context):
                    yield response
        finally:
            self.tts._leave()

    async def _stream(self, request, context):
        t0 = time.perf_counter()
        req = self._check(request, streaming=True)
        src_rate = self.engine.sample_rate(req.voice)
        rate = self._rate(req.voice, req.sample_rate_hz, req.encoding)
        resampler = _StreamResampler(src_rate, rate)
        metrics = self.tts.metrics
        sent = 0
        async for piece in self.engine.stream(req.voice, req.plan, SynthesisOptions(), deadline=_deadline(context)):
            samples = resampler.push(piece.audio, final=piece.last)
            if len(samples) == 0 and not piece.last:
                continue
            if sent == 0 and len(samples) and metrics is not None:
                metrics.ttfa.observe(time.perf_counter() - t0)
            response = riva_tts_pb2.SynthesizeSpeechResponse(audio=_audio.encode(samples, rate, req.encoding))
            if piece.last:
                response.meta.CopyFrom(self._meta(request, piece.normalized_text))
            if request.HasField("id"):
                response.id.CopyFrom(request.id)
            sent += len(samples)
            yield response
        total = time.perf_counter() - t0
        if metrics is not None and total > 0:
            metrics.rtf.observe((sent / rate) / total)
            metrics.audio_seconds.inc(sent / rate)

    # ------------------------------------------------------------ config
    async def GetRivaSynthesisConfig(self, request, context):
        voices = self.engine.voices()
        if request.model_name and request.model_name not in {v.name for v in voices}:
            raise InvalidInputError(f"model_name: unknown model {request.model_name!r}; available: "
                                    f"{', '.join(sorted(v.name for v in voices))}", field="model_name")
        encodings = ",".join(_RIVA.Name(v) for v in ENCODINGS if v)
        configs = []
        for v in voices:
            if request.model_name and v.name != request.model_name:
                continue
            configs.append(riva_tts_pb2.RivaSynthesisConfigResponse.Config(model_name=v.name, parameters={
                "voice_name": v.name, "language_code": LANGUAGE_CODE, "sample_rate": str(v.sample_rate),
                "acoustic_model": v.acoustic_model, "is_default": "true" if v.is_default else "false",
                "encodings": encodings, "max_text_chars": str(self.tts.max_text_chars), "type": "offline,online"}))
        return riva_tts_pb2.RivaSynthesisConfigResponse(model_config=configs)
