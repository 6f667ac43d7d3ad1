"""HiFi-GAN engine: folded weights in the engine dtype, one CUDA graph per mel shape.

``HiFiGANEngine.infer`` has the signature and return type of ``HiFiGAN.infer`` (and so of
``WaveGlow.infer``: ``sigma``, ``z`` and ``generator`` are accepted and ignored). The
generator is a chain of convolutions, so the engine is the eager maths on prepared weights:

- weight norm folded once (``HiFiGAN.remove_weight_norm``), the copy cast to float16 or float32;
- on CUDA each ``(batch, frames)`` shape is captured in a CUDA graph (a small LRU): the ~200
  convolution, activation and sum launches of one call become one replay. cuDNN picks each
  convolution's algorithm by measuring (``benchmark``) while the graph is warmed up and
  captured; the chosen kernels are what the graph replays.
- precision as every engine takes it (``tts.engines.precision``): ``fp32`` is IEEE float32 (TF32
  off in the convolutions, where cuDNN would use it by default), ``tf32`` allows TF32.

Shapes are exact (no padding: the generator's receptive field reaches across a padded end),
so the engine computes the function of the eager model.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from tts.engines._device import on_device
from tts.engines._graphs import LRU, GraphPool, ShapeGraphs, capture
from tts.engines.precision import ENGINE_PRECISIONS, dtype_of, set_float32_math
from tts.errors import InvalidInputError
from tts.models.hifigan import HiFiGAN

__all__ = ["HiFiGANEngine"]


class HiFiGANEngine(ShapeGraphs):
    """Fast ``HiFiGAN.infer``: ``mel [B, n_mel, T]`` -> audio ``[B, hop*T]`` in the engine dtype.

    ``precision``: one of ``ENGINE_PRECISIONS``. ``use_graphs``: default on for CUDA; ``max_graphs`` shapes are
    kept (may be raised later). The eager model given is not changed (the engine folds a copy).
    """

    def __init__(self, model: HiFiGAN, *, device: torch.device | str = "cuda", precision: str = "fp16",
                 use_graphs: bool | None = None, max_graphs: int = 4, cache=None) -> None:
        del cache                     # folding weight norm takes milliseconds: nothing worth caching
        if precision not in ENGINE_PRECISIONS:
            raise ValueError(f"precision must be one of {list(ENGINE_PRECISIONS)}, got {precision!r}")
        self.device = torch.device(device)
        self.precision = precision
        self.dtype = dtype_of(precision)
        set_float32_math(precision, self.device)   # fp32: IEEE float32 (no TF32)
        self.config = model.config
        self.n_mel_channels = model.n_mel_channels
        self.hop_length = model.hop_length
        folded = copy.deepcopy(model).float()
        if folded.has_weight_norm:
            folded.remove_weight_norm()
        self.model = folded.to(self.device, self.dtype).eval().requires_grad_(False)
        self.use_graphs = self.device.type == "cuda" if use_graphs is None else bool(use_graphs)
        self._graphs: LRU[tuple] = LRU(max_graphs)
        self._pool = GraphPool()

    def _flags(self):
        """cuDNN settings of every call: TF32 only for ``tf32``, algorithms measured once per shape
        (the measurement runs in the warm-up before a capture)."""
        return torch.backends.cudnn.flags(enabled=True, benchmark=self.device.type == "cuda",
                                          deterministic=False, allow_tf32=self.precision == "tf32")

    @on_device
    @torch.inference_mode()
    def infer(self, mel: Tensor, sigma: float = 0.0, *, z: Tensor | None = None,
              generator: torch.Generator | None = None) -> Tensor:
        """``HiFiGAN.infer`` on the engine; ``sigma``, ``z`` and ``generator`` are ignored."""
        del sigma, z, generator
        if mel.dim() != 3 or mel.size(1) != self.n_mel_channels:
            raise InvalidInputError(
                f"mel must be [B, {self.n_mel_channels}, T], got shape {tuple(mel.shape)}", field="mel")
        b, _, t = mel.shape
        with torch.autocast(self.device.type, enabled=False), self._flags():
            if not self.use_graphs:
                return self.model(mel.to(self.device, self.dtype)).squeeze(1)
            graph, static_mel, out = self._graphs.get_or_make((b, t), lambda: self._capture(b, t))
            static_mel.copy_(mel)
            graph.replay()
            return out.clone()

    def _capture(self, b: int, t: int) -> tuple:
        """(graph, static mel ``[b, n_mel, t]``, static audio ``[b, hop*t]``) of one shape."""
        mel = torch.zeros(b, self.n_mel_channels, t, device=self.device, dtype=self.dtype)
        graph, out = capture(lambda: self.model(mel).squeeze(1), self.device, pool=self._pool, warmup=2)
        return graph, mel, out

    __call__ = infer
