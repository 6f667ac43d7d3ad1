#!/bin/bash
# Issue 5 on the device: the scheduler's slot decoder (Tacotron2Engine.slots) behind tts-server.
#   1. GPU tests of the slot decoder and the CUDA server test;
#   2. tts-server (fp16, --max-batch-size 64, continuous batching) on loopback with the random NGC-size
#      voice of tools/gpu/server_bench.py (gate never fires; every call max_decoder_steps=580 = 6.73 s
#      of audio, as the earlier H100 server figures): streaming TTFA at c=1, unary x real time at c=1 and 64,
#      for the benchmark's two sentences and one of 128 characters;
#   3. the same server with the eager scheduler (decoder="eager", the path measured before) as the
#      baseline of the same run, shorter.
# Logs and tables land in $OUT (summary.txt first). About 4-5 minutes. STEPS=tests,slots,eager picks stages.
set -o pipefail
source tools/gpu/env.sh
[ -d .whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=$PYTHONPATH:/tmp/site
unset TRITON_CACHE_DIR
R=$PWD; STEPS=${STEPS:-tests,slots,eager}; SECS=${SECS:-8}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"; } \
  > $OUT/env.txt 2>&1
cat $OUT/env.txt

if [[ $STEPS == *tests* ]]; then
  (cd /tmp && TTS_GPU_REPORT=$OUT timeout ${TEST_TIMEOUT:-150} python3 -m pytest -q -p no:cacheprovider -m gpu -rs -s \
     $R/tests/test_slot_decoder.py "$R/tests/test_engines_gpu.py::test_server_on_cuda_unary_and_streaming" 2>&1 | tail -40) \
     > $OUT/pytest_gpu.log
  grep -E "slot decoder|server_cuda|passed|failed|error" $OUT/pytest_gpu.log | tail -8
fi

V=/tmp/voice; python3 tools/gpu/server_bench.py make $V > /dev/null

# start_server NAME DECODER: tts-server on 127.0.0.1:50077 with TacotronScheduler(decoder=DECODER); pid in SPID
start_server() {
  cd /tmp
  SCHED_VB=${SCHED_VB:-16} SCHED_DECODER=$2 python3 - --tacotron2 $V/t2.pt --waveglow $V/wg.pt --device cuda --precision fp16 \
     --host 127.0.0.1 --port 50077 --metrics-port -1 --max-batch-size 64 --max-queue-size 1024 > $OUT/server_$1.log 2>&1 <<'EOF' &
import os, sys
import tts.server.scheduler as S
init = S.TacotronScheduler.__init__
def patched(self, *a, **k):
    k.setdefault("decoder", os.environ["SCHED_DECODER"])
    k.setdefault("vocoder_batch", int(os.environ.get("SCHED_VB", "16")))
    init(self, *a, **k)
S.TacotronScheduler.__init__ = patched
from tts.cli.server import main
sys.exit(main(sys.argv[1:]))
EOF
  SPID=$!; cd $R
  for i in $(seq 1 ${START_TIMEOUT:-150}); do grep -q "serving on" $OUT/server_$1.log && break; sleep 1; done
  grep -E "slot decoder|warmed up|serving on|Error" $OUT/server_$1.log | tail -4
}
stop_server() {
  kill $SPID; wait $SPID 2>/dev/null
  echo "server $1: $(grep -c Traceback $OUT/server_$1.log) tracebacks"
}

# measure NAME SECS: streaming c=1, unary c=1, unary c=64 for two text sets -> $OUT/load_NAME.{txt,json}
measure() {
  (cd /tmp && timeout ${LOAD_TIMEOUT:-150} python3 - $1 $2 $OUT <<'EOF' 2>&1 | tee $OUT/load_$1.txt)
import asyncio, json, sys
from tts.server.loadgen import LoadConfig, format_table, run_level
name, secs, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
sets = {"bench2": ("The quick brown fox jumps over the lazy dog.",
                   "Speech synthesis turns written text into spoken audio."),
        "chars128": ("The quick brown fox jumps over the lazy dog while speech synthesis turns written text "
                     "into clear spoken audio for everyone here.",)}
assert len(sets["chars128"][0]) == 128, len(sets["chars128"][0])
res = {}
for tname, texts in sets.items():
    for mode, c in (("streaming", 1), ("unary", 1), ("unary", 64)):
        if (tname == "chars128" or name == "eager") and mode == "unary" and c == 1:
            continue                     # keep the run short: the issue's figures are TTFA@1 and RTF@64
        if name == "eager" and tname == "chars128":
            continue
        cfg = LoadConfig(target="127.0.0.1:50077", texts=texts, streaming=mode == "streaming", requests=100000,
                         duration_s=secs, warmup=4 if c == 1 else 64, timeout_s=120,
                         options=(("max_decoder_steps", 580),))
        r = asyncio.run(run_level(cfg, c))
        row = r.row() | {"errors_by_code": r.errors}
        res[f"{tname} {mode} c={c}"] = row
        print(f"{name} {tname} {mode} c={c}: {row['audio_rtf']:.1f}x real time, {row['throughput_rps']:.1f} req/s, "
              f"p50 {row['p50_ms']:.1f} ms, TTFA p50/p99 {row['ttfa_p50_ms']:.1f}/{row['ttfa_p99_ms']:.1f} ms, "
              f"errors {row['errors']}", flush=True)
json.dump(res, open(f"{out}/load_{name}.json", "w"), indent=1)
EOF
}

if [[ $STEPS == *slots* ]]; then
  start_server slots auto            # auto = slots for the fast engine on CUDA
  measure slots $SECS
  stop_server slots
fi
if [[ $STEPS == *vb16* ]]; then      # the same with up to 16 pieces per vocoder call
  SCHED_VB=16 start_server vb16 auto
  measure vb16 $SECS
  stop_server vb16
fi
if [[ $STEPS == *eager* ]]; then
  start_server eager eager
  measure eager $(( SECS / 2 > 4 ? SECS / 2 : 4 ))
  stop_server eager
fi
{ echo "== $(cat $OUT/env.txt | tr '\n' ' ')"; grep -h "real time" $OUT/load_*.txt; } > $OUT/summary.txt
cat $OUT/summary.txt
