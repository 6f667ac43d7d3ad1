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
        assert (c, "eager") in comps and (c, "engine") in comps
    e2e = [r for r in data["rows"] if r["component"] == "end to end" and r["backend"] == "engine"][0]
    assert e2e["speedup"] > 0 and e2e["avg_mel_frames"] == 8 and e2e["batch"] == 2
    assert data["verify"][0]["mel_ok"] and data["verify"][0]["audio_ok"]
    assert (tmp_path / "r.csv").read_text().startswith("component,backend,batch")
    assert "Avg latency (ms)" in capsys.readouterr().out


def test_bench_rejects_fp16_on_cpu(capsys):
    assert bench.main(["--size", "tiny", "--device", "cpu", "--precision", "fp16"]) == 1
    assert "fp16" in capsys.readouterr().err


def test_bench_batch_flag_parses():
    args = bench.build_parser().parse_args(["--batch", "8"])
    assert args.batch == 8 and args.input_length == 128
    with pytest.raises(SystemExit):
        bench.build_parser().parse_args(["--batch", "0"])


def test_bench_with_a_hifigan_vocoder(tmp_path):
    """A HiFi-GAN checkpoint runs as the vocoder stage on both sides (it has no engine yet), and the
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
    assert {r["component"] for r in data["rows"]} >= {"decoder", "waveglow", "end to end"}
