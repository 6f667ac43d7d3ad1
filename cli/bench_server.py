"""``tts-bench --server HOST:PORT``: drive a running server at several concurrency levels.

Like Triton's perf_analyzer: closed-loop clients, one table row per
concurrency level with throughput, latency percentiles and (with
``--stream``) time to first audio. ``tts-bench`` dispatches here when
``--server`` is given; ``python -m tts.cli.bench_server`` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path

PROG = "tts-bench"
DEFAULT_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Hello world.",
    "Speech synthesis turns written text into spoken audio.",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune must be in want of a wife.",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The server-benchmark flags (``--server`` itself included)."""
    from tts.cli.common import add_deprecated_alias, add_wait_argument
    g = parser.add_argument_group("server benchmark")
    g.add_argument("--server", required=True, metavar="HOST:PORT", help="a running tts-server")
    g.add_argument("--concurrency", default="1:64:8", metavar="START:END:STEP|A,B,C",
                   help="concurrency levels (end included)")
    g.add_argument("--requests", type=int, default=200, help="measured calls per level (at most)")
    g.add_argument("--duration", type=float, default=60.0, help="seconds per level (at most)")
    g.add_argument("--warmup", dest="warmup_requests", type=int, default=4, metavar="N",
                   help="unmeasured calls per level")
    g.add_argument("--stream", dest="streaming", action="store_true",
                   help="use StreamingSynthesize (measures time to first audio)")
    g.add_argument("--phrases", metavar="FILE", help="texts to send, one a line (default: four built-in sentences)")
    g.add_argument("--voice", default="", help="voice name (default: the server's)")
    g.add_argument("--timeout", type=float, default=120.0, help="deadline per call, seconds")
    g.add_argument("--token", help="bearer token")
    g.add_argument("--root-cert", metavar="PEM", help="use TLS, trusting this CA")
    g.add_argument("--output", dest="json", metavar="FILE", help="also write the results as JSON to FILE")
    g.add_argument("--option", action="append", default=[], type=parse_option, metavar="NAME=VALUE",
                   help="a request option of every call (e.g. max_decoder_steps=580, sigma=0.6); repeatable")
    add_wait_argument(g)
    # The older names; tts-bench's own flags (--warmup, --output) and tts-client's --stream are canonical.
    for old, new in (("--warmup-requests", "--warmup"), ("--streaming", "--stream"), ("--json", "--output")):
        add_deprecated_alias(parser, old, new)


def parse_option(item: str) -> tuple[str, object]:
    """``"sigma=0.6"`` -> ``("sigma", 0.6)`` (int, then float, else the string); unknown names are refused."""
    from tts.client import _OPTION_NAMES

    name, sep, value = item.partition("=")
    name = name.strip()
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"needs NAME=VALUE, got {item!r}")
    if name not in _OPTION_NAMES:
        raise argparse.ArgumentTypeError(f"unknown option {name!r}; known: {', '.join(_OPTION_NAMES)}")
    for conv in (int, float):
        try:
            return name, conv(value)
        except ValueError:
            continue
    return name, value.strip()


def run(args: argparse.Namespace) -> int:
    """Runs the benchmark described by ``args``; prints the table; returns the exit code (1 if any call failed).

    The server is reached once first (retried for ``--wait`` seconds): one that cannot be reached
    is an error (ServerUnreachableError), not a table of failed calls.
    """
    import grpc

    from tts.cli.common import read_phrases
    from tts.client import ServerUnreachableError, TTSClient
    from tts.errors import InvalidInputError
    from tts.server.loadgen import LoadConfig, format_table, parse_range, run_levels

    texts = DEFAULT_TEXTS
    if args.phrases:
        texts = tuple(line for _, line in read_phrases(args.phrases, flag="--phrases"))
    try:
        levels = parse_range(args.concurrency)
    except ValueError as exc:
        raise InvalidInputError(f"--concurrency {args.concurrency}: {exc}", field="concurrency") from None
    root_cert = Path(args.root_cert).read_bytes() if args.root_cert else None
    cfg = LoadConfig(target=args.server, texts=texts, streaming=args.streaming, voice=args.voice,
                     requests=args.requests, duration_s=args.duration, warmup=args.warmup_requests,
                     timeout_s=args.timeout, token=args.token, root_cert=root_cert)
    options = tuple(args.option)
    cfg = dataclasses.replace(cfg, options=options)
    with TTSClient(args.server, token=args.token, root_cert=root_cert, timeout=min(args.timeout, 30.0),
                   retry_s=args.wait) as client:
        try:
            client.list_voices()
        except ServerUnreachableError:
            raise                               # one line from run_main, as an OS error
        except grpc.RpcError as exc:
            print(f"{PROG}: error: {args.server}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    results = asyncio.run(run_levels(cfg, levels))
    opts = ", ".join(f"{k}={v}" for k, v in options)
    print(f"server {args.server}, {'streaming' if args.streaming else 'unary'}, {len(texts)} texts"
          + (f", options {opts}" if opts else ""))
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps([r.row() | {"errors_by_code": r.errors} for r in results], indent=2))
    return 1 if any(r.errors for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    from tts.cli.common import new_parser, run_main

    parser = new_parser(PROG, __doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_main(PROG, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
