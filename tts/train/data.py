"""Batches for training, drawn from a ``Corpus``: padding, length bucketing, device transfer.

Every sampler is driven by a ``numpy.random.Generator`` whose state is saved
in checkpoints, so a resumed run draws the batches the uninterrupted run
would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from tts.train.corpus import Corpus


def split_corpus(corpus: Corpus, n_val: int, seed: int = 1234) -> tuple[list[int], list[int]]:
    """Deterministic (train, val) index split; ``n_val`` utterances held out for validation."""
    idx = np.random.default_rng(seed).permutation(len(corpus))
    n_val = min(n_val, max(0, len(corpus) - 1))
    return sorted(idx[n_val:].tolist()), sorted(idx[:n_val].tolist())


def sort_by_length(lengths: np.ndarray, pool: list[int]) -> list[int]:
    """``pool`` ordered by ``lengths`` (stable), for ``bucketed_indices``."""
    return sorted(pool, key=lambda i: int(lengths[i]))


def bucketed_indices(order: list[int], batch_size: int, rng: np.random.Generator, *,
                     bucket: int = 8) -> list[int]:
    """A batch of ``batch_size`` indices of similar length from ``order`` (a length-sorted pool):
    a random window of ``bucket`` batches, ``batch_size`` distinct items drawn from it."""
    n = len(order)
    if n <= batch_size:
        return [order[int(j)] for j in rng.integers(0, n, size=batch_size)] if n < batch_size \
            else list(order)
    window = min(n, batch_size * bucket)
    start = int(rng.integers(0, n - window + 1))
    pick = rng.choice(window, size=batch_size, replace=False)
    return [order[start + int(j)] for j in pick]


@dataclass
class AcousticBatch:
    """Padded acoustic-model batch (CPU until ``to``)."""

    ids: Tensor  # [B, T_in] int64, 0 = pad
    input_lengths: Tensor  # [B] int64
    durations: Tensor  # [B, T_in] int64, 0 at pad
    mel: Tensor  # [B, T, n_mel] float32, 0 at pad
    mel_lengths: Tensor  # [B] int64

    def to(self, device: torch.device | str) -> AcousticBatch:
        return AcousticBatch(*(t.to(device, non_blocking=True) for t in
                               (self.ids, self.input_lengths, self.durations, self.mel,
                                self.mel_lengths)))


def acoustic_batch(corpus: Corpus, indices: list[int],
                   mels: list[np.ndarray] | None = None) -> AcousticBatch:
    """Pad the items ``indices`` into one batch (their mels replaced by ``mels`` where given:
    each ``[T, n_mel]`` with its item's number of frames)."""
    items = [corpus[i] for i in indices]
    if mels is not None:
        if [m.shape[0] for m in mels] != [it.mel.shape[0] for it in items]:
            raise ValueError("acoustic_batch: the replacement mels must have their items' frames")
        items = [replace(it, mel=m) for it, m in zip(items, mels)]
    b = len(items)
    t_in = max(len(it.ids) for it in items)
    t = max(it.mel.shape[0] for it in items)
    n_mel = items[0].mel.shape[1]
    ids = np.zeros((b, t_in), np.int64)
    dur = np.zeros((b, t_in), np.int64)
    mel = np.zeros((b, t, n_mel), np.float32)
    for k, it in enumerate(items):
        ids[k, :len(it.ids)] = it.ids
        dur[k, :len(it.ids)] = it.durations
        mel[k, :it.mel.shape[0]] = it.mel
    return AcousticBatch(torch.from_numpy(ids),
                         torch.tensor([len(it.ids) for it in items], dtype=torch.int64),
                         torch.from_numpy(dur), torch.from_numpy(mel),
                         torch.tensor([it.mel.shape[0] for it in items], dtype=torch.int64))


def audio_segments(corpus: Corpus, indices: list[int], segment_length: int,
                   rng: np.random.Generator) -> Tensor:
    """``[B, segment_length]`` float32 audio in [-1, 1): a random window of each item
    (zero-padded when shorter, as DLE's WaveGlow loader does)."""
    out = np.zeros((len(indices), segment_length), np.float32)
    for k, i in enumerate(indices):
        a = corpus[i].audio
        if len(a) >= segment_length:
            s = int(rng.integers(0, len(a) - segment_length + 1))
            out[k] = a[s:s + segment_length].astype(np.float32) / 32768.0
        else:
            out[k, :len(a)] = a.astype(np.float32) / 32768.0
    return torch.from_numpy(out)


#: The log-mel of silence (``log(clamp(x, 1e-5))``, NVIDIA's mel front end): what pads a mel window.
SILENT_LOG_MEL = float(np.log(1e-5))


def frames_for(segment_length: int, hop: int = 256) -> int:
    """Mel frames covering ``segment_length`` samples, as the centred STFT frames a segment of
    that length (``segment_length // hop + 1``)."""
    return segment_length // hop + 1


def aligned_segments(audios: list[np.ndarray], mels: list[np.ndarray], segment_length: int,
                     rng: np.random.Generator, hop: int = 256) -> tuple[Tensor, Tensor]:
    """Windows of audio with the utterance-level mel frames that belong to them, for a vocoder
    trained on mels that are not computed from the audio window (ground-truth-aligned mels of an
    acoustic model): ``audio [B, segment_length]`` float32 in [-1, 1) and
    ``mel [B, n_mel, segment_length // hop + 1]`` float32.

    Each window starts on a frame (sample ``hop * f``), so frame ``f`` of the utterance, centred
    on that sample, is the window's first frame, as it is for the mel of the window itself.
    Past the end of an utterance the audio is zero and the mel is silence."""
    n_frames = frames_for(segment_length, hop)
    n_mel = mels[0].shape[1]
    audio_out = np.zeros((len(audios), segment_length), np.float32)
    mel_out = np.full((len(audios), n_mel, n_frames), SILENT_LOG_MEL, np.float32)
    for k, (a, m) in enumerate(zip(audios, mels)):
        last = max(0, (len(a) - segment_length) // hop)
        f = int(rng.integers(0, last + 1))
        piece = a[f * hop:f * hop + segment_length]
        audio_out[k, :len(piece)] = piece.astype(np.float32) / 32768.0
        frames = np.asarray(m[f:f + n_frames], dtype=np.float32)
        mel_out[k, :, :frames.shape[0]] = frames.T
    return torch.from_numpy(audio_out), torch.from_numpy(mel_out)
