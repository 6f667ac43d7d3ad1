"""WaveGlow engine: folded weights, composed conditioning, fused WN layers, CUDA graphs.

``WaveGlowEngine.infer`` has the signature and return type of ``WaveGlow.infer``. The
weights are prepared once (``tts.engines.waveglow_builder``): weight norm folded, every
invertible 1x1 convolution inverted in float64, the mel upsampling composed with the
conditioning layers of each flow; float16 or float32.

Two layouts of the same maths (``layout=``):

- ``fused`` (the default for fp16 on CUDA with Triton): rows phase-major (row ``(b, ph, f)``
  is position ``P*f + ph``, ``P = 256 / n_group``), so every dilated tap of a phase block is a
  contiguous block of rows and its conditioning one GEMM with that phase's composed weights;
  each coupling layer is two Triton kernels (``tts.plugins.waveglow.wn_in_gate``: dilated conv
  + conditioning + gate; ``wn_res_end``: residual 1x1 in place + the skip 1x1 composed with the
  flow's ``end`` 1x1 into a float32 ``[rows, 16]`` accumulator), nothing but the gate output
  between them: no ``[rows, L*2C]`` conditioning and no skip sum in memory. Without Triton
  (CPU tests) the same maths runs through the kernels' PyTorch twins.
- ``gemm`` (the default elsewhere: fp32, the CPU): channels last, every activation a row-major
  ``[B*T_g, C]`` matrix and every convolution a GEMM. The conditioning of all layers of a flow
  is one GEMM of the mel im2col with the composed weights; each dilated convolution
  accumulates (``addmm_``, beta 1) into its layer's slice of that conditioning from k
  row-shifted views of a zero-padded residual buffer; the gate is applied in place (Triton row
  kernel on CUDA, ``gated_rows_sigmoid_`` elsewhere); res/skip 1x1s accumulate in place into the
  residual buffer / skip sum. Audio stays ``[B, T_g, n_group]``, whose flat view is the output.

On CUDA each (batch, frames) shape is captured in a CUDA graph (kept in a small LRU); the
noise is drawn outside the graph into a static buffer (sigma applied), so graphs replay any
noise and any sigma. Shapes are exact (no padding: padding a mel changes WaveGlow's output
near the end), so the engine computes the function of the eager model.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from tts.engines._device import on_device
from tts.engines._graphs import LRU, GraphPool, ShapeGraphs, capture
from tts.engines.denoiser import DenoiserEngine
from tts.engines.precision import ENGINE_PRECISIONS, set_float32_math
from tts.engines.waveglow_builder import (END_COLS, KC_MULTIPLE, FusedFlow, GemmFlow, PreparedFlow, flows_from_dict,
                                          flows_to_dict, prepare, prepare_fused, prepare_gemm)
from tts.errors import InvalidInputError
from tts.models.waveglow import HOP_LENGTH as HOP
from tts.models.waveglow import WaveGlow

logger = logging.getLogger(__name__)

__all__ = ["WaveGlowEngine", "DenoiserEngine", "LAYOUTS", "PreparedFlow", "prepare", "GemmFlow", "prepare_gemm",
           "FusedFlow", "prepare_fused", "END_COLS", "KC_MULTIPLE"]

#: Layouts of ``WaveGlowEngine`` (see the module docstring).
LAYOUTS = ("gemm", "fused")


class _Graph:
    """Static input (``mel [B, n_mel, T]``, noise ``z [B, n_group, T_g]``), output and graph of one shape."""

    def __init__(self, mel: Tensor, z: Tensor) -> None:
        self.mel = mel
        self.z = z
        self.audio: Tensor | None = None
        self.graph: torch.cuda.CUDAGraph | None = None


class WaveGlowEngine(ShapeGraphs):
    """Fast ``WaveGlow.infer``: ``mel [B, n_mel, T]`` -> audio ``[B, 256*T]`` in the engine dtype.

    ``precision``: fp16 or fp32. ``use_graphs``: default on for CUDA; ``max_graphs`` shapes
    are kept (may be raised later). ``fused``: use the Triton kernels (default where Triton
    runs on CUDA), else their PyTorch twins. ``cache``: an ``tts.engines.cache.EngineCache``
    for the prepared flows, or None. ``layout``: one of ``LAYOUTS`` (module docstring); None:
    ``fused`` for fp16 with the Triton kernels on CUDA, else ``gemm``.
    """

    def __init__(self, model: WaveGlow, *, device: torch.device | str = "cuda", precision: str = "fp16",
                 use_graphs: bool | None = None, max_graphs: int = 4, fused: bool | None = None,
                 cache=None, layout: str | None = None) -> None:
        from tts.plugins.decoder import triton_available
        if precision not in ENGINE_PRECISIONS:
            raise ValueError(f"precision must be one of {list(ENGINE_PRECISIONS)}, got {precision!r}")
        if layout is not None and layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.device = torch.device(device)
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        set_float32_math(precision, self.device)   # fp32: IEEE float32 (no TF32)
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
        self._graphs: LRU[_Graph] = LRU(max_graphs)
        self._pool = GraphPool()
        self.cache_hit = False
        if cache is not None:
            from tts.engines.cache import EngineKey
            key = EngineKey.make("waveglow", model, self.device, precision)
            d, self.cache_hit = cache.get_or_build(
                key, lambda: flows_to_dict(*prepare(model, self.dtype, self.device)), self.device)
            upsample, flows = flows_from_dict(d, self.device)
            if self.device.type == "cuda" and self.fused:
                cache.activate_triton()
        else:
            upsample, flows = prepare(model, self.dtype, self.device)
        if layout is None:
            layout = "fused" if (self.device.type == "cuda" and self.fused and precision == "fp16") else "gemm"
        #: Layout in use (``LAYOUTS``).
        self.layout = layout
        self._gflows, self._mel_taps = prepare_gemm(upsample, flows, self.n_group, self.n_channels, self.dtype,
                                                    sigmoid_gate=layout == "gemm" and not self.fused)
        self._kernel = model.config.WN_config.kernel_size
        del upsample, flows          # the convolution-form tensors are not used: free them
        self._fflows: list[FusedFlow] = []
        if layout == "fused":
            self._fflows = prepare_fused(self._gflows, self.n_group, self._mel_taps * self.n_mel_channels)
            self._gflows = []

    # ------------------------------------------------------------------ maths

    def _forward(self, mel: Tensor, z: Tensor) -> Tensor:
        """``mel [B, n_mel, T]``, ``z [B, n_group, T_g]`` (sigma applied) -> ``[B, 256*T]``."""
        if self.layout == "fused":
            return self._forward_fused(mel, z)
        return self._forward_gemm(mel, z)

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
                for j, wj in enumerate(f.in_taps[i]):      # the dilated convolution, tap by tap
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
        (``wn_in_gate``, ``wn_res_end``: Triton, or their PyTorch twins without ``fused``)."""
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
        return self._graphs.get_or_make((b, t), lambda: self._capture(b, t))

    def _capture(self, b: int, t: int) -> _Graph:
        g = _Graph(torch.zeros(b, self.n_mel_channels, t, device=self.device, dtype=self.dtype),
                   torch.zeros(b, self.n_group, 256 * t // self.n_group, device=self.device, dtype=self.dtype))
        g.graph, g.audio = capture(lambda: self._forward(g.mel, g.z), self.device, pool=self._pool)
        return g

    __call__ = infer
