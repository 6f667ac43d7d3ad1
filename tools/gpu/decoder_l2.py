"""Decoder step at batch 8: LSTM tiles, L2 hints and the location-energy layout, on the GPU.

    source tools/gpu/env.sh; python3 tools/gpu/decoder_l2.py      (results: $OUT/decoder_l2.json)

Random-weight NGC-size Tacotron2, fp16, 128 input positions, 580 forced steps.

A. LSTM pair microbenchmark: the attention LSTM (K 1792) then the decoder LSTM (K 2560), 40 pairs
   in one CUDA graph, no PDL: us per pair and the HBM-equivalent GB/s (35.7 MB of fp16 weights per
   pair; above ~3.3 TB/s means L2 hits). Configs: the batch-8 default, eviction hints, pipeline
   depth, tile shapes.
B. location_energy2 at batch 8: [A, 2, KS] row-major (the layout until now) against tap-major,
   per program tile bt and warps; 50 launches per graph.
C. Whole decode (engine.decode, dropout 0.5, CUDA events), rounds interleaved A/B so clock and
   L2 drift hit every variant alike: the old location layout, the new one, + the best LSTM
   configs of A. Batch 1 and 8.
D. A persisting L2 access-policy window over the LSTM weights (cudaDeviceSetLimit +
   stream attribute on the capture stream), if the runtime allows it.
"""
import ctypes
import glob
import json
import math
import os
import statistics
import sys
import time
import traceback

import torch
from graphtime import graph_time

from tts.engines import tacotron2 as E
from tts.models.tacotron2 import Tacotron2
from tts.plugins import decoder as K

T0 = time.time()
BUDGET = float(os.environ.get("L2_BUDGET_S", "400"))
OUTF = os.path.join(os.environ.get("OUT", "."), "decoder_l2.json")
dev = torch.device("cuda")
torch.manual_seed(0)
t2 = Tacotron2().to(dev).eval()
R = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "A": [], "B": [], "C": {}, "D": {}}
print(R["device"], torch.__version__, flush=True)


def left():
    return BUDGET - (time.time() - T0)


def save():
    with open(OUTF, "w") as f:
        json.dump(R, f, indent=1)


eng = E.Tacotron2Engine(t2, device=dev, precision="fp16", backend="triton")
w = eng.w
BASE8 = E.decoder_tiles(8, torch.float16)
BASE1 = E.decoder_tiles(1, torch.float16)
R["base8"], R["base1"] = BASE8, BASE1
print("batch-8 tiles", json.dumps(BASE8), "pdl", eng.pdl, flush=True)

# ---------------------------------------------------------------- A. LSTM pair
WBYTES = (w.att_w.numel() + w.dec_w.numel()) * w.att_w.element_size()


def lstm_pair(bs, cfg):
    g = torch.Generator(device=dev).manual_seed(2)
    pre2 = torch.rand(bs, 256, device=dev, generator=g)
    ctx = torch.rand(bs, 512, device=dev, generator=g)
    ah = torch.rand(2, bs, 1024, device=dev, generator=g)
    dh = torch.rand(2, bs, 1024, device=dev, generator=g)
    ac, dc = torch.zeros(bs, 1024, device=dev), torch.zeros(bs, 1024, device=dev)
    ws = K.lstm2_workspace(cfg.get("split", 1), 16 * math.ceil(bs / 16), 1024, dev) if cfg.get("split", 1) > 1 else None

    def f():
        K.lstm_cell2((pre2, ctx, ah[0]), w.att_w, w.att_b, ac, ah[1], ws=ws, **cfg)
        K.lstm_cell2((ah[1], ctx, dh[0]), w.dec_w, w.dec_b, dc, dh[1], ws=ws, **cfg)
    return graph_time(f, 40, reps=7)


A8 = [("default", {}), ("evict_last", dict(evict="evict_last")), ("evict_first", dict(evict="evict_first")),
      ("stages 2", dict(num_stages=2)), ("stages 4", dict(num_stages=4)), ("stages 5", dict(num_stages=5)),
      ("split 8", dict(split=8)), ("split 3", dict(split=3)), ("split 5", dict(split=5)),
      ("bh 32 split 4", dict(bh=32)), ("bh 32 split 8", dict(bh=32, split=8)),
      ("bh 8 split 4", dict(bh=8)), ("bh 8 split 2", dict(bh=8, split=2)),
      ("bk 64 stages 4", dict(bk=64, num_stages=4)), ("bk 64 split 8", dict(bk=64, split=8)),
      ("bk 256 stages 2", dict(bk=256, num_stages=2)),
      ("split 8 stages 4", dict(split=8, num_stages=4)), ("split 8 evict_last", dict(split=8, evict="evict_last")),
      ("stages 4 evict_last", dict(num_stages=4, evict="evict_last")),
      ("8 warps stages 4", dict(num_warps=8, num_stages=4))]
A1 = [("b1 default", {}), ("b1 evict_last", dict(evict="evict_last"))]
print("== A. LSTM pair (att + dec), 40 per graph", flush=True)
for bs, lst, base in ((8, A8, BASE8["lstm"]), (1, A1, BASE1["lstm"])):
    for name, over in lst:
        if left() < 250:
            break
        cfg = dict(base, **over)
        try:
            us = lstm_pair(bs, cfg)
            rec = {"batch": bs, "name": name, "cfg": cfg, "us_pair": us, "gbs": WBYTES / us / 1e3}
            print(f"  b{bs} {name:22s} {us:6.2f} us/pair  {rec['gbs']:6.0f} GB/s", flush=True)
        except Exception as exc:  # noqa: BLE001
            rec = {"batch": bs, "name": name, "cfg": cfg, "error": repr(exc)[:300]}
            print(f"  b{bs} {name}: FAILED {exc!r}"[:300], flush=True)
        R["A"].append(rec)
save()

# ---------------------------------------------------------------- B. location energy
print("== B. location_energy2, batch 8, T 128", flush=True)
bs, T = 8, 128
g = torch.Generator(device=dev).manual_seed(3)
pq = torch.randn(bs, 128, device=dev, generator=g)
aw = torch.rand(bs, T, device=dev, generator=g)
acum = torch.rand(bs, T, device=dev, generator=g) * 3
pm = torch.randn(bs, T, 128, device=dev, generator=g).half()
lens = torch.full((bs,), T, dtype=torch.int32, device=dev)
out = torch.empty(bs, T, device=dev)
wl_rm = w.loc_w.contiguous()
wl_tm = K.tap_major(wl_rm)
ref = torch.empty(bs, T, device=dev)
K.location_energy_ref(pq, wl_rm, aw, acum, pm, w.v, lens, ref)
for lay, wl in (("row-major", wl_rm), ("tap-major", wl_tm)):
    for bt in (2, 4, 8, 16):
        for nw in (2, 4):
            if left() < 200:
                break
            try:
                us = graph_time(lambda: K.location_energy2(pq, wl, aw, acum, pm, w.v, lens, out, bt=bt, num_warps=nw), 50, reps=7)
                err = float((out - ref).abs().max())
                R["B"].append({"layout": lay, "bt": bt, "num_warps": nw, "us": us, "err": err})
                print(f"  {lay:9s} bt {bt:2d} warps {nw}: {us:5.2f} us  (err {err:.2g})", flush=True)
            except Exception as exc:  # noqa: BLE001
                print(f"  {lay} bt {bt} warps {nw}: FAILED {exc!r}"[:300], flush=True)
save()

# ---------------------------------------------------------------- C. whole decode, interleaved
INPUTS = {}
for b in (1, 8):
    gg = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 148, (b, 128), generator=gg).to(dev)
    lengths = torch.full((b,), 128, device=dev)
    INPUTS[b] = (eng.encode(ids, lengths), lengths)
STEPS = 580


def best_a(n=2):
    ok = [r for r in R["A"] if r["batch"] == 8 and "us_pair" in r]
    ok.sort(key=lambda r: r["us_pair"])
    return [r for r in ok[:n] if r["name"] != "default"]


variants = {8: [("old loc layout", None, wl_rm), ("tap-major loc", None, None)], 1: [("old loc layout", None, wl_rm),
                                                                                      ("tap-major loc", None, None)]}
for r in best_a():
    variants[8].append(("tap-major + " + r["name"], r["cfg"], None))
if not any(v[0].endswith("evict_last") for v in variants[8]):
    variants[8].append(("tap-major + evict_last", dict(BASE8["lstm"], evict="evict_last"), None))
variants[1].append(("tap-major + evict_last", dict(BASE1["lstm"], evict="evict_last"), None))
loc_tm = w.loc_w


def decode_us(b, lstm, wl, reps=5):
    tiles = dict(BASE8 if b > 2 else BASE1)
    if lstm is not None:
        tiles["lstm"] = lstm
    os.environ["TTS_DECODER_TILES"] = json.dumps(tiles)
    w.loc_w = wl if wl is not None else loc_tm
    eng._buckets.clear()
    enc, lengths = INPUTS[b]
    kw = dict(max_decoder_steps=STEPS, early_stopping=False)
    mel = eng.decode(enc, lengths, prenet_dropout=0.0, **kw).mel
    mel = eng.decode(enc, lengths, prenet_dropout=0.0, **kw).mel
    f = lambda: eng.decode(enc, lengths, prenet_dropout=0.5, **kw)  # noqa: E731
    f(); f(); torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record(); f(); e1.record(); e1.synchronize()
        ts.append(e0.elapsed_time(e1) * 1e3 / STEPS)
    os.environ.pop("TTS_DECODER_TILES", None)
    return statistics.median(ts), mel


print("== C. decode us/step, interleaved rounds", flush=True)
for b in (8, 1):
    res = {name: [] for name, _, _ in variants[b]}
    errs = {}
    ref_mel = None
    for rnd in range(3):
        for name, lstm, wl in variants[b]:
            if left() < 60:
                break
            try:
                us, mel = decode_us(b, lstm, wl)
                if ref_mel is None:
                    ref_mel = mel.clone()
                errs[name] = float((mel - ref_mel).abs().max())
                res[name].append(us)
                print(f"  b{b} round {rnd} {name:34s} {us:6.2f} us/step  mel diff {errs[name]:.2g}", flush=True)
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                print(f"  b{b} {name}: FAILED {exc!r}"[:300], flush=True)
    R["C"][str(b)] = {n: {"rounds": v, "median": statistics.median(v) if v else None, "mel_diff": errs.get(n)}
                      for n, v in res.items()}
    for n, v in R["C"][str(b)].items():
        print(f"  b{b} {n:34s} median {v['median']}", flush=True)
    save()
w.loc_w = loc_tm

# ---------------------------------------------------------------- D. persisting L2 window
print("== D. persisting L2 window over the LSTM weights", flush=True)
try:
    if left() < 45:
        raise RuntimeError("no time left")
    libs = sorted(glob.glob(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cu*", "lib", "libcudart.so*"))
                  + glob.glob(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cuda_runtime", "lib", "libcudart.so*"))
                  + glob.glob("/usr/local/cuda/lib64/libcudart.so*"))
    print("  cudart candidates", libs, flush=True)
    rt = ctypes.CDLL(libs[0])
    v = ctypes.c_int()
    rt.cudaDeviceGetAttribute(ctypes.byref(v), 108, 0)
    maxp = v.value
    rt.cudaDeviceGetAttribute(ctypes.byref(v), 109, 0)
    maxw = v.value
    R["D"].update(max_persisting=maxp, max_window=maxw)
    print(f"  max persisting L2 {maxp / 2**20:.1f} MiB, max window {maxw / 2**20:.1f} MiB", flush=True)
    arena = torch.empty(w.att_w.numel() + w.dec_w.numel(), dtype=w.att_w.dtype, device=dev)
    n1 = w.att_w.numel()
    arena[:n1].copy_(w.att_w.flatten()); arena[n1:].copy_(w.dec_w.flatten())
    w.att_w = arena[:n1].view(w.att_w.shape); w.dec_w = arena[n1:].view(w.dec_w.shape)
    nbytes = arena.numel() * arena.element_size()
    rc = rt.cudaDeviceSetLimit(0x06, ctypes.c_size_t(maxp))
    print("  cudaDeviceSetLimit rc", rc, flush=True)

    class APW(ctypes.Structure):
        _fields_ = [("base_ptr", ctypes.c_void_p), ("num_bytes", ctypes.c_size_t), ("hitRatio", ctypes.c_float),
                    ("hitProp", ctypes.c_int), ("missProp", ctypes.c_int)]

    class Val(ctypes.Union):
        _fields_ = [("apw", APW), ("pad", ctypes.c_char * 64)]

    win = min(nbytes, maxw)
    val = Val()
    val.apw = APW(arena.data_ptr(), win, min(1.0, maxp / win), 2, 1)   # hit: persisting, miss: streaming
    Orig = torch.cuda.Stream

    class PStream(Orig):
        def __new__(cls, *a, **k):
            s = super().__new__(cls, *a, **k)
            r = rt.cudaStreamSetAttribute(ctypes.c_void_p(s.cuda_stream), 1, ctypes.byref(val))
            R["D"]["set_attr_rc"] = r
            return s
    torch.cuda.Stream = PStream
    try:
        res = {"plain": [], "persisting window": []}
        for rnd in range(3):
            torch.cuda.Stream = Orig
            us, _ = decode_us(8, None, None)
            res["plain"].append(us)
            torch.cuda.Stream = PStream
            us, _ = decode_us(8, None, None)
            res["persisting window"].append(us)
            print(f"  round {rnd}: plain {res['plain'][-1]:.2f}, window {res['persisting window'][-1]:.2f} us/step "
                  f"(set_attr rc {R['D'].get('set_attr_rc')})", flush=True)
        R["D"]["b8"] = {k: statistics.median(v) for k, v in res.items()}
    finally:
        torch.cuda.Stream = Orig
        rt.cudaDeviceSetLimit(0x06, ctypes.c_size_t(0))
except Exception as exc:  # noqa: BLE001
    traceback.print_exc()
    R["D"]["error"] = repr(exc)[:300]
R["wall_s"] = time.time() - T0
save()
print(f"done in {R['wall_s']:.0f} s", flush=True)
sys.exit(0)
