#!/bin/bash
# Final device call (issues 3 and 5): tts-bench --walk (T2 + WaveGlow + denoiser, fp16) and the
# tts-bench --server tables against tts-server with the random NGC-size voice (580 steps a call).
# Run from the repo root with .whl carried:  bash tools/gpu/final_b.sh   (outputs in $OUT, ~8 min)
source tools/gpu/env.sh
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>&1 | tail -1
export PYTHONPATH=$PYTHONPATH:/tmp/site
R=$PWD
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"; } > $OUT/env.txt 2>&1
cat $OUT/env.txt
B="python3 /tmp/pp/tts/cli/bench.py"
if [[ ${STEPS:-walk,server} == *walk* ]]; then
  timeout ${WALK_TIMEOUT:-260} $B --device cuda --precision fp16 --walk --warmup 1 --repeats 3 --output $OUT/walk.json > $OUT/walk.txt 2>&1
  tail -20 $OUT/walk.txt | cut -c1-220
fi
if [[ ${STEPS:-walk,server} == *server* ]]; then
  V=/tmp/voice; python3 tools/gpu/server_bench.py make $V > /dev/null
  cd /tmp
  python3 /tmp/pp/tts/cli/server.py --tacotron2 $V/t2.pt --waveglow $V/wg.pt --device cuda --precision fp16 \
     --host 127.0.0.1 --port 50077 --metrics-port -1 --max-batch-size 64 --max-queue-size 1024 > $OUT/server.log 2>&1 &
  SPID=$!; cd $R
  for i in $(seq 1 150); do grep -q "serving on" $OUT/server.log && break; sleep 1; done
  grep -E "warmed up|slot decoder|serving on" $OUT/server.log
  S="$B --server 127.0.0.1:50077 --option max_decoder_steps=580 --requests 100000 --timeout 120"
  timeout 150 $S --concurrency 1,8,16,32,64 --duration 6 --warmup-requests 8 --json $OUT/server_unary.json 2>&1 | tee $OUT/server_unary.txt
  timeout 60 $S --streaming --concurrency 1,4 --duration 6 --warmup-requests 4 --json $OUT/server_streaming.json 2>&1 | tee $OUT/server_streaming.txt
  kill $SPID; wait $SPID 2>/dev/null
  echo "server tracebacks: $(grep -c Traceback $OUT/server.log)"
fi
