"""recipes/bundled_voice/probe_exposure.py: the Tacotron2's teacher-forced fit against its own inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "recipes" / "bundled_voice" / "probe_exposure.py"
SEED = ROOT / "tts" / "voices" / "slt-tacotron2" / "tacotron2.pt"
VAL = ROOT / "tests" / "fixtures" / "ljspeech_val_100.txt"


def _run(*args: str, texts: Path = VAL) -> subprocess.CompletedProcess:
    env = {**os.environ, "TEXTS": str(texts), "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("args, says", [
    (("x.pt", "1", "j1"), "no Tacotron2 file x.pt"),
    ((str(SEED), "1", "k2"), "MODE must be fs or jK"),
    ((str(SEED), "1", "j0"), "MODE must be fs or jK"),
    ((str(SEED), "zero", "j1"), "N must be a positive number"),
    ((str(SEED), "1"), "usage: probe_exposure.py"),
])
def test_bad_arguments_are_named_without_a_traceback(tmp_path, args, says):
    r = _run(*args, str(tmp_path / "out.json")) if len(args) == 3 else _run(*args)
    assert r.returncode != 0
    assert says in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out.json").exists()


def test_missing_transcripts_are_named(tmp_path):
    r = _run(str(SEED), "1", "j1", str(tmp_path / "out.json"), texts=tmp_path / "none.txt")
    assert r.returncode != 0 and "no transcripts" in r.stderr and "Traceback" not in r.stderr


def test_teacher_forced_tacotron2_is_scored_like_the_gate(tmp_path):
    out = tmp_path / "tf.json"
    r = _run(str(SEED), "2", "j1", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["mode"] == "j1" and len(res["sentences"]) == 2
    # The partial Tacotron2 fed the FastSpeech's mels speaks the first two val sentences nearly
    # word for word (its teacher-forced WER on all 100 is 19 %): no more than a third wrong.
    assert res["wer"] <= 0.34
    for s in res["sentences"]:
        assert 4.0 < s["audio_seconds"] < 15.0
        assert len(s["hypothesis"].split()) >= len(s["reference"].split()) // 2
