"""Tacotron2 encoder (and postnet) speed on CUDA: every ``Tacotron2Engine`` encoder path vs the eager model.

Random-weight NGC-size Tacotron2; batch 1 and 8 at 128 characters; CUDA-event times (median of
50 after warm-up, graph capture included in the warm-up) of ``engine.encode`` as callers see it
(copy-in, replay, copy-out), and of the bare graph replay; max abs error vs the eager fp32 model on
the timed batch and on a batch of mixed lengths (T_in 117, off the bucket multiple). Then the
postnet (580 frames) eager vs graph. Run: ``source tools/gpu/env.sh; python3 tools/gpu/encoder_speed.py``
(well under 2 minutes on an H100).
"""
import copy
import statistics
import sys
import time
import traceback

import torch

from tts.engines.tacotron2 import Tacotron2Engine
from tts.models.tacotron2 import Tacotron2

dev = torch.device("cuda")
N, WARM = 50, 5
MODES = ("packed", "cudnn", "cudnn2", "cudnn2s", "loop", "triton")


def cuda_time(fn, n=N, warm=WARM):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def err(a, b):
    return float((a.float() - b.float()).abs().max())


def batch(lengths, t_in, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 148, (len(lengths), t_in), generator=g)
    for i, n in enumerate(lengths):
        ids[i, n:] = 0
    return ids.to(dev), torch.tensor(lengths, device=dev)


t_start = time.perf_counter()
print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
torch.manual_seed(0)
t2 = Tacotron2().to(dev).eval()
t2h = copy.deepcopy(t2).half()
cases = {bs: batch([128] * bs, 128, bs) for bs in (1, 8)}
mixed = batch([117, 1, 64, 100, 33, 116, 5, 90], 117, 99)
with torch.no_grad():
    refs = {bs: t2.encode(*cases[bs]) for bs in cases}
    ref_mixed = t2.encode(*mixed)

rows = []
for bs, (ids, lens) in cases.items():
    for name, m in (("eager fp32", t2), ("eager fp16", t2h)):
        with torch.no_grad():
            ms = cuda_time(lambda: m.encode(ids, lens))
            e = err(m.encode(ids, lens), refs[bs])
        rows.append((bs, name, ms, None, e, None))
        print(f"B={bs} {name:<22} {ms:7.3f} ms                 err {e:.2e}", flush=True)

engines = {p: Tacotron2Engine(t2, device=dev, precision=p, encoder="packed", postnet="graph")
           for p in ("fp16", "fp32")}
for prec, eng in engines.items():
    for mode in MODES:
        eng.encoder = mode
        for bs, (ids, lens) in cases.items():
            label = f"engine {prec} {mode}"
            try:
                out = eng.encode(ids, lens)
                e = err(out, refs[bs])
                ms = cuda_time(lambda: eng.encode(ids, lens))
                replay = None
                if mode != "packed":
                    run = next(reversed(eng._runs.values()))      # the bucket just used (LRU order)
                    replay = cuda_time(run.graph.replay)
                em = err(eng.encode(*mixed), ref_mixed)
                rows.append((bs, label, ms, replay, e, em))
                rp = f"replay {replay:6.3f} ms" if replay is not None else " " * 16
                print(f"B={bs} {label:<22} {ms:7.3f} ms  {rp}  err {e:.2e}  mixed-length err {em:.2e}",
                      flush=True)
            except Exception as exc:  # noqa: BLE001 - report and go on with the other paths
                traceback.print_exc(limit=3)
                print(f"B={bs} {label:<22} FAILED {exc!r}"[:400], flush=True)
                rows.append((bs, label, float("nan"), None, float("nan"), float("nan")))
        if time.perf_counter() - t_start > 100:
            print("time budget: stopping early", flush=True)
            break

print("\npostnet (580 frames):", flush=True)
for bs in (1, 8):
    mel = torch.randn(bs, 80, 580, device=dev) - 4
    with torch.no_grad():
        ref = t2.postnet_forward(mel)
    for prec, eng in engines.items():
        for mode in ("eager", "graph"):
            eng.postnet_mode = mode
            try:
                out = eng.postnet_forward(mel)
                ms = cuda_time(lambda: eng.postnet_forward(mel))
                print(f"B={bs} postnet {prec} {mode:<6} {ms:7.3f} ms  err {err(out, ref):.2e}", flush=True)
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc(limit=3)
                print(f"B={bs} postnet {prec} {mode} FAILED {exc!r}"[:400], flush=True)
    with torch.no_grad():
        ms = cuda_time(lambda: t2h.postnet_forward(mel.half()))
    print(f"B={bs} postnet eager model fp16 {ms:7.3f} ms", flush=True)

print("\nfastest fp16 encoder per batch:")
for bs in (1, 8):
    cand = [r for r in rows if r[0] == bs and r[1].startswith("engine fp16") and r[2] == r[2]]
    if cand:
        best = min(cand, key=lambda r: r[2])
        print(f"  B={bs}: {best[1]} {best[2]:.3f} ms (err {best[4]:.2e}, mixed {best[5]:.2e})")
print(f"total {time.perf_counter() - t_start:.0f} s", file=sys.stderr)
