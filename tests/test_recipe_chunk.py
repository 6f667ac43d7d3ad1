"""``recipes/bundled_voice/gpu.sh chunk``: the one-call training chunk the GPU sessions run, here on
CPU with a small synthetic corpus already in place (so no Festival), tiny batches and a 25 s
budget. It must train both models from where they stand, then leave in ``$OUT`` exactly what
``finish.sh`` reads: each model's fp16 file (WaveGlow's split into pieces of at most 15 MiB),
the continued loss logs and the training outputs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _synthetic_corpus(root: Path) -> None:
    spec = importlib.util.spec_from_file_location("wg_train_speed", ROOT / "tools" / "gpu" / "wg_train_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.build_corpus(root, 4)


@pytest.mark.slow
def test_chunk_trains_both_models_and_packs_what_finish_reads(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    out.mkdir()
    _synthetic_corpus(work / "corpus")
    no_init = tmp_path / "absent.pt"          # start from scratch, as in a fresh clone
    env = dict(os.environ, OUT=str(out), WORK_DIR=str(work), DEVICE="cpu", BATCH="2",
               WG_SETTINGS='{"segment_length": 4000}', INIT=str(no_init))
    r = subprocess.run(["bash", "recipes/bundled_voice/gpu.sh", "chunk", "25"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["outs.tgz", "tacotron2.pt", "tacotron2_log_continued.csv", "waveglow.pt.part00",
                     "waveglow.pt.part01", "waveglow_log_continued.csv"], names
    assert all(p.stat().st_size <= 15 * 2**20 for p in out.iterdir())
    wg = tmp_path / "waveglow.pt"
    wg.write_bytes((out / "waveglow.pt.part00").read_bytes() + (out / "waveglow.pt.part01").read_bytes())
    for path in (wg, out / "tacotron2.pt"):
        ck = torch.load(path, map_location="cpu", weights_only=True)
        assert ck["iteration"] >= 1
        assert all(v.dtype == torch.float16 for v in ck["state_dict"].values() if v.is_floating_point())
    for model in ("waveglow", "tacotron2"):
        rows = [json.loads(x) for x in (out / f"{model}_log_continued.csv").read_text().splitlines()
                if x and not x.startswith("#")]
        assert rows and rows[0]["step"] == 1
    with tarfile.open(out / "outs.tgz") as t:
        assert sorted(t.getnames()) == ["train_tacotron2.out", "train_waveglow.out"]
    assert "waveglow: 1 shards" in r.stdout and "tacotron2: " in r.stdout   # the corpus was there
    assert not (work / "corpus.log").exists()                              # and was not rebuilt


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


@pytest.mark.slow
def test_chunk_takes_wgspeeds_pick_with_its_graph_flag(tmp_path):
    """What ``gpu.sh wgspeed`` writes (``$W/wg_settings.json``, whose ``graph`` is the trainer's
    ``--graph``, not a task setting) is what ``chunk`` trains WaveGlow with; ``T2_SETTINGS`` is
    what it trains Tacotron2 with."""
    work, out = tmp_path / "work", tmp_path / "out"
    out.mkdir()
    _synthetic_corpus(work / "corpus")
    (work / "wg_settings.json").write_text('{"segment_length": 4000, "amp": true, "graph": true}')
    env = dict(os.environ, OUT=str(out), WORK_DIR=str(work), DEVICE="cpu", BATCH="2",
               INIT=str(tmp_path / "absent.pt"), T2_SETTINGS='{"lr": 5e-4}')
    env.pop("WG_SETTINGS", None)
    r = subprocess.run(["bash", "recipes/bundled_voice/gpu.sh", "chunk", "20"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    log = (work / "train_waveglow.out").read_text()
    assert '"graph": "on"' in log, log[-2000:]
    ck = torch.load(work / "ckpt" / "waveglow_last.pt", map_location="cpu", weights_only=True)
    settings = json.loads(ck["train"]["settings"])
    assert settings["segment_length"] == 4000 and settings["amp"] is True and "graph" not in settings
    t2 = torch.load(work / "ckpt" / "tacotron2_last.pt", map_location="cpu", weights_only=True)
    assert json.loads(t2["train"]["settings"])["lr"] == 5e-4          # T2_SETTINGS reaches the Tacotron2
