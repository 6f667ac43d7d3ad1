#!/bin/bash
# tts-server --devices 0,1 on a two-GPU machine (nvidia-h200-x2): one worker per GPU; tts-bench --server
# at concurrency 1 and 64 (random NGC-size voice, 580 steps a call); GPU utilisation sampled each second.
# Run from the repo root with .whl carried:  bash tools/gpu/two_gpus.sh   (outputs in $OUT)
source tools/gpu/env.sh
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>&1 | tail -1
export PYTHONPATH=$PYTHONPATH:/tmp/site
R=$PWD; V=/tmp/voice; python3 tools/gpu/server_bench.py make $V > /dev/null
nvidia-smi --query-gpu=index,name --format=csv,noheader
cd /tmp
python3 /tmp/pp/tts/cli/server.py --tacotron2 $V/t2.pt --waveglow $V/wg.pt --devices 0,1 --precision fp16 \
   --host 127.0.0.1 --port 50077 --metrics-port -1 --max-batch-size 64 --max-queue-size 1024 > $OUT/server2.log 2>&1 &
SPID=$!; cd $R
for i in $(seq 1 ${START_TIMEOUT:-170}); do grep -q "serving on" $OUT/server2.log && break; sleep 1; done
grep -E "warmed up|slot decoder|serving on|rror" $OUT/server2.log | tail -6
nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader -l 1 > $OUT/gpu_util.csv &
MPID=$!
python3 /tmp/pp/tts/cli/bench.py --server 127.0.0.1:50077 --option max_decoder_steps=580 --requests 100000 \
   --concurrency 1,64 --duration 6 --warmup-requests 8 --json $OUT/server2_unary.json 2>&1 | tee $OUT/server2_unary.txt
kill $MPID; kill $SPID; wait $SPID 2>/dev/null
echo "server tracebacks: $(grep -c Traceback $OUT/server2.log)"
echo "GPU utilisation during the load (samples >= 20 %): gpu0 $(grep -cE '^0, ([2-9][0-9]|100) %' $OUT/gpu_util.csv), gpu1 $(grep -cE '^1, ([2-9][0-9]|100) %' $OUT/gpu_util.csv) of $(grep -c '^0,' $OUT/gpu_util.csv)"
