"""Loading HiFi-GAN generator checkpoints of every DLE layout.

Accepted, all as they are:

- DLE/NGC training checkpoints ``hifigan_gen_checkpoint_<epoch>.pt``: a dict
  with ``generator`` (state_dict, weight norm as ``weight_g``/``weight_v``),
  ``gen_ema`` (state_dict or None), ``config`` (the six generator
  hyper-parameters), ``train_setup`` and ``train_state``; ``ema=True`` loads
  ``gen_ema`` instead of ``generator``;
- older files keyed ``gen``; ``state_dict``/``model`` wrappers; bare state_dicts;
- DDP ``module.`` prefixes;
- state_dicts whose weight norm is already folded into plain ``weight``
  (what DLE's ``load_and_setup_model`` leaves after ``remove_weight_norm``);
- the flat residual-block numbering of the original HiFi-GAN code and of DLE
  files from before its ONNX fix (``resblocks.<i*num_kernels+j>.`` instead of
  ``resblocks.<i>.<j>.``), and weights with a trailing singleton dimension
  more or less than the module's (DLE's conv1d/NHWC fix-up).

The architecture comes from ``config=...`` when given, else from the file's
``config`` entry, else from the tensor shapes. Shapes give everything but the
upsampling strides and the residual dilations: a stride is taken as half its
kernel (true of every published HiFi-GAN config) and dilations as DLE's
defaults ((1, 3, 5) for ResBlock1, (1, 3) for ResBlock2), with a warning.
The mel channel count is always read from ``conv_pre`` (DLE hard-codes 80).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from tts.checkpoints import require_kind
from tts.checkpoints.common import conv_weight, get_state_dict, load_into, read_checkpoint, strip_module_prefix
from tts.errors import CheckpointError, InvalidInputError
from tts.models.hifigan import HiFiGAN, HiFiGANConfig

logger = logging.getLogger(__name__)

__all__ = ["load_hifigan", "infer_hifigan_config", "hifigan_state_dict"]

_UPS = re.compile(r"^ups\.(\d+)\.")
_FLAT = re.compile(r"^resblocks\.(\d+)\.(convs1|convs2|convs)\.(\d+)\.(\w+)$")
_BLOCK = re.compile(r"^resblocks\.0\.(\d+)\.(convs1|convs)\.0\.")


def _n_ups(sd: Mapping[str, torch.Tensor]) -> int:
    return len({int(m.group(1)) for k in sd if (m := _UPS.match(k))})


def _unflatten_resblocks(sd: dict[str, torch.Tensor], path: Any) -> dict[str, torch.Tensor]:
    """``resblocks.<n>.convs1.<k>.*`` (flat) -> ``resblocks.<n // K>.<n % K>.convs1.<k>.*``."""
    flat = {k: m for k in sd if (m := _FLAT.match(k))}
    if not flat:
        return sd
    n_ups = _n_ups(sd)
    blocks = {int(m.group(1)) for m in flat.values()}
    if n_ups == 0 or len(blocks) % n_ups or sorted(blocks) != list(range(len(blocks))):
        raise CheckpointError(path, f"flat resblocks numbered {sorted(blocks)} do not divide into "
                                    f"{n_ups} upsampling stages")
    per = len(blocks) // n_ups
    out = {}
    for k, v in sd.items():
        m = flat.get(k)
        if m is None:
            out[k] = v
        else:
            n = int(m.group(1))
            out[f"resblocks.{n // per}.{n % per}.{m.group(2)}.{m.group(3)}.{m.group(4)}"] = v
    return out


def hifigan_state_dict(ckpt: Mapping[str, Any], path: str | os.PathLike[str] = "<checkpoint>", *,
                       ema: bool = False) -> dict[str, torch.Tensor]:
    """The generator's state_dict from a checkpoint dict: prefixes stripped, resblocks renumbered."""
    if ema:
        sd = ckpt.get("gen_ema")
        if not isinstance(sd, Mapping):
            raise CheckpointError(path, "no EMA weights in this checkpoint ('gen_ema' is "
                                        f"{'absent' if 'gen_ema' not in ckpt else 'empty'}: the run "
                                        "was trained without --ema_decay); load it without ema")
        bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise CheckpointError(path, f"gen_ema entry {bad[0]!r} is not a tensor")
        sd = strip_module_prefix(sd)
    else:
        sd = get_state_dict(ckpt, path, keys=("generator", "gen", "state_dict", "model"))
    require_kind(sd, path, "hifigan")
    return _unflatten_resblocks(sd, path)


def infer_hifigan_config(state_dict: Mapping[str, torch.Tensor],
                         path: str | os.PathLike[str] = "<state_dict>") -> HiFiGANConfig:
    """Recover ``HiFiGANConfig`` from the shapes of a (prefix-stripped, renumbered) state_dict.

    Strides are taken as half of each upsampling kernel and dilations as
    DLE's defaults: neither is stored in any tensor.
    """
    pre = conv_weight(state_dict, "conv_pre.", path, "HiFi-GAN")
    if pre.dim() != 3:
        raise CheckpointError(path, f"conv_pre weight is {pre.dim()}-d, expected [C, n_mel, 7]")
    c0, n_mel = int(pre.shape[0]), int(pre.shape[1])
    n_ups = _n_ups(state_dict)
    if n_ups == 0:
        raise CheckpointError(path, "cannot infer the HiFi-GAN architecture: no ups.<i> layers")
    kernels, rates = [], []
    for i in range(n_ups):
        k = int(conv_weight(state_dict, f"ups.{i}.", path, "HiFi-GAN").shape[-1])
        if k % 2:
            raise CheckpointError(path, f"ups.{i} has an odd kernel ({k}); its stride cannot be "
                                        "inferred: give the config (config=...)")
        kernels.append(k)
        rates.append(k // 2)
    blocks = {}
    kind = None
    for key in state_dict:
        if m := _BLOCK.match(key):
            blocks[int(m.group(1))] = m.group(2)
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise CheckpointError(path, "cannot infer the HiFi-GAN architecture: no resblocks.0.<j> blocks")
    kind = "1" if blocks[0] == "convs1" else "2"
    sub = "convs1" if kind == "1" else "convs"
    rk = tuple(int(conv_weight(state_dict, f"resblocks.0.{j}.{sub}.0.", path, "HiFi-GAN").shape[-1])
               for j in range(len(blocks)))
    dil = ((1, 3, 5) if kind == "1" else (1, 3),) * len(rk)
    logger.warning("%s: HiFi-GAN checkpoint without a config: strides %s (half of each kernel) and "
                   "dilations %s assumed", path, rates, [list(d) for d in dil])
    try:
        return HiFiGANConfig(upsample_rates=tuple(rates), upsample_kernel_sizes=tuple(kernels),
                             upsample_initial_channel=c0, resblock=kind, resblock_kernel_sizes=rk,
                             resblock_dilation_sizes=dil, n_mel_channels=n_mel)
    except InvalidInputError as exc:
        raise CheckpointError(path, f"shapes give an invalid HiFi-GAN architecture ({exc})") from exc


def _config_from(ckpt: Mapping[str, Any], sd: Mapping[str, torch.Tensor], path: Any,
                 config: HiFiGANConfig | Mapping[str, Any] | None) -> HiFiGANConfig:
    pre = conv_weight(sd, "conv_pre.", path, "HiFi-GAN")
    n_mel = int(pre.shape[1]) if pre.dim() == 3 else 80
    if isinstance(config, HiFiGANConfig):
        return config
    where = "given"
    if config is None:
        config, where = ckpt.get("config"), "the file's"
        if not isinstance(config, Mapping):
            return infer_hifigan_config(sd, path)
    try:
        return HiFiGANConfig.from_dict({"n_mel_channels": n_mel, **config})
    except (InvalidInputError, TypeError) as exc:
        raise CheckpointError(path, f"{where} HiFi-GAN config is invalid: {exc}") from exc


def _fit_dims(model: HiFiGAN, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DLE's fix-up: a tensor with one trailing singleton dim more or less than the module's."""
    expected = model.state_dict()
    for k, t in expected.items():
        got = sd.get(k)
        if got is not None and abs(got.dim() - t.dim()) == 1 and got.numel() == t.numel():
            sd[k] = got.reshape(t.shape)
    return sd


def load_hifigan(path: str | os.PathLike[str], *,
                 config: HiFiGANConfig | Mapping[str, Any] | None = None,
                 ema: bool = False) -> HiFiGAN:
    """Load a HiFi-GAN generator checkpoint: eval mode, float32, CPU, weight norm folded.

    ``ema=True`` loads the EMA-averaged weights (``gen_ema``), as DLE's
    ``--ema``. Raises ``CheckpointError`` naming the file for every problem
    (missing, unreadable, a discriminator file, another model's checkpoint,
    keys or shapes that do not fit).
    """
    ckpt = read_checkpoint(path)
    sd = hifigan_state_dict(ckpt, path, ema=ema)
    cfg = _config_from(ckpt, sd, path, config)
    weight_norm = any(k.endswith(".weight_g") for k in sd)
    model = HiFiGAN(cfg, weight_norm=weight_norm)
    load_into(model, _fit_dims(model, sd), path, "HiFi-GAN")
    model.remove_weight_norm()
    model.float().eval()
    logger.info("loaded HiFi-GAN from %s (%s)", path, cfg)
    return model
