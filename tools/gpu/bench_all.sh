#!/bin/bash
# Device run: per-kernel profile, tts-bench (b1 verify, b8, FastSpeech, triton step), the --walk table.
# Everything lands in $OUT/results.tgz (plus logs).
set -o pipefail
source tools/gpu/env.sh
[ -d .whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
R=$OUT/res; mkdir -p $R
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import torch, triton, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'triton', triton.__version__)"; } > $R/env.txt 2>&1
B="python3 /tmp/pp/tts/cli/bench.py"   # not -m: the checkout's tts/ would shadow /tmp/pp
STEPS=${STEPS:-all}
if [[ $STEPS == *prof* ]]; then timeout 150 python3 tools/gpu/profile_decoder.py > $R/profile_decoder.txt 2>&1; tail -5 $R/profile_decoder.txt; fi
if [[ $STEPS == *b1* || $STEPS == all ]]; then timeout 150 $B --batch 1 --verify --output $R/t2_b1_fp16.json > $R/t2_b1_fp16.txt 2>&1; tail -3 $R/t2_b1_fp16.txt; fi
if [[ $STEPS == *b8* || $STEPS == all ]]; then timeout 120 $B --batch 8 --output $R/t2_b8_fp16.json > $R/t2_b8_fp16.txt 2>&1; grep "end to end\|decoder \|waveglow" $R/t2_b8_fp16.txt; fi
if [[ $STEPS == *tri* || $STEPS == all ]]; then timeout 90 $B --batch 1 --backend torch --no-eager --repeats 5 --output $R/t2_b1_torchgraph.json > $R/t2_b1_torchgraph.txt 2>&1; grep "end to end\|decoder " $R/t2_b1_torchgraph.txt; fi
if [[ $STEPS == *fs* || $STEPS == all ]]; then timeout 120 $B --acoustic fastspeech --batch 1 --verify --output $R/fs_b1_fp16.json > $R/fs_b1_fp16.txt 2>&1; tail -3 $R/fs_b1_fp16.txt; fi
if [[ $STEPS == *walk* || $STEPS == all ]]; then timeout 300 $B --walk --warmup 1 --repeats 3 --output $R/walk_t2_fp16.json --plot $R/walk_t2_fp16.png > $R/walk_t2_fp16.txt 2>&1; cat $R/walk_t2_fp16.txt | cut -c1-200; fi
tar czf $OUT/results.tgz -C $OUT res
