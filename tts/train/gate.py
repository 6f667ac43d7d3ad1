"""The quality gate run: a voice (or a teacher, ``festival`` or ``hibari``) on the first N sentences
of val.txt: pocketsphinx round-trip WER and, unless ``mos=False``, the mean Distill-MOS."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tts.quality import MosPredictor, Recognizer, SpeakFn, evaluate, read_transcripts, voice_speaker

logger = logging.getLogger(__name__)

#: The teachers ``run_gate("teacher", teacher=...)`` and the corpus builder know.
TEACHERS = ("festival", "hibari")


def teacher_speaker(festival_prefix: str | None = None) -> SpeakFn:
    """A ``SpeakFn`` for the Festival teacher, fed the same symbol text the corpus uses."""
    import soundfile as sf

    from tts.train.corpus import symbol_text
    from tts.train.festival import Festival

    fest = Festival.from_env(festival_prefix)
    tmp = Path(tempfile.mkdtemp(prefix="teacher_gate_"))

    def speak(text: str) -> tuple[np.ndarray, int]:
        fest.synthesize([("u", symbol_text(text))], tmp)
        audio, rate = sf.read(str(tmp / "u.wav"), dtype="float32")
        return audio, rate

    return speak


def hibari_speaker(seed: int = 0) -> SpeakFn:
    """A ``SpeakFn`` for the hibari teacher (``tts.train.hibari``): our symbol text, 22050 Hz."""
    from tts.train.hibari import HibariTeacher

    return HibariTeacher().speaker(seed=seed)


def run_gate(voice: str, texts: str, *, n: int = 100, out: str | None = None,
             festival_prefix: str | None = None, seed: int = 0, teacher: str = "festival",
             mos: bool = True) -> dict[str, Any]:
    """WER (and mean predicted MOS unless ``mos`` is False) of ``voice`` (NAME|DIR, or
    ``teacher``: the ``teacher`` named, ``festival`` or ``hibari``) on the first ``n`` lines of
    ``texts``. ``seed``: the voice's random draws; hibari's noise component."""
    items = read_transcripts(texts, n)
    if voice == "teacher":
        if teacher not in TEACHERS:
            raise ValueError(f"unknown teacher {teacher!r}: one of {', '.join(TEACHERS)}")
        speak = teacher_speaker(festival_prefix) if teacher == "festival" else hibari_speaker(seed)
    else:
        from tts.voice import load_voice
        speak = voice_speaker(load_voice(voice), seed=seed)
    res = evaluate(speak, [t for _, t in items], recognizer=Recognizer(),
                   mos=MosPredictor() if mos else None)
    seed_key = {} if voice == "teacher" and teacher == "festival" else {"seed": seed}
    result = {"voice": voice, **({"teacher": teacher} if voice == "teacher" else {}), "n": len(items),
              "wer": res.wer, **({} if res.mos is None else {"mos": res.mos}), **seed_key, **res.as_dict()}
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result
