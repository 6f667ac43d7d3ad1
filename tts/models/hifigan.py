"""HiFi-GAN generator (Kong et al. 2020), compatible with NVIDIA DeepLearningExamples.

The module tree and parameter names equal those of DLE's
``PyTorch/SpeechSynthesis/HiFiGAN/hifigan/models.py`` ``Generator``:
``conv_pre``, ``ups.{i}``, ``resblocks.{i}.{j}.convs1.{k}`` / ``convs2.{k}``
(ResBlock1) or ``resblocks.{i}.{j}.convs.{k}`` (ResBlock2), ``conv_post``;
with weight norm on, every convolution stores ``weight_g``/``weight_v``
(as ``torch.nn.utils.weight_norm`` names them, and as training checkpoints
hold them), after ``remove_weight_norm()`` a plain ``weight``. DLE/NGC
state_dicts therefore load as they are.

Network (mel ``[B, n_mel, T]`` -> audio ``[B, 1, hop * T]``, hop = product
of ``upsample_rates``)::

    conv_pre (n_mel -> C, k 7)
    for each upsampling i (C_i = C / 2^(i+1)):
        leaky_relu(0.1); ups[i] (ConvTranspose1d, stride u_i, kernel k_i, pad (k_i - u_i) / 2)
        mean over j of resblocks[i][j](x)     (a multi-receptive-field fusion)
    leaky_relu(0.01)                          (DLE: F.leaky_relu's default slope here)
    conv_post (C_last -> 1, k 7); tanh

The generator is deterministic: ``infer`` takes the WaveGlow signature
(``sigma``, ``z``, ``generator``) so a pipeline can call either vocoder the
same way, and ignores those arguments.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tts.errors import InvalidInputError
from tts.models.denoiser import BIAS_MEL_FRAMES, Denoiser
from tts.models.stft import STFT
from tts.models.waveglow import WeightNormConv1d, init_weight_norm

__all__ = ["HiFiGANConfig", "HiFiGAN", "ResBlock1", "ResBlock2", "WeightNormConvTranspose1d",
           "HiFiGANDenoiser", "LRELU_SLOPE"]

#: Leaky-ReLU slope inside the generator (DLE ``LRELU_SLOPE``).
LRELU_SLOPE = 0.1
#: Slope of the last leaky ReLU before ``conv_post`` (DLE calls ``F.leaky_relu(x)``: torch's default).
FINAL_LRELU_SLOPE = 0.01


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise InvalidInputError(f"invalid HiFi-GAN config: {name} {msg}", field=name)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ints(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) > 0 and all(_int(v) and v > 0 for v in value)


@dataclass(frozen=True)
class HiFiGANConfig:
    """Generator hyper-parameters; the defaults are DLE's ``hifigan/arg_parser.py`` (22.05 kHz, hop 256).

    Field names are DLE's ``config`` entry of a generator checkpoint.
    """

    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    """Stride of each transposed convolution; their product is the hop length."""
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    """Kernel of each transposed convolution; ``k >= u`` and ``k - u`` even (exact ``u``-fold length)."""
    upsample_initial_channel: int = 512
    """Channels after ``conv_pre``; halved by every upsampling (so divisible by ``2^len(rates)``)."""
    resblock: str = "1"
    """``"1"`` (ResBlock1: three dilated + three plain convs) or ``"2"`` (ResBlock2: two dilated convs)."""
    resblock_kernel_sizes: tuple[int, ...] = (11, 7, 3)
    """Kernel of each parallel residual block (odd)."""
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    """Dilations of each parallel residual block: 3 for ResBlock1, 2 for ResBlock2."""
    n_mel_channels: int = 80
    """Mel channels in (DLE hard-codes 80; inferred from ``conv_pre`` when loading)."""

    def __post_init__(self) -> None:
        for name in ("upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes"):
            _check(_ints(getattr(self, name)), name, f"must be a non-empty list of positive ints, "
                                                     f"got {getattr(self, name)!r}")
        _check(len(self.upsample_rates) == len(self.upsample_kernel_sizes), "upsample_kernel_sizes",
               f"must have one kernel per upsample rate ({len(self.upsample_rates)}), "
               f"got {len(self.upsample_kernel_sizes)}")
        for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
            _check(k >= u and (k - u) % 2 == 0, "upsample_kernel_sizes",
                   f"kernel {k} with rate {u}: need kernel >= rate and kernel - rate even "
                   "(so each upsampling multiplies the length exactly)")
        _check(_int(self.upsample_initial_channel) and self.upsample_initial_channel > 0,
               "upsample_initial_channel", f"must be a positive int, got {self.upsample_initial_channel!r}")
        div = 2 ** len(self.upsample_rates)
        _check(self.upsample_initial_channel % div == 0, "upsample_initial_channel",
               f"must be divisible by 2^{len(self.upsample_rates)} = {div}, got {self.upsample_initial_channel}")
        _check(self.resblock in ("1", "2"), "resblock", f"must be '1' or '2', got {self.resblock!r}")
        for k in self.resblock_kernel_sizes:
            _check(k % 2 == 1, "resblock_kernel_sizes", f"must be odd, got {k}")
        want = 3 if self.resblock == "1" else 2
        d = self.resblock_dilation_sizes
        _check(isinstance(d, tuple) and len(d) == len(self.resblock_kernel_sizes),
               "resblock_dilation_sizes",
               f"must have one entry per resblock kernel ({len(self.resblock_kernel_sizes)}), got {d!r}")
        for entry in d:
            _check(_ints(entry) and len(entry) == want, "resblock_dilation_sizes",
                   f"entries must be {want} positive ints for resblock {self.resblock!r}, got {entry!r}")
        _check(_int(self.n_mel_channels) and self.n_mel_channels > 0, "n_mel_channels",
               f"must be a positive int, got {self.n_mel_channels!r}")

    @property
    def hop_length(self) -> int:
        """Audio samples per mel frame: the product of ``upsample_rates``."""
        return math.prod(self.upsample_rates)

    def channels(self, i: int) -> int:
        """Channels after upsampling ``i``."""
        return self.upsample_initial_channel // (2 ** (i + 1))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "HiFiGANConfig":
        """From DLE's ``config`` dict (lists, ``resblock`` as ``"1"``/``1``); unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"HiFi-GAN config must be a dict, got {type(data).__name__}",
                                    field="config")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInputError(f"unknown HiFi-GAN config keys {unknown} (known: {sorted(known)})",
                                    field="config")
        kw: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes"):
                value = tuple(value) if isinstance(value, (list, tuple)) else value
            elif key == "resblock_dilation_sizes" and isinstance(value, (list, tuple)):
                value = tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in value)
            elif key == "resblock" and _int(value):
                value = str(value)
            kw[key] = value
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """DLE's ``config`` dict (lists), plus ``n_mel_channels``."""
        d = asdict(self)
        for key in ("upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes"):
            d[key] = list(d[key])
        d["resblock_dilation_sizes"] = [list(v) for v in d["resblock_dilation_sizes"]]
        return d


class WeightNormConvTranspose1d(nn.Module):
    """ConvTranspose1d with weight norm as ``torch.nn.utils.weight_norm`` applies it (dim 0).

    Parameters ``weight_g [in, 1, 1]``, ``weight_v [in, out, k]``, ``bias [out]``;
    ``fold()`` returns the equivalent plain ``nn.ConvTranspose1d``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 padding: int = 0) -> None:
        super().__init__()
        conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride, padding=padding)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        init_weight_norm(self, conv)

    @property
    def weight(self) -> Tensor:
        """The effective weight ``[in, out, k]``."""
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv_transpose1d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)

    def fold(self) -> nn.ConvTranspose1d:
        v = self.weight_v
        conv = nn.ConvTranspose1d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                                  padding=self.padding, device=v.device, dtype=v.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.weight)
            conv.bias.copy_(self.bias)
        conv.train(self.training)
        return conv


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


def _conv(ch_in: int, ch_out: int, kernel: int, weight_norm: bool, dilation: int = 1) -> nn.Module:
    pad = _padding(kernel, dilation)
    if weight_norm:
        return WeightNormConv1d(ch_in, ch_out, kernel, dilation=dilation, padding=pad)
    return nn.Conv1d(ch_in, ch_out, kernel, dilation=dilation, padding=pad)


def _fold_all(seq: nn.Module) -> None:
    for name, child in list(seq.named_children()):
        if isinstance(child, (WeightNormConv1d, WeightNormConvTranspose1d)):
            setattr(seq, name, child.fold())


class ResBlock1(nn.Module):
    """Three (dilated conv, plain conv) pairs, each ``x + conv2(lrelu(conv1(lrelu(x))))``; ``[B, C, N]`` kept."""

    def __init__(self, channels: int, kernel_size: int, dilation: tuple[int, ...],
                 weight_norm: bool = True) -> None:
        super().__init__()
        self.convs1 = nn.Sequential(*[_conv(channels, channels, kernel_size, weight_norm, d)
                                      for d in dilation])
        self.convs2 = nn.Sequential(*[_conv(channels, channels, kernel_size, weight_norm)
                                      for _ in dilation])

    def forward(self, x: Tensor) -> Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x

    def remove_weight_norm(self) -> None:
        _fold_all(self.convs1)
        _fold_all(self.convs2)


class ResBlock2(nn.Module):
    """Two dilated convs, each ``x + conv(lrelu(x))``; ``[B, C, N]`` kept.

    (DLE's ``ResBlock2`` never sets its ``lrelu_slope`` and fails when run; this
    uses ``LRELU_SLOPE`` as the original HiFi-GAN code does.)
    """

    def __init__(self, channels: int, kernel_size: int, dilation: tuple[int, ...],
                 weight_norm: bool = True) -> None:
        super().__init__()
        self.convs = nn.ModuleList([_conv(channels, channels, kernel_size, weight_norm, d)
                                    for d in dilation])

    def forward(self, x: Tensor) -> Tensor:
        for c in self.convs:
            x = x + c(F.leaky_relu(x, LRELU_SLOPE))
        return x

    def remove_weight_norm(self) -> None:
        _fold_all(self.convs)


class HiFiGAN(nn.Module):
    """The HiFi-GAN generator; see the module docstring. Built with weight norm on (as DLE) unless told not to."""

    def __init__(self, config: HiFiGANConfig | Mapping[str, Any] | None = None, *,
                 weight_norm: bool = True) -> None:
        super().__init__()
        config = HiFiGANConfig() if config is None else config
        if isinstance(config, Mapping):
            config = HiFiGANConfig.from_dict(config)
        self.config = config
        self.n_mel_channels = config.n_mel_channels
        self.hop_length = config.hop_length
        self.num_kernels = len(config.resblock_kernel_sizes)
        c0 = config.upsample_initial_channel
        self.conv_pre = _conv(config.n_mel_channels, c0, 7, weight_norm)
        ups = []
        for i, (u, k) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes)):
            cin, cout = c0 // (2 ** i), config.channels(i)
            pad = (k - u) // 2
            ups.append(WeightNormConvTranspose1d(cin, cout, k, u, pad) if weight_norm
                       else nn.ConvTranspose1d(cin, cout, k, u, padding=pad))
        self.ups = nn.Sequential(*ups)
        block = ResBlock1 if config.resblock == "1" else ResBlock2
        self.resblocks = nn.Sequential(*[
            nn.Sequential(*[block(config.channels(i), k, d, weight_norm)
                            for k, d in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes)])
            for i in range(len(ups))])
        self.conv_post = _conv(config.channels(len(ups) - 1), 1, 7, weight_norm)

    @property
    def has_weight_norm(self) -> bool:
        """Whether any convolution still carries ``weight_g``/``weight_v``."""
        return any(isinstance(m, (WeightNormConv1d, WeightNormConvTranspose1d)) for m in self.modules())

    def remove_weight_norm(self) -> "HiFiGAN":
        """Fold weight norm into plain ``weight`` tensors, in place (DLE ``remove_weight_norm``)."""
        if isinstance(self.conv_pre, WeightNormConv1d):
            self.conv_pre = self.conv_pre.fold()
        if isinstance(self.conv_post, WeightNormConv1d):
            self.conv_post = self.conv_post.fold()
        _fold_all(self.ups)
        for group in self.resblocks:
            for block in group:
                block.remove_weight_norm()
        return self

    def forward(self, mel: Tensor) -> Tensor:
        """``mel [B, n_mel, T]`` -> audio ``[B, 1, hop * T]`` in [-1, 1] (DLE ``Generator.forward``)."""
        x = self.conv_pre(mel)
        for up, group in zip(self.ups, self.resblocks):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            acc = None
            for block in group:
                y = block(x)
                acc = y if acc is None else acc + y
            x = acc / self.num_kernels
        x = self.conv_post(F.leaky_relu(x, FINAL_LRELU_SLOPE))
        return torch.tanh(x)

    @torch.no_grad()
    def infer(self, mel: Tensor, sigma: float = 0.0, *, z: Tensor | None = None,
              generator: torch.Generator | None = None) -> Tensor:
        """``mel [B, n_mel, T]`` (float, model dtype) -> audio ``[B, hop * T]`` (same dtype; hop 256 by default).

        Same signature as ``WaveGlow.infer``; ``sigma``, ``z`` and ``generator``
        are ignored (HiFi-GAN draws no noise).
        """
        del sigma, z, generator
        if mel.dim() != 3 or mel.size(1) != self.n_mel_channels:
            raise InvalidInputError(
                f"mel must be [B, {self.n_mel_channels}, T], got shape {tuple(mel.shape)}", field="mel")
        return self.forward(mel).squeeze(1)


class HiFiGANDenoiser(Denoiser):
    """DLE's HiFi-GAN ``Denoiser``: the WaveGlow-style STFT bias removal, bias from a HiFi-GAN.

    The bias is the magnitude spectrum (first frame) of the generator's
    output for an all-zero (``"zeros"``) or N(0, 1) (``"normal"``) mel of 88
    frames (DLE hard-codes 80 mel channels; here the generator's own);
    ``forward`` is ``tts.models.denoiser.Denoiser.forward``. DLE's HiFi-GAN
    inference denoises only when asked (``--denoising-strength``, default 0).
    """

    def __init__(self, hifigan: HiFiGAN, filter_length: int = 1024, n_overlap: int = 4,
                 win_length: int = 1024, mode: str = "zeros", *,
                 generator: torch.Generator | None = None) -> None:
        nn.Module.__init__(self)
        if n_overlap < 1 or filter_length % n_overlap:
            raise InvalidInputError(
                f"n_overlap must divide filter_length={filter_length}, got {n_overlap}", field="n_overlap")
        if mode not in ("zeros", "normal"):
            raise InvalidInputError(f"denoiser mode must be 'zeros' or 'normal', got {mode!r}", field="mode")
        w = hifigan.conv_post.bias
        self.stft = STFT(filter_length=filter_length, hop_length=filter_length // n_overlap,
                         win_length=win_length).to(w.device)
        shape = (1, hifigan.n_mel_channels, BIAS_MEL_FRAMES)
        mel = (torch.zeros(shape, dtype=w.dtype, device=w.device) if mode == "zeros"
               else torch.randn(shape, generator=generator, device=w.device).to(w.dtype))
        with torch.no_grad():
            bias_audio = hifigan.infer(mel).float()
            bias_spec, _ = self.stft.transform(bias_audio)
        self.register_buffer("bias_spec", bias_spec[:, :, :1].contiguous())
