"""Acoustic model only (text -> mel pieces), for streaming calls that vocode in chunks.

Runs the ``Synthesizer``'s own text planning and acoustic stage so the mels
are exactly those of the unary path; only the vocoder differs (chunked).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from tts.options import SynthesisOptions

logger = logging.getLogger(__name__)


@dataclass
class MelResult:
    """The mels of one text, piece by piece."""

    #: Per piece: (mel float32 [n_mel, T] ready for the vocoder, frames of audio it yields).
    pieces: list[tuple[np.ndarray, int]]
    #: The cleaned text spoken.
    normalized_text: str
    #: Always None: tells the engine this result has no audio yet.
    audio: None = None


def acoustic_mels(synth, texts: list[str], options: SynthesisOptions | None) -> list[MelResult]:
    """Texts -> per-piece mels with the synthesizer's planning and acoustic batching (blocking)."""
    opts = (options or SynthesisOptions()).merged_over(synth.voice.defaults)
    with torch.inference_mode():
        plan = synth._plan(list(texts))
        generator = synth._generator(opts.seed)
        synth._run_acoustic(plan.pieces, opts, generator)
    per_utt: list[list] = [[] for _ in texts]
    for p in plan.pieces:
        per_utt[p.utt].append((p.mel.float().cpu().numpy(), p.audio_len // 256))
    return [MelResult(pieces=pieces, normalized_text=" ".join(plan.cleaned[i])) for i, pieces in enumerate(per_utt)]
