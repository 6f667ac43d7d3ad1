"""Tacotron2 engine: static decoder buffers, K decoder steps per CUDA-graph replay.

``Tacotron2Engine.infer`` has the signature and return type of ``Tacotron2.infer``. The engine
is four modules, one responsibility each:

- ``tacotron2_builder``: the prepared weights (LSTM matrices concatenated, the location layer
  folded into one filter, mel projection and gate stacked, BatchNorm folded into the
  convolutions), float16 or float32; what the engine cache stores;
- ``tacotron2_encoder``: the encoder and the postnet as CUDA graphs per (batch, length) bucket,
  with no host sync (the model's packed encoder on the CPU);
- ``tacotron2_step``: all decoder state in static GPU buffers of a (batch, input length)
  bucket (batch rounded up to a power of two, input length to a multiple of 32; padding is
  masked, so results do not change) and one decoder step over them: eight fused Triton kernels
  (``tts.plugins.decoder``) or the same maths in PyTorch ops (backend ``torch``, the CPU path);
- ``slot_decoder``: ``SlotDecoder``, continuous batching on static slots (the server's path).

This module holds the engine itself (``Tacotron2Engine``) and the eager step API for callers
that batch continuously without graphs (``StepDecoder``). ``decode`` captures
``steps_per_replay`` (K) steps in one CUDA graph; the host checks the per-item stop flags once
per replay, overlapped with the next replay (at most one replay of K steps is wasted), and cuts
the result to exactly the steps eager decoding would have made. Prenet dropout masks are drawn
on the GPU from a seed in a GPU buffer and the step index (Philox), so replays draw fresh masks;
``prenet_dropout=0`` is deterministic.

On the CPU the same code runs without graphs (backend ``torch``); that is what the CPU tests
compare with the eager model.
"""

from __future__ import annotations

import copy
import logging
import math

import torch
from torch import Tensor
from torch.nn import functional as F

from tts.engines import _env
from tts.engines._device import on_device
from tts.engines._graphs import LRU, GraphPool, capture
from tts.engines.precision import ENGINE_PRECISIONS, set_float32_math
from tts.engines.slot_decoder import SLOT_MIN_INPUT, SlotDecoder, SlotOutput, slot_buckets
from tts.engines.tacotron2_builder import DecoderWeights, Prepared, fold_conv_bn, prepare, prepare_weights, split_lstm
from tts.engines.tacotron2_encoder import (INPUT_MULTIPLE, GraphEncoder, GraphPostnet, PieceRuns, encode_packed,
                                           postnet_eager)
from tts.engines.tacotron2_step import (DecoderBuffers, attention_stop_step, decoder_tiles, resolve_pdl, torch_step,
                                        triton_step)
from tts.models.tacotron2 import ATTENTION_STOP, DecoderOutput, Tacotron2, Tacotron2Output, check_stop_rule

logger = logging.getLogger(__name__)

__all__ = ["Tacotron2Engine", "StepDecoder", "SlotDecoder", "SlotOutput", "slot_buckets", "DecoderWeights",
           "prepare_weights", "fold_conv_bn", "decoder_tiles", "resolve_pdl", "INPUT_MULTIPLE", "SLOT_MIN_INPUT",
           "BACKENDS", "ENCODERS", "POSTNETS"]

#: Decoder-step backends: ``triton`` (fused kernels, CUDA), ``torch`` (PyTorch ops), ``auto``
#: (``triton`` where Triton runs on CUDA, else ``torch``).
BACKENDS = ("auto", "triton", "torch")
#: Encoder paths: ``graph`` (bucketed, graph-capturable; the CUDA default), ``packed`` (the
#: model's packed sequence, host sync; the CPU default), ``auto``.
ENCODERS = ("auto", "graph", "packed")
#: Postnet paths: ``graph`` (bucketed; the default with CUDA graphs), ``eager``, ``auto``.
POSTNETS = ("auto", "graph", "eager")
#: SlotDecoders (buffer sets with their graphs) an engine keeps.
MAX_SLOT_SETS = 48


class Tacotron2Engine:
    """Fast ``Tacotron2.infer`` (see the module docstring).

    ``precision``: ``fp16`` (weights float16, state and accumulation float32) or ``fp32``.
    ``backend``: one of ``BACKENDS``. ``steps_per_replay``: decoder steps per graph replay
    (even). ``use_graphs``: default on for CUDA. ``max_buckets``: decoder buckets (buffers with
    their graphs) kept. ``cache``: an ``tts.engines.cache.EngineCache`` for the prepared weights
    (``cache_hit`` says whether they came from it), or None. ``encoder``: one of ``ENCODERS``
    (the attribute ``encoder`` holds the resolved one and may be changed later). ``postnet``: one
    of ``POSTNETS``. ``pdl``: programmatic dependent launch of the Triton step in CUDA graphs
    (None: wherever it runs; ``resolve_pdl``); the attribute ``pdl`` holds the mode in use.
    """

    def __init__(self, model: Tacotron2, *, device: torch.device | str = "cuda", precision: str = "fp16",
                 backend: str = "auto", steps_per_replay: int = 16, use_graphs: bool | None = None,
                 max_buckets: int = 8, cache=None, encoder: str = "auto", postnet: str = "auto",
                 pdl: bool | None = None) -> None:
        from tts.plugins.decoder import triton_available
        if precision not in ENGINE_PRECISIONS:
            raise ValueError(f"precision must be one of {list(ENGINE_PRECISIONS)}, got {precision!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if steps_per_replay < 2 or steps_per_replay % 2:
            raise ValueError(f"steps_per_replay must be an even number >= 2, got {steps_per_replay}")
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        if postnet not in POSTNETS:
            raise ValueError(f"postnet must be one of {POSTNETS}, got {postnet!r}")
        self.device = torch.device(device)
        if backend == "auto":
            backend = "triton" if self.device.type == "cuda" and triton_available() else "torch"
        if backend == "triton" and self.device.type != "cuda" and not _env.triton_interpret():
            raise ValueError("the triton backend needs a CUDA device (or TRITON_INTERPRET=1 for tests)")
        self.backend = backend
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        set_float32_math(precision, self.device)   # fp32: IEEE float32 (no TF32)
        self.steps_per_replay = steps_per_replay
        self.use_graphs = self.device.type == "cuda" if use_graphs is None else bool(use_graphs)
        #: Programmatic dependent launch mode of the decoder step's kernels (0: off, 1: on).
        self.pdl = resolve_pdl(pdl, device=self.device, backend=backend, use_graphs=self.use_graphs)
        #: Encoder path in use ("graph" or "packed").
        self.encoder = encoder if encoder != "auto" else ("graph" if self.device.type == "cuda" else "packed")
        #: Postnet path in use ("graph" or "eager").
        self.postnet_mode = postnet if postnet != "auto" else ("graph" if self.use_graphs else "eager")
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
                prepared, self.cache_hit = cache.get_or_build(
                    key, lambda: prepare(model, self.dtype, self.device), self.device)
                if self.device.type == "cuda" and backend == "triton":
                    cache.activate_triton()
            else:
                prepared = prepare(model, self.dtype, self.device)
            p = Prepared.load(prepared, self.device)
            self.w, self.embedding, self.enc_convs, self.postnet = p.w, p.embedding, p.enc_convs, p.postnet
            self.enc_lstm = copy.deepcopy(model.encoder.lstm).to(self.device, self.dtype).eval()
            self.enc_lstm.flatten_parameters()       # cuDNN: one weight buffer (no-op on the CPU)
            runs = PieceRuns(self.device, self.use_graphs)
            self._graph_encoder = GraphEncoder(runs, self.embedding, self.enc_convs,
                                               split_lstm(self.enc_lstm, self.device, self.dtype), self.dtype)
            self._graph_postnet = GraphPostnet(runs, self.postnet, self.dtype)
        #: The eager step API (``init_state``/``go_frame``/``step``) on this device, for callers that
        #: batch continuously without the slot decoder; see ``StepDecoder``.
        dec = model.decoder
        p0 = next(dec.parameters())
        if p0.device != self.device or p0.dtype != torch.float32:
            dec = copy.deepcopy(dec).to(self.device, torch.float32).eval()
        self.decoder = StepDecoder(dec)
        self._buckets: LRU[DecoderBuffers] = LRU(max_buckets)
        self._slot_sets: LRU[SlotDecoder] = LRU(MAX_SLOT_SETS)
        self._pool = GraphPool()        # decode()'s graphs
        self._slot_pool = GraphPool()   # slot graphs: a pool of their own (they replay beside decode()'s graphs)

    @property
    def max_buckets(self) -> int:
        """Decoder buckets (static buffers with their graphs) kept, least recently used evicted first."""
        return self._buckets.max_items

    @max_buckets.setter
    def max_buckets(self, n: int) -> None:
        self._buckets.max_items = int(n)

    # ------------------------------------------------------------------ encoder, postnet

    @on_device
    @torch.inference_mode()
    def encode(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """``ids [B, T_in] int64``, ``lengths [B]`` -> ``[B, T_in, E]`` engine dtype, 0 at padding.

        ``encoder="packed"`` copies ``lengths`` to the host; ``"graph"`` runs without a host
        sync (ids and lengths may be on the host or the device)."""
        if self.encoder == "packed":
            return encode_packed(ids, lengths, self.embedding, self.enc_convs, self.enc_lstm)
        return self._graph_encoder(ids, lengths)

    @on_device
    @torch.inference_mode()
    def postnet_forward(self, mel: Tensor) -> Tensor:
        """``mel [B, n_mel, T]`` -> ``mel + postnet(mel)`` ``[B, n_mel, T]`` in the engine dtype."""
        if self.postnet_mode != "graph":
            return postnet_eager(mel, self.postnet, self.dtype)
        return self._graph_postnet(mel)

    # ------------------------------------------------------------------ decoder

    def _step(self, buf: DecoderBuffers, i: int, p: float, threshold: float, attention: str | None = None) -> None:
        """Decoder step ``i`` of a replay on ``buf`` with this engine's backend; ``attention``:
        the attention stop rule after it, ``"count"`` or ``"stop"`` (``attention_stop_step`` with
        ``stop=False`` / ``True``; fused into the kernels on the ``triton`` backend) or None."""
        if self.backend == "triton":
            triton_step(self.w, buf, i, p, threshold, dtype=self.dtype, pdl=self.pdl,
                        hmax=max(self.config.attention_rnn_dim, self.config.decoder_rnn_dim), attention=attention)
        else:
            torch_step(self.w, buf, i, p, threshold, dtype=self.dtype, n_frame=self.n_frame)
            if attention is not None:
                attention_stop_step(buf, i, stop=attention == "stop")

    def _bucket(self, bsz: int, t_in: int, max_steps: int, p: float, threshold: float,
                stop_rule: str = "gate") -> DecoderBuffers:
        bp = 1 << max(0, (bsz - 1).bit_length())
        tp = INPUT_MULTIPLE * math.ceil(t_in / INPUT_MULTIPLE)
        k = self.steps_per_replay
        cap = k * math.ceil(max_steps / k) + k       # + one speculative replay
        key = (bp, tp, p, threshold, stop_rule)
        buf = self._buckets.get(key)
        if buf is not None and buf.cap >= cap:
            return buf
        c = self.config
        buf = DecoderBuffers(bp, tp, cap, n_frame=self.n_frame, p_dim=c.prenet_dim, ha=c.attention_rnn_dim,
                             hd=c.decoder_rnn_dim, e=c.encoder_embedding_dim, a=c.attention_dim,
                             wd=self.dtype, device=self.device)
        return self._buckets.put(key, buf)

    def _steps(self, buf: DecoderBuffers, p: float, threshold: float, stop_rule: str = "gate") -> None:
        for i in range(self.steps_per_replay):
            self._step(buf, i, p, threshold, "stop" if stop_rule == "attention" else None)
        buf.step.add_(self.steps_per_replay)

    def _capture(self, buf: DecoderBuffers, p: float, threshold: float, stop_rule: str = "gate") -> None:
        # two warm-up replays' worth of steps: compile kernels, warm the allocator
        buf.graph, _ = capture(lambda: self._steps(buf, p, threshold, stop_rule), self.device, pool=self._pool,
                               warmup=2)

    @on_device
    @torch.inference_mode()
    def decode(self, memory: Tensor, memory_lengths: Tensor, *, max_decoder_steps: int | None = None,
               gate_threshold: float | None = None, prenet_dropout: float = 0.5,
               early_stopping: bool | None = None, generator: torch.Generator | None = None,
               stop_rule: str | None = None) -> DecoderOutput:
        """``Decoder.infer`` on the engine: ``memory [B, T_in, E]`` (any float dtype), ``memory_lengths [B]``.

        Returns float32 ``mel [B, n_mel, steps * fps]``, gate ``[B, steps]``, alignments
        ``[B, steps, T_in]`` and ``mel_lengths [B] int32`` with eager decoding's step count
        (``stop_rule`` as ``Decoder.infer``: the attention rule's ops run in the captured steps).
        """
        c = self.config
        max_steps = c.max_decoder_steps if max_decoder_steps is None else int(max_decoder_steps)
        threshold = c.gate_threshold if gate_threshold is None else float(gate_threshold)
        stop_early = (not c.decoder_no_early_stopping) if early_stopping is None else bool(early_stopping)
        p = float(prenet_dropout)
        rule = check_stop_rule(stop_rule)
        bsz, t_in, _ = memory.shape
        buf = self._bucket(bsz, t_in, max_steps, p, threshold, rule)
        limits = ATTENTION_STOP.limits(memory_lengths.to(self.device), max_steps) if rule == "attention" else None
        memory = memory.to(self.device, self.dtype)
        pm = F.linear(memory, self.w.m_w)
        if generator is not None:
            seed = torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)
        else:   # the CPU default generator: a CUDA graph captured by another thread cannot interfere
            seed = torch.randint(0, 2**62, (1,))
        with torch.autocast(self.device.type, enabled=False):
            buf.reset(memory, pm, memory_lengths.to(self.device, torch.int32), seed.to(self.device), limits)
            if self.use_graphs and buf.graph is None:
                self._capture(buf, p, threshold, rule)
                buf.reset(memory, pm, memory_lengths.to(self.device, torch.int32), seed.to(self.device), limits)
            self._run(buf, bsz, max_steps, stop_early, p, threshold, rule)
        lengths = buf.mel_lengths[:bsz].clamp(max=max_steps)
        ends = lengths + 1 if limits is None else torch.minimum(lengths + 1, limits)   # a budget's last step is its own
        n_steps = min(int(ends.max()), max_steps) if stop_early else max_steps
        n_open = int(buf.not_finished[:bsz].sum()) if n_steps == max_steps else 0
        if stop_early and n_open and int(lengths.max()) >= max_steps:
            logger.warning("Tacotron2 engine: reached max_decoder_steps=%d before the stop gate fired "
                           "for %d of %d items", max_steps, n_open, bsz)
        if limits is not None:
            n_budget = int((lengths >= limits).sum())
            if n_budget:
                logger.warning("Tacotron2 engine: %d of %d items reached their step budget (stop rule "
                               "'attention') before the stop gate or the attention ended them", n_budget, bsz)
        frames = buf.mel[:bsz, :n_steps]
        mel = frames.reshape(bsz, -1, self.n_mel).transpose(1, 2).contiguous()
        return DecoderOutput(mel=mel, gate=buf.gate[:bsz, :n_steps].clone(),
                             alignments=buf.align[:bsz, :n_steps, :t_in].clone(),
                             mel_lengths=lengths.to(torch.int32))

    def _run(self, buf: DecoderBuffers, bsz: int, max_steps: int, stop_early: bool, p: float,
             threshold: float, stop_rule: str = "gate") -> None:
        k = self.steps_per_replay
        n_replays = math.ceil(max_steps / k)
        graph = buf.graph if self.use_graphs else None
        if graph is None:
            for _ in range(n_replays):
                self._steps(buf, p, threshold, stop_rule)
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
              generator: torch.Generator | None = None, stop_rule: str | None = None) -> Tacotron2Output:
        """``Tacotron2.infer`` on the engine; same arguments (``ids [B, T_in] int64``, ``lengths [B]``),
        same result type.

        Float tensors of the result are in the engine dtype (mel_postnet included):
        ``mel``/``mel_postnet [B, n_mel, T_out]``, ``gate [B, steps]``, ``alignments [B, steps, T_in]``,
        ``mel_lengths [B] int32``, ``encoder_outputs [B, T_in, E]``.
        """
        self.model._check(ids, lengths, max_decoder_steps, gate_threshold, prenet_dropout, stop_rule)
        with torch.autocast(self.device.type, enabled=False):
            enc = self.encode(ids, lengths)
            dec = self.decode(enc, lengths, max_decoder_steps=max_decoder_steps,
                              gate_threshold=gate_threshold, prenet_dropout=prenet_dropout,
                              early_stopping=early_stopping, generator=generator, stop_rule=stop_rule)
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
        sd = self._slot_sets.get_or_make((rows, t_in, k), lambda: SlotDecoder(self, rows, t_in, k))
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
        # "Offset increment outside graph capture".
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
        """The all-zero go frame ``[B, n_frame]`` float32."""
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
        """``Decoder.infer`` in float32: ``memory [B, T_in, E]`` any float dtype."""
        with torch.autocast(memory.device.type, enabled=False):
            return self.module.infer(memory.float(), memory_lengths, **kw)
