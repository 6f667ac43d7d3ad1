"""Decoder step figure of benchmarks/README.md: Tacotron2's decoder alone, engine against eager.

On the GPU machine, from the repo root (``source tools/gpu/env.sh`` first unless the package is
installed)::

    python3 tools/gpu/bench_decoder_step.py [--batches 1,8] [--out DIR]

Random NGC-size Tacotron2 weights; memory from the model's own encoder on a 128-character input;
``--steps`` (580) decoder steps forced, prenet dropout 0.5. For each batch: the eager
``Decoder.infer`` (fp16 autocast, as NVIDIA's ``inference.py``) and ``Tacotron2Engine.decode``
with default engine settings, each warmed up then timed ``--repeats`` times (CUDA events, median).
Unlike ``tts-bench``'s decoder row this leaves out the encoder, postnet and vocoder, and times
every batch with the eager baseline of the same run. Writes ``DIR/decoder_step.json``
(``benchmarks/collect.py`` reads it). ``--device cpu --precision fp32 --size tiny`` runs on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import statistics
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench-out")))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", choices=["fp16", "fp32"], default="fp16")
    ap.add_argument("--size", choices=["ngc", "tiny"], default="ngc")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--input-length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=580)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--no-eager", action="store_true", help="skip the eager baseline")
    args = ap.parse_args()

    import torch

    from tts.cli.bench import random_models
    from tts.engines.tacotron2 import Tacotron2Engine
    from tts.report import environment

    logging.getLogger("tts.models.tacotron2").setLevel(logging.ERROR)   # forced length: no gate warnings
    dev = torch.device(args.device)
    model, _, _ = random_models("tacotron2", args.size, 0)
    model = model.to(dev).eval()
    engine = Tacotron2Engine(model, device=dev, precision=args.precision)
    autocast = (torch.autocast(dev.type, dtype=torch.float16) if args.precision == "fp16"
                else contextlib.nullcontext())
    kw = dict(max_decoder_steps=args.steps, prenet_dropout=0.5, early_stopping=False)

    def timed(fn) -> float:
        """Median seconds of ``fn`` over the repeats, after the warm-up."""
        times = []
        for r in range(args.warmup + args.repeats):
            if dev.type == "cuda":
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                fn()
                e1.record()
                e1.synchronize()
                t = e0.elapsed_time(e1) / 1000
            else:
                t0 = time.perf_counter()
                fn()
                t = time.perf_counter() - t0
            if r >= args.warmup:
                times.append(t)
        return statistics.median(times)

    rows = []
    n_symbols = model.embedding.num_embeddings
    for b in (int(x) for x in args.batches.split(",")):
        ids = torch.randint(1, n_symbols, (b, args.input_length), device=dev)
        lengths = torch.full((b,), args.input_length, device=dev)
        with torch.inference_mode():
            memory = model.encode(ids, lengths)
            row = {"batch": b}
            if not args.no_eager:
                with autocast:
                    s = timed(lambda: model.decoder.infer(memory, lengths, **kw))
                row["eager_us_per_step"] = s / args.steps * 1e6
            s = timed(lambda: engine.decode(memory, lengths, **kw))
            row["engine_us_per_step"] = s / args.steps * 1e6
        if "eager_us_per_step" in row:
            row["speedup"] = row["eager_us_per_step"] / row["engine_us_per_step"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"kind": "decoder-step", "command": shlex.join(["python3", "tools/gpu/bench_decoder_step.py",
                                                          *sys.argv[1:]]),
           "precision": args.precision, "input_length": args.input_length, "steps": args.steps,
           "environment": environment(dev), "rows": rows}
    (args.out / "decoder_step.json").write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
