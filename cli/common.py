"""Command-line pieces shared by every entry point.

Flags are defined once here: the voice flags, and the synthesis-option flags
derived from the fields of ``tts.options.SynthesisOptions``. Entry points
call ``add_voice_arguments``/``add_option_arguments`` and never write these
flags themselves.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from tts.errors import TTSError
from tts.options import SynthesisOptions, flag_name, option_fields

NO_VOICE_HELP = (
    "no voice given. Give one of:\n"
    "  --tacotron2 T2.pt --waveglow WG.pt            (NVIDIA DeepLearningExamples / NGC checkpoints)\n"
    "  --fastspeech FS.pt [--fastspeech-config hparams.yaml] --waveglow WG.pt\n"
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


def add_voice_arguments(parser: argparse.ArgumentParser) -> None:
    """--tacotron2/--fastspeech/--fastspeech-config/--waveglow/--voice/--device/--precision."""
    g = parser.add_argument_group("voice")
    g.add_argument("--tacotron2", metavar="CKPT", help="Tacotron2 checkpoint (any NVIDIA DLE/NGC layout)")
    g.add_argument("--fastspeech", metavar="CKPT", help="CUDA-Optimized FastSpeech checkpoint")
    g.add_argument("--fastspeech-config", metavar="YAML",
                   help="FastSpeech hparams YAML (reference key names); default: the reference's base hparams, "
                        "with every size the checkpoint's tensors show taken from the checkpoint")
    g.add_argument("--waveglow", metavar="CKPT", help="WaveGlow checkpoint")
    g.add_argument("--voice", metavar="NAME|DIR", help="a voice folder (voice.json manifest) or a bundled voice name")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    g.add_argument("--precision", default="fp32", choices=["fp32", "fp16"],
                   help="fp16 needs --device cuda (default: fp32)")
    g.add_argument("--engine", default="auto", choices=["auto", "eager"],
                   help="auto: fast GPU engines on CUDA (CUDA graphs, fused kernels), eager modules on CPU; "
                        "eager: always the eager PyTorch reference (default: auto)")
    g.add_argument("--engine-cache", metavar="DIR|off",
                   help="on-disk engine cache (prepared weights, compiled kernels), or 'off' "
                        "(default: $TTS_ENGINE_CACHE, else $XDG_CACHE_HOME/tts-serve/engines)")


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
    if args.voice:
        if acoustic or args.waveglow:
            raise VoiceError("give either --voice or checkpoint files (--tacotron2/--fastspeech, --waveglow), not both")
        return load_voice(args.voice)
    if not acoustic and not args.waveglow:
        from tts.voice import bundled_voices
        bundled = bundled_voices()
        if bundled:
            return load_voice(bundled[0])
        raise VoiceError(NO_VOICE_HELP)
    if len(acoustic) == 2:
        raise VoiceError("give --tacotron2 or --fastspeech, not both")
    if not acoustic:
        raise VoiceError("--waveglow needs an acoustic model: add --tacotron2 CKPT or --fastspeech CKPT")
    if not args.waveglow:
        raise VoiceError(f"--{acoustic[0]} needs a vocoder: add --waveglow CKPT")
    if args.fastspeech_config and not args.fastspeech:
        raise VoiceError("--fastspeech-config is only used with --fastspeech")
    return Voice.from_checkpoints(tacotron2=args.tacotron2, fastspeech=args.fastspeech,
                                  fastspeech_config=args.fastspeech_config, waveglow=args.waveglow)


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
