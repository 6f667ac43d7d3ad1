"""Denoiser engine: WaveGlow's STFT bias removal, one CUDA graph per audio shape."""

from __future__ import annotations

import torch
from torch import Tensor

from tts.engines._device import on_device
from tts.engines._graphs import LRU, GraphPool, ShapeGraphs, capture

__all__ = ["DenoiserEngine"]


class DenoiserEngine(ShapeGraphs):
    """The denoiser on its device in float32 (as DLE runs it): ``__call__(audio [B, N], strength)``.

    Returns ``[B, 1, hop * (N // hop)]`` float32, as ``Denoiser.forward``. On CUDA each
    ``(B, N)`` is captured in a CUDA graph (a small LRU; ``strength`` is a device scalar the
    graph reads, so one graph serves every strength): the ~20 small STFT/iSTFT launches become
    one replay.
    """

    def __init__(self, denoiser: torch.nn.Module, *, device: torch.device | str = "cuda",
                 use_graphs: bool | None = None, max_graphs: int = 8) -> None:
        self.device = torch.device(device)
        self.denoiser = denoiser.to(self.device).float().eval()
        self.use_graphs = self.device.type == "cuda" if use_graphs is None else bool(use_graphs)
        self._graphs: LRU[tuple] = LRU(max_graphs)
        self._pool = GraphPool()

    def _graph(self, b: int, n: int) -> tuple:
        return self._graphs.get_or_make((b, n), lambda: self._capture(b, n))

    def _capture(self, b: int, n: int) -> tuple:
        """(graph, static audio ``[b, n]``, static strength ``[]``, static output) of one shape."""
        audio = torch.zeros(b, n, device=self.device)
        strength = torch.zeros((), device=self.device)
        graph, out = capture(lambda: self.denoiser(audio, strength=strength), self.device, pool=self._pool)
        return graph, audio, strength, out

    @on_device
    @torch.inference_mode()
    def __call__(self, audio: Tensor, strength: float = 0.01) -> Tensor:
        """``audio [B, N]`` (any float dtype) -> ``[B, 1, hop * (N // hop)]`` float32."""
        with torch.autocast(self.device.type, enabled=False):
            if not self.use_graphs or audio.dim() != 2:
                return self.denoiser(audio.to(self.device, torch.float32), strength=strength)
            graph, a, s, out = self._graph(audio.size(0), audio.size(1))
            a.copy_(audio)
            s.fill_(float(strength))
            graph.replay()
            return out.clone()

    forward = __call__
