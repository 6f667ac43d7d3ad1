"""WaveGlow-256 (NGC size, random weights): eager fp16 vs engine res_skip=conv vs res_skip=gemm, same run.

Prints one table row per (variant, batch): median ms over 10 timed runs (CUDA events, after 3 warm-ups),
speed-up vs eager, and the SNR of each engine against the conv engine (same noise).
"""
import json, os, sys, torch
from tts.cli.bench import random_models
from tts.engines.waveglow import WaveGlowEngine

dev = torch.device("cuda")
_, wg, _ = random_models("tacotron2", "ngc", 0)
wg = wg.to(dev).eval()
wg_h = __import__("copy").deepcopy(wg).half()
engines = {"conv": WaveGlowEngine(wg_h, device=dev, precision="fp16", res_skip="conv"),
           "gemm": WaveGlowEngine(wg_h, device=dev, precision="fp16", res_skip="gemm")}

def med(fn, n=10, warm=3):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize(); ts.append(a.elapsed_time(b))
    return sorted(ts)[n // 2]

rows = []
for bs in (1, 8):
    mel = torch.randn(bs, 80, 580, device=dev).half()
    z = torch.randn(bs, 8, 580 * 32, device=dev)
    with torch.inference_mode():
        t_e = med(lambda: wg_h.infer(mel, 0.6, z=z.half()))
        ref = engines["conv"].infer(mel, 0.6, z=z).float()
        for name, eng in engines.items():
            t = med(lambda: eng.infer(mel, 0.6, z=z))
            out = eng.infer(mel, 0.6, z=z).float()
            snr = float(10 * torch.log10(ref.pow(2).sum() / (out - ref).pow(2).sum().clamp_min(1e-30)))
            rows.append({"variant": name, "batch": bs, "eager_ms": t_e, "engine_ms": t, "speedup": t_e / t,
                         "snr_vs_conv_db": snr, "x_realtime": bs * 580 * 256 / 22050 / (t / 1000)})
for r in rows:
    print(f"waveglow b{r['batch']} {r['variant']:5s}: eager {r['eager_ms']:.2f} ms, engine {r['engine_ms']:.2f} ms, "
          f"x{r['speedup']:.2f} vs eager, {r['x_realtime']:.0f}x real time, SNR vs conv {r['snr_vs_conv_db']:.1f} dB")
out = os.environ.get("OUT")
if out:
    json.dump(rows, open(os.path.join(out, "wg_variants.json"), "w"), indent=1)
