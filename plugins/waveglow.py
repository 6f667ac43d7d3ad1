"""WaveGlow's gated activation fused with the conditioning add (Triton) and its PyTorch twin.

``acts = tanh(in_act[:, :C] + cond[:, o:o+C]) * sigmoid(in_act[:, C:] + cond[:, o+C:o+2C])``
where ``cond`` holds the conditioning of every layer of a coupling network,
computed in one GEMM (``o = layer * 2C``). Inputs float16 or float32; the
arithmetic is float32; the output has the input's dtype.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = ["gated_activation", "gated_activation_ref"]


def gated_activation_ref(in_act: Tensor, cond: Tensor, layer: int) -> Tensor:
    """``in_act [B, 2C, T]``, ``cond [B, L*2C, T]`` -> ``[B, C, T]`` (dtype of in_act)."""
    c = in_act.shape[1] // 2
    o = layer * 2 * c
    x = in_act.float() + cond[:, o:o + 2 * c].float()
    return (torch.tanh(x[:, :c]) * torch.sigmoid(x[:, c:])).to(in_act.dtype)


@functools.lru_cache(maxsize=1)
def _kernel():
    from tts.plugins._waveglow_triton import gated_kernel
    return gated_kernel


def gated_activation(in_act: Tensor, cond: Tensor, layer: int, out: Tensor | None = None,
                     block: int = 1024) -> Tensor:
    """Kernel of ``gated_activation_ref``; both inputs contiguous.

    ``out``: ``[B, C', T]`` with ``C' >= C`` whose rows ``:C`` receive the result (rows of
    one item contiguous: ``out.stride(1) == T``, ``out.stride(2) == 1``); a new ``[B, C, T]``
    when None.
    """
    if not (in_act.is_contiguous() and cond.is_contiguous()):
        raise ValueError("gated_activation needs contiguous inputs")
    b, c2, t = in_act.shape
    c = c2 // 2
    if out is None:
        out = torch.empty(b, c, t, dtype=in_act.dtype, device=in_act.device)
    if out.shape[0] != b or out.shape[1] < c or out.shape[2] != t or out.stride(2) != 1 or out.stride(1) != t:
        raise ValueError(f"out must be [B={b}, >= {c}, T={t}] with contiguous rows, got {tuple(out.shape)}")
    n = b * c * t
    grid = ((n + block - 1) // block,)
    _kernel()[grid](in_act, cond, out, c, t, cond.stride(0), layer * 2 * c * t, out.stride(0), n, BLOCK=block)
    return out
