#!/bin/bash
# Every headline figure of benchmarks/README.md that tts-bench makes, in one invocation (about 7-10
# minutes on an H100): random weights of NVIDIA's sizes, 128 characters, 580 forced decoder steps,
# engines against both baselines of the same run (TorchScript as DLE's inference.py runs it, and
# eager). On the GPU machine, from the repository root:
#
#   bash tools/gpu/bench_headline.sh [DIR]        # DIR: $OUT if set, else bench-out
#   STEPS=t2_b1,fs_b1 bash tools/gpu/bench_headline.sh   # a subset
#
# Where one command may run 10 minutes at most, split the default steps over two calls, e.g.
# STEPS=t2_b1,t2_b8,fs_b1 then STEPS=t2_b1_fp32,hg_b1,hg_b8,heart_b1 (each writes its own env.txt).
#
# Writes DIR/env.txt and, per step, DIR/STEP.json (+ .csv beside it, the printed table in .txt):
#   t2_b1       Tacotron2 + WaveGlow + denoiser, fp16, batch 1, --verify (engines against fp32
#               eager; TorchScript against eager with the same seed)
#   t2_b8       the same at batch 8 (also the WaveGlow-256 batch-8 figure)
#   fs_b1       FastSpeech + WaveGlow + denoiser, fp16, batch 1, --verify (eager baseline only:
#               DLE's FastSpeech has no TorchScript path)
#   t2_b1_fp32  Tacotron2 + WaveGlow + denoiser in IEEE fp32 (TF32 off), batch 1, --verify
#   hg_b1       Tacotron2 + HiFi-GAN (DLE's default generator, random weights) + denoiser, fp16,
#               batch 1, --verify (HiFi-GAN's baseline eager, as DLE HiFiGAN's inference.py runs it)
#   hg_b8       the same at batch 8 (the HiFi-GAN batch-8 figure)
#   heart_b1    the default voice (FastSpeech + its Griffin-Lim), fp16, batch 1: its own eager loop as
#               the baseline (no NVIDIA pipeline runs this voice)
#   t2_b1_attention, t2_b8_attention  (not in the default STEPS) t2_b1 / t2_b8 with the engines and
#               the eager baseline on the voices' stop rule (--stop-rule attention), its per-step work
#               included
#   walk        (not in the default STEPS) batch 1,2,4,8,16 x 64,128,256 characters, eager baseline
# then a summary, and the records collect.py makes of DIR (a dry run: nothing in benchmarks/ is
# written). Copy DIR to benchmarks/raw/MACHINE-YYYY-MM-DD/ and run
# python3 benchmarks/collect.py benchmarks/raw/MACHINE-YYYY-MM-DD to add them.
set -o pipefail
source tools/gpu/env.sh
if compgen -G ".whl/*.whl" > /dev/null; then   # text-frontend wheels carried to a machine without an index
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>&1 | tail -1
  export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
D=${1:-${OUT:-bench-out}}; mkdir -p "$D"
export TTS_ENGINE_CACHE=${TTS_ENGINE_CACHE:-/tmp/tts-engine-cache}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader   # env.txt, as collect.py reads it
  python3 -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'triton', triton.__version__)"
} > "$D/env.txt" 2>&1; cat "$D/env.txt"
B="python3 -W ignore::DeprecationWarning /tmp/pp/tts/cli/bench.py --device cuda"   # by path: the checkout's tts/ would shadow /tmp/pp
STEPS=${STEPS:-t2_b1,t2_b8,fs_b1,t2_b1_fp32,hg_b1,hg_b8,heart_b1}
T0=$SECONDS
run() {   # run NAME TIMEOUT ARGS...
  local name=$1 limit=$2; shift 2
  [[ ,$STEPS, == *,$name,* ]] || return 0
  local t=$SECONDS
  timeout "$limit" $B "$@" --output "$D/$name.json" > "$D/$name.txt" 2>&1
  echo "== $name (exit $?, $((SECONDS - t)) s)"
  grep -E "^end to end|^decoder|^waveglow|^hifigan|^fastspeech|^verify|rror" "$D/$name.txt" | cut -c1-200
}
run t2_b1 240 --precision fp16 --batch 1 --warmup 3 --repeats 10 --verify
run t2_b8 200 --precision fp16 --batch 8 --warmup 2 --repeats 5
run fs_b1 120 --precision fp16 --acoustic fastspeech --batch 1 --warmup 3 --repeats 10 --verify
run t2_b1_fp32 200 --precision fp32 --batch 1 --warmup 2 --repeats 5 --verify
run t2_b1_attention 200 --precision fp16 --batch 1 --warmup 2 --repeats 10 --baseline eager --stop-rule attention
run t2_b8_attention 200 --precision fp16 --batch 8 --warmup 2 --repeats 5 --baseline eager --stop-rule attention
run hg_b1 200 --precision fp16 --vocoder hifigan --batch 1 --warmup 3 --repeats 10 --verify
run hg_b8 200 --precision fp16 --vocoder hifigan --batch 8 --warmup 2 --repeats 5
run heart_b1 120 --voice heart --precision fp16 --batch 1 --warmup 3 --repeats 30
run walk 300 --precision fp16 --walk --warmup 1 --repeats 3 --baseline eager
echo "== all steps: $((SECONDS - T0)) s"
python3 - "$D" <<'EOF'
import json, shutil, sys, tempfile
from pathlib import Path
d = Path(sys.argv[1])
print("\nsummary (engine figures; ratios against the baselines measured in the same run):")
for f in sorted(d.glob("*.json")):
    doc = json.loads(f.read_text())
    rows = {(r["component"], r["backend"]): r for r in doc["rows"]}
    for comp in ("end to end", "decoder", "waveglow", "hifigan", "fastspeech"):
        e = rows.get((comp, "engine"))
        if not e:
            continue
        fig = f"{e['us_per_step']:.1f} us/step" if comp == "decoder" else f"{e['avg_ms']:.2f} ms"
        ts, eg = (f"{e[k]:.1f}x" if isinstance(e.get(k), float) else "-" for k in ("speedup_torchscript", "speedup"))
        print(f"  {f.stem:11s} {doc['precision']} b{e['batch']} {comp:10s} {fig:>14s}   vs TorchScript {ts:>6s}"
              f"   vs eager {eg:>6s}")
    for v in doc.get("verify", []):
        print(f"  {f.stem:11s} verify {v['engine_precision']} engine vs fp32 eager: mel {v['mel_max_abs_err']:.3g} "
              f"({'ok' if v['mel_ok'] else 'FAIL'}), audio SNR {v['audio_snr_db']:.1f} dB")
    for v in doc.get("verify_baselines", []):
        print(f"  {f.stem:11s} verify {v['precision']} torchscript vs eager: mel {v['mel_max_abs_diff']:.3g} "
              f"({'ok' if v['ok'] else 'FAIL'}), audio {v['audio_max_abs_diff']:.3g}")
# what collect.py makes of these files, in a scratch copy of the layout it expects
sys.path.insert(0, "benchmarks")
import collect
with tempfile.TemporaryDirectory() as tmp:
    raw = Path(tmp) / "raw" / "gpu-2000-01-01"
    shutil.copytree(d, raw, ignore=shutil.ignore_patterns("*.csv", "*.txt"))
    shutil.copy(d / "env.txt", raw / "env.txt")
    try:
        recs = collect.collect_folder(raw, Path(tmp))
        print(f"\ncollect.py: {len(recs)} records")
        print("\n".join(collect.render(recs).splitlines()[2:4 + len(recs)]))
    except collect.CollectError as exc:
        print(f"collect.py: {exc}")
EOF
