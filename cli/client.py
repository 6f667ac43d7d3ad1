"""``tts-client``: send text (or a phrase file, one utterance a line) to a tts-server; write audio files.

    tts-client --server 127.0.0.1:50051 "Hello world." --out hello.wav
    tts-client --server 127.0.0.1:50051 --phrases phrases.txt --out-dir audio/ --encoding FLAC
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROG = "tts-client"


def build_parser() -> argparse.ArgumentParser:
    from tts.client import ENCODINGS

    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("text", nargs="?", help="text to speak (or use --phrases)")
    p.add_argument("--server", default="127.0.0.1:50051", metavar="HOST:PORT")
    p.add_argument("--phrases", metavar="FILE", help="one utterance a line; writes one file per line")
    p.add_argument("--out", metavar="FILE", help="output file for TEXT (default: out<suffix>)")
    p.add_argument("--out-dir", metavar="DIR", default=".", help="folder for --phrases outputs")
    p.add_argument("--voice", default="", help="voice name (default: the server's)")
    p.add_argument("--encoding", default="WAV", choices=ENCODINGS)
    p.add_argument("--sample-rate", type=int, default=0, help="output rate in Hz (0 = the voice's)")
    p.add_argument("--stream", action="store_true", help="use StreamingSynthesize (LINEAR_PCM16/FLOAT32 only)")
    p.add_argument("--list-voices", action="store_true", help="print the server's voices and exit")
    for name, kind in (("speaking-rate", float), ("denoiser-strength", float), ("sigma", float), ("seed", int),
                       ("max-decoder-steps", int), ("gate-threshold", float), ("prenet-dropout", float)):
        p.add_argument(f"--{name}", type=kind, default=None, help="synthesis option (default: the voice's)")
    p.add_argument("--timeout", type=float, default=120.0, help="deadline per call, seconds")
    p.add_argument("--token", help="bearer token")
    p.add_argument("--root-cert", metavar="PEM", help="use TLS, trusting this CA")
    p.add_argument("--client-cert", metavar="PEM", help="client certificate (mTLS)")
    p.add_argument("--client-key", metavar="PEM", help="client key (mTLS)")
    return p


def main(argv: list[str] | None = None) -> int:
    from tts.cli.common import error_exit, run_main

    args = build_parser().parse_args(argv)
    if not args.list_voices and (args.text is None) == (args.phrases is None):
        error_exit(PROG, "give TEXT or --phrases FILE (one of them)")

    def body() -> int:
        import grpc

        from tts.audio import write_atomic
        from tts.client import SUFFIX, TTSClient

        read = (lambda p: Path(p).read_bytes() if p else None)
        options = {k: getattr(args, k) for k in ("speaking_rate", "denoiser_strength", "sigma", "seed",
                                                 "max_decoder_steps", "gate_threshold", "prenet_dropout")}
        with TTSClient(args.server, token=args.token, root_cert=read(args.root_cert),
                       client_cert=read(args.client_cert), client_key=read(args.client_key),
                       timeout=args.timeout) as client:
            try:
                if args.list_voices:
                    resp = client.list_voices()
                    for v in resp.voices:
                        print(f"{v.name}\t{v.acoustic_model}\t{v.sample_rate_hz} Hz{'  (default)' if v.is_default else ''}")
                    return 0
                if args.phrases:
                    texts = [t.strip() for t in Path(args.phrases).read_text(encoding="utf-8").splitlines()]
                    jobs = [(t, Path(args.out_dir) / f"{i + 1:04d}{SUFFIX[args.encoding]}")
                            for i, t in enumerate(texts) if t]
                    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
                else:
                    jobs = [(args.text, Path(args.out or f"out{SUFFIX[args.encoding]}"))]
                for text, path in jobs:
                    if args.stream:
                        data = b"".join(c.audio for c in client.stream(
                            text, voice=args.voice, encoding=args.encoding, sample_rate_hz=args.sample_rate,
                            options=options))
                    else:
                        data = client.synthesize(text, voice=args.voice, encoding=args.encoding,
                                                 sample_rate_hz=args.sample_rate, options=options).audio
                    write_atomic(path, data)
                    print(f"{path}\t{len(data)} bytes")
            except grpc.RpcError as exc:
                print(f"{PROG}: error: {exc.code().name}: {exc.details()}", file=sys.stderr)
                return 1
        return 0

    return run_main(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
