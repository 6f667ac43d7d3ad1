"""One step of the Tacotron2 encoder's bidirectional LSTM, both directions in one launch (Triton),
with its PyTorch twin.

The engine (``tts.engines.tacotron2``, ``encoder="triton"``) computes the input
projections of every step of both directions as one GEMM beforehand
(``gx = x @ W_ih^T + b_ih + b_hh``, the backward direction over each item
reversed within its own length), then launches ``bilstm_step`` once per step,
all steps captured in one CUDA graph. A step reads only GPU buffers, the step
index ``t`` is a launch argument.

Layouts (``D`` = 2 directions, ``B`` batch, ``T`` steps, ``H`` hidden):
``gx [T, D, B, 4H]`` any float dtype (PyTorch gate order i, f, g, o),
``w_hh [D, 4H, H]`` engine dtype, ``h_in``/``h_out [D, B, H]`` float32 (distinct
buffers: the kernel reads all of h while writing the new one), ``c [D, B, H]``
float32 updated in place, ``y [D, B, T, H]`` receives the new h at step ``t``.
Accumulation is float32. ``tests/test_encoder_engine.py`` checks kernel against twin.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

__all__ = ["bilstm_step", "bilstm_step_ref"]


def bilstm_step_ref(gx: Tensor, w_hh: Tensor, h_in: Tensor, h_out: Tensor, c: Tensor, y: Tensor,
                    t: int) -> None:
    """Step ``t`` of both directions (layouts in the module docstring)."""
    pre = torch.bmm(h_in.float(), w_hh.float().transpose(1, 2)) + gx[t].float()     # [D, B, 4H]
    i, f, g, o = pre.chunk(4, dim=2)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    c.copy_(c_new)
    h = torch.sigmoid(o) * torch.tanh(c_new)
    h_out.copy_(h)
    y[:, :, t].copy_(h)


@functools.lru_cache(maxsize=1)
def _kernels():
    from tts.plugins._encoder_triton import KERNELS
    return KERNELS


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def bilstm_step(gx: Tensor, w_hh: Tensor, h_in: Tensor, h_out: Tensor, c: Tensor, y: Tensor, t: int, *,
                bh: int = 4, num_warps: int = 4) -> None:
    """Kernel of ``bilstm_step_ref``: ``bh`` hidden units of one direction per program, all of K."""
    d, b, h = c.shape
    tt = gx.shape[0]
    for name, x in (("gx", gx), ("w_hh", w_hh), ("h_in", h_in), ("h_out", h_out), ("c", c), ("y", y)):
        if not x.is_contiguous():
            raise ValueError(f"bilstm_step needs a contiguous {name}")
    if d != 2 or tuple(gx.shape[1:]) != (2, b, 4 * h) or tuple(w_hh.shape) != (2, 4 * h, h) \
            or tuple(y.shape) != (2, b, tt, h) or h % bh or h & (h - 1):
        raise ValueError("bilstm_step: shapes do not match the layouts of tts.plugins.encoder")
    if h_in.dtype != torch.float32 or h_out.dtype != torch.float32 or c.dtype != torch.float32:
        raise ValueError("bilstm_step: h and c must be float32")
    bb = min(16, _next_pow2(b))
    bk = max(16, min(h, 8192 // (bb * 4 * bh)))       # [BB, 4 BH, BK] partial products in registers
    grid = (2 * (h // bh), math.ceil(b / bb))
    _kernels()["bilstm_step"][grid](gx, w_hh, h_in, h_out, c, y, int(t), b, tt,
                                    H=h, BB=bb, BH=bh, BK=bk, num_warps=num_warps)
