"""``tts-client``: send text (or a phrase file, one utterance a line) to a tts-server; write audio files.

    tts-client --server 127.0.0.1:50051 "Hello world." --out hello.wav
    tts-client --server 127.0.0.1:50051 --phrases phrases.txt --out audio/ --encoding FLAC

``--out`` is read as ``tts-synth`` reads it (``tts.cli.common.Output``): NAME.wav (or .flac, .mp3,
.ogg, .pcm, .f32, .ulaw, .alaw: headerless G.711) for one text, else a folder of N.wav per phrase line N. The encoding follows
the file's suffix unless ``--encoding`` is given. A server that is starting (or draining) is
waited for, up to ``--wait`` seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import sys
from pathlib import Path

PROG = "tts-client"
#: Output file suffix -> encoding, for ``--out NAME.SUFFIX`` without ``--encoding``.
ENCODING_OF_SUFFIX = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG_OPUS", ".pcm": "LINEAR_PCM16",
                      ".f32": "FLOAT32", ".mp3": "MP3", ".ulaw": "MULAW", ".alaw": "ALAW"}
#: Encodings a stream delivers (raw samples); a WAV file is made of PCM16 chunks.
STREAM_ENCODINGS = ("LINEAR_PCM16", "FLOAT32", "MULAW", "ALAW")
#: ``tts.options.SynthesisOptions`` field -> the request's option name, where they differ.
PROTO_OPTION = {"speed": "speaking_rate"}


def build_parser() -> argparse.ArgumentParser:
    from tts.cli.common import OUT_HELP, add_deprecated_alias, add_option_arguments, add_wait_argument, new_parser
    from tts.client import ENCODINGS

    p = new_parser(PROG, __doc__.split("\n\n")[0])
    p.add_argument("text", nargs="?", help="text to speak (or use --phrases)")
    p.add_argument("--server", default="127.0.0.1:50051", metavar="HOST:PORT", help="the tts-server")
    p.add_argument("--phrases", metavar="FILE|-",
                   help="UTF-8 file, one utterance a line (- reads standard input); one output file per line")
    p.add_argument("--out", metavar="FILE|DIR", help=OUT_HELP)
    p.add_argument("--out-dir", dest="out", help=argparse.SUPPRESS)     # the older name of a folder --out
    p.add_argument("--voice", default="", help="voice name (default: the server's)")
    p.add_argument("--encoding", choices=ENCODINGS, default=None,
                   help="audio encoding (default: from the --out suffix, else WAV; with --stream, WAV is "
                        "written from LINEAR_PCM16 chunks)")
    p.add_argument("--sample-rate", type=int, default=0, help="output rate in Hz (0 = the voice's)")
    p.add_argument("--stream", action="store_true", help="use StreamingSynthesize (audio as it is made)")
    p.add_argument("--list-voices", action="store_true", help="print the server's voices and exit")
    add_option_arguments(p)             # the flags of tts-synth, from tts.options.SynthesisOptions
    add_deprecated_alias(p, "--speaking-rate", "--speed")      # the older name of --speed here
    g = p.add_argument_group("connection")
    g.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS", help="deadline of each call")
    add_wait_argument(g)
    g.add_argument("--token", help="bearer token")
    g.add_argument("--root-cert", metavar="PEM", help="use TLS, trusting this CA")
    g.add_argument("--client-cert", metavar="PEM", help="client certificate (mTLS)")
    g.add_argument("--client-key", metavar="PEM", help="client key (mTLS)")
    return p


def resolve_encoding(args: argparse.Namespace, out) -> tuple[str, str, bool]:
    """(encoding to request, file suffix, wrap PCM16 chunks in a WAV file)."""
    from tts.client import SUFFIX
    from tts.errors import InvalidInputError

    encoding = args.encoding
    if out.is_file:
        inferred = ENCODING_OF_SUFFIX[out.path.suffix.lower()]
        if encoding is None:
            encoding = inferred
        elif SUFFIX[encoding] != out.path.suffix.lower():
            raise InvalidInputError(f"--out {out.path}: --encoding {encoding} writes {SUFFIX[encoding]} files",
                                    field="out")
    encoding = encoding or "WAV"
    if args.stream and encoding not in (*STREAM_ENCODINGS, "WAV"):
        raise InvalidInputError(f"--stream delivers LINEAR_PCM16 or FLOAT32 samples (saved raw, or as WAV); "
                                f"--encoding {encoding} needs a unary call (leave out --stream)", field="encoding")
    wrap = args.stream and encoding == "WAV"
    return ("LINEAR_PCM16" if wrap else encoding), SUFFIX[encoding], wrap


def pcm16_wav(pcm: bytes, rate: int) -> bytes:
    """A mono 16-bit WAV file of raw little-endian PCM16 samples."""
    import wave
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    from tts.cli.common import require_extra, run_main

    require_extra(PROG, "grpc")         # before the parser, which reads tts.client
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.list_voices and (args.text is None) == (args.phrases is None):
        parser.error("give TEXT or --phrases FILE (one of them)")
    logging.getLogger("tts.client").setLevel(logging.INFO)     # "waiting for a tts-server ..."

    def body() -> int:
        import grpc

        from tts.audio import write_atomic
        from tts.cli.common import Output, options_from_args, read_phrases
        from tts.client import SUFFIX, ServerUnreachableError, TTSClient

        if args.list_voices:
            jobs, out, wrap = [], None, False
        else:
            if args.text is not None:
                lines = [(1, args.text)]        # the server checks it
            else:
                lines = read_phrases(args.phrases, flag="--phrases")
            out = Output.parse(args.out, one_text=args.text is not None, suffixes=tuple(ENCODING_OF_SUFFIX),
                               default_suffix=SUFFIX[args.encoding or "WAV"])
            encoding, suffix, wrap = resolve_encoding(args, out)
            jobs = [(n, text) for n, text in lines]
        read = (lambda p: Path(p).read_bytes() if p else None)
        chosen = options_from_args(args)        # range errors name the flag, before any call
        options = {PROTO_OPTION.get(f.name, f.name): getattr(chosen, f.name) for f in dataclasses.fields(chosen)}
        with TTSClient(args.server, token=args.token, root_cert=read(args.root_cert),
                       client_cert=read(args.client_cert), client_key=read(args.client_key),
                       timeout=args.timeout, retry_s=args.wait) as client:
            try:
                if args.list_voices:
                    resp = client.list_voices()
                    for v in resp.voices:
                        print(f"{v.name}\t{v.acoustic_model}\t{v.sample_rate_hz} Hz{'  (default)' if v.is_default else ''}")
                    return 0
                for n, text in jobs:
                    kw = {"voice": args.voice, "encoding": encoding, "sample_rate_hz": args.sample_rate,
                          "options": options}
                    if args.stream:
                        chunks = list(client.stream(text, **kw))
                        data = b"".join(c.audio for c in chunks)
                        if wrap:
                            data = pcm16_wav(data, chunks[-1].sample_rate_hz if chunks else args.sample_rate)
                    else:
                        data = client.synthesize(text, **kw).audio
                    path = out.file_for(n, suffix)
                    write_atomic(path, data)
                    print(f"{path}\t{len(data)} bytes")
            except ServerUnreachableError:
                raise                           # one line from run_main, as an OS error
            except grpc.RpcError as exc:
                print(f"{PROG}: error: {exc.code().name}: {exc.details()}", file=sys.stderr)
                return 1
        return 0

    return run_main(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
