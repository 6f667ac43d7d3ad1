"""Decoder kernels v1 vs v2 on the GPU: per-kernel times (each kernel replayed in a CUDA graph,
weights L2-warm), a tile sweep of the v2 kernels, and whole decoder steps (engine graphs, 580
steps) for v1, v2 defaults and v2 with the best swept tiles. Prints JSON of the best tiles last.

    python tools/gpu/decoder_v2.py [OUT_DIR]
"""
import json, os, sys, time
import torch
from tts.models.tacotron2 import Tacotron2
from tts.engines import tacotron2 as E
from tts.plugins import decoder as K
from graphtime import graph_time as _graph_time

OUT = sys.argv[1] if len(sys.argv) > 1 else "."
dev = torch.device("cuda")
torch.manual_seed(0)
t2 = Tacotron2().to(dev).eval()
T0 = time.time()
BUDGET = float(os.environ.get("SWEEP_SECONDS", "150"))
results = {"kernels": {}, "sweep": {}, "steps": {}}


def graph_time(fn, n=100):
    return _graph_time(fn, n)


def tm(name, fn, store):
    try:
        t = graph_time(fn)
    except Exception as exc:  # noqa: BLE001
        print(f"  {name}: failed {exc!r}"[:240], flush=True)
        return None
    store[name] = t
    print(f"  {name:58s} {t:7.2f} us", flush=True)
    return t


def step_time(eng, bs, steps=580, reps=5):
    ids = torch.randint(1, 148, (bs, 128), device=dev); lengths = torch.full((bs,), 128, device=dev)
    enc = eng.encode(ids, lengths)
    f = lambda: eng.decode(enc, lengths, max_decoder_steps=steps, prenet_dropout=0.5, early_stopping=False)
    f(); f(); torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); f(); torch.cuda.synchronize(); ts.append(time.perf_counter() - t0)
    return sorted(ts)[reps // 2] / steps * 1e6


REF = {}


def mel_err(eng, bs, steps=200):
    ids = torch.randint(1, 148, (bs, 128), device=dev, generator=torch.Generator(dev).manual_seed(1))
    lengths = torch.full((bs,), 128, device=dev)
    if bs not in REF:
        e1 = E.Tacotron2Engine(t2, device=dev, precision="fp16", backend="triton", kernels="v1")
        REF[bs] = e1.decode(e1.encode(ids, lengths), lengths, max_decoder_steps=steps, prenet_dropout=0.0,
                            early_stopping=False).mel
    m = eng.decode(eng.encode(ids, lengths), lengths, max_decoder_steps=steps, prenet_dropout=0.0,
                   early_stopping=False).mel
    return float((m - REF[bs]).abs().max())


def tiles_str(d):
    return ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in d.items())


best_tiles = {}
for bs in (1, 8):
    T0 = time.time()
    eng = E.Tacotron2Engine(t2, device=dev, precision="fp16", backend="triton", kernels="v1")
    ids = torch.randint(1, 148, (bs, 128), device=dev); lengths = torch.full((bs,), 128, device=dev)
    enc = eng.encode(ids, lengths)
    eng.decode(enc, lengths, max_decoder_steps=32, prenet_dropout=0.0, early_stopping=False)
    b = next(iter(eng._buckets.values())); w = eng.w
    ws = K.lstm2_workspace(8, 16 * ((bs + 15) // 16), 1024, dev)
    kt = {}
    print(f"== B={bs} per kernel (v1 then v2 defaults)", flush=True)
    d = E.decoder_tiles(bs, torch.float16)
    rows = {
        "v1 prenet1": lambda: K.linear_act(b.frame, w.pre_w1, b.pre1, relu=True, p=0.5, seed=b.seed, step=b.step),
        "v1 prenet2": lambda: K.linear_act(b.pre1, w.pre_w2, b.pre2, relu=True, p=0.5, seed=b.seed, step=b.step, salt=1),
        "v1 att_lstm": lambda: K.lstm_cell((b.pre2, b.ctx, b.ah[0]), w.att_w, w.att_b, b.ac, b.ah[1]),
        "v1 query": lambda: K.linear_act(b.ah[1], w.q_w, b.pq),
        "v1 energy": lambda: K.location_energy(b.pq, w.loc_w, b.att_w, b.att_cum, b.pm, w.v, b.lengths, b.energy),
        "v1 context": lambda: K.attention_context(b.energy, b.memory, b.att_w, b.att_cum, b.ctx, b.align, b.step, 0),
        "v1 dec_lstm": lambda: K.lstm_cell((b.ah[1], b.ctx, b.dh[0]), w.dec_w, w.dec_b, b.dc, b.dh[1]),
        "v1 projection": lambda: K.projection((b.dh[1], b.ctx), w.proj_w, w.proj_b, b.frame, b.mel, b.gate,
                                              b.not_finished, b.mel_lengths, 0.5, b.step, 0),
        "v2 prenet": lambda: K.prenet(b.frame, w.pre_w1, w.pre_w2, b.pre2, p=0.5, seed=b.seed, step=b.step,
                                      bn=d["prenet"][0], bb=d["prenet"][1]),
        "v2 att_lstm": lambda: K.lstm_cell2((b.pre2, b.ctx, b.ah[0]), w.att_w, w.att_b, b.ac, b.ah[1], ws=ws, **d["lstm"]),
        "v2 energy": lambda: K.location_energy2(b.pq, w.loc_w, b.att_w, b.att_cum, b.pm, w.v, b.lengths, b.energy,
                                                bt=d["loc_bt"]),
        "v2 context": lambda: K.attention_context(b.energy, b.memory, b.att_w, b.att_cum, b.ctx, b.align, b.step, 0,
                                                  be=d["ctx"][0], bt=d["ctx"][1]),
        "v2 dec_lstm": lambda: K.lstm_cell2((b.ah[1], b.ctx, b.dh[0]), w.dec_w, w.dec_b, b.dc, b.dh[1], ws=ws, **d["lstm"]),
        "cublas dec gemm (fp16, same bytes)": lambda: torch.mm(b.dh[0].half().repeat(1, 3)[:, :2560], w.dec_w.t()),
    }
    for name, fn in rows.items():
        tm(name, fn, kt)
    results["kernels"][bs] = kt
    # ---- sweep
    sw = {}
    print(f"== B={bs} sweep", flush=True)
    L = dict(bh=1, bk=512, split=1, num_warps=4, dot=False, static=True)
    if bs == 1:
        cands = [dict(L, bh=2, bk=512), dict(L, bh=2, bk=256), dict(L, bh=4, bk=256), dict(L, bh=4, bk=512),
                 dict(L, bh=2, bk=512, static=False), dict(L, bh=1, bk=1024)]
    else:
        cands = [dict(L, bh=bh, bk=bk, num_warps=nw, static=False) for bh, bk in ((1, 64), (1, 128), (1, 256), (2, 64), (2, 128))
                 for nw in (4, 8)]
        cands += [dict(L, bh=1, bk=128, split=2, static=False), dict(L, bh=2, bk=128, static=True),
                  dict(L, bh=4, bk=128, dot=True, static=False), dict(L, bh=4, bk=256, dot=True, static=False),
                  dict(L, bh=8, bk=128, dot=True, split=2, static=False), dict(L, bh=4, bk=128, dot=True, split=2, static=False)]
    for cfg in cands:
        if time.time() - T0 > BUDGET:
            print("  sweep: time budget reached", flush=True); break
        tm("dec_lstm " + tiles_str(cfg), lambda: K.lstm_cell2((b.ah[1], b.ctx, b.dh[0]), w.dec_w, w.dec_b, b.dc, b.dh[1],
                                                                ws=ws, **cfg), sw)
    lstm_best = sorted(((t, n) for n, t in sw.items() if n.startswith("dec_lstm")))[:3]
    for bt in (2, 4, 8, 16):
        tm(f"energy bt={bt}", lambda: K.location_energy2(b.pq, w.loc_w, b.att_w, b.att_cum, b.pm, w.v, b.lengths, b.energy, bt=bt), sw)
    for be, bt in ((16, 128), (32, 128), (64, 128), (32, 64)):
        tm(f"context be={be} bt={bt}", lambda: K.attention_context(b.energy, b.memory, b.att_w, b.att_cum, b.ctx, b.align,
                                                                  b.step, 0, be=be, bt=bt), sw)
    for bn, bk in ((4, 256), (2, 256), (2, 512), (1, 512), (1, 1024)):
        tm(f"query bn={bn} bk={bk}", lambda: K.linear_act(b.ah[1], w.q_w, b.pq, bn=bn, bk=bk), sw)
        tm(f"proj bn={bn} bk={bk}", lambda: K.projection((b.dh[1], b.ctx), w.proj_w, w.proj_b, b.frame, b.mel, b.gate,
                                                         b.not_finished, b.mel_lengths, 0.5, b.step, 0, bn=bn, bk=bk), sw)
    for bn, bb in ((8, 1), (16, 1), (32, 1), (16, 2)):
        tm(f"prenet bn={bn} bb={bb}", lambda: K.prenet(b.frame, w.pre_w1, w.pre_w2, b.pre2, p=0.5, seed=b.seed,
                                                       step=b.step, bn=bn, bb=bb), sw)
    results["sweep"][bs] = sw

    def best(prefix, parse):
        c = sorted((t, n) for n, t in sw.items() if n.startswith(prefix))
        return parse(c[0][1]) if c else None
    kv = lambda n: dict(x.split("=") for x in n.split(" ", 1)[1].replace(" ", ",").split(","))
    tiles = dict(d)
    tiles["loc_bt"] = int(best("energy", kv)["bt"])
    c = best("context", kv); tiles["ctx"] = [int(c["be"]), int(c["bt"])]
    q = best("query", kv); tiles["query"] = [int(q["bn"]), int(q["bk"])]
    q = best("proj", kv); tiles["proj"] = [int(q["bn"]), int(q["bk"])]
    q = best("prenet", kv); tiles["prenet"] = [int(q["bn"]), int(q["bb"])]
    # ---- whole steps: v1, v2 defaults, v2 with the swept tiles and each of the 3 best LSTM configs
    print(f"== B={bs} decoder step (580 steps, graphs of 16, dropout 0.5)", flush=True)
    st = {}
    os.environ.pop("TTS_DECODER_TILES", None)
    for kern in ("v1", "v2"):
        e2 = E.Tacotron2Engine(t2, device=dev, precision="fp16", backend="triton", kernels=kern)
        st[kern] = step_time(e2, bs)
        print(f"  {kern} defaults: {st[kern]:.1f} us/step", flush=True)
    ref = None
    for t_, n in lstm_best[:2]:
        cfg = {k: (v == "1" if k in ("dot", "static") else int(v)) for k, v in kv(n).items()}
        for pre in (tiles["prenet"], None):
            tl_ = dict(tiles, lstm=cfg, prenet=pre)
            os.environ["TTS_DECODER_TILES"] = json.dumps(tl_)
            try:
                e2 = E.Tacotron2Engine(t2, device=dev, precision="fp16", backend="triton", kernels="v2")
                st[json.dumps(tl_)] = t = step_time(e2, bs)
                err = mel_err(e2, bs)
                print(f"  v2 {json.dumps(tl_)}: {t:.1f} us/step, mel vs v1 (dropout 0, 200 steps) {err:.2e}", flush=True)
                if not err < 5e-3:
                    st.pop(json.dumps(tl_))
            except Exception as exc:  # noqa: BLE001
                print(f"  v2 {json.dumps(tl_)}: failed {exc!r}"[:300], flush=True)
    os.environ.pop("TTS_DECODER_TILES", None)
    results["steps"][bs] = st
    bestc = min((t, k) for k, t in st.items() if k != "v1")
    best_tiles[bs] = bestc[1]
    with open(os.path.join(OUT, f"best_b{bs}.json"), "w") as f:
        f.write("{}" if bestc[1] == "v2" else bestc[1])
    print(f"B={bs}: v1 {st['v1']:.1f} us/step, v2 default {st['v2']:.1f}, best v2 {bestc[0]:.1f} us/step", flush=True)

with open(os.path.join(OUT, "decoder_v2.json"), "w") as f:
    json.dump(results, f, indent=1)
print("BEST_TILES", json.dumps(best_tiles))
