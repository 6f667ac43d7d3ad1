"""benchmarks/results.json and the README table: built from the raw files by benchmarks/collect.py, never by hand."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _load_collect():
    spec = importlib.util.spec_from_file_location("bench_collect", BENCH / "collect.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


collect = _load_collect()


def test_records_have_the_required_fields():
    records = collect.load_results()
    assert records
    for r in records:
        missing = [k for k in collect.REQUIRED if k not in r]
        assert not missing, (r.get("name"), missing)
        assert isinstance(r["name"], str) and r["name"]
        assert isinstance(r["value"], float) and r["value"] > 0
        assert r["unit"] and r["better"] in ("lower", "higher")
        assert r["gpu"] and set(r["versions"]) == set(collect.VERSION_KEYS) and r["versions"]["torch"]
        assert r["batch"] is None or (isinstance(r["batch"], int) and r["batch"] > 0)
        assert r["precision"] and r["input"] and r["command"]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", r["date"])
        assert (BENCH / r["source"]).is_file(), r["source"]
        if r["baseline_value"] is None:
            assert r["baseline"] is None and r["ratio"] is None
        else:
            assert r["baseline"]
            ratio = (r["baseline_value"] / r["value"] if r["better"] == "lower"
                     else r["value"] / r["baseline_value"])
            assert r["ratio"] == pytest.approx(ratio, rel=1e-2)   # value, baseline and ratio are each kept to 3 significant figures
        for which in ("torchscript", "eager"):     # the inference baselines of the same run, each with its ratio
            base, ratio = r[f"baseline_{which}"], r[f"ratio_{which}"]
            assert (base is None) == (ratio is None)
            if base is not None:
                assert ratio == pytest.approx(base / r["value"] if r["better"] == "lower" else r["value"] / base,
                                              rel=1e-2)
        if r["baseline_torchscript"] is not None:   # the headline is TorchScript's where it was measured
            assert r["baseline"] == collect.TORCHSCRIPT and r["ratio"] == r["ratio_torchscript"]


def test_results_json_is_what_collect_makes_of_raw():
    assert collect.dump_results(collect.rebuild()) == collect.RESULTS.read_text(encoding="utf-8"), \
        "run: python3 benchmarks/collect.py --rebuild"


def test_readme_table_is_rendered_from_results_json():
    readme = collect.README.read_text(encoding="utf-8")
    assert readme.startswith("# Benchmarks")
    assert collect.current_table(readme) == collect.render(collect.load_results()), \
        "run: python3 benchmarks/collect.py --render"
    # the table comes first: only the introduction stands before it
    assert readme.index(collect.BEGIN) < readme.index("## Reproducing") < readme.index("## History")


def test_every_gpu_script_is_used_by_the_benchmarks_readme():
    readme = collect.README.read_text(encoding="utf-8")
    for path in sorted((ROOT / "tools" / "gpu").iterdir()):
        if path.is_file():
            assert f"tools/gpu/{path.name}" in readme, path.name


# ----------------------------------------------------------------------------- collect.py on made-up runs

ENV = {"python": "3.12.3", "torch": "2.11.0+cu130", "cuda": "13.0", "triton": "3.6.0", "gpu": "NVIDIA H100 80GB HBM3"}


def _bench_doc(command: str, eager_ms: float, engine_ms: float, batches=(1,), torchscript_ms: float | None = None) -> dict:
    rows = []
    backends = [("eager", eager_ms), ("engine", engine_ms)] + ([("torchscript", torchscript_ms)] if torchscript_ms else [])
    for b in batches:
        for backend, ms in backends:
            for comp in ("decoder", "waveglow", "end to end"):
                rows.append({"component": comp, "backend": backend, "batch": b, "input_length": 128,
                             "avg_ms": ms, "std_ms": 0.1, "p50_ms": ms, "p99_ms": ms, "avg_mel_frames": 580.0,
                             "rtf_aggregate": 6.73 * b / ms * 1000,
                             "us_per_step": ms / 580 * 1000 if comp == "decoder" else None})
    return {"environment": ENV, "command": command, "acoustic": "tacotron2", "random_weights": True,
            "size": "ngc", "num_frames": 580, "precision": "fp16", "rows": rows}


def _folder(tmp_path: Path, name: str) -> Path:
    d = tmp_path / "raw" / name
    d.mkdir(parents=True)
    return d


def test_a_dedicated_run_replaces_the_walk_and_a_new_run_replaces_the_old(tmp_path):
    d = _folder(tmp_path, "h100-2026-01-02")
    (d / "walk.json").write_text(json.dumps(_bench_doc(
        "/tmp/pp/tts/cli/bench.py --walk --output /root/out/walk.json", 500.0, 25.0, batches=(1, 2, 8))))
    (d / "t2_b1.json").write_text(json.dumps(_bench_doc("bench.py --batch 1 --output /x/t2_b1.json", 600.0, 24.0)))
    recs = collect.collect_folder(d, tmp_path)
    e2e = {r["batch"]: r for r in recs if r["figure"] == "e2e_tacotron2"}
    assert sorted(e2e) == [1, 8]                                   # the walk gives batch 1 and 8 only
    assert e2e[1]["ratio"] == 25.0 and e2e[1]["command"] == "tts-bench --batch 1 --output t2_b1.json"
    assert e2e[8]["ratio"] == 20.0 and e2e[8]["source"] == "raw/h100-2026-01-02/walk.json"
    assert e2e[1]["versions"]["driver"] is None and e2e[1]["date"] == "2026-01-02"

    d2 = _folder(tmp_path, "h100-2026-01-03")
    (d2 / "t2_b1.json").write_text(json.dumps(_bench_doc("tts-bench --batch 1", 480.0, 20.0)))
    merged = collect.merge(recs, collect.collect_folder(d2, tmp_path))
    e2e = [r for r in merged if r["figure"] == "e2e_tacotron2"]
    assert len(merged) == len(recs) and len(e2e) == 2
    assert [r["value"] for r in e2e if r["batch"] == 1] == [20.0]
    table = collect.render(merged)
    assert "| 20.0 ms (RTF 336) | - | **24.0x** (480 ms) | - |" in table
    assert "`tts-bench --batch 1` ([raw/h100-2026-01-03/t2_b1.json]" in table


def test_server_rows_need_a_command_and_an_environment(tmp_path):
    rows = [{"concurrency": c, "requests": 10, "errors": 0, "audio_rtf": rtf, "p50_ms": 30.0, "p99_ms": 40.0,
             "ttfa_p50_ms": float("nan"), "ttfa_p99_ms": float("nan")} for c, rtf in ((1, 190.0), (64, 550.0))]
    d = _folder(tmp_path, "h200x2-2026-01-02")
    (d / "server_unary.json").write_text(json.dumps(rows))
    with pytest.raises(collect.CollectError, match="no GPU"):
        collect.collect_folder(d, tmp_path)
    (d / "server.log").write_text("tts-server: INFO: engine cache: loaded "
                                  "waveglow-NVIDIA-H200-sm90-fp16-torch2.11.0-cu130-tts0.1.0-77.engine\n")
    with pytest.raises(collect.CollectError, match="no command"):
        collect.collect_folder(d, tmp_path)
    (d / "commands.txt").write_text("# comment\nserver_unary.json: tts-server --devices 0,1 --precision fp16; "
                                    "tts-bench --server h:1 --option max_decoder_steps=580 --json server_unary.json\n")
    recs = {r["figure"]: r for r in collect.collect_folder(d, tmp_path)}
    top = recs["server_unary_throughput"]
    assert top["value"] == 550.0 and top["concurrency"] == 64 and top["ratio"] is None
    assert top["gpu"] == "2x NVIDIA H200" and top["versions"]["torch"] == "2.11.0+cu130"
    assert top["versions"]["cuda"] == "13.0" and top["versions"]["triton"] is None
    assert top["precision"] == "fp16" and top["input"].endswith("580 decoder steps each")
    assert recs["server_unary_latency"]["value"] == 30.0


def test_what_the_gpu_scripts_write_is_collected(tmp_path):
    d = _folder(tmp_path, "h100-2026-01-02")
    env = dict(ENV, device="cuda")
    (d / "server_streaming.json").write_text(json.dumps({
        "kind": "tts-server-load", "mode": "streaming", "precision": "fp16", "environment": env,
        "command": "tts-server --device cuda; tts-bench --server h:1 --streaming --json server_streaming.json",
        "rows": [{"concurrency": 1, "requests": 5, "errors": 0, "audio_rtf": 80.0, "p50_ms": 80.0,
                  "p99_ms": 90.0, "ttfa_p50_ms": 8.0, "ttfa_p99_ms": 11.0}]}))
    (d / "engine_cache.json").write_text(json.dumps({
        "kind": "engine-cache", "command": "python3 tools/gpu/bench_engine_cache.py", "precision": "fp16",
        "input": "x", "environment": env,
        "runs": [{"mode": "cold", "ready_s": 12.0, "t2_first_call_s": 9.0},
                 {"mode": "warm", "ready_s": 3.0, "t2_first_call_s": 1.0}]}))
    (d / "decoder_step.json").write_text(json.dumps({
        "kind": "decoder-step", "command": "python3 tools/gpu/bench_decoder_step.py", "precision": "fp16",
        "input_length": 128, "steps": 580, "environment": env,
        "rows": [{"batch": 8, "eager_us_per_step": 900.0, "engine_us_per_step": 40.0}]}))
    recs = {r["figure"]: r for r in collect.collect_folder(d, tmp_path)}
    assert recs["server_ttfa"]["value"] == 8.0 and recs["server_ttfa"]["gpu"] == ENV["gpu"]
    assert recs["engine_cache_ready"]["ratio"] == 4.0
    assert recs["decoder_step_alone"]["ratio"] == 22.5 and recs["decoder_step_alone"]["batch"] == 8


def test_a_raw_folder_is_named_by_machine_and_date(tmp_path):
    d = _folder(tmp_path, "somerun")
    with pytest.raises(collect.CollectError, match="MACHINE-YYYY-MM-DD"):
        collect.collect_folder(d, tmp_path)


def test_a_run_with_the_torchscript_baseline_records_both_and_heads_with_torchscript(tmp_path):
    d = _folder(tmp_path, "h100-2026-01-04")
    doc = _bench_doc("tts-bench --batch 1 --verify --output t2_b1.json", 600.0, 20.0, torchscript_ms=400.0)
    doc["verify_baselines"] = [{"precision": "fp32", "mel_max_abs_diff": 2e-6, "audio_max_abs_diff": 1e-7,
                                "limit": 1e-3, "ok": True, "audio_max_abs": 0.03}]
    doc["baseline_fp16"] = "half"
    (d / "t2_b1.json").write_text(json.dumps(doc))
    recs = {r["figure"]: r for r in collect.collect_folder(d, tmp_path)}
    e2e = recs["e2e_tacotron2"]
    assert (e2e["baseline"], e2e["baseline_value"], e2e["ratio"]) == (collect.TORCHSCRIPT, 400.0, 20.0)
    assert (e2e["baseline_torchscript"], e2e["ratio_torchscript"]) == (400.0, 20.0)
    assert (e2e["baseline_eager"], e2e["ratio_eager"]) == (600.0, 30.0)
    assert e2e["extra"]["verify_torchscript_vs_eager"][0]["ok"] and e2e["extra"]["baseline_fp16"] == "half"
    step = recs["decoder_step"]      # us per step: 400 ms / 580 steps against 20 ms / 580
    assert step["ratio_torchscript"] == 20.0 and step["ratio_eager"] == 30.0
    table = collect.render(list(recs.values()))
    assert "| 20.0 ms (RTF 336) | **20.0x** (400 ms) | 30.0x (600 ms) | - | 1 |" in table
    assert "vs TorchScript (same run)" in table.splitlines()[2]


def test_a_run_on_the_attention_stop_rule_is_a_figure_of_its_own(tmp_path):
    d = _folder(tmp_path, "h100-2026-01-05")
    (d / "t2_b1.json").write_text(json.dumps(_bench_doc("tts-bench --batch 1 --output t2_b1.json", 600.0, 20.0)))
    doc = _bench_doc("tts-bench --batch 1 --stop-rule attention --output t2_b1_attention.json", 610.0, 21.0)
    doc["stop_rule"] = "attention"
    (d / "t2_b1_attention.json").write_text(json.dumps(doc))
    recs = collect.collect_folder(d, tmp_path)
    inputs = sorted((r["figure"], r["input"], r["value"]) for r in recs)
    assert inputs == [("decoder_step", "128 characters, 580 decoder steps", collect.sig(20.0 / 580 * 1000)),
                      ("decoder_step", "128 characters, 580 decoder steps, attention stop rule",
                       collect.sig(21.0 / 580 * 1000)),
                      ("e2e_tacotron2", "128 characters, 580 decoder steps", 20.0),
                      ("e2e_tacotron2", "128 characters, 580 decoder steps, attention stop rule", 21.0),
                      ("waveglow", "580 mel frames", 20.0)], inputs   # no WaveGlow figure from the rule's run


def test_collect_render_rewrites_only_the_table(tmp_path, monkeypatch):
    """``collect.py --render``: the README table from results.json, the rest of the page as it was."""
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nintro\n\n" + collect.BEGIN + "\nstale\n" + collect.END + "\n\nafter\n")
    monkeypatch.setattr(collect, "README", readme)
    assert collect.main(["--render"]) == 0
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n\n") and text.endswith("\n\nafter\n")
    assert collect.current_table(text) == collect.render(collect.load_results())
