"""Executors that run a network fast on a device.

``make_engine(kind, module, device=..., precision=...)`` returns an object
with the same inference method as the eager module it replaces
(``Tacotron2.infer``, ``FastSpeech.infer``, ``WaveGlow.infer``,
``Denoiser.__call__``), so the synthesizer swaps one for the other. The eager
module itself is the reference executor and is what CPU runs use.
"""

from __future__ import annotations

from typing import Any

import torch

KINDS = ("tacotron2", "fastspeech", "waveglow", "denoiser")


def make_engine(kind: str, module: torch.nn.Module, *, device: torch.device, precision: str) -> Any:
    """The fastest available executor of ``module`` on ``device`` (the eager module on CPU)."""
    if kind not in KINDS:
        raise ValueError(f"unknown engine kind {kind!r}")
    return module
