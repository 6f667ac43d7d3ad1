"""The bundled voices' quality gate on 5 held-out sentences (slow: 20-60 s per voice on 2 cores).

The full gate (100 sentences) is ``python3 -m tts.train gate NAME --texts val.txt --n 100``;
its results are in ``recipes/bundled_voice/RESULTS.md``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tts.voice import bundled_voices

#: The first 100 lines of LJSpeech's held-out val.txt (public domain).
VAL = Path(__file__).resolve().parent / "fixtures" / "ljspeech_val_100.txt"

#: Each voice's teacher's WER on the first 100 val sentences: hibari (``heart``) 14.739 %
#: (recipes/bundled_voice/results/mos_gate.json), Festival cmu_us_slt_arctic_hts (``slt-tacotron2``)
#: 16.357 % (results/gates/teacher.json.gz). The targets are the teacher's + 3 points (the default
#: voice) and + 5 (Tacotron2). On 5 sentences (100 words) the estimate is noisy, so the test allows
#: 10 more points: it catches a broken voice, the full gate judges a good one.
TEACHER_WER_100 = {"heart": 0.14739, "slt-tacotron2": 0.16357}
TARGET_POINTS = {"fastspeech": 0.03, "tacotron2": 0.05}
#: Sentences per voice (the full gate's WER on its first 5, seed 0: heart 10.9 %, slt-tacotron2 16.8).
N = 5


@pytest.mark.slow
@pytest.mark.parametrize("voice", ["heart", "slt-tacotron2"])
def test_bundled_voice_is_intelligible(voice):
    """Every bundled voice: ``heart`` (FastSpeech + Griffin-Lim, the default) and ``slt-tacotron2``
    (Tacotron2 + Griffin-Lim)."""
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is a [dev] dependency of the quality gate")
    pytest.importorskip("jiwer", reason="jiwer is a [dev] dependency of the quality gate")
    assert bundled_voices() == ["heart", "slt-tacotron2"]
    from tts.train.gate import run_gate
    res = run_gate(voice, str(VAL), n=N, mos=False)   # MOS: tests/test_mos.py
    assert res["seed"] == 0 and res["n"] == N
    kind = "tacotron2" if "tacotron2" in voice else "fastspeech"
    limit = TEACHER_WER_100[voice] + TARGET_POINTS[kind] + 0.10
    assert res["wer"] <= limit, {k: res[k] for k in ("voice", "wer")}

