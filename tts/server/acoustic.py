"""Acoustic model only (text -> mel pieces), for streaming calls that vocode in chunks.

Runs the ``Synthesizer``'s own text planning and acoustic stage so the mels
are exactly those of the unary path; only the vocoder differs (chunked).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from tts.options import SynthesisOptions

logger = logging.getLogger(__name__)


@dataclass
class MelResult:
    """The mels of one text, piece by piece."""

    #: Per piece: (mel float32 [n_mel, T] ready for the vocoder, on the synthesizer's device: it is
    #: vocoded there, never copied to the host and back; frames of audio it yields).
    pieces: list[tuple[torch.Tensor, int]]
    #: The cleaned text spoken.
    normalized_text: str
    #: Word timings of the text (``tts.timings.WordTiming``) in the audio its pieces yield.
    words: list = field(default_factory=list)
    #: Always None: tells the engine this result has no audio yet.
    audio: None = None


def acoustic_mels(synth, texts: list[str], options: SynthesisOptions | None,
                  word_timings: bool | list[bool] = False) -> list[MelResult]:
    """Texts -> per-piece mels with the synthesizer's planning and acoustic batching (blocking);
    ``word_timings`` (all texts or per text) as ``Synthesizer.acoustic``."""
    return [MelResult(pieces=[(mel.float(), samples // 256) for mel, samples in r.pieces],
                      normalized_text=r.normalized_text, words=list(r.words))
            for r in synth.acoustic(list(texts), options, word_timings=word_timings)]
