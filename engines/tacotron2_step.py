"""Tacotron2 engine, step: the decoder's state in static buffers and one decoder step over them.

A step is eight launches of the fused Triton kernels of ``tts.plugins.decoder``
(``triton_step``) or the same maths in PyTorch ops (``torch_step``, the CPU path and the
``torch`` backend)::

    linear_act x2       prenet: relu(frame @ W1^T), dropout; relu(. @ W2^T), dropout   [B, P]
    lstm_cell2          attention LSTM over [prenet | ctx | ah]                        [B, Ha]
    linear_act          processed query ah @ Wq^T                                      [B, A]
    location_energy2/3  location features (folded filter), tanh, v; -inf past length    [B, T]
    attention_context   masked softmax, context, cumulative weights, alignment row      [B, E]
    lstm_cell2          decoder LSTM over [ah | ctx | dh]                              [B, Hd]
    projection          mel frame + gate in one GEMV; per-item stop flags              [B, n_frame + 1]

Every launch reads its per-step data from GPU buffers (step index = a GPU scalar plus the
step's position in the replay, dropout seed a GPU scalar), so K captured steps replay without
the host. State and accumulation are float32; weights float16 or float32.

Programmatic dependent launch (``resolve_pdl``): on sm_90+ inside CUDA graphs each kernel
loads what a replay never changes (its first weight chunk, biases, processed memory) before it
waits for its predecessor, and lets the next kernel launch right after its own wait; the step's
eight graph nodes then overlap their launch latency. Results are bit-identical to plain launches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn import functional as F

from tts.engines import _env
from tts.engines.precision import dot_precision
from tts.engines.tacotron2_builder import DecoderWeights
from tts.models.tacotron2 import ATTENTION_STOP, attention_ended, count_end_frames

__all__ = ["DecoderBuffers", "StepTiles", "decoder_tiles", "resolve_pdl", "torch_step", "triton_step",
           "attention_stop_step"]


class DecoderBuffers:
    """Static decoder state of one (batch, input length, capacity) bucket. Float32 unless noted.

    ``bsz`` rows (padded rows decode garbage that is never read), ``t_in`` input positions
    (masked past each row's length), ``cap`` steps of output records (``mel``, ``gate``,
    ``align``), written at ``step + i``."""

    def __init__(self, bsz: int, t_in: int, cap: int, *, n_frame: int, p_dim: int, ha: int, hd: int,
                 e: int, a: int, wd: torch.dtype, device: torch.device) -> None:
        z = lambda *s, dt=torch.float32: torch.zeros(*s, dtype=dt, device=device)  # noqa: E731
        self.bsz, self.t_in, self.cap = bsz, t_in, cap
        self.frame = z(bsz, n_frame)         # the previous step's frame (the prenet's input)
        self.pre1 = z(bsz, p_dim)
        self.pre2 = z(bsz, p_dim)
        self.ah = z(2, bsz, ha)          # ping-pong: kernels read all of h while writing the new h
        self.ac = z(bsz, ha)
        self.dh = z(2, bsz, hd)
        self.dc = z(bsz, hd)
        self.ctx = z(bsz, e)
        self.pq = z(bsz, a)
        self.att_w = z(bsz, t_in)
        self.att_cum = z(bsz, t_in)
        self.energy = z(bsz, t_in)
        self.memory = z(bsz, t_in, e, dt=wd)     # encoder output [B, T, E], engine dtype
        self.pm = z(bsz, t_in, a, dt=wd)         # processed memory [B, T, A], engine dtype
        self.lengths = z(bsz, dt=torch.int32)
        self.mask = torch.ones(bsz, t_in, dtype=torch.bool, device=device)   # True past the length
        self.mel = z(bsz, cap, n_frame)      # the decoder's output frames, by step
        self.gate = z(bsz, cap)
        self.align = z(bsz, cap, t_in)
        self.not_finished = z(bsz, dt=torch.int32)
        self.mel_lengths = z(bsz, dt=torch.int32)
        self.end_count = z(bsz, dt=torch.int32)   # stop rule "attention": steps at the last symbol
        self.end_rec = z(bsz, cap, dt=torch.int32)   # end_count after each step, by step
        self.limit = z(bsz, dt=torch.int32)       # stop rule "attention": each row's step budget
        self.step = z(1, dt=torch.int64)     # first step of the next replay
        self.drop_step = self.step           # step of the dropout masks (SlotDecoder: its own counter)
        self.par0 = 0                        # ping-pong half holding the current h (SlotDecoder: odd K)
        self.seed = z(1, dt=torch.int64)
        self.lstm_ws: tuple[Tensor, Tensor] | None = None   # split-K workspace of lstm_cell2
        self.graph: torch.cuda.CUDAGraph | None = None
        self.flags_host: Tensor | None = None
        if device.type == "cuda":
            self.flags_host = torch.zeros(bsz, dtype=torch.int32, pin_memory=True)

    def reset(self, memory: Tensor, pm: Tensor, lengths: Tensor, seed: Tensor, limits: Tensor | None = None) -> None:
        """Start decoding ``memory [b, t, E]`` (processed ``pm [b, t, A]``, ``lengths [b]`` int32,
        b <= bsz, t <= t_in) from the go frame, with dropout seed ``seed [1]`` int64 and the rows'
        step budgets ``limits [b]`` int32 (stop rule ``attention``; None: unused)."""
        b, t = memory.shape[:2]
        for buf in (self.frame, self.ah, self.ac, self.dh, self.dc, self.ctx, self.att_w,
                    self.att_cum, self.memory, self.pm, self.mel_lengths, self.end_count, self.step):
            buf.zero_()
        self.memory[:b, :t].copy_(memory)
        self.pm[:b, :t].copy_(pm)
        self.lengths.fill_(1)                        # padded items: one (zero) input position
        self.lengths[:b].copy_(lengths)
        pos = torch.arange(self.t_in, device=self.lengths.device)
        self.mask.copy_(pos.unsqueeze(0) >= self.lengths.unsqueeze(1))
        self.not_finished.zero_()
        self.not_finished[:b].fill_(1)
        self.seed.copy_(seed)
        self.limit.fill_(1)
        if limits is not None:
            self.limit[:b].copy_(limits)


@dataclass(frozen=True)
class StepTiles:
    """Launch tiles of the Triton step for one bucket (``decoder_tiles``)."""

    lstm: dict = field(default_factory=dict)   #: ``lstm_cell2`` keywords (bh, bk, split, num_warps, dot, bb)
    prenet: tuple[int, int] = (4, 256)         #: (bn, bk) of the two prenet GEMVs
    query: tuple[int, int, int] = (1, 1024, 4)  #: (bn, bk, warps) of the query GEMV
    loc_kernel: int = 3                        #: 3: ``location_energy3`` (tensor cores), 2: ``location_energy2``
    loc_bt: int = 16                           #: positions per location-energy program
    ctx: tuple[int, int, int] = (16, 128, 4)   #: (be, bt max, warps) of ``attention_context``
    proj: tuple[int, int, int] = (1, 1024, 4)  #: (bn, bk, warps) of the projection


def decoder_tiles(batch: int, dtype: torch.dtype) -> StepTiles:
    """The tiles of a bucket of ``batch`` rows with weights in ``dtype`` (tuned on an H100).

    - up to 2 rows: the LSTMs as float32 FMAs, 2 hidden units and 512 of K per program (many
      programs stream the weights); the location energy on tensor cores (tf32x3 in an fp16
      engine, IEEE float32 in an fp32 one: ``location_precision``);
    - float16, 3 to 16 rows: the LSTMs on tensor cores as the transposed product
      (``acc^T += W x^T``), 16 hidden units per program, split-K 4, an 8-row batch tile up to 8
      rows; the location energy on tensor cores;
    - float16, more rows (the server's large slot buckets): the untransposed tensor-core
      product, 8 hidden units, split-K 2; the location energy as unrolled FMA taps;
    - float32, more than 2 rows: FMAs, 1 hidden unit per program.
    """
    if batch <= 2:
        return StepTiles(lstm=dict(bh=2, bk=512, split=1, num_warps=4, dot=0))
    if dtype == torch.float16 and batch <= 16:
        return StepTiles(lstm=dict(bh=16, bk=128, split=4, num_warps=4, dot=2, bb=8 if batch <= 8 else 16),
                         query=(2, 1024, 4), ctx=(16, 128, 2))
    if dtype == torch.float16:
        return StepTiles(lstm=dict(bh=8, bk=128, split=2, num_warps=4, dot=1),
                         loc_kernel=2, loc_bt=8, ctx=(32, 128, 4))
    return StepTiles(lstm=dict(bh=1, bk=128, split=1, num_warps=4, dot=0),
                     loc_kernel=2, loc_bt=8, ctx=(32, 128, 4))


def location_precision(dtype: torch.dtype) -> str:
    """``input_precision`` of the tensor-core location energy: IEEE float32 in an fp32 engine
    (weights float32; ``tts.engines.precision``), tf32x3 (float32 accuracy) in an fp16 one."""
    return dot_precision(dtype, reduced="tf32x3")


def resolve_pdl(pdl: bool | None, *, device: torch.device, backend: str, use_graphs: bool) -> int:
    """Programmatic dependent launch of the Triton step: 1 (on) or 0 (off).

    ``pdl`` None or True: on where it can run (the ``triton`` backend in CUDA graphs on sm_90+,
    not under Triton's interpreter); False: off."""
    if pdl not in (None, True, False, 0, 1):
        raise ValueError(f"pdl must be None, True or False, got {pdl!r}")
    if pdl is not None and not pdl:
        return 0
    if (backend != "triton" or device.type != "cuda" or not use_graphs or _env.triton_interpret()
            or torch.cuda.get_device_capability(device)[0] < 9):
        return 0
    return 1


def triton_step(w: DecoderWeights, b: DecoderBuffers, i: int, p: float, threshold: float, *,
                dtype: torch.dtype, pdl: int, hmax: int, attention: str | None = None) -> None:
    """Step ``i`` of a replay (step index ``b.step + i``) with the Triton kernels, in place on ``b``.

    ``p``: prenet dropout; ``threshold``: gate threshold of the stop flags; ``dtype``: the
    weights' dtype (selects the tiles); ``pdl``: programmatic dependent launch mode;
    ``hmax``: the larger LSTM hidden size (sizes the split-K workspace); ``attention``: the
    attention stop rule inside the kernels, ``attention_stop_step`` bit for bit: ``"count"``
    (``attention_stop_step(stop=False)``: the count, in ``attention_context``), ``"stop"``
    (``stop=True``: the count, and the stop after the gate in ``projection``), None (neither)."""
    if attention not in (None, "count", "stop"):
        raise ValueError(f"attention must be None, 'count' or 'stop', got {attention!r}")
    from tts.plugins import decoder as K
    tl = decoder_tiles(b.bsz, dtype)
    lstm = tl.lstm
    if lstm["split"] > 1 and b.lstm_ws is None:
        b.lstm_ws = K.lstm2_workspace(lstm["split"], 16 * math.ceil(b.bsz / 16), hmax, b.frame.device)
    par = (i + b.par0) % 2
    ah_old, ah_new = b.ah[par], b.ah[1 - par]
    dh_old, dh_new = b.dh[par], b.dh[1 - par]
    pbn, pbk = tl.prenet
    K.linear_act(b.frame, w.pre_w1, b.pre1, relu=True, p=p, seed=b.seed, step=b.drop_step, step_i=i,
                 salt=0, pdl=pdl, bn=pbn, bk=pbk)
    K.linear_act(b.pre1, w.pre_w2, b.pre2, relu=True, p=p, seed=b.seed, step=b.drop_step, step_i=i,
                 salt=1, pdl=pdl, bn=pbn, bk=pbk)
    K.lstm_cell2((b.pre2, b.ctx, ah_old), w.att_w, w.att_b, b.ac, ah_new, ws=b.lstm_ws, pdl=pdl, **lstm)
    qbn, qbk, qwarps = tl.query
    K.linear_act(ah_new, w.q_w, b.pq, bn=qbn, bk=qbk, pdl=pdl, num_warps=qwarps)
    if tl.loc_kernel == 3:
        K.location_energy3(b.pq, w.loc_w, b.att_w, b.att_cum, b.pm, w.v, b.lengths, b.energy, bt=tl.loc_bt,
                           pdl=pdl, precision=location_precision(dtype))
    else:
        K.location_energy2(b.pq, w.loc_w, b.att_w, b.att_cum, b.pm, w.v, b.lengths, b.energy, bt=tl.loc_bt,
                           pdl=pdl)
    be, bt, cwarps = tl.ctx
    rule = ATTENTION_STOP
    count = (b.lengths, b.end_count, b.end_rec, rule.end_mass) if attention else None
    K.attention_context(b.energy, b.memory, b.att_w, b.att_cum, b.ctx, b.align, b.step, i, count=count,
                        be=be, bt=min(bt, 1 << max(0, (b.t_in - 1).bit_length())), pdl=pdl, num_warps=cwarps)
    K.lstm_cell2((ah_new, b.ctx, dh_old), w.dec_w, w.dec_b, b.dc, dh_new, ws=b.lstm_ws, pdl=pdl, **lstm)
    jbn, jbk, jwarps = tl.proj
    stop = (b.end_count, b.limit, rule.end_frames, rule.min_steps) if attention == "stop" else None
    K.projection((dh_new, b.ctx), w.proj_w, w.proj_b, b.frame, b.mel, b.gate, b.not_finished,
                 b.mel_lengths, threshold, b.step, i, stop=stop, bn=jbn, bk=jbk, pdl=pdl, num_warps=jwarps)


def attention_stop_step(b: DecoderBuffers, i: int, *, stop: bool) -> None:
    """The ``attention`` stop rule after step ``i`` of a replay (step index ``b.step + i``), after
    the step's gate flags (``tts.models.tacotron2.Decoder.infer`` in buffer ops; capturable).

    Counts each row's steps at its last symbol into ``b.end_count`` and records the count in
    ``b.end_rec`` at the step index (the slot decoder reads it on the host). With ``stop`` (rows
    that all started at step 0, as in ``Tacotron2Engine.decode``), also ends the rows whose
    attention ended as if their gate had fired, and the rows that reached their budget ``b.limit``."""
    idx = b.step + i
    count_end_frames(b.end_count, b.att_cum, (b.lengths - 1).clamp(min=0).to(torch.int64))
    b.end_rec.index_copy_(1, idx, b.end_count.unsqueeze(1))
    if not stop:
        return
    drop = b.not_finished * attention_ended(b.end_count, idx + 1).to(torch.int32)
    b.not_finished.sub_(drop)
    b.mel_lengths.sub_(drop)
    b.not_finished.mul_((b.mel_lengths < b.limit).to(torch.int32))


def _lstm_pointwise(gates: Tensor, c: Tensor, h_out: Tensor) -> None:
    i, f, g, o = gates.chunk(4, dim=1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    c.copy_(c_new)
    h_out.copy_(torch.sigmoid(o) * torch.tanh(c_new))


def torch_step(w: DecoderWeights, b: DecoderBuffers, i: int, p: float, threshold: float, *,
               dtype: torch.dtype, n_frame: int) -> None:
    """``triton_step`` in PyTorch ops (the PyTorch twin of the whole step; capturable in a CUDA
    graph). Dropout masks come from torch's generator, not the kernels' Philox stream."""
    wd = dtype
    par = (i + b.par0) % 2
    ah_old, ah_new = b.ah[par], b.ah[1 - par]
    dh_old, dh_new = b.dh[par], b.dh[1 - par]
    x = b.frame
    for wt in (w.pre_w1, w.pre_w2):
        x = F.relu(F.linear(x.to(wd), wt)).float()
        if p > 0.0:
            x = x * (torch.rand_like(x) >= p).to(x.dtype) * (1.0 / (1.0 - p))
    gates = F.linear(torch.cat((x, b.ctx, ah_old), 1).to(wd), w.att_w).float() + w.att_b
    _lstm_pointwise(gates, b.ac, ah_new)
    pq = F.linear(ah_new.to(wd), w.q_w).float()
    ks = w.loc_w.shape[-1]
    loc = F.conv1d(torch.stack((b.att_w, b.att_cum), 1), w.loc_w, padding=(ks - 1) // 2)
    e = torch.tanh(pq.unsqueeze(1) + loc.transpose(1, 2) + b.pm.float()) @ w.v
    a = torch.softmax(e.masked_fill(b.mask, float("-inf")), dim=1)
    b.ctx.copy_(torch.bmm(a.unsqueeze(1).to(wd), b.memory).squeeze(1))
    b.att_w.copy_(a)
    b.att_cum.add_(a)
    idx = b.step + i
    b.align.index_copy_(1, idx, a.unsqueeze(1))
    gates = F.linear(torch.cat((ah_new, b.ctx, dh_old), 1).to(wd), w.dec_w).float() + w.dec_b
    _lstm_pointwise(gates, b.dc, dh_new)
    y = F.linear(torch.cat((dh_new, b.ctx), 1).to(wd), w.proj_w).float() + w.proj_b
    nf = n_frame
    b.frame.copy_(y[:, :nf])
    b.mel.index_copy_(1, idx, y[:, :nf].unsqueeze(1))
    b.gate.index_copy_(1, idx, y[:, nf:nf + 1])
    keep = b.not_finished * (torch.sigmoid(y[:, nf]) <= threshold).to(torch.int32)
    b.not_finished.copy_(keep)
    b.mel_lengths.add_(keep)
