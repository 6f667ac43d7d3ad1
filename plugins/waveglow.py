"""WaveGlow kernels (Triton), each with its PyTorch twin.

- ``gated_rows`` (the engine's ``gemm`` layout, where the conditioning is already added by a
  GEMM): ``out[r, :] = tanh(in_act[r, :C]) * sigmoid(in_act[r, C:])`` over the rows of
  ``in_act [R, 2C]`` (row stride >= 2C, e.g. a column slice of the stacked conditioning) into
  ``out [R, C]`` (row stride >= C); twin ``gated_rows_ref``. Without Triton the engine uses
  ``gated_rows_sigmoid_`` (the same function, in place, on pre-scaled inputs). Inputs float16
  or float32; the arithmetic is float32; the output has the input's dtype.
- ``wn_in_gate`` and ``wn_res_end`` (the ``fused`` layout): a whole coupling-network layer in
  two kernels over phase-major rows (below); twins ``wn_in_gate_ref``, ``wn_res_end_ref``.
  ``wn_in_gate``'s kernel has two forms of the same sums in the same order: a reduction loop
  per tap, or one flat loop over all taps (``WN_IN_FLAT`` picks).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = ["gated_rows", "gated_rows_ref", "gated_rows_sigmoid_", "wn_in_gate", "wn_in_gate_ref", "wn_res_end",
           "wn_res_end_ref", "wn_frame_pad", "WN_TILES", "WN_IN_FLAT"]


def gated_rows_ref(in_act: Tensor) -> Tensor:
    """``in_act [R, 2C]`` -> ``[R, C]`` (float32 arithmetic, dtype of in_act)."""
    c = in_act.shape[1] // 2
    x = in_act.float()
    return (torch.tanh(x[:, :c]) * torch.sigmoid(x[:, c:])).to(in_act.dtype)


def gated_rows_sigmoid_(in_act: Tensor, out: Tensor) -> Tensor:
    """``gated_rows_ref`` of ``[-2 * a_t, a_s]``: in place, two passes, no ``tanh``.

    ``in_act = [-2 a_t | a_s]`` (the tanh half pre-scaled by -2, as the engine folds it into
    its weights on CPU); ``tanh(a_t) * s = s - 2 * sigmoid(-2 a_t) * s`` with
    ``s = sigmoid(a_s)``. ``in_act`` is overwritten; tanh costs several sigmoids on the CPU.
    """
    c = in_act.shape[1] // 2
    torch.sigmoid(in_act, out=in_act)
    return torch.addcmul(in_act[:, c:], in_act[:, :c], in_act[:, c:], value=-2.0, out=out)


@functools.lru_cache(maxsize=1)
def _rows_kernel():
    from tts.plugins import interpreter_compat
    interpreter_compat()
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


# ----------------------------------------------------------------------------- whole WN layer (phase-major)
#
# The engine's ``fused`` form of a coupling-network layer is two kernels over phase-major
# rows: row ``(b, ph, f)`` holds time position ``P*f + ph`` (``P = 256 / n_group``, the
# positions one mel frame covers), so a dilated tap ``s`` of every row of one ``(b, ph)``
# block is one contiguous block of rows (phase ``(ph + s) mod P``, frames shifted by
# ``floor((ph + s) / P)``), and the conditioning of every row of the block is one GEMM of
# the mel im2col with that phase's composed weights. So:
#
# - ``wn_in_gate``: ``acts = gate(sum_taps x[shifted] @ W_tap + mel_col @ Wc[ph] + b)`` in one
#   kernel: the dilated convolution, the conditioning and the gate, no pre-activation in memory;
# - ``wn_res_end``: ``x += acts @ W_res + b_res`` and ``end (+)= acts @ (end_w W_skip)^T``: the
#   skip 1x1 composed with the flow's ``end`` 1x1, so the skip sum is never formed (``end`` is a
#   float32 ``[rows, 16]`` accumulator: the flow's ``c`` output channels, zero-padded).
#
# ``x`` is ``[B, P, TP, C]`` with ``fp`` zero frames before and after the ``T`` frames of each
# block (``TP = T + 2 fp``, ``fp = wn_frame_pad(...)``); acts are ``[B*P*T, C]``.

#: Tiles ``(BM, BN, BK, num_warps, num_stages)`` of the two kernels (chosen for fp16 on an H100).
WN_TILES = {"in": (128, 64, 64, 8, 3), "rs": (128, 128, 64, 8, 3)}
#: ``wn_in_gate``'s kernel: one reduction loop over all taps (``True``), or a loop per tap
#: (``False``), the conditioning's loop after either; ``tools/gpu/bench_wn_tiles.py`` times both.
WN_IN_FLAT = False


def wn_frame_pad(half: int, max_dil: int, phases: int) -> int:
    """Zero frames needed around each phase block for taps ``-half*d .. half*d``."""
    return -(-(half * max_dil) // phases) + 1


@functools.lru_cache(maxsize=1)
def _wn_kernels():
    from tts.plugins import interpreter_compat
    interpreter_compat()
    from tts.plugins._wn_triton import wn_in_gate_kernel, wn_res_end_kernel
    return wn_in_gate_kernel, wn_res_end_kernel


def _prec(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def wn_in_gate(x: Tensor, w: Tensor, mel: Tensor, wc: Tensor, cb: Tensor, out: Tensor, *, t: int, fp: int, phases: int,
               dil: int, half: int, tiles: tuple | None = None, flat: bool | None = None) -> Tensor:
    """Kernel of ``wn_in_gate_ref`` (shapes there); all contiguous, one dtype. ``flat``: the
    kernel's loop form (``WN_IN_FLAT`` when None)."""
    bm, bn, bk, warps, stages = tiles or WN_TILES["in"]
    c = x.shape[-1]
    kt = w.shape[0] // c
    kc = mel.shape[-1]
    bn, bk = min(bn, c), min(bk, c)
    bp = out.numel() // (c * t)
    if c % bn or c % bk or kc % bk or w.shape != (kt * c, 2 * c) or wc.shape != (phases, kc, 2 * c) \
            or cb.shape != (2 * c,):
        raise ValueError(f"wn_in_gate: bad shapes x {tuple(x.shape)} w {tuple(w.shape)} mel {tuple(mel.shape)} "
                         f"wc {tuple(wc.shape)} (tiles {bn}, {bk})")
    n_ft = -(-t // bm)
    q0 = -(-(half * dil) // phases)
    grid = (bp * n_ft * (c // bn),)
    _wn_kernels()[0][grid](x, w, mel, wc, cb, out, t, t + 2 * fp, fp, phases, dil, q0, n_ft, kc,
                           C=c, KT=kt, HALF=half, BM=bm, BN=bn, BK=bk, PREC=_prec(x.dtype),
                           FLAT=bool(WN_IN_FLAT if flat is None else flat), num_warps=warps, num_stages=stages)
    return out


def wn_in_gate_ref(x: Tensor, w: Tensor, mel: Tensor, wc: Tensor, cb: Tensor, out: Tensor, *, t: int, fp: int, phases: int,
                   dil: int, half: int, tiles: tuple | None = None, flat: bool | None = None) -> Tensor:
    """PyTorch twin: ``x [B*P*TP, C]``, ``w [KT*C, 2C]``, ``mel [B*T, KC]``, ``wc [P, KC, 2C]``,
    ``cb [2C]`` -> ``out [B*P*T, C]`` (float32 arithmetic)."""
    c = x.shape[-1]
    kt = w.shape[0] // c
    b = mel.shape[0] // t
    xv = x.view(b, phases, t + 2 * fp, c).float()
    acc = torch.einsum("btk,pkn->bptn", mel.view(b, t, -1).float(), wc.float()) + cb.float()
    for j in range(kt):
        s = (j - half) * dil
        shifted = torch.stack([xv[:, (ph + s) % phases, fp + (ph + s) // phases:fp + (ph + s) // phases + t]
                               for ph in range(phases)], 1)                       # [B, P, T, C]
        acc = acc + shifted @ w[j * c:(j + 1) * c].float()
    y = torch.tanh(acc[..., :c]) * torch.sigmoid(acc[..., c:])
    out.copy_(y.reshape(-1, c))
    return out


def wn_res_end(acts: Tensor, w: Tensor | None, bias: Tensor | None, x: Tensor, e: Tensor, end: Tensor, *,
               t: int, fp: int, first: bool, tiles: tuple | None = None) -> None:
    """Kernel of ``wn_res_end_ref``."""
    bm, bn, bk, warps, stages = tiles or WN_TILES["rs"]
    c = acts.shape[-1]
    nr = 0 if w is None else w.shape[1]
    ne = e.shape[1]
    bn, bk = min(bn, c), min(bk, c)
    if (nr and (w.shape != (c, c) or bias is None)) or e.shape[0] != c or c % bn or c % bk \
            or end.dtype != torch.float32 or end.shape != (acts.shape[0], ne) or ne < 16 or ne & (ne - 1):
        raise ValueError(f"wn_res_end: bad shapes acts {tuple(acts.shape)} w {None if w is None else tuple(w.shape)} "
                         f"e {tuple(e.shape)} end {tuple(end.shape)} {end.dtype}")
    bp = acts.numel() // (c * t)
    n_ft = -(-t // bm)
    grid = (bp * n_ft * (nr // bn + 1),)
    _wn_kernels()[1][grid](acts, e if w is None else w, e if bias is None else bias, x, e, end,
                           t, t + 2 * fp, fp, n_ft, C=c, NR=nr, NE=ne, FIRST=bool(first),
                           BM=bm, BN=bn, BK=bk, PREC=_prec(acts.dtype), num_warps=warps, num_stages=stages)


def wn_res_end_ref(acts: Tensor, w: Tensor | None, bias: Tensor | None, x: Tensor, e: Tensor, end: Tensor, *,
                   t: int, fp: int, first: bool, tiles: tuple | None = None) -> None:
    """PyTorch twin: ``x[:, :, fp:fp+T] += acts @ w + bias`` (w ``[C, C]``, None: no residual);
    ``end = acts @ e`` (first) or ``end += acts @ e`` (``end`` float32 ``[B*P*T, NE]``)."""
    c = acts.shape[-1]
    a = acts.float()
    if w is not None:
        bp = acts.shape[0] // t
        xv = x.view(bp, t + 2 * fp, c)[:, fp:fp + t]
        xv.copy_((xv.float() + (a @ w.float() + bias.float()).view(bp, t, c)).to(x.dtype))
    y = a @ e.float()
    if first:
        end.copy_(y)
    else:
        end.add_(y)
