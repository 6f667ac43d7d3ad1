"""``recipes/bundled_voice/gate_partial.sh``: wrong input is refused before any work."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "recipes/bundled_voice/results"


def _run(tmp_path, args, **env):
    before = sorted(RESULTS.iterdir())
    r = subprocess.run(["bash", "recipes/bundled_voice/gate_partial.sh", *args], cwd=ROOT,
                       env=dict(os.environ, TMPDIR=str(tmp_path / "tmp"), **env),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not (tmp_path / "tmp").exists() or list((tmp_path / "tmp").iterdir()) == []  # no voices built
    assert sorted(RESULTS.iterdir()) == before
    return r.stderr


def test_unknown_voice_is_refused_before_any_work(tmp_path):
    err = _run(tmp_path, ["1"], VOICES="slt-tacotron2 slt-nope")
    assert "unknown voice 'slt-nope' in VOICES" in err


@pytest.mark.parametrize("var", ["TACOTRON2", "WAVEGLOW"])
def test_missing_model_file_is_named_before_any_work(tmp_path, var):
    missing = tmp_path / "nope" / "model.pt"
    err = _run(tmp_path, ["1"], **{var: str(missing), "RESULTS": str(tmp_path / "res")})
    assert f"{var}={missing}: no such readable file" in err
    assert not (tmp_path / "res").exists()   # checked before the results folder is made


def test_sentence_count_must_be_a_number(tmp_path):
    err = _run(tmp_path, ["ten"])
    assert "N must be a whole number of sentences, not 'ten'" in err


def test_seed_must_be_a_number(tmp_path):
    err = _run(tmp_path, ["1"], SEED="-3")
    assert "SEED must be a whole number, not '-3'" in err


def test_uninstalled_package_is_named_before_any_work(tmp_path):
    # a python3 without site-packages: `tts` still imports from the checkout, its engines do not
    # (pyproject.toml maps the engines/ folder to tts.engines only in an install)
    import sys
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    err = _run(tmp_path, ["1"], PATH=f"{bin_dir}:{os.environ['PATH']}",
               TACOTRON2=str(ROOT / "tts/voices/slt-tacotron2/tacotron2.pt"))
    assert "tts package is not installed here" in err and "bash install.sh" in err
