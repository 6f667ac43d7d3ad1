#!/usr/bin/env bash
# Run HERE (the CPU machine) on what a GPU call returned:
#   bash recipes/bundled_voice/finish.sh FILES_AT [DIR]
# FILES_AT: the folder where the device tool put $OUT's files: from `gpu.sh pack`
# (voices.tar.partNN + logs.tgz) or from `gpu.sh chunk` / `pack-only` (MODEL.pt or MODEL.pt.partNN,
# MODEL_log_continued.csv).
# DIR (default build/bundled_voice_candidates): a voices folder with the bundled voices made from
# the models that came back and, for the others, the shipped files in tts/voices (where there are
# any), with their manifests. TEACHER (hibari, the default, or festival) names the layout: heart
# and heart-tacotron2 (FastSpeech + HiFi-GAN, Tacotron2), or slt, slt-tacotron2, slt-waveglow and
# slt-hifigan. The loss logs that came back go to DIR/logs/. It prints each model's step and the
# gate commands. Nothing in tts/voices changes: a model ships by hand once it passed the gate (README).
set -euo pipefail
SRC=${1:?folder with the files of gpu.sh pack, chunk or pack-only}
cd "$(git rev-parse --show-toplevel)"
DIR=${2:-build/bundled_voice_candidates}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
TEACHER=${TEACHER:-hibari}
if [ "$TEACHER" = hibari ]; then NAME=heart; PAIRS="heart/fastspeech heart/hifigan heart-tacotron2/tacotron2"
else NAME=slt; PAIRS="slt/fastspeech slt-tacotron2/tacotron2 slt-waveglow/waveglow slt-hifigan/hifigan"; fi
mkdir -p "$DIR/logs"
if ls "$SRC"/voices.tar.part* >/dev/null 2>&1; then
  cat "$SRC"/voices.tar.part* > $T/voices.tar
  tar -C $T -xf $T/voices.tar                 # voices/VOICE/MODEL.pt
  for f in $T/voices/*/*.pt; do cp "$f" $T/; done
  tar -C "$DIR" -xzf "$SRC/logs.tgz"          # logs/ (loss logs, train outputs) and plots/
else
  for m in fastspeech tacotron2 waveglow hifigan; do
    if ls "$SRC"/$m.pt.part* >/dev/null 2>&1; then cat "$SRC"/$m.pt.part* > $T/$m.pt
    elif [ -f "$SRC/$m.pt" ]; then cp "$SRC/$m.pt" $T/; fi
  done
  for f in "$SRC"/*_log_continued.csv; do [ -f "$f" ] && cp "$f" "$DIR/logs/"; done
fi
for pair in $PAIRS; do
  m=${pair#*/}
  if [ -f $T/$m.pt ]; then from=$T/$m.pt; src="came back"
  elif [ -f tts/voices/$pair.pt ]; then from=tts/voices/$pair.pt; src="shipped"
  else continue; fi                           # neither came back nor shipped: no such voice
  mkdir -p "$DIR/${pair%/*}" && cp "$from" "$DIR/$pair.pt"
  python3 - "$DIR/$pair.pt" "$src" <<'PY'
import sys, torch
ck = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
step = ck.get('iteration', ck.get('step', (ck.get('train_state') or {}).get('iters_all', 0)))
print(f"{sys.argv[1]}: step {int(step)} ({sys.argv[2]})")
PY
done
python3 -m tts.train manifests --out "$DIR" --name $NAME --teacher $TEACHER
cat <<EOF
Gate a voice (pocketsphinx WER on the 100 held-out sentences; a few minutes per seed on 2 cores):
  python3 -m tts.train gate $DIR/VOICE --texts tests/fixtures/ljspeech_val_100.txt --n 100 --seed K --out $DIR/gate_VOICE_seedK.json
Ship a model that passed: copy its file from $DIR into the same place under tts/voices, then
  python3 -m tts.train manifests --out tts/voices --name $NAME --teacher $TEACHER
EOF
