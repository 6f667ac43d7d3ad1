"""Fused kernels of one Tacotron2 decoder step (Triton), each with its PyTorch twin.

One decoder step of the fast engine is eight launches, all captured in a CUDA
graph (``tts.engines.tacotron2_step``)::

    linear_act        prenet layer 1: relu(frame @ W1^T), dropout        [B, 256]
    linear_act        prenet layer 2                                     [B, 256]
    lstm_cell2        attention LSTM: one GEMV over [prenet | ctx | h] + gates
    linear_act        processed query  ah @ Wq^T                         [B, 128]
    location_energy3  location conv (folded into one [A, 2, K] filter), tanh, v
                      (location_energy2: the same with FMA taps, no tensor cores)
    attention_context masked softmax over T_in, context, cumulative weights
    lstm_cell2        decoder LSTM over [ah | ctx | h]
    projection        mel frame and stop gate in one GEMV; per-item stop flags

Every kernel reads its per-step data from GPU buffers (the step index is a
GPU scalar plus a constant, the dropout seed a GPU scalar), so a graph of K
captured steps replays without the host. Inputs and states are float32;
weights are float16 or float32; accumulation is float32.

Programmatic dependent launch (``pdl``, sm_90+): with ``pdl=1`` a kernel is
launched with ``launch_pdl``; it loads what a CUDA-graph replay never changes
(weights, biases, processed memory) before it waits for its predecessor, and
then lets the next kernel launch. ``pdl=3`` runs the same code paths without
the ``griddepcontrol`` instructions (Triton's interpreter has no inline
assembly): the CPU tests of the ``pdl=1`` code. Results equal ``pdl=0`` bit
for bit.

The PyTorch twins (``*_ref``) compute the same functions with torch ops;
``tests/test_plugins_decoder.py`` checks kernel against twin on random weights.
Triton is imported lazily: importing this module never needs it.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "triton_available", "linear_act", "linear_act_ref", "lstm_cell2", "lstm2_workspace", "lstm_cell_ref",
    "location_energy2", "location_energy3", "location_energy_ref", "attention_context", "attention_context_ref",
    "projection", "projection_ref", "dropout_keep_ref",
]


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether Triton can be imported (kernels need it and a CUDA device, or TRITON_INTERPRET=1)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # noqa: BLE001 - any import problem means "not available"
        return False
    return True


# ----------------------------------------------------------------------------- PyTorch twins

def dropout_keep_ref(shape: tuple[int, ...], p: float, device: torch.device) -> Tensor | None:
    """A keep-mask scaled by 1/(1-p) from torch's default generator (graph-safe), or None for p=0."""
    if p <= 0.0:
        return None
    return (torch.rand(shape, device=device) >= p).to(torch.float32) / (1.0 - p)


def linear_act_ref(x: Tensor, w: Tensor, out: Tensor, *, relu: bool = False, p: float = 0.0) -> Tensor:
    """``out[:] = act(x @ w^T)``; x ``[B, K]`` f32, w ``[N, K]``, out ``[B, N]`` f32. Dropout p after relu."""
    y = x.float() @ w.float().t()
    if relu:
        y = F.relu(y)
    keep = dropout_keep_ref(tuple(y.shape), p, y.device)
    if keep is not None:
        y = y * keep
    out.copy_(y)
    return out


def lstm_cell_ref(xs: tuple[Tensor, ...], w: Tensor, b: Tensor, c: Tensor, h_out: Tensor) -> None:
    """LSTMCell with one weight over the concatenated inputs.

    ``xs``: input segments ``[B, K_i]`` f32 (the last one is the old h); ``w [4H, sum K_i]``
    (PyTorch gate order i, f, g, o), ``b [4H]`` f32 (b_ih + b_hh); ``c [B, H]`` f32 updated
    in place; ``h_out [B, H]`` f32 receives the new h (must not alias any input).
    """
    gates = torch.cat([x.float() for x in xs], dim=1) @ w.float().t() + b
    i, f, g, o = gates.chunk(4, dim=1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    c.copy_(c_new)
    h_out.copy_(torch.sigmoid(o) * torch.tanh(c_new))


def location_energy_ref(pq: Tensor, w_loc: Tensor, att_w: Tensor, att_cum: Tensor, pm: Tensor,
                        v: Tensor, lengths: Tensor, out: Tensor) -> Tensor:
    """Attention energies.

    ``pq [B, A]`` f32 processed query, ``w_loc [A, 2, KS]`` (location conv folded with
    location dense), ``att_w``/``att_cum [B, T]`` f32, ``pm [B, T, A]`` processed memory,
    ``v [A]``, ``lengths [B]`` int -> ``out [B, T]`` f32, ``-inf`` at ``t >= lengths[b]``.
    """
    ks = w_loc.shape[-1]
    cat = torch.stack((att_w, att_cum), dim=1).float()                  # [B, 2, T]
    loc = F.conv1d(cat, w_loc.float(), padding=(ks - 1) // 2).transpose(1, 2)  # [B, T, A]
    e = torch.tanh(pq.float().unsqueeze(1) + loc + pm.float()) @ v.float()      # [B, T]
    t = torch.arange(e.shape[1], device=e.device)
    e = e.masked_fill(t.unsqueeze(0) >= lengths.unsqueeze(1), float("-inf"))
    out.copy_(e)
    return out


def attention_context_ref(energy: Tensor, memory: Tensor, att_w: Tensor, att_cum: Tensor,
                          ctx: Tensor, align: Tensor | None = None) -> None:
    """Masked softmax over T and the context.

    ``energy [B, T]`` f32 (``-inf`` at padding), ``memory [B, T, E]`` -> ``ctx [B, E]`` f32;
    ``att_w [B, T]`` receives the weights, ``att_cum`` adds them; ``align [B, T]`` (a row
    of the alignment record) receives them too when given.
    """
    w = torch.softmax(energy, dim=1)
    ctx.copy_(torch.bmm(w.unsqueeze(1), memory.float()).squeeze(1))
    att_w.copy_(w)
    att_cum.add_(w)
    if align is not None:
        align.copy_(w)


def projection_ref(xs: tuple[Tensor, ...], w: Tensor, b: Tensor, frame: Tensor, mel_row: Tensor,
                   gate_row: Tensor, not_finished: Tensor, mel_lengths: Tensor,
                   gate_threshold: float) -> None:
    """Mel frame and stop gate: ``y = [xs] @ w^T + b`` with ``w [n_frame + 1, K]``.

    ``frame``/``mel_row [B, n_frame]`` receive ``y[:, :n_frame]``, ``gate_row [B]`` the gate
    logit ``y[:, n_frame]``; ``not_finished [B]`` int32 becomes ``not_finished * (sigmoid(gate)
    <= threshold)`` and ``mel_lengths [B]`` int32 adds it (DLE's rule).
    """
    y = torch.cat([x.float() for x in xs], dim=1) @ w.float().t() + b
    n = frame.shape[1]
    frame.copy_(y[:, :n])
    mel_row.copy_(y[:, :n])
    gate = y[:, n]
    gate_row.copy_(gate)
    nf = not_finished * (torch.sigmoid(gate) <= gate_threshold).to(torch.int32)
    not_finished.copy_(nf)
    mel_lengths.add_(nf)


# ----------------------------------------------------------------------------- Triton kernels

@functools.lru_cache(maxsize=1)
def _kernels():
    from tts.plugins import interpreter_compat
    interpreter_compat()
    from tts.plugins._decoder_triton import KERNELS
    return KERNELS


def _bb(batch: int) -> int:
    return min(16, _next_pow2(batch))


def _pdl_kw(pdl: int) -> dict:
    """Launch keywords of programmatic dependent launch mode ``pdl`` (module docstring): 0 off,
    1 on (sm_90+ on CUDA only, never in the interpreter), 3 the kernels' PDL code paths without
    the griddepcontrol instructions (interpreter tests)."""
    pdl = int(pdl)
    if pdl not in (0, 1, 3):
        raise ValueError(f"pdl must be 0, 1 or 3, got {pdl}")
    if pdl == 3:
        return {"PDL": 3}
    return {"PDL": 1, "launch_pdl": True} if pdl else {}


def _check_rows(*ts: Tensor) -> None:
    for t in ts:
        if t.dim() >= 2 and t.stride(-1) != 1:
            raise ValueError("Triton decoder kernels need row-contiguous tensors")


def linear_act(x: Tensor, w: Tensor, out: Tensor, *, relu: bool = False, p: float = 0.0,
               seed: Tensor | None = None, step: Tensor | None = None, step_i: int = 0, salt: int = 0,
               bn: int = 4, bk: int = 256, pdl: int = 0, num_warps: int = 4) -> Tensor:
    """Kernel of ``linear_act_ref``; dropout masks from Philox(``seed``, step, salt, b, n).

    ``seed``/``step``: ``[1]`` int64 GPU scalars (needed when p > 0); the step used is
    ``step + step_i``. ``pdl``: programmatic dependent launch mode (``_pdl_kw``; the first
    weight chunk is loaded before the wait).
    """
    k = _kernels()["linear_act"]
    _check_rows(x, w, out)
    b, kdim = x.shape
    n = w.shape[0]
    bk = min(bk, _next_pow2(kdim))
    dummy = out
    bb = _bb(b)
    grid = (math.ceil(n / bn), math.ceil(b / bb))
    k[grid](x, x.stride(0), kdim, w, out, out.stride(0), b, n,
            seed if seed is not None else dummy, step if step is not None else dummy, step_i,
            float(p), salt, RELU=relu, DROPOUT=p > 0.0, BB=bb, BN=bn, BK=bk, num_warps=num_warps, **_pdl_kw(pdl))
    return out


def attention_context(energy: Tensor, memory: Tensor, att_w: Tensor, att_cum: Tensor, ctx: Tensor,
                      align: Tensor | None = None, step: Tensor | None = None, step_i: int = 0, *,
                      count: tuple[Tensor, Tensor, Tensor, float] | None = None,
                      be: int = 64, bt: int = 32, pdl: int = 0, num_warps: int = 4) -> None:
    """Kernel of ``attention_context_ref``. ``align`` here is the whole record ``[B, steps, T]``,
    written at row ``step + step_i`` (needs ``step``).

    ``count = (lengths [B] int32, end_count [B] int32, end_rec [B, steps] int32, end_mass)`` also
    runs the attention stop rule's count (``tts.models.tacotron2.count_end_frames``; needs ``step``): ``end_count``
    adds 1 where the new cumulative weight at the row's last input position is at least
    ``end_mass``, and ``end_rec`` receives the count at step ``step + step_i``."""
    k = _kernels()["attention_context"]
    batch, t = energy.shape
    e = memory.shape[2]
    grid = (batch, math.ceil(e / be))
    al = align if align is not None else ctx
    if count is not None and step is None:
        raise ValueError("attention_context(count=...) needs step")
    lengths, cnt, rec, end_mass = count if count is not None else (ctx, ctx, ctx, 0.0)
    k[grid](energy, memory, att_w, att_cum, ctx, al, al.stride(0) if align is not None else 0,
            step if step is not None else ctx, step_i, t, e,
            lengths, cnt, rec, rec.stride(0) if count is not None else 0, float(end_mass),
            TB=_next_pow2(t), BT=bt, BE=be, ALIGN=align is not None, COUNT=int(count is not None),
            num_warps=num_warps, **_pdl_kw(pdl))


def projection(xs: tuple[Tensor, Tensor], w: Tensor, b: Tensor, frame: Tensor, mel: Tensor,
               gate: Tensor, not_finished: Tensor, mel_lengths: Tensor, gate_threshold: float,
               step: Tensor, step_i: int = 0, *, stop: tuple[Tensor, Tensor, int, int] | None = None,
               bn: int = 4, bk: int = 256, pdl: int = 0, num_warps: int = 4) -> None:
    """Kernel of ``projection_ref``; ``mel [B, steps, n_frame]`` and ``gate [B, steps]`` are the
    whole records, written at step ``step + step_i``.

    ``stop = (end_count [B] int32, limit [B] int32, end_frames, min_steps)`` also applies the
    attention stop rule after the gate (``tts.engines.tacotron2_step.attention_stop_step``): a row whose count reached
    ``end_frames`` after at least ``min_steps`` steps ends as if its gate had fired, and a row
    whose ``mel_lengths`` reached its ``limit`` ends."""
    k = _kernels()["projection"]
    x1, x2 = xs
    batch, nf = frame.shape
    bb = _bb(batch)
    grid = (math.ceil((nf + 1) / bn), math.ceil(batch / bb))
    cnt, lim, end_frames, min_steps = stop if stop is not None else (not_finished, not_finished, 0, 0)
    k[grid](x1, x1.shape[1], x2, x2.shape[1], w, b, frame, mel, mel.stride(0), gate, gate.stride(0),
            not_finished, mel_lengths, step, step_i, float(gate_threshold), batch, nf,
            cnt, lim, int(end_frames), int(min_steps),
            BB=bb, BN=bn, BK=bk, STOP=int(stop is not None), num_warps=num_warps, **_pdl_kw(pdl))


def lstm2_workspace(split: int, batch_rows: int, hdim: int, device, n_tiles: int = 4096) -> tuple[Tensor, Tensor]:
    """(partial sums ``[split, batch_rows, 4 * hdim]`` f32, tile counters ``[n_tiles]`` int32 zeros)
    for ``lstm_cell2(split > 1)``; ``batch_rows`` >= the batch rounded up to the kernel's batch tile.
    The counters return to zero after every launch, so one pair serves any number of launches in
    stream order (and CUDA-graph replays)."""
    return (torch.zeros(max(1, split), batch_rows, 4 * hdim, dtype=torch.float32, device=device),
            torch.zeros(n_tiles, dtype=torch.int32, device=device))


def lstm_cell2(xs: tuple[Tensor, Tensor, Tensor], w: Tensor, b: Tensor, c: Tensor, h_out: Tensor, *,
               bh: int = 1, bk: int = 512, split: int = 1, num_warps: int = 4, dot: bool | int = False,
               bb: int | None = None, ws: tuple[Tensor, Tensor] | None = None, pdl: int = 0) -> None:
    """Kernel of ``lstm_cell_ref`` for exactly three input segments (last = old h).

    A program owns the rows of the four gates of ``bh`` hidden units and reads its weights
    16 bytes per thread over K chunks of ``bk``; ``split`` programs share K (partials combined
    in fixed order by the last one, see ``lstm2_workspace``: bit-deterministic). ``dot``: 0
    float32 FMAs; 1 tensor cores (float16 weights; x split into two float16 halves, hi + lo,
    so the result keeps float32 inputs); 2 the same products transposed (``acc^T += w @ x^T``:
    the weight tile is the A operand as loaded). ``bb``: batch rows per program (default 16
    on tensor cores, else the batch's power of two). ``pdl``: ``_pdl_kw`` (the first weight
    chunk is loaded before the wait)."""
    k = _kernels()["lstm_cell2"]
    x1, x2, x3 = xs
    _check_rows(x1, x2, x3, w, c, h_out)
    batch, hdim = c.shape
    for x in xs:
        if x.stride(0) != x.shape[1]:
            raise ValueError("lstm_cell2 inputs must be contiguous [B, K] tensors")
    if hdim % bh:
        raise ValueError(f"hidden size {hdim} is not a multiple of bh={bh}")
    dot = int(dot) if w.dtype == torch.float16 and 4 * bh >= 16 else 0   # 2: transposed product
    bb = int(bb) if bb else (16 if dot else _bb(batch))
    if bb & (bb - 1):
        raise ValueError(f"bb must be a power of two, got {bb}")
    kt = w.shape[1]
    kch = bk * math.ceil(math.ceil(kt / split) / bk)
    split = math.ceil(kt / kch)
    nit = kch // bk
    n_bb = math.ceil(batch / bb)
    grid = (hdim // bh, n_bb, split)
    if split > 1:
        if ws is None:
            ws = lstm2_workspace(split, n_bb * bb, hdim, c.device, grid[0] * grid[1])
        part, cnt = ws
        if (part.shape[0] < split or part.shape[1] < n_bb * bb or part.shape[2] < 4 * hdim
                or cnt.numel() < grid[0] * grid[1]):
            raise ValueError("lstm_cell2 workspace too small")
        ws_split = part.shape[1] * 4 * hdim
        if part.stride(0) != ws_split or not part.is_contiguous():
            raise ValueError("lstm_cell2 workspace must be [split, rows, 4 * hdim]")
    else:
        part, cnt, ws_split = c, c, 0
    seg = all(x.shape[1] % bk == 0 for x in xs)     # each K chunk inside one input segment
    k[grid](x1, x1.shape[1], x2, x2.shape[1], x3, x3.shape[1], w, b, c, h_out, part, ws_split, cnt,
            batch, hdim, kch, BB=bb, BH=bh, BK=bk, NIT=nit, SPLIT=split, DOT=dot, SEG=seg,
            num_warps=num_warps, **_pdl_kw(pdl))


def location_energy2(pq: Tensor, w_loc: Tensor, att_w: Tensor, att_cum: Tensor, pm: Tensor, v: Tensor,
                     lengths: Tensor, out: Tensor, *, bt: int = 8, num_warps: int = 4, pdl: int = 0) -> Tensor:
    """Kernel of ``location_energy_ref``: the KS taps unrolled as FMAs, ``bt`` positions per program.
    All tensors contiguous except ``w_loc [A, 2, KS]``, any strides; lengths int32."""
    k = _kernels()["location_energy2"]
    batch, t = att_w.shape
    a, _, ks = w_loc.shape
    grid = (batch, math.ceil(t / bt))
    k[grid](pq, w_loc, att_w, att_cum, pm, v, lengths, out, t, a, *w_loc.stride(), KS=ks, BT=bt, BA=_next_pow2(a),
            num_warps=num_warps, **_pdl_kw(pdl))
    return out


def location_energy3(pq: Tensor, w_loc: Tensor, att_w: Tensor, att_cum: Tensor, pm: Tensor, v: Tensor,
                     lengths: Tensor, out: Tensor, *, bt: int = 16, num_warps: int = 4, pdl: int = 0,
                     precision: str = "tf32x3") -> Tensor:
    """Kernel of ``location_energy_ref`` on tensor cores: per program, the im2col of ``bt``
    positions [bt, 2 KS] @ ``w_loc`` [2 KS, A] in ``precision``: ``tf32x3`` (three tf32 products,
    float32 accuracy; the fp16 engine) or ``ieee`` (IEEE float32; the fp32 engine). ``w_loc
    [A, 2, KS]`` any strides; other tensors contiguous; lengths int32."""
    if precision not in ("tf32x3", "ieee"):
        raise ValueError(f"precision must be tf32x3 or ieee, got {precision!r}")
    k = _kernels()["location_energy3"]
    batch, t = att_w.shape
    a, _, ks = w_loc.shape
    grid = (batch, math.ceil(t / bt))
    k[grid](pq, w_loc, att_w, att_cum, pm, v, lengths, out, t, a, *w_loc.stride(), KS=ks, BT=bt,
            BA=_next_pow2(a), KP=_next_pow2(2 * ks), PREC=precision, num_warps=num_warps, **_pdl_kw(pdl))
    return out
