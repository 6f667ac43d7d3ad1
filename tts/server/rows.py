"""Row decoders: the Tacotron2 decoder batch that rows join and leave between steps.

One interface (``RowDecoder``), two implementations:

- ``StepRowDecoder``: the model's eager step API (``Decoder.step``, or the
  engine's ``StepDecoder``), one step per call; rows join with
  ``DecoderState.concat`` and leave with ``DecoderState.select`` (the input
  length narrows when the longest row has left).
- ``SlotRowDecoder``: ``tts.engines.tacotron2.SlotDecoder``, static slots of a
  (rows, input length) bucket, K steps per call (one CUDA-graph replay on the
  GPU, the PyTorch twin on the CPU). The host reads the K frames and gates
  once per replay, so a row may run up to K - 1 steps past its stop gate
  (the caller discards them). The decoder moves to a bigger or smaller
  bucket as rows come and go; live rows move unchanged. On CUDA it decodes
  on a high-priority stream of its own (``thread_context``), so vocoder work
  on the default stream does not queue in front of its replays.

Every row is encoded alone (the encoder's convolutions see padding, so a
row encoded alone gives exactly the single-request result). Rows are named
by keys of the caller's choosing (the scheduler's ``Row`` objects).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

logger = logging.getLogger(__name__)

#: Row decoder kinds of ``make_row_decoder``.
DECODERS = ("auto", "eager", "slots")


@dataclass
class RowStart:
    """A row to join: its key, token ids, gate threshold and stop rule (``tts.models.tacotron2.STOP_RULES``),
    and whether its steps' attention is read back (``RowFrames.align``, for word timings)."""

    key: Hashable
    ids: list[int]
    gate_threshold: float
    stop_rule: str = "gate"
    align: bool = False


@dataclass
class RowFrames:
    """What one ``RowDecoder.step`` made for one row."""

    #: ``[n_mel, n]`` decoder frames (n = the decoder's ``steps_per_call``), float32.
    frames: torch.Tensor
    #: Index in ``frames`` of the first step whose gate fired (the row's threshold) or, under the
    #: ``attention`` stop rule, whose attention ended (``tts.models.tacotron2.StopRule``), or None.
    #: The rule's step budget is the caller's to apply, as ``max_decoder_steps``.
    stop: int | None
    #: ``[n, T_in]`` float32 CPU attention weights of each step over the row's own ids (word timings);
    #: None unless the row joined with ``align``.
    align: torch.Tensor | None = None


class RowDecoder(Protocol):
    """A decoder batch whose rows join and leave between steps."""

    #: Decoder steps each ``step`` advances every row.
    steps_per_call: int

    def __len__(self) -> int:
        """Rows decoding."""

    def join(self, rows: Sequence[RowStart]) -> None:
        """Encodes each row alone and starts it from the go frame."""

    def step(self, prenet_dropout: float) -> dict[Hashable, RowFrames]:
        """Advances every row ``steps_per_call`` steps; new frames and stop flag per key."""

    def leave(self, keys: Sequence[Hashable]) -> None:
        """Drops rows (their state is freed)."""

    def reset(self) -> None:
        """Drops every row (after a failed step)."""

    def thread_context(self) -> contextlib.AbstractContextManager:
        """Entered once by the thread that drives the decoder."""


def _memory(acoustic, ids: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder output ``[1, T, E]`` and lengths ``[1]`` of one row's ids."""
    t = torch.tensor([ids], dtype=torch.long, device=device)
    lengths = torch.tensor([len(ids)], dtype=torch.long, device=device)
    return acoustic.encode(t, lengths), lengths


class StepRowDecoder:
    """Rows in a ``DecoderState``, one ``Decoder.step`` per ``step`` (see module doc).

    The rows' stop tests run on the device as one vector (each row's gate threshold, its stop
    rule's count), and their outcome is read back once per step; the per-row constants are
    tensors made when rows join or leave, not at every step.
    """

    steps_per_call = 1

    def __init__(self, acoustic, device) -> None:
        self.acoustic = acoustic
        self.device = device
        self._keys: list[Hashable] = []
        self._lengths: list[int] = []
        self._thresholds: list[float] = []
        self._attention: list[bool] = []          # stop rule "attention"
        self._align: list[bool] = []              # attention read back (word timings)
        self._steps: torch.Tensor | None = None    # [B] int64: steps made per row
        self._end_count: torch.Tensor | None = None   # [B] int32: the attention rule's count
        self._state = None
        self._prev: torch.Tensor | None = None     # [B, n_mel] the last frames
        self._consts: tuple | None = None          # (thresholds [B] f64, attention [B] bool, last id [B]) or None

    def __len__(self) -> int:
        return len(self._keys)

    def thread_context(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def join(self, rows: Sequence[RowStart]) -> None:
        from tts.models.tacotron2 import DecoderState

        if not rows:
            return
        dec = self.acoustic.decoder
        states, prevs = ([self._state], [self._prev]) if self._state is not None else ([], [])
        counts = [self._end_count] if self._end_count is not None else []
        steps = [self._steps] if self._steps is not None else []
        for r in rows:
            memory, lengths = _memory(self.acoustic, r.ids, self.device)
            st = dec.init_state(memory, lengths)
            states.append(st)
            prevs.append(dec.go_frame(st))
            self._keys.append(r.key)
            self._lengths.append(len(r.ids))
            self._thresholds.append(float(r.gate_threshold))
            self._attention.append(r.stop_rule == "attention")
            self._align.append(bool(r.align))
            counts.append(torch.zeros(1, dtype=torch.int32, device=memory.device))
            steps.append(torch.zeros(1, dtype=torch.int64, device=memory.device))
        self._state = DecoderState.concat(states)
        self._prev = torch.cat(prevs, 0)
        self._end_count = torch.cat(counts, 0)
        self._steps = torch.cat(steps, 0)
        self._consts = None

    def _constants(self) -> tuple:
        if self._consts is None:
            dev = self._end_count.device
            self._consts = (torch.tensor(self._thresholds, dtype=torch.float64, device=dev),
                            torch.tensor(self._attention, dtype=torch.bool, device=dev),
                            torch.tensor([n - 1 for n in self._lengths], dtype=torch.int64, device=dev))
        return self._consts

    def step(self, prenet_dropout: float) -> dict[Hashable, RowFrames]:
        from tts.models.tacotron2 import attention_ended, count_end_frames

        out = self.acoustic.decoder.step(self._state, self._prev, prenet_dropout=prenet_dropout)
        self._prev = out.frame
        self._steps += 1
        thresholds, attention, last = self._constants()
        # sigmoid in float32 as the model gives it, compared with each row's threshold in float64
        stop = torch.sigmoid(out.gate_logit.float()).double() > thresholds
        if any(self._attention):
            count_end_frames(self._end_count, self._state.attention_weights_cum.float(), last)
            stop |= attention_ended(self._end_count, self._steps) & attention
        stop = stop.tolist()                                                            # one read back
        weights = out.attention_weights.float().cpu() if any(self._align) else None     # word timings only
        frames = out.frame.unsqueeze(2)                                                 # [B, n_mel, 1]
        return {k: RowFrames(frames[i], 0 if stop[i] else None,
                             weights[i:i + 1, :self._lengths[i]] if self._align[i] else None)
                for i, k in enumerate(self._keys)}

    def leave(self, keys: Sequence[Hashable]) -> None:
        gone = set(keys)
        keep = [i for i, k in enumerate(self._keys) if k not in gone]
        if len(keep) == len(self._keys):
            return
        if not keep:
            self.reset()
            return
        self._keys = [self._keys[i] for i in keep]
        self._lengths = [self._lengths[i] for i in keep]
        self._thresholds = [self._thresholds[i] for i in keep]
        self._attention = [self._attention[i] for i in keep]
        self._align = [self._align[i] for i in keep]
        index = torch.as_tensor(keep, device=self._end_count.device)
        self._steps = self._steps.index_select(0, index)
        self._end_count = self._end_count.index_select(0, index)
        self._state = self._state.select(keep)
        self._prev = self._prev.index_select(0, torch.as_tensor(keep, device=self._prev.device))
        self._consts = None
        longest = max(self._lengths)
        if longest < self._state.max_input_length:
            self._state = self._state.narrow_inputs(longest)

    def reset(self) -> None:
        self._keys, self._lengths, self._thresholds = [], [], []
        self._attention, self._align, self._steps, self._end_count = [], [], None, None
        self._state, self._prev, self._consts = None, None, None


class SlotRowDecoder:
    """Rows in the slots of a ``SlotDecoder``, K steps per ``step`` (see module doc).

    Args:
        engine: the ``Tacotron2Engine`` whose ``slots`` hand out the decoders.
        acoustic: what encodes the rows (the synthesizer's acoustic module).
        steps_per_replay: K.
    """

    def __init__(self, engine, acoustic, device, steps_per_replay: int, pipeline: bool | None = None) -> None:
        self.engine = engine
        self.acoustic = acoustic
        self.device = device
        self.steps_per_call = int(steps_per_replay)
        #: Whether ``step`` queues the next replay before reading the last (see ``step``); default:
        #: with CUDA graphs (on the CPU a replay runs while it is queued, so there is nothing to overlap).
        self.pipeline = bool(engine.use_graphs) if pipeline is None else bool(pipeline)
        self.sd = None                                   # the SlotDecoder in use (kept while idle)
        self._slot: dict[Hashable, int] = {}
        self._length: dict[Hashable, int] = {}
        self._align: dict[Hashable, bool] = {}
        # the launch queued ahead (pipeline) and the row keys of its slots
        self._ahead: tuple | None = None

    def __len__(self) -> int:
        return len(self._slot)

    def thread_context(self) -> contextlib.AbstractContextManager:
        dev = torch.device(self.device)
        if dev.type != "cuda":
            return contextlib.nullcontext()
        # the decoder's replays are short and latency-bound: a high-priority stream of their own
        return torch.cuda.stream(torch.cuda.Stream(dev, priority=-1))

    def _fit(self, n: int, longest: int) -> None:
        """Moves to the bucket of ``n`` rows of ``longest`` inputs (grow or shrink), live rows first."""
        from tts.engines.tacotron2 import slot_buckets

        if n == 0:
            return                                       # keep the decoder (all slots free) for the next rows
        want = slot_buckets(n, longest)
        if self.sd is None:
            self.sd = self.engine.slots(*want, steps_per_replay=self.steps_per_call)
            return
        if want == (self.sd.rows, self.sd.t_in):
            return
        keys = list(self._slot)
        self.sd = self.sd.resized(*want, keep=[self._slot[k] for k in keys])
        self._slot = {k: j for j, k in enumerate(keys)}

    def join(self, rows: Sequence[RowStart]) -> None:
        if not rows:
            return
        self._fit(len(self._slot) + len(rows), max([len(r.ids) for r in rows] + list(self._length.values())))
        for r, slot in zip(rows, self.sd.free_slots()):
            memory, _ = _memory(self.acoustic, r.ids, self.device)
            self.sd.join(slot, memory, len(r.ids), gate_threshold=r.gate_threshold, stop_rule=r.stop_rule,
                         align=r.align)
            self._slot[r.key] = slot
            self._length[r.key] = len(r.ids)
            self._align[r.key] = bool(r.align)

    def _launch(self, prenet_dropout: float) -> tuple:
        return self.sd.launch(prenet_dropout), dict(self._slot), dict(self._length), dict(self._align)

    def step(self, prenet_dropout: float) -> dict[Hashable, RowFrames]:
        """K steps of every row. Pipelined: the replay after this one is queued before this one is
        read, so the GPU decodes while the host reads frames, ends rows and admits new ones. The
        result is then the replay launched at the last call (the rows that were in it; a row that
        joined since comes with the next call), and a row that ends in it has decoded K more steps
        on the device that nobody reads."""
        if not self.pipeline:
            rec = self._launch(prenet_dropout)
        else:
            rec = self._ahead if self._ahead is not None else self._launch(prenet_dropout)
            self._ahead = self._launch(prenet_dropout)
        launch, slots, lengths, aligns = rec
        out = launch.decoder.collect(launch)
        frames = out.frames.transpose(1, 2).contiguous()     # [rows, n_mel, K]: one copy for every row
        return {k: RowFrames(frames[s], out.stop[s], out.align[s, :, :lengths[k]] if aligns[k] else None)
                for k, s in slots.items()}

    def _drop_ahead(self) -> None:
        """Forgets the launch queued ahead (its rows are gone). Not waited for: a later launch's
        copies into the same host buffers come after its own in stream order."""
        self._ahead = None

    def leave(self, keys: Sequence[Hashable]) -> None:
        for k in keys:
            if k in self._slot:
                self.sd.leave(self._slot.pop(k))
                del self._length[k], self._align[k]
        if not self._slot:
            self._drop_ahead()
        self._fit(len(self._slot), max(self._length.values(), default=1))

    def reset(self) -> None:
        self._drop_ahead()
        if self.sd is not None:
            self.sd.reset()
        self._slot.clear()
        self._length.clear()
        self._align.clear()

    def warmup(self, max_rows: int, input_lengths: Sequence[int], prenet_dropout: float) -> int:
        """Captures the graphs of every rows bucket up to ``max_rows`` and the input-length buckets
        of ``input_lengths``; returns how many. Only while no row decodes; a no-op without graphs."""
        from tts.engines.tacotron2 import slot_buckets

        if self._slot or not self.engine.use_graphs:
            return 0
        top, _ = slot_buckets(max_rows, 1)
        n = 0
        for t in sorted({slot_buckets(1, x)[1] for x in input_lengths}):
            rows = 1
            while rows <= top:
                self.engine.slots(rows, t, steps_per_replay=self.steps_per_call).capture(prenet_dropout)
                rows, n = rows * 2, n + 1
        self.sd = None
        return n


def make_row_decoder(acoustic, device, decoder: str = "auto", steps_per_replay: int = 16,
                     pipeline: bool | None = None) -> RowDecoder:
    """The row decoder for a synthesizer's acoustic module.

    ``"slots"``: the slot decoder (on an eager module: the engine's PyTorch twin in float32 on its
    device); ``"eager"``: the step API; ``"auto"``: slots where ``acoustic`` is the fast engine on
    CUDA, else eager. ``pipeline``: the slot decoder's (``SlotRowDecoder.pipeline``; None: with CUDA graphs).
    """
    from tts.engines.tacotron2 import Tacotron2Engine

    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    if steps_per_replay < 1:
        raise ValueError(f"steps_per_replay must be >= 1, got {steps_per_replay}")
    fast = isinstance(acoustic, Tacotron2Engine) and acoustic.device.type == "cuda"
    if decoder == "eager" or (decoder == "auto" and not fast):
        return StepRowDecoder(acoustic, device)
    engine = acoustic
    if not isinstance(acoustic, Tacotron2Engine):
        dev = torch.device(device)
        engine = Tacotron2Engine(acoustic, device=dev, precision="fp32",
                                 backend="auto" if dev.type == "cuda" else "torch")
    return SlotRowDecoder(engine, acoustic, device, steps_per_replay, pipeline)
