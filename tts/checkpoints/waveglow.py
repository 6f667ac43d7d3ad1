"""Loading WaveGlow checkpoints of every DLE layout.

Accepted: DLE/NGC training checkpoints (``state_dict`` with weight norm as
``weight_g``/``weight_v``, with or without the DDP ``module.`` prefix, float32
or float16 tensors, tagged ``cuda:0``), and state_dicts whose weight norm has
already been folded into plain ``weight`` tensors (torch.hub / exported
files). The architecture comes from ``config=...`` when given, else from the
file's ``config`` entry, else it is inferred from the tensor shapes.
Files that pickle a whole model object are refused by the weights-only
reader (``read_checkpoint`` says so); re-save them as a state_dict.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from tts.checkpoints import require_kind
from tts.checkpoints.common import conv_weight, get_state_dict, load_into, read_checkpoint
from tts.errors import CheckpointError, InvalidInputError
from tts.models.waveglow import HOP_LENGTH, UPSAMPLE_KERNEL, WaveGlow, WaveGlowConfig, WNConfig

logger = logging.getLogger(__name__)

__all__ = ["load_waveglow", "infer_waveglow_config"]

_WN_KEY = re.compile(r"^WN\.(\d+)\.")
_CONVINV_KEY = re.compile(r"^convinv\.(\d+)\.conv\.weight$")
_IN_LAYER_KEY = re.compile(r"^WN\.0\.in_layers\.(\d+)\.")


def infer_waveglow_config(state_dict: Mapping[str, torch.Tensor],
                          path: str | os.PathLike[str] = "<state_dict>") -> WaveGlowConfig:
    """Recover ``WaveGlowConfig`` from the shapes of a (prefix-stripped) state_dict."""
    up = state_dict.get("upsample.weight")
    if up is None or up.dim() != 3:
        raise CheckpointError(path, "cannot infer the WaveGlow architecture: no 3-d upsample.weight")
    n_mel = int(up.shape[0])
    kernel = int(up.shape[2])
    if kernel < HOP_LENGTH or kernel % HOP_LENGTH:
        raise CheckpointError(path, f"upsample kernel is {kernel}; it must be a multiple of "
                                    f"{HOP_LENGTH} (DLE's WaveGlow has {UPSAMPLE_KERNEL})")
    convinv = {int(m.group(1)): state_dict[k] for k in state_dict
               if (m := _CONVINV_KEY.match(k))}
    n_flows = len(convinv)
    if n_flows == 0 or sorted(convinv) != list(range(n_flows)):
        raise CheckpointError(path, "cannot infer the WaveGlow architecture: convinv.{k}.conv.weight "
                                    f"keys are not numbered 0..n-1 (found {sorted(convinv)})")
    wn_ids = {int(m.group(1)) for k in state_dict if (m := _WN_KEY.match(k))}
    if wn_ids != set(range(n_flows)):
        raise CheckpointError(path, f"{n_flows} convinv layers but WN layers {sorted(wn_ids)}")
    channels = [int(convinv[k].shape[0]) for k in range(n_flows)]
    n_group = channels[0]
    n_early_every, n_early_size = n_flows, 2
    for k in range(1, n_flows):
        if channels[k] != channels[k - 1]:
            n_early_every, n_early_size = k, channels[k - 1] - channels[k]
            break
    start = conv_weight(state_dict, "WN.0.start.", path, "WaveGlow")
    n_layers = len({int(m.group(1)) for k in state_dict if (m := _IN_LAYER_KEY.match(k))})
    in0 = conv_weight(state_dict, "WN.0.in_layers.0.", path, "WaveGlow")
    try:
        config = WaveGlowConfig(
            n_mel_channels=n_mel, n_flows=n_flows, n_group=n_group, n_early_every=n_early_every,
            n_early_size=n_early_size,
            WN_config=WNConfig(n_layers=n_layers, kernel_size=int(in0.shape[2]),
                               n_channels=int(start.shape[0])),
            upsample_kernel=kernel)
    except InvalidInputError as exc:
        raise CheckpointError(path, f"shapes give an invalid WaveGlow architecture ({exc})") from exc
    expected = [config.flow_channels(k) for k in range(n_flows)]
    if expected != channels:
        raise CheckpointError(path, f"1x1 convolution sizes {channels} do not follow a regular "
                                    f"early-output schedule (expected {expected})")
    return config


def _config_from(ckpt: Mapping[str, Any], sd: Mapping[str, torch.Tensor], path: Any,
                 config: WaveGlowConfig | Mapping[str, Any] | None) -> WaveGlowConfig:
    if isinstance(config, WaveGlowConfig):
        return config
    if config is not None:
        try:
            return WaveGlowConfig.from_dict(config)
        except InvalidInputError as exc:
            raise CheckpointError(path, f"invalid WaveGlow config given: {exc}") from exc
    stored = ckpt.get("config")
    if isinstance(stored, Mapping):
        try:
            return WaveGlowConfig.from_dict(stored)
        except (InvalidInputError, TypeError) as exc:
            raise CheckpointError(path, f"the file's WaveGlow config is invalid: {exc}") from exc
    return infer_waveglow_config(sd, path)


def load_waveglow(path: str | os.PathLike[str], *,
                  config: WaveGlowConfig | Mapping[str, Any] | None = None) -> WaveGlow:
    """Load a WaveGlow checkpoint: eval mode, float32, CPU, weight norm folded, inverses ready.

    Raises ``CheckpointError`` naming the file for every problem (missing,
    unreadable, another model's checkpoint, keys or shapes that do not fit).
    """
    ckpt = read_checkpoint(path)
    sd = get_state_dict(ckpt, path)
    require_kind(sd, path, "waveglow")
    cfg = _config_from(ckpt, sd, path, config)
    weight_norm = any(k.endswith(".weight_g") for k in sd)
    model = WaveGlow(cfg, weight_norm=weight_norm)
    load_into(model, sd, path, "WaveGlow")
    model.remove_weight_norm()
    model.float().eval()
    model.prepare_inference()
    logger.info("loaded WaveGlow from %s (%s)", path, cfg)
    return model
