#!/bin/bash
# Issue 3 device run: GPU tests (engines e2e, server on CUDA, plugins), engine cache build vs load,
# WaveGlow res/skip variants, tts-bench FastSpeech --verify. Logs under $OUT. STEPS selects parts.
set -o pipefail
source tools/gpu/env.sh
[ -d .whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
unset TRITON_CACHE_DIR
STEPS=${STEPS:-tests,cache,wg,fs}
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import torch, triton, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'triton', triton.__version__)"; } > $OUT/env.txt 2>&1
cat $OUT/env.txt
R=$PWD
if [[ $STEPS == *tests* ]]; then
  (cd /tmp && TTS_GPU_REPORT=$OUT timeout ${TEST_TIMEOUT:-300} python3 -m pytest -q -p no:cacheprovider -m gpu -x \
     $R/tests/test_engines_gpu.py $R/tests/test_plugins_decoder.py $R/tests/test_plugins_waveglow.py -rs 2>&1 | tail -40) > $OUT/pytest_gpu.log
  tail -15 $OUT/pytest_gpu.log
fi
if [[ $STEPS == *cache* ]]; then
  D=/tmp/engcache; rm -rf $D
  timeout 120 python3 tools/gpu/cache_bench.py cold $D > $OUT/cache_bench.txt 2>&1
  timeout 120 python3 tools/gpu/cache_bench.py warm $D >> $OUT/cache_bench.txt 2>&1
  ls -la $D >> $OUT/cache_bench.txt; cat $OUT/cache_bench.txt | cut -c1-600
fi
if [[ $STEPS == *wg* ]]; then timeout 120 python3 tools/gpu/wg_variants.py 2>&1 | tee $OUT/wg_variants.txt | tail -6; fi
if [[ $STEPS == *fs* ]]; then
  timeout 150 python3 /tmp/pp/tts/cli/bench.py --acoustic fastspeech --batch 1 --verify --output $OUT/fs_b1_fp16.json > $OUT/fs_b1_fp16.txt 2>&1; tail -4 $OUT/fs_b1_fp16.txt
fi
