#!/bin/bash
# Second device run: GPU tests, tts-bench T2 b1 --verify / b8 and FastSpeech --verify with the new defaults,
# then the issue-5 server benchmark (random NGC voice, 580 steps per call). Logs under $OUT.
set -o pipefail
source tools/gpu/env.sh
[ -d .whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
unset TRITON_CACHE_DIR
STEPS=${STEPS:-tests,t2,fs,server}
R=$PWD; B="python3 /tmp/pp/tts/cli/bench.py"
if [[ $STEPS == *tests* ]]; then
  (cd /tmp && TTS_GPU_REPORT=$OUT timeout ${TEST_TIMEOUT:-200} python3 -m pytest -q -p no:cacheprovider -m gpu \
     $R/tests/test_engines_gpu.py $R/tests/test_plugins_decoder.py $R/tests/test_plugins_waveglow.py -rs 2>&1 | tail -40) > $OUT/pytest_gpu.log
  tail -6 $OUT/pytest_gpu.log
fi
if [[ $STEPS == *t2* ]]; then
  timeout 100 $B --batch 1 --verify --output $OUT/t2_b1_fp16.json > $OUT/t2_b1_fp16.txt 2>&1; grep "end to end\|decoder \|waveglow\|verify" $OUT/t2_b1_fp16.txt | cut -c1-170
  timeout 80 $B --batch 8 --repeats 5 --output $OUT/t2_b8_fp16.json > $OUT/t2_b8_fp16.txt 2>&1; grep "end to end\|decoder \|waveglow" $OUT/t2_b8_fp16.txt | cut -c1-170
fi
if [[ $STEPS == *fs* ]]; then
  timeout 80 $B --acoustic fastspeech --batch 1 --verify --output $OUT/fs_b1_fp16.json > $OUT/fs_b1_fp16.txt 2>&1; grep "end to end\|fastspeech \|verify" $OUT/fs_b1_fp16.txt | cut -c1-170
fi
if [[ $STEPS == *server* ]]; then
  V=/tmp/voice; python3 tools/gpu/server_bench.py make $V
  cd /tmp; python3 /tmp/pp/tts/cli/server.py --tacotron2 $V/t2.pt --waveglow $V/wg.pt --device cuda --precision fp16 \
     --host 127.0.0.1 --port 50077 --metrics-port -1 --max-batch-size 64 --max-queue-size 1024 > $OUT/server.log 2>&1 &
  SPID=$!; cd $R
  for i in $(seq 1 120); do grep -q "serving on" $OUT/server.log && break; sleep 1; done
  tail -3 $OUT/server.log
  timeout ${SERVER_TIMEOUT:-200} python3 tools/gpu/server_bench.py load 127.0.0.1:50077 ${LEVELS:-1,8,16,32,64} ${SECS:-12} $OUT/server_bench.json 2>&1 | tee $OUT/server_bench.txt
  kill $SPID; echo "server log: $(grep -c Traceback $OUT/server.log) tracebacks"; grep -A3 "ERROR" $OUT/server.log | head -20
  grep -v "reached max_decoder_steps" $OUT/server.log > $OUT/server_errors.log
fi
