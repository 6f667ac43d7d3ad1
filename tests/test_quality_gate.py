"""The bundled voices' quality gate on 10 held-out sentences (slow: about a minute per voice).

The full gate (100 sentences) is ``python3 -m tts.train gate NAME --texts val.txt --n 100``;
its results are in ``recipes/bundled_voice/results/`` and the README.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tts.voice import bundled_voices

#: The first 100 lines of LJSpeech's held-out val.txt (public domain).
VAL = Path(__file__).resolve().parent / "fixtures" / "ljspeech_val_100.txt"

#: The teacher (Festival cmu_us_slt_arctic_hts) scored 16.357 % WER on the first 100 val
#: sentences (recipes/bundled_voice/results/twentythird/gate_teacher_100.json.gz); the issue's
#: targets are teacher + 5 points (FastSpeech) and + 8 (Tacotron2). On 10 sentences the
#: estimate is noisy, so the slow test allows 10 more points.
TEACHER_WER_100 = 0.16357
LIMITS = {"fastspeech": TEACHER_WER_100 + 0.05 + 0.10, "tacotron2": TEACHER_WER_100 + 0.08 + 0.10}


@pytest.mark.slow
@pytest.mark.parametrize("voice", ["slt", "slt-waveglow", "slt-tacotron2", "slt-tacotron2-waveglow"])
def test_bundled_voice_is_intelligible(voice):
    """Every bundled voice: ``slt`` (FastSpeech + Griffin-Lim, the default), ``slt-waveglow``,
    ``slt-tacotron2`` (Tacotron2 + Griffin-Lim) and ``slt-tacotron2-waveglow``."""
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is a [dev] dependency of the quality gate")
    pytest.importorskip("jiwer", reason="jiwer is a [dev] dependency of the quality gate")
    assert bundled_voices()[0] == "slt" and voice in bundled_voices()
    from tts.train.gate import run_gate
    res = run_gate(voice, str(VAL), n=10)
    assert res["seed"] == 0 and res["n"] == 10
    kind = "tacotron2" if "tacotron2" in voice else "fastspeech"
    assert res["wer"] <= LIMITS[kind], {k: res[k] for k in ("voice", "wer")}


@pytest.mark.slow
def test_sigma_sweep_scores_each_cell_on_the_lines_asked(tmp_path):
    """``recipes/bundled_voice/sigma_sweep.py`` (how the WaveGlow manifests' defaults are chosen):
    one WER per cell, on exactly the lines asked for, written to its JSON."""
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is a [dev] dependency of the quality gate")
    pytest.importorskip("jiwer", reason="jiwer is a [dev] dependency of the quality gate")
    import json
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "sweep.json"
    r = subprocess.run([sys.executable, str(root / "recipes" / "bundled_voice" / "sigma_sweep.py"), "slt",
                        "2", "2", "0,0;0,0", str(out), "--texts", str(VAL)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["lines"] == [2, 4] and len(res["runs"]) == 2
    # Griffin-Lim ignores sigma and the seed is fixed: the two cells are the same run
    assert res["runs"][0]["wer"] == res["runs"][1]["wer"] <= 0.5
    assert r.stdout.count("WER") == 2
