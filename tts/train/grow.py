"""Grow a trained WaveGlow: more coupling-network layers, a shorter mel upsampler.

A small WaveGlow stops improving when its coupling networks are too small; training
a larger one from scratch costs all the steps again. ``grow_waveglow`` instead
builds the larger architecture around the trained weights so that it computes
(nearly) the same function, and training goes on from there:

- **More WN layers** (``n_layers``; layer i has dilation ``2**i``, so each new
  layer doubles the receptive field). A new layer's ``res_skip`` convolution is
  all zeros, so it adds nothing to the residual stream or to the skip sum; the
  old last layer, which had only skip outputs, gets zero residual outputs in
  front of them. The new ``in_layers``/``cond_layers`` have PyTorch's default
  initialisation (as a fresh model's). Exact: the grown model's output equals
  the old one's.
- **A shorter upsampler** (``upsample_kernel``, a multiple of 256, below the
  current one): the upsampler's ``ConvTranspose1d(80, 80, K, stride 256)``
  makes the audio of mel frame t from frames ``t - K/256 + 1 .. t``; a shorter
  kernel drops the oldest frames. The dropped frames' part is not thrown away:
  they are predicted from the kept ones by least squares over real mels
  (``mels``; consecutive mel frames are strongly correlated), and that linear
  prediction is folded into the kept taps (its constant into the bias, which is
  per channel, so the mean over the 256 phases). Without ``mels`` the oldest
  taps are simply cut. Approximate: ``upsampler_error`` measures it.

The upsampler is most of a DLE-style WaveGlow's size (``80 * 80 * 1024`` = 6.5 M
parameters); kernel 512 halves it, which pays for the new layers within the
bundled voice's 30 MiB.

Works on exported files (``{"iteration", "config", "state_dict"}`` with plain,
folded weights, as ``tts.train export`` writes them and ``--init-from`` reads
them); the result has the dtype of the input.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import Tensor

from tts.models.waveglow import HOP_LENGTH, WaveGlow, WaveGlowConfig

__all__ = ["grow_waveglow", "refit_upsampler", "upsample", "upsampler_error"]


def _history(m: Tensor, taps: int) -> Tensor:
    """``m [n_mel, T]`` -> rows ``[x_J, x_{J-1}, ..., x_{J-taps+1}]`` ``[T - taps + 1, taps * n_mel]``:
    every frame J that has ``taps - 1`` frames before it."""
    t = m.shape[1]
    return torch.cat([m[:, taps - 1 - r: t - r] for r in range(taps)], 0).T


def _frames(mels: Sequence[Tensor], taps: int) -> Tensor:
    """``_history`` of every mel long enough, stacked, in float64."""
    rows = [_history(m.double(), taps) for m in mels if m.shape[1] >= taps]
    if not rows:
        raise ValueError(f"no mel with at least {taps} frames to fit the upsampler on")
    return torch.cat(rows, 0)


def refit_upsampler(weight: Tensor, bias: Tensor, kernel: int,
                    mels: Sequence[Tensor] | None = None, ridge: float = 1e-3) -> tuple[Tensor, Tensor]:
    """``(weight [n_mel, n_mel, K], bias [n_mel])`` -> the same for ``kernel`` (< K, multiples of
    256); see the module docstring."""
    n_mel, n_out, k_old = weight.shape
    if kernel % HOP_LENGTH or not HOP_LENGTH <= kernel <= k_old:
        raise ValueError(f"upsample kernel must be a multiple of {HOP_LENGTH} between {HOP_LENGTH} "
                         f"and the current {k_old}, got {kernel}")
    keep, taps = kernel // HOP_LENGTH, k_old // HOP_LENGTH
    w = weight.double().reshape(n_mel, n_out, taps, HOP_LENGTH)      # [i, o, r, p]
    new_w, new_b = w[:, :, :keep].clone(), bias.double().clone()
    if mels is not None and keep < taps:
        x = _frames(mels, taps)                                      # [N, taps * n_mel]
        kept = torch.cat([x[:, : keep * n_mel], torch.ones(len(x), 1, dtype=x.dtype)], 1)
        dropped = x[:, keep * n_mel:]
        gram = kept.T @ kept
        gram += ridge * torch.eye(len(gram), dtype=gram.dtype) * gram.diagonal().mean()
        a = torch.linalg.solve(gram, kept.T @ dropped)              # [keep*n_mel + 1, drop*n_mel]
        d = w[:, :, keep:].permute(2, 0, 1, 3).reshape(-1, n_out, HOP_LENGTH)   # [(r, i), o, p]
        extra = torch.einsum("ed,dop->eop", a[:-1], d)               # [(r, i), o, p]
        new_w += extra.reshape(keep, n_mel, n_out, HOP_LENGTH).permute(1, 2, 0, 3)
        new_b += torch.einsum("d,dop->op", a[-1], d).mean(1)
    return (new_w.reshape(n_mel, n_out, kernel).to(weight.dtype), new_b.to(bias.dtype))


def upsample(weight: Tensor, bias: Tensor, mel: Tensor) -> Tensor:
    """The upsampler's output ``[n_mel, 256 * T]`` for ``mel [n_mel, T]``, trimmed as WaveGlow
    trims it: ``conv_transpose1d(stride 256)`` written as one GEMM over the mel frames (frame J
    of the output reads frames ``J - taps + 1 .. J``; much faster than the CPU's transposed
    convolution)."""
    n_mel, n_out, k = weight.shape
    taps = k // HOP_LENGTH
    t = mel.shape[1]
    cols = _history(torch.nn.functional.pad(mel.double(), (taps - 1, 0)), taps)   # [T, taps*n_mel]
    w = weight.double().reshape(n_mel, n_out, taps, HOP_LENGTH).permute(2, 0, 1, 3).reshape(taps * n_mel, -1)
    y = (cols @ w).reshape(t, n_out, HOP_LENGTH) + bias.double()[None, :, None]
    return y.permute(1, 0, 2).reshape(n_out, t * HOP_LENGTH)


def upsampler_error(old: tuple[Tensor, Tensor], new: tuple[Tensor, Tensor],
                    mels: Sequence[Tensor]) -> float:
    """Relative RMS difference of the two upsamplers' outputs (about each channel's mean)."""
    num = den = 0.0
    for m in mels:
        a, b = upsample(*old, m), upsample(*new, m)
        num += float(((a - b) ** 2).sum())
        den += float(((a - a.mean(-1, keepdim=True)) ** 2).sum())
    return (num / max(den, 1e-30)) ** 0.5


def grow_waveglow(ckpt: dict[str, Any], *, n_layers: int | None = None,
                  upsample_kernel: int | None = None, mels: Sequence[Tensor] | None = None,
                  seed: int = 0) -> dict[str, Any]:
    """An exported WaveGlow with ``n_layers`` WN layers and an ``upsample_kernel`` upsampler
    (``None``: unchanged); see the module docstring. Other keys of ``ckpt`` are kept."""
    cfg = WaveGlowConfig.from_dict(copy.deepcopy(ckpt["config"]))
    sd: dict[str, Tensor] = ckpt["state_dict"]
    old_layers = cfg.WN_config.n_layers
    n_layers = old_layers if n_layers is None else int(n_layers)
    kernel = cfg.upsample_kernel if upsample_kernel is None else int(upsample_kernel)
    if n_layers < old_layers:
        raise ValueError(f"n_layers can only grow: the model has {old_layers}, asked for {n_layers}")
    d = cfg.to_dict()
    d["WN_config"] = dict(d["WN_config"], n_layers=n_layers)
    d["upsample_kernel"] = kernel
    new_cfg = WaveGlowConfig.from_dict(d)
    torch.manual_seed(seed)
    fresh = WaveGlow(new_cfg, weight_norm=False).state_dict()
    dtype = sd["upsample.weight"].dtype
    n = cfg.WN_config.n_channels
    out: dict[str, Tensor] = {}
    for key, ref in fresh.items():
        if key.startswith("upsample."):
            continue
        parts = key.split(".")
        if parts[0] == "WN" and parts[2] in ("in_layers", "cond_layers", "res_skip_layers"):
            i = int(parts[3])
            if parts[2] == "res_skip_layers":
                if i >= old_layers:                      # a new layer: contributes nothing yet
                    out[key] = torch.zeros_like(ref, dtype=dtype)
                elif i == old_layers - 1 and n_layers > old_layers:   # old last: zero residual rows
                    old = sd[key]
                    out[key] = torch.cat([torch.zeros((n,) + tuple(old.shape[1:]), dtype=old.dtype), old], 0)
                else:
                    out[key] = sd[key]
                continue
            if i >= old_layers:
                out[key] = ref.to(dtype)
                continue
        if key not in sd:
            raise ValueError(f"not an exported WaveGlow (no {key})")
        out[key] = sd[key]
    w, b = sd["upsample.weight"], sd["upsample.bias"]
    if kernel != cfg.upsample_kernel:
        w, b = refit_upsampler(w, b, kernel, mels)
    out["upsample.weight"], out["upsample.bias"] = w, b
    result = dict(ckpt)
    result["config"] = new_cfg.to_dict()
    result["state_dict"] = out
    return result
