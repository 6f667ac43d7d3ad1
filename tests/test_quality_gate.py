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

#: The teacher (Festival cmu_us_slt_arctic_hts) scored 16.357 % WER on the first 100 val
#: sentences (recipes/bundled_voice/results/gates/teacher.json.gz); the targets are teacher + 5
#: points (FastSpeech) and + 8 (Tacotron2). On 5 sentences (100 words) the estimate is noisy, so
#: the test allows 10 more points: it catches a broken voice, the full gate judges a good one.
TEACHER_WER_100 = 0.16357
#: Sentences per voice (the full gate's WER on its first 5, seed 0: slt 7.9 %, slt-waveglow 14.9,
#: slt-tacotron2 11.9, slt-tacotron2-waveglow 15.8).
N = 5
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
    res = run_gate(voice, str(VAL), n=N, mos=False)   # MOS: tests/test_mos.py
    assert res["seed"] == 0 and res["n"] == N
    kind = "tacotron2" if "tacotron2" in voice else "fastspeech"
    assert res["wer"] <= LIMITS[kind], {k: res[k] for k in ("voice", "wer")}

