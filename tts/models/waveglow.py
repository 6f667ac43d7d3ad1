"""WaveGlow vocoder (Prenger et al. 2018), compatible with NVIDIA DeepLearningExamples.

Parameter names equal DLE's ``waveglow/model.py`` both while weight norm is on
(``weight_g``/``weight_v``, as training checkpoints store them) and after
``remove_weight_norm()`` (plain ``weight``, as DLE's ``remove_weightnorm``
leaves them), so DLE/NGC state_dicts load as they are.

``infer`` follows ``WaveGlow.infer`` step by step, including the order in
which noise is drawn; ``z`` may be given explicitly in the layout of DLE's
``infer_onnx`` (``[B, n_group, T_g]``), but unlike ``infer_onnx`` every part
of it is multiplied by sigma.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tts.errors import InvalidInputError

__all__ = ["WNConfig", "WaveGlowConfig", "WaveGlow", "WaveGlowTrace", "WaveGlowForwardOutput",
           "WeightNormConv1d", "UPSAMPLE_KERNEL", "HOP_LENGTH"]

#: Kernel size of DLE's mel upsampling ConvTranspose1d (DLE hard-codes it; ``WaveGlowConfig.upsample_kernel``).
UPSAMPLE_KERNEL = 1024
#: Audio samples per mel frame: the upsampling stride (DLE hard-codes it).
HOP_LENGTH = 256


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise InvalidInputError(f"invalid WaveGlow config: {name} {msg}", field=name)


def _strict_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class WNConfig:
    """The WaveNet-like network of each coupling layer (DLE ``WN_config``)."""

    n_layers: int = 8
    """Number of dilated convolution layers (dilation doubles each layer)."""
    kernel_size: int = 3
    """Kernel size of the dilated convolutions; odd."""
    n_channels: int = 256
    """Residual/skip channels; even (half are tanh, half sigmoid gates)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            _check(_strict_int(getattr(self, f.name)), f"WN_config.{f.name}", "must be an int")
        _check(self.n_layers >= 1, "WN_config.n_layers", f"must be >= 1, got {self.n_layers}")
        _check(self.kernel_size >= 1 and self.kernel_size % 2 == 1, "WN_config.kernel_size",
               f"must be a positive odd number, got {self.kernel_size}")
        _check(self.n_channels >= 2 and self.n_channels % 2 == 0, "WN_config.n_channels",
               f"must be a positive even number, got {self.n_channels}")


@dataclass(frozen=True)
class WaveGlowConfig:
    """Architecture of a WaveGlow model; the kwargs of DLE's ``WaveGlow(...)``.

    Defaults are NVIDIA's ``waveglow256`` (the NGC ``waveglow256pyt_fp16`` model).
    """

    n_mel_channels: int = 80
    """Mel bands of the conditioning spectrogram."""
    n_flows: int = 12
    """Number of flow steps (1x1 invertible conv + affine coupling)."""
    n_group: int = 8
    """Audio samples folded into channels per time step; even."""
    n_early_every: int = 4
    """Every this many flows, ``n_early_size`` channels are output early."""
    n_early_size: int = 2
    """Channels output at each early output; even."""
    WN_config: WNConfig = field(default_factory=WNConfig)
    """The coupling network (``n_layers``, ``kernel_size``, ``n_channels``)."""
    upsample_kernel: int = UPSAMPLE_KERNEL
    """Kernel of the mel upsampler (``ConvTranspose1d``, stride 256): a multiple of 256; audio
    frame t then reads mel frames ``t - upsample_kernel/256 + 1 .. t``. DLE hard-codes 1024 and
    has no such key, so ``to_dict`` leaves it out at 1024."""

    def __post_init__(self) -> None:
        if isinstance(self.WN_config, Mapping):
            object.__setattr__(self, "WN_config", _wn_from_dict(self.WN_config))
        _check(isinstance(self.WN_config, WNConfig), "WN_config", "must be a WNConfig or a dict")
        for name in ("n_mel_channels", "n_flows", "n_group", "n_early_every", "n_early_size",
                     "upsample_kernel"):
            _check(_strict_int(getattr(self, name)), name, "must be an int")
        _check(self.upsample_kernel >= HOP_LENGTH and self.upsample_kernel % HOP_LENGTH == 0,
               "upsample_kernel", f"must be a positive multiple of {HOP_LENGTH}, got {self.upsample_kernel}")
        _check(self.n_mel_channels >= 1, "n_mel_channels", f"must be >= 1, got {self.n_mel_channels}")
        _check(self.n_flows >= 1, "n_flows", f"must be >= 1, got {self.n_flows}")
        _check(self.n_group >= 2 and self.n_group % 2 == 0, "n_group",
               f"must be a positive even number, got {self.n_group}")
        _check(self.n_early_every >= 1, "n_early_every", f"must be >= 1, got {self.n_early_every}")
        _check(self.n_early_size >= 0 and self.n_early_size % 2 == 0, "n_early_size",
               f"must be an even number >= 0, got {self.n_early_size}")
        _check(self.n_remaining_channels >= 2, "n_early_size",
               f"{self.n_early_size} x {self.n_early_outputs} early outputs leave "
               f"{self.n_remaining_channels} of n_group={self.n_group} channels (need >= 2)")

    @property
    def n_early_outputs(self) -> int:
        """How many flows output channels early."""
        return (self.n_flows - 1) // self.n_early_every

    @property
    def n_remaining_channels(self) -> int:
        """Channels left after all early outputs: the size of the initial noise."""
        return self.n_group - self.n_early_size * self.n_early_outputs

    def flow_channels(self, k: int) -> int:
        """Channels that flow ``k`` (its 1x1 conv) works on."""
        return self.n_group - self.n_early_size * (k // self.n_early_every)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WaveGlowConfig":
        """Build from DLE's config dict (``WN_config`` a nested dict); unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"WaveGlow config must be a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInputError(f"unknown WaveGlow config keys {unknown} (known: {sorted(known)})",
                                    field=unknown[0])
        kwargs = dict(data)
        if "WN_config" in kwargs:
            kwargs["WN_config"] = _wn_from_dict(kwargs["WN_config"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """DLE's constructor kwargs (``WN_config`` as a nested dict); ``upsample_kernel`` only
        where it is not DLE's 1024."""
        d = asdict(self)
        if d["upsample_kernel"] == UPSAMPLE_KERNEL:
            del d["upsample_kernel"]
        return d


def _wn_from_dict(data: Any) -> WNConfig:
    if isinstance(data, WNConfig):
        return data
    if not isinstance(data, Mapping):
        raise InvalidInputError(f"WN_config must be a dict, got {type(data).__name__}",
                                field="WN_config")
    known = {f.name for f in fields(WNConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidInputError(f"unknown WN_config keys {unknown} (known: {sorted(known)})",
                                field="WN_config")
    return WNConfig(**data)


def init_weight_norm(module: nn.Module, conv: nn.Module) -> None:
    """Gives ``module`` the weight-norm parameters of ``conv``'s initial weights, with the names
    ``torch.nn.utils.weight_norm`` uses: ``weight_g`` (norm over every dim but 0), ``weight_v``
    and ``bias``."""
    with torch.no_grad():
        w = conv.weight.detach()
        module.weight_g = nn.Parameter(torch.linalg.vector_norm(w, dim=(1, 2), keepdim=True))
        module.weight_v = nn.Parameter(w.clone())
        module.bias = nn.Parameter(conv.bias.detach().clone())


class WeightNormConv1d(nn.Module):
    """Conv1d with weight normalisation as DLE trains it: ``weight = g * v / ||v||``.

    The norm is over every dim but 0; parameters ``weight_g [out, 1, 1]``,
    ``weight_v [out, in, k]`` and ``bias [out]`` carry the names that
    ``torch.nn.utils.weight_norm`` gives them. ``fold()`` returns the plain
    ``nn.Conv1d`` with the same function.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 dilation: int = 1, padding: int = 0) -> None:
        super().__init__()
        conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, padding=padding)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.padding = padding
        init_weight_norm(self, conv)

    @property
    def weight(self) -> Tensor:
        """The effective convolution weight ``[out, in, k]``."""
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.weight, self.bias, dilation=self.dilation, padding=self.padding)

    def fold(self) -> nn.Conv1d:
        """The equivalent plain ``nn.Conv1d`` (same device and dtype)."""
        v = self.weight_v
        conv = nn.Conv1d(self.in_channels, self.out_channels, self.kernel_size,
                         dilation=self.dilation, padding=self.padding,
                         device=v.device, dtype=v.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.weight)
            conv.bias.copy_(self.bias)
        conv.train(self.training)
        return conv


def _conv(in_ch: int, out_ch: int, kernel: int, weight_norm: bool, dilation: int = 1,
          padding: int = 0) -> nn.Module:
    if weight_norm:
        return WeightNormConv1d(in_ch, out_ch, kernel, dilation=dilation, padding=padding)
    return nn.Conv1d(in_ch, out_ch, kernel, dilation=dilation, padding=padding)


class Invertible1x1Conv(nn.Module):
    """The flow's invertible 1x1 convolution (``convinv.{k}.conv.weight [c, c, 1]``, no bias).

    The inverse used by inference is computed once (``prepare()``, float64,
    then cast to the weight's dtype) and kept in the non-persistent buffer
    ``W_inverse``; loading new weights clears it.
    """

    W_inverse: Tensor | None

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c, c, kernel_size=1, bias=False)
        with torch.no_grad():
            w = torch.linalg.qr(torch.empty(c, c).normal_())[0]
            if torch.det(w) < 0:
                w[:, 0] = -w[:, 0]
            self.conv.weight.copy_(w.view(c, c, 1))
        self.register_buffer("W_inverse", None, persistent=False)

    def prepare(self) -> None:
        """Compute and cache the inverse of the weight."""
        w = self.conv.weight.detach()
        inv = torch.linalg.inv(w.squeeze(-1).to(torch.float64))
        self.W_inverse = inv.to(w.dtype).unsqueeze(-1)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self.W_inverse = None
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Training direction: ``z [B, c, T_g]`` -> ``(W z, log|det W| * B * T_g)``."""
        b, _, t = z.shape
        w = self.conv.weight.squeeze(-1)
        log_det = b * t * torch.logdet(w.float())
        return self.conv(z), log_det

    def infer(self, z: Tensor) -> Tensor:
        """Inverse direction: ``W^-1 z``."""
        if self.W_inverse is None:
            self.prepare()
        return F.conv1d(z, self.W_inverse)


class WN(nn.Module):
    """WaveNet-like coupling network: non-causal dilated convs conditioned on the mel."""

    def __init__(self, n_in_channels: int, n_mel_channels: int, n_layers: int, n_channels: int,
                 kernel_size: int, weight_norm: bool = True) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.n_channels = n_channels
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        self.cond_layers = nn.ModuleList()
        self.start = _conv(n_in_channels, n_channels, 1, weight_norm)
        # DLE zeroes `end` so that a fresh coupling layer is the identity.
        self.end = nn.Conv1d(n_channels, 2 * n_in_channels, 1)
        with torch.no_grad():
            self.end.weight.zero_()
            self.end.bias.zero_()
        for i in range(n_layers):
            dilation = 2 ** i
            padding = (kernel_size * dilation - dilation) // 2
            self.in_layers.append(_conv(n_channels, 2 * n_channels, kernel_size, weight_norm,
                                        dilation=dilation, padding=padding))
            self.cond_layers.append(_conv(n_mel_channels, 2 * n_channels, 1, weight_norm))
            res_skip = 2 * n_channels if i < n_layers - 1 else n_channels
            self.res_skip_layers.append(_conv(n_channels, res_skip, 1, weight_norm))

    def forward(self, audio: Tensor, spect: Tensor) -> Tensor:
        """``audio [B, n_half, T_g]``, ``spect [B, n_mel * n_group, T_g]`` -> ``[B, 2 * n_half, T_g]``."""
        audio = self.start(audio)
        n = self.n_channels
        output: Tensor | None = None
        for i in range(self.n_layers):
            in_act = self.in_layers[i](audio) + self.cond_layers[i](spect)
            acts = torch.tanh(in_act[:, :n, :]) * torch.sigmoid(in_act[:, n:, :])
            res_skip = self.res_skip_layers[i](acts)
            if i < self.n_layers - 1:
                audio = res_skip[:, :n, :] + audio
                skip = res_skip[:, n:, :]
            else:
                skip = res_skip
            output = skip if output is None else output + skip
        assert output is not None
        return self.end(output)


@dataclass
class WaveGlowTrace:
    """Result of ``WaveGlow.infer_with_states``."""

    audio: Tensor
    """``[B, 256 * T]`` audio."""
    flow_states: dict[int, Tensor]
    """Flow index k -> state ``[B, c_k, T_g]`` right after flow k's inverse 1x1 conv
    (before early noise is prepended)."""


@dataclass
class WaveGlowForwardOutput:
    """Result of the training direction ``WaveGlow.forward``."""

    z: Tensor
    """``[B, n_group, T_g]`` latent, early outputs first (DLE's layout)."""
    log_s: list[Tensor]
    """Per flow, the coupling log-scales ``[B, n_half_k, T_g]``."""
    log_det_w: list[Tensor]
    """Per flow, the 1x1 conv log-determinant term (scalar)."""


class WaveGlow(nn.Module):
    """WaveGlow; see the module docstring. Built with weight norm on (as DLE) unless told not to."""

    def __init__(self, config: WaveGlowConfig | Mapping[str, Any] | None = None, *,
                 weight_norm: bool = True) -> None:
        super().__init__()
        config = WaveGlowConfig() if config is None else config
        if isinstance(config, Mapping):
            config = WaveGlowConfig.from_dict(config)
        self.config = config
        self.n_flows = config.n_flows
        self.n_group = config.n_group
        self.n_early_every = config.n_early_every
        self.n_early_size = config.n_early_size
        self.n_mel_channels = config.n_mel_channels
        self.n_remaining_channels = config.n_remaining_channels
        self.upsample = nn.ConvTranspose1d(config.n_mel_channels, config.n_mel_channels,
                                           config.upsample_kernel, stride=HOP_LENGTH)
        self.WN = nn.ModuleList()
        self.convinv = nn.ModuleList()
        wn = config.WN_config
        for k in range(config.n_flows):
            c = config.flow_channels(k)
            self.convinv.append(Invertible1x1Conv(c))
            self.WN.append(WN(c // 2, config.n_mel_channels * config.n_group, wn.n_layers,
                              wn.n_channels, wn.kernel_size, weight_norm=weight_norm))

    @property
    def has_weight_norm(self) -> bool:
        """Whether any coupling convolution still carries ``weight_g``/``weight_v``."""
        return any(isinstance(m, WeightNormConv1d) for m in self.modules())

    def remove_weight_norm(self) -> "WaveGlow":
        """Fold weight norm into plain ``weight`` tensors (in place; DLE ``remove_weightnorm``)."""
        for wn in self.WN:
            if isinstance(wn.start, WeightNormConv1d):
                wn.start = wn.start.fold()
            for layers in (wn.in_layers, wn.cond_layers, wn.res_skip_layers):
                for i, layer in enumerate(layers):
                    if isinstance(layer, WeightNormConv1d):
                        layers[i] = layer.fold()
        return self

    def prepare_inference(self) -> "WaveGlow":
        """Compute every inverse 1x1 convolution once (float64, cast to the weight dtype).

        Call again after changing the 1x1 weights in place (``load_state_dict``
        clears the cache itself). Cast the model (``.half()``, ``.to()``)
        before or after: the cached inverses are buffers and follow it.
        """
        for conv in self.convinv:
            conv.prepare()
        return self

    # --- inference -------------------------------------------------------------------------

    def _upsample_mel(self, mel: Tensor) -> Tensor:
        """``mel [B, n_mel, T]`` -> conditioning ``[B, n_mel * n_group, 256 * T / n_group]``."""
        spect = self.upsample(mel)
        cutoff = self.upsample.kernel_size[0] - self.upsample.stride[0]
        spect = spect[:, :, :spect.size(2) - cutoff]
        b = spect.size(0)
        spect = spect.unfold(2, self.n_group, self.n_group).permute(0, 2, 1, 3)
        # Contiguous once here, rather than a copy inside every flow's conditioning convolution.
        return spect.reshape(b, spect.size(1), -1).permute(0, 2, 1).contiguous()

    def _run_inverse(self, mel: Tensor, sigma: float, z: Tensor | None,
                     generator: torch.Generator | None,
                     states: dict[int, Tensor] | None) -> Tensor:
        if mel.dim() != 3 or mel.size(1) != self.n_mel_channels:
            raise InvalidInputError(
                f"mel must be [B, {self.n_mel_channels}, T], got shape {tuple(mel.shape)}", field="mel")
        spect = self._upsample_mel(mel)
        b, _, t_g = spect.shape
        if z is not None:
            want = (b, self.n_group, t_g)
            if tuple(z.shape) != want:
                raise InvalidInputError(f"z must have shape {want}, got {tuple(z.shape)}", field="z")
            z = z.to(device=spect.device, dtype=spect.dtype)

        offset = 0

        def noise(channels: int) -> Tensor:
            nonlocal offset
            if z is not None:
                part = z[:, offset:offset + channels, :]
                offset += channels
                return sigma * part
            if sigma == 0.0:
                return spect.new_zeros(b, channels, t_g)
            return sigma * torch.randn(b, channels, t_g, generator=generator,
                                       device=spect.device, dtype=spect.dtype)

        audio = noise(self.n_remaining_channels)
        for k in reversed(range(self.n_flows)):
            n_half = audio.size(1) // 2
            audio_0 = audio[:, :n_half, :]
            audio_1 = audio[:, n_half:, :]
            output = self.WN[k](audio_0, spect)
            s = output[:, n_half:, :]
            bias = output[:, :n_half, :]
            audio_1 = (audio_1 - bias) / torch.exp(s)
            audio = torch.cat([audio_0, audio_1], 1)
            audio = self.convinv[k].infer(audio)
            if states is not None:
                states[k] = audio
            if k % self.n_early_every == 0 and k > 0:
                audio = torch.cat((noise(self.n_early_size), audio), 1)
        return audio.permute(0, 2, 1).reshape(b, -1)

    @torch.no_grad()
    def infer(self, mel: Tensor, sigma: float = 0.9, *, z: Tensor | None = None,
              generator: torch.Generator | None = None) -> Tensor:
        """``mel [B, n_mel, T]`` (float, model dtype) -> audio ``[B, 256 * T]`` (same dtype).

        Noise: ``z [B, n_group, T * 256 // n_group]`` when given (initial noise
        ``z[:, :n_remaining]``, then ``n_early_size`` channels per early-output
        flow, in DLE's order), else ``torch.randn`` with ``generator`` on the
        mel's device and dtype. Every part is multiplied by ``sigma``.
        """
        return self._run_inverse(mel, sigma, z, generator, None)

    @torch.no_grad()
    def infer_with_states(self, mel: Tensor, sigma: float = 0.9, *, z: Tensor | None = None,
                          generator: torch.Generator | None = None) -> WaveGlowTrace:
        """``infer`` that also returns each flow's state after its inverse 1x1 conv."""
        states: dict[int, Tensor] = {}
        audio = self._run_inverse(mel, sigma, z, generator, states)
        return WaveGlowTrace(audio=audio, flow_states=states)

    # --- training direction ----------------------------------------------------------------

    def forward(self, mel: Tensor, audio: Tensor) -> WaveGlowForwardOutput:
        """Training direction (DLE ``WaveGlow.forward``): ``mel [B, n_mel, T]``, ``audio [B, N]``.

        Requires ``256 * T >= N`` and ``N % n_group == 0``.
        """
        spect = self.upsample(mel)
        if spect.size(2) < audio.size(1):
            raise InvalidInputError(f"mel of {mel.size(2)} frames is too short for "
                                    f"{audio.size(1)} audio samples")
        spect = spect[:, :, :audio.size(1)]
        b = spect.size(0)
        spect = spect.unfold(2, self.n_group, self.n_group).permute(0, 2, 1, 3)
        spect = spect.reshape(b, spect.size(1), -1).permute(0, 2, 1)
        x = audio.unfold(1, self.n_group, self.n_group).permute(0, 2, 1)
        early: list[Tensor] = []
        log_s_list: list[Tensor] = []
        log_det_list: list[Tensor] = []
        for k in range(self.n_flows):
            if k % self.n_early_every == 0 and k > 0:
                early.append(x[:, :self.n_early_size, :])
                x = x[:, self.n_early_size:, :]
            x, log_det = self.convinv[k](x)
            log_det_list.append(log_det)
            n_half = x.size(1) // 2
            x_0, x_1 = x[:, :n_half, :], x[:, n_half:, :]
            output = self.WN[k](x_0, spect)
            log_s = output[:, n_half:, :]
            x_1 = torch.exp(log_s) * x_1 + output[:, :n_half, :]
            log_s_list.append(log_s)
            x = torch.cat([x_0, x_1], 1)
        early.append(x)
        return WaveGlowForwardOutput(z=torch.cat(early, 1), log_s=log_s_list, log_det_w=log_det_list)
