"""Dynamic time warping of one mel onto another's frames (the ``gta_generation`` "free" mels).

A Tacotron2 run free (as at inference) makes its own timing: its mel has neither the audio's
length nor its frame times. ``warp_onto`` maps it onto the audio's frames, frame by frame, along
the cheapest monotone path between the two (Euclidean distance of log-mel frames, steps
(1, 1), (1, 0), (0, 1)): each audio frame takes the mean of the free frames the path pairs it
with. A vocoder can then learn, on the real audio, the mels it will be fed at inference.

``dtw_moves`` runs a whole padded batch at once, one anti-diagonal of the cost table per step
(every cell of a diagonal depends only on the two before it), on the batch's device.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

#: moves stored per cell: where the cheapest path into it came from
DIAG, UP, LEFT = 0, 1, 2


def dtw_moves(x: Tensor, y: Tensor) -> Tensor:
    """``x [B, N, D]``, ``y [B, M, D]`` (padded; any float dtype) -> ``[B, N, M] int8`` moves.

    ``moves[b, i, j]`` says which neighbour the cheapest path from (0, 0) to cell (i, j) came
    through (``DIAG``: (i-1, j-1), ``UP``: (i-1, j), ``LEFT``: (i, j-1)). A path to (n-1, m-1)
    only passes through cells with i < n and j < m, so the padding of shorter items never
    enters their paths.
    """
    if x.dim() != 3 or y.dim() != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(f"dtw_moves needs [B, N, D] and [B, M, D], got {tuple(x.shape)} and {tuple(y.shape)}")
    cost = torch.cdist(x.float(), y.float())   # [B, N, M]
    b, n, m = cost.shape
    acc = torch.full((b, n + 1, m + 1), float("inf"), device=cost.device)
    acc[:, 0, 0] = 0.0
    moves = torch.zeros((b, n, m), dtype=torch.int8, device=cost.device)
    for d in range(2, n + m + 1):   # cells (i, j) of acc with i + j = d, 1 <= i <= n, 1 <= j <= m
        i = torch.arange(max(1, d - m), min(n, d - 1) + 1, device=cost.device)
        j = d - i
        cand = torch.stack([acc[:, i - 1, j - 1], acc[:, i - 1, j], acc[:, i, j - 1]], dim=-1)
        best, arg = cand.min(dim=-1)
        acc[:, i, j] = cost[:, i - 1, j - 1] + best
        moves[:, i - 1, j - 1] = arg.to(torch.int8)
    return moves


def backtrack(moves: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The path ``(i, j)`` pairs from (0, 0) to (n-1, m-1) through ``moves [>=n, >=m]``."""
    i, j = n - 1, m - 1
    ii, jj = [i], [j]
    while i > 0 or j > 0:
        mv = int(moves[i, j]) if i > 0 and j > 0 else (UP if i > 0 else LEFT)
        if mv == DIAG:
            i, j = i - 1, j - 1
        elif mv == UP:
            i -= 1
        else:
            j -= 1
        ii.append(i)
        jj.append(j)
    return np.asarray(ii[::-1]), np.asarray(jj[::-1])


def warp(path_i: np.ndarray, path_j: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """``y [M, D]`` onto ``n`` frames: frame i the mean of the ``y`` frames paired with it."""
    out = np.zeros((n, y.shape[1]), np.float64)
    np.add.at(out, path_i, y[path_j].astype(np.float64))
    count = np.bincount(path_i, minlength=n)
    return (out / count[:, None]).astype(np.float32)


def warp_onto(x: list[np.ndarray], y: list[np.ndarray], device: torch.device | str = "cpu"
              ) -> list[np.ndarray]:
    """Each ``y[k] [M_k, D]`` warped onto ``x[k] [N_k, D]``'s frames: ``[N_k, D]`` float32.

    One padded batch (callers batch by length); the paths come from ``dtw_moves`` on
    ``device``, the warping on the CPU.
    """
    if len(x) != len(y):
        raise ValueError(f"warp_onto: {len(x)} targets but {len(y)} mels")
    if not x:
        return []
    n = max(a.shape[0] for a in x)
    m = max(a.shape[0] for a in y)
    d = x[0].shape[1]
    xb = torch.zeros((len(x), n, d))
    yb = torch.zeros((len(y), m, d))
    for k, (a, c) in enumerate(zip(x, y)):
        if a.shape[0] < 1 or c.shape[0] < 1 or a.shape[1] != d or c.shape[1] != d:
            raise ValueError(f"warp_onto: item {k} has shapes {a.shape} and {c.shape}")
        xb[k, :a.shape[0]] = torch.from_numpy(np.asarray(a, np.float32))
        yb[k, :c.shape[0]] = torch.from_numpy(np.asarray(c, np.float32))
    moves = dtw_moves(xb.to(device), yb.to(device)).cpu().numpy()
    out = []
    for k, (a, c) in enumerate(zip(x, y)):
        pi, pj = backtrack(moves[k], a.shape[0], c.shape[0])
        out.append(warp(pi, pj, np.asarray(c), a.shape[0]))
    return out
