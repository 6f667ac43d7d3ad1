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
last (``tts.text.words.map_words``), so words are in order and never overlap;
spaces and punctuation between words (a pause after a sentence) are in no
word. Frames become seconds as ``frames * hop / sample_rate``, offset by the
audio of the pieces before (pieces' audio is concatenated with nothing in between).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from tts.text.words import map_words

__all__ = ["WordTiming", "WordTimer", "token_bounds_from_durations", "token_bounds_from_attention",
           "attention_path", "relocate"]


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
    score = np.full(t_in, -np.inf)
    score[0] = logp[0, 0]
    back = np.zeros((t_out, t_in), dtype=np.int8)
    for t in range(1, t_out):
        stay, one, two = score, np.full(t_in, -np.inf), np.full(t_in, -np.inf)
        one[1:], two[2:] = score[:-1], score[:-2]
        cand = np.stack([stay, one, two])
        move = cand.argmax(0)
        back[t] = move
        score = cand[move, np.arange(t_in)] + logp[t]
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

    def add(self, piece_text: str, ids: Sequence[int], bounds: np.ndarray | None, audio_samples: int
            ) -> list[WordTiming]:
        """Adds the next piece: its text and ids, the frame each id starts on (``token_bounds_*``; None:
        unknown, the piece's words share its audio evenly by letters) and the samples of audio it
        made. Returns the piece's words (times from the start of the whole audio)."""
        words, spans = map_words(piece_text, tuple(ids), self.frontend, self.normalizer)
        end = self.samples + int(audio_samples)
        if bounds is None:          # no alignment: spread the piece's audio over its ids
            n = max(1, len(ids))
            bounds = np.round(np.arange(len(ids) + 1) * (audio_samples / self.hop) / n).astype(np.int64)
        out = []
        for w, (a, b) in zip(words, spans):
            start = min(end, self.samples + int(bounds[a]) * self.hop)
            stop = min(end, self.samples + int(bounds[b] if a < b else bounds[a]) * self.hop)
            at = self.text.find(w.text, self.cursor)
            if at < 0:               # the piece's text is not a slice of ``text`` (never in practice)
                at = self.cursor
            else:
                self.cursor = at + len(w.text)
            out.append(WordTiming(w.text, start / self.sample_rate, stop / self.sample_rate, at, at + len(w.text)))
        self.samples = end
        self.words.extend(out)
        return out


def relocate(text: str, words: Sequence[WordTiming], offset_s: float = 0.0) -> list[WordTiming]:
    """``words`` shifted by ``offset_s`` seconds, with their character offsets found again in ``text``
    (for results joined from parts of a text)."""
    out, cursor = [], 0
    for w in words:
        at = text.find(w.word, cursor)
        if at >= 0:
            cursor = at + len(w.word)
        else:
            at = cursor
        out.append(replace(w, start_s=w.start_s + offset_s, end_s=w.end_s + offset_s,
                           char_start=at, char_end=at + len(w.word)))
    return out
