"""A Tacotron2 training step with static shapes, CUDA-graphed per shape bucket (``--graph on``).

The eager step (``losses.tacotron2_forward``) pads each batch to its own longest
utterance, so every batch has new shapes, and its teacher-forced decoder loop
launches ~30 small kernels per frame (forward and backward): launch-bound. Here

- batches are padded to a few fixed shapes: ``T`` (mel frames) rounded up to a
  multiple of ``mel_multiple``, ``T_in`` to the longest symbol sequence among the
  pool's utterances of that many frames or fewer (rounded up to ``in_multiple``),
  so there is one shape per mel bucket;
- the forward computes exactly what the eager one computes on the batch padded to
  its own maximum lengths (the "batch extent"), whatever the extra padding:
  convolution inputs are zeroed beyond the extent (the eager convolutions' zero
  padding), BatchNorm statistics are taken over the extent only, the encoder
  LSTM runs without packing (forward direction on the right-aligned, backward
  direction on the left-aligned sequences; outputs zeroed at padding), and the
  loss masks frames and symbols by their lengths. Loss and gradients of a padded
  batch equal the eager ones (tests/test_t2_static.py; dropout off);
- ``Tacotron2GraphStep`` runs forward, backward, gradient clipping and Adam as
  one function on static buffers. On CUDA (``capture=True``) it follows PyTorch's
  whole-network capture recipe: eager warm-up steps on a side stream, then one
  ``torch.cuda.CUDAGraph`` per bucket (all in one memory pool), Adam with
  ``capturable=True`` and the learning rate and guide weight as device tensors.
  On CPU (or ``capture=False``) the same function runs eagerly on the same
  buffers. Every call is one real training step on the batch given; capturing
  does not repeat a batch.

Nothing here changes the model's maths or its checkpoint: only how a training
step is scheduled. Dropout masks are drawn per padded shape, so the random
stream differs from the eager step's.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tts.models.tacotron2 import Tacotron2
from tts.train import losses
from tts.train.data import AcousticBatch


def round_up(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def pad_batch(b: AcousticBatch, t_in: int, t: int) -> AcousticBatch:
    """``b`` zero-padded to ``T_in = t_in`` symbols and ``T = t`` frames (CPU tensors)."""
    di, dt = t_in - b.ids.shape[1], t - b.mel.shape[1]
    if di < 0 or dt < 0:
        raise ValueError(f"batch {tuple(b.ids.shape)}/{tuple(b.mel.shape)} exceeds the bucket "
                         f"({t_in}, {t})")
    return AcousticBatch(F.pad(b.ids, (0, di)), b.input_lengths, F.pad(b.durations, (0, di)),
                         F.pad(b.mel, (0, 0, 0, dt)), b.mel_lengths)


# -- the static-shape forward -----------------------------------------------------------


def masked_batch_norm(x: Tensor, bn: nn.BatchNorm1d, mask: Tensor) -> Tensor:
    """``bn(x)`` for ``x [B, C, T]`` with the batch statistics (and the running-stat update)
    taken over the positions where ``mask`` (broadcastable to ``[B, 1, T]``, 0/1 float) is 1;
    in eval mode the ordinary running-stat normalisation."""
    if not bn.training and bn.track_running_stats:
        return bn(x)
    if bn.momentum is None:
        raise ValueError("masked_batch_norm needs BatchNorm momentum (not cumulative averaging)")
    m = mask.expand(x.shape[0], 1, x.shape[2]).to(x.dtype)
    n = m.sum()
    mean = (x * m).sum(dim=(0, 2)) / n
    centred = x - mean[None, :, None]
    var = (centred * centred * m).sum(dim=(0, 2)) / n
    y = centred * torch.rsqrt(var + bn.eps)[None, :, None]
    if bn.affine:
        y = y * bn.weight[None, :, None] + bn.bias[None, :, None]
    if bn.track_running_stats:
        with torch.no_grad():
            bn.running_mean.lerp_(mean.detach(), bn.momentum)
            bn.running_var.lerp_(var.detach() * n / (n - 1).clamp(min=1), bn.momentum)
            bn.num_batches_tracked.add_(1)
    return y


def _lstm_cell_loop(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """One LSTM direction over ``x [B, T, E]`` (left to right), zero initial state -> ``[B, T, H]``."""
    gx = F.linear(x, w_ih, b_ih + b_hh)  # [B, T, 4H]
    h_dim = w_hh.shape[1]
    h = x.new_zeros(x.shape[0], h_dim)
    c = x.new_zeros(x.shape[0], h_dim)
    outs = []
    for t in range(x.shape[1]):
        i, f, g, o = (gx[:, t] + F.linear(h, w_hh)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs, dim=1)


def bilstm_unpacked(lstm: nn.LSTM, x: Tensor, lengths: Tensor, impl: str = "cudnn") -> Tensor:
    """A one-layer bidirectional ``lstm`` over ``x [B, T, E]`` (right-padded to ``lengths``) with
    the packed sequence's result and no host sync: ``[B, T, 2H]``, 0 at padded positions.

    The forward direction runs on ``x`` as is (padding comes after every real input); the
    backward direction on ``x`` shifted right by ``T - length`` (padding comes first, so it is
    read after the real inputs). ``impl="cudnn"`` runs ``lstm`` once on both arrangements
    stacked along the batch (half of the result is unused); ``"loop"`` runs each direction as
    a loop of cell updates (no cuDNN RNN in the CUDA graph)."""
    b, t, _ = x.shape
    pos = torch.arange(t, device=x.device)
    valid = pos[None, :] < lengths[:, None]  # [B, T]
    shift = (t - lengths)[:, None]
    src_left = pos[None, :] - shift  # left-aligned position k holds x[k - shift]
    x_left = torch.gather(x, 1, src_left.clamp(min=0)[..., None].expand(-1, -1, x.shape[2]))
    x_left = x_left * (src_left >= 0)[..., None].to(x.dtype)
    x_right = x * valid[..., None].to(x.dtype)
    h = lstm.hidden_size
    if impl == "cudnn":
        out, _ = lstm(torch.cat([x_right, x_left], dim=0))
        fwd, bwd_left = out[:b, :, :h], out[b:, :, h:]
    elif impl == "loop":
        fwd = _lstm_cell_loop(x_right, lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0,
                              lstm.bias_hh_l0)
        bwd_left = _lstm_cell_loop(x_left.flip(1), lstm.weight_ih_l0_reverse, lstm.weight_hh_l0_reverse,
                                   lstm.bias_ih_l0_reverse, lstm.bias_hh_l0_reverse).flip(1)
    else:
        raise ValueError(f"unknown encoder LSTM implementation {impl!r} (cudnn | loop)")
    src = (pos[None, :] + shift).clamp(max=t - 1)  # original position j is left-aligned j + shift
    bwd = torch.gather(bwd_left, 1, src[..., None].expand(-1, -1, h))
    return torch.cat([fwd, bwd], dim=2) * valid[..., None].to(x.dtype)


def encode_static(model: Tacotron2, ids: Tensor, input_lengths: Tensor, extent: Tensor,
                  lstm_impl: str = "cudnn") -> Tensor:
    """``model.encode`` on a batch padded beyond its extent: ``extent [1, 1, T_in]`` is 1 at
    positions below the batch's longest input."""
    enc = model.encoder
    x = model.embedding(ids).transpose(1, 2) * extent
    for block in enc.convolutions:
        conv, bn = block[0], block[1]
        x = masked_batch_norm(conv(x), bn, extent)
        x = F.dropout(F.relu(x), 0.5, enc.training) * extent
    return bilstm_unpacked(enc.lstm, x.transpose(1, 2), input_lengths, lstm_impl)


def postnet_static(model: Tacotron2, mel: Tensor, extent: Tensor) -> Tensor:
    """``model.postnet_forward`` for ``mel [B, n_mel, T]`` padded beyond the batch extent."""
    post = model.postnet
    x = mel * extent
    last = len(post.convolutions) - 1
    for i, block in enumerate(post.convolutions):
        x = masked_batch_norm(block[0](x), block[1], extent)
        if i < last:
            x = torch.tanh(x)
        x = F.dropout(x, 0.5, post.training) * extent
    return mel + x


def tacotron2_forward_static(model: Tacotron2, ids: Tensor, input_lengths: Tensor, mel: Tensor,
                             mel_lengths: Tensor, lstm_impl: str = "cudnn", self_feed: float = 0.0,
                             self_feed_passes: int = 1) -> losses.Tacotron2TrainOutput:
    """``losses.tacotron2_forward`` on a batch padded to a bucket (``ids [B, T_in]``,
    ``mel [B, n_mel, T]``): equal to it at the real frames and symbols, no host syncs."""
    dec = model.decoder
    if dec.n_frames_per_step != 1:
        raise ValueError("training supports n_frames_per_step == 1 only")
    t_in, t = ids.shape[1], mel.shape[2]
    ext_in = (torch.arange(t_in, device=ids.device) < input_lengths.max()).to(mel.dtype)[None, None]
    ext_mel = (torch.arange(t, device=mel.device) < mel_lengths.max()).to(mel.dtype)[None, None]
    memory = encode_static(model, ids, input_lengths, ext_in, lstm_impl)
    mel_out, gates, aligns = losses.teacher_forced_decode(dec, memory, input_lengths, mel, self_feed,
                                                          self_feed_passes)
    return losses.Tacotron2TrainOutput(mel=mel_out, mel_postnet=postnet_static(model, mel_out, ext_mel),
                                       gate=gates, alignments=aligns)


def static_loss(model: Tacotron2, b: AcousticBatch, guide_weight: float | Tensor,
                lstm_impl: str = "cudnn", self_feed: float = 0.0, self_feed_passes: int = 1
                ) -> tuple[Tensor, dict[str, Tensor]]:
    """Forward and loss of a bucket-padded batch (``Tacotron2Task``'s loss)."""
    mel = b.mel.transpose(1, 2)
    out = tacotron2_forward_static(model, b.ids, b.input_lengths, mel, b.mel_lengths, lstm_impl,
                                   self_feed, self_feed_passes)
    use_guide = isinstance(guide_weight, Tensor) or guide_weight > 0
    prior = losses.duration_prior(b.durations, b.input_lengths, mel.shape[2]) if use_guide else None
    return losses.tacotron2_loss(out, mel, b.mel_lengths, prior, b.input_lengths, guide_weight)


# -- the step ------------------------------------------------------------------------------


def make_optimizer(model: nn.Module, settings: dict[str, Any], device: torch.device,
                   capturable: bool) -> torch.optim.Adam:
    """The trainer's Adam; ``capturable`` (CUDA graphs): state on the device, lr a device tensor."""
    if capturable:
        return torch.optim.Adam(model.parameters(), lr=torch.tensor(float(settings["lr"]), device=device),
                                weight_decay=settings["weight_decay"], capturable=True, foreach=True)
    return torch.optim.Adam(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])


def restore_capturable(opt: torch.optim.Optimizer, lr: Tensor) -> None:
    """After ``load_state_dict`` of an eager checkpoint (which brings back its float lr and
    ``capturable=False``, and keeps Adam's ``step`` counters on the CPU): capturable again."""
    for g in opt.param_groups:
        g["lr"] = lr
        g["capturable"] = True
        for p in g["params"]:
            st = opt.state.get(p, {})
            if isinstance(st.get("step"), Tensor):
                st["step"] = st["step"].to(device=p.device, dtype=torch.float32)


def portable_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer ``state_dict`` saved as the eager trainer saves it (float lr, not capturable)."""
    for g in state.get("param_groups", []):
        if isinstance(g.get("lr"), Tensor):
            g["lr"] = float(g["lr"])
        if "capturable" in g:
            g["capturable"] = False
    return state


class Tacotron2GraphStep:
    """One Tacotron2 training step (forward, backward, clipping, Adam) on static shape buckets.

    ``step(batch, lr, guide_weight)`` pads ``batch`` (CPU) into its bucket's static buffers
    and runs the step; it returns the logged values (0-d tensors in persistent buffers,
    overwritten by the next step). With ``capture`` (CUDA only) the first ``warmup`` steps run
    eagerly on a side stream and each bucket is captured into a CUDA graph the first time it
    is met after them (``warmup_per_bucket`` further eager steps first, if asked); then the
    step is one ``replay``. ``optimizer`` must come from ``make_optimizer(..., capturable=True)``
    then.
    """

    def __init__(self, model: Tacotron2, optimizer: torch.optim.Optimizer, device: torch.device, *,
                 grad_clip: float, use_guide: bool, capture: bool, t_in_table: dict[int, int] | None = None,
                 mel_multiple: int = 64, in_multiple: int = 32, warmup: int = 2,
                 warmup_per_bucket: int = 0, lstm_impl: str = "cudnn", self_feed: float = 0.0,
                 self_feed_passes: int = 1) -> None:
        self.model, self.opt, self.device = model, optimizer, torch.device(device)
        self.grad_clip, self.use_guide = float(grad_clip), bool(use_guide)
        self.capture = bool(capture)
        if self.capture and self.device.type != "cuda":
            raise ValueError("CUDA-graph capture needs a CUDA device")
        if self.capture and warmup < 1:
            raise ValueError("capture needs at least one eager warm-up step (Adam's state)")
        self.t_in_table = dict(t_in_table or {})
        self.mel_multiple, self.in_multiple = int(mel_multiple), int(in_multiple)
        self.warmup, self.warmup_per_bucket = int(warmup), int(warmup_per_bucket)
        self.lstm_impl = lstm_impl
        self.self_feed = float(self_feed)
        self.self_feed_passes = int(self_feed_passes)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.buffers: dict[tuple[int, int], AcousticBatch] = {}
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.eager_steps: dict[tuple[int, int], int] = {}
        self.n_eager = 0
        self.n_captures = 0
        self.out: dict[str, Tensor] | None = None
        self.gw = torch.zeros((), device=self.device)
        self.lr = None
        if self.capture:
            lr = optimizer.param_groups[0]["lr"]
            if not (isinstance(lr, Tensor) and lr.device.type == "cuda"):
                raise ValueError("capture needs make_optimizer(..., capturable=True)")
            self.lr = lr
            self.stream = torch.cuda.Stream(self.device)
            self.pool = None
            model.encoder.lstm.flatten_parameters()

    @staticmethod
    def t_in_for_buckets(mel_lengths: np.ndarray, in_lengths: np.ndarray, mel_multiple: int = 64,
                         in_multiple: int = 32) -> dict[int, int]:
        """``{T bucket: T_in bucket}``: per mel bucket the longest input among the utterances of at
        most that many frames (a batch's inputs never exceed it), rounded up to ``in_multiple``."""
        order = np.argsort(mel_lengths, kind="stable")
        ml, il = mel_lengths[order], np.maximum.accumulate(in_lengths[order])
        table = {}
        for t in sorted({round_up(int(m), mel_multiple) for m in ml}):
            k = int(np.searchsorted(ml, t, side="right")) - 1
            table[t] = round_up(int(il[k]), in_multiple)
        return table

    def bucket(self, b: AcousticBatch) -> tuple[int, int]:
        t = round_up(b.mel.shape[1], self.mel_multiple)
        t_in = self.t_in_table.get(t, 0)
        return max(t_in, round_up(b.ids.shape[1], self.in_multiple)), t

    def _load(self, b: AcousticBatch) -> tuple[tuple[int, int], AcousticBatch]:
        key = self.bucket(b)
        padded = pad_batch(b, *key)
        buf = self.buffers.get(key)
        if buf is None:
            buf = self.buffers[key] = AcousticBatch(*(torch.zeros_like(x, device=self.device) for x in
                                                      (padded.ids, padded.input_lengths, padded.durations,
                                                       padded.mel, padded.mel_lengths)))
        if buf.ids.shape[0] != padded.ids.shape[0]:
            raise ValueError("the batch size must not change between steps")
        pin = self.device.type == "cuda"
        for dst, src in zip((buf.ids, buf.input_lengths, buf.durations, buf.mel, buf.mel_lengths),
                            (padded.ids, padded.input_lengths, padded.durations, padded.mel,
                             padded.mel_lengths)):
            dst.copy_(src.pin_memory() if pin else src, non_blocking=pin)
        return key, buf

    def _iteration(self, buf: AcousticBatch) -> None:
        """Forward, backward, clipping, Adam; logs into ``self.out`` (allocated on first use)."""
        loss, logs = static_loss(self.model, buf, self.gw if self.use_guide else 0.0, self.lstm_impl,
                                 self.self_feed, self.self_feed_passes)
        loss.backward()
        if self.grad_clip > 0:
            logs["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip,
                                                                foreach=True).detach()
        self.opt.step()
        if self.out is None:  # only in an eager step (capture needs warm-up first)
            self.out = {k: torch.zeros((), dtype=v.dtype, device=self.device) for k, v in logs.items()}
        for k, v in logs.items():
            self.out[k].copy_(v)

    def _eager(self, buf: AcousticBatch) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.capture:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                self._iteration(buf)
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        else:
            self._iteration(buf)
        self.n_eager += 1

    def step(self, batch: AcousticBatch, lr: float, guide_weight: float) -> dict[str, Tensor]:
        key, buf = self._load(batch)
        self.gw.fill_(float(guide_weight))
        if not self.capture:
            for g in self.opt.param_groups:
                g["lr"] = lr
            self._eager(buf)
        else:
            self.lr.fill_(float(lr))
            g = self.graphs.get(key)
            if g is None:
                done = self.eager_steps.get(key, 0)
                if self.n_eager < self.warmup or done < self.warmup_per_bucket:
                    self._eager(buf)
                    self.eager_steps[key] = done + 1
                    return self.out
                g = self._capture(buf)
                self.graphs[key] = g
            g.replay()
        return self.out

    def _capture(self, buf: AcousticBatch) -> torch.cuda.CUDAGraph:
        """Capture one step on ``buf`` (shared pool; outputs, grads read only inside the graph)."""
        torch.cuda.synchronize(self.device)
        self.opt.zero_grad(set_to_none=True)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self.pool, stream=self.stream):
            self._iteration(buf)
        if self.pool is None:
            self.pool = g.pool()
        self.n_captures += 1
        return g


__all__ = ["Tacotron2GraphStep", "make_optimizer", "pad_batch", "masked_batch_norm", "bilstm_unpacked",
           "tacotron2_forward_static", "static_loss", "round_up", "restore_capturable",
           "portable_optimizer_state"]
