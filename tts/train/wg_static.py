"""A WaveGlow training step as one CUDA graph (``--graph on`` for waveglow).

WaveGlow trains on batches of one fixed shape (``batch_size`` random windows of
``segment_length`` samples), so the whole step (the mel of the audio, forward,
loss, backward, Adam) is captured once and replayed: no launch cost and no CPU
time on the step's path, and the host copy of the next batch overlaps the GPU's
work (pinned memory, a non-blocking copy into the static buffer).

The maths is the eager step's (``WaveGlowTask.train_step_loss``): the same
batches from the same random stream, the same loss (``losses.waveglow_loss``,
optionally under bf16 autocast), Adam with ``capturable=True`` and the learning
rate as a device tensor. Checkpoints are the same. ``tests/test_train.py``
checks on CPU (where the step runs eagerly on the static buffer) that losses
and weights equal the eager trainer's step for step.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn


class WaveGlowGraphStep:
    """``step(batch, lr, guide_weight=0)``: one training step on ``batch``, ``audio [B, L]``
    (CPU), or ``(audio, mel)`` when the mel is given rather than computed from the audio
    (``WaveGlowTask``'s GTA setting).

    ``loss_fn(mel, audio) -> (loss, logs)`` and ``mel_fn(audio) -> mel`` are the task's.
    With ``capture`` (CUDA) the first ``warmup`` steps run eagerly on a side stream (Adam's
    state must exist before capture), the next is captured, and every later one is a replay.
    The returned logs are 0-d device tensors overwritten by the next step.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                 mel_fn: Callable[[Tensor], Tensor],
                 loss_fn: Callable[[Tensor, Tensor], tuple[Tensor, dict[str, Tensor]]], *,
                 capture: bool, warmup: int = 2, grad_clip: float = 0.0) -> None:
        self.model, self.opt, self.device = model, optimizer, torch.device(device)
        self.mel_fn, self.loss_fn = mel_fn, loss_fn
        self.capture, self.warmup, self.grad_clip = bool(capture), int(warmup), float(grad_clip)
        if self.capture and self.device.type != "cuda":
            raise ValueError("CUDA-graph capture needs a CUDA device")
        if self.capture and self.warmup < 1:
            raise ValueError("capture needs at least one eager warm-up step (Adam's state)")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.audio: Tensor | None = None
        self.mel: Tensor | None = None   # a given mel's static buffer
        self.bufs: list[Tensor] | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: dict[str, Tensor] | None = None
        self.n_eager = 0
        self.lr = None
        if self.capture:
            lr = optimizer.param_groups[0]["lr"]
            if not (isinstance(lr, Tensor) and lr.device.type == "cuda"):
                raise ValueError("capture needs t2_static.make_optimizer(..., capturable=True)")
            self.lr = lr
            self.stream = torch.cuda.Stream(self.device)

    def _load(self, batch: Tensor | tuple[Tensor, ...]) -> None:
        tensors = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
        if self.bufs is None:
            self.bufs = [torch.zeros(t.shape, dtype=torch.float32, device=self.device) for t in tensors]
            self.audio = self.bufs[0]
            self.mel = self.bufs[1] if len(self.bufs) > 1 else None
        shapes = [tuple(t.shape) for t in tensors]
        static = [tuple(b.shape) for b in self.bufs]
        if shapes != static:
            raise ValueError(f"the batch shape must not change between steps: {shapes} after {static}")
        pin = self.device.type == "cuda"
        for buf, t in zip(self.bufs, tensors):
            buf.copy_(t.pin_memory() if pin else t, non_blocking=pin)

    def _iteration(self) -> None:
        if self.mel is not None:
            mel = self.mel
        else:
            with torch.no_grad():
                mel = self.mel_fn(self.audio)
        loss, logs = self.loss_fn(mel, self.audio)
        loss.backward()
        if self.grad_clip > 0:
            logs["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip,
                                                                foreach=True).detach()
        self.opt.step()
        if self.out is None:  # only in an eager step (capture comes after warm-up)
            self.out = {k: torch.zeros((), dtype=v.dtype, device=self.device) for k, v in logs.items()}
        for k, v in logs.items():
            self.out[k].copy_(v)

    def _eager(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.capture:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                self._iteration()
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        else:
            self._iteration()
        self.n_eager += 1

    def step(self, batch: Tensor | tuple[Tensor, ...], lr: float, guide_weight: float = 0.0
             ) -> dict[str, Tensor]:
        self._load(batch)
        if not self.capture:
            for g in self.opt.param_groups:
                g["lr"] = lr
            self._eager()
            return self.out
        self.lr.fill_(float(lr))
        if self.graph is None:
            if self.n_eager < self.warmup:
                self._eager()
                return self.out
            torch.cuda.synchronize(self.device)
            self.opt.zero_grad(set_to_none=True)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, stream=self.stream):
                self._iteration()
            self.graph = g   # capture records the step without running it: replay it now
        self.graph.replay()
        return self.out


__all__ = ["WaveGlowGraphStep"]
