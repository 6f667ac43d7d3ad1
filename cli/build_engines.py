"""``tts-build-engines``: build a voice's GPU engines ahead of time into the on-disk engine cache.

Takes the same voice flags as ``tts-synth``/``tts-server`` (``--voice`` or
checkpoint files, ``--device``, ``--precision``) and builds what those
commands would build on their first start: the prepared engine weights (into
the engine cache) and Triton's compiled kernels (into the cache's ``triton/``
folder); one warm-up synthesis compiles the kernels and captures the CUDA
graphs (graphs themselves are captured again at every load: they cannot be
stored). Later starts with the same weights, GPU, software and precision load
from the cache; anything else (a different key, a damaged or foreign file)
is rebuilt, never used. ``--force-rebuild`` rebuilds every entry.

The cache folder: ``--engine-cache DIR``, else ``$TTS_ENGINE_CACHE``, else
``$XDG_CACHE_HOME/tts-serve/engines`` (``~/.cache/tts-serve/engines``).
Without a CUDA device there is nothing to build (engines run on CUDA only):
the command says so and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from tts.cli.common import add_threads_argument, add_voice_arguments, apply_threads, new_parser, positive_int, run_main

logger = logging.getLogger(__name__)

PROG = "tts-build-engines"
WARMUP_TEXT = "Engines are built ahead of time, so the first request is fast."


def build_parser() -> argparse.ArgumentParser:
    p = new_parser(
        PROG, "Build a voice's GPU engines into the on-disk engine cache "
        "(prepared weights and compiled kernels), so tts-synth and tts-server start fast.")
    add_voice_arguments(p)
    p.set_defaults(device=None)
    g = p.add_argument_group("engine cache")
    g.add_argument("--force-rebuild", action="store_true", help="rebuild every entry even if a valid one exists")
    g.add_argument("--batch", type=positive_int, default=1, metavar="N",
                   help="texts in the warm-up synthesis (graphs are per batch shape; default 1)")
    g.add_argument("--no-warmup", action="store_true",
                   help="only prepare and store the weights (kernels compile at the first request)")
    add_threads_argument(g)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(PROG, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    apply_threads(args.threads)       # before torch is imported
    import torch

    from tts.cli.common import voice_from_args
    from tts.engines.cache import EngineCache, cache_from_env, default_cache_dir, use_cache
    from tts.errors import InvalidInputError

    logging.getLogger("tts.engines").setLevel(logging.INFO)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not device.startswith("cuda"):
        print(f"{PROG}: no CUDA device ({'--device ' + device if args.device else 'none present'}): "
              "engines run on CUDA only, nothing to build", file=sys.stderr)
        return 0
    if not torch.cuda.is_available():
        raise InvalidInputError(f"--device {device} was asked for, but no CUDA GPU is available here",
                                field="device")
    if args.engine_cache and args.engine_cache.strip().lower() == "off":
        raise InvalidInputError("--engine-cache off: tts-build-engines builds into a cache; name a folder",
                                field="engine_cache")
    if args.engine_cache:
        root = args.engine_cache
    else:
        env = cache_from_env()
        root = env.root if env is not None else default_cache_dir()
    cache = EngineCache(root, force_rebuild=args.force_rebuild)

    from tts.options import SynthesisOptions
    from tts.synthesizer import Synthesizer

    t0 = time.perf_counter()
    voice = voice_from_args(args)
    t_voice = time.perf_counter() - t0
    t1 = time.perf_counter()
    with use_cache(cache):
        synth = Synthesizer(voice, device=device, precision=args.precision, max_batch=args.batch)
    torch.cuda.synchronize()
    t_engines = time.perf_counter() - t1
    t_warm = 0.0
    if not args.no_warmup:
        t2 = time.perf_counter()
        synth.synthesize_batch([WARMUP_TEXT] * args.batch, SynthesisOptions(seed=0))
        t_warm = time.perf_counter() - t2
    for kind, seconds, what in cache.events:
        print(f"{PROG}: {kind}: {'built' if what == 'build' else 'loaded from cache'} in {seconds:.2f} s")
    print(f"{PROG}: voice {getattr(voice, 'name', '?')} on {device} ({args.precision}): checkpoints "
          f"{t_voice:.2f} s, engines {t_engines:.2f} s ({cache.stats['builds']} built, {cache.stats['hits']} "
          f"loaded, {cache.stats['rejected']} rejected), warm-up (kernels, graphs) {t_warm:.2f} s -> {cache.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
