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

Two layouts of the same maths (``layout=``):

- ``ncw``: the model's ``[B, C, T]`` layout, 1x1 and dilated convolutions as ``conv1d``.
- ``gemm``: channels last, every activation a row-major ``[B*T_g, C]`` matrix and every
  convolution a GEMM: the mel upsampling (ConvTranspose1d, kernel 1024, stride 256)
  composed with all conditioning layers of a flow into one ``[4*n_mel, P*L*2C]`` matrix
  (P = 256 / n_group phases; the result *is* the ``[B*T_g, L*2C]`` conditioning, half the
  FLOPs of upsample-then-1x1 and no upsampled spectrogram); the dilated convolution
  accumulates (``addmm_``, beta 1) into its layer's slice of that conditioning from an
  im2col ``[B*T_g, k*C]`` of a zero-padded residual buffer (``dilated="im2col"``) or from
  k row-shifted views of it (``dilated="taps"``); the gate is applied in place (Triton
  row kernel on CUDA, PyTorch twin elsewhere); res/skip 1x1s accumulate in place into the
  residual buffer / skip sum, the skip biases folded into ``end``. Audio stays
  ``[B, T_g, n_group]``, whose flat view is the output: no final transpose.
- ``fused`` (default for fp16 on CUDA with Triton): rows phase-major (row ``(b, ph, f)`` is
  position ``P*f + ph``), so every dilated tap of a phase block is a contiguous block of rows
  and its conditioning one GEMM with that phase's composed weights; each coupling layer is
  two Triton kernels (``tts.plugins.waveglow.wn_in_gate``: dilated conv + conditioning + gate;
  ``wn_res_end``: residual 1x1 in place + the skip 1x1 composed with the flow's ``end`` 1x1
  into a float32 ``[rows, 16]`` accumulator), nothing but the gate output between them. No
  ``[rows, L*2C]`` conditioning and no skip sum in memory. On CPU (no Triton) the same maths
  runs through the kernels' PyTorch twins (tests). H200 fp16 WaveGlow-256, 580 frames:
  7.0 ms at batch 1 (gemm 10.3), 51.9 ms at batch 8 (gemm 80.8), same run.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from tts.engines._device import on_device
from tts.errors import InvalidInputError
from tts.models.waveglow import HOP_LENGTH as HOP
from tts.models.waveglow import WaveGlow

logger = logging.getLogger(__name__)

__all__ = ["WaveGlowEngine", "PreparedFlow", "prepare", "GemmFlow", "prepare_gemm", "LAYOUTS", "FusedFlow", "prepare_fused", "END_COLS"]

#: Layouts of ``WaveGlowEngine`` (see the module docstring).
LAYOUTS = ("ncw", "gemm", "fused")


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


@dataclass
class GemmFlow:
    """One flow's matrices for the ``gemm`` layout (``y = x @ W.t()`` everywhere: W is [out, in])."""

    cond_w: Tensor       #: [P*L*2C, 4*n_mel + 1 (+ 0 to a multiple of 8)] upsample composed with every
                         #: layer's conditioning; bias column: upsample bias through cond + cond + in-layer
    start_w: Tensor      #: [C, c/2]
    start_b: Tensor      #: [C]
    in_w: list[Tensor]   #: per layer [2C, k*C], columns tap-major (im2col order)
    in_taps: list[list[Tensor]]   #: per layer, per tap [2C, C] (views of in_w)
    dil: list[int]
    res_w: list[Tensor | None]    #: per layer [C, C] (None for the last)
    res_b: list[Tensor | None]
    skip_w: list[Tensor]          #: per layer [C, C]
    end_w: Tensor        #: [c, C]
    end_b: Tensor        #: [c] end bias + end(sum of skip biases)
    inv_w: Tensor        #: [c, c] inverse 1x1


def _ceil8(n: int) -> int:
    return -(-n // 8) * 8


def prepare_gemm(up: dict[str, Tensor], flows: list[PreparedFlow], n_group: int, n_channels: int,
                 dtype: torch.dtype, sigmoid_gate: bool = False) -> tuple[list[GemmFlow], int]:
    """The ``gemm`` layout's matrices from ``prepare``'s result (composed in float32, then cast).

    ``cond_w``'s columns: ``taps * n_mel`` mel im2col columns, then the bias (the im2col's
    constant-one column), then zeros up to a multiple of 8. ``sigmoid_gate``: the tanh half
    of every layer's pre-activation (cond and in-layer rows) scaled by -2, for the gate
    ``tanh(a) * sg = sg - 2 * sigmoid(-2a) * sg`` (``gated_rows_sigmoid_``).
    Returns the flows and the number of mel frames each output frame reads (upsample taps).
    """
    n = n_channels
    w_up = up["weight"].float()          # [n_mel_in, n_mel, K]
    b_up = up["bias"].float()
    n_mel, _, kk = w_up.shape
    taps = -(-kk // HOP)
    if taps * HOP != kk:
        w_up = F.pad(w_up, (0, taps * HOP - kk))
    phases = HOP // n_group
    # k = r*HOP + ph*n_group + pos; frame J - r feeds output phase ph of frame J.
    w5 = w_up.reshape(n_mel, n_mel, taps, phases, n_group)          # [mi, m, r, ph, pos]
    out = []
    for f in flows:
        cw = f.cond_w.float()[:, :, 0]                                 # [O, m*n_group + pos]
        o = cw.shape[0]
        cw3 = cw.reshape(o, n_mel, n_group)                            # [O, m, pos]
        # A[ph, o, s, mi] with s = taps-1-r (im2col block s holds frame J-(taps-1)+s)
        a = torch.einsum("omp,imrhp->hori", cw3, w5).flip(2)           # [ph, O, s, mi]
        cond_b = f.cond_b.float() + cw3.sum(2) @ b_up
        in_w = [w.float().permute(0, 2, 1).reshape(w.shape[0], -1) for w in f.in_w]   # [2C, k*C]
        if sigmoid_gate:
            scale = torch.ones(2 * n, device=cw.device)
            scale[:n] = -2.0
            a = a * scale.repeat(o // (2 * n)).view(1, o, 1, 1)
            cond_b = cond_b * scale.repeat(o // (2 * n))
            in_w = [w * scale[:, None] for w in in_w]
        kk_in = taps * n_mel
        cond_w = torch.zeros(phases * o, _ceil8(kk_in + 1), device=cw.device)
        cond_w[:, :kk_in] = a.reshape(phases * o, kk_in)
        cond_w[:, kk_in] = cond_b.repeat(phases)
        last = len(f.rs_w) - 1
        res_w, res_b, skip_w = [], [], []
        skip_bias = torch.zeros(n, dtype=torch.float32, device=cw.device)
        for i, (w, bias) in enumerate(zip(f.rs_w, f.rs_b)):
            w2, b2 = w.float()[:, :, 0], bias.float()
            if i < last:
                res_w.append(w2[:n]), res_b.append(b2[:n])
                skip_w.append(w2[n:]), skip_bias.add_(b2[n:])
            else:
                res_w.append(None), res_b.append(None)
                skip_w.append(w2), skip_bias.add_(b2)
        end_w = f.end_w.float()[:, :, 0]
        end_b = f.end_b.float() + end_w @ skip_bias

        def t(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.to(dtype).contiguous()
        in_w_t = [t(w) for w in in_w]
        k = f.in_w[0].shape[-1]
        out.append(GemmFlow(
            cond_w=t(cond_w), start_w=t(f.start_w.float()[:, :, 0]),
            start_b=t(f.start_b.float()), in_w=in_w_t,
            in_taps=[[w[:, j * n:(j + 1) * n] for j in range(k)] for w in in_w_t],
            dil=list(f.dil), res_w=[t(w) for w in res_w], res_b=[t(b) for b in res_b],
            skip_w=[t(w) for w in skip_w], end_w=t(end_w), end_b=t(end_b),
            inv_w=t(f.w_inv.float()[:, :, 0])))
    return out, taps


@dataclass
class FusedFlow:
    """One flow's tensors for the ``fused`` layout (phase-major rows, ``tts.plugins.waveglow``)."""

    start_w: Tensor      #: [C, c/2]
    start_b: Tensor      #: [C]
    in_wt: list[Tensor]  #: per layer [k*C, 2C] (tap-major rows)
    wc: list[Tensor]     #: per layer [P, KC, 2C]: conditioning of each phase from the mel im2col
    cb: list[Tensor]     #: per layer [2C]: conditioning + in-layer bias
    dil: list[int]
    res_wt: list[Tensor | None]   #: per layer [C, C] (None for the last)
    res_b: list[Tensor | None]
    end_e: list[Tensor]  #: per layer [C, END_COLS]: (end_w @ W_skip)^T, zero columns
    end_b: Tensor        #: [c] end bias + end(sum of skip biases)
    inv_w: Tensor        #: [c, c]


#: Columns of the fused layout's mel im2col (and rows of ``FusedFlow.wc``) are padded to this.
KC_MULTIPLE = 64
#: Width of the fused layout's float32 ``end`` accumulator (the flow's c <= 16 outputs, zeros).
END_COLS = 16


def prepare_fused(gflows: list[GemmFlow], n_group: int, mel_cols: int) -> list[FusedFlow]:
    """The ``fused`` layout's tensors from ``prepare_gemm(..., sigmoid_gate=False)``'s flows.

    ``mel_cols``: ``taps * n_mel`` (the bias column of ``cond_w`` follows them). The skip
    1x1 of every layer is composed with the flow's ``end`` 1x1 (float32, then cast). Each
    ``GemmFlow`` is released as it is converted (their ``cond_w`` are ~1 GB for WaveGlow-256).
    """
    phases = HOP // n_group
    out = []
    for gi, g in enumerate(gflows):
        n = g.start_w.shape[0]
        c = g.end_w.shape[0]
        if c > END_COLS:
            raise ValueError(f"fused layout: a flow with {c} > {END_COLS} channels")
        layers = len(g.in_w)
        kc8 = g.cond_w.shape[1]
        kc = -(-mel_cols // KC_MULTIPLE) * KC_MULTIPLE
        cw = g.cond_w.view(phases, layers, 2 * n, kc8)
        wc, cb = [], []
        for i in range(layers):
            w = torch.zeros(phases, kc, 2 * n, dtype=g.cond_w.dtype, device=g.cond_w.device)
            w[:, :mel_cols] = cw[:, i, :, :mel_cols].transpose(1, 2)
            wc.append(w)
            cb.append(cw[0, i, :, mel_cols].contiguous())
        end_w = g.end_w.float()
        end_e = []
        for i in range(layers):
            e = torch.zeros(n, END_COLS, dtype=g.end_w.dtype, device=g.end_w.device)
            e[:, :c] = (end_w @ g.skip_w[i].float()).t().to(e.dtype)
            end_e.append(e)
        out.append(FusedFlow(start_w=g.start_w, start_b=g.start_b,
                             in_wt=[w.t().contiguous() for w in g.in_w], wc=wc, cb=cb, dil=list(g.dil),
                             res_wt=[None if w is None else w.t().contiguous() for w in g.res_w],
                             res_b=list(g.res_b), end_e=end_e, end_b=g.end_b, inv_w=g.inv_w))
        gflows[gi] = None
    return out


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


def lru_lookup(cache: OrderedDict, key, max_items: int):
    """``cache[key]`` marked most recent, or None after evicting the oldest entries so that one
    more fits in ``max_items``."""
    g = cache.get(key)
    if g is not None:
        cache.move_to_end(key)
        return g
    while len(cache) >= max_items:
        cache.popitem(last=False)
    return None


def capture_graph(fn, device: torch.device, pool) -> tuple[torch.cuda.CUDAGraph, object]:
    """Run ``fn`` once on a side stream (compile kernels, pick cuDNN algorithms), then capture
    it in a CUDA graph from ``pool``; returns the graph and what the captured call returned."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    # on `device`'s stream: torch.cuda.graph's default capture stream lives on the device that
    # was current at the process's first capture (a second GPU's graph would capture nothing)
    with torch.cuda.graph(graph, pool=pool, stream=stream, capture_error_mode="thread_local"):
        out = fn()
    return graph, out


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
    batch 8) or ``conv`` (1x1 convolution, then the residual and skip adds); ``ncw`` only.
    ``layout``: ``ncw`` or ``gemm`` (module docstring); default ``gemm``. ``dilated``:
    ``im2col`` or ``taps`` (``gemm`` only; default ``taps``).
    """

    def __init__(self, model: WaveGlow, *, device: torch.device | str = "cuda", precision: str = "fp16",
                 use_graphs: bool | None = None, max_graphs: int = 4, fused: bool | None = None,
                 cache=None, res_skip: str = "gemm", layout: str | None = None,
                 dilated: str | None = None) -> None:
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
        # gemm + taps on every device: on the H100 (fp16, WaveGlow-256, 580 frames) it took 12.0 ms
        # at batch 1 against 16.3 ms for ncw, and 101 ms against 116 ms at batch 8, same run
        # (benchmarks/h100/2026-11-22/). Its composed conditioning weights take ~1 GB there.
        # fused (phase-major whole-layer Triton kernels) for fp16 on CUDA: see benchmarks/README.md
        if layout is None:
            layout = "fused" if (self.device.type == "cuda" and self.fused and precision == "fp16") else "gemm"
        if res_skip == "gemm" and layout == "ncw":
            self._res_aug, self._skip_aug = _augmented_res_skip(self.flows, self.n_channels)
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        dilated = dilated or "taps"
        if dilated not in ("im2col", "taps"):
            raise ValueError(f"dilated must be 'im2col' or 'taps', got {dilated!r}")
        self.layout, self.dilated = layout, dilated
        if layout in ("gemm", "fused"):
            self._gflows, self._mel_taps = prepare_gemm(self.upsample, self.flows, self.n_group,
                                                        self.n_channels, self.dtype,
                                                        sigmoid_gate=layout == "gemm" and not self.fused)
            self._kernel = model.config.WN_config.kernel_size
            self.flows = []          # the ncw tensors are not used: free them
            if layout == "fused":
                self._fflows = prepare_fused(self._gflows, self.n_group,
                                             self._mel_taps * self.n_mel_channels)
                self._gflows = []
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
        if self.layout == "gemm":
            return self._forward_gemm(mel, z)
        if self.layout == "fused":
            return self._forward_fused(mel, z)
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

    # ------------------------------------------------------------------ gemm layout

    def _gate_rows(self, in_act: Tensor, out: Tensor) -> None:
        """``out = tanh(in_act[:, :C]) * sigmoid(in_act[:, C:])`` (rows; in_act may be clobbered).

        Without the kernel the tanh half arrives scaled by -2 (``prepare_gemm(sigmoid_gate=True)``).
        """
        if self.fused:
            from tts.plugins.waveglow import gated_rows
            gated_rows(in_act, out)
        else:
            from tts.plugins.waveglow import gated_rows_sigmoid_
            gated_rows_sigmoid_(in_act, out)

    def _forward_gemm(self, mel: Tensor, z: Tensor) -> Tensor:
        """``_forward`` in the channels-last GEMM layout."""
        b, n_mel, t = mel.shape
        taps = self._mel_taps
        ph = HOP // self.n_group
        t_g = t * ph
        rows = b * t_g
        n = self.n_channels
        k = self._kernel
        half = (k - 1) // 2
        pad = half * max(self._gflows[0].dil)
        dt, dev = self.dtype, mel.device
        # mel im2col [B*T, taps*n_mel]: frames J-taps+1 .. J (zeros before the start)
        kc = self._gflows[0].cond_w.shape[1]
        mel_col = torch.zeros(b, t, kc, device=dev, dtype=dt)
        mel_t = mel.transpose(1, 2)
        for s_ in range(taps):       # block s_ holds frame J - (taps - 1 - s_)
            sh = taps - 1 - s_
            if sh < t:
                mel_col[:, sh:, s_ * n_mel:(s_ + 1) * n_mel].copy_(mel_t[:, :t - sh])
        mel_col[:, :, taps * n_mel].fill_(1.0)
        mel_col = mel_col.view(b * t, kc)
        zt = z.transpose(1, 2)                                   # [B, T_g, n_group] view
        xp = torch.zeros(b, t_g + 2 * pad, n, device=dev, dtype=dt)   # residual, zero-padded in time
        x = xp[:, pad:pad + t_g]                                 # [B, T_g, C] (rows contiguous)
        x2 = x.reshape(rows, n) if b == 1 else None
        acts = torch.empty(rows, n, device=dev, dtype=dt)
        acts3 = acts.view(b, t_g, n)
        skip = torch.empty(rows, n, device=dev, dtype=dt)
        col = torch.empty(b, t_g, k * n, device=dev, dtype=dt) if self.dilated == "im2col" else None
        off = self.n_remaining_channels
        audio = zt[:, :, :off]
        for kf in reversed(range(self.n_flows)):
            f = self._gflows[kf]
            c = audio.size(2)
            h = c // 2
            a0 = audio[:, :, :h].reshape(rows, h)
            a1 = audio[:, :, h:]
            cond = torch.mm(mel_col, f.cond_w.t()).view(rows, -1)                  # [B*T_g, L*2C]
            if x2 is not None:
                torch.addmm(f.start_b, a0, f.start_w.t(), out=x2)
            else:
                x.copy_(torch.addmm(f.start_b, a0, f.start_w.t()).view(b, t_g, n))
            for i, d in enumerate(f.dil):
                in_act = cond[:, 2 * n * i:2 * n * (i + 1)]                        # [B*T_g, 2C], ld L*2C
                if col is not None:
                    src = xp.as_strided((b, t_g, k, n), (xp.stride(0), n, d * n, 1),
                                        xp.storage_offset() + (pad - half * d) * n)
                    col.view(b, t_g, k, n).copy_(src)
                    in_act.addmm_(col.view(rows, k * n), f.in_w[i].t())
                else:
                    for j, wj in enumerate(f.in_taps[i]):
                        s0 = pad + (j - half) * d
                        if b == 1:
                            in_act.addmm_(xp[0, s0:s0 + t_g], wj.t())
                        else:
                            in_act.view(b, t_g, -1).baddbmm_(xp[:, s0:s0 + t_g], wj.t().expand(b, -1, -1))
                self._gate_rows(in_act, acts)
                rw = f.res_w[i]
                if rw is not None:
                    if x2 is not None:
                        x2.addmm_(acts, rw.t())
                    else:
                        x.baddbmm_(acts3, rw.t().expand(b, -1, -1))
                    x.add_(f.res_b[i])
                if i == 0:
                    torch.mm(acts, f.skip_w[i].t(), out=skip)
                else:
                    skip.addmm_(acts, f.skip_w[i].t())
            out = torch.addmm(f.end_b, skip, f.end_w.t())                          # [B*T_g, c]
            s_, bias = out[:, h:], out[:, :h]
            a1 = (a1.reshape(rows, c - h) - bias) * torch.exp(-s_)
            inv = f.inv_w
            new = torch.mm(a0, inv[:, :h].t()).addmm_(a1, inv[:, h:].t())         # W^-1 [a0; a1]
            audio = new.view(b, t_g, c)
            if kf % self.n_early_every == 0 and kf > 0:
                audio = torch.cat((zt[:, :, off:off + self.n_early_size], audio), 2)
                off += self.n_early_size
        return audio.reshape(b, -1)

    def _forward_fused(self, mel: Tensor, z: Tensor) -> Tensor:
        """``_forward`` in the phase-major ``fused`` layout: two kernels per coupling layer
        (``wn_in_gate``, ``wn_res_skip``: Triton, or their PyTorch twins without ``fused``)."""
        from tts.plugins import waveglow as wk
        in_gate = wk.wn_in_gate if self.fused else wk.wn_in_gate_ref
        res_end = wk.wn_res_end if self.fused else wk.wn_res_end_ref
        b, n_mel, t = mel.shape
        taps = self._mel_taps
        ph = HOP // self.n_group
        n = self.n_channels
        half = (self._kernel - 1) // 2
        fl0 = self._fflows[0]
        fp = wk.wn_frame_pad(half, max(fl0.dil), ph)
        tp = t + 2 * fp
        rows = b * ph * t
        dt, dev = self.dtype, mel.device
        kc = fl0.wc[0].shape[1]
        mel_col = torch.zeros(b, t, kc, device=dev, dtype=dt)       # frames J-taps+1 .. J, zeros
        mel_t = mel.transpose(1, 2)
        for s_ in range(taps):
            sh = taps - 1 - s_
            if sh < t:
                mel_col[:, sh:, s_ * n_mel:(s_ + 1) * n_mel].copy_(mel_t[:, :t - sh])
        mel_col = mel_col.view(b * t, kc)
        # z [B, n_group, T_g]: position P*f + ph -> phase-major [B, P, T, n_group]
        zp = z.transpose(1, 2).reshape(b, t, ph, self.n_group).transpose(1, 2)
        xbuf = torch.zeros(b, ph, tp, n, device=dev, dtype=dt)
        xv = xbuf[:, :, fp:fp + t]
        xflat = xbuf.view(-1, n)
        acts = torch.empty(rows, n, device=dev, dtype=dt)
        end = torch.empty(rows, fl0.end_e[0].shape[1], device=dev, dtype=torch.float32)
        off = self.n_remaining_channels
        audio = zp[..., :off].reshape(rows, off)
        for kf in reversed(range(self.n_flows)):
            f = self._fflows[kf]
            c = audio.size(1)
            h = c // 2
            a0, a1 = audio[:, :h], audio[:, h:]
            xv.copy_(torch.addmm(f.start_b, a0, f.start_w.t()).view(b, ph, t, n))
            for i, d in enumerate(f.dil):
                in_gate(xflat, f.in_wt[i], mel_col, f.wc[i], f.cb[i], acts, t=t, fp=fp, phases=ph, dil=d, half=half)
                res_end(acts, f.res_wt[i], f.res_b[i], xflat, f.end_e[i], end, t=t, fp=fp, first=i == 0)
            out = (end[:, :c] + f.end_b).to(dt)                                      # [rows, c]
            s_, bias = out[:, h:], out[:, :h]
            a1 = (a1 - bias) * torch.exp(-s_)
            inv = f.inv_w
            audio = torch.mm(a0, inv[:, :h].t()).addmm_(a1, inv[:, h:].t())         # W^-1 [a0; a1]
            if kf % self.n_early_every == 0 and kf > 0:
                early = zp[..., off:off + self.n_early_size].reshape(rows, self.n_early_size)
                audio = torch.cat((early, audio), 1)
                off += self.n_early_size
        return audio.view(b, ph, t, self.n_group).transpose(1, 2).reshape(b, -1)

    # ------------------------------------------------------------------ public

    @on_device
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
            if generator is None and self.device.type == "cuda":
                generator = self._private_generator()    # not the device's default: see there
            noise = self._draw_noise(want, generator) * sigma
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

    def _draw_noise(self, shape: tuple[int, int, int], generator: torch.Generator | None) -> Tensor:
        """Noise ``[B, n_group, T_g]`` drawn as ``WaveGlow.infer`` draws it (same calls, same order:
        the initial ``n_remaining`` channels, then ``n_early_size`` per early output), so that
        with one generator state the engine and the eager model use the same noise."""
        b, _, t_g = shape
        sizes = [self.n_remaining_channels] + [self.n_early_size] * self.config.n_early_outputs
        parts = [torch.randn(b, c, t_g, generator=generator, device=self.device, dtype=self.dtype)
                 for c in sizes if c]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

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
        g = lru_lookup(self._graphs, key, self.max_graphs)
        if g is not None:
            return g
        g = _Graph(torch.zeros(b, self.n_mel_channels, t, device=self.device, dtype=self.dtype),
                   torch.zeros(b, self.n_group, 256 * t // self.n_group, device=self.device, dtype=self.dtype))
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        g.graph, g.audio = capture_graph(lambda: self._forward(g.mel, g.z), self.device, self._pool)
        self._graphs[key] = g
        return g

    __call__ = infer


class DenoiserEngine:
    """The denoiser on its device in float32 (as DLE runs it): ``__call__(audio [B, N], strength)``.

    Returns ``[B, 1, hop * (N // hop)]`` float32, as ``Denoiser.forward``. On CUDA each
    ``(B, N)`` is captured in a CUDA graph (a small LRU; ``strength`` is a device scalar the
    graph reads, so one graph serves every strength): the ~20 small STFT/iSTFT launches
    become one replay (H100, 6.7 s of audio: eager 0.73 ms, engine 1.19 ms before graphs).
    """

    def __init__(self, denoiser: torch.nn.Module, *, device: torch.device | str = "cuda",
                 use_graphs: bool | None = None, max_graphs: int = 8) -> None:
        self.device = torch.device(device)
        self.denoiser = denoiser.to(self.device).float().eval()
        self.use_graphs = self.device.type == "cuda" if use_graphs is None else bool(use_graphs)
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple[int, int], tuple] = OrderedDict()
        self._pool = None

    def _graph(self, b: int, n: int) -> tuple:
        key = (b, n)
        g = lru_lookup(self._graphs, key, self.max_graphs)
        if g is not None:
            return g
        audio = torch.zeros(b, n, device=self.device)
        strength = torch.zeros((), device=self.device)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph, out = capture_graph(lambda: self.denoiser(audio, strength=strength), self.device, self._pool)
        g = (graph, audio, strength, out)
        self._graphs[key] = g
        return g

    @on_device
    @torch.inference_mode()
    def __call__(self, audio: Tensor, strength: float = 0.01) -> Tensor:
        with torch.autocast(self.device.type, enabled=False):
            if not self.use_graphs or audio.dim() != 2:
                return self.denoiser(audio.to(self.device, torch.float32), strength=strength)
            graph, a, s, out = self._graph(audio.size(0), audio.size(1))
            a.copy_(audio)
            s.fill_(float(strength))
            graph.replay()
            return out.clone()

    forward = __call__
