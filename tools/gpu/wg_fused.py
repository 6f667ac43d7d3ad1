"""WaveGlow-256 fused (phase-major Triton) layout on the GPU: kernel tile sweep, then the engine's
layouts side by side (fp16, 580 frames, batch 1 and 8, CUDA graphs, same run).

    source tools/gpu/env.sh; python3 tools/gpu/wg_fused.py      # -> stdout, $OUT/wg_fused.json

Per-kernel times are one layer's launch (median of 50, CUDA events around a loop of 20 launches);
engine times are ``engine.infer`` (noise copy, graph replay, output clone), median of 20.
"""
import copy, json, os, time
import torch
from tts.cli.bench import random_models
from tts.engines.waveglow import WaveGlowEngine
from tts.plugins import waveglow as wk

dev = torch.device("cuda")
T, HOP, SR, C, P = 580, 256, 22050, 256, 32
res = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda}
try:
    import triton
    res["triton"] = triton.__version__
except Exception:
    pass
print(res, flush=True)


def ev_time(fn, n=20, reps=7):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(n):
            fn()
        b.record(); b.synchronize(); ts.append(a.elapsed_time(b) / n)
    return sorted(ts)[reps // 2]


IN_TILES = [(128, 64, 64, 8, 3), (128, 64, 32, 8, 4), (128, 64, 64, 8, 2), (128, 128, 64, 8, 3), (128, 64, 32, 4, 4),
            (128, 128, 32, 8, 4), (64, 64, 64, 4, 3)]
RS_TILES = [(128, 128, 64, 8, 3), (128, 64, 64, 4, 3), (64, 128, 64, 4, 3), (128, 128, 64, 4, 3), (128, 256, 64, 8, 3),
            (64, 64, 64, 4, 3), (128, 128, 32, 8, 4), (64, 256, 64, 8, 3)]
best = {}
sweep = []
DEFAULT_TILES = dict(wk.WN_TILES)
for bs in (1, 8):
    fp = wk.wn_frame_pad(1, 128, P)
    x = torch.randn(bs * P * (T + 2 * fp), C, device=dev, dtype=torch.half)
    w = torch.randn(3 * C, 2 * C, device=dev, dtype=torch.half) * 0.03
    mel = torch.randn(bs * T, 320, device=dev, dtype=torch.half)
    wc = torch.randn(P, 320, 2 * C, device=dev, dtype=torch.half) * 0.03
    cb = torch.zeros(2 * C, device=dev, dtype=torch.half)
    e = torch.randn(C, 16, device=dev, dtype=torch.half) * 0.03
    end = torch.zeros(bs * P * T, 16, device=dev)
    acts = torch.empty(bs * P * T, C, device=dev, dtype=torch.half)
    wr = torch.randn(C, C, device=dev, dtype=torch.half) * 0.03
    br = torch.zeros(C, device=dev, dtype=torch.half)
    rows = bs * P * T
    fl_in = 2 * rows * (3 * C + 320) * 2 * C
    fl_rs = 2 * rows * C * (C + 16)
    for name, tiles, fn in ([("in", t, (lambda t=t: wk.wn_in_gate(x, w, mel, wc, cb, acts, t=T, fp=fp, phases=P, dil=64,
                                                                   half=1, tiles=t))) for t in IN_TILES]
                            + [("rs", t, (lambda t=t: wk.wn_res_end(acts, wr, br, x, e, end, t=T, fp=fp, first=False,
                                                                      tiles=t))) for t in RS_TILES]):
        try:
            ms = ev_time(fn)
        except Exception as exc:
            print(f"b{bs} {name} {tiles}: failed {type(exc).__name__}: {str(exc)[:200]}", flush=True)
            continue
        tf = (fl_in if name == "in" else fl_rs) / ms / 1e9
        sweep.append({"batch": bs, "kernel": name, "tiles": tiles, "us": ms * 1000, "tflops": tf})
        print(f"b{bs} {name} {tiles}: {ms * 1000:8.1f} us  {tf:6.0f} TFLOP/s", flush=True)
        if (bs, name) not in best or ms < best[(bs, name)][1]:
            best[(bs, name)] = (tiles, ms)
res["sweep"] = sweep
res["best"] = {f"b{k[0]}_{k[1]}": v for k, v in best.items()}
print("best:", res["best"], flush=True)

_, wg, _ = random_models("tacotron2", "ngc", 0)
wg_h = copy.deepcopy(wg).to(dev).half().eval()
rows_out = []
with torch.inference_mode():
    for bs in (1, 8):
        g = torch.Generator(device=dev).manual_seed(0)
        mel = (torch.randn(bs, 80, T, device=dev, generator=g) - 5).half()
        z = torch.randn(bs, 8, T * HOP // 8, device=dev, generator=g).half()
        ref = None
        for name, kw, tiles in [("gemm taps", dict(layout="gemm", dilated="taps"), None),
                                ("fused default tiles", dict(layout="fused"), None),
                                ("fused best tiles", dict(layout="fused"), "best")]:
            if tiles == "best":
                wk.WN_TILES["in"] = best[(bs, "in")][0]
                wk.WN_TILES["rs"] = best[(bs, "rs")][0]
            t0 = time.perf_counter()
            eng = WaveGlowEngine(wg_h, device=dev, precision="fp16", **kw)
            out = eng.infer(mel, 0.6, z=z).float()
            build = time.perf_counter() - t0
            ms = ev_time(lambda: eng.infer(mel, 0.6, z=z), n=5, reps=9)
            if ref is None:
                ref = out
            snr = float(10 * torch.log10(ref.pow(2).sum() / (out - ref).pow(2).sum().clamp_min(1e-30)))
            xrt = bs * T * HOP / SR / (ms / 1000)
            r = {"variant": name, "batch": bs, "ms": ms, "x_realtime": xrt, "snr_vs_gemm_db": snr,
                 "build_s": build, "tiles": dict(wk.WN_TILES)}
            rows_out.append(r)
            print(f"{name:<22} b{bs}: {ms:8.2f} ms  {xrt:6.0f}x RT  SNR vs gemm {snr:6.1f} dB  (built {build:.1f} s)",
                  flush=True)
            del eng
            torch.cuda.empty_cache()
        wk.WN_TILES.update(DEFAULT_TILES)
res["engine"] = rows_out
out = os.environ.get("OUT")
if out:
    json.dump(res, open(os.path.join(out, "wg_fused.json"), "w"), indent=1, default=str)
