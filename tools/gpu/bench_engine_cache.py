"""Engine cache figure of benchmarks/README.md: time until a server is ready, empty cache vs warm cache.

On the GPU machine, from the repo root (``source tools/gpu/env.sh`` first unless the package is
installed)::

    python3 tools/gpu/bench_engine_cache.py [--out DIR]

Runs two fresh processes on one new cache folder: ``cold`` (empty cache: the engines prepare their
weights and Triton compiles) and ``warm`` (everything loaded from the cache). Each times, for random
weights at NVIDIA's sizes with default engines: construction of the Tacotron2 and the WaveGlow
engine with an ``EngineCache``, their first call (Tacotron2: 128 characters, 64 decoder steps;
WaveGlow: 580 mel frames; compile or cache hit, CUDA-graph capture) and a second call. ``ready_s``
is construction plus first calls, what a server start pays. Writes ``DIR/engine_cache.json``
(``benchmarks/collect.py`` reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INPUT = "Tacotron2 128 characters, 64 decoder steps; WaveGlow 580 mel frames"


def child(mode: str, root: str, device: str, precision: str, size: str) -> dict:
    import copy

    import torch

    from tts.cli.bench import random_models
    from tts.engines.cache import EngineCache
    from tts.engines.tacotron2 import Tacotron2Engine
    from tts.engines.waveglow import WaveGlowEngine

    dev = torch.device(device)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    t2, wg, _ = random_models("tacotron2", size, 0)
    t2 = t2.to(dev).eval()
    wg = copy.deepcopy(wg).to(dev).to(dtype).eval()
    n_symbols = t2.embedding.num_embeddings

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def lap(t0: float) -> float:
        sync()
        return time.perf_counter() - t0

    sync()
    cache = EngineCache(root)
    res: dict = {"mode": mode}
    t0 = time.perf_counter()
    e = Tacotron2Engine(t2, device=dev, precision=precision, cache=cache)
    res["t2_construct_s"] = lap(t0)
    t0 = time.perf_counter()
    w = WaveGlowEngine(wg, device=dev, precision=precision, cache=cache)
    res["wg_construct_s"] = lap(t0)
    ids = torch.randint(1, n_symbols, (1, 128), device=dev)
    lengths = torch.tensor([128], device=dev)
    mel = torch.randn(1, t2.config.n_mel_channels, 580, device=dev).to(dtype)
    for name, run in (("t2", lambda: e.infer(ids, lengths, max_decoder_steps=64, prenet_dropout=0.0,
                                             early_stopping=False)),
                      ("wg", lambda: w.infer(mel, 0.6))):
        t0 = time.perf_counter()
        run()
        res[f"{name}_first_call_s"] = lap(t0)
        t0 = time.perf_counter()
        run()
        res[f"{name}_steady_call_s"] = lap(t0)
    res["cache_hits"] = [e.cache_hit, w.cache_hit]
    res["ready_s"] = res["t2_construct_s"] + res["wg_construct_s"] + res["t2_first_call_s"] + res["wg_first_call_s"]
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench-out")))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--size", choices=["ngc", "tiny"], default="ngc")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "CACHE_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.device, args.precision, args.size)))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    root = tempfile.mkdtemp(prefix="engine_cache_")
    runs = []
    for mode in ("cold", "warm"):
        cmd = [sys.executable, __file__, "--device", args.device, "--precision", args.precision,
               "--size", args.size, "--child", mode, root]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            print(p.stdout + p.stderr, file=sys.stderr)
            return 1
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), flush=True)
    from tts.report import environment
    argv = ["python3", "tools/gpu/bench_engine_cache.py", *sys.argv[1:]]
    doc = {"kind": "engine-cache", "command": shlex.join(argv), "precision": args.precision, "input": INPUT,
           "environment": environment(args.device), "runs": runs}
    (args.out / "engine_cache.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"ready: cold {runs[0]['ready_s']:.2f} s, warm {runs[1]['ready_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
