"""Predicted MOS in the quality gate (``tts.quality.MosPredictor``: Distill-MOS, the ``distillmos``
package) and its plumbing through ``evaluate`` and ``run_gate``.

Measured when the test was written (distillmos 0.9.1, CPU): the committed Festival teacher clips
score 3.24 and 3.86; the same clips with white noise at 0.3 x their peak 1.81 and 1.60; a 220 Hz
sine 1.53, white noise 1.91 (non-speech sits at the bottom of the scale; a pure tone does not
rank above noise). The full gate's figures are in ``recipes/bundled_voice/results/mos_gate.json``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tts.quality import QualityResult, SentenceResult

TEACHER = Path(__file__).parent / "fixtures" / "teacher"
VAL = Path(__file__).resolve().parent / "fixtures" / "ljspeech_val_100.txt"


def _have(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


@pytest.fixture(scope="module")
def mos():
    # not importorskip: distillmos imports torchaudio, which MosPredictor stands in for
    if not _have("distillmos"):
        pytest.skip("distillmos is a [train] dependency of the quality gate")
    from tts.quality import MosPredictor
    return MosPredictor()


def _clip(k: int) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(TEACHER / f"teacher_{k}.wav", dtype="float32")
    return audio, rate


def test_clean_speech_outranks_noisy_speech_and_non_speech(mos):
    rng = np.random.default_rng(0)
    t = np.arange(3 * 22050) / 22050
    tone = mos((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22050)
    noise = mos((0.1 * rng.standard_normal(t.size)).astype(np.float32), 22050)
    assert 1.0 <= tone < 2.2 and 1.0 <= noise < 2.2, (tone, noise)
    for k in (1, 2):
        audio, rate = _clip(k)
        clean = mos(audio, rate)
        noisy = mos(audio + 0.3 * np.abs(audio).max() * rng.standard_normal(audio.size).astype(np.float32), rate)
        assert 3.0 <= clean <= 4.3, (k, clean)      # measured 3.24, 3.86
        assert noisy < clean - 1.0, (k, clean, noisy)
        assert clean > max(tone, noise) + 1.0


def test_mos_does_not_depend_on_the_sample_rate_or_level_given(mos):
    audio, rate = _clip(1)
    from tts.audio import resample
    base = mos(audio, rate)
    assert mos(resample(audio, rate, 22050), 22050) == pytest.approx(base, abs=0.1)   # 3.18 vs 3.24
    assert mos(0.25 * audio, rate) == pytest.approx(base, abs=1e-3)    # the model peak-normalises
    with pytest.raises(ValueError, match="silent"):
        mos(np.zeros(1000, np.float32), rate)


def test_distillmos_imports_without_torchaudio_and_leaves_no_stand_in(mos):
    try:
        import torchaudio  # noqa: F401
    except Exception:  # noqa: BLE001 - none for our torch: the stand-in was used and removed
        assert "torchaudio" not in sys.modules
    assert "distillmos" in sys.modules


def test_mean_mos_is_over_all_sentences_and_absent_without_a_predictor():
    s = [SentenceResult("a", "a", "a", 1.0, mos=2.0), SentenceResult("b", "b", "b", 1.0, mos=3.5)]
    r = QualityResult(wer=0.1, sentences=s)
    assert r.mos == pytest.approx(2.75)
    assert r.as_dict()["mos"] == pytest.approx(2.75)
    assert r.as_dict()["sentences"][1]["mos"] == 3.5
    plain = QualityResult(wer=0.1, sentences=[SentenceResult("a", "a", "a", 1.0)])
    assert plain.mos is None and "mos" not in plain.as_dict()


def test_evaluate_scores_each_utterance_with_the_predictor():
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is a [dev] dependency of the quality gate")
    pytest.importorskip("jiwer", reason="jiwer is a [dev] dependency of the quality gate")
    from tts.quality import Recognizer, evaluate

    texts = json.loads((TEACHER / "texts.json").read_text(encoding="utf-8"))
    by_text = {t: uid for uid, t in texts.items()}
    seen = []

    def speak(text):
        return sf.read(TEACHER / f"{by_text[text]}.wav", dtype="float32")

    def fake_mos(audio, rate):
        seen.append((len(audio), rate))
        return 1.0 + len(seen)

    res = evaluate(speak, list(texts.values()), recognizer=Recognizer(), mos=fake_mos)
    assert [s.mos for s in res.sentences] == [2.0, 3.0]
    assert res.mos == pytest.approx(2.5)
    assert seen[0] == (len(speak(list(texts.values())[0])[0]), 16000)


@pytest.mark.slow
def test_gate_reports_the_default_voices_mos_in_its_measured_range():
    """``heart`` on the first 3 val sentences: predicted MOS 4.35 when written (4.12 over all 100,
    ``results/mos_gate.json``; 3.97 with Griffin-Lim from random phases, 2.61 with unsharpened
    magnitudes as well)."""
    for mod in ("pocketsphinx", "jiwer", "distillmos"):
        if not _have(mod):
            pytest.skip(f"{mod} is a dependency of the quality gate")
    from tts.train.gate import run_gate
    res = run_gate("heart", str(VAL), n=3)
    assert res["n"] == 3 and len(res["sentences"]) == 3
    assert 4.0 <= res["mos"] <= 4.7, res["mos"]
    assert res["mos"] == pytest.approx(np.mean([s["mos"] for s in res["sentences"]]))
    assert res["wer"] <= 0.25


def test_gate_cli_no_mos_reports_wer_alone(tmp_path, capsys):
    """``python -m tts.train gate ... --no-mos``: the WER of the voice, no predicted MOS anywhere."""
    for mod in ("pocketsphinx", "jiwer"):
        if not _have(mod):
            pytest.skip(f"{mod} is a dependency of the quality gate")
    from tts.train.__main__ import main
    out = tmp_path / "gate.json"
    assert main(["gate", "heart", "--texts", str(VAL), "--n", "1", "--no-mos", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    full = json.loads(out.read_text())
    assert "mos" not in printed and "mos" not in full and printed["n"] == 1
    assert 0.0 <= printed["wer"] <= 1.0 and all(s.get("mos") is None for s in full["sentences"])
