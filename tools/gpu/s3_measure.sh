#!/bin/bash
# One device call: GPU tests, WaveGlow fused sweep, tts-bench end to end (T2 b1 --verify, b8; FastSpeech b1).
# Run from the repo root with .whl carried:  bash tools/gpu/s3_measure.sh   (outputs in $OUT)
source tools/gpu/env.sh
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>&1 | tail -1
export PYTHONPATH=$PYTHONPATH:/tmp/site
R=$PWD
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"; } > $OUT/env.txt 2>&1
cat $OUT/env.txt
if [[ ${STEPS:-tests,wg,bench} == *tests* ]]; then
  (cd /tmp && timeout ${TEST_TIMEOUT:-420} python3 -m pytest -q -m gpu -p no:cacheprovider $R/tests 2>&1 | tail -30) > $OUT/pytest_gpu.log
  tail -4 $OUT/pytest_gpu.log
fi
if [[ ${STEPS:-tests,wg,bench} == *wg* ]]; then
  timeout 200 python3 tools/gpu/wg_fused.py > $OUT/wg_fused.txt 2>&1; grep -E "best|b1:|b8:" $OUT/wg_fused.txt
fi
if [[ ${STEPS:-tests,wg,bench} == *bench* ]]; then
  B="python3 /tmp/pp/tts/cli/bench.py --device cuda --precision fp16"
  timeout 100 $B --batch 1 --warmup 2 --repeats 10 --verify --output $OUT/t2_b1.json > $OUT/t2_b1.txt 2>&1
  timeout 100 $B --batch 8 --warmup 1 --repeats 5 --output $OUT/t2_b8.json > $OUT/t2_b8.txt 2>&1
  timeout 100 $B --acoustic fastspeech --batch 1 --warmup 2 --repeats 10 --verify --output $OUT/fs_b1.json > $OUT/fs_b1.txt 2>&1
  for f in t2_b1 t2_b8 fs_b1; do echo "== $f"; grep -E "decoder|waveglow|encoder|fastspeech|end to end|verify|Error|error" $OUT/$f.txt | cut -c1-150; done
fi
