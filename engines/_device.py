"""Run an engine's entry points with its CUDA device current.

Triton launches its kernels and ``torch.cuda.graph`` captures on the *current* CUDA device,
whatever device the tensors live on; a server with one worker per GPU (``tts-server
--devices 0,1``) calls the engines of ``cuda:1`` from threads whose current device is
``cuda:0`` (Triton then fails with "Pointer argument cannot be accessed from Triton").
Every public method of an engine that launches kernels is wrapped in ``on_device``.
"""

from __future__ import annotations

import functools

import torch


def on_device(fn):
    """Decorator for methods of objects with a ``device`` (or an ``engine.device``)."""
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        dev = getattr(self, "device", None)
        if dev is None:
            dev = self.engine.device
        if dev.type == "cuda" and dev.index is not None and dev.index != torch.cuda.current_device():
            with torch.cuda.device(dev):
                return fn(self, *args, **kwargs)
        return fn(self, *args, **kwargs)
    return wrapper
