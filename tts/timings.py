"""Word timings: when each word of the input text is spoken in the audio.

A ``WordTiming`` is a word as the user wrote it (``tts.text.words``: ``"$5"``
stays one word although it is spoken "five dollars"; punctuation is no word)
with its start and end in seconds of the utterance's audio and its character
offsets in the input text.

Where the times come from, per piece of the text (``token_bounds_*``: the
mel frame at which each symbol id starts):

- FastSpeech: its durations, after the speaking-rate scale and rounding
  (``FastSpeechOutput.repeats``), summed: frame ``bounds[i]`` is where id ``i`` starts.
- Tacotron2: its attention. Each decoder frame is given the input position of its
  largest attention weight; a running maximum makes that monotonic; id ``i``
  starts at the first frame attending to ``i`` or beyond. Ids the attention
  jumps over start and end on the same frame.

A word spans from the start of its first id to the start of the id after its
last (``tts.text.words.map_words``), so words are in order and never overlap.
Then the spans are fitted to the sound (``voiced_frames``: a frame is quiet
when its loudest mel channel is more than 20 dB below the loudest frame of
its piece, read from the acoustic model's own output mel): a pause (a quiet
run of at least ``PAUSE_FRAMES``) within ``SNAP_FRAMES`` of the boundary of
two words becomes the gap between them, and quiet frames at either end of a
word are cut off it. So the pause after a sentence lies between words even
where the model spends it on the next word's first sound (FastSpeech gives
punctuation no duration; Tacotron2 often attends the next letter while
pausing). Every word keeps at least one frame it had; one with no loud frame keeps its span.
Frames become seconds as ``frames * hop / sample_rate``, offset by the audio of
the pieces before (pieces' audio is concatenated with nothing in between).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from tts.text.words import map_words

__all__ = ["WordTiming", "WordTimer", "token_bounds_from_durations", "token_bounds_from_attention",
           "attention_path", "voiced_frames", "relocate", "QUIET_NATS"]

#: A frame is quiet when its loudest (natural-log) mel channel is this far below the piece's loudest
#: frame: ln(10) = 20 dB of amplitude.
QUIET_NATS = 2.302585092994046
#: Quiet runs of at least this many frames are pauses; a pause this near a word boundary moves it.
PAUSE_FRAMES = 3
SNAP_FRAMES = 8


@dataclass(frozen=True)
class WordTiming:
    """One word of the input text and when it is spoken (seconds from the start of the audio)."""

    #: The word as written in the input (punctuation around it stripped).
    word: str
    start_s: float
    end_s: float
    #: ``text[char_start:char_end] == word`` for the input ``text``.
    char_start: int = 0
    char_end: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def token_bounds_from_durations(repeats: Sequence[int] | np.ndarray) -> np.ndarray:
    """FastSpeech: frames per symbol id ``[T_in]`` -> int64 ``[T_in + 1]``, the frame each id starts on
    (the last entry is the number of frames)."""
    r = np.asarray(repeats, dtype=np.int64).reshape(-1)
    return np.concatenate([[0], np.cumsum(np.maximum(r, 0))])


def attention_path(alignments) -> np.ndarray:
    """Tacotron2: alignments ``[T_out, T_in]`` (tensor or array) -> int64 ``[T_out]``, the input
    position each frame speaks: the monotonic path of greatest summed log attention weight that starts
    on id 0, moves 0, 1 or 2 ids a frame and ends on the last id (where it can reach it). Unlike each
    frame's argmax, it ignores a stray frame (the first frame's attention is often spread out)."""
    a = alignments.detach().float().cpu().numpy() if hasattr(alignments, "detach") else np.asarray(alignments)
    a = a.astype(np.float64, copy=False)
    t_out, t_in = a.shape if a.ndim == 2 else (0, 0)
    if t_out == 0 or t_in == 0:
        return np.zeros(t_out, dtype=np.int64)
    logp = np.log(np.clip(a, 1e-8, None))
    # score[2:] holds the ids; two -inf cells in front make the moves of 1 and 2 plain slices
    score = np.full(t_in + 2, -np.inf)
    score[2] = logp[0, 0]
    back = np.zeros((t_out, t_in), dtype=np.int8)
    best = np.empty(t_in)
    for t in range(1, t_out):
        stay, one, two = score[2:], score[1:-1], score[:-2]
        np.maximum(stay, one, out=best)
        move = back[t]
        move[one > stay] = 1
        move[two > best] = 2
        np.maximum(best, two, out=best)
        np.add(best, logp[t], out=score[2:])
    score = score[2:]
    end = t_in - 1 if np.isfinite(score[-1]) else int(np.argmax(score))
    path = np.empty(t_out, dtype=np.int64)
    for t in range(t_out - 1, -1, -1):
        path[t] = end
        end -= int(back[t, end])
    return path


def token_bounds_from_attention(path: Sequence[int] | np.ndarray, n_ids: int, n_frames: int) -> np.ndarray:
    """Tacotron2: the attended input position of each decoder frame (``attention_path``), the number
    of ids and of frames spoken -> int64 ``[n_ids + 1]``, the frame each id starts on (monotonic)."""
    p = np.asarray(path, dtype=np.int64).reshape(-1)[:max(0, int(n_frames))]
    p = np.maximum.accumulate(np.clip(p, 0, max(0, n_ids - 1))) if len(p) else p
    bounds = np.searchsorted(p, np.arange(n_ids + 1), side="left").astype(np.int64)
    bounds[0] = 0
    bounds[n_ids] = len(p)
    return np.minimum(bounds, len(p))


def voiced_frames(mel) -> np.ndarray:
    """bool ``[T]`` of a piece's log mel ``[n_mel, T]`` (tensor or array): frames within ``QUIET_NATS`` of
    the loudest one."""
    m = mel.detach().float().cpu().numpy() if hasattr(mel, "detach") else np.asarray(mel, dtype=np.float32)
    if m.ndim != 2 or m.shape[1] == 0:
        return np.zeros(0, dtype=bool)
    loud = m.max(axis=0)
    return loud >= loud.max() - QUIET_NATS


def _trim(start: int, stop: int, voiced: np.ndarray) -> tuple[int, int]:
    """Frames [start, stop) less the quiet frames at either end (unchanged when none is loud)."""
    if stop <= start:
        return start, stop
    loud = np.flatnonzero(voiced[start:min(stop, len(voiced))])
    if len(loud) == 0:
        return start, stop
    return start + int(loud[0]), start + int(loud[-1]) + 1


def fit_to_sound(spans: list[tuple[int, int]], voiced: np.ndarray | None) -> list[tuple[int, int]]:
    """Word frame spans (in order, not overlapping) fitted to the loud frames of their piece (module doc)."""
    if voiced is None or len(voiced) == 0:
        return spans
    v = np.asarray(voiced, dtype=bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[1], v.astype(np.int8), [1]])))
    runs = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]) if b - a >= PAUSE_FRAMES]
    out = [list(s) for s in spans]
    for a, b in zip(out, out[1:]):
        if a[1] <= a[0] or b[1] <= b[0]:
            continue
        mid = (a[1] + b[0]) / 2
        near = [r for r in runs if r[0] <= mid + SNAP_FRAMES and r[1] >= mid - SNAP_FRAMES
                and r[0] > a[0] and r[1] < b[1]]
        if near:
            q0, q1 = max(near, key=lambda r: (r[1] - r[0], -abs((r[0] + r[1]) / 2 - mid)))
            a[1], b[0] = q0, q1
    return [_trim(s, e, v) for s, e in out]


class WordTimer:
    """The word timings of one text, piece by piece in order (for the pipeline, the server's
    scheduler and streaming alike).

    ``text``: the input text (character offsets point into it); ``frontend``/``normalizer``: what
    the pieces were encoded with; ``hop``: audio samples per mel frame.
    """

    def __init__(self, text: str, *, frontend: str, normalizer: str, sample_rate: int, hop: int = 256) -> None:
        self.text = text
        self.frontend, self.normalizer = frontend, normalizer
        self.sample_rate, self.hop = int(sample_rate), int(hop)
        self.samples = 0            # audio of the pieces added so far
        self.cursor = 0             # characters of ``text`` consumed so far
        self.words: list[WordTiming] = []

    def add(self, piece_text: str, ids: Sequence[int], bounds: np.ndarray | None, audio_samples: int,
            voiced: np.ndarray | None = None) -> list[WordTiming]:
        """Adds the next piece: its text and ids, the frame each id starts on (``token_bounds_*``; None:
        unknown, the piece's words share its audio evenly by letters), the samples of audio it
        made and its loud frames (``voiced_frames``; None: words are not trimmed). Returns the
        piece's words (times from the start of the whole audio)."""
        words, spans = map_words(piece_text, tuple(ids), self.frontend, self.normalizer)
        end = self.samples + int(audio_samples)
        if bounds is None:          # no alignment: spread the piece's audio over its ids
            n = max(1, len(ids))
            bounds = np.round(np.arange(len(ids) + 1) * (audio_samples / self.hop) / n).astype(np.int64)
        frames = fit_to_sound([(int(bounds[a]), int(bounds[b] if a < b else bounds[a])) for a, b in spans], voiced)
        out = []
        for w, (f0, f1) in zip(words, frames):
            start = min(end, self.samples + f0 * self.hop)
            stop = min(end, self.samples + f1 * self.hop)
            at = self.text.find(w.text, self.cursor)
            if at < 0:               # the piece's text is not a slice of ``text`` (never in practice)
                at = self.cursor
            else:
                self.cursor = at + len(w.text)
            out.append(WordTiming(w.text, start / self.sample_rate, stop / self.sample_rate, at, at + len(w.text)))
        self.samples = end
        self.words.extend(out)
        return out


def relocate(text: str, words: Sequence[WordTiming], offset_s: float = 0.0, start: int = 0) -> list[WordTiming]:
    """``words`` shifted by ``offset_s`` seconds, with their character offsets found again in ``text``
    from character ``start`` on (for results joined from parts of a text)."""
    out, cursor = [], start
    for w in words:
        at = text.find(w.word, cursor)
        if at >= 0:
            cursor = at + len(w.word)
        else:
            at = cursor
        out.append(replace(w, start_s=w.start_s + offset_s, end_s=w.end_s + offset_s,
                           char_start=at, char_end=at + len(w.word)))
    return out
