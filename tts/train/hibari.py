"""The hibari teacher: ``hibari-tts`` (Apache-2.0; a 6 M-parameter student of Kokoro-82M's
``af_heart`` voice, 24 kHz), run in process through onnxruntime, offline.

Everything it needs is inside the ``hibari-tts`` wheel (``hibari/assets/hibari.onnx``, the
lexicons, the part-of-speech tagger and the out-of-vocabulary net); only the default voice
``heart`` is used, the one voice the wheel holds, so nothing is ever downloaded. Licence
facts and the attribution we carry: ``recipes/bundled_voice/TEACHER.md``.

Like the Festival teacher it speaks OUR symbol text (``corpus.symbol_text``), so that every
word it reads is one whitespace-delimited chunk of our symbols. The text goes through hibari's
own G2P (tokenizer, tagger, misaki lexicon; its normaliser is skipped: our cleaners already
spelled numbers and abbreviations out), which keeps every token's text and phonemes; the
sentences are spoken one at a time (as ``Hibari.__call__`` does) and their audio concatenated.

Durations: the ONNX graph predicts an integer duration per phoneme id (``/Round`` of the
prosody net's output divided by ``speed``, clipped, cast: ``DURATION_TENSOR``); that tensor
is added to the graph's outputs in memory (with the ``onnx`` package), so one run gives the
audio and the phoneme times that made it. One duration unit is ``UNIT_SAMPLES`` samples
(two 12.5 ms decoder frames). Each word's phones are its phoneme ids that are not
punctuation (stress marks included: the model spends time on them too); spaces and
punctuation ids (pauses) fall into the gaps between words, where ``corpus.symbol_boundaries``
gives them to the gap's punctuation or space, as it does Festival's pauses.
"""

from __future__ import annotations

import bisect
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tts.train.corpus import SAMPLE_RATE, AlignmentError, symbol_text
from tts.train.festival import Phone, Token

logger = logging.getLogger(__name__)

#: hibari's output sample rate.
HIBARI_RATE = 24000
#: Samples per unit of the predicted durations (2 decoder frames of 300 samples).
UNIT_SAMPLES = 600
#: The graph's integer per-phoneme durations (after ``/Round``, ``/Clip``), hibari-tts 0.2.1.
DURATION_TENSOR = "/Cast_32_output_0"
#: The hibari voice used (the one inside the wheel).
VOICE = "heart"
#: Phoneme characters that are pauses, not sounds of a word.
PAUSE_PHONEMES = frozenset(';:,.!?—…"“”()«» ')
#: A sentence (one model run) ends after a token with one of these.
_SENTENCE_END = re.compile(r"[.!?…][\"”’)\]]*$")
#: hibari splits sentences longer than this many phonemes at clause punctuation.
_CLAUSE_PHONEMES = frozenset(",;:—")
_CHUNK_RE = re.compile(r"\S+")


class HibariUnavailable(RuntimeError):
    """hibari-tts, onnxruntime or onnx is not installed, or its bundled model is missing."""


@dataclass
class Spoken:
    """One text as hibari spoke it."""

    audio: np.ndarray
    """float32 [N] at ``rate``."""
    tokens: list[Token]
    """One per whitespace-delimited chunk of the text, with its phones' times (seconds)."""
    phonemes: list[str]
    """The phoneme string of each model run (sentence)."""
    rate: int = HIBARI_RATE


def _model_path() -> str:
    try:
        import hibari.tts as htts
        from hibari.voices import VOICES
    except ImportError as exc:
        raise HibariUnavailable("the hibari teacher needs hibari-tts (pip install hibari-tts==0.2.1)") from exc
    info = VOICES.get(VOICE, {})
    path = os.path.join(htts.ASSETS, info.get("file", "hibari.onnx"))
    if not info.get("bundled") or not os.path.isfile(path):
        raise HibariUnavailable(f"hibari voice {VOICE!r} is not inside the installed wheel ({path})")
    return path


class HibariTeacher:
    """hibari with per-phoneme durations exposed; ``threads`` onnxruntime threads (1 by default)."""

    sample_rate = HIBARI_RATE

    def __init__(self, threads: int = 1) -> None:
        path = _model_path()
        try:
            import onnx
            import onnxruntime as ort
        except ImportError as exc:
            raise HibariUnavailable("the hibari teacher needs onnxruntime and onnx") from exc
        from hibari import dsp
        from hibari.g2p import G2P
        from hibari.tts import ASSETS

        model = onnx.load(path)
        if not any(n.output and n.output[0] == DURATION_TENSOR and n.op_type == "Cast"
                   for n in model.graph.node):
            raise HibariUnavailable(f"{path}: no duration tensor {DURATION_TENSOR} (another hibari-tts "
                                    "version? this backend was written for 0.2.1)")
        model.graph.output.append(onnx.helper.make_tensor_value_info(DURATION_TENSOR, onnx.TensorProto.INT64,
                                                                     None))
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = threads
        so.log_severity_level = 3
        self._sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        import json
        with open(os.path.join(ASSETS, "vocab.json"), encoding="utf-8") as f:
            self._vocab: dict[str, int] = json.load(f)
        self._g2p = G2P(british=False)
        self._dsp = dsp

    # -- text ------------------------------------------------------------------------------

    def _tokens(self, text: str) -> list:
        """hibari's G2P tokens of ``text`` (its normaliser skipped), each with text, whitespace
        and phonemes."""
        return self._g2p.phonemize_tokens(self._g2p.tokenize(text))

    @staticmethod
    def _sentences(tokens: Sequence) -> list[list[int]]:
        """Token indices per model run: split after sentence-final punctuation, and where a
        sentence has more than hibari's ``MAX_PHONEMES`` phonemes, after clause punctuation."""
        from hibari.tts import MAX_PHONEMES

        sents: list[list[int]] = [[]]
        for i, tk in enumerate(tokens):
            sents[-1].append(i)
            if tk.phonemes and _SENTENCE_END.search(tk.phonemes) and i + 1 < len(tokens):
                sents.append([])
        out: list[list[int]] = []
        for s in sents:
            cur: list[int] = []
            n = 0
            for i in s:
                ps = tokens[i].phonemes or ""
                cur.append(i)
                n += len(ps) + 1
                if n > MAX_PHONEMES * 0.75 and ps and ps[-1] in _CLAUSE_PHONEMES:
                    out.append(cur)
                    cur, n = [], 0
            if cur:
                out.append(cur)
        return [s for s in out if any(tokens[i].phonemes for i in s)]

    # -- synthesis -------------------------------------------------------------------------

    def _run(self, ids: list[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        outs = self._sess.run(None, {"ids": np.asarray([ids], np.int64),
                                     "speed": np.asarray([1.0], np.float32)})
        lh, th, ln, lr, phi, f0 = (o[0] for o in outs[:6])
        dur = np.asarray(outs[6], dtype=np.int64).reshape(-1)
        audio = self._dsp.synth(lh, th, ln, lr, phi, f0, rng).astype(np.float32)
        if dur.shape[0] != len(ids) or int(dur.sum()) * UNIT_SAMPLES != audio.shape[0]:
            raise RuntimeError(f"hibari durations ({dur.shape[0]} ids, {int(dur.sum())} units) do not "
                               f"match its audio ({audio.shape[0]} samples)")
        return audio, dur

    def speak(self, text: str, seed: int = 0) -> Spoken:
        """Speak ``text`` (our symbol text: every word one whitespace-delimited chunk). Raises
        ``ValueError`` (``corpus.AlignmentError``) when hibari's tokens do not map onto the chunks."""
        tokens = self._tokens(text)
        # character offset of every token in the text (the tokenizer keeps text and whitespace)
        starts: list[int] = []
        pos = 0
        for tk in tokens:
            k = text.find(tk.text, pos)
            if k < 0 or text[pos:k].strip():
                raise AlignmentError(f"hibari token {tk.text!r} not found at {pos} in {text!r}")
            starts.append(k)
            pos = k + len(tk.text)
        chunks = [(m.start(), m.end()) for m in _CHUNK_RE.finditer(text)]
        chunk_starts = [a for a, _ in chunks]
        words = [Token(text[a:e]) for a, e in chunks]
        rng = np.random.default_rng(seed)
        audio_parts: list[np.ndarray] = []
        phoneme_runs: list[str] = []
        t_off = 0.0
        for sent in self._sentences(tokens):
            ids = [0]
            owner: list[tuple[int, str] | None] = [None]   # (token index, phoneme) of each id; None:
            #                                                pad, space or pause
            ps_run = ""
            for j, i in enumerate(sent):
                tk = tokens[i]
                ps = tk.phonemes or ""
                if tk.whitespace and j + 1 < len(sent):
                    ps_full = ps + " "
                else:
                    ps_full = ps
                ps_run += ps_full
                for c in ps_full:
                    if c in self._vocab:
                        ids.append(self._vocab[c])
                        owner.append(None if c in PAUSE_PHONEMES else (i, c))
            ids.append(0)
            owner.append(None)
            audio, dur = self._run(ids, rng)
            ends = np.cumsum(dur) * UNIT_SAMPLES / HIBARI_RATE + t_off
            begins = ends - dur * UNIT_SAMPLES / HIBARI_RATE
            for k, o in enumerate(owner):
                if o is None:
                    continue
                w = bisect.bisect_right(chunk_starts, starts[o[0]]) - 1
                words[w].phones.append(Phone(o[1], float(begins[k]), float(ends[k])))
            t_off += audio.shape[0] / HIBARI_RATE
            audio_parts.append(audio)
            phoneme_runs.append(ps_run.strip())
        for w in words:
            if not w.phones and any(c.isalnum() for c in w.name):
                raise AlignmentError(f"hibari spoke no phonemes for the word {w.name!r}")
        audio = np.concatenate(audio_parts) if audio_parts else np.zeros(0, np.float32)
        return Spoken(audio=audio, tokens=words, phonemes=phoneme_runs)

    def speaker(self, seed: int = 0):
        """A ``tts.quality.SpeakFn`` of the teacher: text -> its symbol text spoken, resampled to
        22050 Hz (polyphase, ``tts.audio.resample``), the same audio a corpus is made of (before
        the corpus trims the silence at the ends)."""
        from tts.audio import resample

        def speak(text: str) -> tuple[np.ndarray, int]:
            spoken = self.speak(symbol_text(text), seed=seed)
            return resample(spoken.audio, HIBARI_RATE, SAMPLE_RATE), SAMPLE_RATE

        return speak


@dataclass(frozen=True)
class HibariConfig:
    """How to make a ``HibariTeacher`` (picklable, for the corpus builder's worker processes; a
    ``corpus.TeacherConfig``)."""

    threads: int = 1
    name: str = "hibari"

    def load(self) -> HibariTeacher:
        return HibariTeacher(threads=self.threads)

