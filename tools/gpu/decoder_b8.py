"""Batch-8 decoder step: v2 tile sets x programmatic dependent launch (PDL) on the GPU.

    source tools/gpu/env.sh; python3 tools/gpu/decoder_b8.py

Random-weight NGC-size Tacotron2, fp16, CUDA graphs of 16 steps, 580 forced steps, batch 8
(128 input positions). One engine; each variant sets ``TTS_DECODER_TILES`` (the whole batch-8 tile
dict of ``decoder_tiles``, changed keys on top) and the engine's ``pdl``, drops the captured
buckets and captures anew. Per variant:

- ``decode_us``: ``engine.decode`` (dropout 0.5) per step (580), CUDA events, median of REPS;
- ``wall_us``: the same calls timed as ``tts-bench`` does (perf_counter + sync), mean;
- ``replay_us``: the graph alone, 37 replays (592 steps) per step, median of REPS;
- ``mel_err``: mel max abs difference vs the current default tiles with PDL off, dropout 0, 580 steps.

Stages (a time budget, B8_BUDGET_S = 180 s from the start, skips what is left; a failing variant
prints its error and the rest go on):

1. batch 1 default tiles, PDL 1 (sanity: the kernel file changed; was 29.3 us);
2. batch 8 LSTM configs under PDL 1 (default, no split-K, deeper split-K, larger row tiles,
   ``dot=2`` (transposed tensor-core product, new), the FMA path of 16 us, 8 warps, static loop);
3. greedy over the other batch-8 tiles (loc_bt, ctx, query, proj, pdl_pre) with the best LSTM;
4. torch.profiler of one graph replay for the default (PDL off / on) and the best: per-kernel
   time per step and their sum vs the replay time (are there gaps left at batch 8?).

Last line: ``BEST {...}``: the batch-8 tile dict to make the default (engines/tacotron2.py,
``decoder_tiles``, the ``elif dtype == torch.float16`` branch) and its PDL mode.
Results as JSON to $OUT/decoder_b8.json (or ./decoder_b8.json without $OUT).
"""
import json
import os
import sys
import time
import traceback

import torch

from tts.engines import tacotron2 as E
from tts.models.tacotron2 import Tacotron2

T_START = time.time()
BUDGET_S = float(os.environ.get("B8_BUDGET_S", "180"))
STEPS = 580
REPS = int(os.environ.get("B8_REPS", "8"))
MEL_OK = 1e-3          # mel max abs diff vs the default (dropout 0, 580 steps) for a variant to count

dev = torch.device("cuda")
torch.backends.cuda.matmul.allow_tf32 = False
torch.manual_seed(0)
t2 = Tacotron2().to(dev).eval()
cap = torch.cuda.get_device_capability()
os.environ.pop("TTS_DECODER_TILES", None)
os.environ.pop("TTS_DECODER_PDL", None)
BASE8 = E.decoder_tiles(8, torch.float16)        # the code's batch-8 defaults
BASE1 = E.decoder_tiles(1, torch.float16)
results = {"device": torch.cuda.get_device_name(), "capability": list(cap), "torch": torch.__version__,
           "steps": STEPS, "reps": REPS, "base8": BASE8, "variants": [], "profile": {}}
try:
    import triton
    results["triton"] = triton.__version__
except Exception:  # noqa: BLE001
    pass
print(f"{results['device']} sm_{cap[0]}{cap[1]}, torch {torch.__version__}, triton {results.get('triton')}; "
      f"batch-8 defaults {json.dumps(BASE8)}", flush=True)

eng = E.Tacotron2Engine(t2, device=dev, precision="fp16", backend="triton", pdl=1)
PDL_OK = eng.pdl == 1
if not PDL_OK:
    print(f"PDL not available here (engine pdl={eng.pdl}): PDL variants run with pdl=0", flush=True)
INPUTS, ENC = {}, {}
for bs in (1, 8):
    g = torch.Generator().manual_seed(1)
    INPUTS[bs] = (torch.randint(1, 148, (bs, 128), generator=g).to(dev), torch.full((bs,), 128, device=dev))
    ENC[bs] = eng.encode(*INPUTS[bs])
REF = {}


def left():
    return BUDGET_S - (time.time() - T_START)


def median(xs):
    return sorted(xs)[len(xs) // 2]


def tiles_for(bs, over):
    d = dict(BASE8 if bs > 2 else BASE1)
    for k, v in (over or {}).items():
        d[k] = dict(d["lstm"], **v) if k == "lstm" else v
    return d


def run(name, bs, over=None, pdl=1, profile=False):
    """One variant: returns its result dict (also appended to results["variants"])."""
    mode = pdl if PDL_OK else 0
    tiles = tiles_for(bs, over)
    rec = {"name": name, "batch": bs, "pdl": mode, "over": over or {}, "tiles": tiles}
    t0 = time.time()
    try:
        os.environ["TTS_DECODER_TILES"] = json.dumps(tiles)
        eng.pdl = mode
        eng._buckets.clear()
        enc, lengths = ENC[bs], INPUTS[bs][1]
        kw = dict(max_decoder_steps=STEPS, early_stopping=False)
        eng.decode(enc, lengths, prenet_dropout=0.0, **kw)               # capture
        mel = eng.decode(enc, lengths, prenet_dropout=0.0, **kw).mel     # replay
        rec["finite"] = bool(torch.isfinite(mel).all())
        if bs not in REF:
            REF[bs] = mel.clone()
        rec["mel_err"] = float((mel - REF[bs]).abs().max())
        f = lambda: eng.decode(enc, lengths, prenet_dropout=0.5, **kw)  # noqa: E731
        f(); f(); torch.cuda.synchronize()
        ev, wall = [], []
        for _ in range(REPS):
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            w0 = time.perf_counter()
            e0.record(); f(); e1.record(); e1.synchronize()
            wall.append(time.perf_counter() - w0)
            ev.append(e0.elapsed_time(e1))
        rec["decode_us"] = median(ev) / STEPS * 1e3
        rec["wall_us"] = sum(wall) / len(wall) / STEPS * 1e6
        buf = next(b for k, b in eng._buckets.items() if k[2] == 0.5)
        n_rep = -(-STEPS // eng.steps_per_replay)

        @torch.inference_mode()
        def replays():
            buf.step.zero_()
            for _ in range(n_rep):
                buf.graph.replay()
        replays(); torch.cuda.synchronize()
        rt = []
        for _ in range(REPS):
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record(); replays(); e1.record(); e1.synchronize()
            rt.append(e0.elapsed_time(e1))
        rec["replay_us"] = median(rt) / (n_rep * eng.steps_per_replay) * 1e3
        if profile:
            try:
                rec["profile"] = profile_replay(buf)
            except Exception as exc:  # noqa: BLE001
                print(f"      profile failed: {exc!r}"[:300], flush=True)
        print(f"  b{bs} {name:28s} pdl={mode} decode {rec['decode_us']:6.2f} wall {rec['wall_us']:6.2f} replay "
              f"{rec['replay_us']:6.2f} us/step; mel vs default {rec['mel_err']:.3g}"
              f"{'' if rec['finite'] else ' NON-FINITE'} ({time.time() - t0:.0f} s) {json.dumps(over or {})}",
              flush=True)
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        rec["error"] = repr(exc)[:500]
        print(f"  b{bs} {name}: FAILED {exc!r}"[:300], flush=True)
    finally:
        os.environ.pop("TTS_DECODER_TILES", None)
    results["variants"].append(rec)
    return rec


@torch.inference_mode()
def profile_replay(buf):
    """Per-kernel device time of one 16-step replay (us per step) and the replay's span."""
    from torch.profiler import ProfilerActivity, profile
    buf.step.zero_()
    buf.graph.replay(); torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        buf.step.zero_()
        buf.graph.replay()
        torch.cuda.synchronize()
    evs = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    k = eng.steps_per_replay
    per = {}
    for e in evs:
        per.setdefault(e.name[:40], []).append(e.time_range.end - e.time_range.start)
    out = {n: {"us_per_step": sum(v) / k, "launches_per_step": len(v) / k} for n, v in per.items()}
    starts = [e.time_range.start for e in evs]
    ends = [e.time_range.end for e in evs]
    span = (max(ends) - min(starts)) / k if evs else float("nan")
    tot = sum(v["us_per_step"] for v in out.values())
    for n, v in sorted(out.items(), key=lambda x: -x[1]["us_per_step"]):
        print(f"      {n:40s} {v['us_per_step']:6.2f} us/step ({v['launches_per_step']:.0f}/step)", flush=True)
    print(f"      sum of kernel times {tot:.2f} us/step, span {span:.2f} us/step "
          f"(sum > span: kernels overlap; span > sum: gaps)", flush=True)
    return {"kernels": out, "sum_us": tot, "span_us": span}


def ok(r):
    return "decode_us" in r and r.get("finite") and r.get("mel_err", 1.0) <= MEL_OK


# ---- 1. batch 1 sanity (kernel file changed); 2. batch 8 baseline and LSTM configs
print("== batch 1 (default tiles)", flush=True)
run("b1 default", 1, None, pdl=1)
print("== batch 8: LSTM configs (PDL 1 unless noted)", flush=True)
base_off = run("default", 8, None, pdl=0)
base = run("default", 8, None, pdl=1)
LSTM = [   # (name, lstm keys over the default dict(bh=8, bk=128, split=2, num_warps=4, dot=True, static=False))
    ("dot2 (transposed)", dict(dot=2)),
    ("no split-K", dict(split=1)),
    ("dot2 bh16", dict(dot=2, bh=16)),
    ("bh16", dict(bh=16)),
    ("split4", dict(split=4)),
    ("dot2 bh16 split4", dict(dot=2, bh=16, split=4)),
    ("dot2 no split-K", dict(dot=2, split=1)),
    ("FMA bh2 bk128 static", dict(dot=False, bh=2, bk=128, split=1, static=True)),
    ("8 warps", dict(num_warps=8)),
    ("bk256", dict(bk=256)),
    ("static loop", dict(static=True)),
    ("dot2 bh16 8 warps", dict(dot=2, bh=16, num_warps=8)),
    ("bh4 bk256", dict(bh=4, bk=256)),
    ("FMA bh2 bk128 split2", dict(dot=False, bh=2, bk=128, split=2)),
    ("dot2 bh16 split4 static", dict(dot=2, bh=16, split=4, static=True)),
    ("dot2 bk256 2 warps", dict(dot=2, bk=256, num_warps=2)),
]
RESERVE = 30     # seconds kept for stage 3/4 and the summary
for name, lk in LSTM:
    if left() < RESERVE + 8:
        print(f"  b8 {name}: skipped (time budget)", flush=True)
        results["variants"].append({"name": name, "batch": 8, "over": {"lstm": lk}, "skipped": "time budget"})
        continue
    run(name, 8, {"lstm": lk}, pdl=1)

cands = [r for r in results["variants"] if r["batch"] == 8 and ok(r)]
best = min(cands, key=lambda r: r["decode_us"]) if cands else base
# the best LSTM without PDL too (does PDL help it?)
if best is not base and left() > RESERVE:
    run(best["name"] + " (PDL off)", 8, best["over"], pdl=0)

# ---- 3. greedy over the other batch-8 tiles with the best LSTM
print("== batch 8: other tiles on top of " + json.dumps(best["over"]), flush=True)
OTHER = [dict(pdl_pre=2), dict(loc_bt=4), dict(loc_bt=16), dict(ctx=[16, 128]), dict(ctx=[64, 128]),
         dict(query=[2, 512]), dict(proj=[2, 512])]
for o in OTHER:
    if left() < 20:
        print(f"  b8 {json.dumps(o)}: skipped (time budget)", flush=True)
        continue
    over = dict(best["over"], **o)
    r = run("+" + ",".join(o), 8, over, pdl=best["pdl"] or 1)
    if ok(r) and r["decode_us"] < best["decode_us"] - 0.15:
        best = r

# ---- 4. where the time goes at batch 8
print("== profiles (one replay of 16 steps)", flush=True)
for name, r in (("default, PDL off", base_off), ("default, PDL 1", base), ("best", best)):
    if left() < 8 or "error" in r or r.get("skipped"):
        print(f"  {name}: skipped", flush=True)
        continue
    try:
        print(f"  {name}: {json.dumps(r['over'])} pdl={r['pdl']}", flush=True)
        results["profile"][name] = run(name + " (profiled)", 8, r["over"], pdl=r["pdl"], profile=True).get("profile")
    except Exception as exc:  # noqa: BLE001
        print(f"  {name}: profile failed {exc!r}"[:300], flush=True)

results["wall_s"] = time.time() - T_START
b = dict(best["tiles"])
results["best"] = {"name": best["name"], "pdl": best["pdl"], "tiles": b, "decode_us": best.get("decode_us"),
                   "replay_us": best.get("replay_us"), "wall_us": best.get("wall_us"),
                   "default_pdl1_decode_us": base.get("decode_us"), "default_pdl0_decode_us": base_off.get("decode_us")}
out_dir = os.environ.get("OUT") or "."
try:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "decoder_b8.json"), "w") as fh:
        json.dump(results, fh, indent=1)
except Exception as exc:  # noqa: BLE001
    print(f"could not write decoder_b8.json: {exc!r}", flush=True)
print(f"total {results['wall_s']:.0f} s", flush=True)
print("SUMMARY " + json.dumps([{k: (round(v, 2) if isinstance(v, float) and k != "mel_err" else v)
                                for k, v in r.items() if k in ("name", "batch", "pdl", "decode_us", "wall_us",
                                                               "replay_us", "mel_err", "error", "skipped")}
                               for r in results["variants"]]), flush=True)
print(f"BEST {json.dumps({'pdl': best['pdl'], 'tiles': b, 'decode_us': best.get('decode_us'), 'name': best['name']})}",
      flush=True)
sys.exit(0)
