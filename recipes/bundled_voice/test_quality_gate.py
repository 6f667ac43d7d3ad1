"""The bundled voice's quality gate on 10 held-out sentences (slow: ~1-2 minutes on 2 cores).

It lives beside the recipe until the voice is built and committed (``tts/voices/``); then it
moves to ``tests/`` so the default test run holds it. Run it now with
``python3 -m pytest recipes/bundled_voice/test_quality_gate.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tts.voice import bundled_voices

#: The first 100 lines of LJSpeech's held-out val.txt (public domain), copied beside the recipe.
VAL = Path(__file__).resolve().parent / "val_100.txt"

#: The teacher (Festival cmu_us_slt_arctic_hts) scored 16.4 % WER on the first 100 val
#: sentences; the issue's targets are teacher + 5 points (FastSpeech) and + 8 (Tacotron2).
#: On 10 sentences the estimate is noisy, so the slow test allows 10 more points.
TEACHER_WER_100 = 0.164
LIMITS = {"fastspeech": TEACHER_WER_100 + 0.05 + 0.10, "tacotron2": TEACHER_WER_100 + 0.08 + 0.10}


@pytest.mark.slow
@pytest.mark.parametrize("suffix,kind", [("", "fastspeech"), ("-tacotron2", "tacotron2")])
def test_bundled_voice_is_intelligible(suffix, kind):
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is a [dev] dependency of the quality gate")
    pytest.importorskip("jiwer", reason="jiwer is a [dev] dependency of the quality gate")
    voices = bundled_voices()
    if not voices:
        pytest.skip("no voice is bundled yet (tts/voices/ is produced by the GPU recipe in "
                    "recipes/bundled_voice/, not run so far); this test needs the built voice")
    name = voices[0] + suffix
    if name not in voices:
        pytest.skip(f"the bundled {kind} voice {name!r} is not built yet (recipes/bundled_voice/)")
    if not VAL.is_file():
        pytest.fail(f"{VAL} is missing")
    from tts.train.gate import run_gate
    res = run_gate(name, str(VAL), n=10)
    assert res["wer"] <= LIMITS[kind], {k: res[k] for k in ("voice", "wer")}
