"""The real ``tts-server`` process (SIGTERM drain) and two replicas behind nginx ``grpc_pass``."""

from __future__ import annotations

import concurrent.futures as cf
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from tts.client import TTSClient
from tts.server.app import ServerConfig, TTSServer
from tts.server.batcher import BatcherConfig
from tts.server.testing import FakeSynthesizer, ServerThread

HOST = "127.0.0.1"
FIXTURES = Path(__file__).parent / "fixtures" / "reference"


def server_command() -> list[str]:
    exe = shutil.which("tts-server")
    return [exe] if exe else [sys.executable, "-m", "tts.cli.server"]


def wait_for_line(proc: subprocess.Popen, pattern: str, timeout: float) -> re.Match:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m
    raise AssertionError(f"no line matching {pattern!r}; output:\n{''.join(seen)}")


@pytest.mark.timeout(240)
@pytest.mark.slow
def test_sigterm_drains_in_flight_calls_then_exits():
    cmd = server_command() + [
        "--tacotron2", str(FIXTURES / "tacotron2/checkpoint_Tacotron2_current_1gpu.pt"),
        "--waveglow", str(FIXTURES / "waveglow/checkpoint_WaveGlow_ngc_style_ddp.pt"),
        "--host", HOST, "--port", "0", "--metrics-port", "-1", "--max-batch-size", "1",
        "--no-continuous-batching", "--grace-seconds", "60"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        port = int(wait_for_line(proc, r"serving on .*:(\d+)", 180).group(1))
        texts = [f"Call number {i}, which must not be lost when the server stops." for i in range(8)]
        with TTSClient(f"{HOST}:{port}", timeout=120) as c:
            assert c.health() == "SERVING"                   # reported only after load + warm-up
            with cf.ThreadPoolExecutor(8) as pool:
                futs = [pool.submit(c.synthesize, t, options={"max_decoder_steps": 80}) for t in texts]
                time.sleep(0.5)                              # all sent; batch size 1: most still queued
                proc.send_signal(signal.SIGTERM)
                results = [f.result(120) for f in futs]
            assert all(r.audio[:4] == b"RIFF" and r.duration_seconds > 0 for r in results)
            with pytest.raises(grpc.RpcError) as info:       # new calls are refused once draining/stopped
                c.synthesize("too late", timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert proc.wait(60) == 0
        out = proc.stdout.read()
        assert "SIGTERM received" in out and "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream tts_replicas {{
        server 127.0.0.1:{p1};
        server 127.0.0.1:{p2};
    }}
    server {{
        listen 127.0.0.1:{port} http2;
        location / {{
            grpc_pass grpc://tts_replicas;
            grpc_next_upstream error timeout;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_two_replicas_behind_nginx_grpc_pass(tmp_path):
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        pytest.skip("nginx is not installed (CI: apt-get install -y nginx)")
    fakes = [FakeSynthesizer(), FakeSynthesizer()]
    replicas = [ServerThread(TTSServer({"fake": [f]}, ServerConfig(
        host=HOST, port=0, metrics_port=None, batcher=BatcherConfig(max_batch_size=1, max_queue_delay_s=0))))
        for f in fakes]
    for r in replicas:
        r.start()
    for f in fakes:
        f.batches.clear()
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=tmp_path, p1=replicas[0].server.port, p2=replicas[1].server.port,
                                      port=port))
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stopped = []
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(f"nginx did not start: {proc.stdout.read() if proc.poll() is not None else ''}"
                                         f"{(tmp_path / 'error.log').read_text() if (tmp_path / 'error.log').exists() else ''}")
                time.sleep(0.05)
        with TTSClient(f"{HOST}:{port}", timeout=30) as c:
            assert c.health() == "SERVING"
            assert c.health("tts.v1.TextToSpeech") == "SERVING"
            for i in range(20):
                r = c.synthesize(f"balanced call {i}")
                assert r.audio[:4] == b"RIFF"
            assert sum(fakes[0].batches) + sum(fakes[1].batches) == 20
            assert fakes[0].batches and fakes[1].batches            # both replicas served
            chunks = list(c.stream("streamed through nginx"))
            assert chunks[-1].last
            # One replica goes away: the balancer keeps serving from the other.
            replicas[0].stop()
            stopped.append(0)
            n1 = sum(fakes[1].batches)
            for i in range(6):
                assert c.synthesize(f"after failover {i}").audio
            assert sum(fakes[1].batches) == n1 + 6
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        for i, r in enumerate(replicas):
            if i not in stopped:
                r.stop()
