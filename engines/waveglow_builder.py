"""WaveGlow engine, builder: the prepared (folded, composed, cast) tensors of ``WaveGlowEngine``.

``prepare`` folds the model once: weight norm removed, every invertible 1x1 convolution
inverted in float64, the conditioning convolutions of all layers of a coupling network stacked
into one ``[L*2C, n_mel*n_group]`` matrix with the in-layer biases merged into its bias
(``PreparedFlow``; what the engine cache stores, see ``flows_to_dict``). The two layouts the
engine runs are made from it:

- ``prepare_gemm`` (layout ``gemm``, channels last): the mel upsampling (ConvTranspose1d,
  kernel 1024, stride 256) composed with all conditioning layers of a flow into one
  ``[P*L*2C, 4*n_mel]`` matrix (P = 256 / n_group phases; its product with the mel im2col *is*
  the ``[B*T_g, L*2C]`` conditioning, half the FLOPs of upsample-then-1x1, no upsampled
  spectrogram); res/skip split, the skip biases folded into ``end`` (``GemmFlow``);
- ``prepare_fused`` (layout ``fused``, phase-major rows): per layer and phase the conditioning
  weights ``[P, KC, 2C]``; the skip 1x1 of every layer composed with the flow's ``end`` 1x1
  (``FusedFlow``).

Shapes: ``C`` WN channels, ``c`` the flow's audio channels, ``L`` WN layers, ``k`` the dilated
kernel, ``n_mel`` mel channels, ``n_group`` audio samples per group.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from tts.models.waveglow import HOP_LENGTH as HOP
from tts.models.waveglow import WaveGlow

__all__ = ["PreparedFlow", "prepare", "GemmFlow", "prepare_gemm", "FusedFlow", "prepare_fused", "KC_MULTIPLE",
           "END_COLS", "flows_to_dict", "flows_from_dict"]


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


def flows_to_dict(up: dict[str, Tensor], flows: list[PreparedFlow]) -> dict:
    """``prepare``'s result as plain containers (what the engine cache stores)."""
    return {"upsample": dict(up), "flows": [dict(f.__dict__) for f in flows]}


def flows_from_dict(d: dict, device: torch.device) -> tuple[dict[str, Tensor], list[PreparedFlow]]:
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
