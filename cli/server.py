"""``tts-server``: serve voices over gRPC (unary + streaming synthesis, health, reflection, metrics).

Takes the same voice flags as ``tts-synth`` (``--tacotron2/--fastspeech/--waveglow``,
``--voice NAME|DIR``, ``--device``, ``--precision``). Loads and warms up every
voice on every device, then prints one line ``tts-server: serving on HOST:PORT``
and reports SERVING on the health service. SIGTERM drains calls in flight and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from tts.cli.common import (add_deprecated_alias, add_lexicon_argument, add_threads_argument, add_voice_arguments,
                            apply_threads, engine_cache_from_args, lexicon_from_args, new_parser, positive_int,
                            run_main, voice_from_args)
from tts.options import DEFAULT_MAX_TEXT_CHARS

PROG = "tts-server"
TOKEN_ENV = "TTS_AUTH_TOKEN"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers >= 0, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = new_parser(PROG, __doc__.split("\n\n")[0])
    add_voice_arguments(p)
    add_lexicon_argument(p)
    p.add_argument("--extra-voice", action="append", default=[], metavar="NAME|DIR",
                   help="serve another voice (a voice folder or bundled name); repeatable")
    _add_text_normalizer_argument(p)
    g = p.add_argument_group("network")
    g.add_argument("--host", default="[::]", help="address to bind ([::] = all, 127.0.0.1 = loopback)")
    g.add_argument("--port", type=int, default=50051, help="gRPC port (0 = any free port)")
    g.add_argument("--metrics-port", type=int, default=8002, help="Prometheus /metrics port (-1 = off)")
    g.add_argument("--http-port", type=int, default=None, metavar="PORT",
                   help="also serve the OpenAI-compatible HTTP API (POST /v1/audio/speech, /docs) on this port of "
                        "--host (0 = any free port; default: off)")
    g.add_argument("--metrics-host", default=None,
                   help="address the metrics endpoint binds (default: 127.0.0.1 when TLS or a bearer token is "
                        "on, as /metrics has neither; else the --host address, 0.0.0.0 when that is [::])")
    g.add_argument("--max-receive-bytes", type=positive_int, default=1 << 20, help="largest request message")
    g.add_argument("--max-send-bytes", type=positive_int, default=64 << 20, help="largest response message")
    g = p.add_argument_group("security")
    g.add_argument("--tls-cert", metavar="PEM", help="server certificate chain (enables TLS)")
    g.add_argument("--tls-key", metavar="PEM", help="server private key")
    g.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA (mTLS)")
    g.add_argument("--auth-token-file", metavar="FILE",
                   help=f"require 'authorization: Bearer <token>' (one token a line); or set ${TOKEN_ENV}")
    g = p.add_argument_group("batching and scale")
    g.add_argument("--devices", type=_int_list, metavar="0,1,...",
                   help="CUDA devices, one worker each (overrides --device)")
    g.add_argument("--max-batch-size", type=positive_int, default=8, help="most requests per batch")
    g.add_argument("--max-queue-delay-ms", type=float, default=5.0, help="longest wait to fill a batch")
    g.add_argument("--preferred-batch-sizes", type=_int_list, default=[], metavar="4,8",
                   help="batch sizes sent as soon as they are reached")
    g.add_argument("--max-queue-size", type=positive_int, default=256,
                   help="most waiting requests; more get RESOURCE_EXHAUSTED")
    g.add_argument("--max-chars", dest="max_text_chars", type=positive_int, default=DEFAULT_MAX_TEXT_CHARS,
                   metavar="N", help="longest accepted text, in characters")
    g.add_argument("--no-continuous-batching", action="store_true",
                   help="batch Tacotron2 requests whole instead of joining/leaving the decoder batch per step")
    g.add_argument("--stream-chunk-frames", type=positive_int, default=32, help="mel frames per streamed chunk")
    g.add_argument("--stream-first-chunk-frames", type=positive_int, default=8,
                   help="mel frames of the first streamed chunk")
    g.add_argument("--stream-overlap-frames", type=int, default=8, help="vocoder context frames on each side")
    g = p.add_argument_group("lifecycle")
    g.add_argument("--grace-seconds", type=float, default=30.0, help="time calls in flight get on SIGTERM")
    g.add_argument("--no-warmup", action="store_true", help="skip the warm-up run before SERVING")
    g.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="server log level")
    add_threads_argument(g)
    add_deprecated_alias(p, "--max-text-chars", "--max-chars")     # the older name (tts-synth's is canonical)
    return p


#: How to get past a port that cannot be bound, by ServerConfig field.
PORT_FLAGS = {"port": "--port; --port 0 picks a free port",
              "metrics_port": "--metrics-port; 0 picks a free port, -1 turns metrics off",
              "http_port": "--http-port; 0 picks a free port"}


def _add_text_normalizer_argument(parser: argparse.ArgumentParser) -> None:
    """``--text-normalizer``: every served voice's default (a request's ``options.text_normalizer`` overrides it)."""
    from tts.options import flag_name, option_fields
    field = next(f for f in option_fields() if f.name == "text_normalizer")
    parser.add_argument(flag_name(field.name), choices=field.metadata["choices"], default=None,
                        help=field.metadata["help"] + ". Sets it for every voice served (default: each voice's "
                             "own); a request's options.text_normalizer overrides it")


def _tokens(args) -> tuple[str, ...]:
    from tts.cli.common import read_phrases
    from tts.errors import InvalidInputError
    tokens = []
    if args.auth_token_file:
        # A token file without a token must not turn authentication off: refuse to start.
        none = InvalidInputError(f"--auth-token-file {args.auth_token_file}: no token in the file (it is empty or "
                                 "holds only comments and blank lines); authentication would be off",
                                 field="auth_token_file")
        try:
            lines = read_phrases(args.auth_token_file, flag="--auth-token-file")
        except InvalidInputError as exc:
            raise none if "no phrases" in str(exc) else exc from None
        tokens += [line for _, line in lines if not line.startswith("#")]
        if not tokens:
            raise none
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        tokens.append(env)
    return tuple(tokens)


def metrics_host(args, secured: bool = False) -> str:
    """The address /metrics binds: --metrics-host; else loopback when the gRPC port is secured (TLS or
    tokens: /metrics has neither), else the --host address (0.0.0.0 for the IPv6 wildcard)."""
    if args.metrics_host:
        return args.metrics_host
    if secured:
        return "127.0.0.1"
    return "0.0.0.0" if args.host in ("[::]", "::", "0.0.0.0", "") else args.host


def server_config(args):
    """The ``ServerConfig`` the flags describe (reads the TLS and token files; loads no model)."""
    from tts.errors import VoiceError
    from tts.server.app import ServerConfig, TLSConfig
    from tts.server.batcher import BatcherConfig

    if bool(args.tls_cert) != bool(args.tls_key):
        raise VoiceError("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise VoiceError("--tls-client-ca needs --tls-cert/--tls-key")
    if not 0 <= args.port <= 65535:
        raise VoiceError(f"--port must be in 0..65535, got {args.port}")
    if not -1 <= args.metrics_port <= 65535:
        raise VoiceError(f"--metrics-port must be in -1..65535, got {args.metrics_port}")
    if args.http_port is not None and not 0 <= args.http_port <= 65535:
        raise VoiceError(f"--http-port must be in 0..65535, got {args.http_port}")
    tokens = _tokens(args)
    return ServerConfig(
        host=args.host, port=args.port, metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        metrics_host=metrics_host(args, secured=bool(tokens or args.tls_cert)), max_text_chars=args.max_text_chars,
        max_receive_bytes=args.max_receive_bytes, max_send_bytes=args.max_send_bytes,
        batcher=BatcherConfig(max_batch_size=args.max_batch_size, max_queue_delay_s=args.max_queue_delay_ms / 1000,
                              preferred_batch_sizes=tuple(args.preferred_batch_sizes),
                              max_queue_size=args.max_queue_size),
        continuous=not args.no_continuous_batching, stream_chunk_frames=args.stream_chunk_frames,
        stream_overlap_frames=args.stream_overlap_frames, stream_first_chunk_frames=args.stream_first_chunk_frames,
        tls=TLSConfig.from_files(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None,
        auth_tokens=tokens, grace_s=args.grace_seconds, warmup=not args.no_warmup, http_port=args.http_port)


def build_server(args, config=None):
    """Voices, synthesizers per device and the configured ``TTSServer`` (blocking: loads models)."""
    from tts.errors import VoiceError
    from tts.server.app import TTSServer
    from tts.synthesizer import Synthesizer
    from tts.voice import load_voice

    config = config if config is not None else server_config(args)
    lexicon = lexicon_from_args(args)           # every voice's; a Riva call's custom_dictionary goes on top
    devices = [f"cuda:{d}" for d in args.devices] if args.devices else [args.device]
    voices = [voice_from_args(args)] + [load_voice(v) for v in args.extra_voice]
    if args.text_normalizer:
        from tts.options import SynthesisOptions
        for v in voices:
            v.defaults = SynthesisOptions(text_normalizer=args.text_normalizer).merged_over(v.defaults)
    names = [v.name for v in voices]
    if len(set(names)) != len(names):
        raise VoiceError(f"two voices have the same name: {names}")
    cache = engine_cache_from_args(args)
    synths = {v.name: [Synthesizer(v, device=d, precision=args.precision, max_batch=args.max_batch_size,
                                   max_text_chars=args.max_text_chars, engine=args.engine, engine_cache=cache,
                                   lexicon=lexicon)
                       for d in devices] for v in voices}
    gpu = [int(d.split(":")[1]) for d in devices if d.startswith("cuda:")] or ([0] if args.device == "cuda" else [])
    return TTSServer(synths, config, default_voice=names[0], gpu_devices=gpu)


class _StoppedBeforeServing(Exception):
    """SIGTERM arrived while the models were loading or the server was starting."""


def _stop_before_serving(signum, frame) -> None:
    raise _StoppedBeforeServing(signal.Signals(signum).name)


async def _serve(args, config) -> bool:
    """Serves until SIGTERM/SIGINT; True if the stop abandoned work still running after the grace."""
    print(f"{PROG}: loading voices", flush=True)
    server = build_server(args, config)
    port = await server.start()
    server.handle_signals()             # before the port is announced: a SIGTERM from now on drains
    metrics = f", metrics on port {server.metrics_port}" if server.metrics_port else ""
    http = f", HTTP (OpenAI-compatible) on port {server.http_port}" if server.http_port else ""
    print(f"{PROG}: serving on {args.host}:{port}{metrics}{http}", flush=True)
    await server.serve_until_signal()
    print(f"{PROG}: stopped", flush=True)
    return server.abandoned


def main(argv: list[str] | None = None) -> int:
    from tts.cli.common import require_extra

    args = build_parser().parse_args(argv)
    require_extra(PROG, "grpc", "grpc_health", "grpc_reflection", "google.protobuf", "prometheus_client")

    def body() -> int:
        from tts.errors import TTSError
        from tts.server.app import BindError, check_ports

        logging.getLogger("tts").setLevel(args.log_level)
        try:
            config = server_config(args)
            check_ports(config)                 # before any model loads
            apply_threads(args.threads)         # before torch is imported
            # SIGTERM before serving (e.g. `kill %1` while models load) ends the start-up cleanly;
            # once serving, the server's own handler drains calls in flight instead.
            signal.signal(signal.SIGTERM, _stop_before_serving)
            if asyncio.run(_serve(args, config)):
                # A model thread still runs a batch whose calls are gone; waiting for it would
                # overrun --grace-seconds, so the process ends now.
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)
        except BindError as exc:
            raise TTSError(f"{exc} ({PORT_FLAGS[exc.field]})") from None
        except _StoppedBeforeServing as exc:
            print(f"{PROG}: {exc} before serving: stopped", flush=True)
        return 0

    return run_main(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
