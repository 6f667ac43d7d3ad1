"""The units of work of the Tacotron2 scheduler: a call and its rows.

A ``Call`` is one unary or streaming synthesis. Its text is cut into pieces
(at most ``Synthesizer.max_piece_chars`` characters each); each piece
decodes as one ``Row`` of the decoder batch. The decode thread and the
vocoder thread update a call; the event loop that made it only awaits it:
every result, error and streaming event reaches that loop through
``call_soon_threadsafe`` (``Call.post``, ``Call.fail``, ``Call.resolve``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tts.options import SynthesisOptions
from tts.server.errors import DeadlineExpiredError
from tts.streaming import HOP


@dataclass(eq=False)
class Call:
    """One synthesis call inside the scheduler."""

    #: Arrival order (per scheduler).
    seq: int
    text: str
    #: The call's options merged over the voice defaults (no ``None``).
    opts: SynthesisOptions
    #: Token ids per piece, in order.
    pieces: list[list[int]]
    #: Cleaned text per piece.
    cleaned: list[str]
    loop: asyncio.AbstractEventLoop
    #: ``clock()`` value after which the call fails with ``DeadlineExpiredError``, or None.
    deadline: float | None
    streaming: bool
    #: Streaming events ``(kind, piece, payload)``: ``("frames", i, mel [n_mel, k])``,
    #: ``("end", i, (its last frames [n_mel, k] or None, audio_frames, (attention [frames, T_in] or None,
    #: loud frames) or None without word timings))``, ``("error", -1, exc)``.
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    #: Unary completion (a ``ScheduledOutcome``), None for streaming.
    done: asyncio.Future | None = None
    dropped: str = ""
    text_seconds: float = 0.0
    #: Scheduler step counter and monotonic time at arrival and when its first row joined.
    arrival_step: int = 0
    enqueued: float = field(default_factory=time.monotonic)
    join_step: int | None = None
    started: float | None = None
    started_perf: float | None = None
    acoustic_done: float = 0.0
    #: Pieces not decoding yet, lowest first (an evicted piece comes back here).
    todo: deque = field(default_factory=deque)
    #: Set once every piece has joined the batch at least once (the queue bound counts calls without it).
    admitted: bool = False
    decoded: int = 0
    max_batch: int = 0
    hit_max: int = 0
    cancelled: bool = False
    failed: bool = False
    #: Unary: piece -> (decoder mel [n_mel, T], audio frames) waiting for the vocoder.
    mels: dict = field(default_factory=dict)
    #: Unary: piece -> (audio float32 CPU [256 * audio_frames], post-net mel float32 CPU [n_mel, T]).
    audio: dict = field(default_factory=dict)
    #: Vocoder jobs run for this call (the vocoder stage serves the call with the fewest first).
    voc_jobs: int = 0
    #: Seconds in postnet, vocoder, denoiser (summed over its vocoder calls).
    voc_seconds: list = field(default_factory=lambda: [0.0, 0.0, 0.0])
    #: Seeded calls: the generator every vocoder call of this call draws from, pieces in order.
    generator: torch.Generator | None = None
    #: Text per piece (as planned) and the normalizer it was read with: for word timings.
    piece_texts: list = field(default_factory=list)
    text_normalizer: str = "dle"
    #: The call asked for word timings: only then do its rows keep their attention (the decoder
    #: reads it back from the device) and are its words computed.
    word_timings: bool = False
    #: Streaming: decoder frames a row needs before its first audio chunk can be made, and frames per
    #: later chunk (``tts.streaming.MelStreamer``'s thresholds); a row's frames are delivered as they
    #: complete a chunk. 0: every ``deliver_every`` steps.
    chunk_first: int = 0
    chunk_every: int = 0
    #: Unary, with word timings: piece -> (attention weights ``[frames, T_in]`` of its spoken frames or
    #: None, loud frames ``[frames]`` bool): what its word timings are read from.
    aligns: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.todo.extend(range(len(self.pieces)))

    @property
    def prenet_dropout(self) -> float:
        return float(self.opts.prenet_dropout)

    def alive(self, now: float) -> bool:
        """False once cancelled or failed; a passed deadline fails the call here (once)."""
        if self.cancelled or self.failed:
            return False
        if self.deadline is not None and now >= self.deadline:
            self.fail(DeadlineExpiredError("deadline passed during synthesis"))
            return False
        return True

    # -------------------------------------------------------- to the event loop
    def later(self, fn, *args) -> None:
        """Runs ``fn(*args)`` on the call's event loop (from any thread)."""
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:   # the caller's loop is closed: nobody waits for this call any more
            self.cancelled = True

    def post(self, event: tuple) -> None:
        """Streaming: hands ``event`` to the call's coroutine."""
        self.later(self.events.put_nowait, event)

    def fail(self, exc: BaseException) -> None:
        """Ends the call with ``exc`` (the first failure wins)."""
        if self.failed:
            return
        self.failed = True
        if self.streaming:
            self.post(("error", -1, exc))
        else:
            self.later(settle, self.done, None, exc)

    def resolve(self, outcome: object) -> None:
        self.later(settle, self.done, outcome, None)


@dataclass(eq=False)
class Row:
    """One piece of a call, decoding."""

    call: Call
    piece: int
    #: Most decoder steps the row may make (``tts.models.tacotron2.step_limit`` of its options and ids).
    most: int = 0
    #: Decoder frames so far, chunks ``[n_mel, n]`` in order.
    frames: list = field(default_factory=list)
    #: Their attention weights, chunks ``[n, T_in]`` (CPU), when the decoder gives them.
    align: list = field(default_factory=list)
    steps: int = 0
    #: Streaming: steps already delivered and chunks already sent.
    sent: int = 0
    sent_chunks: int = 0

    def next_delivery(self, deliver_every: int) -> int:
        """Streaming: the step count at which the row's frames go to its call next: when they complete
        the stream's next audio chunk (``Call.chunk_first``, ``chunk_every``), but at least
        ``deliver_every`` steps after the last delivery."""
        c = self.call
        floor = self.sent + deliver_every
        if not c.chunk_first:
            return floor
        if self.sent < c.chunk_first:
            return max(floor, c.chunk_first)
        k = (self.sent - c.chunk_first) // c.chunk_every + 1
        return max(floor, c.chunk_first + k * c.chunk_every)

    @property
    def ids(self) -> list[int]:
        return self.call.pieces[self.piece]

    def spoken(self, audio_frames: int) -> tuple:
        """What the row's word timings are read from: (attention weights ``[audio_frames, T_in]`` or None
        when the decoder gave none, loud frames ``[audio_frames]`` of its decoder mel)."""
        from tts.timings import voiced_frames

        mel = torch.cat(self.frames, dim=1)[:, :audio_frames]
        if not self.align or sum(a.shape[0] for a in self.align) < audio_frames:
            return None, voiced_frames(mel)
        return torch.cat(self.align, dim=0)[:audio_frames], voiced_frames(mel)


def later_all(items: list[tuple[Call, Callable[..., object], tuple]]) -> None:
    """``call.later(fn, *args)`` for each (call, fn, args), in order, those of one event loop in one
    callback: the coroutines they wake run in the same turn of their loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Call, Callable[..., object], tuple]]] = {}
    for item in items:
        by_loop.setdefault(item[0].loop, []).append(item)
    for loop, group in by_loop.items():
        try:
            loop.call_soon_threadsafe(_run_all, group)
        except RuntimeError:   # the loop is closed: nobody waits for these calls any more
            for call, _, _ in group:
                call.cancelled = True


def _run_all(group: list[tuple[Call, Callable[..., object], tuple]]) -> None:
    for _, fn, args in group:
        fn(*args)


def post_all(events: list[tuple[Call, tuple]]) -> None:
    """Streaming: ``Call.post`` of each (call, event), the events of one event loop in one callback."""
    later_all([(call, call.events.put_nowait, (event,)) for call, event in events])


def settle(fut: asyncio.Future | None, result: object, exc: BaseException | None) -> None:
    """Sets ``fut``'s result or exception (``CancelledError`` cancels it); no-op once it is done."""
    if fut is None or fut.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        fut.cancel()
    elif exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def piece_words(timer, call: Call, piece: int, audio_frames: int, spoken: tuple | None) -> list:
    """The word timings of ``call``'s ``piece`` (the next one of ``timer``, a ``tts.timings.WordTimer``),
    from ``spoken``: ``Row.spoken`` of its row."""
    from tts.timings import attention_path, token_bounds_from_attention

    ids = call.pieces[piece]
    align, voiced = spoken if spoken is not None else (None, None)
    bounds = None if align is None else token_bounds_from_attention(attention_path(align), len(ids), audio_frames)
    return timer.add(call.piece_texts[piece], ids, bounds, HOP * audio_frames, voiced)
