"""``tools/gpu/bench_wn_tiles.py``: its tile arguments (CPU), and on a GPU its records of every
candidate, each against the shipped settings' audio."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool():
    spec = importlib.util.spec_from_file_location("bench_wn_tiles", ROOT / "tools/gpu/bench_wn_tiles.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiles_are_five_positive_numbers_each_and_bad_ones_say_the_format():
    mod = _tool()
    assert mod.tiles_arg("128,64,64,8,3; 64,32,16,4,2") == [(128, 64, 64, 8, 3), (64, 32, 16, 4, 2)]
    for bad in ("128,64,64,8", "128,64,64,8,x", "", "128,64,0,8,3"):
        with pytest.raises(argparse.ArgumentTypeError, match="BM,BN,BK,num_warps,num_stages"):
            mod.tiles_arg(bad)
    assert mod.IN_TILES[0] and mod.RS_TILES[0]              # the shipped tiles are the first candidates
    from tts.plugins.waveglow import WN_TILES
    assert (mod.IN_TILES[0], mod.RS_TILES[0]) == (WN_TILES["in"], WN_TILES["rs"])


@pytest.mark.gpu
def test_bench_wn_tiles_times_every_candidate_against_the_shipped_audio(tmp_path):
    mod = _tool()
    args = ["--size", "tiny", "--batch", "2", "--frames", "40", "--repeats", "2",
            "--in-tiles", "128,64,64,8,3;64,32,16,4,2", "--rs-tiles", "128,128,64,8,3;64,16,16,4,2",
            "--out", str(tmp_path)]
    assert mod.main(args) == 0
    out = json.loads((tmp_path / "wn_tiles.json").read_text())
    assert out["precision"] == "fp16" and out["batch"] == 2 and out["frames"] == 40
    assert out["command"].startswith("python3 tools/gpu/bench_wn_tiles.py --size tiny")
    got = [(r["kernel"], tuple(r["in"]), tuple(r["rs"]), r["flat"]) for r in out["candidates"]]
    best_in = min((r for r in out["candidates"] if r["kernel"] == "in"), key=lambda r: r["ms"])
    assert got == [("in", (128, 64, 64, 8, 3), (128, 128, 64, 8, 3), False),
                   ("in", (64, 32, 16, 4, 2), (128, 128, 64, 8, 3), False),
                   ("in", (128, 64, 64, 8, 3), (128, 128, 64, 8, 3), True),
                   ("in", (64, 32, 16, 4, 2), (128, 128, 64, 8, 3), True),
                   ("rs", tuple(best_in["in"]), (128, 128, 64, 8, 3), best_in["flat"]),
                   ("rs", tuple(best_in["in"]), (64, 16, 16, 4, 2), best_in["flat"])]
    scale = out["shipped"]["audio_max_abs"]
    assert 0 < scale < float("inf")
    for r in out["candidates"]:
        assert "error" not in r, r
        assert r["ms"] > 0 and r["x_real_time"] > 0 and r["max_abs_diff"] <= 1e-2 * max(1.0, scale), r
    assert out["best"]["ms"] == min(r["ms"] for r in out["candidates"])
    assert out["speedup_over_shipped"] == pytest.approx(out["shipped"]["ms"] / out["best"]["ms"])
