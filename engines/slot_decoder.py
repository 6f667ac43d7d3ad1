"""Tacotron2 engine, slot decoder: continuous batching on static decoder slots.

``Tacotron2Engine.slots(rows, input_len)`` hands out a ``SlotDecoder``: ``rows`` decoder
slots in static buffers (``DecoderBuffers``), advanced K steps per CUDA-graph replay. Rows
(utterances) join free slots and leave between replays; the scheduler of the server drives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from tts.engines._device import on_device
from tts.engines._graphs import capture
from tts.engines.tacotron2_step import DecoderBuffers
from tts.models.tacotron2 import ATTENTION_STOP, check_stop_rule

__all__ = ["SlotDecoder", "SlotLaunch", "SlotOutput", "slot_buckets", "SLOT_MIN_INPUT"]

#: Smallest input-length bucket of a SlotDecoder (its buckets are powers of two from here).
SLOT_MIN_INPUT = 32


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
    stop: list[int | None]         #: per slot: first step of the replay whose gate fired (its threshold), or
    #: where its stop rule is ``attention``, whose attention ended (``tts.models.tacotron2.StopRule``), or None
    #: [rows, K, t_in] float32, CPU: each step's attention weights (word timings); None when no active
    #: slot joined with ``align`` (then it is not copied from the device)
    align: Tensor | None = None


@dataclass(eq=False)
class SlotLaunch:
    """One ``SlotDecoder.launch``: the replay queued, where its outputs land on the host, and the
    host-side slot settings it ran with (``collect`` reads them)."""

    decoder: SlotDecoder
    active: list[bool]                 #: per slot: active at the launch (its outputs are a row's)
    steps: list[int]                   #: per slot: steps made before this replay
    threshold: list[float]
    stop_rule: list[str]
    want_align: bool
    event: torch.cuda.Event | None = None      #: recorded after the copies (CUDA)
    host: tuple | None = None                  #: (frames, gate, align, ends) on the host; None once collected


# per-slot decoder state (rows on dim 0; ah/dh: ping-pong pairs, rows on dim 1)
_SLOT_ROW_STATE = ("frame", "ac", "dc", "ctx", "end_count")
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
    decoder of another (rows, input length) bucket. ``run`` is ``launch`` (queue the
    replay and its copies to the host) then ``collect`` (wait, read): a caller that
    queues the next launch before collecting the last keeps the GPU decoding while
    it reads (``tts.server.rows.SlotRowDecoder`` does, on CUDA).

    Each slot's attention is masked to its own input length and every kernel
    works row by row, so a row gets the frames it would get decoding alone,
    whenever it joins (up to float rounding; at ``prenet_dropout=0``).

    Host-side per slot: ``active``, ``steps`` (decoder steps made since joining),
    ``threshold`` (gate threshold: ``SlotOutput.stop`` is the first step with
    ``sigmoid(gate) > threshold``), ``stop_rule`` (``attention``: ``stop`` is also the first
    step whose attention ended, from the per-step counts of steps at the last symbol that the
    replay records; the rule's step budget is the caller's, as ``max_decoder_steps``). Frames after a row's stop step are made and
    ignored (at most K - 1 steps of wasted work). Dropout (``run(prenet_dropout=p)``)
    draws its masks on the device from a seed and a step counter of the decoder
    (one p per replay; a graph per (p, parity)).
    """

    def __init__(self, engine: Any, rows: int, t_in: int, steps_per_replay: int) -> None:
        # engine: the tts.engines.tacotron2.Tacotron2Engine that makes this decoder (not imported
        # here: that module imports this one)
        if steps_per_replay < 1:
            raise ValueError(f"steps_per_replay must be >= 1, got {steps_per_replay}")
        c = engine.config
        self.engine = engine
        self.rows, self.t_in, self.steps_per_replay = int(rows), int(t_in), int(steps_per_replay)
        dev = engine.device
        self.buf = DecoderBuffers(self.rows, self.t_in, self.steps_per_replay, n_frame=engine.n_frame,
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
        self.stop_rule = ["gate"] * self.rows
        self.align = [False] * self.rows                 # per slot: its attention is read back
        self._par = 0
        self._graphs: dict[tuple[float, int], torch.cuda.CUDAGraph] = {}
        # two sets of pinned host buffers (CUDA): a launch copies into one while the other is read
        self._host: list[tuple[Tensor, Tensor, Tensor, Tensor]] | None = None
        self._next_host = 0
        if dev.type == "cuda":
            self._host = [(torch.zeros(tuple(b.mel.shape), pin_memory=True),
                           torch.zeros(tuple(b.gate.shape), pin_memory=True),
                           torch.zeros(tuple(b.align.shape), pin_memory=True),
                           torch.zeros(tuple(b.end_rec.shape), dtype=torch.int32, pin_memory=True))
                          for _ in range(2)]

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
    def join(self, slot: int, memory: Tensor, length: int, *, gate_threshold: float | None = None,
             stop_rule: str | None = None, align: bool = False) -> None:
        """Starts a row in free ``slot``: ``memory [T, E]`` (or ``[1, T, E]``) encoder output, any
        float dtype, ``length`` valid positions (1..T, T <= ``t_in``), its gate threshold and stop
        rule (None: the config's threshold, ``gate``), and whether ``run`` reads its attention back
        (``SlotOutput.align``, for word timings). Outside the graph, between replays."""
        rule = check_stop_rule(stop_rule)
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
        self.stop_rule[slot] = rule
        self.align[slot] = bool(align)

    @on_device
    def leave(self, slot: int) -> None:
        """Frees ``slot`` (its row's frames after this are never read)."""
        self.active[slot] = False

    # ------------------------------------------------------------------ decoding
    def _steps(self, p: float) -> None:
        eng, b = self.engine, self.buf
        b.par0 = self._par
        threshold = float(eng.config.gate_threshold)   # the kernels' stop flags are not used here
        for i in range(self.steps_per_replay):
            eng._step(b, i, p, threshold, "count")      # counts for rows of stop rule "attention"
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
            # two warm-up replays' worth of steps (compile kernels, warm the allocator); the
            # capture stream keeps the caller's priority, so the scheduler's replays keep it too
            priority = torch.cuda.current_stream(dev).priority
            graph, _ = capture(lambda: self._steps(p), dev, pool=eng._slot_pool, warmup=2, priority=priority)
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
        every slot on the host and each active slot's first stop step (and the attention weights when
        an active slot joined with ``align``). Active slots' ``steps`` += K. ``collect(launch(p))``."""
        return self.collect(self.launch(prenet_dropout))

    @on_device
    @torch.inference_mode()
    def launch(self, prenet_dropout: float = 0.0) -> SlotLaunch:
        """Queues one replay of K steps for every slot and the copies of its outputs to the host, and
        returns without waiting (on CUDA; on the CPU the steps run here). ``collect`` waits for it.

        The slots taking part are the active ones now: a slot that joins after this takes part from
        the next launch, and a row that leaves after it still has this replay's frames in its
        ``SlotOutput`` (for the caller to drop). Active slots' ``steps`` += K now. At most two launches
        may be uncollected at once (two host buffers on CUDA): launch, launch, collect the first,
        launch, collect the second, ... keeps the GPU busy while the host reads the last replay."""
        eng, b = self.engine, self.buf
        p = float(prenet_dropout)
        k = self.steps_per_replay
        active = list(self.active)
        want_align = any(a and w for a, w in zip(active, self.align))
        rec = SlotLaunch(decoder=self, active=active, steps=list(self.steps), threshold=list(self.threshold),
                         stop_rule=list(self.stop_rule), want_align=want_align)
        with torch.autocast(eng.device.type, enabled=False):
            if eng.use_graphs:
                graph = self._graphs.get((p, self._par)) or self._capture(p, self._par)
                graph.replay()
            else:
                self._steps(p)
            if self._host is not None:
                host = self._host[self._next_host]
                self._next_host ^= 1
                hm, hg, ha, he = host
                hm.copy_(b.mel, non_blocking=True)
                hg.copy_(b.gate, non_blocking=True)
                if want_align:
                    ha.copy_(b.align, non_blocking=True)
                he.copy_(b.end_rec, non_blocking=True)
                rec.event = torch.cuda.Event()
                rec.event.record(torch.cuda.current_stream(eng.device))
                rec.host = host
            else:
                rec.host = (b.mel.to("cpu", copy=True), b.gate.to("cpu", copy=True),
                            b.align.to("cpu", torch.float32, copy=True) if want_align else None,
                            b.end_rec.to("cpu", copy=True))
        self._par = (self._par + k) % 2
        for s, a in enumerate(active):
            if a:
                self.steps[s] += k
        return rec

    def collect(self, rec: SlotLaunch) -> SlotOutput:
        """Waits for ``rec`` (a ``launch`` of this decoder) and returns its ``SlotOutput``: stop steps
        from the slots' thresholds, rules and step counts as they were at its launch."""
        if rec.decoder is not self:
            raise ValueError("collect: a launch of another SlotDecoder")
        if rec.host is None:
            raise ValueError("collect: this launch was collected already")
        hm, hg, ha, he = rec.host
        rec.host = None
        align = None
        if rec.event is not None:
            rec.event.synchronize()
            frames, gate, ends = hm.clone(), hg.clone(), he.clone()
            if rec.want_align:
                align = ha.clone()
        else:
            frames, gate, ends = hm, hg, he
            if rec.want_align:
                align = ha
        stop = self._stops(gate, ends, rec)
        return SlotOutput(frames=frames, gate=gate, stop=stop, align=align)

    def _stops(self, gate: Tensor, ends: Tensor, rec: SlotLaunch) -> list[int | None]:
        """Each slot active at ``rec``'s launch: its first step of that replay whose gate fired (its
        threshold) or, under the ``attention`` rule, whose attention ended
        (``tts.models.tacotron2.attention_ended``); None if none. On the host, once per replay, in
        numpy: a few microseconds for every slot together."""
        k = self.steps_per_replay
        fired = torch.sigmoid(gate).numpy() > np.asarray(rec.threshold, dtype=np.float32)[:, None]   # [rows, K]
        if "attention" in rec.stop_rule:
            made = np.asarray(rec.steps, dtype=np.int64)[:, None] + np.arange(1, k + 1)               # [rows, K]
            ended = (ends.numpy() >= ATTENTION_STOP.end_frames) & (made >= ATTENTION_STOP.min_steps)
            ended &= np.asarray([r == "attention" for r in rec.stop_rule])[:, None]
            fired |= ended
        hit, first = fired.any(1).tolist(), fired.argmax(1).tolist()
        return [f if a and h else None for a, h, f in zip(rec.active, hit, first)]

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
            host = ([self.steps[s] for s in keep], [self.threshold[s] for s in keep],
                    [self.stop_rule[s] for s in keep], [self.align[s] for s in keep])
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
            new.stop_rule[j] = host[2][j]
            new.align[j] = host[3][j]
        return new
