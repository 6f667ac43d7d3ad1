"""HiFi-GAN's training-only half: the discriminators and the losses (Kong et al. 2020).

The generator is the inference model, ``tts.models.hifigan.HiFiGAN`` (weight norm on while
training, as DLE trains it). What is here only ever exists during training:

- the multi-period discriminator (``MultiPeriodDiscriminator``, periods 2, 3, 5, 7, 11): each
  period ``p`` folds the waveform into ``p`` interleaved columns and runs five strided
  convolutions (kernel 5, stride 3; channels 32, 128, 512, 1024, 1024) and a post convolution
  along them, weight norm on every layer;
- the multi-scale discriminator (``MultiScaleDiscriminator``): three ``DiscriminatorS`` on the
  waveform, on it average-pooled once and twice (``AvgPool1d(4, 2, padding=1)``, as DLE); grouped
  convolutions of kernel 41; spectral norm on the first (raw scale), weight norm on the others;
- the losses as DLE's ``hifigan/models.py`` and ``train.py`` use them: least-squares adversarial
  terms (discriminator ``mean((1 - D(y))^2) + mean(D(G(x))^2)`` summed over the eight
  discriminators, generator ``mean((1 - D(G(x)))^2)``), feature matching (mean absolute
  difference of every feature map, summed, times 2) and the mel L1 term (times 45).

Layout. A period discriminator's 2-D convolutions have ``(k, 1)`` kernels, so each of the ``p``
columns is filtered on its own: here the columns are folded into the batch and the layers are 1-D
convolutions (``[B, 1, T]`` -> ``[B * p, 1, T / p]``), the same arithmetic with one fewer
dimension. Feature maps then come as ``[B * p, C, T']``; the losses take means over every
element, so the order does not matter. Weights are stored ``[out, in, k]`` (DLE's ``[out, in, k,
1]`` squeezed). Real and generated audio go through each discriminator together (concatenated
along the batch, DLE's ``--concat_fwd``): one pass instead of two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tts.models.hifigan import LRELU_SLOPE, HiFiGAN

__all__ = ["NormConv1d", "DiscriminatorP", "MultiPeriodDiscriminator", "DiscriminatorS",
           "MultiScaleDiscriminator", "HiFiGANTrainModel", "discriminator_loss", "generator_loss",
           "feature_loss", "dle_init_generator", "MPD_PERIODS"]

#: DLE's ``--mpd_periods``.
MPD_PERIODS = (2, 3, 5, 7, 11)


class NormConv1d(nn.Module):
    """A 1-D convolution with weight norm (``weight_g``, ``weight_v``: ``weight = g v / ||v||``,
    the norm over every dim but 0) or spectral norm (``weight_orig`` and the power-iteration
    buffers ``weight_u``, ``weight_v``: ``weight = W / sigma(W)``), with the names
    ``torch.nn.utils.weight_norm`` / ``spectral_norm`` give them.

    Spectral norm: in training mode every forward first takes one power-iteration step (no
    gradient), updating ``weight_u``/``weight_v`` in place (they are saved with the weights, so
    a resumed run goes on exactly); in eval mode the stored vectors are used as they are.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, groups: int = 1, norm: str = "weight", eps: float = 1e-12) -> None:
        super().__init__()
        if norm not in ("weight", "spectral"):
            raise ValueError(f"norm must be 'weight' or 'spectral', got {norm!r}")
        conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, padding, groups=groups)
        self.stride, self.padding, self.groups, self.norm, self.eps = stride, padding, groups, norm, eps
        w = conv.weight.detach()
        self.bias = nn.Parameter(conv.bias.detach().clone())
        if norm == "weight":
            self.weight_g = nn.Parameter(torch.linalg.vector_norm(w, dim=(1, 2), keepdim=True))
            self.weight_v = nn.Parameter(w.clone())
        else:
            self.weight_orig = nn.Parameter(w.clone())
            h, wd = w.shape[0], w[0].numel()
            self.register_buffer("weight_u", F.normalize(torch.randn(h), dim=0, eps=eps))
            self.register_buffer("weight_v", F.normalize(torch.randn(wd), dim=0, eps=eps))

    @property
    def weight(self) -> Tensor:
        if self.norm == "weight":
            return torch._weight_norm(self.weight_v, self.weight_g, 0)
        w = self.weight_orig
        mat = w.flatten(1)
        u, v = self.weight_u, self.weight_v
        if self.training:
            with torch.no_grad():
                v = F.normalize(mat.t() @ u, dim=0, eps=self.eps)
                u = F.normalize(mat @ v, dim=0, eps=self.eps)
                self.weight_u.copy_(u)
                self.weight_v.copy_(v)
            u, v = u.clone(), v.clone()   # the buffers change again at the next forward
        sigma = torch.dot(u, mat @ v)
        return w / sigma

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


def _widths(div: int, groups: int):
    """Channels ``c // div`` (DLE's widths for ``div`` 1; narrower discriminators only for tests and
    smoke runs), checked to stay divisible by the grouped convolutions' ``groups``."""
    if div < 1 or any((c // div) % groups or c % div for c in (128, 256, 512, 1024)) or 32 % div:
        raise ValueError(f"discriminator width divisor {div} must divide 32 and leave channels "
                         f"divisible by {groups}")
    return lambda c: c // div


def _conv_stack(convs: nn.ModuleList, conv_post: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """A discriminator's layers: leaky ReLU after each conv, then ``conv_post``; every output kept
    for feature matching."""
    fmap = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        fmap.append(x)
    x = conv_post(x)
    fmap.append(x)
    return x, fmap


class DiscriminatorP(nn.Module):
    """One period discriminator (DLE ``DiscriminatorP``, kernel 5, stride 3), its ``(k, 1)``
    convolutions as 1-D convolutions over the columns (see the module docstring)."""

    def __init__(self, period: int, kernel_size: int = 5, stride: int = 3, norm: str = "weight",
                 width_div: int = 1) -> None:
        super().__init__()
        self.period = period
        c = _widths(width_div, 1)
        chans = [1, c(32), c(128), c(512), c(1024)]
        pad = _padding(5)
        self.convs = nn.ModuleList(
            [NormConv1d(a, b, kernel_size, stride, pad, norm=norm) for a, b in zip(chans, chans[1:])]
            + [NormConv1d(c(1024), c(1024), kernel_size, 1, 2, norm=norm)])
        self.conv_post = NormConv1d(c(1024), 1, 3, 1, 1, norm=norm)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``x [B, 1, T]`` -> (scores ``[B, n]``, feature maps ``[B * period, C, T']``)."""
        b, c, t = x.shape
        p = self.period
        if t % p:
            x = F.pad(x, (0, p - t % p), "reflect")
            t = x.shape[-1]
        # [B, C, T/p, p] -> [B, p, C, T/p] -> [B*p, C, T/p]: column j of the 2-D view is row b*p+j
        x = x.view(b, c, t // p, p).permute(0, 3, 1, 2).reshape(b * p, c, t // p)
        x, fmap = _conv_stack(self.convs, self.conv_post, x)
        return x.reshape(b, -1), fmap


class MultiPeriodDiscriminator(nn.Module):
    """One ``DiscriminatorP`` per period (DLE ``MultiPeriodDiscriminator``)."""

    def __init__(self, periods: tuple[int, ...] = MPD_PERIODS, width_div: int = 1) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList([DiscriminatorP(p, width_div=width_div) for p in periods])

    def forward(self, y: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        outs, fmaps = [], []
        for d in self.discriminators:
            o, f = d(y)
            outs.append(o)
            fmaps.append(f)
        return outs, fmaps


class DiscriminatorS(nn.Module):
    """One scale discriminator (DLE ``DiscriminatorS``)."""

    def __init__(self, norm: str = "weight", width_div: int = 1) -> None:
        super().__init__()
        c = _widths(width_div, 16)
        spec = [(1, c(128), 15, 1, 1, 7), (c(128), c(128), 41, 2, 4, 20), (c(128), c(256), 41, 2, 16, 20),
                (c(256), c(512), 41, 4, 16, 20), (c(512), c(1024), 41, 4, 16, 20),
                (c(1024), c(1024), 41, 1, 16, 20), (c(1024), c(1024), 5, 1, 1, 2)]
        self.convs = nn.ModuleList([NormConv1d(a, b, k, s, p, groups=g, norm=norm)
                                    for a, b, k, s, g, p in spec])
        self.conv_post = NormConv1d(c(1024), 1, 3, 1, 1, norm=norm)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x, fmap = _conv_stack(self.convs, self.conv_post, x)
        return torch.flatten(x, 1, -1), fmap


class MultiScaleDiscriminator(nn.Module):
    """Three ``DiscriminatorS`` (spectral norm on the first) on the waveform pooled 0, 1 and 2
    times (DLE ``MultiScaleDiscriminator``)."""

    def __init__(self, width_div: int = 1) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList([DiscriminatorS("spectral", width_div),
                                             DiscriminatorS(width_div=width_div),
                                             DiscriminatorS(width_div=width_div)])
        self.meanpools = nn.ModuleList([nn.AvgPool1d(4, 2, padding=1), nn.AvgPool1d(4, 2, padding=1)])

    def forward(self, y: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        outs, fmaps = [], []
        for i, d in enumerate(self.discriminators):
            if i:
                y = self.meanpools[i - 1](y)
            o, f = d(y)
            outs.append(o)
            fmaps.append(f)
        return outs, fmaps


class HiFiGANTrainModel(nn.Module):
    """What HiFi-GAN training holds: the generator and both discriminators (one module, so that
    the trainer moves, saves and restores them together)."""

    def __init__(self, generator: HiFiGAN, periods: tuple[int, ...] = MPD_PERIODS,
                 width_div: int = 1) -> None:
        super().__init__()
        self.generator = generator
        self.mpd = MultiPeriodDiscriminator(tuple(periods), width_div)
        self.msd = MultiScaleDiscriminator(width_div)

    @property
    def config(self):
        return self.generator.config

    def discriminators(self) -> list[nn.Module]:
        return [self.mpd, self.msd]

    def discriminate(self, y: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        """Every discriminator on ``y [N, 1, T]``: scores and feature maps, MPD's then MSD's."""
        op, fp = self.mpd(y)
        os_, fs = self.msd(y)
        return op + os_, fp + fs


def _halves(t: Tensor) -> tuple[Tensor, Tensor]:
    """The real and the generated half of a concatenated pass (real items first). A period
    discriminator's maps have ``period`` rows per item, item-major, so the split is still at half."""
    h = t.shape[0] // 2
    return t[:h], t[h:]


def discriminator_loss(outs: list[Tensor]) -> Tensor:
    """Least squares over the scores of a concatenated (real; generated) pass:
    ``sum_d mean((1 - D(y))^2) + mean(D(G(x))^2)``, in float32."""
    loss = outs[0].new_zeros((), dtype=torch.float32)
    for o in outs:
        r, g = _halves(o.float())
        loss = loss + torch.mean((1 - r) ** 2) + torch.mean(g ** 2)
    return loss


def generator_loss(outs: list[Tensor]) -> Tensor:
    """Least squares over the generated half: ``sum_d mean((1 - D(G(x)))^2)``, in float32."""
    loss = outs[0].new_zeros((), dtype=torch.float32)
    for o in outs:
        g = _halves(o.float())[1]
        loss = loss + torch.mean((1 - g) ** 2)
    return loss


def feature_loss(fmaps: list[list[Tensor]]) -> Tensor:
    """``sum`` over every feature map of ``mean |D_l(y) - D_l(G(x))|``, in float32 (the real maps
    are constants), unweighted (DLE multiplies it by 2: the setting ``fm_weight``)."""
    loss = fmaps[0][0].new_zeros((), dtype=torch.float32)
    for maps in fmaps:
        for f in maps:
            r, g = _halves(f.float())
            loss = loss + torch.mean(torch.abs(r.detach() - g))
    return loss


@torch.no_grad()
def dle_init_generator(gen: HiFiGAN, std: float = 0.01, generator: torch.Generator | None = None) -> None:
    """DLE's ``init_weights`` on a fresh weight-normed generator: the upsampling, residual and post
    convolutions' weights drawn from N(0, ``std``) (``conv_pre`` keeps torch's default), weight
    norm re-derived from them (``v = W``, ``g = ||W||``)."""
    mods = [gen.conv_post, *gen.ups]
    for group in gen.resblocks:
        for block in group:
            mods.extend(m for m in block.modules() if hasattr(m, "weight_v"))
    for m in mods:
        if not hasattr(m, "weight_v"):
            raise ValueError("dle_init_generator needs the generator built with weight norm")
        v = torch.randn(m.weight_v.shape, generator=generator) * std
        m.weight_v.copy_(v)
        m.weight_g.copy_(torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())), keepdim=True))


class GANOptimizers:
    """The generator's and the discriminators' optimizers (and, for fp16, their gradient
    scalers) as the one optimizer object the trainer holds. ``state_dict`` has DLE's keys
    (``optim_g``, ``optim_d``, ``scaler_g``, ``scaler_d``)."""

    def __init__(self, g: torch.optim.Optimizer, d: torch.optim.Optimizer,
                 scaler_g: "torch.amp.GradScaler | None" = None,
                 scaler_d: "torch.amp.GradScaler | None" = None) -> None:
        self.g, self.d, self.scaler_g, self.scaler_d = g, d, scaler_g, scaler_d

    @property
    def param_groups(self) -> list[dict]:
        return self.g.param_groups + self.d.param_groups

    def state_dict(self) -> dict:
        out = {"optim_g": self.g.state_dict(), "optim_d": self.d.state_dict()}
        if self.scaler_g is not None:
            out["scaler_g"] = self.scaler_g.state_dict()
            out["scaler_d"] = self.scaler_d.state_dict()
        return out

    def load_state_dict(self, state: dict) -> None:
        self.g.load_state_dict(state["optim_g"])
        self.d.load_state_dict(state["optim_d"])
        if self.scaler_g is not None and "scaler_g" in state:
            self.scaler_g.load_state_dict(state["scaler_g"])
            self.scaler_d.load_state_dict(state["scaler_d"])
