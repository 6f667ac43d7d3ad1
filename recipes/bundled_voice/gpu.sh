#!/usr/bin/env bash
# Run ON THE GPU MACHINE (through the device tool), from the repository root:
#   bash recipes/bundled_voice/gpu.sh STAGE [ARGS]
# with carry [".debs", ".whl", ".recipe_data"] (made once by fetch_deps.sh; TEACHER=hibari needs no
# .debs). build/bundled_voice (corpus and full checkpoints) is an ignored build folder: it survives
# between calls only while the machine stays warm.
# STAGE:
#   corpus          build the corpus from train.txt on all cores (CORPUS_LIMIT: that many lines;
#                   CORPUS_OFFSET: after skipping that many) with TEACHER: festival (the default:
#                   unpacks Festival from .debs with dpkg -x) or hibari (from .recipe_data/hibari:
#                   the model, its signal processing and the G2P of train.txt made by fetch_deps.sh)
#   train MINUTES   train MODELS (default "fastspeech tacotron2 waveglow"; any of those and hifigan) side
#                   by side from scratch (or resuming their checkpoints in $W/ckpt); UNTIL a deadline too;
#                   SETTINGS_<model> (e.g. SETTINGS_hifigan='{"amp": true}') that trainer's settings;
#                   INIT_<model> an exported file it starts from when $W/ckpt has no checkpoint of it
#   pack            export fp16 voices + loss plots into $OUT (files <= 15 MiB)
#   all MINUTES     corpus, then train, then pack (one call)
#   cont MODEL MIN  continue one model (fastspeech, tacotron2, waveglow, hifigan): resume $W/ckpt if
#                   this (warm) machine has it, else start from INIT (default: its shipped file in
#                   tts/voices; hifigan: tts/voices/slt-hifigan/hifigan.pt, from scratch while there is
#                   none) at the step it records; with TEACHER=hibari the files of tts/voices/heart
#                   and heart-tacotron2 (VOICE_NAME: another name)
#   pack-only M...  export just these models' fp16 files + loss logs into $OUT
#   chunk SECONDS   corpus if missing, WaveGlow + Tacotron2 side by side until SECONDS into the
#                   call, then pack-only both
#   chunk --steps N the same, each model exactly N steps (no wall-clock budget)
# Budgets: MINUTES / SECONDS are wall-clock; STEPS=N (train, cont; `chunk --steps N` sets it) makes
# each trainer take exactly N steps instead; TO_STEP=K stops a trainer at total step K (with either
# budget: how the recipe ends a stage at the step the shipped files record).
# A warm machine keeps $W: `cont` then resumes $W/ckpt whatever INIT says, and `corpus` keeps the
# corpus it built whatever CORPUS_OFFSET now says: begin a call with `rm -rf build/bundled_voice`
# to start afresh.
# Environment: WORK_DIR (default build/bundled_voice), CORPUS_LIMIT / CORPUS_OFFSET / CORPUS_SHARDS /
# TEACHER (corpus), RECIPE_DATA (default .recipe_data), DEVICE (default cuda), BATCH, GRAPH (auto|on|off|static), INIT, SETTINGS (cont: a JSON of
# training settings, tts/train/tasks.py; for waveglow a "graph" key there is the trainer's --graph),
# WG_SETTINGS / T2_SETTINGS (chunk's SETTINGS for each model; WaveGlow's default
# {"amp": true, "compile": true, "graph": true}), THREADS (torch CPU threads per trainer: 4 in
# train, 6 in cont), LOG_EVERY (default 50), WHL (wheel folder), OUT (exports).
set -euo pipefail
STAGE=${1:?stage}; MIN=${2:-8}
ROOT=$(pwd)
W=${WORK_DIR:-build/bundled_voice}
mkdir -p $W
export PYTHONUNBUFFERED=1
if ! python3 -c "import inflect, unidecode, soundfile" 2>/dev/null && [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site ${WHL:-.whl}/*.whl
fi
export PYTHONPATH=/tmp/site:$ROOT
PREFIX=/tmp/festival
# the voices' name and layout follow the teacher (tts.train.export.write_manifests)
if [ "${TEACHER:-festival}" = hibari ]; then NAME=${VOICE_NAME:-heart}; HIFIGAN_INIT=tts/voices/$NAME/hifigan.pt
else NAME=${VOICE_NAME:-slt}; HIFIGAN_INIT=tts/voices/$NAME-hifigan/hifigan.pt; fi
RD=${RECIPE_DATA:-.recipe_data}
case $RD in /*) ;; *) RD=$ROOT/$RD ;; esac

corpus() {
  local texts=$W/train.txt   # fetch_deps.sh gzips the transcripts so that the carry stays small
  if [ -f $RD/train.txt.gz ]; then python3 -c "import gzip, shutil, sys; shutil.copyfileobj(gzip.open(sys.argv[1]), sys.stdout.buffer)" $RD/train.txt.gz > $texts
  elif [ -f $RD/train.txt ]; then cp $RD/train.txt $texts
  else echo "gpu.sh: no $RD/train.txt.gz: run recipes/bundled_voice/fetch_deps.sh and carry .recipe_data" >&2; exit 2
  fi
  if [ -n "${CORPUS_OFFSET:-}" ]; then   # a different slice of train.txt per call: more variety
    tail -n +$((CORPUS_OFFSET + 1)) $W/train.txt > $W/texts_slice.txt
    texts=$W/texts_slice.txt
    if [ ! -s $texts ]; then
      echo "gpu.sh: CORPUS_OFFSET=$CORPUS_OFFSET is past the end of train.txt ($(wc -l < $W/train.txt) lines)" >&2
      exit 2
    fi
    local left total; left=$(wc -l < $texts); total=$(wc -l < $W/train.txt)
    if [ -n "${CORPUS_LIMIT:-}" ] && [ "$left" -lt "$CORPUS_LIMIT" ]; then   # a short slice overfits quietly
      echo "gpu.sh: CORPUS_OFFSET=$CORPUS_OFFSET leaves $left of train.txt's $total lines, fewer than CORPUS_LIMIT=$CORPUS_LIMIT: pick an offset at most $((total - CORPUS_LIMIT))" >&2
      exit 2
    fi
  fi
  case ${TEACHER:-festival} in
    hibari)
      # hibari without its G2P: its model and signal processing from $RD/hibari (first on the path,
      # so the carried files are the ones that run), the phoneme ids of every text from g2p.npz
      if [ ! -f $RD/hibari/g2p.npz ]; then
        echo "gpu.sh: no $RD/hibari/g2p.npz: run recipes/bundled_voice/fetch_deps.sh hibari and carry .recipe_data" >&2
        exit 2
      fi
      PYTHONPATH=$RD/hibari:$PYTHONPATH OMP_NUM_THREADS=1 python3 -m tts.train corpus --teacher hibari \
        --hibari-g2p $RD/hibari/g2p.npz --texts $texts --out $W/corpus --shards ${CORPUS_SHARDS:-64} \
        --jobs "$(nproc)" ${CORPUS_LIMIT:+--limit $CORPUS_LIMIT} ;;
    festival)
      if [ ! -x $PREFIX/usr/bin/festival ]; then
        for f in .debs/*.deb; do dpkg -x "$f" $PREFIX; done
      fi
      python3 -m tts.train corpus --texts $texts --out $W/corpus \
        --shards ${CORPUS_SHARDS:-64} --jobs "$(nproc)" --festival-prefix $PREFIX ${CORPUS_LIMIT:+--limit $CORPUS_LIMIT} ;;
    *) echo "gpu.sh: TEACHER must be festival or hibari, not '$TEACHER'" >&2; exit 2 ;;
  esac
}

# budget MINUTES: the trainer's budget arguments: STEPS steps, else MINUTES of training; TO_STEP caps
# the total step either way
budget() {
  if [ -n "${STEPS:-}" ]; then echo "--steps $STEPS"; else echo "--max-minutes $1"; fi
  if [ -n "${TO_STEP:-}" ]; then echo "--max-steps $TO_STEP"; fi
}

train() {
  local m=$1
  nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null || true
  for model in ${MODELS:-fastspeech tacotron2 waveglow}; do
    local sv="SETTINGS_$model" iv="INIT_$model"   # that trainer's --settings, and its --init-from
    python3 -m tts.train train $model --corpus $W/corpus --out $W/ckpt --resume --device ${DEVICE:-cuda} \
      $(budget "$m") --threads ${THREADS:-4} --log-every ${LOG_EVERY:-50} ${UNTIL:+--until $UNTIL} \
      ${!sv:+--settings "${!sv}"} ${!iv:+--init-from "${!iv}"} > $W/train_$model.out 2>&1 &
  done
  wait
  for f in $W/train_*.out; do echo "$f"; tail -n 2 "$f"; done
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null || true
}

# cont MODEL MINUTES: one model alone, resuming its checkpoint or else starting from the exported
# file INIT (default: the shipped one in tts/voices); BATCH overrides the batch size; GRAPH
# (tacotron2 and waveglow; default auto = the CUDA-graphed step of tts/train/t2_static.py or
# wg_static.py on CUDA, with the eager step for what is left of MINUTES if it fails); SETTINGS a
# JSON of training settings.
cont() {
  local model=$1 m=$2 init
  case $model in
    fastspeech) init=${INIT:-tts/voices/$NAME/fastspeech.pt} ;;
    waveglow)   init=${INIT:-tts/voices/$NAME-waveglow/waveglow.pt} ;;
    tacotron2)  init=${INIT:-tts/voices/$NAME-tacotron2/tacotron2.pt} ;;
    hifigan)    init=${INIT:-$HIFIGAN_INIT} ;;
    *) echo "gpu.sh cont: unknown model '$model' (fastspeech, tacotron2, waveglow, hifigan)" >&2; return 2 ;;
  esac
  local settings=${SETTINGS:-} graph=${GRAPH:-}
  if [ "$model" = waveglow ] && [ -n "$settings" ]; then   # a "graph" key is --graph, not a setting
    local g; read -r g settings < <(python3 -c 'import json, sys; d = json.loads(sys.argv[1]); g = d.pop("graph", None)
print({True: "on", False: "off", None: "-"}[g], json.dumps(d))' "$settings")
    [ -n "$graph" ] || [ "$g" = - ] || graph=$g
  fi
  run() {   # run MINUTES GRAPH: one training process, appending to train_MODEL.out
    python3 -m tts.train train $model --corpus $W/corpus --out $W/ckpt --resume --device ${DEVICE:-cuda} \
      $(budget "$1") --threads ${THREADS:-6} --log-every ${LOG_EVERY:-50} ${BATCH:+--batch-size $BATCH} ${2:+--graph $2} \
      ${settings:+--settings "$settings"} ${UNTIL:+--until $UNTIL} \
      $( [ -f "$init" ] && echo --init-from "$init" ) >> $W/train_$model.out 2>&1
  }
  local t0=$SECONDS
  : > $W/train_$model.out
  if ! run "$m" "$graph"; then
    tail -n 20 $W/train_$model.out
    if [ -n "${STEPS:-}" ]; then
      echo "$model: failed with a step budget (no eager fallback: run it again with GRAPH=off)"
      return 1
    elif [ -n "${UNTIL:-}" ] && [ "$(date +%s)" -ge "${UNTIL%.*}" ]; then
      echo "$model: stopped at the deadline (UNTIL)"
    elif [ "$model" != fastspeech ] && [ "$model" != hifigan ] && [ "${graph:-auto}" != off ]; then
      local left; left=$(python3 -c "print(max(0.0, $m - ($SECONDS - $t0) / 60 - 0.2))")
      echo "$model: the graphed step failed; eager for $left more minutes"   # for what is left
      run "$left" off
    fi
  fi
  tail -n 1 $W/train_$model.out
}

# pack-only MODEL...: export just these models' fp16 files + loss logs into $OUT
pack_only() {
  for model in "$@"; do
    python3 -m tts.train export --only $model --ckpt-dir $W/ckpt --out "$OUT"
    cp $W/ckpt/${model}_log.csv "$OUT/${model}_log_continued.csv"
    if [ "$(stat -c %s "$OUT/$model.pt")" -gt 15728640 ]; then   # one file back may not exceed 16 MiB
      split -b 15M -d "$OUT/$model.pt" "$OUT/$model.pt.part" && rm "$OUT/$model.pt"
    fi
  done
  ls -la "$OUT"
}

pack() {
  rm -rf $W/voices && python3 -m tts.train export --ckpt-dir $W/ckpt --out $W/voices --name $NAME \
    --teacher ${TEACHER:-festival}
  mkdir -p $W/plots && python3 -m tts.train plot --ckpt-dir $W/ckpt --out $W/plots || true
  mkdir -p $W/logs && cp $W/ckpt/*_log.csv $W/train_*.out $W/corpus/summary.json $W/logs/ 2>/dev/null || true
  tar -C $W -cf $W/voices.tar voices
  split -b 15M -d $W/voices.tar "$OUT/voices.tar.part"
  tar -C $W -czf "$OUT/logs.tgz" logs plots
  ls -la "$OUT"
}

# chunk SECONDS | chunk --steps N: one device call's worth of training of WaveGlow and Tacotron2
# side by side on the one GPU: build the corpus unless this (warm) machine has it, train, export
# both. With SECONDS both trainers stop at the deadline UNTIL (SECONDS after the call began, set-up
# included: a WaveGlow with GTA mels and a compiled step spends a minute or two before its first
# step, which --max-minutes would not count); for a 600 s call at most 530 on a cold machine, 500 on
# a warm one (the exports take about a minute). A watchdog sends SIGABRT to a trainer still running
# 25 s past the deadline (PYTHONFAULTHANDLER prints where it was into train_MODEL.out), so the
# exports always run. With --steps N each trainer takes exactly N steps.
# On a cold machine the WaveGlow does not wait for the whole corpus: it starts once a quarter of
# the shards are finished (a vocoder needs audio, not every text) and trains on those.
chunk() {
  local until="" cpid="" wgpid watchdog=""
  if [ "${1:-}" = --steps ]; then
    export STEPS=${2:?chunk --steps N}
  else
    until=${1:-500}
    export UNTIL=$(( $(date +%s) + until - SECONDS )) PYTHONFAULTHANDLER=1
    ( sleep $(( until - SECONDS + 25 )); pkill -ABRT -f "tts.train train .*--out $W/ckpt" || true ) &
    watchdog=$!
  fi
  left() {   # what each trainer has left: minutes until the deadline, or the step budget
    if [ -n "$until" ]; then python3 -c "print(round(max(0.1, ($until - $SECONDS) / 60), 2))"; else echo 0; fi
  }
  say() { if [ -n "$until" ]; then echo "$(left) minutes"; else echo "$STEPS steps"; fi; }
  if ! ls $W/corpus/shard_*/DONE >/dev/null 2>&1; then
    corpus > $W/corpus.log 2>&1 &
    cpid=$!
    local need=$(( ${CORPUS_SHARDS:-64} / 4 )); [ $need -ge 1 ] || need=1
    while kill -0 $cpid 2>/dev/null && [ "$(ls $W/corpus/shard_*/DONE 2>/dev/null | wc -l)" -lt $need ]; do
      sleep 2
    done
  fi
  echo "waveglow: $(ls $W/corpus/shard_*/DONE 2>/dev/null | wc -l) shards, $(say)"
  SETTINGS=${WG_SETTINGS:-'{"amp": true, "compile": true, "graph": true}'} cont waveglow "$(left)" &
  wgpid=$!
  if [ -n "$cpid" ]; then
    wait $cpid || { tail -20 $W/corpus.log; kill $wgpid; exit 1; }
    tail -n 1 $W/corpus.log
  fi
  echo "tacotron2: $(say)"
  local status=0
  SETTINGS=${T2_SETTINGS:-} cont tacotron2 "$(left)" || status=$?
  wait $wgpid || { status=$?; echo "waveglow: exit status $status"; }
  [ -z "$watchdog" ] || kill $watchdog 2>/dev/null || true
  pack_only waveglow tacotron2
  tar -C $W -czf "$OUT/outs.tgz" train_waveglow.out train_tacotron2.out
  return $status
}

case $STAGE in
  corpus) corpus ;;
  train) train "$MIN" ;;
  pack) pack ;;
  cont) cont "$2" "${3:-8}" ;;
  pack-only) shift; pack_only "$@" ;;
  chunk) shift; chunk "$@" ;;
  all) corpus; train "$MIN"; pack ;;
  *) echo "unknown stage $STAGE" >&2; exit 2 ;;
esac
