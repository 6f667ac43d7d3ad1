"""WaveGlow engine: folded weights, one conditioning GEMM per flow, fused gates, CUDA graphs.

``WaveGlowEngine.infer`` has the signature and return type of ``WaveGlow.infer``.
Prepared once (``prepare``): weight norm folded, every invertible 1x1
convolution inverted in float64, the conditioning convolutions of all layers
of a coupling network stacked into one ``[L*2C, n_mel*n_group]`` matrix (one
GEMM per flow instead of L) with the in-layer biases merged into its bias,
float16 or float32 weights. The gated ``tanh * sigmoid`` with the conditioning
add is one Triton kernel (``tts.plugins.waveglow``; PyTorch twin on CPU).

On CUDA each (batch, frames) shape is captured in a CUDA graph (kept in a
small LRU); the noise is drawn outside the graph into a static buffer
(sigma applied), so graphs replay any noise and any sigma. Shapes are exact:
no padding, so the engine computes the same function as the eager model
(padding a mel changes WaveGlow's output near the end).
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from tts.errors import InvalidInputError
from tts.models.waveglow import WaveGlow

logger = logging.getLogger(__name__)

__all__ = ["WaveGlowEngine", "PreparedFlow", "prepare"]


@dataclass
class PreparedFlow:
    """One flow's tensors, in the engine dtype."""

    w_inv: Tensor        #: [c, c, 1] inverse 1x1 convolution
    start_w: Tensor      #: [C, c/2, 1]
    start_b: Tensor
    cond_w: Tensor       #: [L*2C, n_mel*n_group, 1] all layers' conditioning
    cond_b: Tensor       #: [L*2C] cond biases + in-layer biases
    in_w: list[Tensor]   #: per layer [2C, C, k] (bias moved into cond_b)
    dil: list[int]
    pad: list[int]
    rs_w: list[Tensor]   #: per layer [2C or C, C, 1]
    rs_b: list[Tensor]
    end_w: Tensor        #: [c, C, 1]
    end_b: Tensor


def prepare(model: WaveGlow, dtype: torch.dtype, device: torch.device) -> tuple[dict[str, Tensor], list[PreparedFlow]]:
    """Fold and stack the weights of ``model`` (left untouched) for the engine."""
    m = copy.deepcopy(model).float().cpu().eval()
    m.remove_weight_norm()
    m.prepare_inference()

    def t(x: Tensor) -> Tensor:
        return x.detach().to(device=device, dtype=dtype).contiguous()

    up = {"weight": t(m.upsample.weight), "bias": t(m.upsample.bias)}
    flows = []
    for k in range(m.n_flows):
        wn = m.WN[k]
        cond_w = torch.cat([c.weight for c in wn.cond_layers], 0)
        cond_b = torch.cat([c.bias + i.bias for c, i in zip(wn.cond_layers, wn.in_layers)], 0)
        flows.append(PreparedFlow(
            w_inv=t(m.convinv[k].W_inverse), start_w=t(wn.start.weight), start_b=t(wn.start.bias),
            cond_w=t(cond_w), cond_b=t(cond_b),
            in_w=[t(i.weight) for i in wn.in_layers], dil=[i.dilation[0] for i in wn.in_layers],
            pad=[i.padding[0] for i in wn.in_layers],
            rs_w=[t(r.weight) for r in wn.res_skip_layers], rs_b=[t(r.bias) for r in wn.res_skip_layers],
            end_w=t(wn.end.weight), end_b=t(wn.end.bias)))
    return up, flows


def _flows_to_dict(up: dict[str, Tensor], flows: list[PreparedFlow]) -> dict:
    """``prepare``'s result as plain containers (what the engine cache stores)."""
    return {"upsample": dict(up), "flows": [dict(f.__dict__) for f in flows]}


def _flows_from_dict(d: dict, device: torch.device) -> tuple[dict[str, Tensor], list[PreparedFlow]]:
    def mv(x):
        if isinstance(x, Tensor):
            return x.to(device)
        if isinstance(x, (list, tuple)):
            return [mv(v) for v in x]
        return x
    up = {k: mv(v) for k, v in d["upsample"].items()}
    flows = [PreparedFlow(**{k: mv(v) for k, v in f.items()}) for f in d["flows"]]
    for f in flows:
        f.dil = [int(x) for x in f.dil]
        f.pad = [int(x) for x in f.pad]
    return up, flows


#: Extra channels of the gate output in the ``gemm`` res/skip form: one constant 1 (the bias
#: column), then zeros, so the GEMM's K stays a multiple of 8 (tensor-core friendly).
AUG = 8


def _augmented_res_skip(flows: list[PreparedFlow], n: int) -> tuple[list[list[Tensor | None]], list[list[Tensor]]]:
    """Per flow and layer: ``[W_res | b_res | 0]`` ``[C, C + AUG]`` (None for the last layer) and
    ``[W_skip | b_skip | 0]``, in the engine dtype."""
    res_all, skip_all = [], []
    for f in flows:
        res_l, skip_l = [], []
        last = len(f.rs_w) - 1
        for i, (w, bias) in enumerate(zip(f.rs_w, f.rs_b)):
            w2 = w[:, :, 0]
            aug = torch.zeros(w2.shape[0], n + AUG, dtype=w2.dtype, device=w2.device)
            aug[:, :n] = w2
            aug[:, n] = bias
            if i < last:
                res_l.append(aug[:n].contiguous())
                skip_l.append(aug[n:].contiguous())
            else:
                res_l.append(None)
                skip_l.append(aug.contiguous())
        res_all.append(res_l)
        skip_all.append(skip_l)
    return res_all, skip_all


class _Graph:
    def __init__(self, mel: Tensor, z: Tensor) -> None:
        self.mel = mel
        self.z = z
        self.audio: Tensor | None = None
        self.graph: torch.cuda.CUDAGraph | None = None


class WaveGlowEngine:
    """Fast ``WaveGlow.infer``: ``mel [B, n_mel, T]`` -> audio ``[B, 256*T]`` in the engine dtype.

    ``precision``: fp16 or fp32. ``use_graphs``: default on for CUDA; ``max_graphs``
    shapes are kept. ``fused``: use the Triton gate kernel (default where Triton runs).
    ``cache``: an ``tts.engines.cache.EngineCache`` for the prepared flows, or None.
    ``res_skip``: ``gemm`` (default: the residual and the skip halves each one GEMM that
    accumulates into x / the skip sum in place, bias folded in through a constant-one
    channel of the gate output; H100 fp16: 16.4 vs 18.7 ms at batch 1, 117 vs 147 ms at
    batch 8) or ``conv`` (1x1 convolution, then the residual and skip adds).
    """

    def __init__(self, model: WaveGlow, *, device: torch.device | str = "cuda", precision: str = "fp16",
                 use_graphs: bool | None = None, max_graphs: int = 4, fused: bool | None = None,
                 cache=None, res_skip: str = "gemm") -> None:
        from tts.plugins.decoder import triton_available
        if precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be fp16 or fp32, got {precision!r}")
        self.device = torch.device(device)
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.config = model.config
        self.n_mel_channels = model.n_mel_channels
        self.n_group = model.n_group
        self.n_flows = model.n_flows
        self.n_early_every = model.n_early_every
        self.n_early_size = model.n_early_size
        self.n_remaining_channels = model.n_remaining_channels
        self.n_channels = model.config.WN_config.n_channels
        self.use_graphs = self.device.type == "cuda" if use_graphs is None else bool(use_graphs)
        self.fused = (self.device.type == "cuda" and triton_available()) if fused is None else bool(fused)
        self.max_graphs = max_graphs
        self.cache_hit = False
        if cache is not None:
            from tts.engines.cache import EngineKey
            key = EngineKey.make("waveglow", model, self.device, precision)
            d, self.cache_hit = cache.get_or_build(
                key, lambda: _flows_to_dict(*prepare(model, self.dtype, self.device)), self.device)
            self.upsample, self.flows = _flows_from_dict(d, self.device)
            if self.device.type == "cuda" and self.fused:
                cache.activate_triton()
        else:
            self.upsample, self.flows = prepare(model, self.dtype, self.device)
        if res_skip not in ("conv", "gemm"):
            raise ValueError(f"res_skip must be 'conv' or 'gemm', got {res_skip!r}")
        self.res_skip = res_skip
        if res_skip == "gemm":
            self._res_aug, self._skip_aug = _augmented_res_skip(self.flows, self.n_channels)
        self._graphs: OrderedDict[tuple[int, int], _Graph] = OrderedDict()
        self._pool = None

    # ------------------------------------------------------------------ maths

    def _gate(self, in_act: Tensor, cond: Tensor, layer: int) -> Tensor:
        if self.fused:
            from tts.plugins.waveglow import gated_activation
            return gated_activation(in_act, cond, layer)
        from tts.plugins.waveglow import gated_activation_ref
        return gated_activation_ref(in_act, cond, layer)

    def _wn_gemm(self, k: int, f: PreparedFlow, audio: Tensor, spect: Tensor, acts: Tensor) -> Tensor:
        """``_wn`` with res/skip as in-place GEMMs; ``acts [B, C + AUG, T]`` rows ``C`` = 1, rest 0."""
        x = F.conv1d(audio, f.start_w, f.start_b)
        cond = F.conv1d(spect, f.cond_w, f.cond_b)
        n = self.n_channels
        b = x.shape[0]
        out: Tensor | None = None
        for i, w in enumerate(f.in_w):
            in_act = F.conv1d(x, w, None, dilation=f.dil[i], padding=f.pad[i])
            if self.fused:
                from tts.plugins.waveglow import gated_activation
                gated_activation(in_act, cond, i, out=acts)
            else:
                acts[:, :n].copy_(self._gate(in_act, cond, i))
            res = self._res_aug[k][i]
            if res is not None:
                x.baddbmm_(res.expand(b, -1, -1), acts)
            skip = self._skip_aug[k][i].expand(b, -1, -1)
            out = torch.bmm(skip, acts) if out is None else out.baddbmm_(skip, acts)
        return F.conv1d(out, f.end_w, f.end_b)

    def _wn(self, f: PreparedFlow, audio: Tensor, spect: Tensor) -> Tensor:
        x = F.conv1d(audio, f.start_w, f.start_b)
        cond = F.conv1d(spect, f.cond_w, f.cond_b)
        n = self.n_channels
        out: Tensor | None = None
        last = len(f.in_w) - 1
        for i, w in enumerate(f.in_w):
            in_act = F.conv1d(x, w, None, dilation=f.dil[i], padding=f.pad[i])
            acts = self._gate(in_act, cond, i)
            rs = F.conv1d(acts, f.rs_w[i], f.rs_b[i])
            if i < last:
                x = x + rs[:, :n]
                skip = rs[:, n:]
            else:
                skip = rs
            out = skip if out is None else out + skip
        return F.conv1d(out, f.end_w, f.end_b)

    def _forward(self, mel: Tensor, z: Tensor) -> Tensor:
        """``mel [B, n_mel, T]``, ``z [B, n_group, T_g]`` (sigma applied) -> ``[B, 256*T]``."""
        spect = F.conv_transpose1d(mel, self.upsample["weight"], self.upsample["bias"], stride=256)
        k = self.upsample["weight"].shape[-1]
        spect = spect[:, :, :spect.size(2) - (k - 256)]
        b = spect.size(0)
        spect = spect.unfold(2, self.n_group, self.n_group).permute(0, 2, 1, 3)
        spect = spect.reshape(b, spect.size(1), -1).permute(0, 2, 1).contiguous()
        off = self.n_remaining_channels
        audio = z[:, :off]
        acts = None
        if self.res_skip == "gemm":
            n = self.n_channels
            acts = torch.zeros(b, n + AUG, spect.size(2), device=spect.device, dtype=spect.dtype)
            acts[:, n].fill_(1.0)
        for k in reversed(range(self.n_flows)):
            f = self.flows[k]
            n_half = audio.size(1) // 2
            audio_0, audio_1 = audio[:, :n_half], audio[:, n_half:]
            if acts is not None:
                output = self._wn_gemm(k, f, audio_0, spect, acts)
            else:
                output = self._wn(f, audio_0, spect)
            s, bias = output[:, n_half:], output[:, :n_half]
            audio_1 = (audio_1 - bias) / torch.exp(s)
            audio = F.conv1d(torch.cat([audio_0, audio_1], 1), f.w_inv)
            if k % self.n_early_every == 0 and k > 0:
                audio = torch.cat((z[:, off:off + self.n_early_size], audio), 1)
                off += self.n_early_size
        return audio.permute(0, 2, 1).reshape(b, -1)

    # ------------------------------------------------------------------ public

    @torch.inference_mode()
    def infer(self, mel: Tensor, sigma: float = 0.9, *, z: Tensor | None = None,
              generator: torch.Generator | None = None) -> Tensor:
        """``WaveGlow.infer`` on the engine (same noise layout for ``z``)."""
        if mel.dim() != 3 or mel.size(1) != self.n_mel_channels:
            raise InvalidInputError(
                f"mel must be [B, {self.n_mel_channels}, T], got shape {tuple(mel.shape)}", field="mel")
        b, _, t = mel.shape
        t_g = 256 * t // self.n_group
        want = (b, self.n_group, t_g)
        if z is not None:
            if tuple(z.shape) != want:
                raise InvalidInputError(f"z must have shape {want}, got {tuple(z.shape)}", field="z")
            noise = z.to(self.device, self.dtype) * sigma
        elif sigma == 0.0:
            noise = None
        else:
            if generator is None:   # not the device's default generator: see _private_generator
                generator = self._private_generator()
            noise = torch.randn(want, generator=generator, device=self.device, dtype=self.dtype) * sigma
        with torch.autocast(self.device.type, enabled=False):
            if not self.use_graphs:
                if noise is None:
                    noise = torch.zeros(want, device=self.device, dtype=self.dtype)
                return self._forward(mel.to(self.device, self.dtype), noise)
            g = self._graph(b, t)
            g.mel.copy_(mel)
            if noise is None:
                g.z.zero_()
            else:
                g.z.copy_(noise)
            g.graph.replay()
            return g.audio.clone()

    def _private_generator(self) -> torch.Generator:
        """This engine's own noise generator on its device, seeded from the CPU default generator.

        While another thread captures a CUDA graph, the device's default generator is in
        capture mode and an eager draw from it raises; a generator of our own is never captured.
        """
        g = getattr(self, "_gen", None)
        if g is None:
            g = torch.Generator(device=self.device).manual_seed(int(torch.randint(0, 2**62, (1,))))
            self._gen = g
        return g

    def _graph(self, b: int, t: int) -> _Graph:
        key = (b, t)
        g = self._graphs.get(key)
        if g is not None:
            self._graphs.move_to_end(key)
            return g
        while len(self._graphs) >= self.max_graphs:
            self._graphs.popitem(last=False)
        g = _Graph(torch.zeros(b, self.n_mel_channels, t, device=self.device, dtype=self.dtype),
                   torch.zeros(b, self.n_group, 256 * t // self.n_group, device=self.device, dtype=self.dtype))
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            self._forward(g.mel, g.z)            # compile kernels, pick cuDNN algorithms
        torch.cuda.current_stream(self.device).wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        g.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g.graph, pool=self._pool, capture_error_mode="thread_local"):
            g.audio = self._forward(g.mel, g.z)
        self._graphs[key] = g
        return g

    __call__ = infer


class DenoiserEngine:
    """The denoiser on its device in float32 (as DLE runs it): ``__call__(audio [B, N], strength)``.

    Returns ``[B, 1, hop * (N // hop)]`` float32, as ``Denoiser.forward``.
    """

    def __init__(self, denoiser: torch.nn.Module, *, device: torch.device | str = "cuda") -> None:
        self.device = torch.device(device)
        self.denoiser = denoiser.to(self.device).float().eval()

    @torch.inference_mode()
    def __call__(self, audio: Tensor, strength: float = 0.01) -> Tensor:
        with torch.autocast(self.device.type, enabled=False):
            return self.denoiser(audio.to(self.device, torch.float32), strength=strength)

    forward = __call__
