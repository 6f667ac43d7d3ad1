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

Needs the optional packages ``pocketsphinx`` and ``jiwer`` (imported lazily;
``QualityUnavailable`` says which is missing).
"""

from __future__ import annotations

import logging
import math
import re
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


@dataclass
class QualityResult:
    """A quality run over some sentences."""

    wer: float
    """Corpus word error rate, a fraction (0.12 = 12 %)."""
    sentences: list[SentenceResult] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"wer": self.wer, "n": len(self.sentences),
                "sentences": [vars(s) for s in self.sentences]}


#: A function that speaks one text: returns (mono float audio [N], sample rate).
SpeakFn = Callable[[str], "tuple[np.ndarray, int]"]


def evaluate(speak: SpeakFn, texts: Iterable[str], *, recognizer: Recognizer | None = None
             ) -> QualityResult:
    """Speak every text with ``speak``, recognise it, and score the corpus WER."""
    rec = recognizer or Recognizer()
    results: list[SentenceResult] = []
    for text in texts:
        audio, rate = speak(text)
        hyp = rec.recognize(audio, rate)
        results.append(SentenceResult(text=text, reference=normalize_for_wer(text), hypothesis=hyp,
                                      audio_seconds=len(audio) / float(rate)))
        logger.info("REF %s\nHYP %s", results[-1].reference, hyp)
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
