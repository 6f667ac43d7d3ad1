"""Command-line pieces shared by every entry point.

Flags are defined once here: the voice flags, and the synthesis-option flags
derived from the fields of ``tts.options.SynthesisOptions``. Entry points
call ``add_voice_arguments``/``add_option_arguments`` and never write these
flags themselves.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tts.errors import TTSError
from tts.options import SynthesisOptions, flag_name, option_fields

NO_VOICE_HELP = (
    "no voice given. Give one of:\n"
    "  --tacotron2 T2.pt --waveglow WG.pt            (NVIDIA DeepLearningExamples / NGC checkpoints)\n"
    "  --fastspeech FS.pt [--fastspeech-config hparams.yaml] --waveglow WG.pt\n"
    "  (or --hifigan HG.pt, a DLE/NGC HiFi-GAN generator, in place of --waveglow)\n"
    "  --voice DIR                                   (a folder with a voice.json manifest)"
)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default once: appended as ``(default: X)`` unless its help names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or "default" in text or action.default in (None, False, [], "")
                or action.default is argparse.SUPPRESS or text is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def new_parser(prog: str, description: str, **kw: Any) -> argparse.ArgumentParser:
    """An ArgumentParser with this package's help layout (defaults shown once) and ``--version``."""
    parser = argparse.ArgumentParser(prog=prog, description=description.replace("``", ""),
                                     formatter_class=HelpFormatter, **kw)
    add_version_argument(parser, prog.split()[0])
    return parser


#: The installed distribution whose version ``--version`` prints.
DISTRIBUTION = "tts-serve"


def package_version() -> str:
    """The version of the installed ``tts-serve`` (its package metadata)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed)"


def add_version_argument(parser: argparse.ArgumentParser, prog: str) -> None:
    """``--version``: prints ``PROG VERSION`` and exits 0 (every console script has it)."""
    parser.add_argument("--version", action="version", version=f"{prog} {package_version()}",
                        help="print the program's name and version and exit")


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """``old`` still works as a hidden, deprecated spelling of the flag ``new`` (same destination and
    type; a note on stderr says to use ``new``). One name per option across the commands."""
    target = next(a for a in parser._actions if new in a.option_strings)

    class Deprecated(argparse.Action):
        def __call__(self, p, namespace, values, option_string=None):
            print(f"{p.prog}: warning: {old} is deprecated; use {new}", file=sys.stderr)
            if target.nargs == 0:
                setattr(namespace, target.dest, target.const)
            else:
                setattr(namespace, target.dest, values)

    # A hidden option of the parser itself (argument groups share the parser's option table).
    parser.add_argument(old, dest=target.dest, type=target.type, nargs=0 if target.nargs == 0 else None,
                        action=Deprecated, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                        metavar=target.metavar)


#: Module of an optional dependency -> the extra of tts-serve that installs it.
EXTRAS = {"grpc": "server", "grpc_health": "server", "grpc_reflection": "server", "google.protobuf": "server",
          "prometheus_client": "server"}


def require_extra(prog: str, *modules: str) -> None:
    """Exit 1 with the pip command to run when a module of an optional extra cannot be imported
    (instead of a ModuleNotFoundError traceback)."""
    import importlib
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            extra = EXTRAS.get(module, "server")
            error_exit(prog, f"{prog} needs the '{extra}' extra ({module} cannot be imported: {exc}); "
                             f"install it with: pip install 'tts-serve[{extra}]'")


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: CPU threads of PyTorch's operators (every command that runs a model)."""
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="CPU threads of PyTorch's operators (default: PyTorch's own: $OMP_NUM_THREADS, "
                             "else one per core). Waiting threads sleep instead of spinning "
                             "(OMP_WAIT_POLICY=PASSIVE unless set), so a run on a busy machine slows down "
                             "in proportion instead of collapsing (benchmarks/README.md)")


def apply_threads(threads: int | None) -> int:
    """Sets PyTorch's CPU thread count (None: PyTorch's default); returns the count in force.

    Call it before torch is first imported: OpenMP reads its wait policy once, when torch loads
    it, and with OpenMP's default policy a thread that waits for work spins, taking the cores
    that working threads (ours or other programs') need.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if threads is not None:
            os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def add_wait_argument(parser: argparse.ArgumentParser) -> None:
    """``--wait SECONDS``: how long a client keeps retrying a server that is not (yet) reachable."""
    parser.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                        help="keep retrying a server that is unreachable or UNAVAILABLE (starting, draining) "
                             "for this long, with backoff; 0 = fail at once")


def read_phrases(path: str, flag: str = "phrases") -> list[tuple[int, str]]:
    """(line number, text) of every non-blank line of a UTF-8 text file (``-``: standard input);
    errors name the file and line.

    A missing, unreadable, binary or empty file is an InvalidInputError (one line, no traceback).
    """
    from tts.errors import InvalidInputError
    if path == "-":
        return _phrases_of(sys.stdin.buffer.read(), "<stdin>", flag)
    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"{path}: phrase file not found", field=flag)
    if p.is_dir():
        raise InvalidInputError(f"{path}: is a directory, not a phrase file", field=flag)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read the phrase file ({exc.strerror or exc})", field=flag) from None
    return _phrases_of(data, path, flag)


def _phrases_of(data: bytes, path: str, flag: str) -> list[tuple[int, str]]:
    from tts.errors import InvalidInputError
    if b"\0" in data:
        raise InvalidInputError(f"{path}: a binary file (it holds NUL bytes), not UTF-8 text with one phrase a line",
                                field=flag)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    phrases = []
    for n, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(
                f"{path}: line {n} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                "save the file as UTF-8", field=flag) from None
        line = line.rstrip("\r")
        if line.strip():
            phrases.append((n, line.strip()))
    if not phrases:
        raise InvalidInputError(f"{path}: no phrases (the file is empty or has only blank lines)", field=flag)
    return phrases


#: Suffixes that make ``--out`` a file name (a command refuses those it cannot write).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".pcm", ".f32", ".raw", ".aiff", ".ulaw", ".alaw")
#: How ``--out`` is read, the same for every command that writes audio.
OUT_HELP = ("a file (NAME.wav, .flac, ...) for one text, else a folder of N.wav, one per phrase line N "
            "(created when the first file is written; default: out.wav for one text, out/ for a phrase file)")


@dataclass(frozen=True)
class Output:
    """Where a command writes: one file (``--out X.wav`` with one text) or a folder of line-numbered files."""

    #: The file, or the folder.
    path: Path
    #: True: ``path`` is the one output file.
    is_file: bool

    @classmethod
    def parse(cls, out: str | None, *, one_text: bool, suffixes: tuple[str, ...], default_suffix: str) -> Output:
        """Reads ``--out`` (checked before any model loads; nothing is created yet).

        A path ending in one of ``suffixes`` that is not an existing folder is a file, which takes
        exactly one text; anything else is a folder.
        """
        from tts.errors import InvalidInputError
        if out is None:
            return cls(Path(f"out{default_suffix}") if one_text else Path("out"), one_text)
        path = Path(out)
        is_file = path.suffix.lower() in AUDIO_SUFFIXES and not path.is_dir() and not out.endswith(("/", os.sep))
        if is_file and path.suffix.lower() not in suffixes:
            raise InvalidInputError(f"--out {out}: this command writes {', '.join(suffixes)} files", field="out")
        if is_file and not one_text:
            raise InvalidInputError(f"--out {out}: a file name, but a phrase file makes one file per line: "
                                    "give a folder (e.g. --out audio/)", field="out")
        if not is_file and path.exists() and not path.is_dir():
            raise InvalidInputError(f"--out {out}: exists and is not a folder", field="out")
        if is_file and path.is_dir():
            raise InvalidInputError(f"--out {out}: is a folder", field="out")
        # The nearest existing folder above must be one we can write in.
        here = path if not is_file else path.parent
        here = here if str(here) else Path(".")
        while not here.exists():
            here = here.parent
        if not here.is_dir() or not os.access(here, os.W_OK | os.X_OK):
            raise InvalidInputError(f"--out {out}: cannot write there ({here} is "
                                    f"{'not a folder' if not here.is_dir() else 'not writable'})", field="out")
        return cls(path, is_file)

    def file_for(self, line: int, suffix: str) -> Path:
        """The path for phrase line ``line``, its folder created if missing."""
        target = self.path if self.is_file else self.path / f"{line}{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    @property
    def folder(self) -> Path:
        return self.path.parent if self.is_file else self.path


def add_voice_arguments(parser: argparse.ArgumentParser) -> None:
    """--tacotron2/--fastspeech/--fastspeech-config/--waveglow/--hifigan/--voice/--device/--precision."""
    g = parser.add_argument_group("voice")
    g.add_argument("--tacotron2", metavar="CKPT", help="Tacotron2 checkpoint (any NVIDIA DLE/NGC layout)")
    g.add_argument("--fastspeech", metavar="CKPT", help="CUDA-Optimized FastSpeech checkpoint")
    g.add_argument("--fastspeech-config", metavar="YAML",
                   help="FastSpeech hparams YAML (reference key names); default: the reference's base hparams, "
                        "with every size the checkpoint's tensors show taken from the checkpoint")
    g.add_argument("--waveglow", metavar="CKPT", help="WaveGlow checkpoint")
    g.add_argument("--hifigan", metavar="CKPT",
                   help="HiFi-GAN generator checkpoint (DLE/NGC hifigan_gen_checkpoint_*.pt), instead of --waveglow")
    g.add_argument("--voice", metavar="NAME|DIR", help="a voice folder (voice.json manifest) or a bundled voice name")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    g.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "fp16"],
                   help="fp32: IEEE float32 (TF32 off on CUDA); tf32: float32 with TF32 tensor cores; "
                        "fp16: half weights; tf32 and fp16 need --device cuda (default: fp32)")
    g.add_argument("--engine", default="auto", choices=["auto", "eager"],
                   help="auto: fast GPU engines on CUDA (CUDA graphs, fused kernels), eager modules on CPU; "
                        "eager: always the eager PyTorch reference (default: auto)")
    g.add_argument("--engine-cache", metavar="DIR|off",
                   help="on-disk engine cache (prepared weights, compiled kernels), or 'off' "
                        "(default: $TTS_ENGINE_CACHE, else $XDG_CACHE_HOME/tts-serve/engines)")


def add_lexicon_argument(parser: argparse.ArgumentParser) -> None:
    """``--lexicon FILE``: pronunciations of words (CMUdict lines ``WORD  AH0 B AW1 T``)."""
    parser.add_argument("--lexicon", metavar="FILE",
                        help="pronunciation lexicon: CMUdict-style lines 'WORD  AH0 B AW1 T' (';;;' and '#' "
                             "comments, case-insensitive words, WORD(2) variants ignored); words of the text "
                             "found in it are spoken with its ARPAbet phonemes")


def lexicon_from_args(args: argparse.Namespace):
    """The ``tts.text.lexicon.Lexicon`` of ``--lexicon`` (None without it); bad files raise
    InvalidInputError naming the file and line."""
    path = getattr(args, "lexicon", None)
    if not path:
        return None
    from tts.text.lexicon import load_lexicon
    return load_lexicon(path)


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per SynthesisOptions field (``--sigma``, ``--denoiser-strength``, ...); default = the voice's."""
    g = parser.add_argument_group("synthesis options (default: the voice's own)")
    for f in option_fields():
        m = f.metadata
        g.add_argument(flag_name(f.name), dest=f.name, type=m["type"], default=None,
                       metavar=m["metavar"] or ("N" if m["type"] is int else "X"), help=m["help"])


def options_from_args(args: argparse.Namespace) -> SynthesisOptions:
    """SynthesisOptions from parsed flags; range errors name the flag."""
    from tts.errors import InvalidInputError
    values = {f.name: getattr(args, f.name, None) for f in option_fields()}
    try:
        return SynthesisOptions(**values)
    except InvalidInputError as exc:
        flag = flag_name(exc.field) if exc.field else "an option"
        raise InvalidInputError(f"{flag}: {exc}", field=exc.field) from None


def voice_from_args(args: argparse.Namespace):
    """Build the Voice the voice flags describe, or raise TTSError saying how to give one."""
    from tts.errors import VoiceError
    from tts.voice import Voice, load_voice
    acoustic = [n for n in ("tacotron2", "fastspeech") if getattr(args, n, None)]
    vocoders = [n for n in ("waveglow", "hifigan") if getattr(args, n, None)]
    if args.voice:
        if acoustic or vocoders:
            raise VoiceError("give either --voice or checkpoint files (--tacotron2/--fastspeech, "
                             "--waveglow/--hifigan), not both")
        return load_voice(args.voice)
    if not acoustic and not vocoders:
        from tts.voice import bundled_voices
        bundled = bundled_voices()
        if bundled:
            return load_voice(bundled[0])
        raise VoiceError(NO_VOICE_HELP)
    if len(acoustic) == 2:
        raise VoiceError("give --tacotron2 or --fastspeech, not both")
    if len(vocoders) == 2:
        raise VoiceError("give --waveglow or --hifigan, not both")
    if not acoustic:
        raise VoiceError(f"--{vocoders[0]} needs an acoustic model: add --tacotron2 CKPT or --fastspeech CKPT")
    if not vocoders:
        raise VoiceError(f"--{acoustic[0]} needs a vocoder: add --waveglow CKPT or --hifigan CKPT")
    if args.fastspeech_config and not args.fastspeech:
        raise VoiceError("--fastspeech-config is only used with --fastspeech")
    return Voice.from_checkpoints(tacotron2=args.tacotron2, fastspeech=args.fastspeech,
                                  fastspeech_config=args.fastspeech_config, waveglow=args.waveglow,
                                  hifigan=getattr(args, "hifigan", None))


def engine_cache_from_args(args: argparse.Namespace) -> Any:
    """The ``engine_cache`` argument of Synthesizer that ``--engine-cache`` asks for."""
    value = getattr(args, "engine_cache", None)
    if not value:
        return "auto"
    if value.strip().lower() == "off":
        return None
    from tts.engines.cache import EngineCache
    return EngineCache(value, force_rebuild=bool(getattr(args, "force_rebuild", False)))


def run_main(prog: str, body: Callable[[], int | None]) -> int:
    """Run an entry point: a TTSError or OS error becomes one line on stderr and exit code 1.

    Ctrl-C exits with 130. Anything else is a bug of ours and keeps its
    traceback, so it can be reported.
    """
    logging.basicConfig(level=logging.WARNING, format=f"{prog}: %(levelname)s: %(message)s")
    try:
        return int(body() or 0)
    except TTSError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"{prog}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def error_exit(prog: str, message: str) -> Any:
    """Print a one-line error and exit 1 (for checks made before any work starts)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(1)
