"""Tacotron2 training speed: the eager step against the static-shape CUDA-graphed step.

Run on the GPU machine: ``source tools/gpu/env.sh; python3 tools/gpu/t2_train_speed.py``
(options: ``--batches 64,128 --steps 20 --graph-steps 30 --budget 210``).

A synthetic corpus (random log-mels and symbol ids of LJSpeech-like lengths, 150-900 frames,
3-6 frames per symbol) is written to /tmp in-process; no Festival. For each batch size:

- eager: ``--steps`` steps of the trainer's eager step;
- graph: ``--graph-steps`` steps of ``Tacotron2GraphStep`` (capture=True; the first
  ``graph_warmup`` steps eager, then one capture per new shape bucket, then replays).

Both draw the same batches (same seed) with dropout off (``F.dropout`` replaced by the
identity, so the two loss curves can be compared step by step; the time of the dropout kernels
is missing from both). Reported: seconds per step (median over steady steps: eager after its
first two, graph over pure replays), capture count and seconds, peak memory, loss at step 1
and at step ``--steps`` for both. Prints a summary and writes ``$OUT/t2_train_speed.json``
(after every run, so a time-out keeps what finished). If capturing with the cuDNN encoder LSTM
fails, the graph run is repeated with ``graph_lstm="loop"`` and the error kept.
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
import torch.nn.functional as F

from tts.train.corpus import Corpus, Utterance, write_shard
from tts.train.tasks import make_task
from tts.train.trainer import train_step

T0 = time.monotonic()


def build_corpus(root: Path, n: int, seed: int = 0) -> Corpus:
    if not (root / "shard_000" / "DONE").is_file():
        rng = np.random.default_rng(seed)
        utts = []
        for k in range(n):
            frames = int(rng.integers(150, 901))
            n_sym = max(8, frames // int(rng.integers(3, 7)))
            dur = np.full(n_sym, frames // n_sym)
            dur[: frames - int(dur.sum())] += 1
            ids = rng.integers(1, 148, size=n_sym).tolist()
            mel = (rng.standard_normal((frames, 80)) * 1.5 - 5.0).astype(np.float16)
            utts.append(Utterance(uid=f"s{k}", text="x" * n_sym, symbols="x" * n_sym, ids=ids,
                                  durations=dur.tolist(), audio=np.zeros(256, np.int16), mel=mel))
        write_shard(root / "shard_000", utts, {"utterances": n})
    return Corpus(root)


def run(mode: str, batch: int, steps: int, corpus: Corpus, seed: int, lstm: str = "cudnn") -> dict:
    from tts.train import t2_static
    dev = torch.device("cuda")
    task = make_task("tacotron2", dict(batch_size=batch, graph_lstm=lstm))
    pool = task.usable(corpus)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = task.build_model()
    task.init_from_corpus(model, corpus, pool)
    model = model.to(dev).train()
    capture = mode == "graph"
    opt = (t2_static.make_optimizer(model, task.settings, dev, capturable=True) if capture else
           torch.optim.Adam(model.parameters(), lr=task.settings["lr"],
                            weight_decay=task.settings["weight_decay"]))
    stepper = task.make_graph_step(model, opt, corpus, pool, dev, True) if capture else None
    torch.cuda.reset_peak_memory_stats(dev)
    times, kinds, loss_curve = [], [], []
    for step in range(steps):
        torch.cuda.synchronize(dev)
        t = time.perf_counter()
        before = (stepper.n_eager, stepper.n_captures) if stepper is not None else None
        logs = train_step(task, model, opt, stepper, corpus, pool, rng, dev, step)
        kinds.append("eager" if before is None or stepper.n_eager > before[0] else
                     "capture" if stepper.n_captures > before[1] else "replay")
        torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t)
        loss_curve.append(float(logs["loss"]))
    steady = [t for t, k in zip(times, kinds) if k == "replay"] if capture else times[2:]
    res = {"mode": mode, "batch": batch, "steps": steps, "lstm": lstm,
           "s_per_step_median": statistics.median(steady) if steady else None,
           "steady_steps": len(steady), "kinds": kinds, "step_seconds": [round(t, 4) for t in times],
           "captures": stepper.n_captures if stepper else 0,
           "capture_seconds": round(sum(t for t, k in zip(times, kinds) if k == "capture"), 2),
           "buckets": sorted(map(list, stepper.graphs)) if stepper else None,
           "total_seconds": round(sum(times), 2), "loss": loss_curve,
           "peak_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)}
    del stepper, opt, model
    gc.collect()
    torch.cuda.empty_cache()
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="64,128")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--graph-steps", type=int, default=30)
    ap.add_argument("--utterances", type=int, default=1500)
    ap.add_argument("--budget", type=float, default=210.0, help="skip runs that would start later")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    F.dropout = lambda x, p=0.5, training=True, inplace=False: x  # type: ignore[assignment]
    corpus = build_corpus(Path("/tmp/t2_speed_corpus"), args.utterances)
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "utterances": len(corpus), "dropout": "off (identity)", "runs": [], "errors": []}

    def save() -> None:
        (out / "t2_train_speed.json").write_text(json.dumps(report, indent=1), encoding="utf-8")

    for b in (int(x) for x in args.batches.split(",")):
        for mode, steps in (("eager", args.steps), ("graph", args.graph_steps)):
            if time.monotonic() - T0 > args.budget:
                report["errors"].append(f"skipped {mode} batch {b}: budget")
                continue
            for lstm in (("cudnn", "loop") if mode == "graph" else ("cudnn",)):
                try:
                    r = run(mode, b, steps, corpus, args.seed, lstm)
                    report["runs"].append(r)
                    print(f"{mode:5s} b={b:3d} lstm={lstm}: {r['s_per_step_median']} s/step "
                          f"(median of {r['steady_steps']}), captures {r['captures']} "
                          f"({r['capture_seconds']} s), total {r['total_seconds']} s, "
                          f"loss {r['loss'][0]:.4f} -> {r['loss'][min(args.steps, steps) - 1]:.4f}, "
                          f"peak {r['peak_gib']} GiB", flush=True)
                    save()
                    break
                except Exception as e:  # noqa: BLE001 - recorded, then the fallback
                    report["errors"].append(f"{mode} b={b} lstm={lstm}: {e!r}\n"
                                            + traceback.format_exc()[-3000:])
                    print(report["errors"][-1], file=sys.stderr, flush=True)
                    gc.collect()
                    torch.cuda.empty_cache()
                    save()
    summary = {}
    for b in {r["batch"] for r in report["runs"]}:
        e = next((r for r in report["runs"] if r["batch"] == b and r["mode"] == "eager"), None)
        g = next((r for r in report["runs"] if r["batch"] == b and r["mode"] == "graph"), None)
        if e and g and e["s_per_step_median"] and g["s_per_step_median"]:
            n = min(len(e["loss"]), len(g["loss"]))
            summary[str(b)] = {"eager_s": e["s_per_step_median"], "graph_s": g["s_per_step_median"],
                               "speedup": round(e["s_per_step_median"] / g["s_per_step_median"], 2),
                               f"loss_at_{n}": [e["loss"][n - 1], g["loss"][n - 1]],
                               "max_rel_loss_diff": max(abs(a - c) / abs(a) for a, c in
                                                        zip(e["loss"][:n], g["loss"][:n]))}
    report["summary"] = summary
    report["wall_seconds"] = round(time.monotonic() - T0, 1)
    save()
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
