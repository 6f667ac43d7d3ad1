#!/usr/bin/env bash
# Run HERE: bash recipes/bundled_voice/gate_partial.sh [N]   (finish.sh runs it with N_PARTIAL, default 20)
# Gates the voices that the partial models make (recipes/bundled_voice/partial/, with the shipped
# FastSpeech, and the shipped WaveGlow where partial/ has none): FastSpeech + WaveGlow,
# Tacotron2 + Griffin-Lim, Tacotron2 + WaveGlow, each on the first N sentences of val.txt
# (0: nothing), into results/gate_partial_VOICE_N.json, and prints each WER with the steps its
# models were trained for. VOICES (default: all three) picks some of them, e.g.
# VOICES="slt-tacotron2 slt-tacotron2-waveglow"; they run in parallel, one thread each
# (about 7 minutes for two voices on 100 sentences on the 2-core machine).
set -euo pipefail
N_PARTIAL=${1:-20}
VOICES=${VOICES:-slt-waveglow slt-tacotron2 slt-tacotron2-waveglow}
for v in $VOICES; do   # checked before any work
  case $v in slt-waveglow|slt-tacotron2|slt-tacotron2-waveglow) ;;
    *) echo "gate_partial.sh: unknown voice '$v' in VOICES (slt-waveglow, slt-tacotron2, slt-tacotron2-waveglow)" >&2; exit 2 ;;
  esac
done
cd "$(git rev-parse --show-toplevel)"
R=recipes/bundled_voice
if [ "$N_PARTIAL" -gt 0 ]; then
  V=$(mktemp -d)
  mkdir -p $V/slt $V/slt-tacotron2 $V/slt-waveglow
  cp tts/voices/slt/fastspeech.pt $V/slt/
  for m in tacotron2 waveglow; do [ -f $R/partial/$m.pt ] && cp $R/partial/$m.pt $V/slt-$m/; done
  # no partial WaveGlow: the shipped one (behind the partial Tacotron2)
  [ -f $V/slt-waveglow/waveglow.pt ] || cp tts/voices/slt-waveglow/waveglow.pt $V/slt-waveglow/
  python3 -m tts.train manifests --out $V --name slt > /dev/null
  pids=()
  for v in $VOICES; do
    if [ ! -f $V/$v/voice.json ]; then echo "gate_partial.sh: no voice $v (partial/ lacks its model)" >&2; continue; fi
    OMP_NUM_THREADS=1 python3 -m tts.train gate $V/$v --texts ../shared/data/ljspeech/val.txt --n "$N_PARTIAL" \
      --out $R/results/gate_partial_${v}_${N_PARTIAL}.json > /dev/null &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  for v in $VOICES; do
    [ -f $V/$v/voice.json ] || continue
    python3 - "$R/results/gate_partial_${v}_${N_PARTIAL}.json" "$R/partial" <<'PY'
import json, os, sys, torch
res = json.load(open(sys.argv[1]))
name = res["voice"].rstrip("/").rsplit("/", 1)[-1]
src = {m: f"{sys.argv[2]}/{m}.pt" if os.path.isfile(f"{sys.argv[2]}/{m}.pt") else f"tts/voices/slt-{m}/{m}.pt"
       for m in ("tacotron2", "waveglow")}
steps = {m: int(torch.load(src[m], map_location="cpu", weights_only=True)["iteration"])
         for m in ("tacotron2", "waveglow") if m in name}
print(f"{name}: WER {100 * res['wer']:.1f} % on {res['n']} sentences, steps {steps}")
PY
  done
fi
