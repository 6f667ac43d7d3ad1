"""``recipes/bundled_voice/gate_partial.sh``: a wrong name in ``VOICES`` is refused before any work."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_voice_is_refused_before_any_work(tmp_path):
    before = sorted((ROOT / "recipes/bundled_voice/results").iterdir())
    r = subprocess.run(["bash", "recipes/bundled_voice/gate_partial.sh", "1"], cwd=ROOT,
                       env=dict(os.environ, VOICES="slt-tacotron2 slt-nope", TMPDIR=str(tmp_path)),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "unknown voice 'slt-nope' in VOICES" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert list(tmp_path.iterdir()) == []   # no temporary voices were built
    assert sorted((ROOT / "recipes/bundled_voice/results").iterdir()) == before
