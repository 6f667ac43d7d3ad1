#!/usr/bin/env bash
# Run HERE: bash recipes/bundled_voice/gate_partial.sh [N]   (finish.sh runs it with N_PARTIAL, default 20)
# Gates the voices that the partial models make (recipes/bundled_voice/partial/, with the shipped
# FastSpeech, and the shipped Tacotron2 or WaveGlow where partial/ has none): FastSpeech + WaveGlow,
# Tacotron2 + Griffin-Lim, Tacotron2 + WaveGlow, each on the first N sentences of val.txt
# (0: nothing), into results/gate_partial_VOICE_N.json, and prints each WER with the steps its
# models were trained for. VOICES (default: all three) picks some of them, e.g.
# VOICES="slt-tacotron2 slt-tacotron2-waveglow"; they run in parallel, one thread each
# (about 7 minutes for two voices on 100 sentences on the 2-core machine).
# TACOTRON2=FILE and WAVEGLOW=FILE gate other files than partial/'s (e.g. a call's files_at copy);
# RESULTS=DIR (default recipes/bundled_voice/results) is where the JSONs go, e.g.
#   TACOTRON2=/work/stage/c70/tacotron2.pt RESULTS=/tmp/g27000 bash recipes/bundled_voice/gate_partial.sh 100
# SEED=K (default 0) draws other random numbers: the Tacotron2's prenet dropout (on at inference,
# as in DLE) and the WaveGlow's noise. A score moves with it by up to 2.6 points (recipe README,
# "sixteenth part": one seed is worth about +-0.9), so compare files on the mean of four seeds.
set -euo pipefail
N_PARTIAL=${1:-20}
VOICES=${VOICES:-slt-waveglow slt-tacotron2 slt-tacotron2-waveglow}
for v in $VOICES; do   # checked before any work
  case $v in slt-waveglow|slt-tacotron2|slt-tacotron2-waveglow) ;;
    *) echo "gate_partial.sh: unknown voice '$v' in VOICES (slt-waveglow, slt-tacotron2, slt-tacotron2-waveglow)" >&2; exit 2 ;;
  esac
done
case $N_PARTIAL in ''|*[!0-9]*) echo "gate_partial.sh: N must be a whole number of sentences, not '$N_PARTIAL'" >&2; exit 2 ;; esac
SEED=${SEED:-0}
case $SEED in ''|*[!0-9]*) echo "gate_partial.sh: SEED must be a whole number, not '$SEED'" >&2; exit 2 ;; esac
for m in TACOTRON2 WAVEGLOW; do   # a named file must exist (and be readable) before any work
  f=${!m:-}
  if [ -n "$f" ] && [ ! -r "$f" ]; then echo "gate_partial.sh: $m=$f: no such readable file" >&2; exit 2; fi
  if [ -n "$f" ]; then printf -v "$m" '%s' "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")"; fi
done
# the package must be installed (bash install.sh): from the checkout alone `tts` imports but its
# engines (package dir engines/, mapped to tts.engines by pyproject.toml) do not, and every WaveGlow
# voice would fail minutes in
if ! (cd "$(git rev-parse --show-toplevel)" && python3 -c "import tts.engines, tts.train" 2>/dev/null); then
  echo "gate_partial.sh: the tts package is not installed here (tts.engines does not import): run bash install.sh" >&2; exit 2
fi
if [ -n "${RESULTS:-}" ]; then mkdir -p "$RESULTS"; RESULTS=$(cd "$RESULTS" && pwd); fi
cd "$(git rev-parse --show-toplevel)"
R=recipes/bundled_voice
RESULTS=${RESULTS:-$R/results}
T2=${TACOTRON2:-$R/partial/tacotron2.pt}
[ -f "$T2" ] || T2=tts/voices/slt-tacotron2/tacotron2.pt   # no partial Tacotron2: the shipped one
WG=${WAVEGLOW:-$R/partial/waveglow.pt}
[ -f "$WG" ] || WG=tts/voices/slt-waveglow/waveglow.pt   # no partial WaveGlow: the shipped one
if [ "$N_PARTIAL" -gt 0 ]; then
  V=$(mktemp -d)
  mkdir -p $V/slt $V/slt-tacotron2 $V/slt-waveglow
  cp tts/voices/slt/fastspeech.pt $V/slt/
  [ -f "$T2" ] && cp "$T2" $V/slt-tacotron2/tacotron2.pt
  cp "$WG" $V/slt-waveglow/waveglow.pt
  python3 -m tts.train manifests --out $V --name slt > /dev/null
  pids=()
  for v in $VOICES; do
    if [ ! -f $V/$v/voice.json ]; then echo "gate_partial.sh: no voice $v (partial/ lacks its model)" >&2; continue; fi
    OMP_NUM_THREADS=1 python3 -m tts.train gate $V/$v --texts ../shared/data/ljspeech/val.txt --n "$N_PARTIAL" --seed "$SEED" \
      --out "$RESULTS/gate_partial_${v}_${N_PARTIAL}.json" > /dev/null &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  for v in $VOICES; do
    [ -f $V/$v/voice.json ] || continue
    python3 - "$RESULTS/gate_partial_${v}_${N_PARTIAL}.json" "$T2" "$WG" <<'PY'
import json, sys, torch
res = json.load(open(sys.argv[1]))
name = res["voice"].rstrip("/").rsplit("/", 1)[-1]
src = {"tacotron2": sys.argv[2], "waveglow": sys.argv[3]}
steps = {m: int(torch.load(src[m], map_location="cpu", weights_only=True)["iteration"])
         for m in ("tacotron2", "waveglow") if m in name}
print(f"{name}: WER {100 * res['wer']:.1f} % on {res['n']} sentences, steps {steps}")
PY
  done
  rm -rf "$V"
fi
