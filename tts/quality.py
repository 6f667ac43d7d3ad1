"""Round-trip intelligibility: synthesize, recognize with pocketsphinx, score WER with jiwer.

The quality gate of the bundled voices: the first sentences of the
held-out LJSpeech ``val.txt`` are spoken by a voice, recognised offline by
pocketsphinx's bundled US-English model (acoustic model, dictionary and
language model ship inside its wheel), and scored against the normalised
text. The teacher's own audio is measured the same way, so the voice is
judged relative to what the recogniser makes of the speech it imitates.

Normalisation (both sides): our ``english_cleaners`` (lowercase, numbers and
abbreviations expanded exactly as synthesis expands them), hyphens to spaces,
every character but ``a-z``, apostrophe and space removed, apostrophes kept
only inside words, whitespace collapsed.

Beside the WER, ``MosPredictor`` predicts a mean opinion score (1 bad .. 5
excellent) of each utterance with Distill-MOS (``distillmos``, Microsoft, MIT,
weights inside its wheel): a small convolutional + transformer model distilled
from an XLS-R speech-quality model, fed 16 kHz audio as tensors.

Needs the optional packages ``pocketsphinx`` and ``jiwer`` (and ``distillmos``
for MOS) (imported lazily; ``QualityUnavailable`` says which is missing).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
import sys
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Sample rate of pocketsphinx's bundled en-us acoustic model.
ASR_SAMPLE_RATE = 16000

_NOT_WORD_RE = re.compile(r"[^a-z' ]+")
_EDGE_APOS_RE = re.compile(r"(?<![a-z])'|'(?![a-z])")
_SPACES_RE = re.compile(r"\s+")


class QualityUnavailable(RuntimeError):
    """pocketsphinx or jiwer is not installed."""


def normalize_for_wer(text: str) -> str:
    """Text as it is scored: cleaned like synthesis input, then letters, inner apostrophes, spaces."""
    from tts.text import clean_text

    cleaned = clean_text(text, "tacotron2").lower().replace("-", " ")
    cleaned = _NOT_WORD_RE.sub(" ", cleaned)
    cleaned = _EDGE_APOS_RE.sub(" ", cleaned)
    return _SPACES_RE.sub(" ", cleaned).strip()


def resample(audio: np.ndarray, rate: int, target: int = ASR_SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of mono float audio ``[N]`` from ``rate`` to ``target`` Hz."""
    from scipy.signal import resample_poly

    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    if rate == target:
        return audio
    g = math.gcd(int(rate), int(target))
    return resample_poly(audio, target // g, rate // g)


def to_pcm16(audio: np.ndarray, *, normalize: bool = False) -> bytes:
    """Float audio in [-1, 1] -> little-endian 16-bit PCM bytes (optionally peak-normalised to 0.9)."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if normalize:
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        if peak > 0:
            x = x * (0.9 / peak)
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


class Recognizer:
    """pocketsphinx with its bundled US-English models; one decoder reused for every utterance."""

    def __init__(self, **config: Any) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise QualityUnavailable("the quality gate needs pocketsphinx "
                                     "(pip install 'pocketsphinx>=5')") from exc
        config.setdefault("loglevel", "FATAL")
        config.setdefault("samprate", ASR_SAMPLE_RATE)
        self._decoder = Decoder(**config)

    def recognize(self, audio: np.ndarray, sample_rate: int) -> str:
        """Mono float audio ``[N]`` in [-1, 1] at ``sample_rate`` -> recognised words (normalised)."""
        pcm = to_pcm16(resample(audio, sample_rate), normalize=True)
        d = self._decoder
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        text = hyp.hypstr if hyp is not None else ""
        # pocketsphinx marks alternative pronunciations "word(2)" and fillers "<sil>" / "[noise]".
        text = re.sub(r"\(\d+\)|<[^>]*>|\[[^\]]*\]", " ", text)
        return normalize_for_wer(text)


#: Sample rate Distill-MOS takes.
MOS_SAMPLE_RATE = 16000


def _import_distillmos() -> Any:
    """``distillmos``, importable without torchaudio.

    ``distillmos.sqa`` imports torchaudio at module level but uses it only to load files in its
    command-line inference; we hand it tensors. torchaudio has no build for every torch (none
    for our CPU torch 2.13), so where it cannot be imported an empty stand-in module takes its
    place in ``sys.modules`` for the duration of the import only.
    """
    if "distillmos" in sys.modules:
        return sys.modules["distillmos"]
    stub = None
    try:
        import torchaudio  # noqa: F401
    except Exception:  # noqa: BLE001 - absent, or built for another torch
        sys.modules.pop("torchaudio", None)
        stub = types.ModuleType("torchaudio")
        stub.__doc__ = "stand-in for distillmos's import (tts.quality); files are never loaded"
        sys.modules["torchaudio"] = stub
    try:
        import distillmos
    except ImportError as exc:
        raise QualityUnavailable("predicted MOS needs distillmos and xls-r-sqa "
                                 "(pip install --no-deps distillmos==0.9.1 xls-r-sqa==0.1.0)") from exc
    finally:
        if stub is not None and sys.modules.get("torchaudio") is stub:
            del sys.modules["torchaudio"]
    return distillmos


class MosPredictor:
    """Distill-MOS (variant 7, the weights in the ``distillmos`` wheel) on CPU: mono float audio at
    any rate -> predicted MOS in [1, 5]. One model reused for every utterance.

    The model peak-normalises its input and scores 7.68 s windows (shorter audio is zero-padded,
    longer audio is covered by windows at most 1 s apart, their scores averaged).
    """

    def __init__(self) -> None:
        import torch

        dm = _import_distillmos()
        with contextlib.redirect_stdout(io.StringIO()):   # it prints where it loaded the weights from
            self._model = dm.ConvTransformerSQAModel().eval()
        self._torch = torch

    def __call__(self, audio: np.ndarray, sample_rate: int) -> float:
        torch = self._torch
        x = resample(audio, sample_rate, MOS_SAMPLE_RATE).astype(np.float32)
        if x.size == 0 or not np.any(x):
            raise ValueError("MOS of silent or empty audio is undefined")
        with torch.no_grad():
            return float(self._model(torch.from_numpy(x)[None])[0])


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER (total edits / total reference words) of already normalised texts, as a fraction."""
    try:
        import jiwer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise QualityUnavailable("the quality gate needs jiwer (pip install 'jiwer>=3')") from exc
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("no sentences to score")
    # jiwer refuses empty hypotheses in some versions: a placeholder scores as one substitution
    # or insertion error-equivalent; an empty string is replaced by a token that matches nothing.
    hyps = [h if h.strip() else "<empty>" for h in hypotheses]
    refs = list(references)
    if any(not r.strip() for r in refs):
        raise ValueError("a reference text is empty after normalisation")
    return float(jiwer.wer(refs, hyps))


@dataclass
class SentenceResult:
    """One sentence of a quality run."""

    text: str
    """The input text, as given."""
    reference: str
    """Normalised reference words."""
    hypothesis: str
    """Normalised recognised words."""
    audio_seconds: float
    """Length of the audio that was recognised."""
    mos: float | None = None
    """Predicted MOS (Distill-MOS) of the audio, where it was asked for."""


@dataclass
class QualityResult:
    """A quality run over some sentences."""

    wer: float
    """Corpus word error rate, a fraction (0.12 = 12 %)."""
    sentences: list[SentenceResult] = field(default_factory=list)

    @property
    def mos(self) -> float | None:
        """Mean predicted MOS over the sentences (None where MOS was not asked for)."""
        scores = [s.mos for s in self.sentences if s.mos is not None]
        return float(np.mean(scores)) if scores and len(scores) == len(self.sentences) else None

    def as_dict(self) -> dict[str, Any]:
        return {"wer": self.wer, "n": len(self.sentences),
                **({} if self.mos is None else {"mos": self.mos}),
                "sentences": [vars(s) for s in self.sentences]}


#: A function that speaks one text: returns (mono float audio [N], sample rate).
SpeakFn = Callable[[str], "tuple[np.ndarray, int]"]


def evaluate(speak: SpeakFn, texts: Iterable[str], *, recognizer: Recognizer | None = None,
             mos: MosPredictor | None = None) -> QualityResult:
    """Speak every text with ``speak``, recognise it, and score the corpus WER (and, with a
    ``mos`` predictor, every utterance's predicted MOS)."""
    rec = recognizer or Recognizer()
    results: list[SentenceResult] = []
    for text in texts:
        audio, rate = speak(text)
        hyp = rec.recognize(audio, rate)
        results.append(SentenceResult(text=text, reference=normalize_for_wer(text), hypothesis=hyp,
                                      audio_seconds=len(audio) / float(rate),
                                      mos=None if mos is None else mos(audio, rate)))
        logger.info("REF %s\nHYP %s\nMOS %s", results[-1].reference, hyp, results[-1].mos)
    wer = word_error_rate([r.reference for r in results], [r.hypothesis for r in results])
    return QualityResult(wer=wer, sentences=results)


def read_transcripts(path: str | Path, limit: int | None = None) -> list[tuple[str, str]]:
    """LJSpeech-style ``id|text`` lines (the last field is the text) -> [(id, text)], first ``limit``."""
    out: list[tuple[str, str]] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        parts = line.split("|")
        out.append((parts[0], parts[-1]))
        if limit is not None and len(out) >= limit:
            break
    return out


def voice_speaker(voice: Any, *, seed: int = 0, **options: Any) -> SpeakFn:
    """A ``SpeakFn`` for a loaded ``tts.voice.Voice`` through the Synthesizer (CPU, fp32)."""
    from tts.options import SynthesisOptions
    from tts.synthesizer import Synthesizer

    synth = Synthesizer(voice)
    opts = SynthesisOptions(seed=seed, **options)

    def speak(text: str) -> tuple[np.ndarray, int]:
        res = synth.synthesize(text, opts)
        return np.asarray(res.audio, dtype=np.float32).reshape(-1), res.sample_rate

    return speak
