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

The G2P can be done ahead (``G2PTable``, ``python -m tts.train hibari-pack``): the phoneme ids
of every text, with the word each belongs to, in one small file. A machine that has it needs only
the model, hibari's signal processing and ``onnx``/``onnxruntime``, not hibari's G2P (its
lexicons, tagger and out-of-vocabulary net); ``pack_runtime`` copies that much of the installed
package into a folder (the GPU machine's corpus, ``recipes/bundled_voice/gpu.sh``). The ids are
those the in-process G2P gives, so the audio is the same.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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


@dataclass
class Run:
    """One model run (a sentence, or a clause of a long one): phoneme ids, pads included."""

    ids: list[int]
    words: list[int]
    """For each id, the whitespace-delimited chunk of the text it is a phone of; -1 for the pads,
    spaces and pauses (punctuation)."""


def text_key(text: str) -> int:
    """A G2P table's key of a symbol text: the first 8 bytes of its BLAKE2b digest."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


class G2PTable:
    """hibari's G2P of a set of texts, done ahead: each text's runs (``Run``), or the alignment
    error the planning raised. Saved as one ``.npz`` (``save``; ids ``uint8``, word indices
    ``int16``, keys ``text_key``), with the hibari version and vocabulary it was made with."""

    def __init__(self, plans: dict[int, list[Run] | str], meta: dict) -> None:
        self.plans, self.meta = plans, meta

    @classmethod
    def build(cls, teacher: "HibariTeacher", texts: Sequence[str]) -> "G2PTable":
        """Plan ``texts`` (symbol texts) with ``teacher``'s in-process G2P."""
        import hibari
        plans: dict[int, list[Run] | str] = {}
        for text in texts:
            try:
                plans[text_key(text)] = teacher.plan(text)
            except AlignmentError as exc:
                plans[text_key(text)] = str(exc) or "alignment error"
        return cls(plans, {"hibari": hibari.__version__, "vocab": _vocab_digest(teacher._vocab),
                           "texts": len(plans)})

    def save(self, path: str | os.PathLike[str]) -> None:
        keys, run_off, id_off, ids, words, errors = [], [0], [0], [], [], {}
        for k, plan in self.plans.items():
            keys.append(k)
            if isinstance(plan, str):
                errors[str(len(keys) - 1)] = plan
                plan = []
            for r in plan:
                ids.extend(r.ids)
                words.extend(r.words)
                id_off.append(len(ids))
            run_off.append(len(id_off) - 1)
        meta = dict(self.meta, errors=errors)
        blob = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
        tmp = Path(str(path) + ".tmp.npz")
        np.savez_compressed(tmp, keys=np.asarray(keys, np.uint64), run_offsets=np.asarray(run_off, np.int64),
                            id_offsets=np.asarray(id_off, np.int64), ids=np.asarray(ids, np.uint8),
                            words=np.asarray(words, np.int16), meta=blob)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "G2PTable":
        with np.load(path) as z:
            meta = json.loads(z["meta"].tobytes().decode("utf-8"))
            keys, ro, io_ = z["keys"], z["run_offsets"], z["id_offsets"]
            ids, words = z["ids"].astype(np.int64), z["words"].astype(np.int64)
        errors = meta.pop("errors", {})
        plans: dict[int, list[Run] | str] = {}
        for j, k in enumerate(keys.tolist()):
            if str(j) in errors:
                plans[k] = errors[str(j)]
                continue
            plans[k] = [Run(ids[io_[r]:io_[r + 1]].tolist(), words[io_[r]:io_[r + 1]].tolist())
                        for r in range(ro[j], ro[j + 1])]
        return cls(plans, meta)

    def plan(self, text: str) -> list[Run]:
        plan = self.plans.get(text_key(text))
        if plan is None:
            raise KeyError(f"no G2P of {text!r} in this table ({self.meta.get('texts')} texts): it was "
                           "built from other texts")
        if isinstance(plan, str):
            raise AlignmentError(plan)
        return plan


def _vocab_digest(vocab: dict[str, int]) -> str:
    return hashlib.sha256(json.dumps(vocab, sort_keys=True).encode("utf-8")).hexdigest()[:16]


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
    """hibari with per-phoneme durations exposed; ``threads`` onnxruntime threads (1 by default).

    ``g2p``: a ``G2PTable`` file made ahead for the texts to be spoken; hibari's own G2P (and its
    ``hibari.g2p`` module) is then not used."""

    sample_rate = HIBARI_RATE

    def __init__(self, threads: int = 1, g2p: str | os.PathLike[str] | None = None) -> None:
        path = _model_path()
        try:
            import onnx
            import onnxruntime as ort
        except ImportError as exc:
            raise HibariUnavailable("the hibari teacher needs onnxruntime and onnx") from exc
        from hibari import dsp
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
        with open(os.path.join(ASSETS, "vocab.json"), encoding="utf-8") as f:
            self._vocab: dict[str, int] = json.load(f)
        self._phoneme = {i: c for c, i in self._vocab.items()}
        self._dsp = dsp
        self._table: G2PTable | None = None
        if g2p is not None:
            import hibari
            self._table = G2PTable.load(g2p)
            want = {"hibari": hibari.__version__, "vocab": _vocab_digest(self._vocab)}
            got = {k: self._table.meta.get(k) for k in want}
            if got != want:
                raise HibariUnavailable(f"{g2p}: made with hibari {got} but this one is {want}")
        else:
            from hibari.g2p import G2P
            self._g2p = G2P(british=False)

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

    def plan(self, text: str) -> list[Run]:
        """The model runs of ``text`` (our symbol text: every word one whitespace-delimited
        chunk): hibari's G2P, or the ``G2PTable``'s entry. Raises ``ValueError``
        (``corpus.AlignmentError``) when hibari's tokens do not map onto the chunks."""
        if self._table is not None:
            return self._table.plan(text)
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
        chunk_starts = [m.start() for m in _CHUNK_RE.finditer(text)]
        runs = []
        for sent in self._sentences(tokens):
            ids, words = [0], [-1]      # each id's chunk; -1: pad, space or pause
            for j, i in enumerate(sent):
                tk = tokens[i]
                ps = tk.phonemes or ""
                ps_full = ps + " " if tk.whitespace and j + 1 < len(sent) else ps
                w = bisect.bisect_right(chunk_starts, starts[i]) - 1
                for c in ps_full:
                    if c in self._vocab:
                        ids.append(self._vocab[c])
                        words.append(-1 if c in PAUSE_PHONEMES else w)
            ids.append(0)
            words.append(-1)
            runs.append(Run(ids, words))
        return runs

    def speak(self, text: str, seed: int = 0) -> Spoken:
        """Speak ``text`` (our symbol text: every word one whitespace-delimited chunk). Raises
        ``ValueError`` (``corpus.AlignmentError``) when hibari's tokens do not map onto the chunks."""
        runs = self.plan(text)
        words = [Token(m.group()) for m in _CHUNK_RE.finditer(text)]
        rng = np.random.default_rng(seed)
        audio_parts: list[np.ndarray] = []
        phoneme_runs: list[str] = []
        t_off = 0.0
        for run in runs:
            audio, dur = self._run(run.ids, rng)
            ends = np.cumsum(dur) * UNIT_SAMPLES / HIBARI_RATE + t_off
            begins = ends - dur * UNIT_SAMPLES / HIBARI_RATE
            for k, w in enumerate(run.words):
                if w >= 0:
                    words[w].phones.append(Phone(self._phoneme[run.ids[k]], float(begins[k]), float(ends[k])))
            t_off += audio.shape[0] / HIBARI_RATE
            audio_parts.append(audio)
            phoneme_runs.append("".join(self._phoneme[i] for i in run.ids[1:-1]).strip())
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
    g2p: str | None = None
    """A ``G2PTable`` file of the texts (``python -m tts.train hibari-pack``), or None: hibari's G2P."""

    def load(self) -> HibariTeacher:
        return HibariTeacher(threads=self.threads, g2p=self.g2p)


#: What ``pack_runtime`` copies of the installed package: the Python modules that synthesis from
#: phoneme ids imports (not the G2P), and the assets they read.
RUNTIME_FILES = ("__init__.py", "tts.py", "dsp.py", "voices.py", "assets/hibari.onnx", "assets/vocab.json",
                 "assets/voices.json", "assets/normalize.json")


def pack_runtime(texts: Sequence[str], out: str | os.PathLike[str], threads: int = 1) -> dict:
    """Write into ``out``: ``hibari/`` (the installed package's ``RUNTIME_FILES``: with ``out`` on
    ``sys.path`` it imports as ``hibari`` and speaks from phoneme ids), ``g2p.npz`` (the
    ``G2PTable`` of ``texts``, symbol texts) and hibari's ``LICENSE`` and ``NOTICE``. Returns the
    files' sizes and the table's summary."""
    import hibari
    src = Path(hibari.__file__).resolve().parent
    out = Path(out)
    pkg = out / "hibari"
    if pkg.exists():
        shutil.rmtree(pkg)
    for rel in RUNTIME_FILES:
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, pkg / rel)
    dist = next(src.parent.glob("hibari_tts-*.dist-info"), None)
    for name in ("LICENSE", "NOTICE"):
        found = sorted(dist.rglob(name)) if dist is not None else []
        if found:
            shutil.copyfile(found[0], out / name)
    table = G2PTable.build(HibariTeacher(threads=threads), texts)
    table.save(out / "g2p.npz")
    sizes = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    n_err = sum(isinstance(v, str) for v in table.plans.values())
    return {"texts": len(table.plans), "alignment_errors": n_err, "bytes": sum(sizes.values()), "files": sizes}

