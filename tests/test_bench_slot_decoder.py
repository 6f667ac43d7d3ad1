"""``tools/gpu/bench_slot_decoder.py`` on the CPU (tiny random model): its records, and that the
scheduler's pipelined replays give the audio of the plain ones."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_slot_decoder_records_every_bucket_and_pipelining_keeps_the_audio(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_slot_decoder", ROOT / "tools/gpu/bench_slot_decoder.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = ["--device", "cpu", "--precision", "fp32", "--size", "tiny", "--steps", "20", "--replays", "4,8",
            "--rows", "1,3", "--burst", "4", "--repeats", "1", "--out", str(tmp_path)]
    assert mod.main(args) == 0
    out = json.loads((tmp_path / "slot_decoder.json").read_text())
    assert out["steps"] == 20 and out["precision"] == "fp32" and out["text_chars"] == 116
    assert out["command"].startswith("python3 tools/gpu/bench_slot_decoder.py --device cpu")
    got = [(r["steps_per_replay"], r["rows"], r["replays"], r["input_bucket"]) for r in out["slots"]]
    assert got == [(4, 1, 5, 128), (4, 4, 5, 128), (8, 1, 3, 128), (8, 4, 3, 128)]
    assert all(r["run_ms"] > 0 and r["queued_ms"] > 0 for r in out["slots"]) and out["decode_ms"] > 0
    assert [r["pipeline"] for r in out["scheduler"]] == [False, True]
    assert all(r["burst"] == 4 and r["one_call_p50_ms"] > 0 for r in out["scheduler"])
    assert out["pipeline_same_audio_max_abs_diff"] == 0.0
