#!/bin/bash
# End-to-end figures of benchmarks/README.md: tts-bench with random weights of NVIDIA's sizes (NGC
# Tacotron2, WaveGlow-256, FastSpeech base), fp16, 580 forced decoder steps, default engines, and
# the TorchScript and eager baselines measured in the same run (the walk: eager only). On the GPU machine, from the repo root:
#
#   bash tools/gpu/bench_e2e.sh [DIR]        # DIR: $OUT if set, else bench-out
#   STEPS=t2_b1,fs_b1 bash tools/gpu/bench_e2e.sh   # a subset (default: t2_b1,t2_b8,fs_b1,walk)
#
# Writes DIR/env.txt and, per step, DIR/STEP.json (+ .csv beside it, the printed table in .txt):
#   t2_b1  Tacotron2 + WaveGlow + denoiser, batch 1, --verify against fp32 eager
#   t2_b8  the same at batch 8
#   fs_b1  FastSpeech + WaveGlow + denoiser, batch 1, --verify
#   walk   batch 1,2,4,8,16 x input 64,128,256 characters
# Then copy DIR to benchmarks/raw/MACHINE-YYYY-MM-DD/ and run python3 benchmarks/collect.py on it.
set -o pipefail
source tools/gpu/env.sh
if compgen -G ".whl/*.whl" > /dev/null; then   # text-frontend wheels carried to a machine without an index
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>&1 | tail -1
  export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
D=${1:-${OUT:-bench-out}}; mkdir -p "$D"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader   # env.txt, as collect.py reads it
  python3 -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'triton', triton.__version__)"
} > "$D/env.txt" 2>&1; cat "$D/env.txt"
B="python3 /tmp/pp/tts/cli/bench.py --device cuda --precision fp16"   # by path: the checkout's tts/ would shadow /tmp/pp
STEPS=${STEPS:-t2_b1,t2_b8,fs_b1,walk}
run() {   # run NAME TIMEOUT ARGS...
  local name=$1 limit=$2; shift 2
  [[ ,$STEPS, == *,$name,* ]] || return 0
  timeout "$limit" $B "$@" --output "$D/$name.json" > "$D/$name.txt" 2>&1
  echo "== $name (exit $?)"; grep -E "end to end|decoder|waveglow|fastspeech|verify|rror" "$D/$name.txt" | cut -c1-160
}
run t2_b1 150 --batch 1 --warmup 2 --repeats 10 --verify
run t2_b8 150 --batch 8 --warmup 1 --repeats 5
run fs_b1 150 --acoustic fastspeech --batch 1 --warmup 2 --repeats 10 --verify
run walk 300 --walk --warmup 1 --repeats 3 --baseline eager   # TorchScript figures: tools/gpu/bench_headline.sh
