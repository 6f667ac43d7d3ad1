#!/usr/bin/env bash
# Run HERE after the GPU calls: bash recipes/bundled_voice/finish.sh FILES_AT
# FILES_AT: the folder where the device tool put $OUT's files, from `gpu.sh pack`
# (voices.tar.partNN + logs.tgz) or from `gpu.sh pack-only ...` (MODEL.pt or MODEL.pt.partNN).
# Puts FastSpeech into tts/voices/slt/ (the shipped voice: FastSpeech + Griffin-Lim), WaveGlow and
# Tacotron2 into recipes/bundled_voice/partial/ (candidates, and seeds for further training; one that
# beats the shipped file in tts/voices/slt-waveglow or slt-tacotron2 replaces it by hand), logs into results/
# (the loss logs gzipped: results/logs/*.csv.gz),
# rewrites the manifest and runs the 100-sentence gate; then gates the partial models' voices
# (FastSpeech + WaveGlow, Tacotron2 + Griffin-Lim, Tacotron2 + WaveGlow) on N_PARTIAL sentences
# (default 20; 0 skips) with gate_partial.sh.
set -euo pipefail
SRC=${1:?folder with the files of gpu.sh pack or pack-only}
cd "$(git rev-parse --show-toplevel)"
R=recipes/bundled_voice
T=$(mktemp -d)
if ls "$SRC"/voices.tar.part* >/dev/null 2>&1; then
  cat "$SRC"/voices.tar.part* > $T/voices.tar
  tar -C $T -xf $T/voices.tar                 # voices/slt{,-tacotron2,-waveglow}/MODEL.pt
  for f in $T/voices/*/*.pt; do cp "$f" $T/; done
  mkdir -p $R/results && tar -C $R/results -xzf "$SRC/logs.tgz"
  # the loss logs are kept gzipped in results/logs (tts.train plot and read_log read .csv.gz)
  tar -tzf "$SRC/logs.tgz" | { grep -E '^(\./)?logs/[^/]*\.csv$' || true; } | while read -r f; do
    gzip -9 -n -f "$R/results/$f"
  done
else
  for m in fastspeech tacotron2 waveglow; do
    if ls "$SRC"/$m.pt.part* >/dev/null 2>&1; then cat "$SRC"/$m.pt.part* > $T/$m.pt
    elif [ -f "$SRC/$m.pt" ]; then cp "$SRC/$m.pt" $T/; fi
  done
  mkdir -p $R/results/logs
  for f in "$SRC"/*_log_continued.csv; do   # kept gzipped (gzip -9 -n), as every log in results/logs
    [ -f "$f" ] || continue
    gzip -9 -n -c "$f" > "$R/results/logs/$(basename "$f").gz"
  done
fi
mkdir -p tts/voices/slt $R/partial
[ -f $T/fastspeech.pt ] && cp $T/fastspeech.pt tts/voices/slt/
for m in tacotron2 waveglow; do [ -f $T/$m.pt ] && cp $T/$m.pt $R/partial/; done
python3 -m tts.train manifests --out tts/voices --name slt
du -ch tts/voices/*/* $(ls $R/partial/*.pt 2>/dev/null) | tail -1
python3 -m tts.train gate slt --texts ../shared/data/ljspeech/val.txt --n 100 --out $R/results/gate_slt.json
bash $R/gate_partial.sh "${N_PARTIAL:-20}"
