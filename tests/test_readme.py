"""The README's Set-up and Quick start command blocks run as written, so the README cannot drift.

Every ``sh`` block of those sections carries a marker on the line above it:
``<!-- readme-test: run -->`` (run here) or ``<!-- readme-test: skip (why) -->``
(installs packages, runs the whole suite, or needs NVIDIA's checkpoints). A run block
runs in bash in a temporary folder that looks like the repository root (``phrases/`` and
``tests/`` linked in), so its outputs stay out of the tree. The server block gets a free
port in place of 50051 and ``--metrics-port 0`` (another server may hold 50051 or 8002);
nothing else is changed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import wave
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTIONS = ("## Set-up", "## Quick start")
MARKED = re.compile(r"<!-- readme-test: (run|skip \([^)]+\)) -->\n```sh\n(.*?)```", re.S)


def section(text: str, title: str) -> str:
    start = text.index(title + "\n")
    nxt = text.find("\n## ", start + len(title))
    return text[start:nxt if nxt >= 0 else len(text)]


def blocks() -> list[tuple[str, str, str]]:
    """(section, "run" or "skip (...)", code) of every sh block in the checked sections."""
    text = README.read_text(encoding="utf-8")
    out = []
    for title in SECTIONS:
        body = section(text, title)
        found = MARKED.findall(body)
        assert len(found) == body.count("```sh\n"), f"{title}: every sh block needs a readme-test marker"
        out += [(title, kind, code) for kind, code in found]
    return out


RUN = [code for _, kind, code in blocks() if kind == "run"]
SERVER = [code for code in RUN if "tts-server" in code]
LOCAL = [code for code in RUN if "tts-server" not in code]


def test_every_block_is_marked_and_the_set_up_matches_ci():
    all_blocks = blocks()
    assert SERVER and LOCAL
    setup = [code for title, _, code in all_blocks if title == "## Set-up"][0]
    commands = [line.split("#")[0].strip() for line in setup.splitlines() if line.strip()]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert commands == ci == ["bash install.sh", "python3 -m pytest -q -n 2 --dist loadfile"]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for name in ("phrases", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def run_block(code: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Runs ``code`` with bash -e in its own process group; whatever it leaves running is killed."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(["bash", "-e", "-c", code], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def outputs(code: str) -> list[str]:
    return re.findall(r"--out (\S+)", code)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("code", LOCAL, ids=[f"block{i}" for i in range(len(LOCAL))])
def test_quick_start_block_runs_as_written(code, workdir):
    assert shutil.which("tts-synth"), "the console scripts are not installed (bash install.sh)"
    r = run_block(code, workdir, 240)
    assert r.returncode == 0, r.stdout
    assert "Traceback" not in r.stdout, r.stdout
    for out in outputs(code):
        path = workdir / out
        assert path.exists(), f"{out} was not written:\n{r.stdout}"
        if path.is_dir():
            assert (path / "1.wav").is_file() and (path / "report.json").is_file()
        else:
            with wave.open(str(path)) as w:
                assert w.getnframes() > 0
    if "--list-voices" in code:
        assert "heart\t" in r.stdout and "(default)" in r.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)
def test_server_block_runs_as_written_and_drains_on_kill(workdir):
    (code,) = SERVER
    assert "--host 127.0.0.1" in code and "kill %1" in code       # loopback only; SIGTERM to the job
    port = free_port()
    code = code.replace("--port 50051", f"--port {port} --metrics-port 0").replace(":50051", f":{port}")
    r = run_block(code, workdir, 240)
    assert r.returncode == 0, r.stdout           # bash -e: the client and `wait %1` (the server's status) are 0
    assert "Traceback" not in r.stdout, r.stdout
    assert f"serving on 127.0.0.1:{port}" in r.stdout
    assert "SIGTERM received" in r.stdout and "tts-server: stopped" in r.stdout, r.stdout
    with wave.open(str(workdir / "hello.wav")) as w:
        assert w.getnframes() > 0 and w.getframerate() == 22050
