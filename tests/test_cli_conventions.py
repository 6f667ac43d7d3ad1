"""What every console script shares: ``--version``, one name per flag across commands (older names
kept as hidden aliases), ``-`` for standard input, and a clear word when an extra is missing."""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]

#: canonical flag -> older names still accepted (hidden, deprecated). The canonical one is the name
#: the README uses most.
CANONICAL = {"--speed": ("--speaking-rate",), "--max-chars": ("--max-text-chars",), "--stream": ("--streaming",),
             "--output": ("--json",), "--warmup": ("--warmup-requests",)}


def parsers() -> dict[str, argparse.ArgumentParser]:
    from tts.cli import bench, bench_server, build_engines, client, normalize, server, synth
    from tts.cli.common import new_parser
    bs = new_parser("tts-bench --server", "x")
    bench_server.add_arguments(bs)
    return {"tts-synth": synth.build_parser(), "tts-server": server.build_parser(),
            "tts-client": client.build_parser(), "tts-bench": bench.build_parser(), "tts-bench --server": bs,
            "tts-build-engines": build_engines.build_parser(), "tts-normalize": normalize.build_parser()}


def visible_flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {o: a for a in parser._actions if a.help is not argparse.SUPPRESS for o in a.option_strings}


def test_every_console_script_prints_its_name_and_version():
    assert set(SCRIPTS) == {"tts-synth", "tts-server", "tts-client", "tts-bench", "tts-normalize",
                            "tts-build-engines"}

    def run(name: str) -> subprocess.CompletedProcess:
        exe = shutil.which(name) or str(Path(sys.executable).parent / name)
        return subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)

    with cf.ThreadPoolExecutor(3) as pool:
        results = dict(zip(SCRIPTS, pool.map(run, SCRIPTS)))
    for name, r in results.items():
        assert r.returncode == 0, (name, r.stderr)
        assert r.stdout.strip() == f"{name} {version('tts-serve')}", name


def test_every_command_uses_the_canonical_flag_names():
    deprecated = {old: new for new, olds in CANONICAL.items() for old in olds}
    ps = parsers()
    for name, parser in ps.items():
        shown = visible_flags(parser)
        assert not set(shown) & set(deprecated), (name, set(shown) & set(deprecated))
    # one option (same destination in a command's namespace) has one visible name in every command
    names_of: dict[str, set[tuple[str, ...]]] = {}
    for parser in ps.values():
        for action in {a for a in visible_flags(parser).values()}:
            flags = tuple(f for f in action.option_strings if f.startswith("--"))
            if flags and flags[0] not in ("--help", "--version"):
                names_of.setdefault(action.dest, set()).add(flags)
    assert {d: n for d, n in names_of.items() if len(n) > 1} == {}
    # the option every command shares with tts-synth is spelled as tts-synth spells it
    assert "--speed" in visible_flags(ps["tts-client"]) and "--max-chars" in visible_flags(ps["tts-server"])
    assert {"--stream", "--output", "--warmup"} <= set(visible_flags(ps["tts-bench --server"]))


@pytest.mark.parametrize("command,old,new,value", [
    ("tts-client", "--speaking-rate", "--speed", "1.5"),
    ("tts-server", "--max-text-chars", "--max-chars", "123"),
    ("tts-bench --server", "--streaming", "--stream", None),
    ("tts-bench --server", "--json", "--output", "r.json"),
    ("tts-bench --server", "--warmup-requests", "--warmup", "7"),
])
def test_older_flag_names_still_work_as_hidden_aliases(command, old, new, value, capsys):
    parser = parsers()[command]
    base = ["--server", "h:1"] if command == "tts-bench --server" else []
    tail = [value] if value is not None else []
    a = parser.parse_args(base + [old, *tail])
    assert "deprecated" in capsys.readouterr().err
    b = parser.parse_args(base + [new, *tail])
    assert vars(a) == vars(b)
    assert vars(a) != vars(parser.parse_args(base))             # the flag did something
    assert old not in parser.format_help()


def test_synth_reads_phrases_from_standard_input(tmp_path):
    out = tmp_path / "audio"
    r = subprocess.run([sys.executable, "-m", "tts.cli.synth", "-", "--voice", "heart", "--out", str(out),
                        "--quiet", "--threads", "1"], input="Hello there.\n\nA second line.\n",
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("*.wav")) == ["1.wav", "3.wav"]
    assert all(sf.info(str(out / f)).duration > 0.3 for f in ("1.wav", "3.wav"))
    bad = subprocess.run([sys.executable, "-m", "tts.cli.synth", "-", "--voice", "heart", "--out", str(tmp_path / "x")],
                         input=b"fine\n\xff\xfe\n", capture_output=True, timeout=300)
    err = bad.stderr.decode()
    assert bad.returncode == 1 and "<stdin>: line 2 is not valid UTF-8" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("module,args", [("tts.cli.client", ["Hello.", "--out", "x.wav"]),
                                         ("tts.cli.server", ["--port", "0", "--metrics-port", "-1"])])
def test_a_missing_server_extra_is_named_not_a_traceback(module, args):
    code = (f"import sys; sys.modules['grpc'] = None; from {module} import main; "
            f"sys.exit(main({args!r}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "pip install 'tts-serve[server]'" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1
