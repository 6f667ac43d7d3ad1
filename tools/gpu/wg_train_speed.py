"""WaveGlow training speed: the trainer's step in float32, under bf16 autocast, compiled, and
as one CUDA graph (``graph``: ``tts/train/wg_static.py``), alone and combined.

Run on the GPU machine: ``source tools/gpu/env.sh; python3 tools/gpu/wg_train_speed.py``
(options: ``--variants eager,amp,graph,graph+amp,compile+amp --batch 24 --steps 40``).

The bundled voice's WaveGlow (``tts.train.tasks.MODEL_CONFIGS["waveglow"]``) trains on a
synthetic corpus (harmonic tones with noise, 4 s each, written to /tmp in-process; no
Festival), each variant from the same initial weights and the same batches. Reported per
variant: seconds per step (median after the first ``--skip`` steps, which include compilation),
the seconds of those first steps, the loss at the first and last step, peak memory. Writes
``$OUT/wg_train_speed.json`` after every variant.

``--pick FILE`` writes the settings (``{"amp": ..., "compile": ..., "graph": ...}``; ``graph`` is the
trainer's ``--graph``, the others are task settings) of the fastest variant
whose losses stay finite and, over the first 10 steps, within ``--tolerance`` (0.02) + 2 % of
the float32 eager run's, for
``gpu.sh cont waveglow``; the eager float32 step when nothing else qualifies.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from tts.train.corpus import Corpus, Utterance, write_shard
from tts.train.t2_static import make_optimizer
from tts.train.tasks import make_task
from tts.train.trainer import train_step


def build_corpus(root: Path, n: int, seed: int = 0) -> Corpus:
    if not (root / "shard_000" / "DONE").is_file():
        rng = np.random.default_rng(seed)
        t = np.arange(4 * 22050) / 22050.0
        utts = []
        for k in range(n):
            f0 = rng.uniform(120, 260)
            wave = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 12))
            wave = 0.2 * wave / np.abs(wave).max() + 0.01 * rng.standard_normal(t.size)
            audio = (wave * 32767).astype(np.int16)
            utts.append(Utterance(uid=f"s{k}", text="x", symbols="x", ids=[1], durations=[345],
                                  audio=audio, mel=np.zeros((345, 80), np.float16)))
        write_shard(root / "shard_000", utts, {"utterances": n})
    return Corpus(root)


def run(variant: str, batch: int, steps: int, skip: int, corpus: Corpus, seed: int) -> dict:
    dev = torch.device("cuda")
    task = make_task("waveglow", dict(batch_size=batch, amp="amp" in variant,
                                      compile="compile" in variant))
    pool = task.usable(corpus)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = task.build_model().to(dev).train()
    graph = "graph" in variant
    opt = make_optimizer(model, task.settings, dev, capturable=graph)
    stepper = task.make_graph_step(model, opt, corpus, pool, dev, True) if graph else None
    torch.cuda.reset_peak_memory_stats(dev)
    times, loss_curve = [], []
    for step in range(steps):
        torch.cuda.synchronize(dev)
        t = time.perf_counter()
        logs = train_step(task, model, opt, stepper, corpus, pool, rng, dev, step)
        torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t)
        loss_curve.append(float(logs["loss"]))
    steady = times[skip:]
    res = {"variant": variant, "batch": batch, "steps": steps,
           "s_per_step_median": statistics.median(steady) if steady else None,
           "first_steps_seconds": round(sum(times[:skip]), 2),
           "loss_first": loss_curve[0], "loss_last": loss_curve[-1],
           "loss": [round(x, 4) for x in loss_curve],
           "peak_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)}
    del opt, model, task, stepper
    gc.collect()
    torch.cuda.empty_cache()
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="eager,amp,compile+amp,graph,graph+amp,graph+compile+amp")
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--skip", type=int, default=5)
    ap.add_argument("--utterances", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--pick", default=None, help="write the chosen settings JSON here")
    ap.add_argument("--tolerance", type=float, default=0.02,
                    help="absolute loss difference allowed (plus 2 %%) over the first 10 steps")
    args = ap.parse_args()
    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    corpus = build_corpus(Path("/tmp/wg_speed_corpus"), args.utterances)
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "batch": args.batch, "segment_length": 16000, "runs": [], "errors": []}
    for variant in args.variants.split(","):
        try:
            r = run(variant, args.batch, args.steps, args.skip, corpus, args.seed)
            report["runs"].append(r)
            print(f"{variant:12s} b={args.batch}: {r['s_per_step_median'] * 1e3:.1f} ms/step, first "
                  f"{args.skip} steps {r['first_steps_seconds']} s, loss {r['loss_first']:.3f} -> "
                  f"{r['loss_last']:.3f}, peak {r['peak_gib']} GiB", flush=True)
        except Exception as e:  # noqa: BLE001 - recorded, the next variant runs
            report["errors"].append(f"{variant}: {e!r}\n" + traceback.format_exc()[-3000:])
            print(report["errors"][-1], file=sys.stderr, flush=True)
            gc.collect()
            torch.cuda.empty_cache()
        (out / "wg_train_speed.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    if args.pick:
        chosen = pick(report["runs"], args.tolerance)
        report["picked"] = chosen
        Path(args.pick).write_text(json.dumps(chosen), encoding="utf-8")
        (out / "wg_train_speed.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
        print("picked", json.dumps(chosen), flush=True)
    return 0


def pick(runs: list[dict], tolerance: float) -> dict:
    """Settings of the fastest run whose losses track the float32 eager run's."""
    base = next((r for r in runs if r["variant"] == "eager"), None)
    best = {"amp": False, "compile": False, "graph": False}
    if base is None:
        return best
    best_s = base["s_per_step_median"]
    for r in runs:
        ok = (all(np.isfinite(r["loss"])) and
              all(abs(a - b) <= tolerance + 0.02 * abs(b) for a, b in zip(r["loss"][:10], base["loss"])))
        if ok and r["s_per_step_median"] < best_s:
            best_s = r["s_per_step_median"]
            best = {k: k in r["variant"] for k in ("amp", "compile", "graph")}
    return best


if __name__ == "__main__":
    sys.exit(main())
