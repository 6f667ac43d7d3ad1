#!/bin/bash
# Decoder kernels v2, device call 1: GPU tests (plugin + engine), per-kernel times and tile sweep
# (tools/gpu/decoder_v2.py), tts-bench v2 (default) vs v1 (TTS_DECODER_KERNELS=v1) at batch 1 and 8.
# Everything under $OUT/res, packed into $OUT/results.tgz; short summary printed last.
set -o pipefail
source tools/gpu/env.sh
[ -d .whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
unset TRITON_CACHE_DIR
R=$PWD; O=$OUT/res; mkdir -p $O; B="python3 /tmp/pp/tts/cli/bench.py"
STEPS=${STEPS:-tests,sweep,bench}
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import torch, triton, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"; } > $O/env.txt 2>&1
if [[ $STEPS == *tests* ]]; then
  (cd /tmp && TTS_GPU_REPORT=$O timeout ${TEST_TIMEOUT:-200} python3 -m pytest -q -p no:cacheprovider -m gpu \
     $R/tests/test_plugins_decoder.py ${ENGINE_TESTS-$R/tests/test_engines_gpu.py} -rs 2>&1 | tail -40) > $O/pytest_gpu.log
  tail -4 $O/pytest_gpu.log; tar czf $OUT/results.tgz -C $OUT res
fi
if [[ $STEPS == *sweep* ]]; then
  SWEEP_SECONDS=${SWEEP_SECONDS:-55} timeout ${SWEEP_TIMEOUT:-270} python3 tools/gpu/decoder_v2.py $O > $O/decoder_v2.txt 2>&1
  tar czf $OUT/results.tgz -C $OUT res; grep -h "^B=\|BEST" $O/decoder_v2.txt | cut -c1-400
fi
if [[ $STEPS == *bench* ]]; then
  # v2 with the tiles the sweep chose (best_b*.json; "{}" = code defaults), v1 for A/B
  T1=$(cat $O/best_b1.json 2>/dev/null || echo '{}'); T8=$(cat $O/best_b8.json 2>/dev/null || echo '{}')
  echo "tiles b1: $T1"; echo "tiles b8: $T8"
  TTS_DECODER_TILES="$T1" timeout 75 $B --batch 1 --verify --output $O/t2_b1_v2.json > $O/t2_b1_v2.txt 2>&1
  TTS_DECODER_KERNELS=v1 timeout 45 $B --batch 1 --no-eager --repeats 5 --output $O/t2_b1_v1.json > $O/t2_b1_v1.txt 2>&1
  TTS_DECODER_TILES="$T8" timeout 75 $B --batch 8 --repeats 5 --output $O/t2_b8_v2.json > $O/t2_b8_v2.txt 2>&1
  TTS_DECODER_KERNELS=v1 timeout 45 $B --batch 8 --no-eager --repeats 5 --output $O/t2_b8_v1.json > $O/t2_b8_v1.txt 2>&1
fi
tar czf $OUT/results.tgz -C $OUT res
echo "== summary"
grep -h "^B=\|BEST\|failed\|Error\|error" $O/decoder_v2.txt 2>/dev/null | cut -c1-300 | tail -30
for f in t2_b1_v2 t2_b1_v1 t2_b8_v2 t2_b8_v1; do echo "-- $f"; grep -h "^decoder \|^end to end\|verify\|Error" $O/$f.txt 2>/dev/null | cut -c1-160; done
