"""Per-call synthesis options.

Two kinds of configuration exist (DESIGN.md rule 1): a voice's frozen,
load-time config (``tts.voice``), and these per-call options whose ``None``
fields mean "the voice's default". Every field is documented once, here; the
CLI flags of ``tts-synth``/``tts-server`` and the gRPC validation are derived
from these fields, never written again.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from tts.errors import InvalidInputError
from tts.text.normalizer import NORMALIZERS


#: Tacotron2 stop rules (``stop_rule``); ``tts.models.tacotron2.STOP_RULES`` names the same two
#: (kept here too so that importing the options does not import torch).
STOP_RULES = ("gate", "attention")


def _opt(help: str, *, type: type, lo: float | None = None, hi: float | None = None,
         lo_open: bool = False, hi_open: bool = False, metavar: str | None = None,
         choices: tuple[str, ...] | None = None) -> Any:
    return field(default=None, metadata={
        "help": help, "type": type, "lo": lo, "hi": hi,
        "lo_open": lo_open, "hi_open": hi_open, "metavar": metavar, "choices": choices,
    })


@dataclass(frozen=True)
class SynthesisOptions:
    """Options of one synthesis call; ``None`` means the voice's default."""

    sigma: float | None = _opt(
        "WaveGlow noise scale (0 = deterministic; NVIDIA uses 0.6 to 0.9)", type=float, lo=0.0, hi=10.0)
    denoiser_strength: float | None = _opt(
        "strength of the STFT denoiser that removes WaveGlow's bias (0 = off)", type=float, lo=0.0, hi=10.0)
    speed: float | None = _opt(
        "speaking rate for FastSpeech, 1.0 = normal, 2.0 = twice as fast (length-regulator alpha = 1/speed)",
        type=float, lo=0.1, hi=10.0)
    max_decoder_steps: int | None = _opt(
        "Tacotron2: most mel frames one text piece may produce", type=int, lo=1, hi=100_000, metavar="N")
    gate_threshold: float | None = _opt(
        "Tacotron2: stop once sigmoid(gate) exceeds this", type=float, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    prenet_dropout: float | None = _opt(
        "Tacotron2: prenet dropout probability at inference (NVIDIA keeps 0.5; 0 = deterministic)",
        type=float, lo=0.0, hi=1.0, hi_open=True)
    stop_rule: str | None = _opt(
        "Tacotron2: when a text piece ends: gate (the stop gate alone, or max_decoder_steps: NVIDIA's reference) "
        "or attention (also once the attention has sat on the last symbol for 50 frames, or at a step budget of "
        "10 frames per symbol + 120: no run-on past the text; pieces whose gate fires end exactly as with gate)",
        type=str, choices=STOP_RULES, metavar="|".join(STOP_RULES))
    seed: int | None = _opt(
        "random seed for prenet dropout masks and WaveGlow noise (reproducible output)",
        type=int, lo=0, hi=2**63 - 1, metavar="N")
    text_normalizer: str | None = _opt(
        "text normalizer: full (money, dates, times, units, phone numbers, URLs, acronyms, ... read as "
        "words before the cleaners) or dle (NVIDIA's english_cleaners only, bit-exact with its reference); "
        "voice folders default to full, checkpoints given one by one to dle",
        type=str, choices=NORMALIZERS, metavar="|".join(NORMALIZERS))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise InvalidInputError naming the field when a set value is out of range."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            m = f.metadata
            kind = m["type"]
            if kind is str:
                if not isinstance(value, str) or value not in m["choices"]:
                    raise InvalidInputError(f"{f.name} must be one of {', '.join(m['choices'])}, got {value!r}",
                                            field=f.name)
                continue
            if kind is int:
                if isinstance(value, bool) or not isinstance(value, int):
                    if isinstance(value, float) and value.is_integer():
                        object.__setattr__(self, f.name, int(value))
                        value = int(value)
                    else:
                        raise InvalidInputError(f"{f.name} must be an integer, got {value!r}", field=f.name)
            else:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise InvalidInputError(f"{f.name} must be a number, got {value!r}", field=f.name)
                value = float(value)
                if not math.isfinite(value):
                    raise InvalidInputError(f"{f.name} must be a finite number, got {value!r}", field=f.name)
                object.__setattr__(self, f.name, value)
            lo, hi = m["lo"], m["hi"]
            if lo is not None and (value < lo or (m["lo_open"] and value == lo)):
                raise InvalidInputError(f"{f.name} must be {_range_text(m)}, got {value!r}", field=f.name)
            if hi is not None and (value > hi or (m["hi_open"] and value == hi)):
                raise InvalidInputError(f"{f.name} must be {_range_text(m)}, got {value!r}", field=f.name)

    def merged_over(self, defaults: SynthesisOptions) -> SynthesisOptions:
        """These options with every ``None`` field taken from ``defaults``."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in values.items():
            if value is None:
                values[name] = getattr(defaults, name)
        return SynthesisOptions(**values)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: The defaults of a voice that states none: NVIDIA DeepLearningExamples' inference defaults.
#: Longest text one request (or one phrase line) may have, in characters: the one default of the
#: CLI's and the server's ``--max-chars`` and ``Synthesizer(max_text_chars=)``.
DEFAULT_MAX_TEXT_CHARS = 10_000

#: NVIDIA DeepLearningExamples' inference defaults, the defaults of a voice that states none (checkpoints
#: given one by one): its text is read by NVIDIA's cleaners only (``dle``), as its ``inference.py`` reads
#: it. A voice folder's manifest defaults to the ``full`` normalizer (``tts.voice``).
REFERENCE_DEFAULTS = SynthesisOptions(
    sigma=0.9, denoiser_strength=0.01, speed=1.0, max_decoder_steps=2000,
    gate_threshold=0.5, prenet_dropout=0.5, stop_rule="attention", seed=None, text_normalizer="full")


def _range_text(m: dict[str, Any]) -> str:
    lo, hi = m["lo"], m["hi"]
    left = "(" if m["lo_open"] else "["
    right = ")" if m["hi_open"] else "]"
    if lo is not None and hi is not None:
        return f"in {left}{lo:g}, {hi:g}{right}"
    if lo is not None:
        return f"> {lo:g}" if m["lo_open"] else f">= {lo:g}"
    return f"< {hi:g}" if m["hi_open"] else f"<= {hi:g}"


def option_fields() -> list[dataclasses.Field]:
    """The fields of SynthesisOptions, in order, with their metadata (help, type, range)."""
    return list(dataclasses.fields(SynthesisOptions))


def flag_name(field_name: str) -> str:
    """The command-line flag of an option field, e.g. ``denoiser_strength`` -> ``--denoiser-strength``."""
    return "--" + field_name.replace("_", "-")
