"""WaveGlow's gated activation fused with the conditioning add (Triton) and its PyTorch twin.

``acts = tanh(in_act[:, :C] + cond[:, o:o+C]) * sigmoid(in_act[:, C:] + cond[:, o+C:o+2C])``
where ``cond`` holds the conditioning of every layer of a coupling network,
computed in one GEMM (``o = layer * 2C``). Inputs float16 or float32; the
arithmetic is float32; the output has the input's dtype.

Channels-last form (the engine's ``gemm`` layout; the conditioning is already added by
the GEMM): ``out[r, :] = tanh(in_act[r, :C]) * sigmoid(in_act[r, C:])`` over the rows of
``in_act [R, 2C]`` (row stride >= 2C, e.g. a column slice of the stacked conditioning)
into ``out [R, C]`` (row stride >= C): ``gated_rows`` (Triton) and ``gated_rows_ref``
(PyTorch twin; ``gated_rows_ref_`` writes ``out`` in place and clobbers ``in_act``).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = ["gated_activation", "gated_activation_ref", "gated_rows", "gated_rows_ref", "gated_rows_ref_",
           "gated_rows_sigmoid_"]


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


def gated_rows_ref(in_act: Tensor) -> Tensor:
    """``in_act [R, 2C]`` -> ``[R, C]`` (float32 arithmetic, dtype of in_act)."""
    c = in_act.shape[1] // 2
    x = in_act.float()
    return (torch.tanh(x[:, :c]) * torch.sigmoid(x[:, c:])).to(in_act.dtype)


def gated_rows_ref_(in_act: Tensor, out: Tensor) -> Tensor:
    """``gated_rows_ref`` into ``out`` without temporaries: ``in_act`` is overwritten.

    In the input dtype (the engine uses it on CPU in float32).
    """
    c = in_act.shape[1] // 2
    t, s = in_act[:, :c], in_act[:, c:]
    torch.tanh(t, out=t)
    torch.sigmoid(s, out=s)
    return torch.mul(t, s, out=out)


def gated_rows_sigmoid_(in_act: Tensor, out: Tensor) -> Tensor:
    """``gated_rows_ref`` of ``[-2 * a_t, a_s]``: in place, two passes, no ``tanh``.

    ``in_act = [-2 a_t | a_s]`` (the tanh half pre-scaled by -2, as the engine folds it into
    its weights on CPU); ``tanh(a_t) * s = s - 2 * sigmoid(-2 a_t) * s`` with
    ``s = sigmoid(a_s)``. ``in_act`` is overwritten; tanh is ~4x dearer than sigmoid on CPU.
    """
    c = in_act.shape[1] // 2
    torch.sigmoid(in_act, out=in_act)
    return torch.addcmul(in_act[:, c:], in_act[:, :c], in_act[:, c:], value=-2.0, out=out)


@functools.lru_cache(maxsize=1)
def _rows_kernel():
    from tts.plugins._waveglow_triton import gated_rows_kernel
    return gated_rows_kernel


def gated_rows(in_act: Tensor, out: Tensor | None = None, block_rows: int = 16) -> Tensor:
    """Kernel of ``gated_rows_ref``: ``in_act [R, 2C]`` and ``out [R, C]``, unit column stride."""
    r, c2 = in_act.shape
    c = c2 // 2
    if out is None:
        out = torch.empty(r, c, dtype=in_act.dtype, device=in_act.device)
    if in_act.stride(1) != 1 or out.stride(1) != 1 or out.shape[0] != r or out.shape[1] != c:
        raise ValueError(f"gated_rows needs unit column strides and out [{r}, {c}], "
                         f"got in_act strides {in_act.stride()}, out {tuple(out.shape)} {out.stride()}")
    block_c = 1 << (c - 1).bit_length()
    grid = ((r + block_rows - 1) // block_rows,)
    _rows_kernel()[grid](in_act, out, r, c, in_act.stride(0), out.stride(0),
                         BLOCK_R=block_rows, BLOCK_C=block_c)
    return out
