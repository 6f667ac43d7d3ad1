"""Reading every supported checkpoint layout into models.

Public entry points (each returns a model in eval mode on CPU, float32):

- ``load_tacotron2(path, **options) -> tts.models.tacotron2.Tacotron2``
- ``load_waveglow(path) -> tts.models.waveglow.WaveGlow`` (weight norm removed)
- ``load_fastspeech(path, config=None) -> tts.models.fastspeech.FastSpeech``
- ``load_hifigan(path) -> tts.models.hifigan.HiFiGAN`` (weight norm removed)
- ``detect_kind(path) -> "tacotron2" | "waveglow" | "fastspeech" | "hifigan"``

Every failure is a ``tts.errors.CheckpointError`` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from tts.checkpoints.common import get_state_dict, read_checkpoint
from tts.errors import CheckpointError

#: A key that only the given model's state_dict has (after prefix stripping).
_SIGNATURES = {
    "tacotron2": ("decoder.attention_rnn.weight_ih", "embedding.weight"),
    "waveglow": ("upsample.weight",),
    "fastspeech": ("word_emb.weight",),
    "hifigan": ("conv_pre.bias", "conv_post.bias"),
}

KINDS = tuple(_SIGNATURES)

_NAMES = {"tacotron2": "Tacotron2", "waveglow": "WaveGlow", "fastspeech": "FastSpeech",
          "hifigan": "HiFi-GAN"}


def kind_of_state_dict(state_dict: Mapping[str, Any]) -> str | None:
    """The model kind whose signature keys this (prefix-stripped) state_dict has, or None."""
    for kind, keys in _SIGNATURES.items():
        if all(k in state_dict for k in keys):
            return kind
    return None


def detect_kind(path: str | os.PathLike[str]) -> str:
    """Which model a checkpoint file holds; raises CheckpointError when none fits."""
    ckpt = read_checkpoint(path)
    sd = get_state_dict(ckpt, path)
    kind = kind_of_state_dict(sd)
    if kind is None:
        raise CheckpointError(path, "not a Tacotron2, WaveGlow, FastSpeech or HiFi-GAN checkpoint "
                                    f"(unrecognised weights, e.g. {next(iter(sd), 'none')!r})")
    return kind


def require_kind(state_dict: Mapping[str, Any], path: str | os.PathLike[str], kind: str) -> None:
    """Raise a clear CheckpointError when a state_dict is of another model kind."""
    found = kind_of_state_dict(state_dict)
    if found == kind:
        return
    want = _NAMES[kind]
    if found is None:
        raise CheckpointError(path, f"not a {want} checkpoint (unrecognised weights, "
                                    f"e.g. {next(iter(state_dict), 'none')!r})")
    raise CheckpointError(path, f"this is a {_NAMES[found]} checkpoint, not a {want} checkpoint")


def load_tacotron2(path: str | os.PathLike[str], **options: Any):
    """Load a Tacotron2 checkpoint of any DLE layout. See ``tts.checkpoints.tacotron2``."""
    from tts.checkpoints.tacotron2 import load_tacotron2 as _load
    return _load(path, **options)


def load_waveglow(path: str | os.PathLike[str], **options: Any):
    """Load a WaveGlow checkpoint, weight norm removed. See ``tts.checkpoints.waveglow``."""
    from tts.checkpoints.waveglow import load_waveglow as _load
    return _load(path, **options)


def load_fastspeech(path: str | os.PathLike[str], config: Any = None, **options: Any):
    """Load a CUDA-Optimized FastSpeech checkpoint. See ``tts.checkpoints.fastspeech``."""
    from tts.checkpoints.fastspeech import load_fastspeech as _load
    return _load(path, config=config, **options)


def load_hifigan(path: str | os.PathLike[str], **options: Any):
    """Load a HiFi-GAN generator checkpoint, weight norm removed. See ``tts.checkpoints.hifigan``."""
    from tts.checkpoints.hifigan import load_hifigan as _load
    return _load(path, **options)
