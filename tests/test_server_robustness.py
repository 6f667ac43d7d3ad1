"""The server's edge under abuse, on loopback with real gRPC clients, sockets and processes: clients
that vanish mid-stream, undecodable and oversized requests and replies, shutdown and signals, and
the security defaults of ``tts-server``."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

from tts.client import TTSClient
from tts.server.app import ServerConfig, TTSServer
from tts.server.batcher import BatcherConfig
from tts.server.proto_gen import tts_pb2
from tts.server.testing import FakeSynthesizer, ServerThread

pytestmark = pytest.mark.timeout(180)
HOST = "127.0.0.1"


def start(synth=None, **cfg) -> ServerThread:
    cfg.setdefault("batcher", BatcherConfig(max_batch_size=4, max_queue_delay_s=0.001))
    st = ServerThread(TTSServer({"fake": [synth or FakeSynthesizer()]},
                                ServerConfig(host=HOST, port=0, metrics_port=None, **cfg)))
    st.start()
    return st


def sample(st: ServerThread, name: str, **labels) -> float:
    return st.server.metrics.registry.get_sample_value(name, labels or None) or 0.0


def wait_until(predicate, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def no_tracebacks(caplog) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage()[:300] for r in bad]


# ------------------------------------------------------------------- vanishing streaming clients

STREAM_CLIENT = """
import sys, time
from tts.client import TTSClient
c = TTSClient(sys.argv[1])
chunks = c.stream("Hello there, a long stream. " * 2000)
next(chunks)
print("streaming", flush=True)
time.sleep(120)
"""


def test_cancelled_and_dead_streams_return_the_inflight_gauge_to_zero(caplog):
    """20 streams cancelled by their client after one chunk and 3 client processes killed (SIGKILL)
    mid-stream: each call is counted CANCELLED once, the in-flight gauge goes back to 0, and
    nothing is logged as an error."""
    caplog.set_level(logging.DEBUG)
    st = start(max_text_chars=100_000)
    target = f"{HOST}:{st.server.port}"
    try:
        with TTSClient(target) as c:
            for _ in range(20):
                chunks = c.stream("A stream the client leaves early. " * 100)   # ~1.8 MB: flow control holds it
                assert len(next(chunks).audio) > 0
                chunks.cancel()
        for _ in range(3):
            proc = subprocess.Popen([sys.executable, "-c", STREAM_CLIENT, target], stdout=subprocess.PIPE, text=True)
            try:
                assert proc.stdout.readline().strip() == "streaming"
            finally:
                proc.kill()
                proc.wait()
        assert wait_until(lambda: sample(st, "tts_requests_total", method="StreamingSynthesize",
                                         code="CANCELLED") == 23)
        assert wait_until(lambda: sample(st, "tts_inflight_requests") == 0)
        assert st.server._servicer.inflight == 0
        assert sample(st, "tts_requests_total", method="StreamingSynthesize", code="OK") == 0
        with TTSClient(target) as c:                     # and the server serves on
            assert list(c.stream("still here"))[-1].last
        assert sample(st, "tts_inflight_requests") == 0
        no_tracebacks(caplog)
    finally:
        st.stop()


# ------------------------------------------------------------------------- bad requests

def test_undecodable_request_is_invalid_argument_without_traceback(caplog):
    """A hand-built SynthesizeRequest whose text is not UTF-8 (field 1, bytes ff fe 41)."""
    caplog.set_level(logging.INFO)
    st = start()
    raw = b"\x0a\x03\xff\xfe\x41"
    try:
        with grpc.insecure_channel(f"{HOST}:{st.server.port}") as ch:
            ident = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
            for call in (ch.unary_unary("/tts.v1.TextToSpeech/Synthesize", **ident),
                         lambda r, timeout: list(ch.unary_stream("/tts.v1.TextToSpeech/StreamingSynthesize",
                                                                 **ident)(r, timeout=timeout))):
                with pytest.raises(grpc.RpcError) as info:
                    call(raw, timeout=10)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "UTF-8" in info.value.details() and "SynthesizeRequest" in info.value.details()
            # the same bytes with valid UTF-8 are a good request
            ok = ch.unary_unary("/tts.v1.TextToSpeech/Synthesize", **ident)(b"\x0a\x03\x68\x69\x21", timeout=10)
            assert tts_pb2.SynthesizeResponse.FromString(ok).audio[:4] == b"RIFF"
        for method in ("Synthesize", "StreamingSynthesize"):
            assert sample(st, "tts_requests_total", method=method, code="INVALID_ARGUMENT") == 1
        assert sample(st, "tts_inflight_requests") == 0
        no_tracebacks(caplog)
    finally:
        st.stop()


def test_long_user_strings_are_cut_in_errors_and_logs(caplog):
    """A 100k-character unknown voice (or option value) is INVALID_ARGUMENT, echoed as its first
    64 characters and "…", in the status message and in the log line."""
    caplog.set_level(logging.INFO)
    st = start()
    try:
        with TTSClient(f"{HOST}:{st.server.port}") as c:
            with pytest.raises(grpc.RpcError) as info:
                c.synthesize("hello", voice="v" * 100_000)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            details = info.value.details()
            assert f"'{'v' * 64}…'" in details and "v" * 65 not in details and len(details) < 200
            req = tts_pb2.SynthesizeRequest(text="hello")
            req.options.text_normalizer = "n" * 100_000
            with pytest.raises(grpc.RpcError) as info:
                c.stub.Synthesize(req, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "options.text_normalizer" in info.value.details() and len(info.value.details()) < 300
        assert caplog.records and max(len(r.getMessage()) for r in caplog.records) < 400
        no_tracebacks(caplog)
    finally:
        st.stop()


def test_reply_over_max_send_bytes_is_refused_and_counted(caplog):
    """A reply larger than --max-send-bytes is RESOURCE_EXHAUSTED with what to change, counted as
    such (never OK), without a traceback; a reply that fits still goes through."""
    caplog.set_level(logging.INFO)
    st = start(max_send_bytes=200_000, max_text_chars=5000)
    try:
        with TTSClient(f"{HOST}:{st.server.port}") as c:
            text = "hello world " * 100                  # 1200 chars -> 307200 samples, ~614 KB of WAV
            with pytest.raises(grpc.RpcError) as info:
                c.synthesize(text)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            details = info.value.details()
            assert "--max-send-bytes" in details and "200000" in details and "StreamingSynthesize" in details
            assert sum(len(ch.audio) for ch in c.stream(text)) == 2 * 256 * len(text)   # streams fit
            assert c.synthesize("short").audio[:4] == b"RIFF"
        assert sample(st, "tts_requests_total", method="Synthesize", code="RESOURCE_EXHAUSTED") == 1
        assert sample(st, "tts_requests_total", method="Synthesize", code="OK") == 1
        assert sample(st, "tts_inflight_requests") == 0
        served = 256 * (len(text) + len("short")) / 22050           # the stream and the short call, not the refused one
        assert sample(st, "tts_audio_seconds_total") == pytest.approx(served, rel=1e-6)
        no_tracebacks(caplog)
    finally:
        st.stop()


# ----------------------------------------------------------------------------- shutdown

class BlockingSynthesizer(FakeSynthesizer):
    """A batch that runs until the test releases it (a slow request, deterministically)."""

    def __init__(self) -> None:
        super().__init__()
        self.running = threading.Event()
        self.release = threading.Event()

    def synthesize_batch(self, texts, options=None):
        if any(t.startswith("slow") for t in texts):
            self.running.set()
            self.release.wait(120)
        return super().synthesize_batch(texts, options)


def test_stop_completes_within_the_grace_with_a_call_still_running():
    """A call whose batch outlives the grace: stop() returns after the grace (not when the batch
    ends), the call fails, and the abandoned work is reported."""
    synth = BlockingSynthesizer()
    st = ServerThread(TTSServer({"fake": [synth]}, ServerConfig(host=HOST, port=0, metrics_port=None, warmup=False)))
    st.start()
    grace = 3.0
    try:
        with TTSClient(f"{HOST}:{st.server.port}", timeout=60) as c:
            errors = []
            caller = threading.Thread(target=lambda: errors.append(_code(lambda: c.synthesize("slow call"))))
            caller.start()
            assert synth.running.wait(30)
            t0 = time.monotonic()
            st.call(st.server.stop(grace), timeout=60)
            took = time.monotonic() - t0
            caller.join(30)
        assert grace - 0.1 <= took < grace + 2.0, took
        assert st.server.abandoned
        assert errors and errors[0] in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    finally:
        synth.release.set()
        st.loop.call_soon_threadsafe(st.loop.stop)


def _code(fn):
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


# ---------------------------------------------------------------------------- tts-server

def tts_server(*args: str) -> list[str]:
    return [sys.executable, "-m", "tts.cli.server", *args]


@pytest.mark.parametrize("content", ["", "\n\n", "# tokens go here\n  # one a line\n\n"])
def test_token_file_without_a_token_refuses_to_start(tmp_path, content):
    path = tmp_path / "tokens.txt"
    path.write_text(content)
    r = subprocess.run(tts_server("--auth-token-file", str(path), "--port", "0", "--metrics-port", "-1",
                                  "--voice", "no-such-voice"),        # refused before any voice loads
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and str(path) in r.stderr and "no token" in r.stderr
    assert "serving on" not in r.stdout


def test_metrics_bind_loopback_when_tls_or_tokens_are_on(tmp_path, monkeypatch):
    from tts.cli.server import build_parser, server_config

    monkeypatch.delenv("TTS_AUTH_TOKEN", raising=False)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("# comment\ns3cret\n")
    parse = build_parser().parse_args
    assert server_config(parse([])).metrics_host == "0.0.0.0"                     # as before
    assert server_config(parse(["--host", "10.1.2.3"])).metrics_host == "10.1.2.3"
    secured = server_config(parse(["--auth-token-file", str(tokens)]))
    assert secured.metrics_host == "127.0.0.1" and secured.auth_tokens == ("s3cret",)
    monkeypatch.setenv("TTS_AUTH_TOKEN", "from-env")
    assert server_config(parse([])).metrics_host == "127.0.0.1"
    assert server_config(parse(["--metrics-host", "0.0.0.0"])).metrics_host == "0.0.0.0"   # explicit wins
    monkeypatch.delenv("TTS_AUTH_TOKEN")
    assert "127.0.0.1 when TLS or a bearer token" in " ".join(build_parser().format_help().split())
    # the real endpoint, bound as configured
    cfg = server_config(parse(["--auth-token-file", str(tokens), "--host", HOST, "--port", "0",
                               "--metrics-port", "0", "--no-warmup"]))
    st = ServerThread(TTSServer({"fake": [FakeSynthesizer()]}, cfg))
    st.start()
    try:
        assert st.server._metrics_http._server.server_address[0] == "127.0.0.1"
    finally:
        st.stop()


SERVER_ARGS = ("--voice", "heart", "--host", HOST, "--port", "0", "--metrics-port", "-1", "--no-warmup",
               "--grace-seconds", "1", "--threads", "1")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sigterm_right_after_serving_on_drains_and_exits_0():
    """SIGTERM sent the moment "serving on" is printed, 6 times: every time the server drains
    (its log says so) and exits 0, never killed mid-start. Two servers start at a time."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    results = []

    def one() -> None:
        proc = subprocess.Popen(tts_server(*SERVER_ARGS), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env)
        try:
            lines = []
            for line in proc.stdout:
                lines.append(line)
                if "serving on" in line:
                    proc.send_signal(signal.SIGTERM)
                    break
            rest = proc.communicate(timeout=60)[0]
            results.append((proc.returncode, "".join(lines) + rest))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    for _ in range(3):
        pair = [threading.Thread(target=one) for _ in range(2)]
        for t in pair:
            t.start()
        for t in pair:
            t.join(120)
    assert len(results) == 6
    for rc, out in results:
        assert rc == 0, out
        assert "SIGTERM received: draining" in out and "server stopped" in out, out
        assert "before serving" not in out and "Traceback" not in out, out


BLOCKING_SERVER = """
import sys, threading
from tts.cli import server as cli
from tts.server.app import TTSServer
from tts.server.testing import FakeSynthesizer

class Blocking(FakeSynthesizer):
    def synthesize_batch(self, texts, options=None):
        if any(t.startswith("slow") for t in texts):
            print("batch running", flush=True)
            threading.Event().wait(600)             # a batch that outlives any grace
        return super().synthesize_batch(texts, options)

cli.build_server = lambda args, config=None: TTSServer({"fake": [Blocking()]}, config)
sys.exit(cli.main(sys.argv[1:]))
"""


def test_tts_server_process_exits_within_the_grace_with_a_call_still_running():
    """The real tts-server main (a model-free voice whose batch never ends by itself): SIGTERM with
    --grace-seconds 3 ends the process in about 3 s, exit status 0, not when the batch would end."""
    grace = 3.0
    proc = subprocess.Popen([sys.executable, "-c", BLOCKING_SERVER, "--host", HOST, "--port", "0",
                             "--metrics-port", "-1", "--no-warmup", "--grace-seconds", str(grace)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        port = None
        for line in proc.stdout:
            if "serving on" in line:
                port = int(line.rsplit(":", 1)[1])
                break
        assert port
        errors = []
        c = TTSClient(f"{HOST}:{port}", timeout=60)
        caller = threading.Thread(target=lambda: errors.append(_code(lambda: c.synthesize("slow call"))))
        caller.start()
        for line in proc.stdout:
            if "batch running" in line:
                break
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
        took = time.monotonic() - t0
        caller.join(30)
        c.close()
        assert proc.returncode == 0, out
        assert grace - 0.1 <= took < grace + 2.0, (took, out)
        assert "work still running was abandoned" in out and "Traceback" not in out
        assert errors and errors[0] in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
