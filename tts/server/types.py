"""Small result types shared by the serving engine and the Tacotron2 scheduler (no imports of either)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StreamPiece:
    """One piece of streamed audio: float32 samples at the voice's rate."""

    audio: np.ndarray
    #: Set on the last piece: the normalized text spoken.
    normalized_text: str = ""
    last: bool = False
    #: Word timings (``tts.timings.WordTiming``, times in the whole utterance) that became known with
    #: this piece; a word may come before the audio that speaks it.
    words: tuple = ()


@dataclass
class ScheduledOutcome:
    """A unary result from the Tacotron2 scheduler and how it was served."""

    #: ``tts.synthesizer.SynthesisResult``.
    result: object
    #: Seconds from arrival until its first row joined the decoder batch.
    queue_seconds: float
    #: Largest batch (rows) it decoded in.
    batch_size: int
    #: Decoder steps (replays for the slot decoder) between arrival and its first row joining.
    queue_steps: int = 0
