"""Teacher forcing against free running: is a Tacotron2's fit the problem, or its inference?

    head -n 80 ../shared/data/ljspeech/val.txt > /tmp/val80.txt
    python3 -m tts.train corpus --texts /tmp/val80.txt --out /tmp/val80 --shards 2 --jobs 2
    python3 recipes/bundled_voice/t2_probe.py /tmp/val80 12 T2.pt [T2.pt ...] [--out OUT.json]

For each Tacotron2 file, on the held-out corpus (Festival's audio of val.txt, our mel):

- ``tf_mel_postnet``: the training loss (MSE after the postnet) under teacher forcing, eval mode
  but the prenet's dropout on (as trained and as DLE infers), torch seed 0, over the whole corpus;
- ``free_dist``: free-running inference (``Tacotron2.infer``, seed 0) on the first N utterances,
  DTW-aligned to the teacher's mel (L1 frame cost), mean |difference of log-mel| per band,
  also by quarters of the mel bands; ``length_ratio``: frames of the inference / the teacher's.

The shipped FastSpeech (``tts/voices/slt/fastspeech.pt``) gets the free-running row too, as
the yardstick. Results of 2026-11-22: recipe README, "ninth part".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from tts.checkpoints import load_fastspeech, load_tacotron2
from tts.train import losses
from tts.train.corpus import Corpus
from tts.train.data import acoustic_batch

ROOT = Path(__file__).resolve().parents[2]


def dtw_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Frame pairs ``[K, 2]`` of the cheapest monotonic alignment of ``a [Ta, M]`` to ``b [Tb, M]``
    (mean absolute difference per frame pair; steps (1, 1), (1, 0), (0, 1))."""
    cost = np.abs(a[:, None, :] - b[None, :, :]).mean(-1)
    ta, tb = cost.shape
    acc = np.full((ta + 1, tb + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, ta + 1):
        ci, prev, row = cost[i - 1], acc[i - 1], acc[i]
        for j in range(1, tb + 1):
            row[j] = ci[j - 1] + min(prev[j - 1], prev[j], row[j - 1])
    i, j, pairs = ta, tb, []
    while i > 0 and j > 0:
        pairs.append((i - 1, j - 1))
        k = int(np.argmin([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]]))
        i, j = (i - 1, j - 1) if k == 0 else (i - 1, j) if k == 1 else (i, j - 1)
    return np.array(pairs[::-1])


def free_running_distance(mels: list[np.ndarray], corpus: Corpus) -> dict[str, float]:
    """``mels[k] [T, n_mel]`` against ``corpus[k].mel`` after DTW."""
    per_band, ratio = [], []
    for k, m in enumerate(mels):
        t = corpus[k].mel
        p = dtw_pairs(m, t)
        per_band.append(np.abs(m[p[:, 0]] - t[p[:, 1]]).mean(0))
        ratio.append(len(m) / len(t))
    d = np.mean(per_band, 0)
    q = len(d) // 4
    return {"free_dist": float(d.mean()), **{f"free_dist_bands_{i * q}_{(i + 1) * q - 1}":
                                              float(d[i * q:(i + 1) * q].mean()) for i in range(4)},
            "length_ratio": float(np.mean(ratio))}


@torch.no_grad()
def teacher_forced_loss(model, corpus: Corpus, batch: int = 8) -> float:
    torch.manual_seed(0)
    total, n = 0.0, 0
    for k in range(0, len(corpus), batch):
        b = acoustic_batch(corpus, list(range(k, min(k + batch, len(corpus)))))
        mel = b.mel.transpose(1, 2)
        out = losses.tacotron2_forward(model, b.ids, b.input_lengths, mel)
        _, logs = losses.tacotron2_loss(out, mel, b.mel_lengths, None, b.input_lengths, 0.0)
        total += float(logs["mel_postnet"]) * len(b.ids)
        n += len(b.ids)
    return total / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("n", type=int)
    ap.add_argument("tacotron2", nargs="+")
    ap.add_argument("--fastspeech", default=str(ROOT / "tts/voices/slt/fastspeech.pt"))
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    corpus = Corpus(a.corpus)
    n = min(a.n, len(corpus))
    rows = {}
    fs = load_fastspeech(a.fastspeech).float().eval()
    rows["fastspeech"] = free_running_distance(
        [fs.infer(torch.tensor(corpus[k].ids)[None]).mel[0].numpy() for k in range(n)], corpus)
    print("fastspeech", json.dumps(rows["fastspeech"]), flush=True)
    for f in a.tacotron2:
        m = load_tacotron2(f).eval()
        row = {"tf_mel_postnet": teacher_forced_loss(m, corpus)}
        torch.manual_seed(0)
        mels = []
        for k in range(n):
            o = m.infer(torch.tensor(corpus[k].ids)[None], torch.tensor([len(corpus[k].ids)]))
            mels.append(o.mel_postnet[0, :, :int(o.mel_lengths[0])].T.numpy())
        row.update(free_running_distance(mels, corpus))
        rows[f] = row
        print(f, json.dumps(row), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"corpus": a.corpus, "n": n, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
