"""Per-kernel tile sweep of the decoder step (batch 8, and batch 1 where it matters), then whole decodes.

    source tools/gpu/env.sh; python3 tools/gpu/decoder_kernels.py      (results: $OUT/decoder_kernels.json)

Random-weight NGC-size Tacotron2, fp16, 128 input positions. Each kernel alone, N launches in one
CUDA graph, no PDL, median of 7 replays: us per launch (the LSTMs as an attention + decoder pair,
35.7 MB of weights, so neither stays in L2). Then ``engine.decode`` (580 forced steps, dropout
0.5, CUDA events) with the default tiles and with the best tile of every kernel combined (exact
options only; then also with ``xlo`` False, x rounded to float16 in the LSTM products), in
interleaved rounds; mel difference to the default at dropout 0.
Last line: ``BEST8 {...}``, the batch-8 tile dict to make the default.
"""
import json
import os
import statistics
import time
import traceback

import torch
from graphtime import graph_time

from tts.engines import tacotron2 as E
from tts.models.tacotron2 import Tacotron2
from tts.plugins import decoder as K

T0 = time.time()
BUDGET = float(os.environ.get("DK_BUDGET_S", "420"))
OUTF = os.path.join(os.environ.get("OUT", "."), "decoder_kernels.json")
dev = torch.device("cuda")
torch.manual_seed(0)
t2 = Tacotron2().to(dev).eval()
eng = E.Tacotron2Engine(t2, device=dev, precision="fp16", backend="triton")
w = eng.w
R = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "kernels": {}, "decode": {}}
BASE = {8: E.decoder_tiles(8, torch.float16), 1: E.decoder_tiles(1, torch.float16)}
R["base"] = {str(k): v for k, v in BASE.items()}
print(R["device"], torch.__version__, "pdl", eng.pdl, flush=True)


def left():
    return BUDGET - (time.time() - T0)


def save():
    with open(OUTF, "w") as f:
        json.dump(R, f, indent=1)


def sweep(kname, bs, variants, make, n=50):
    """variants: list of (label, kwargs); make(kwargs) -> fn. Records us per launch."""
    out = R["kernels"].setdefault(f"{kname}/b{bs}", [])
    for label, kw in variants:
        if left() < 150:
            print(f"  (time budget: {kname} b{bs} {label} skipped)", flush=True)
            continue
        try:
            us = graph_time(make(kw), n, reps=7)
            out.append({"label": label, "kw": kw, "us": us})
            print(f"  {kname:8s} b{bs} {label:28s} {us:6.2f} us", flush=True)
        except Exception as exc:  # noqa: BLE001
            out.append({"label": label, "kw": kw, "error": repr(exc)[:300]})
            print(f"  {kname} b{bs} {label}: FAILED {exc!r}"[:300], flush=True)
    save()
    ok = [r for r in out if "us" in r]
    return min(ok, key=lambda r: r["us"]) if ok else None


def rnd(*shape, dt=torch.float32, scale=1.0):
    return (torch.rand(*shape, device=dev) * scale).to(dt)


T = 128
bufs = {}
for bs in (8, 1):
    bufs[bs] = dict(frame=rnd(bs, 80), pre1=rnd(bs, 256), pre2=rnd(bs, 256), ah=rnd(2, bs, 1024), dh=rnd(2, bs, 1024),
                    ac=torch.zeros(bs, 1024, device=dev), dc=torch.zeros(bs, 1024, device=dev), ctx=rnd(bs, 512),
                    pq=torch.randn(bs, 128, device=dev), aw=torch.softmax(torch.randn(bs, T, device=dev), 1),
                    acum=rnd(bs, T, scale=3.0), pm=torch.randn(bs, T, 128, device=dev).half(),
                    mem=torch.randn(bs, T, 512, device=dev).half(), energy=torch.randn(bs, T, device=dev),
                    lens=torch.full((bs,), T, dtype=torch.int32, device=dev), seed=torch.tensor([7], device=dev),
                    step=torch.zeros(1, dtype=torch.int64, device=dev), align=torch.zeros(bs, 640, T, device=dev),
                    mel=torch.zeros(bs, 640, 80, device=dev), gate=torch.zeros(bs, 640, device=dev),
                    nf=torch.ones(bs, dtype=torch.int32, device=dev), ml=torch.zeros(bs, dtype=torch.int32, device=dev),
                    eout=torch.empty(bs, T, device=dev))

best = {8: {}, 1: {}}
for bs in (8, 1):
    B = bufs[bs]
    print(f"== batch {bs}", flush=True)
    # location energy
    locv = [("v2 bt4", dict(k=2, bt=4)), ("v2 bt8", dict(k=2, bt=8)), ("v3 bt16", dict(k=3, bt=16)),
            ("v3 bt32", dict(k=3, bt=32)), ("v3 bt64", dict(k=3, bt=64)), ("v3 bt16 w2", dict(k=3, bt=16, nw=2)),
            ("v3 bt32 w8", dict(k=3, bt=32, nw=8)), ("v3 bt128 w8", dict(k=3, bt=128, nw=8))]

    def mk_loc(kw, B=B):
        f = K.location_energy3 if kw["k"] == 3 else K.location_energy2
        return lambda: f(B["pq"], w.loc_w, B["aw"], B["acum"], B["pm"], w.v, B["lens"], B["eout"], bt=kw["bt"],
                         num_warps=kw.get("nw", 4))
    ref = torch.empty(bs, T, device=dev)
    K.location_energy_ref(B["pq"], w.loc_w, B["aw"], B["acum"], B["pm"], w.v, B["lens"], ref)
    for _, kw in locv[:3]:
        try:
            mk_loc(kw)(); print(f"  loc {kw} max err vs twin {float((B['eout'] - ref).abs().max()):.3g}", flush=True)
        except Exception as exc:  # noqa: BLE001
            print(f"  loc {kw} FAILED {exc!r}"[:300], flush=True)
    best[bs]["loc"] = sweep("loc", bs, locv, mk_loc)
    if bs == 1:
        continue
    # LSTM pair
    lbase = BASE[bs]["lstm"]
    lv = [("default", {}), ("bb8", dict(bb=8)), ("xlo off", dict(xlo=False)), ("bb8 xlo off", dict(bb=8, xlo=False)),
          ("bb8 bh8 split2", dict(bb=8, bh=8, split=2)), ("bb8 bh8 split4", dict(bb=8, bh=8, split=4)),
          ("bb8 split3", dict(bb=8, split=3)), ("bb8 split5", dict(bb=8, split=5)),
          ("bb8 bk64", dict(bb=8, bk=64)), ("bb8 bk256", dict(bb=8, bk=256)),
          ("bb8 bh32", dict(bb=8, bh=32)), ("bb8 stages4", dict(bb=8, num_stages=4)),
          ("bb8 bh8 split2 xlo off", dict(bb=8, bh=8, split=2, xlo=False))]

    def mk_lstm(kw, B=B):
        cfg = dict(lbase, **kw)
        ws = K.lstm2_workspace(cfg.get("split", 1), 16, 1024, dev) if cfg.get("split", 1) > 1 else None

        def f():
            K.lstm_cell2((B["pre2"], B["ctx"], B["ah"][0]), w.att_w, w.att_b, B["ac"], B["ah"][1], ws=ws, **cfg)
            K.lstm_cell2((B["ah"][1], B["ctx"], B["dh"][0]), w.dec_w, w.dec_b, B["dc"], B["dh"][1], ws=ws, **cfg)
        return f
    r = sweep("lstm", bs, lv, mk_lstm, n=30)
    exact = [x for x in R["kernels"][f"lstm/b{bs}"] if "us" in x and x["kw"].get("xlo", True)]
    best[bs]["lstm"] = min(exact, key=lambda x: x["us"]) if exact else None
    best[bs]["lstm_any"] = r
    # query GEMV [B, 1024] -> 128, prenet GEMVs
    qv = [(f"bn{bn} bk{bk} w{nw}", dict(bn=bn, bk=bk, nw=nw)) for bn, bk, nw in
          ((1, 1024, 4), (2, 1024, 4), (1, 512, 4), (2, 512, 4), (4, 256, 4), (1, 1024, 8), (2, 1024, 8), (4, 1024, 8))]
    best[bs]["query"] = sweep("query", bs, qv, lambda kw, B=B: (lambda: K.linear_act(
        B["ah"][1], w.q_w, B["pq"], bn=kw["bn"], bk=kw["bk"], num_warps=kw["nw"])))
    pv = [(f"bn{bn} bk{bk}", dict(bn=bn, bk=bk)) for bn, bk in ((4, 256), (2, 256), (8, 256), (1, 256), (16, 256), (4, 128))]

    def mk_pre(kw, B=B):
        def f():
            K.linear_act(B["frame"], w.pre_w1, B["pre1"], relu=True, p=0.5, seed=B["seed"], step=B["step"], salt=0,
                         bn=kw["bn"], bk=kw["bk"])
            K.linear_act(B["pre1"], w.pre_w2, B["pre2"], relu=True, p=0.5, seed=B["seed"], step=B["step"], salt=1,
                         bn=kw["bn"], bk=kw["bk"])
        return f
    best[bs]["pre"] = sweep("prenet", bs, pv, mk_pre)
    # attention context
    cv = [(f"be{be} bt{bt} w{nw}", dict(be=be, bt=bt, nw=nw)) for be, bt, nw in
          ((16, 128, 4), (32, 128, 4), (64, 128, 4), (16, 64, 4), (32, 64, 4), (16, 32, 4), (16, 128, 2), (32, 128, 8),
           (64, 64, 8))]
    best[bs]["ctx"] = sweep("ctx", bs, cv, lambda kw, B=B: (lambda: K.attention_context(
        B["energy"], B["mem"], B["aw"], B["acum"], B["ctx"], B["align"], B["step"], 0, be=kw["be"], bt=kw["bt"],
        num_warps=kw["nw"])))
    # projection
    jv = [(f"bn{bn} bk{bk} w{nw}", dict(bn=bn, bk=bk, nw=nw)) for bn, bk, nw in
          ((1, 1024, 4), (2, 1024, 4), (4, 512, 4), (2, 512, 4), (1, 512, 4), (4, 256, 4), (8, 256, 4), (1, 1024, 8),
           (2, 1024, 8), (4, 1024, 8))]
    best[bs]["proj"] = sweep("proj", bs, jv, lambda kw, B=B: (lambda: K.projection(
        (B["dh"][1], B["ctx"]), w.proj_w, w.proj_b, B["frame"], B["mel"], B["gate"], B["nf"], B["ml"], 0.5,
        B["step"], 0, bn=kw["bn"], bk=kw["bk"], num_warps=kw["nw"])))
R["best"] = {str(k): v for k, v in best.items()}
save()


def tiles_from_best(bs, any_lstm=False):
    t = json.loads(json.dumps(BASE[bs]))
    b = best[bs]
    if b.get("loc"):
        t["loc_k"], t["loc_bt"] = b["loc"]["kw"]["k"], b["loc"]["kw"]["bt"]
    lk = "lstm_any" if any_lstm else "lstm"
    if b.get(lk):
        t["lstm"] = dict(t["lstm"], **b[lk]["kw"])
    if b.get("query"):
        kw = b["query"]["kw"]; t["query"] = [kw["bn"], kw["bk"], kw["nw"]]
    if b.get("pre"):
        kw = b["pre"]["kw"]; t["pre_tiles"] = [kw["bn"], kw["bk"]]
    if b.get("ctx"):
        kw = b["ctx"]["kw"]; t["ctx"] = [kw["be"], kw["bt"], kw["nw"]]
    if b.get("proj"):
        kw = b["proj"]["kw"]; t["proj"] = [kw["bn"], kw["bk"], kw["nw"]]
    return t


# ---------------------------------------------------------------- whole decode
INPUTS = {}
for bs in (8, 1):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 148, (bs, 128), generator=g).to(dev)
    lengths = torch.full((bs,), 128, device=dev)
    INPUTS[bs] = (eng.encode(ids, lengths), lengths)
STEPS = 580


def decode_us(bs, tiles, reps=5):
    os.environ["TTS_DECODER_TILES"] = json.dumps(tiles)
    try:
        eng._buckets.clear()
        enc, lengths = INPUTS[bs]
        kw = dict(max_decoder_steps=STEPS, early_stopping=False)
        eng.decode(enc, lengths, prenet_dropout=0.0, **kw)
        mel = eng.decode(enc, lengths, prenet_dropout=0.0, **kw).mel.clone()
        f = lambda: eng.decode(enc, lengths, prenet_dropout=0.5, **kw)  # noqa: E731
        f(); f(); torch.cuda.synchronize()
        ts = []
        for _ in range(reps):
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record(); f(); e1.record(); e1.synchronize()
            ts.append(e0.elapsed_time(e1) * 1e3 / STEPS)
        return statistics.median(ts), mel
    finally:
        os.environ.pop("TTS_DECODER_TILES", None)


print("== whole decode, us/step (interleaved rounds)", flush=True)
for bs in (8, 1):
    vs = [("default", BASE[bs]), ("best exact", tiles_from_best(bs))]
    if bs == 8 and best[8].get("lstm_any") and best[8]["lstm_any"] is not best[8].get("lstm"):
        vs.append(("best + xlo off", tiles_from_best(bs, any_lstm=True)))
    res = {n: [] for n, _ in vs}
    diff = {}
    ref = None
    for rnd_i in range(3):
        for name, tiles in vs:
            if left() < 25:
                break
            try:
                us, mel = decode_us(bs, tiles)
                if ref is None:
                    ref = mel
                diff[name] = float((mel - ref).abs().max())
                res[name].append(us)
                print(f"  b{bs} round {rnd_i} {name:16s} {us:6.2f} us/step (mel diff {diff[name]:.3g})", flush=True)
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                print(f"  b{bs} {name}: FAILED {exc!r}"[:300], flush=True)
    R["decode"][str(bs)] = {n: {"tiles": t, "rounds": res[n], "median": statistics.median(res[n]) if res[n] else None,
                                "mel_diff": diff.get(n)} for n, t in vs}
    save()
for bs in (8, 1):
    for n, v in R["decode"].get(str(bs), {}).items():
        print(f"  b{bs} {n:16s} median {v['median']}  mel diff {v['mel_diff']}", flush=True)
R["wall_s"] = time.time() - T0
save()
print("BEST8", json.dumps(tiles_from_best(8)), flush=True)
print("BEST1", json.dumps(tiles_from_best(1)), flush=True)
print(f"done in {R['wall_s']:.0f} s", flush=True)
