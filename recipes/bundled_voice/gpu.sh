#!/usr/bin/env bash
# Run ON THE GPU MACHINE through the device tool, from the repository root:
#   bash recipes/bundled_voice/gpu.sh STAGE [MINUTES]
# with carry [".debs", ".whl", ".recipe_data"] (and "build/bundled_voice" is kept between
# calls on a warm machine: it is an ignored build output).
# STAGE:
#   corpus          unpack Festival (dpkg -x), build the corpus from train.txt on all cores
#   train MINUTES   train FastSpeech, Tacotron2 and WaveGlow side by side on the GPU, each
#                   resuming from its last checkpoint, for MINUTES minutes
#   pack            export fp16 voices + loss plots into $OUT (files <= 15 MiB, see README)
#   all MINUTES     corpus, then train, then pack (one call)
#   t2 MINUTES      train Tacotron2 alone (the whole GPU) for MINUTES, resuming from its
#                   checkpoint, or else starting from tts/voices/slt-tacotron2/tacotron2.pt
#                   (INIT overrides; T2_BATCH sets the batch, default 128)
#   pack-t2         export just tacotron2.pt + its loss log into $OUT
set -euo pipefail
STAGE=${1:?stage}; MIN=${2:-8}
ROOT=$(pwd)
W=build/bundled_voice
mkdir -p $W
export PYTHONUNBUFFERED=1
if ! python3 -c "import inflect, unidecode, soundfile" 2>/dev/null && [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site ${WHL:-.whl}/*.whl
fi
export PYTHONPATH=/tmp/site:$ROOT
PREFIX=/tmp/festival

corpus() {
  if [ ! -x $PREFIX/usr/bin/festival ]; then
    for f in .debs/*.deb; do dpkg -x "$f" $PREFIX; done
  fi
  python3 -m tts.train corpus --texts .recipe_data/train.txt --out $W/corpus \
    --shards 64 --jobs "$(nproc)" --festival-prefix $PREFIX ${CORPUS_LIMIT:+--limit $CORPUS_LIMIT}
}

train() {
  local m=$1
  nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null || true
  for model in fastspeech tacotron2 waveglow; do
    python3 -m tts.train train $model --corpus $W/corpus --out $W/ckpt --resume --device ${DEVICE:-cuda} \
      --max-minutes "$m" --threads 4 --log-every 50 > $W/train_$model.out 2>&1 &
  done
  wait
  for f in $W/train_*.out; do echo "$f"; tail -n 2 "$f"; done
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null || true
}

t2() {
  local m=$1 init=${INIT:-tts/voices/slt-tacotron2/tacotron2.pt}
  nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null || true
  python3 -m tts.train train tacotron2 --corpus $W/corpus --out $W/ckpt --resume --device ${DEVICE:-cuda} \
    --max-minutes "$m" --threads 8 --log-every 50 --batch-size ${T2_BATCH:-128} \
    $( [ -f "$init" ] && echo --init-from "$init" ) 2>&1 | tee $W/train_tacotron2.out | tail -n 3
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null || true
}

pack_t2() {
  python3 -m tts.train export --only tacotron2 --ckpt-dir $W/ckpt --out "$OUT"
  cp $W/ckpt/tacotron2_log.csv "$OUT/tacotron2_log_continued.csv"
  ls -la "$OUT"
}

pack() {
  rm -rf $W/voices && python3 -m tts.train export --ckpt-dir $W/ckpt --out $W/voices --name slt
  mkdir -p $W/plots && python3 -m tts.train plot --ckpt-dir $W/ckpt --out $W/plots || true
  mkdir -p $W/logs && cp $W/ckpt/*_log.csv $W/train_*.out $W/corpus/summary.json $W/logs/ 2>/dev/null || true
  tar -C $W -cf $W/voices.tar voices
  split -b 15M -d $W/voices.tar "$OUT/voices.tar.part"
  tar -C $W -czf "$OUT/logs.tgz" logs plots
  ls -la "$OUT"
}

case $STAGE in
  corpus) corpus ;;
  train) train "$MIN" ;;
  pack) pack ;;
  t2) t2 "$MIN" ;;
  pack-t2) pack_t2 ;;
  all) corpus; train "$MIN"; pack ;;
  *) echo "unknown stage $STAGE" >&2; exit 2 ;;
esac
