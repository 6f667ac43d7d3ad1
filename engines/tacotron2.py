"""Tacotron2 engine: static decoder buffers, K decoder steps per CUDA-graph replay.

``Tacotron2Engine.infer`` has the signature and return type of
``Tacotron2.infer``. What it does differently:

- weights prepared once (``prepare_weights``): each LSTM's ``W_ih``/``W_hh``
  concatenated into one matrix with the two biases summed, the location
  convolution folded with the location dense layer into one ``[A, 2, 31]``
  filter, mel projection and gate in one matrix, BatchNorm folded into the
  encoder/postnet convolutions; float16 or float32;
- all decoder state lives in static GPU buffers of a (batch, input-length)
  bucket (batch rounded up to a power of two, input length to a multiple of
  32; padding is masked, so results do not change);
- one decoder step is eight fused Triton kernels (``tts.plugins.decoder``;
  backend ``"triton"``, ``kernels="v2"``: LSTM GEMVs with 16-byte loads, tensor
  cores and split-K at batch > 2, location taps unrolled, wider GEMV tiles) or the v1 set
  (``kernels="v1"`` or ``TTS_DECODER_KERNELS=v1``, kept for A/B), or the same
  maths in PyTorch ops (``"torch"``);
- the v2 kernels of a captured step use programmatic dependent launch on sm_90+
  (``pdl``; ``TTS_DECODER_PDL=0`` turns it off): each kernel loads its weights
  (the LSTMs their first weight chunk) before it waits for the previous one, and
  lets the next one launch early (``resolve_pdl``);
- ``steps_per_replay`` (K) steps are captured in one CUDA graph; the host
  checks the per-item stop flags once per replay, overlapped with the next
  replay (at most one replay of K steps is wasted), and cuts the result to
  exactly the steps eager decoding would have made;
- prenet dropout masks are drawn on the GPU from a seed in a GPU buffer and
  the step index (Philox), so replays draw fresh masks; ``prenet_dropout=0``
  is deterministic.

The encoder (``encoder=``) and the postnet (``postnet=``) run as CUDA graphs
per (batch, length) bucket, with no host sync:

- ``"packed"``: the model's own path (``pack_padded_sequence`` with lengths on
  the host, cuDNN bidirectional LSTM); the default on the CPU;
- graph-capturable encoders (``"graph"`` = ``DEFAULT_GRAPH_ENCODER``, the
  default on CUDA): ids padded to a multiple of ``INPUT_MULTIPLE`` (positions
  past the caller's ``T_in`` are zeroed after the embedding and after every
  convolution but the last, i.e. they are the convolutions' zero padding, so
  valid outputs do not change), the forward direction run over the padded
  sequence (its valid outputs do not depend on what follows them), the
  backward one over each item reversed (or right-aligned) within its own
  length by a gather with indices computed on the device; padded positions
  zeroed. The recurrence: ``"cudnn"`` (one bidirectional cuDNN call over
  ``[x; x right-aligned]``, batch 2B), ``"cudnn2"`` (two unidirectional cuDNN
  calls, batch padded to ``CUDNN2_MIN_BATCH`` so that fp16 gets cuDNN's
  persistent kernels), ``"cudnn2s"`` (the same, the backward direction on a
  second stream, concurrent with the forward one), ``"loop"`` (input
  projections of all steps of both directions as one GEMM, then per step one
  ``bmm`` of both directions and PyTorch's fused LSTM cell), ``"triton"`` (the
  same GEMM, then one Triton launch per step, ``tts.plugins.encoder``);
- postnet ``"graph"``: mel padded to a multiple of ``POSTNET_MULTIPLE`` frames,
  positions past the caller's length zeroed after every layer but the last
  (exact, as above); ``"eager"``: the convolutions as they are.

On the CPU the same code runs without graphs (backend ``"torch"``); that is
what the CPU tests compare with the eager model.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from tts.engines._device import on_device
from tts.models.tacotron2 import DecoderOutput, Tacotron2, Tacotron2Output

logger = logging.getLogger(__name__)

__all__ = ["Tacotron2Engine", "StepDecoder", "SlotDecoder", "SlotOutput", "DecoderWeights", "prepare_weights",
           "fold_conv_bn"]

BACKENDS = ("auto", "triton", "torch")
#: Input lengths are padded up to a multiple of this (one buffer set and graph per bucket).
INPUT_MULTIPLE = 32
#: Backend that "auto" picks on CUDA (the faster one measured on H100/H200, see benchmarks/).
DEFAULT_BACKEND = "triton"
KERNEL_SETS = ("v1", "v2")
#: Smallest input-length bucket of a SlotDecoder (its buckets are powers of two from here).
SLOT_MIN_INPUT = 32
#: SlotDecoders (buffer sets with their graphs) an engine keeps.
MAX_SLOT_SETS = 48
#: Kernel set of the triton backend (env ``TTS_DECODER_KERNELS`` overrides; see benchmarks/README.md).
DEFAULT_KERNELS = "v2"
#: Programmatic dependent launch mode of the v2 step (``tts.plugins.decoder._pdl_kw``: 1 wait then
#: let the next kernel launch, 2 the other way round, 0 off); used only where ``resolve_pdl`` allows.
DEFAULT_PDL = 1
#: Encoder paths (see the module docstring); "auto": "graph" on CUDA, "packed" on the CPU.
ENCODERS = ("auto", "graph", "packed", "cudnn", "cudnn2", "cudnn2s", "loop", "triton")
#: Recurrence of encoder="graph" (tools/gpu/encoder_speed.py times them all).
DEFAULT_GRAPH_ENCODER = "cudnn2"
#: Smallest batch bucket of the unidirectional cuDNN encoders: PyTorch picks cuDNN's persistent
#: LSTM kernels (fp16, unpacked, one direction) only for batches that are multiples of 8 (sm80+).
CUDNN2_MIN_BATCH = 8
#: Postnet paths; "auto": "graph" when the engine uses CUDA graphs, else "eager".
POSTNETS = ("auto", "graph", "eager")
#: Mel lengths of the postnet graphs are padded up to a multiple of this.
POSTNET_MULTIPLE = 64
#: Encoder/postnet buckets (static inputs with their graphs) an engine keeps.
MAX_PIECE_RUNS = 48


def resolve_pdl(pdl: int | bool | None, *, device: torch.device, backend: str, kernels: str,
                use_graphs: bool) -> int:
    """The PDL mode an engine uses: ``pdl`` if given, else ``TTS_DECODER_PDL``, else ``DEFAULT_PDL``;
    modes 1/2 only for the v2 Triton kernels in CUDA graphs on sm_90+ (else 0). Mode 3 (the PDL
    code paths without griddepcontrol, for tests) wherever the v2 Triton kernels run."""
    if pdl is None:
        env = os.environ.get("TTS_DECODER_PDL", "").strip()
        pdl = int(env) if env else DEFAULT_PDL
    pdl = int(pdl)
    if pdl not in (0, 1, 2, 3):
        raise ValueError(f"pdl must be 0, 1, 2 or 3 (or a bool), got {pdl}")
    if pdl == 0 or backend != "triton" or kernels != "v2":
        return 0
    if pdl == 3:
        return 3
    if (device.type != "cuda" or not use_graphs or os.environ.get("TRITON_INTERPRET") == "1"
            or torch.cuda.get_device_capability(device)[0] < 9):
        return 0
    return pdl


def decoder_tiles(batch: int, dtype: torch.dtype) -> dict:
    """Tiles of the v2 kernels for a bucket of ``batch`` rows (H100 sweep, benchmarks/README.md).

    ``lstm``: ``lstm_cell2`` keywords; ``query``/``proj``: (bn, bk) of the query and projection
    GEMVs; ``loc_bt``: positions per location-energy program; ``ctx``: (be, bt max) of
    attention_context; ``prenet``: (bn, bb) of the fused prenet, or None for two launches;
    ``pdl_pre``: weight chunks each LSTM program loads before its PDL wait (1 or 2); ``pre_tiles``:
    (bn, bk) of the two prenet GEMVs; ``loc_k``: location-energy kernel (2: FMA taps, 3: one
    tensor-core product per program, tf32x3); ``query``/``proj``/``ctx`` may carry a third entry,
    the kernel's warps. ``TTS_DECODER_TILES`` (JSON, keys as here) overrides.
    """
    # location energy: one tf32x3 tensor-core product per 16 positions (loc_k 3), H100 4.1 against
    # 5.6 us (batch 8) and 3.9 against 5.1 us (batch 1) for the FMA taps (tools/gpu/decoder_kernels.py)
    query = (1, 1024)
    if batch <= 2:      # H100: 28.4 us/step at batch 1 (decoder_kernels, 2026-11-22c)
        lstm = dict(bh=2, bk=512, split=1, num_warps=4, dot=False, static=False)
        tiles = dict(loc_bt=16, loc_k=3, ctx=(16, 128))
    elif dtype == torch.float16 and batch <= 16:
        # H100, batch 8, PDL 1 (tools/gpu/decoder_kernels.py, benchmarks/README.md): 38.9 us/step
        # decode against 48.4 with the tiles before. LSTM: the transposed tensor-core product,
        # 16 hidden units per program, split-K 4, and an 8-row batch tile up to 8 rows (the x
        # loads halve: 15.8 against 19.3 us per LSTM pair); 16-row buckets keep one 16-row tile
        lstm = dict(bh=16, bk=128, split=4, num_warps=4, dot=2, static=False, bb=8 if batch <= 8 else 16)
        tiles = dict(loc_bt=16, loc_k=3, ctx=(16, 128, 2))
        query = (2, 1024, 4)
    elif dtype == torch.float16:    # H100: 48.5 us/step at batch 8 (the server's 32/64-row slot buckets)
        # (the tensor-core location energy is unmeasured at 32/64 rows; with it the server's c=64
        # throughput fell from 553x to 506x real time in one run, so these buckets keep the FMA taps)
        lstm = dict(bh=8, bk=128, split=2, num_warps=4, dot=True, static=False)
        tiles = dict(loc_bt=8, loc_k=2, ctx=(32, 128))
    else:               # float32 weights: no tensor-core path (the config of run 2's fp32 batch-4 GPU test)
        lstm = dict(bh=1, bk=128, split=1, num_warps=4, dot=False, static=False)
        tiles = dict(loc_bt=8, loc_k=2, ctx=(32, 128))
    # the fused prenet measured slower than two launches (7.4 vs 1.9 + 1.9 us + a gap): off
    tiles.update(lstm=lstm, query=query, proj=(1, 1024), prenet=None, pdl_pre=1, pre_tiles=(4, 256))
    env = os.environ.get("TTS_DECODER_TILES")
    if env:
        import json
        tiles.update(json.loads(env))
    return tiles


def fold_conv_bn(block: torch.nn.Sequential, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``Sequential(ConvNorm, BatchNorm1d)`` (eval) -> (weight, bias) of one equivalent conv."""
    conv, bn = block[0].conv, block[1]
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    w = conv.weight.detach().double() * scale[:, None, None]
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(scale)
    b = (b - bn.running_mean.double()) * scale + bn.bias.detach().double()
    return w.to(dtype).contiguous(), b.to(dtype).contiguous()


@dataclass
class DecoderWeights:
    """Prepared decoder weights. Matrices in the engine dtype, small vectors float32."""

    pre_w1: Tensor   #: [P, n_frame]
    pre_w2: Tensor   #: [P, P]
    att_w: Tensor    #: [4 Ha, P + E + Ha]   attention LSTM [W_ih | W_hh]
    att_b: Tensor    #: [4 Ha] f32          b_ih + b_hh
    q_w: Tensor      #: [A, Ha]
    m_w: Tensor      #: [A, E]
    loc_w: Tensor    #: [A, 2, KS] f32      location dense o location conv
    v: Tensor        #: [A] f32
    dec_w: Tensor    #: [4 Hd, Ha + E + Hd]
    dec_b: Tensor    #: [4 Hd] f32
    proj_w: Tensor   #: [n_frame + 1, Hd + E]  mel projection rows, then the gate row
    proj_b: Tensor   #: [n_frame + 1] f32

    def tensors(self) -> dict[str, Tensor]:
        return dict(self.__dict__)


def prepare_weights(model: Tacotron2, dtype: torch.dtype, device: torch.device) -> DecoderWeights:
    """Fuse the decoder's weights (see the module docstring); float64 folding, then cast."""
    d = model.decoder
    a = d.attention_layer

    def mat(t: Tensor) -> Tensor:
        return t.detach().to(device=device, dtype=dtype).contiguous()

    def vec(t: Tensor) -> Tensor:
        return t.detach().to(device=device, dtype=torch.float32).contiguous()

    loc_conv = a.location_layer.location_conv.conv.weight.detach().double()      # [F, 2, KS]
    loc_dense = a.location_layer.location_dense.linear_layer.weight.detach().double()  # [A, F]
    loc = torch.einsum("af,fck->ack", loc_dense, loc_conv)
    return DecoderWeights(
        pre_w1=mat(d.prenet.layers[0].linear_layer.weight),
        pre_w2=mat(d.prenet.layers[1].linear_layer.weight),
        att_w=mat(torch.cat((d.attention_rnn.weight_ih, d.attention_rnn.weight_hh), 1)),
        att_b=vec(d.attention_rnn.bias_ih + d.attention_rnn.bias_hh),
        q_w=mat(a.query_layer.linear_layer.weight),
        m_w=mat(a.memory_layer.linear_layer.weight),
        # row-major [A, 2, KS]: measured faster for location_energy2 than tap-major storage
        # (H100 batch 8: 5.9 against 7.4 us; its rows are reused from L1; decoder_l2.json)
        loc_w=vec(loc),
        v=vec(a.v.linear_layer.weight[0]),
        dec_w=mat(torch.cat((d.decoder_rnn.weight_ih, d.decoder_rnn.weight_hh), 1)),
        dec_b=vec(d.decoder_rnn.bias_ih + d.decoder_rnn.bias_hh),
        proj_w=mat(torch.cat((d.linear_projection.linear_layer.weight, d.gate_layer.linear_layer.weight), 0)),
        proj_b=vec(torch.cat((d.linear_projection.linear_layer.bias, d.gate_layer.linear_layer.bias), 0)),
    )


class _Buffers:
    """Static state of one (batch, input length, capacity) bucket. Float32 unless noted."""

    def __init__(self, bsz: int, t_in: int, cap: int, *, n_frame: int, p_dim: int, ha: int, hd: int,
                 e: int, a: int, wd: torch.dtype, device: torch.device) -> None:
        z = lambda *s, dt=torch.float32: torch.zeros(*s, dtype=dt, device=device)  # noqa: E731
        self.bsz, self.t_in, self.cap = bsz, t_in, cap
        self.frame = z(bsz, n_frame)
        self.pre1 = z(bsz, p_dim)
        self.pre2 = z(bsz, p_dim)
        self.ah = z(2, bsz, ha)          # ping-pong: kernels read all of h while writing the new h
        self.ac = z(bsz, ha)
        self.dh = z(2, bsz, hd)
        self.dc = z(bsz, hd)
        self.ctx = z(bsz, e)
        self.pq = z(bsz, a)
        self.att_w = z(bsz, t_in)
        self.att_cum = z(bsz, t_in)
        self.energy = z(bsz, t_in)
        self.memory = z(bsz, t_in, e, dt=wd)
        self.pm = z(bsz, t_in, a, dt=wd)
        self.lengths = z(bsz, dt=torch.int32)
        self.mask = torch.ones(bsz, t_in, dtype=torch.bool, device=device)
        self.mel = z(bsz, cap, n_frame)      # the decoder's output frames, by step
        self.gate = z(bsz, cap)
        self.align = z(bsz, cap, t_in)
        self.not_finished = z(bsz, dt=torch.int32)
        self.mel_lengths = z(bsz, dt=torch.int32)
        self.step = z(1, dt=torch.int64)     # first step of the next replay
        self.drop_step = self.step           # step of the dropout masks (SlotDecoder: its own counter)
        self.par0 = 0                        # ping-pong half holding the current h (SlotDecoder: odd K)
        self.seed = z(1, dt=torch.int64)
        self.lstm_ws: tuple[Tensor, Tensor] | None = None   # split-K workspace of lstm_cell2
        self.graph: torch.cuda.CUDAGraph | None = None
        self.flags_host: Tensor | None = None
        if device.type == "cuda":
            self.flags_host = torch.zeros(bsz, dtype=torch.int32, pin_memory=True)

    def reset(self, memory: Tensor, pm: Tensor, lengths: Tensor, seed: Tensor) -> None:
        b, t = memory.shape[:2]
        for buf in (self.frame, self.ah, self.ac, self.dh, self.dc, self.ctx, self.att_w,
                    self.att_cum, self.memory, self.pm, self.mel_lengths, self.step):
            buf.zero_()
        self.memory[:b, :t].copy_(memory)
        self.pm[:b, :t].copy_(pm)
        self.lengths.fill_(1)                        # padded items: one (zero) input position
        self.lengths[:b].copy_(lengths)
        pos = torch.arange(self.t_in, device=self.lengths.device)
        self.mask.copy_(pos.unsqueeze(0) >= self.lengths.unsqueeze(1))
        self.not_finished.zero_()
        self.not_finished[:b].fill_(1)
        self.seed.copy_(seed)


class _Run:
    """Static inputs, output and CUDA graph of one bucket of the encoder or the postnet.

    One caller at a time (as the decoder's buckets): the engine copies the inputs in,
    replays (or runs the body eagerly) and copies the output out."""

    def __init__(self, **inputs: Tensor) -> None:
        self.inp = inputs
        self.out: Tensor | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self._t: int | None = None

    def set_t(self, t: int) -> None:
        """The caller's length into the ``t`` input (a launch only when it changes)."""
        if t != self._t:
            self.inp["t"].fill_(t)
            self._t = t


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _lstm_cell_fused(gi: Tensor, gh: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """(h, c) of an LSTM cell from input and hidden pre-activations ``[N, 4H]`` (gate order i, f, g, o)."""
    if gi.is_cuda:
        h, c_new, _ = torch.ops.aten._thnn_fused_lstm_cell(gi, gh, c)
        return h, c_new
    i, f, g, o = (gi + gh).chunk(4, dim=1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_new), c_new


class Tacotron2Engine:
    """Fast ``Tacotron2.infer`` (see the module docstring).

    ``precision``: ``fp16`` (weights float16, state and accumulation float32) or
    ``fp32``. ``backend``: ``triton`` (fused kernels; CUDA), ``torch`` (PyTorch ops),
    ``auto`` (triton where it can run). ``steps_per_replay``: decoder steps per
    graph replay (even). ``use_graphs``: default on for CUDA. ``cache``: an
    ``tts.engines.cache.EngineCache`` for the prepared weights (``cache_hit`` says
    whether they came from it), or None. ``encoder``: one of ``ENCODERS`` (the
    attribute ``encoder`` holds the resolved one and may be changed later).
    ``postnet``: one of ``POSTNETS``. ``pdl``: programmatic dependent launch of the v2 step in
    CUDA graphs (``resolve_pdl``; the attribute ``pdl`` holds the mode in use).
    """

    def __init__(self, model: Tacotron2, *, device: torch.device | str = "cuda", precision: str = "fp16",
                 backend: str = "auto", steps_per_replay: int = 16, use_graphs: bool | None = None,
                 max_buckets: int = 8, lstm_tiles: tuple[int, int, int] = (4, 256, 2),
                 kernels: str | None = None, cache=None, encoder: str = "auto",
                 postnet: str = "auto", pdl: int | bool | None = None) -> None:
        from tts.plugins.decoder import triton_available
        if precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be fp16 or fp32, got {precision!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if steps_per_replay < 2 or steps_per_replay % 2:
            raise ValueError(f"steps_per_replay must be an even number >= 2, got {steps_per_replay}")
        self.device = torch.device(device)
        if backend == "auto":
            backend = DEFAULT_BACKEND if self.device.type == "cuda" and triton_available() else "torch"
        if backend == "triton" and self.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError("the triton backend needs a CUDA device (or TRITON_INTERPRET=1 for tests)")
        self.backend = backend
        kernels = kernels or os.environ.get("TTS_DECODER_KERNELS") or DEFAULT_KERNELS
        if kernels not in KERNEL_SETS:
            raise ValueError(f"kernels must be one of {KERNEL_SETS}, got {kernels!r}")
        #: Triton kernel set of the decoder step ("v2" default; "v1" the earlier eight kernels).
        self.kernels = kernels
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.steps_per_replay = steps_per_replay
        self.use_graphs = self.device.type == "cuda" if use_graphs is None else bool(use_graphs)
        #: Programmatic dependent launch mode of the decoder step's kernels (0: off).
        self.pdl = resolve_pdl(pdl, device=self.device, backend=backend, kernels=kernels,
                               use_graphs=self.use_graphs)
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        if postnet not in POSTNETS:
            raise ValueError(f"postnet must be one of {POSTNETS}, got {postnet!r}")
        if encoder == "auto":
            encoder = "graph" if self.device.type == "cuda" else "packed"
        if encoder == "graph":
            encoder = DEFAULT_GRAPH_ENCODER
            if encoder == "triton" and not (self.device.type == "cuda" and triton_available()):
                encoder = "cudnn"
        if encoder == "triton" and self.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError("encoder='triton' needs a CUDA device (or TRITON_INTERPRET=1 for tests)")
        #: Encoder path in use (see ``ENCODERS``; never "auto"/"graph").
        self.encoder = encoder
        #: Postnet path in use ("graph" or "eager").
        self.postnet_mode = postnet if postnet != "auto" else ("graph" if self.use_graphs else "eager")
        self.max_buckets = max_buckets
        #: (hidden units per program, K tile, warps) of the v1 fused LSTM kernels.
        self.lstm_tiles = tuple(lstm_tiles)
        self.model = model
        self.config = model.config
        c = model.config
        self.n_mel = c.n_mel_channels
        self.n_frame = c.n_mel_channels * c.n_frames_per_step
        self.cache_hit = False
        with torch.no_grad():
            if cache is not None:
                from tts.engines.cache import EngineKey
                key = EngineKey.make("tacotron2", model, self.device, precision)
                prepared, self.cache_hit = cache.get_or_build(key, lambda: self._prepare(model), self.device)
                if self.device.type == "cuda" and backend == "triton":
                    cache.activate_triton()
            else:
                prepared = self._prepare(model)
            self._load(prepared)
            self.enc_lstm = copy.deepcopy(model.encoder.lstm).to(self.device, self.dtype).eval()
            self.enc_lstm.flatten_parameters()       # cuDNN: one weight buffer (no-op on the CPU)
            self._prepare_encoder_lstm()
        #: The eager step API (``init_state``/``go_frame``/``step``) on this device, for callers that
        #: batch continuously (the server's scheduler); see ``StepDecoder``.
        dec = model.decoder
        p0 = next(dec.parameters())
        if p0.device != self.device or p0.dtype != torch.float32:
            dec = copy.deepcopy(dec).to(self.device, torch.float32).eval()
        self.decoder = StepDecoder(dec)
        self._buckets: OrderedDict[tuple, _Buffers] = OrderedDict()
        self._slot_sets: OrderedDict[tuple, SlotDecoder] = OrderedDict()
        self._pool = None
        self._slot_pool = None   # slot graphs: a pool of their own (they replay beside decode()'s graphs)
        self._runs: OrderedDict[tuple, _Run] = OrderedDict()   # encoder/postnet buckets (LRU)

    def _prepare(self, model: Tacotron2) -> dict:
        """The folded/cast tensors of the engine (what the engine cache stores)."""
        w = prepare_weights(model, self.dtype, self.device)
        return {"w": w.tensors(),
                "embedding": model.embedding.weight.detach().to(self.device, self.dtype),
                "enc_convs": [list(fold_conv_bn(blk, self.dtype)) for blk in model.encoder.convolutions],
                "postnet": [list(fold_conv_bn(blk, self.dtype)) for blk in model.postnet.convolutions]}

    def _load(self, d: dict) -> None:
        dev = self.device
        self.w = DecoderWeights(**{k: v.to(dev) for k, v in d["w"].items()})
        self.embedding = d["embedding"].to(dev)
        self.enc_convs = [(w.to(dev), b.to(dev)) for w, b in d["enc_convs"]]
        self.postnet = [(w.to(dev), b.to(dev)) for w, b in d["postnet"]]

    # ------------------------------------------------------------------ pieces

    def _prepare_encoder_lstm(self) -> None:
        """Weights of the graph encoders, from ``enc_lstm`` (engine dtype; biases summed in float64).
        Called under ``torch.no_grad``."""
        m = self.enc_lstm
        dirs = ("_l0", "_l0_reverse")
        w_ih = torch.stack([getattr(m, "weight_ih" + d).detach() for d in dirs])             # [2, 4H, E]
        w_hh = torch.stack([getattr(m, "weight_hh" + d).detach() for d in dirs])             # [2, 4H, H]
        bias = torch.stack([getattr(m, "bias_ih" + d).detach().double() + getattr(m, "bias_hh" + d).detach().double()
                            for d in dirs])                                                 # [2, 4H]
        self._enc_wih_t = w_ih.transpose(1, 2).contiguous()         # [2, E, 4H]
        self._enc_whh = w_hh.contiguous()                           # [2, 4H, H]   (triton)
        self._enc_whh_t = w_hh.transpose(1, 2).contiguous()         # [2, H, 4H]   (loop)
        self._enc_bias = bias.to(self.dtype).unsqueeze(1).contiguous()   # [2, 1, 4H]
        self._side_stream: torch.cuda.Stream | None = None
        mods = []                     # two unidirectional LSTMs with its two directions' weights (cudnn2)
        for d in dirs:
            u = torch.nn.LSTM(m.input_size, m.hidden_size, 1, batch_first=True)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(u, name + "_l0").copy_(getattr(m, name + d))
            u = u.to(self.device, self.dtype).eval()
            u.flatten_parameters()
            mods.append(u)
        self._enc_uni = (mods[0], mods[1])

    def _piece_run(self, key: tuple, make) -> _Run:
        run = self._runs.get(key)
        if run is None:
            run = make()
            self._runs[key] = run
            while len(self._runs) > MAX_PIECE_RUNS:
                self._runs.popitem(last=False)
        else:
            self._runs.move_to_end(key)
        return run

    def _run_piece(self, run: _Run, body) -> Tensor:
        """The output of ``body(run)`` for the inputs now in ``run``: a graph replay (captured at
        the first call, after a warm-up on a side stream) or, without graphs, ``body`` itself."""
        if not self.use_graphs:
            return body(run)
        if run.graph is None:
            cur = torch.cuda.current_stream(self.device)
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(cur)
            with torch.cuda.stream(stream):
                for _ in range(2):                      # compile kernels, pick algorithms, warm the allocator
                    body(run)
            cur.wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
                out = body(run)
            cur.wait_stream(stream)
            run.graph, run.out = graph, out
        run.graph.replay()
        return run.out

    @on_device
    @torch.inference_mode()
    def encode(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """``ids [B, T_in] int64``, ``lengths [B]`` -> ``[B, T_in, E]`` engine dtype, 0 at padding.

        ``encoder="packed"`` copies ``lengths`` to the host; the other paths run without a host
        sync (ids and lengths may be on the host or the device)."""
        if self.encoder == "packed":
            return self._encode_packed(ids, lengths)
        bsz, t_in = ids.shape
        bp, tp = _pow2(bsz), INPUT_MULTIPLE * math.ceil(t_in / INPUT_MULTIPLE)
        if self.encoder in ("cudnn2", "cudnn2s"):
            bp = max(bp, CUDNN2_MIN_BATCH)
        dev = self.device

        def make() -> _Run:
            return _Run(ids=torch.zeros(bp, tp, dtype=torch.int64, device=dev),
                        lengths=torch.ones(bp, dtype=torch.int64, device=dev),
                        t=torch.zeros(1, dtype=torch.int64, device=dev),
                        pos=torch.arange(tp, device=dev))

        run = self._piece_run(("enc", self.encoder, bp, tp), make)
        with torch.autocast(dev.type, enabled=False):
            inp = run.inp
            if (bsz, t_in) != (bp, tp):
                inp["ids"].zero_()
            inp["ids"][:bsz, :t_in].copy_(ids, non_blocking=True)
            if bsz < bp:
                inp["lengths"][bsz:].fill_(1)        # padded rows: one position
            inp["lengths"][:bsz].copy_(lengths, non_blocking=True)
            run.set_t(t_in)
            out = self._run_piece(run, self._encoder_body)
            return out[:bsz, :t_in].clone()

    def _encode_packed(self, ids: Tensor, lengths: Tensor) -> Tensor:
        x = F.embedding(ids.to(self.device), self.embedding).transpose(1, 2)
        for w, b in self.enc_convs:
            x = F.relu(F.conv1d(x, w, b, padding=(w.shape[-1] - 1) // 2))
        x = x.transpose(1, 2)
        t_in = x.shape[1]
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, lengths.detach().to("cpu", torch.int64), batch_first=True, enforce_sorted=False)
        out, _ = self.enc_lstm(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=t_in)
        return out

    def _encoder_body(self, run: _Run) -> Tensor:
        """The encoder over a bucket's static inputs -> ``[Bp, Tp, E]`` (0 at padded positions)."""
        ids, pos, t_in = run.inp["ids"], run.inp["pos"], run.inp["t"]
        lengths = torch.minimum(run.inp["lengths"], t_in).clamp_(min=1)   # gather indices stay in range
        keep = (pos < t_in).to(self.dtype)                 # [Tp]: inside the caller's T_in
        x = F.embedding(ids, self.embedding) * keep[:, None]
        x = x.transpose(1, 2)
        last = len(self.enc_convs) - 1
        for i, (w, b) in enumerate(self.enc_convs):
            x = F.relu(F.conv1d(x, w, b, padding=(w.shape[-1] - 1) // 2))
            if i < last:      # past T_in the next convolution sees zeros, as its own padding
                x = x * keep
        # after the last convolution positions >= T_in (>= every length) reach no valid output
        x = x.transpose(1, 2)                                # [Bp, Tp, E]
        rnn = {"cudnn": self._rnn_cudnn, "cudnn2": self._rnn_cudnn2, "cudnn2s": self._rnn_cudnn2,
               "loop": self._rnn_loop, "triton": self._rnn_triton}[self.encoder]
        y = rnn(x, lengths, pos)
        valid = (pos.unsqueeze(0) < lengths.unsqueeze(1)).to(y.dtype)
        return y * valid.unsqueeze(2)

    @staticmethod
    def _take(x: Tensor, idx: Tensor) -> Tensor:
        """``x[b, idx[b, t]]``: ``x [B, T, C]``, ``idx [B, T]``."""
        return x.gather(1, idx.unsqueeze(2).expand(-1, -1, x.shape[2]))

    @staticmethod
    def _reversal(lengths: Tensor, pos: Tensor) -> Tensor:
        """``[B, T]`` indices reversing each item within its length (an involution there; 0 past it)."""
        return (lengths.unsqueeze(1) - 1 - pos.unsqueeze(0)).clamp(min=0)

    def _rnn_cudnn(self, x: Tensor, lengths: Tensor, pos: Tensor) -> Tensor:
        # one bidirectional call over [x; z], z = each item right-aligned (its valid part ends at
        # Tp - 1): the backward direction of z starts at the item's last valid position
        bp, tp, _ = x.shape
        shift = (tp - lengths).unsqueeze(1)
        z = self._take(x, (pos.unsqueeze(0) - shift).clamp(min=0))
        out, _ = self.enc_lstm(torch.cat((x, z), 0))                     # [2Bp, Tp, 2H]
        h = out.shape[2] // 2
        back = self._take(out[bp:, :, h:], (pos.unsqueeze(0) + shift).clamp(max=tp - 1))
        return torch.cat((out[:bp, :, :h], back), 2)

    def _rnn_cudnn2(self, x: Tensor, lengths: Tensor, pos: Tensor) -> Tensor:
        fwd_lstm, bwd_lstm = self._enc_uni
        rev = self._reversal(lengths, pos)
        xr = self._take(x, rev)
        if self.encoder == "cudnn2s" and x.is_cuda:    # backward direction on a side stream (fork/join)
            cur = torch.cuda.current_stream(x.device)
            if self._side_stream is None:
                self._side_stream = torch.cuda.Stream(x.device)
            side = self._side_stream
            side.wait_stream(cur)
            with torch.cuda.stream(side):
                bwd, _ = bwd_lstm(xr)
            fwd, _ = fwd_lstm(x)
            cur.wait_stream(side)
        else:
            fwd, _ = fwd_lstm(x)
            bwd, _ = bwd_lstm(xr)
        return torch.cat((fwd, self._take(bwd, rev)), 2)

    def _input_gates(self, x: Tensor, rev: Tensor) -> Tensor:
        """Input pre-activations of every step of both directions (+ both biases): ``[Tp, 2, Bp, 4H]``;
        direction 1 over each item reversed within its length."""
        bp, tp, e = x.shape
        xs = torch.stack((x, self._take(x, rev))).view(2, bp * tp, e)
        gx = torch.baddbmm(self._enc_bias, xs, self._enc_wih_t)          # [2, Bp*Tp, 4H]
        return gx.view(2, bp, tp, -1).permute(2, 0, 1, 3).contiguous()

    def _rnn_loop(self, x: Tensor, lengths: Tensor, pos: Tensor) -> Tensor:
        bp, tp, _ = x.shape
        rev = self._reversal(lengths, pos)
        gx = self._input_gates(x, rev).view(tp, 2 * bp, -1)
        hdim = self._enc_whh_t.shape[1]
        c = x.new_zeros(2 * bp, hdim)
        h, c = _lstm_cell_fused(gx[0], torch.zeros_like(gx[0]), c)
        hs = [h]
        for t in range(1, tp):
            gh = torch.bmm(h.view(2, bp, hdim), self._enc_whh_t).view(2 * bp, -1)
            h, c = _lstm_cell_fused(gx[t], gh, c)
            hs.append(h)
        ys = torch.stack(hs, 1).view(2, bp, tp, hdim)
        return torch.cat((ys[0], self._take(ys[1], rev)), 2)

    def _rnn_triton(self, x: Tensor, lengths: Tensor, pos: Tensor) -> Tensor:
        from tts.plugins import encoder as KE
        bp, tp, _ = x.shape
        rev = self._reversal(lengths, pos)
        gx = self._input_gates(x, rev)
        hdim = self._enc_whh.shape[2]
        hbuf = torch.zeros(2, 2, bp, hdim, dtype=torch.float32, device=x.device)   # ping-pong h
        c = torch.zeros(2, bp, hdim, dtype=torch.float32, device=x.device)
        ys = torch.empty(2, bp, tp, hdim, dtype=x.dtype, device=x.device)
        for t in range(tp):
            KE.bilstm_step(gx, self._enc_whh, hbuf[t % 2], hbuf[(t + 1) % 2], c, ys, t)
        return torch.cat((ys[0], self._take(ys[1], rev)), 2)

    @on_device
    @torch.inference_mode()
    def postnet_forward(self, mel: Tensor) -> Tensor:
        """``mel [B, n_mel, T]`` -> ``mel + postnet(mel)`` in the engine dtype."""
        if self.postnet_mode != "graph":
            return self._postnet_eager(mel)
        bsz, n_mel, t = mel.shape
        bp, tp = _pow2(bsz), POSTNET_MULTIPLE * math.ceil(t / POSTNET_MULTIPLE)
        dev = self.device

        def make() -> _Run:
            return _Run(mel=torch.zeros(bp, n_mel, tp, dtype=self.dtype, device=dev),
                        t=torch.zeros(1, dtype=torch.int64, device=dev), pos=torch.arange(tp, device=dev))

        run = self._piece_run(("post", bp, n_mel, tp), make)
        with torch.autocast(dev.type, enabled=False):
            inp = run.inp
            if (bsz, t) != (bp, tp):
                inp["mel"].zero_()
            inp["mel"][:bsz, :, :t].copy_(mel, non_blocking=True)
            run.set_t(t)
            out = self._run_piece(run, self._postnet_body)
            return out[:bsz, :, :t].clone()

    def _postnet_eager(self, mel: Tensor) -> Tensor:
        x = mel.to(self.dtype)
        last = len(self.postnet) - 1
        y = x
        for i, (w, b) in enumerate(self.postnet):
            y = F.conv1d(y, w, b, padding=(w.shape[-1] - 1) // 2)
            if i < last:
                y = torch.tanh(y)
        return x + y

    def _postnet_body(self, run: _Run) -> Tensor:
        x = run.inp["mel"]                                   # 0 past the caller's T
        keep = (run.inp["pos"] < run.inp["t"]).to(self.dtype)
        last = len(self.postnet) - 1
        y = x
        for i, (w, b) in enumerate(self.postnet):
            y = F.conv1d(y, w, b, padding=(w.shape[-1] - 1) // 2)
            if i < last:
                y = torch.tanh(y) * keep                     # past T: the next layer's zero padding
        return x + y

    # ------------------------------------------------------------------ decoder

    def _bucket(self, bsz: int, t_in: int, max_steps: int, p: float, threshold: float) -> _Buffers:
        bp = 1 << max(0, (bsz - 1).bit_length())
        tp = INPUT_MULTIPLE * math.ceil(t_in / INPUT_MULTIPLE)
        k = self.steps_per_replay
        cap = k * math.ceil(max_steps / k) + k       # + one speculative replay
        key = (bp, tp, p, threshold)
        buf = self._buckets.get(key)
        if buf is not None and buf.cap >= cap:
            self._buckets.move_to_end(key)
            return buf
        c = self.config
        buf = _Buffers(bp, tp, cap, n_frame=self.n_frame, p_dim=c.prenet_dim, ha=c.attention_rnn_dim,
                       hd=c.decoder_rnn_dim, e=c.encoder_embedding_dim, a=c.attention_dim,
                       wd=self.dtype, device=self.device)
        self._buckets[key] = buf
        while len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)
        return buf

    def _steps(self, buf: _Buffers, p: float, threshold: float) -> None:
        if self.backend != "triton":
            step = self._step_torch
        else:
            step = self._step_triton2 if self.kernels == "v2" else self._step_triton
        for i in range(self.steps_per_replay):
            step(buf, i, p, threshold)
        buf.step.add_(self.steps_per_replay)

    def _capture(self, buf: _Buffers, p: float, threshold: float) -> None:
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):                      # compile kernels, warm the allocator
                self._steps(buf, p, threshold)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # stream: a capture stream of this engine's device (torch.cuda.graph's default stream is
        # made once, on the device current at the first capture in the process: cuda:0)
        with torch.cuda.graph(graph, pool=self._pool, stream=stream, capture_error_mode="thread_local"):
            self._steps(buf, p, threshold)
        buf.graph = graph

    def _step_triton(self, b: _Buffers, i: int, p: float, threshold: float) -> None:
        from tts.plugins import decoder as K
        w = self.w
        par = (i + b.par0) % 2
        ah_old, ah_new = b.ah[par], b.ah[1 - par]
        dh_old, dh_new = b.dh[par], b.dh[1 - par]
        K.linear_act(b.frame, w.pre_w1, b.pre1, relu=True, p=p, seed=b.seed, step=b.drop_step, step_i=i, salt=0)
        K.linear_act(b.pre1, w.pre_w2, b.pre2, relu=True, p=p, seed=b.seed, step=b.drop_step, step_i=i, salt=1)
        bh, bk, nw = self.lstm_tiles
        K.lstm_cell((b.pre2, b.ctx, ah_old), w.att_w, w.att_b, b.ac, ah_new, bh=bh, bk=bk, num_warps=nw)
        K.linear_act(ah_new, w.q_w, b.pq)
        K.location_energy(b.pq, w.loc_w, b.att_w, b.att_cum, b.pm, w.v, b.lengths, b.energy)
        K.attention_context(b.energy, b.memory, b.att_w, b.att_cum, b.ctx, b.align, b.step, i)
        K.lstm_cell((ah_new, b.ctx, dh_old), w.dec_w, w.dec_b, b.dc, dh_new, bh=bh, bk=bk, num_warps=nw)
        K.projection((dh_new, b.ctx), w.proj_w, w.proj_b, b.frame, b.mel, b.gate, b.not_finished,
                     b.mel_lengths, threshold, b.step, i)

    def _step_triton2(self, b: _Buffers, i: int, p: float, threshold: float) -> None:
        from tts.plugins import decoder as K
        w = self.w
        tl = decoder_tiles(b.bsz, self.dtype)
        lstm = tl["lstm"]
        if lstm.get("split", 1) > 1 and b.lstm_ws is None:
            hmax = max(self.config.attention_rnn_dim, self.config.decoder_rnn_dim)
            b.lstm_ws = K.lstm2_workspace(lstm["split"], 16 * math.ceil(b.bsz / 16), hmax, self.device)
        par = (i + b.par0) % 2
        ah_old, ah_new = b.ah[par], b.ah[1 - par]
        dh_old, dh_new = b.dh[par], b.dh[1 - par]
        # pdl: programmatic dependent launch (every kernel waits for its predecessor before it reads
        # state or writes; the fused prenet has no PDL path and launches plainly, which is safe)
        pdl = self.pdl
        if tl["prenet"]:
            K.prenet(b.frame, w.pre_w1, w.pre_w2, b.pre2, p=p, seed=b.seed, step=b.drop_step, step_i=i,
                     bn=tl["prenet"][0], bb=tl["prenet"][1])
        else:   # the two layers as two launches (same masks)
            pbn, pbk = tl.get("pre_tiles", (4, 256))[:2]
            K.linear_act(b.frame, w.pre_w1, b.pre1, relu=True, p=p, seed=b.seed, step=b.drop_step, step_i=i,
                         salt=0, pdl=pdl, bn=pbn, bk=pbk)
            K.linear_act(b.pre1, w.pre_w2, b.pre2, relu=True, p=p, seed=b.seed, step=b.drop_step, step_i=i,
                         salt=1, pdl=pdl, bn=pbn, bk=pbk)
        pre = tl.get("pdl_pre", 1)
        K.lstm_cell2((b.pre2, b.ctx, ah_old), w.att_w, w.att_b, b.ac, ah_new, ws=b.lstm_ws, pdl=pdl, pre=pre,
                     **lstm)
        q = tl["query"]
        K.linear_act(ah_new, w.q_w, b.pq, bn=q[0], bk=q[1], pdl=pdl, num_warps=q[2] if len(q) > 2 else 4)
        loc = K.location_energy3 if tl.get("loc_k", 2) == 3 else K.location_energy2
        loc(b.pq, w.loc_w, b.att_w, b.att_cum, b.pm, w.v, b.lengths, b.energy, bt=tl["loc_bt"], pdl=pdl)
        cx = tl["ctx"]
        K.attention_context(b.energy, b.memory, b.att_w, b.att_cum, b.ctx, b.align, b.step, i,
                            be=cx[0], bt=min(cx[1], 1 << max(0, (b.t_in - 1).bit_length())), pdl=pdl,
                            num_warps=cx[2] if len(cx) > 2 else 4)
        K.lstm_cell2((ah_new, b.ctx, dh_old), w.dec_w, w.dec_b, b.dc, dh_new, ws=b.lstm_ws, pdl=pdl, pre=pre,
                     **lstm)
        pj = tl["proj"]
        K.projection((dh_new, b.ctx), w.proj_w, w.proj_b, b.frame, b.mel, b.gate, b.not_finished,
                     b.mel_lengths, threshold, b.step, i, bn=pj[0], bk=pj[1], pdl=pdl,
                     num_warps=pj[2] if len(pj) > 2 else 4)

    def _step_torch(self, b: _Buffers, i: int, p: float, threshold: float) -> None:
        w, wd = self.w, self.dtype
        par = (i + b.par0) % 2
        ah_old, ah_new = b.ah[par], b.ah[1 - par]
        dh_old, dh_new = b.dh[par], b.dh[1 - par]
        x = b.frame
        for wt in (w.pre_w1, w.pre_w2):
            x = F.relu(F.linear(x.to(wd), wt)).float()
            if p > 0.0:
                x = x * (torch.rand_like(x) >= p).to(x.dtype) * (1.0 / (1.0 - p))
        gates = F.linear(torch.cat((x, b.ctx, ah_old), 1).to(wd), w.att_w).float() + w.att_b
        _lstm_pointwise(gates, b.ac, ah_new)
        pq = F.linear(ah_new.to(wd), w.q_w).float()
        ks = w.loc_w.shape[-1]
        loc = F.conv1d(torch.stack((b.att_w, b.att_cum), 1), w.loc_w, padding=(ks - 1) // 2)
        e = torch.tanh(pq.unsqueeze(1) + loc.transpose(1, 2) + b.pm.float()) @ w.v
        a = torch.softmax(e.masked_fill(b.mask, float("-inf")), dim=1)
        b.ctx.copy_(torch.bmm(a.unsqueeze(1).to(wd), b.memory).squeeze(1))
        b.att_w.copy_(a)
        b.att_cum.add_(a)
        idx = b.step + i
        b.align.index_copy_(1, idx, a.unsqueeze(1))
        gates = F.linear(torch.cat((ah_new, b.ctx, dh_old), 1).to(wd), w.dec_w).float() + w.dec_b
        _lstm_pointwise(gates, b.dc, dh_new)
        y = F.linear(torch.cat((dh_new, b.ctx), 1).to(wd), w.proj_w).float() + w.proj_b
        nf = self.n_frame
        b.frame.copy_(y[:, :nf])
        b.mel.index_copy_(1, idx, y[:, :nf].unsqueeze(1))
        b.gate.index_copy_(1, idx, y[:, nf:nf + 1])
        keep = b.not_finished * (torch.sigmoid(y[:, nf]) <= threshold).to(torch.int32)
        b.not_finished.copy_(keep)
        b.mel_lengths.add_(keep)

    @on_device
    @torch.inference_mode()
    def decode(self, memory: Tensor, memory_lengths: Tensor, *, max_decoder_steps: int | None = None,
               gate_threshold: float | None = None, prenet_dropout: float = 0.5,
               early_stopping: bool | None = None, generator: torch.Generator | None = None
               ) -> DecoderOutput:
        """``Decoder.infer`` on the engine: ``memory [B, T_in, E]``, ``memory_lengths [B]``.

        Returns float32 ``mel [B, n_mel, steps * fps]``, gate ``[B, steps]``, alignments
        ``[B, steps, T_in]`` and ``mel_lengths [B] int32`` with eager decoding's step count.
        """
        c = self.config
        max_steps = c.max_decoder_steps if max_decoder_steps is None else int(max_decoder_steps)
        threshold = c.gate_threshold if gate_threshold is None else float(gate_threshold)
        stop_early = (not c.decoder_no_early_stopping) if early_stopping is None else bool(early_stopping)
        p = float(prenet_dropout)
        bsz, t_in, _ = memory.shape
        buf = self._bucket(bsz, t_in, max_steps, p, threshold)
        memory = memory.to(self.device, self.dtype)
        pm = F.linear(memory, self.w.m_w)
        if generator is not None:
            seed = torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)
        else:   # the CPU default generator: a CUDA graph captured by another thread cannot interfere
            seed = torch.randint(0, 2**62, (1,))
        with torch.autocast(self.device.type, enabled=False):
            buf.reset(memory, pm, memory_lengths.to(self.device, torch.int32), seed.to(self.device))
            if self.use_graphs and buf.graph is None:
                self._capture(buf, p, threshold)
                buf.reset(memory, pm, memory_lengths.to(self.device, torch.int32), seed.to(self.device))
            self._run(buf, bsz, max_steps, stop_early, p, threshold)
        lengths = buf.mel_lengths[:bsz].clamp(max=max_steps)
        n_steps = min(int(lengths.max()) + 1, max_steps) if stop_early else max_steps
        n_open = int(buf.not_finished[:bsz].sum()) if n_steps == max_steps else 0
        if stop_early and n_open and int(lengths.max()) >= max_steps:
            logger.warning("Tacotron2 engine: reached max_decoder_steps=%d before the stop gate fired "
                           "for %d of %d items", max_steps, n_open, bsz)
        frames = buf.mel[:bsz, :n_steps]
        mel = frames.reshape(bsz, -1, self.n_mel).transpose(1, 2).contiguous()
        return DecoderOutput(mel=mel, gate=buf.gate[:bsz, :n_steps].clone(),
                             alignments=buf.align[:bsz, :n_steps, :t_in].clone(),
                             mel_lengths=lengths.to(torch.int32))

    def _run(self, buf: _Buffers, bsz: int, max_steps: int, stop_early: bool, p: float,
             threshold: float) -> None:
        k = self.steps_per_replay
        n_replays = math.ceil(max_steps / k)
        graph = buf.graph if self.use_graphs else None
        if graph is None:
            for _ in range(n_replays):
                self._steps(buf, p, threshold)
                if stop_early and not bool(buf.not_finished[:bsz].any()):
                    return
            return
        if not stop_early:
            for _ in range(n_replays):
                graph.replay()
            return
        # Pipelined: replay r+1 is queued before the flags of replay r are read, so the GPU
        # never waits for the host; at most one replay of K steps is wasted.
        event = torch.cuda.Event()
        flags = buf.flags_host
        graph.replay()
        flags.copy_(buf.not_finished, non_blocking=True)
        event.record()
        for r in range(1, n_replays):
            graph.replay()
            event.synchronize()
            if not bool(flags[:bsz].any()):
                return
            flags.copy_(buf.not_finished, non_blocking=True)
            event.record()

    # ------------------------------------------------------------------ whole model

    @on_device
    @torch.inference_mode()
    def infer(self, ids: Tensor, lengths: Tensor, *, max_decoder_steps: int | None = None,
              gate_threshold: float | None = None, prenet_dropout: float = 0.5,
              early_stopping: bool | None = None,
              generator: torch.Generator | None = None) -> Tacotron2Output:
        """``Tacotron2.infer`` on the engine; same arguments, same result type.

        Float tensors of the result are in the engine dtype (mel_postnet included).
        """
        self.model._check(ids, lengths, max_decoder_steps, gate_threshold, prenet_dropout)
        with torch.autocast(self.device.type, enabled=False):
            enc = self.encode(ids, lengths)
            dec = self.decode(enc, lengths, max_decoder_steps=max_decoder_steps,
                              gate_threshold=gate_threshold, prenet_dropout=prenet_dropout,
                              early_stopping=early_stopping, generator=generator)
            mel = dec.mel.to(self.dtype)
            post = self.postnet_forward(mel)
        return Tacotron2Output(mel=mel, mel_postnet=post, gate=dec.gate.to(self.dtype),
                               alignments=dec.alignments.to(self.dtype), mel_lengths=dec.mel_lengths,
                               encoder_outputs=enc)

    __call__ = infer

    # ------------------------------------------------------------------ continuous batching

    @on_device
    def slots(self, max_rows: int, max_input_len: int, *, steps_per_replay: int | None = None) -> SlotDecoder:
        """A ``SlotDecoder`` of at least ``max_rows`` slots and input length ``max_input_len``, all free.

        Rows are rounded up to a power of two, the input length to a power of two >= 32
        (``slot_buckets``); ``steps_per_replay`` defaults to the engine's. Decoders (their
        buffers and graphs) are kept per bucket and handed out again, freed: one user at a time.
        """
        rows, t_in = slot_buckets(max_rows, max_input_len)
        k = self.steps_per_replay if steps_per_replay is None else int(steps_per_replay)
        key = (rows, t_in, k)
        sd = self._slot_sets.get(key)
        if sd is None:
            sd = SlotDecoder(self, rows, t_in, k)
            self._slot_sets[key] = sd
            while len(self._slot_sets) > MAX_SLOT_SETS:
                self._slot_sets.popitem(last=False)
        else:
            self._slot_sets.move_to_end(key)
        sd.reset()
        return sd


class StepDecoder:
    """The eager decoder's step API on the engine's device, for continuous batching.

    ``init_state(memory, lengths)``, ``go_frame(state)``, ``step(state, prev_frame, prenet_dropout=,
    generator=)`` and ``infer`` as ``tts.models.tacotron2.Decoder``, run by the eager float32
    module (the per-step cost at small batch is kernel launches, so float32 costs nothing
    there and keeps the scheduler's results those of the fp32 reference). Memory from
    ``Tacotron2Engine.encode`` (engine dtype) is cast to float32; frames are float32.
    """

    def __init__(self, decoder: torch.nn.Module) -> None:
        self.module = decoder
        self._generator: torch.Generator | None = None

    def _private_generator(self, device: torch.device) -> torch.Generator:
        # Dropout masks come from a generator of our own, never the device's default one: while
        # another thread captures a CUDA graph (a vocoder or FastSpeech engine meeting a new
        # shape), the default generator is in capture mode and an eager draw from it raises
        # "Offset increment outside graph capture" (seen in the server on an H100).
        if self._generator is None or self._generator.device != device:
            seed = int(torch.randint(0, 2**62, (1,)))          # the CPU default generator: seedable
            self._generator = torch.Generator(device=device).manual_seed(seed)
        return self._generator

    def __getattr__(self, name: str):
        return getattr(self.module, name)

    def init_state(self, memory: Tensor, memory_lengths: Tensor):
        """``memory [B, T_in, E]`` any float dtype, ``memory_lengths [B]`` -> float32 ``DecoderState``."""
        with torch.autocast(memory.device.type, enabled=False):
            return self.module.init_state(memory.float(), memory_lengths)

    def go_frame(self, state) -> Tensor:
        return self.module.go_frame(state)

    def step(self, state, prev_frame: Tensor, *, prenet_dropout: float = 0.5,
             generator: torch.Generator | None = None):
        """One step (``Decoder.step``); ``prev_frame [B, n_frame]`` is cast to float32.

        Without ``generator``, dropout masks come from this object's own generator (see above)."""
        if generator is None and prenet_dropout > 0 and prev_frame.device.type == "cuda":
            generator = self._private_generator(prev_frame.device)
        with torch.autocast(prev_frame.device.type, enabled=False):
            return self.module.step(state, prev_frame.float(), prenet_dropout=prenet_dropout, generator=generator)

    def infer(self, memory: Tensor, memory_lengths: Tensor, **kw):
        with torch.autocast(memory.device.type, enabled=False):
            return self.module.infer(memory.float(), memory_lengths, **kw)


def _lstm_pointwise(gates: Tensor, c: Tensor, h_out: Tensor) -> None:
    i, f, g, o = gates.chunk(4, dim=1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    c.copy_(c_new)
    h_out.copy_(torch.sigmoid(o) * torch.tanh(c_new))


def slot_buckets(rows: int, input_len: int) -> tuple[int, int]:
    """(slots, input length) of the SlotDecoder bucket holding ``rows`` rows of ``input_len`` inputs:
    both rounded up to powers of two, the input length to at least ``SLOT_MIN_INPUT``. Pure."""
    if rows < 1 or input_len < 1:
        raise ValueError(f"rows and input_len must be >= 1, got {rows}, {input_len}")
    return 1 << (int(rows) - 1).bit_length(), max(SLOT_MIN_INPUT, 1 << (int(input_len) - 1).bit_length())


@dataclass
class SlotOutput:
    """What one ``SlotDecoder.run`` made, on the host; rows of free slots are garbage."""

    frames: Tensor                 #: [rows, K, n_frame] float32, CPU: the decoder frames of each step
    gate: Tensor                   #: [rows, K] float32, CPU: gate logits
    stop: list[int | None]         #: per slot: first step of the replay whose gate fired (its threshold), or None


# per-slot decoder state (rows on dim 0; ah/dh: ping-pong pairs, rows on dim 1)
_SLOT_ROW_STATE = ("frame", "ac", "dc", "ctx")
_SLOT_PAIR_STATE = ("ah", "dh")
_SLOT_TIME_STATE = ("att_w", "att_cum", "memory", "pm")


class SlotDecoder:
    """Continuous batching on the engine: ``rows`` decoder slots in static buffers, K steps per replay.

    Made by ``Tacotron2Engine.slots``. A row (one utterance) ``join``s a free
    slot between replays: its encoder output and processed memory are written
    into the slot, its states reset to the go frame and zeros. ``run`` advances
    every slot ``steps_per_replay`` (K) steps in one CUDA-graph replay (on CPU,
    or without graphs, the same steps eagerly) and copies the K frames and gate
    logits of every slot to the host once. Free slots compute garbage that is
    never read. ``leave`` frees a slot. ``resized`` moves the live slots into a
    decoder of another (rows, input length) bucket.

    Each slot's attention is masked to its own input length and every kernel
    works row by row, so a row gets the frames it would get decoding alone,
    whenever it joins (up to float rounding; at ``prenet_dropout=0``).

    Host-side per slot: ``active``, ``steps`` (decoder steps made since joining),
    ``threshold`` (gate threshold: ``SlotOutput.stop`` is the first step with
    ``sigmoid(gate) > threshold``). Frames after a row's stop step are made and
    ignored (at most K - 1 steps of wasted work). Dropout (``run(prenet_dropout=p)``)
    draws its masks on the device from a seed and a step counter of the decoder
    (one p per replay; a graph per (p, parity)).
    """

    def __init__(self, engine: Tacotron2Engine, rows: int, t_in: int, steps_per_replay: int) -> None:
        if steps_per_replay < 1:
            raise ValueError(f"steps_per_replay must be >= 1, got {steps_per_replay}")
        c = engine.config
        self.engine = engine
        self.rows, self.t_in, self.steps_per_replay = int(rows), int(t_in), int(steps_per_replay)
        dev = engine.device
        self.buf = _Buffers(self.rows, self.t_in, self.steps_per_replay, n_frame=engine.n_frame,
                            p_dim=c.prenet_dim, ha=c.attention_rnn_dim, hd=c.decoder_rnn_dim,
                            e=c.encoder_embedding_dim, a=c.attention_dim, wd=engine.dtype, device=dev)
        b = self.buf
        b.drop_step = torch.zeros(1, dtype=torch.int64, device=dev)   # b.step stays 0: outputs at row i
        b.seed.copy_(torch.randint(0, 2**62, (1,)))      # CPU default generator: seedable, never captured
        b.lengths.fill_(1)                              # free slots: one (zero) input position
        b.mask[:, 1:] = True
        b.mask[:, 0] = False
        self.active = [False] * self.rows
        self.steps = [0] * self.rows
        self.threshold = [float(c.gate_threshold)] * self.rows
        self._par = 0
        self._graphs: dict[tuple[float, int], torch.cuda.CUDAGraph] = {}
        self._host: tuple[Tensor, Tensor] | None = None
        if dev.type == "cuda":
            self._host = (torch.zeros(tuple(b.mel.shape), pin_memory=True),
                          torch.zeros(tuple(b.gate.shape), pin_memory=True))

    # ------------------------------------------------------------------ slots
    @on_device
    def reset(self) -> None:
        """Frees every slot (host flags only; a join resets the slot's device state)."""
        self.active = [False] * self.rows
        self.steps = [0] * self.rows

    @property
    def n_active(self) -> int:
        return sum(self.active)

    def free_slots(self) -> list[int]:
        return [i for i, a in enumerate(self.active) if not a]

    @on_device
    @torch.inference_mode()
    def join(self, slot: int, memory: Tensor, length: int, *, gate_threshold: float | None = None) -> None:
        """Starts a row in free ``slot``: ``memory [T, E]`` (or ``[1, T, E]``) encoder output, any
        float dtype, ``length`` valid positions (1..T, T <= ``t_in``). Outside the graph, between replays."""
        if not 0 <= slot < self.rows:
            raise IndexError(f"slot {slot} out of range 0..{self.rows - 1}")
        if self.active[slot]:
            raise ValueError(f"slot {slot} is in use")
        if memory.dim() == 3:
            memory = memory[0]
        length = int(length)
        if not 1 <= length <= min(memory.shape[0], self.t_in):
            raise ValueError(f"length {length} does not fit memory of {memory.shape[0]} and t_in {self.t_in}")
        eng, b = self.engine, self.buf
        mem = memory[:length].to(eng.device, eng.dtype)
        with torch.autocast(eng.device.type, enabled=False):
            for name in _SLOT_ROW_STATE + _SLOT_TIME_STATE:
                getattr(b, name)[slot].zero_()
            for name in _SLOT_PAIR_STATE:
                getattr(b, name)[:, slot].zero_()
            b.memory[slot, :length].copy_(mem)
            b.pm[slot, :length].copy_(F.linear(mem, eng.w.m_w))
            b.lengths[slot] = length
            b.mask[slot, :length] = False
            b.mask[slot, length:] = True
        self.active[slot] = True
        self.steps[slot] = 0
        self.threshold[slot] = float(eng.config.gate_threshold if gate_threshold is None else gate_threshold)

    @on_device
    def leave(self, slot: int) -> None:
        """Frees ``slot`` (its row's frames after this are never read)."""
        self.active[slot] = False

    # ------------------------------------------------------------------ decoding
    def _steps(self, p: float) -> None:
        eng, b = self.engine, self.buf
        if eng.backend != "triton":
            step = eng._step_torch
        else:
            step = eng._step_triton2 if eng.kernels == "v2" else eng._step_triton
        b.par0 = self._par
        threshold = float(eng.config.gate_threshold)   # the kernels' stop flags are not used here
        for i in range(self.steps_per_replay):
            step(b, i, p, threshold)
        b.drop_step.add_(self.steps_per_replay)

    def _state(self) -> list[str]:
        return list(_SLOT_ROW_STATE + _SLOT_PAIR_STATE + ("att_w", "att_cum", "drop_step"))

    @on_device
    def capture(self, prenet_dropout: float = 0.0) -> None:
        """Captures the graph of ``run(prenet_dropout)`` now (CUDA graphs only; no-op otherwise).

        The decoder's state is saved and restored around the warm-up steps, so live rows are untouched."""
        if not self.engine.use_graphs:
            return
        p = float(prenet_dropout)
        pars = (0,) if self.steps_per_replay % 2 == 0 else (0, 1)
        with torch.inference_mode(), torch.autocast(self.engine.device.type, enabled=False):
            for par in pars:
                if (p, par) not in self._graphs:
                    self._capture(p, par)

    def _capture(self, p: float, par: int) -> torch.cuda.CUDAGraph:
        eng, b, dev = self.engine, self.buf, self.engine.device
        saved = {n: getattr(b, n).clone() for n in self._state()}
        keep_par = self._par
        self._par = par
        try:
            cur = torch.cuda.current_stream(dev)
            stream = torch.cuda.Stream(dev, priority=cur.priority)
            stream.wait_stream(cur)
            with torch.cuda.stream(stream):
                for _ in range(2):                      # compile kernels, warm the allocator
                    self._steps(p)
            cur.wait_stream(stream)
            if eng._slot_pool is None:
                eng._slot_pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=eng._slot_pool, stream=stream, capture_error_mode="thread_local"):
                self._steps(p)
            cur.wait_stream(stream)
        finally:
            self._par = keep_par
            for n, t in saved.items():
                getattr(b, n).copy_(t)
        self._graphs[(p, par)] = graph
        return graph

    @on_device
    @torch.inference_mode()
    def run(self, prenet_dropout: float = 0.0) -> SlotOutput:
        """Advances every slot K steps (one graph replay on CUDA); returns the K frames and gates of
        every slot on the host and each active slot's first stop step. Active slots' ``steps`` += K."""
        eng, b = self.engine, self.buf
        p = float(prenet_dropout)
        k = self.steps_per_replay
        with torch.autocast(eng.device.type, enabled=False):
            if eng.use_graphs:
                graph = self._graphs.get((p, self._par)) or self._capture(p, self._par)
                graph.replay()
            else:
                self._steps(p)
            if self._host is not None:
                hm, hg = self._host
                hm.copy_(b.mel, non_blocking=True)
                hg.copy_(b.gate, non_blocking=True)
                torch.cuda.current_stream(eng.device).synchronize()
                frames, gate = hm.clone(), hg.clone()
            else:
                frames, gate = b.mel.to("cpu", copy=True), b.gate.to("cpu", copy=True)
        self._par = (self._par + k) % 2
        thr = torch.tensor(self.threshold, dtype=torch.float32).unsqueeze(1)
        fired = torch.sigmoid(gate) > thr                                   # [rows, K]
        first = torch.where(fired.any(1), fired.to(torch.int8).argmax(1), torch.full((self.rows,), -1))
        stop: list[int | None] = []
        for s, (a, f) in enumerate(zip(self.active, first.tolist())):
            stop.append(int(f) if a and f >= 0 else None)
            if a:
                self.steps[s] += k
        return SlotOutput(frames=frames, gate=gate, stop=stop)

    # ------------------------------------------------------------------ buckets
    @on_device
    @torch.inference_mode()
    def resized(self, max_rows: int, max_input_len: int, keep: list[int]) -> SlotDecoder:
        """A decoder of the (``max_rows``, ``max_input_len``) bucket holding slots ``keep`` of this one
        as its slots 0..len(keep)-1 (states, inputs, step counts, thresholds); every other slot free.

        May return this decoder itself (same bucket): slots are then compacted in place.
        Every kept row's input length must fit the new bucket (ValueError otherwise).
        """
        keep = [int(s) for s in keep]
        if len(set(keep)) != len(keep) or any(not self.active[s] for s in keep):
            raise ValueError(f"keep must name distinct active slots, got {keep}")
        n = len(keep)
        if max_rows < n:
            raise ValueError(f"{n} rows do not fit {max_rows} slots")
        b = self.buf
        idx = torch.as_tensor(keep, dtype=torch.long, device=b.memory.device)
        lengths = b.lengths.index_select(0, idx)
        longest = int(lengths.max()) if n else 1
        if longest > max_input_len:
            raise ValueError(f"a kept row has {longest} inputs > max_input_len {max_input_len}")
        with torch.autocast(self.engine.device.type, enabled=False):
            rows = {name: getattr(b, name).index_select(0, idx) for name in _SLOT_ROW_STATE + _SLOT_TIME_STATE}
            pairs = {name: getattr(b, name).index_select(1, idx) for name in _SLOT_PAIR_STATE}
            host = ([self.steps[s] for s in keep], [self.threshold[s] for s in keep])
            drop_step = b.drop_step.clone()
            rows_b, t_b = slot_buckets(max_rows, max(1, max_input_len))
            same = (rows_b, t_b) == (self.rows, self.t_in)
            new = self if same else self.engine.slots(rows_b, t_b, steps_per_replay=self.steps_per_replay)
            new.reset()
            nb = new.buf
            tm = min(self.t_in, new.t_in)
            for name, t in rows.items():
                dst = getattr(nb, name)
                if name in _SLOT_TIME_STATE:
                    dst[:n].zero_()
                    dst[:n, :tm].copy_(t[:, :tm])
                else:
                    dst[:n].copy_(t)
            for name, t in pairs.items():
                getattr(nb, name)[:, :n].copy_(t)
            nb.lengths[:n].copy_(lengths)
            pos = torch.arange(new.t_in, device=nb.mask.device)
            nb.mask[:n].copy_(pos.unsqueeze(0) >= lengths.unsqueeze(1))
            nb.drop_step.copy_(drop_step)
        new._par = self._par
        for j in range(n):
            new.active[j] = True
            new.steps[j] = host[0][j]
            new.threshold[j] = host[1][j]
        return new
