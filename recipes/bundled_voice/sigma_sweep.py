"""WER of a WaveGlow voice by sigma / denoiser strength, on transcript lines no corpus used.

    python3 recipes/bundled_voice/sigma_sweep.py VOICE_DIR LINE0 N 'SIGMA,STRENGTH;...' OUT.json
        [--texts ../shared/data/ljspeech/train.txt]

The corpus slices of the GPU runs took train.txt lines 0-11999 (lines 12041-12200 only gave
FastSpeech mels to fit the grown WaveGlow's upsampler), so lines 12000-12039 are unseen by
every model, and val.txt stays for the gate. Each cell synthesizes lines
``LINE0 .. LINE0+N-1`` (seed 0), recognizes them with pocketsphinx and scores the WER;
``OUT.json`` is rewritten after every cell. How the manifest defaults of ``tts/train/export.py``
were chosen (results: ``results/sigma_sweep_*.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tts.quality import Recognizer, evaluate, read_transcripts, voice_speaker
from tts.voice import load_voice

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("voice")
    ap.add_argument("line0", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("grid", help="'sigma,strength;sigma,strength;...'")
    ap.add_argument("out")
    ap.add_argument("--texts", default=str(ROOT.parent / "shared" / "data" / "ljspeech" / "train.txt"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    texts = [t for _, t in read_transcripts(args.texts)[args.line0:args.line0 + args.n]]
    rec = Recognizer()
    voice = load_voice(args.voice)
    res = {"voice": args.voice, "lines": [args.line0, args.line0 + len(texts)], "runs": []}
    for cell in args.grid.split(";"):
        sigma, strength = (float(x) for x in cell.split(","))
        r = evaluate(voice_speaker(voice, seed=0, sigma=sigma, denoiser_strength=strength), texts,
                     recognizer=rec)
        res["runs"].append({"sigma": sigma, "denoiser_strength": strength, "wer": r.wer})
        print(f"sigma {sigma} strength {strength}: WER {100 * r.wer:.1f} %", flush=True)
        Path(args.out).write_text(json.dumps(res, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
