"""The WER scorer (tts.quality) on committed teacher audio, and its text normalisation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from tts.quality import normalize_for_wer, read_transcripts, resample, to_pcm16

TEACHER = Path(__file__).parent / "fixtures" / "teacher"

#: Measured when the fixture was made: pocketsphinx 5.1.1 heard 3 of the 17 words wrong
#: (0.176); the bound leaves room for two more errors on another platform.
TEACHER_WER_BOUND = 0.30


def test_normalize_expands_numbers_and_drops_punctuation():
    assert normalize_for_wer("In 1835, Mr. Smith's well-known dog ran!") == \
        "in eighteen thirty five mister smith's well known dog ran"
    assert normalize_for_wer("'Quoted' -- text.") == "quoted text"
    assert normalize_for_wer("   ") == ""


def test_word_error_rate_counts_edits_over_reference_words():
    pytest.importorskip("jiwer", reason="jiwer is a [dev] dependency of the quality gate")
    from tts.quality import word_error_rate
    assert word_error_rate(["a b c d"], ["a b c d"]) == 0.0
    assert word_error_rate(["a b c d", "e f"], ["a x c", "e f"]) == pytest.approx(2 / 6)
    assert word_error_rate(["a b"], [""]) == 1.0
    with pytest.raises(ValueError):
        word_error_rate(["a"], ["a", "b"])


def test_resample_and_pcm16():
    import numpy as np
    x = np.sin(np.linspace(0, 100, 22050))
    assert len(resample(x, 22050, 16000)) == 16000
    assert len(to_pcm16(x)) == 2 * 22050
    pcm = np.frombuffer(to_pcm16(0.1 * x, normalize=True), dtype="<i2")
    assert abs(int(pcm.max()) - round(0.9 * 32767)) <= 2


def test_pocketsphinx_recognizes_teacher_audio():
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is a [dev] dependency of the quality gate")
    pytest.importorskip("jiwer", reason="jiwer is a [dev] dependency of the quality gate")
    from tts.quality import Recognizer, evaluate

    texts = json.loads((TEACHER / "texts.json").read_text(encoding="utf-8"))
    by_text = {t: uid for uid, t in texts.items()}

    def speak(text):
        audio, rate = sf.read(TEACHER / f"{by_text[text]}.wav", dtype="float32")
        return audio, rate

    res = evaluate(speak, list(texts.values()), recognizer=Recognizer())
    assert res.wer <= TEACHER_WER_BOUND, res.as_dict()
    assert res.sentences[0].hypothesis == "the committee could do nothing in this respect"


def test_read_transcripts(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("a|Hello.\n\nb|x|World\nc|third\n", encoding="utf-8")
    assert read_transcripts(p) == [("a", "Hello."), ("b", "World"), ("c", "third")]
    assert read_transcripts(p, 2) == [("a", "Hello."), ("b", "World")]
