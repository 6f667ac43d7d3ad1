"""How smooth are the acoustic models' mels? Per-band statistics over time, real against predicted.

    python3 recipes/bundled_voice/mel_stats.py /tmp/val80 20 tts/voices/slt-tacotron2/tacotron2.pt

On the first N utterances of a held-out corpus (``tts.train corpus`` of val.txt, as for
``t2_probe.py``): the teacher's mels, the shipped FastSpeech's and the Tacotron2's free-running
ones (seed 0), each utterance's per-band standard deviation over time (the "global variance"
that over-smoothed statistical models lose), mean absolute frame-to-frame change, and mean;
averaged over utterances, printed by quarters of the 80 mel bands. Results of 2026-11-22: recipe
README, "eleventh part".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from tts.checkpoints import load_fastspeech, load_tacotron2
from tts.train.corpus import Corpus

ROOT = Path(__file__).resolve().parents[2]


def stats(mels: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {"std": np.mean([m.std(0) for m in mels], 0),
            "delta": np.mean([np.abs(np.diff(m, axis=0)).mean(0) for m in mels], 0),
            "mean": np.mean([m.mean(0) for m in mels], 0)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("n", type=int)
    ap.add_argument("tacotron2")
    ap.add_argument("--fastspeech", default=str(ROOT / "tts/voices/slt/fastspeech.pt"))
    a = ap.parse_args()
    corpus = Corpus(a.corpus)
    n = min(a.n, len(corpus))
    fs = load_fastspeech(a.fastspeech).float().eval()
    t2 = load_tacotron2(a.tacotron2).float().eval()
    real = [np.asarray(corpus[k].mel, dtype=np.float32) for k in range(n)]
    torch.manual_seed(0)
    with torch.no_grad():
        fsm = [fs.infer(torch.tensor(corpus[k].ids)[None]).mel[0].numpy() for k in range(n)]
        t2m = []
        for k in range(n):
            o = t2.infer(torch.tensor(corpus[k].ids)[None], torch.tensor([len(corpus[k].ids)]))
            t2m.append(o.mel_postnet[0, :, :int(o.mel_lengths[0])].T.numpy())
    rows = {"real": stats(real), "fastspeech": stats(fsm), "tacotron2": stats(t2m)}
    q = real[0].shape[1] // 4
    for key in ("std", "delta", "mean"):
        for i in range(4):
            b = slice(i * q, (i + 1) * q)
            print(f"{key:5s} bands {i * q:2d}-{(i + 1) * q - 1:2d}  "
                  + "  ".join(f"{name} {r[key][b].mean():.3f}" for name, r in rows.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
