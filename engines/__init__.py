"""Executors that run a network fast on a device.

``make_engine(kind, module, device=..., precision=...)`` returns an object
with the same inference method as the eager module it replaces
(``Tacotron2.infer``, ``FastSpeech.infer``, ``WaveGlow.infer``, ``HiFiGAN.infer``,
``Denoiser.__call__``), so the synthesizer swaps one for the other. On the
CPU the eager module itself is returned: it is the reference executor. A
Griffin-Lim vocoder and its pass-through denoiser are returned as they are on
every device: they are FFTs, with nothing to fold, fuse or capture.

Engines (each imported lazily):

- ``tacotron2``: ``Tacotron2Engine`` (static buffers, fused Triton decoder
  step, K steps per CUDA-graph replay) and ``SlotDecoder`` (continuous
  batching); its parts: ``tacotron2_builder`` (prepared weights),
  ``tacotron2_encoder`` (encoder and postnet graphs), ``tacotron2_step`` (the
  decoder state and step), ``slot_decoder``;
- ``waveglow``: ``WaveGlowEngine`` (folded and composed weights, fused WN
  layers, CUDA graph per shape; weights from ``waveglow_builder``);
- ``hifigan``: ``HiFiGANEngine`` (folded weights, CUDA graph per shape);
- ``denoiser``: ``DenoiserEngine`` (CUDA graph per shape);
- ``fastspeech``: ``FastSpeechEngine`` (one CUDA graph per length bucket,
  ``select_bucket`` a pure function);
- ``cache``: the on-disk engine cache (``EngineCache``; ``use_cache`` makes
  one active for the engines built inside a block, ``$TTS_ENGINE_CACHE``
  names the folder or turns it off).

Shared helpers: ``_graphs`` (the one CUDA-graph capture and the LRU of
captured graphs), ``_device`` (entry points run with the engine's device
current), ``_env`` (every environment variable the engines and kernels read).
"""

from __future__ import annotations

from typing import Any

import torch

KINDS = ("tacotron2", "fastspeech", "waveglow", "hifigan", "denoiser")


def make_engine(kind: str, module: torch.nn.Module, *, device: torch.device | str,
                precision: str, cache: Any = "auto", **options: Any) -> Any:
    """The fastest available executor of ``module`` on ``device`` (the eager module on CPU).

    ``cache``: ``"auto"`` (the cache ``tts.engines.cache.use_cache`` made active, else the
    one ``$TTS_ENGINE_CACHE`` / the user cache folder names), an ``EngineCache``, or None
    (build everything now, store nothing). ``options`` go to the engine's constructor
    (e.g. ``backend``, ``steps_per_replay``).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown engine kind {kind!r}; known: {', '.join(KINDS)}")
    from tts.models.griffinlim import GriffinLim, PassThroughDenoiser
    if isinstance(module, (GriffinLim, PassThroughDenoiser)):
        return module
    dev = torch.device(device)
    if dev.type != "cuda":
        return module
    if isinstance(cache, str):
        if cache != "auto":
            raise ValueError(f"cache must be 'auto', an EngineCache or None, got {cache!r}")
        from tts.engines.cache import active_cache
        cache = active_cache()
    if kind == "tacotron2":
        from tts.engines.tacotron2 import Tacotron2Engine
        return Tacotron2Engine(module, device=dev, precision=precision, cache=cache, **options)
    if kind == "waveglow":
        from tts.engines.waveglow import WaveGlowEngine
        return WaveGlowEngine(module, device=dev, precision=precision, cache=cache, **options)
    if kind == "hifigan":
        from tts.engines.hifigan import HiFiGANEngine
        return HiFiGANEngine(module, device=dev, precision=precision, cache=cache, **options)
    if kind == "denoiser":
        from tts.engines.denoiser import DenoiserEngine
        return DenoiserEngine(module, device=dev)
    from tts.engines.fastspeech import FastSpeechEngine
    return FastSpeechEngine(module, device=dev, precision=precision, **options)
