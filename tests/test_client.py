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


# ------------------------------------------------------------------ retries and the asyncio client

class FlakyServicer:
    """Answers the first call of each method UNAVAILABLE (a server refusing for a moment), then serves."""

    def __init__(self) -> None:
        import collections
        import threading

        from tts.server.proto_gen import tts_pb2, tts_pb2_grpc

        self.pb = tts_pb2
        self.calls = collections.Counter()
        self.lock = threading.Lock()
        servicer = self

        class Servicer(tts_pb2_grpc.TextToSpeechServicer):
            def Synthesize(self, request, context):
                servicer.gate("Synthesize", context)
                return tts_pb2.SynthesizeResponse(audio=b"RIFF" + request.text.encode(), voice="flaky")

            def StreamingSynthesize(self, request, context):
                servicer.gate("StreamingSynthesize", context)
                for i, word in enumerate(request.text.split()):
                    yield tts_pb2.AudioChunk(audio=word.encode(), offset_samples=i)

            def ListVoices(self, request, context):
                servicer.gate("ListVoices", context)
                return tts_pb2.ListVoicesResponse(voices=[tts_pb2.Voice(name="flaky")])

        self.servicer = Servicer()

    def gate(self, method: str, context) -> None:
        with self.lock:
            self.calls[method] += 1
            first = self.calls[method] == 1
        if first:
            context.abort(grpc.StatusCode.UNAVAILABLE, "not ready yet, try again")


@pytest.fixture()
def flaky():
    import concurrent.futures as cf

    from tts.server.proto_gen import tts_pb2_grpc

    f = FlakyServicer()
    server = grpc.server(cf.ThreadPoolExecutor(4))
    tts_pb2_grpc.add_TextToSpeechServicer_to_server(f.servicer, server)
    port = server.add_insecure_port(f"{HOST}:0")
    server.start()
    f.target = f"{HOST}:{port}"
    yield f
    server.stop(None)


def test_unavailable_is_retried_by_the_channel_retry_policy(flaky):
    """retry_s=0 (no retry loop of ours): gRPC's retry policy tries each call again, once."""
    with TTSClient(flaky.target, retry_s=0, timeout=20) as c:
        assert c.synthesize("hello").audio == b"RIFFhello"
        assert [ch.audio for ch in c.stream("one two three")] == [b"one", b"two", b"three"]
        assert [v.name for v in c.list_voices().voices] == ["flaky"]
    assert flaky.calls == {"Synthesize": 2, "StreamingSynthesize": 2, "ListVoices": 2}


def test_retry_policy_is_in_the_channel_options():
    from tts.client import MAX_ATTEMPTS, channel_options

    opts = dict(channel_options())
    assert opts["grpc.enable_retries"] == 1
    policy = json.loads(opts["grpc.service_config"])["methodConfig"][0]
    assert policy["name"] == [{"service": "tts.v1.TextToSpeech"}]
    assert policy["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert policy["retryPolicy"]["maxAttempts"] == MAX_ATTEMPTS == 5


def test_async_client_retries_unavailable_too(flaky):
    import asyncio

    from tts.client import AsyncTTSClient

    async def main():
        async with AsyncTTSClient(flaky.target, timeout=20) as c:
            audio = (await c.synthesize("hi")).audio
            chunks = [ch.audio async for ch in c.stream("a b")]
            names = [v.name for v in (await c.list_voices()).voices]
        return audio, chunks, names

    assert asyncio.run(main()) == (b"RIFFhi", [b"a", b"b"], ["flaky"])
    assert flaky.calls == {"Synthesize": 2, "StreamingSynthesize": 2, "ListVoices": 2}


def test_async_client_against_the_server(target, fake):
    """The asyncio twin gives what TTSClient gives: the same audio, chunks, voices and errors."""
    import asyncio

    from tts.client import AsyncTTSClient

    async def main():
        async with AsyncTTSClient(target, timeout=30) as c:
            unary = await c.synthesize("Async client test", encoding="LINEAR_PCM16")
            chunks = [ch async for ch in c.stream("Async client test")]
            voices = await c.list_voices()
            health = await c.health()
            with pytest.raises(grpc.RpcError) as info:
                await c.synthesize("   ")
            many = await asyncio.gather(*(c.synthesize(f"call {i}", encoding="LINEAR_PCM16") for i in range(8)))
            early = c.stream("An early stop " * 20)
            first = await early.__anext__()
            await early.aclose()
        return unary, chunks, voices, health, info.value.code(), many, first

    unary, chunks, voices, health, code, many, first = asyncio.run(main())
    expected = (fake.audio_for("Async client test") * 32767).astype(np.int16)
    got = np.frombuffer(unary.audio, np.int16)
    assert len(got) == len(expected) and np.abs(got.astype(int) - expected).max() <= 1
    assert b"".join(ch.audio for ch in chunks) == unary.audio and chunks[-1].last
    assert [v.name for v in voices.voices] == ["fake"] and health == "SERVING"
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [len(r.audio) for r in many] == [2 * len(fake.audio_for(f"call {i}")) for i in range(8)]
    assert len(first.audio) > 0
