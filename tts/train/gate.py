"""The quality gate run: a voice (or the Festival teacher) on the first N sentences of val.txt."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tts.quality import Recognizer, SpeakFn, evaluate, read_transcripts, voice_speaker

logger = logging.getLogger(__name__)


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


def run_gate(voice: str, texts: str, *, n: int = 100, out: str | None = None,
             festival_prefix: str | None = None, seed: int = 0) -> dict[str, Any]:
    """WER of ``voice`` (NAME|DIR, or ``teacher``) on the first ``n`` lines of ``texts``."""
    items = read_transcripts(texts, n)
    if voice == "teacher":
        speak = teacher_speaker(festival_prefix)
    else:
        from tts.voice import load_voice
        speak = voice_speaker(load_voice(voice), seed=seed)
    res = evaluate(speak, [t for _, t in items], recognizer=Recognizer())
    result = {"voice": voice, "n": len(items), "wer": res.wer,
              **({} if voice == "teacher" else {"seed": seed}), **res.as_dict()}
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result
