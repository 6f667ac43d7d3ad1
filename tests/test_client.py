"""tts.client, tts-client and the server benchmark driver against a loopback server (fake voice)."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys

import grpc
import numpy as np
import pytest
import soundfile as sf

from tts.client import TTSClient, build_request
from tts.server.app import ServerConfig, TTSServer
from tts.server.loadgen import parse_range
from tts.server.testing import FakeSynthesizer, ServerThread

pytestmark = pytest.mark.timeout(120)
HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def fake():
    return FakeSynthesizer()


@pytest.fixture(scope="module")
def target(fake):
    st = ServerThread(TTSServer({"fake": [fake]}, ServerConfig(host=HOST, port=0, metrics_port=None)))
    st.start()
    yield f"{HOST}:{st.server.port}"
    st.stop()


def test_build_request_sets_only_given_options():
    req = build_request("hi", encoding="FLAC", options={"sigma": 0.5, "seed": 3, "speaking_rate": None})
    assert req.encoding == 4 and req.options.HasField("sigma") and req.options.seed == 3
    assert not req.options.HasField("speaking_rate")
    with pytest.raises(ValueError, match="unknown option"):
        build_request("hi", options={"speed": 1.0})


def test_client_roundtrip(target, fake):
    with TTSClient(target) as c:
        audio, rate = sf.read(io.BytesIO(c.synthesize("Client test").audio), dtype="float32")
        assert rate == 22050 and np.abs(audio - fake.audio_for("Client test")).max() < 1e-4
        assert [v.name for v in c.list_voices().voices] == ["fake"]
        assert c.health() == "SERVING"
        with pytest.raises(grpc.RpcError) as info:
            c.synthesize("")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=90)


def test_tts_client_text_and_phrase_file(target, fake, tmp_path):
    out = tmp_path / "one.wav"
    r = run_cli("tts.cli.client", "--server", target, "Hello file", "--out", str(out))
    assert r.returncode == 0, r.stderr
    audio, rate = sf.read(out, dtype="float32")
    assert len(audio) == len(fake.audio_for("Hello file"))
    phrases = tmp_path / "phrases.txt"
    phrases.write_text("First line\n\nSecond line here\n")
    r = run_cli("tts.cli.client", "--server", target, "--phrases", str(phrases), "--out", str(tmp_path / "o"),
                "--encoding", "FLAC")
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert files == ["1.flac", "3.flac"]          # numbered by line, as tts-synth numbers them
    audio, _ = sf.read(tmp_path / "o" / "3.flac", dtype="float32")
    assert len(audio) == len(fake.audio_for("Second line here"))
    r = run_cli("tts.cli.client", "--server", target, "--stream", "--encoding", "LINEAR_PCM16", "Streamed",
                "--out", str(tmp_path / "s.pcm"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "s.pcm").stat().st_size == 2 * len(fake.audio_for("Streamed"))


def test_tts_client_reports_errors_without_traceback(target, tmp_path):
    r = run_cli("tts.cli.client", "--server", target, "   ", "--out", str(tmp_path / "x.wav"))
    assert r.returncode == 1
    assert "INVALID_ARGUMENT" in r.stderr and "text" in r.stderr and "Traceback" not in r.stderr


def test_parse_range():
    assert parse_range("1:64:8") == [1, 9, 17, 25, 33, 41, 49, 57, 64]
    assert parse_range("1:4") == [1, 2, 3, 4]
    assert parse_range("1,4,16") == [1, 4, 16]
    with pytest.raises(ValueError):
        parse_range("0:4:2")


def test_bench_server_driver(target, tmp_path, capsys):
    from tts.cli import bench_server

    parser = argparse.ArgumentParser()
    bench_server.add_arguments(parser)
    out = tmp_path / "bench.json"
    args = parser.parse_args(["--server", target, "--concurrency", "1,4", "--requests", "12", "--streaming",
                              "--warmup-requests", "2", "--json", str(out)])
    assert bench_server.run(args) == 0
    table = capsys.readouterr().out
    assert "ttfa_p50_ms" in table and "throughput_rps" in table
    rows = json.loads(out.read_text())
    assert [r["concurrency"] for r in rows] == [1, 4]
    for r in rows:
        assert r["requests"] == 12 and r["errors"] == 0
        assert r["throughput_rps"] > 0 and r["p50_ms"] > 0 and r["ttfa_p50_ms"] > 0
        assert r["p50_ms"] <= r["p99_ms"]


def test_bench_server_runs_standalone(target):
    r = run_cli("tts.cli.bench_server", "--server", target, "--concurrency", "2", "--requests", "4")
    assert r.returncode == 0, r.stderr
    assert "concurrency" in r.stdout.splitlines()[1]


def test_bench_server_options_reach_every_call(target, fake, tmp_path, capsys):
    """``--option NAME=VALUE`` sets a request option of every call; a bad option is a usage error."""
    from tts.cli import bench_server

    parser = argparse.ArgumentParser()
    bench_server.add_arguments(parser)
    out = tmp_path / "bench.json"
    args = parser.parse_args(["--server", target, "--concurrency", "2", "--requests", "4", "--warmup-requests", "0",
                              "--option", "max_decoder_steps=7", "--option", "sigma=0.5", "--json", str(out)])
    assert args.option == [("max_decoder_steps", 7), ("sigma", 0.5)]
    n0 = len(fake.options_seen)
    assert bench_server.run(args) == 0
    assert "options max_decoder_steps=7, sigma=0.5" in capsys.readouterr().out
    assert json.loads(out.read_text())[0]["errors"] == 0
    seen = fake.options_seen[n0:]
    assert seen and all(o.max_decoder_steps == 7 and o.sigma == 0.5 for o in seen)
    r = run_cli("tts.cli.bench_server", "--server", target, "--option", "loudness=3")
    assert r.returncode == 2 and "unknown option 'loudness'" in r.stderr and "Traceback" not in r.stderr
