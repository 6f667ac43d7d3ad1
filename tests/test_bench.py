"""tts-bench smoke runs on tiny random models (CPU, a few seconds)."""

from __future__ import annotations

import json

import pytest

from tts.cli import bench


def test_bench_tiny_tacotron2_writes_json_and_csv(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = bench.main(["--size", "tiny", "--device", "cpu", "--repeats", "1", "--warmup", "0",
                     "--input-length", "24", "--num-frames", "8", "--batch", "2", "--verify",
                     "--output", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    comps = {(r["component"], r["backend"]) for r in data["rows"]}
    for c in ("text", "encoder", "decoder", "postnet", "waveglow", "denoiser", "end to end"):
        assert (c, "eager") in comps and (c, "torchscript") in comps and (c, "engine") in comps
    assert data["baselines"] == ["eager", "torchscript"] and data["float32_math"] is None   # CPU: nothing set
    rows = {(r["component"], r["backend"]): r for r in data["rows"]}
    e2e = rows[("end to end", "engine")]
    assert e2e["speedup"] > 0 and e2e["avg_mel_frames"] == 8 and e2e["batch"] == 2
    for comp in ("decoder", "end to end"):      # the ratios are the baselines' mean over the engine's
        eng = rows[(comp, "engine")]
        assert eng["speedup_torchscript"] == pytest.approx(rows[(comp, "torchscript")]["avg_ms"] / eng["avg_ms"])
        assert eng["speedup"] == pytest.approx(rows[(comp, "eager")]["avg_ms"] / eng["avg_ms"])
    ts = rows[("end to end", "torchscript")]
    assert ts["speedup_torchscript"] == "" and ts["speedup"] == pytest.approx(
        rows[("end to end", "eager")]["avg_ms"] / ts["avg_ms"])
    dec_ts = rows[("decoder", "torchscript")]
    assert dec_ts["us_per_step"] > 0 and dec_ts["avg_mel_frames"] == 8
    assert data["verify"][0]["mel_ok"] and data["verify"][0]["audio_ok"]
    vb = data["verify_baselines"]        # TorchScript = eager, same seed, dropout and noise on
    assert [v["precision"] for v in vb] == ["fp32"] and vb[0]["ok"]
    assert vb[0]["mel_max_abs_diff"] <= 1e-5 and vb[0]["audio_max_abs_diff"] <= 1e-5 and vb[0]["audio_max_abs"] > 0
    header = (tmp_path / "r.csv").read_text().splitlines()[0]
    assert header.startswith("component,backend,batch") and "speedup_torchscript" in header
    out = capsys.readouterr().out
    assert "Avg latency (ms)" in out and "Speed-up vs TorchScript" in out and "torchscript vs eager" in out
    assert f"end to end, batch 2, 24 characters: engines {e2e['avg_ms']:.3g} ms, " \
           f"{e2e['speedup_torchscript']:.3g}x vs TorchScript ({ts['avg_ms']:.3g} ms), {e2e['speedup']:.3g}x vs eager" in out


def test_bench_baseline_flag_and_fastspeech_has_no_torchscript_baseline(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert bench.main(["--size", "tiny", "--device", "cpu", "--repeats", "1", "--warmup", "0", "--input-length", "12",
                       "--num-frames", "4", "--baseline", "eager", "--output", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["baselines"] == ["eager"] and {r["backend"] for r in data["rows"]} == {"eager", "engine"}
    assert all(r["speedup_torchscript"] == "" for r in data["rows"])
    assert data["stop_rule"] == "gate"                       # NVIDIA's rule unless asked
    assert bench.main(["--size", "tiny", "--device", "cpu", "--repeats", "1", "--warmup", "0", "--input-length", "12",
                       "--num-frames", "4", "--baseline", "eager", "--stop-rule", "attention", "--verify",
                       "--output", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["stop_rule"] == "attention" and data["verify"][0]["mel_ok"]
    assert bench.main(["--size", "tiny", "--device", "cpu", "--repeats", "1", "--warmup", "0", "--input-length", "12",
                       "--acoustic", "fastspeech", "--output", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["baselines"] == ["eager"] and {r["backend"] for r in data["rows"]} == {"eager", "engine"}
    assert "no TorchScript baseline for fastspeech" in capsys.readouterr().err


@pytest.mark.parametrize("precision", ["fp16", "tf32"])
def test_bench_rejects_fp16_and_tf32_on_cpu(capsys, precision):
    assert bench.main(["--size", "tiny", "--device", "cpu", "--precision", precision]) == 1
    assert f"--precision {precision} needs a CUDA device" in capsys.readouterr().err


def test_bench_batch_flag_parses():
    args = bench.build_parser().parse_args(["--batch", "8"])
    assert args.batch == 8 and args.input_length == 128
    with pytest.raises(SystemExit):
        bench.build_parser().parse_args(["--batch", "0"])


def test_bench_with_a_hifigan_vocoder(tmp_path):
    """A HiFi-GAN checkpoint runs as the vocoder stage (its engine against the eager module), and the
    engine side's audio agrees with the eager side's."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "r.json"
    rc = bench.main(["--tacotron2", str(root / "tts/voices/slt-tacotron2/tacotron2.pt"),
                     "--hifigan", str(root / "tests/fixtures/reference/hifigan/small_gen_checkpoint_10.pt"),
                     "--device", "cpu", "--repeats", "1", "--warmup", "0", "--input-length", "24",
                     "--num-frames", "8", "--verify", "--output", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["verify"][0]["mel_ok"] and data["verify"][0]["audio_ok"]
    assert {r["component"] for r in data["rows"]} >= {"decoder", "hifigan", "end to end"}
    assert data["vocoder"] == "hifigan" and "waveglow" not in {r["component"] for r in data["rows"]}


def test_bench_random_hifigan_runs_and_collects_as_hifigan_figures(tmp_path):
    """``--vocoder hifigan``: random weights of DLE's default HiFi-GAN generator (tiny here) as the
    vocoder stage, named ``hifigan``; ``benchmarks/collect.py`` makes HiFi-GAN records of the run (the
    vocoder's against eager only: the TorchScript pipeline runs HiFi-GAN eager), and no decoder or
    WaveGlow record."""
    import importlib.util
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    raw = tmp_path / "raw" / "cpu-2000-01-01"
    raw.mkdir(parents=True)
    rc = bench.main(["--size", "tiny", "--vocoder", "hifigan", "--device", "cpu", "--repeats", "2", "--warmup", "0",
                     "--input-length", "24", "--num-frames", "8", "--verify", "--output", str(raw / "hg.json")])
    assert rc == 0
    data = json.loads((raw / "hg.json").read_text())
    assert data["vocoder"] == "hifigan"
    comps = {(r["component"], r["backend"]) for r in data["rows"]}
    assert {("hifigan", b) for b in ("eager", "torchscript", "engine")} <= comps
    assert not any(c == "waveglow" for c, _ in comps)
    v = data["verify"][0]
    assert v["mel_ok"] and v["audio_ok"] and v["vocoder_only_snr_db"] > 60
    (raw / "env.txt").write_text("NVIDIA H100 80GB HBM3, 580.00, 81559 MiB\n"
                                 "python 3.12.3 torch 2.11.0 cuda 13.0 cudnn 91300 triton 3.6.0\n")
    spec = importlib.util.spec_from_file_location("bench_collect", root / "benchmarks" / "collect.py")
    collect = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(collect)
    recs = {r["figure"]: r for r in collect.collect_folder(raw, tmp_path)}
    assert set(recs) == {"e2e_tacotron2_hifigan", "hifigan"}
    e2e, voc = recs["e2e_tacotron2_hifigan"], recs["hifigan"]
    assert e2e["name"] == "Tacotron2 + HiFi-GAN + denoiser, end to end" and e2e["baseline"] == collect.TORCHSCRIPT
    assert voc["baseline"] == collect.EAGER and voc["baseline_torchscript"] is None
    assert voc["input"] == "8 mel frames" and voc["ratio_eager"] > 0


def test_bench_vocoder_flag_is_for_random_weights_only(capsys):
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    assert bench.main(["--tacotron2", str(root / "tts/voices/slt-tacotron2/tacotron2.pt"),
                       "--vocoder", "hifigan", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "--vocoder picks the random-weight models' vocoder" in err and "Traceback" not in err


@pytest.mark.parametrize("mode", ["half", "autocast"])
def test_eager_fp16_casts_the_baseline_as_told(mode):
    """``--eager-fp16 half`` (default, DLE's ``inference.py``): the baseline's acoustic model and vocoder in
    float16; ``autocast``: float32 weights run under autocast. The denoiser stays float32 either way."""
    import torch

    args = bench.build_parser().parse_args(["--size", "tiny"] + (["--eager-fp16", mode] if mode != "half" else []))
    assert args.eager_fp16 == mode
    acoustic, wg, den = bench.random_models("tacotron2", "tiny", 0)
    models = bench.Models("tacotron2", acoustic, wg, den, "tacotron2", 22050, True)
    p = bench.Pipeline("eager", models, torch.device("cpu"), "fp16", args)
    want = torch.float16 if mode == "half" else torch.float32
    assert next(p.acoustic.parameters()).dtype == want
    assert p.autocast == (mode == "autocast")
    assert next(p.vocoder.parameters()).dtype == torch.float16
    assert p.denoiser.bias_spec.dtype == torch.float32


def test_eager_fp16_refuses_other_modes(capsys):
    with pytest.raises(SystemExit):
        bench.build_parser().parse_args(["--eager-fp16", "bf16"])
    assert "--eager-fp16" in capsys.readouterr().err
