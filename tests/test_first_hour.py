"""What a new user meets first: ordinary mistakes end in one line and an exit status, never a
traceback; --out, --stream, --help, --threads and file modes behave as documented.

Servers run on loopback only: the real ``tts-server`` where its startup checks are what is
tested (they fail before any model loads), else a ``TTSServer`` with the fake voice in this process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tts.server.app import BindError, ServerConfig, TTSServer
from tts.server.testing import FakeSynthesizer, ServerThread

pytestmark = pytest.mark.timeout(120)
HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]


def command(name: str) -> list[str]:
    exe = shutil.which(name)
    module = {"tts-synth": "synth", "tts-server": "server", "tts-client": "client", "tts-bench": "bench"}[name]
    return [exe] if exe else [sys.executable, "-m", f"tts.cli.{module}"]


def run(name: str, *args: str, cwd: Path | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([*command(name), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def assert_one_line_error(r: subprocess.CompletedProcess, prog: str, *needles: str, code: int = 1) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1 and errors[0] == r.stderr.strip().splitlines()[-1], r.stderr
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


def listening_socket() -> socket.socket:
    s = socket.socket()
    s.bind((HOST, 0))
    s.listen()
    return s


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fake():
    return FakeSynthesizer()


@pytest.fixture(scope="module")
def target(fake):
    st = ServerThread(TTSServer({"fake": [fake]}, ServerConfig(host=HOST, port=0, metrics_port=None)))
    st.start()
    yield f"{HOST}:{st.server.port}"
    st.stop()


# ----------------------------------------------------------------------------- ports in use

def test_grpc_port_in_use_is_one_line_before_any_model_loads():
    with listening_socket() as s:
        port = s.getsockname()[1]
        t0 = time.monotonic()
        r = run("tts-server", "--host", HOST, "--port", str(port), "--metrics-port", "-1")
    line = assert_one_line_error(r, "tts-server", f"gRPC port {port}", "in use", "--port")
    assert "--port 0" in line
    assert "loaded" not in r.stderr and time.monotonic() - t0 < 30     # failed before loading the voice


def test_metrics_port_in_use_is_one_line_naming_the_flag():
    with listening_socket() as s:
        port = s.getsockname()[1]
        r = run("tts-server", "--host", HOST, "--port", "0", "--metrics-port", str(port))
    assert_one_line_error(r, "tts-server", f"metrics port {port}", "in use", "--metrics-port")
    assert "Event loop is closed" not in r.stderr and "loaded" not in r.stderr


@pytest.mark.parametrize("which", ["port", "metrics_port"])
def test_start_refuses_a_taken_port_and_leaves_nothing_running(fake, which):
    with listening_socket() as s:
        ports = {"port": 0, "metrics_port": 0, which: s.getsockname()[1]}
        server = TTSServer({"fake": [fake]}, ServerConfig(host=HOST, metrics_host=HOST, warmup=False, **ports))

        async def start():
            with pytest.raises(BindError) as info:
                await server.start()
            return info.value
        err = asyncio.run(start())
    assert err.field == which and "in use" in str(err)
    assert server._server is None and server._metrics_http is None       # nothing left running


# ----------------------------------------------------------------------------- unreachable servers

def test_client_unreachable_server_is_one_line_and_writes_nothing(tmp_path):
    port = free_port()
    r = run("tts-client", "--server", f"{HOST}:{port}", "Hello.", "--wait", "0", "--out", str(tmp_path / "new" / "x.wav"))
    assert_one_line_error(r, "tts-client", f"cannot reach a tts-server at {HOST}:{port}", "refused")
    assert not (tmp_path / "new").exists()


def test_client_retries_for_wait_seconds_then_gives_up(tmp_path):
    port = free_port()
    t0 = time.monotonic()
    r = run("tts-client", "--server", f"{HOST}:{port}", "Hello.", "--wait", "1.5", "--out", str(tmp_path / "x.wav"))
    assert time.monotonic() - t0 >= 1.0
    assert "waiting for a tts-server" in r.stderr
    assert_one_line_error(r, "tts-client", "cannot reach", "retried for 1.5 s")


def test_client_waits_for_a_server_that_starts_late(tmp_path, fake):
    port = free_port()
    proc = subprocess.Popen([*command("tts-client"), "--server", f"{HOST}:{port}", "Late start.", "--wait", "60",
                             "--out", str(tmp_path / "late.wav")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        first = proc.stderr.readline()   # the client is up and retrying before the server binds
        assert "waiting for a tts-server" in first, first
        with ServerThread(TTSServer({"fake": [fake]}, ServerConfig(host=HOST, port=port, metrics_port=None))):
            out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, first + err
    audio, _ = sf.read(tmp_path / "late.wav", dtype="float32")
    assert len(audio) == len(fake.audio_for("Late start."))


def test_bench_server_unreachable_is_an_error_not_a_table():
    port = free_port()
    r = run("tts-bench", "--server", f"{HOST}:{port}", "--wait", "0", "--concurrency", "1", "--requests", "2")
    assert_one_line_error(r, "tts-bench", f"cannot reach a tts-server at {HOST}:{port}")
    assert "concurrency" not in r.stdout and "throughput" not in r.stdout


# ----------------------------------------------------------------------------- unreadable and binary inputs

@pytest.fixture
def bad_inputs(tmp_path) -> dict[str, Path]:
    binary = tmp_path / "phrases.bin"
    binary.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(range(256)))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Hello.\nCaf\xe9 au lait.\n".encode("latin-1"))
    folder = tmp_path / "a_folder"
    folder.mkdir()
    return {"binary": binary, "latin1": latin1, "folder": folder, "missing": tmp_path / "missing.txt"}


EXPECT = {"binary": ["phrases.bin", "binary file"], "latin1": ["latin1.txt", "line 2", "not valid UTF-8"],
          "folder": ["a_folder", "is a directory"], "missing": ["missing.txt", "not found"]}


@pytest.mark.parametrize("kind", sorted(EXPECT))
def test_tts_synth_bad_phrase_file(tmp_path, bad_inputs, kind):
    r = run("tts-synth", str(bad_inputs[kind]), "--out", str(tmp_path / "o"))
    assert_one_line_error(r, "tts-synth", *EXPECT[kind])
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["binary", "latin1", "folder"])
def test_tts_client_bad_phrase_file(tmp_path, bad_inputs, target, kind):
    r = run("tts-client", "--server", target, "--phrases", str(bad_inputs[kind]), "--out", str(tmp_path / "o"))
    assert_one_line_error(r, "tts-client", *EXPECT[kind])
    assert not (tmp_path / "o").exists()


def test_tts_bench_server_bad_phrase_file(bad_inputs, target):
    r = run("tts-bench", "--server", target, "--phrases", str(bad_inputs["binary"]), "--concurrency", "1")
    assert_one_line_error(r, "tts-bench", *EXPECT["binary"])


def test_tts_server_binary_token_file(bad_inputs):
    r = run("tts-server", "--host", HOST, "--port", "0", "--metrics-port", "-1",
            "--auth-token-file", str(bad_inputs["binary"]))
    assert_one_line_error(r, "tts-server", *EXPECT["binary"])


# ----------------------------------------------------------------------------- --out and --stream

def test_client_stream_works_with_its_defaults(tmp_path, target, fake):
    r = run("tts-client", "--server", target, "--stream", "Streamed hello.", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with wave.open(str(tmp_path / "out.wav")) as w:          # the default --out for one text
        assert w.getframerate() == 22050 and w.getsampwidth() == 2
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    unary = run("tts-client", "--server", target, "Streamed hello.", "--out", str(tmp_path / "unary.wav"))
    assert unary.returncode == 0, unary.stderr
    ref, _ = sf.read(tmp_path / "unary.wav", dtype="int16")
    assert np.array_equal(pcm, ref)


def test_client_stream_refuses_an_encoding_it_cannot_stream(tmp_path, target):
    r = run("tts-client", "--server", target, "--stream", "Hi.", "--out", str(tmp_path / "x.flac"))
    assert_one_line_error(r, "tts-client", "--stream", "FLAC")


def test_client_out_is_a_file_for_one_text_and_a_folder_otherwise(tmp_path, target, fake):
    r = run("tts-client", "--server", target, "One.", "--out", str(tmp_path / "one.flac"))
    assert r.returncode == 0, r.stderr
    audio, _ = sf.read(tmp_path / "one.flac", dtype="float32")     # the suffix chose FLAC
    assert len(audio) == len(fake.audio_for("One."))
    phrases = tmp_path / "p.txt"
    phrases.write_text("First.\n\nThird.\n")
    r = run("tts-client", "--server", target, "--phrases", str(phrases), "--out", str(tmp_path / "dir"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == ["1.wav", "3.wav"]
    r = run("tts-client", "--server", target, "--phrases", str(phrases), "--out", str(tmp_path / "many.wav"))
    assert_one_line_error(r, "tts-client", "--out", "a phrase file makes one file per line")


def test_synth_text_out_file_folder_and_report(tmp_path, capsys):
    from tts.cli.synth import main
    assert main(["--text", "Hello.", "--out", str(tmp_path / "hello.wav"), "--quiet"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["hello.wav"]            # that file alone, no report
    with wave.open(str(tmp_path / "hello.wav")) as w:
        assert w.getnframes() > 0
    assert main(["--text", "Hello.", "--out", str(tmp_path / "dir"), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == ["1.wav", "report.json"]
    report = json.loads((tmp_path / "dir" / "report.json").read_text())
    assert report["text"] == "Hello." and report["phrase_file"] is None
    # RTF only end to end: a stage alone makes no audio; stages give their share of the time
    assert "rtf" in report["stages"]["end_to_end"] and "samples_per_second" in report["stages"]["end_to_end"]
    for stage in ("text", "acoustic", "vocoder", "denoiser"):
        assert "rtf" not in report["stages"][stage] and 0 <= report["stages"][stage]["share_of_total"] <= 1
    phrases = tmp_path / "p.txt"
    phrases.write_text("One.\nTwo.\n")
    with pytest.raises(SystemExit):
        main([])                                                        # neither a file nor --text: usage
    assert main([str(phrases), "--out", str(tmp_path / "x.wav")]) == 1
    assert main(["--text", "Hi.", "--out", str(tmp_path / "x.ogg")]) == 1
    assert main(["--text", "Hi.", "--out", str(tmp_path / "x.wav"), "--format", "flac"]) == 1
    err = capsys.readouterr().err
    assert "phrase file makes one file per line" in err and "writes .wav, .flac, .mp3 files" in err
    assert not (tmp_path / "x.wav").exists() and not (tmp_path / "x.ogg").exists()


def test_synth_failure_leaves_no_empty_output_folder(tmp_path):
    r = run("tts-synth", "--text", "Hello.", "--voice", "no-such-voice", "--out", str(tmp_path / "new" / "dir"))
    assert_one_line_error(r, "tts-synth", "unknown voice")
    assert not (tmp_path / "new").exists()


def test_synth_list_voices():
    from tts.voice import bundled_voices
    r = run("tts-synth", "--list-voices")
    assert r.returncode == 0, r.stderr
    names = [line.split("\t")[0] for line in r.stdout.splitlines()]
    assert names == bundled_voices() and "(default)" in r.stdout.splitlines()[0]


# ----------------------------------------------------------------------------- --help, --threads, umask

def parsers():
    from tts.cli import bench, build_engines, client, server, synth
    from tts.cli import bench_server
    from tts.cli.common import new_parser
    bs = new_parser("tts-bench --server", "x")
    bench_server.add_arguments(bs)
    return {"tts-synth": synth.build_parser(), "tts-server": server.build_parser(),
            "tts-client": client.build_parser(), "tts-bench": bench.build_parser(), "tts-bench --server": bs,
            "tts-build-engines": build_engines.build_parser()}


@pytest.mark.parametrize("name", sorted(parsers()))
def test_help_shows_every_default_once(name):
    import argparse
    parser = parsers()[name]
    fmt = parser._get_formatter()
    for action in parser._actions:
        if (not action.option_strings or action.help is argparse.SUPPRESS
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            continue
        text = fmt._expand_help(action)
        assert text.count("(default") <= 1, (name, action.option_strings, text)
        if action.default not in (None, False, [], "") and not isinstance(action, argparse._StoreConstAction):
            assert "default" in text.lower(), (name, action.option_strings, text)
    if name not in ("tts-client", "tts-bench --server"):      # the commands that run a model
        assert "--threads" in parser.format_help()


def test_threads_flag_makes_waiting_threads_sleep():
    code = ("import os, sys; from tts.cli.common import apply_threads; n = apply_threads(1); "
            "print(os.environ['OMP_WAIT_POLICY'], n, 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.stdout.split() == ["PASSIVE", "1", "True"], r.stderr


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, mask, mode):
    from tts.audio import write_atomic
    old = os.umask(mask)
    try:
        write_atomic(tmp_path / "f.wav", b"data")
    finally:
        os.umask(old)
    assert (tmp_path / "f.wav").stat().st_mode & 0o777 == mode


# ----------------------------------------------------------------------------- truthful output

def test_a_long_fastspeech_piece_is_split_without_a_cut_warning(caplog):
    from tts.options import SynthesisOptions
    from tts.synthesizer import Synthesizer
    from tts.voice import load_voice
    synth = Synthesizer(load_voice("heart"))
    text = ("the committee will meet on thursday afternoon to review the budget and discuss all of the new "
            "proposals that were sent in by the members over the long and very cold winter months and then "
            "vote on the final schedules for the coming year")
    with caplog.at_level(logging.WARNING):
        r = synth.synthesize(text, SynthesisOptions(speed=0.7))    # slow speech: more than max_seq_len frames
    limit = synth.voice.acoustic.config.max_seq_len
    assert r.pieces == 2 and r.mel.shape[-1] > limit               # split, and longer than one cut piece
    assert "cut" not in caplog.text, caplog.text


def test_sigterm_while_the_models_load_stops_cleanly(tmp_path):
    """``kill %1`` right after ``tts-server &``: the start-up ends with exit 0 and one line, never a
    traceback or exit 143, whether the signal lands while the voice loads or once it serves."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "tts.cli.server", "--voice", "heart", "--host", "127.0.0.1",
                             "--port", "0", "--metrics-port", "-1", "--no-warmup"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "tts-server: loading voices"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Traceback" not in out
    assert "stopped" in out
