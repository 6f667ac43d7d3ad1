#!/usr/bin/env bash
# Run HERE after the GPU run: bash recipes/bundled_voice/finish.sh FILES_AT
# (FILES_AT: the folder where the device tool put $OUT's files). Reassembles the voices into
# tts/voices/, copies loss curves and logs into recipes/bundled_voice/results/, runs the gate.
set -euo pipefail
SRC=${1:?folder with voices.tar.partNN and logs.tgz}
cd "$(git rev-parse --show-toplevel)"
cat "$SRC"/voices.tar.part* > /tmp/voices.tar
rm -rf tts/voices && mkdir -p tts/voices
tar -C tts/voices --strip-components=1 -xf /tmp/voices.tar
mkdir -p recipes/bundled_voice/results && tar -C recipes/bundled_voice/results -xzf "$SRC/logs.tgz"
du -ch tts/voices/*/* | tail -1
python3 -m tts.train gate slt --texts ../shared/data/ljspeech/val.txt --n 100 \
  --out recipes/bundled_voice/results/gate_slt.json
python3 -m tts.train gate slt-tacotron2 --texts ../shared/data/ljspeech/val.txt --n 100 \
  --out recipes/bundled_voice/results/gate_slt-tacotron2.json
