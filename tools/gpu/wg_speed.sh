#!/bin/bash
# WaveGlow on the GPU: channels-last "gemm" layout vs the "ncw" engine (the CUDA default), same run.
# Run from the repo root on the device:  bash tools/gpu/wg_speed.sh   (log: $OUT/wg_speed.log, ~3-4 min)
#  1. gpu-marked WaveGlow tests (Triton row gate vs its twin, gemm layout vs ncw/eager, fp16 reference);
#  2. WaveGlow-256 (12 flows, 8 layers, 256 ch; random weights), 580 mel frames, fp16, batch 1 and 8:
#     median ms of engine.infer (noise copy + CUDA-graph replay + output clone; CUDA events) and
#     x real time (batch * 580 * 256 / 22050 s of audio per second), error vs the ncw engine (same z);
#  3. tts-bench e2e for reference (batch 1, fp16; it uses the engine's default layout).
set -o pipefail
source tools/gpu/env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
LOG=$OUT/wg_speed.log
: > $LOG
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a $LOG
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" 2>&1 | tee -a $LOG
R=$PWD
echo "== gpu tests" | tee -a $LOG
(cd /tmp && timeout 150 python3 -m pytest -q -m gpu -x -p no:cacheprovider $R/tests/test_plugins_waveglow.py \
    $R/tests/test_waveglow_cpu_engine.py $R/tests/test_waveglow.py 2>&1 | tail -20) | tee -a $LOG
echo "== WaveGlow-256 engine timings" | tee -a $LOG
cat > /tmp/wg_speed.py <<'PY'
import copy, sys, time, torch
from tts.cli.bench import random_models
from tts.engines.waveglow import WaveGlowEngine

torch.backends.cuda.matmul.allow_tf32 = True
dev = torch.device("cuda")
_, wg, _ = random_models("tacotron2", "ngc", 0)
wg_h = copy.deepcopy(wg).to(dev).half().eval()
T, HOP, SR = 580, 256, 22050
variants = {
    "ncw (current)": dict(layout="ncw"),
    "ncw res_skip=conv": dict(layout="ncw", res_skip="conv"),
    "gemm im2col": dict(layout="gemm", dilated="im2col"),
    "gemm taps": dict(layout="gemm", dilated="taps"),
}
engines = {}
for name, kw in variants.items():
    t0 = time.perf_counter()
    try:
        engines[name] = WaveGlowEngine(wg_h, device=dev, precision="fp16", **kw)
    except Exception as exc:          # keep timing the others
        print(f"{name}: build failed: {exc!r}", flush=True)
        continue
    print(f"{name}: built in {time.perf_counter() - t0:.1f} s", flush=True)

def med(fn, n=20, warm=3):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize(); ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[n // 2], ts[0]

print(f"{'variant':<20} {'batch':>5} {'p50 ms':>8} {'min ms':>8} {'x RT':>8} {'max|d| vs ncw':>14} {'SNR dB':>7}", flush=True)
with torch.inference_mode():
    for bs in (1, 8):
        g = torch.Generator(device=dev).manual_seed(0)
        mel = (torch.randn(bs, 80, T, device=dev, generator=g) - 5).half()
        z = torch.randn(bs, 8, T * HOP // 8, device=dev, generator=g).half()
        ref = None
        for name, eng in engines.items():
            try:
                out = eng.infer(mel, 0.6, z=z).float()
                p50, best = med(lambda: eng.infer(mel, 0.6, z=z))
            except Exception as exc:
                print(f"{name:<20} {bs:>5} failed: {exc!r}", flush=True)
                continue
            if ref is None:
                ref = out
            d = float((out - ref).abs().max())
            snr = float(10 * torch.log10(ref.pow(2).sum() / (out - ref).pow(2).sum().clamp_min(1e-30)))
            audio_s = bs * T * HOP / SR
            print(f"{name:<20} {bs:>5} {p50:8.2f} {best:8.2f} {audio_s / (p50 / 1000):8.0f} {d:14.3g} {snr:7.1f}",
                  flush=True)
PY
timeout 150 python3 /tmp/wg_speed.py 2>&1 | tee -a $LOG
echo "== tts-bench e2e (reference; engine default layout)" | tee -a $LOG
timeout 120 python3 /tmp/pp/tts/cli/bench.py --device cuda --batch 1 --precision fp16 --warmup 2 --repeats 5 2>&1 \
    | tail -16 | tee -a $LOG
echo "done" | tee -a $LOG
