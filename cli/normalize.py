"""``tts-normalize [FILE|-]``: print the text a voice will spell, one line per input line.

Each input line (UTF-8; a trailing carriage return is ignored) goes through the
text normalizer and NVIDIA's ``english_cleaners`` exactly as ``tts-synth`` and
the server read it, and comes out as one line: the cleaned text whose
characters become the model's symbols (``{...}`` ARPAbet groups copied as they
are). Blank lines stay blank, so output line N belongs to input line N.
Characters that no symbol stands for are listed on stderr, one warning per line.
"""

from __future__ import annotations

import argparse
import sys

from tts.cli.common import add_version_argument, run_main
from tts.errors import InvalidInputError

PROG = "tts-normalize"


def build_parser() -> argparse.ArgumentParser:
    from tts.text import FRONTENDS, NORMALIZERS
    p = argparse.ArgumentParser(
        prog=PROG, description="Print the normalized, cleaned text a voice will spell, one line per input line.",
        epilog="Exit status: 0 done, 1 error (unreadable file, bad voice), 2 usage.")
    add_version_argument(p, PROG)
    p.add_argument("file", nargs="?", default="-", metavar="FILE|-",
                   help="UTF-8 text file, one utterance per line; - or nothing reads standard input")
    p.add_argument("--voice", metavar="NAME|DIR",
                   help="read as this voice does (a voice folder or bundled voice name): its front end and its "
                        "default text normalizer; no model is loaded")
    p.add_argument("--frontend", choices=FRONTENDS, default=None,
                   help="transliteration of the front end (default: the voice's, else tacotron2)")
    p.add_argument("--text-normalizer", choices=NORMALIZERS, default=None,
                   help="full: money, dates, units, ... read as words first; dle: NVIDIA's english_cleaners "
                        "only (default: the voice's, else full)")
    return p


def _read_lines(path: str) -> list[str]:
    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(path, "rb") as f:
            data = f.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()                     # the newline that ends the last line
    lines = []
    for n, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"{path}: line {n} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                                    f"{exc.start + 1}); save the file as UTF-8", field="file") from None
        lines.append(line[:-1] if line.endswith("\r") else line)
    return lines


def _run(args: argparse.Namespace) -> int:
    from tts.text import encode
    frontend, normalizer = "tacotron2", "full"
    if args.voice:
        from tts.voice import voice_text_settings
        frontend, normalizer = voice_text_settings(args.voice)
    frontend = args.frontend or frontend
    normalizer = args.text_normalizer or normalizer
    out = sys.stdout
    for n, line in enumerate(_read_lines(args.file), start=1):
        enc = encode(line, frontend, normalizer)
        out.write(enc.cleaned + "\n")
        if enc.dropped:
            print(f"{PROG}: warning: line {n}: not spoken (no symbol): {enc.dropped!r}", file=sys.stderr)
    out.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(PROG, lambda: _run(args))


if __name__ == "__main__":
    raise SystemExit(main())
