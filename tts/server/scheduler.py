"""Continuous batching for Tacotron2: calls' rows join and leave the running decoder batch between steps.

One ``TacotronScheduler`` per (voice, device). A call's text is cut into
pieces; each piece decodes as one row (``tts.server.work``). The decode
thread owns the batch (a ``tts.server.rows.RowDecoder``: the eager step
API, or the slot decoder with K steps per CUDA-graph replay) and loops:

1. take new calls from the inbox (blocking only when nothing decodes or
   waits: it waits on the queue, never sleep-polls);
2. drop the rows and waiting pieces of calls that were cancelled or whose
   deadline passed, so they stop costing compute at the next step;
3. start rows as ``tts.server.admission`` plans: round robin over calls,
   a few rows per call while others wait, streams first among equals;
4. one ``RowDecoder.step`` for the whole batch;
5. rows whose stop gate fired (or, under the ``attention`` stop rule, whose
   attention ended; or that reached their ``max_decoder_steps`` or step budget)
   leave; a unary row's frames go to the vocoder stage
   (``tts.server.vocoding``), a streaming row's frames go to its call
   as they complete its stream's next audio chunk (so every delivery makes
   audio, and the first leaves as soon as it can) and are vocoded in
   overlapping chunks (``tts.streaming.MelStreamer``) on the same stage.
   A step's streaming events reach their event loop in one callback, so
   the vocoder jobs they make are queued in one turn of the loop and the
   stage vocodes their equal-shape windows (the first chunks of streams
   that started together) in one call.

So a short call that arrives while a long one decodes joins at the next
step and leaves as soon as it is done, and a long text cannot take every
row. The inbox is bounded: ``max_queue`` calls accepted and not yet fully
admitted; one more gets ``QueueFullError``.

Each row keeps its own gate threshold and step limit. Rows only share a
step with rows of the same ``prenet_dropout`` (one dropout probability per
step). The engine sends calls that ask for a ``seed`` with
``prenet_dropout > 0`` to the dynamic batcher instead, because dropout
masks drawn for a shared batch would depend on the other rows.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from tts.models.tacotron2 import step_limit
from tts.options import SynthesisOptions
from tts.server.admission import AdmissionPolicy, plan_admission
from tts.server.errors import QueueFullError, ShuttingDownError
from tts.server.rows import RowStart, SlotRowDecoder, make_row_decoder
from tts.server.types import ScheduledOutcome, StreamPiece
from tts.server.vocoding import VocoderStage
from tts.server.work import Call, Row, piece_words, post_all
from tts.streaming import POSTNET_CONTEXT, MelStreamer, StreamConfig, make_vocode

__all__ = ["ScheduledOutcome", "TacotronScheduler", "WARM_INPUT_LENGTHS"]

logger = logging.getLogger(__name__)

_STOP = object()
#: Input-length buckets whose slot-decoder graphs ``warmup`` captures (longer inputs capture on first use).
WARM_INPUT_LENGTHS = (32, 64, 128)


@dataclass(eq=False)
class _Task:
    """Work run on the decode thread between steps (``TacotronScheduler.run_on_decode_thread``)."""

    fn: Callable[[], None]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class TacotronScheduler:
    """Continuous batching of one Tacotron2 ``Synthesizer`` (see module doc).

    Args:
        synth: a ``tts.synthesizer.Synthesizer`` whose voice is Tacotron2.
        max_rows: most rows decoding at once (default: the synthesizer's ``max_batch``).
        max_queue: most calls accepted and not yet fully admitted; one more gets ``QueueFullError``.
        rows_per_call: rows one call holds while others wait (default: a quarter of ``max_rows``).
        deliver_every: streaming rows get their new frames when these complete an audio chunk, and at
            least this many steps after their last delivery.
        decoder: ``"slots"``, ``"eager"`` or ``"auto"`` (``tts.server.rows.make_row_decoder``).
        steps_per_replay: decoder steps per slot-decoder replay (K).
        pipeline: whether the slot decoder queues its next replay before reading the last
            (``tts.server.rows.SlotRowDecoder.step``; None: with CUDA graphs).
        vocoder_batch: most unary pieces, or streaming windows, in one batched vocoder call.
        vocoder_frames: unary pieces longer than this are vocoded in chunks of it, one per vocoder job.
        clock: the clock deadlines are compared with (``time.monotonic``).
    """

    def __init__(self, synth, *, max_rows: int | None = None, max_queue: int = 256, rows_per_call: int | None = None,
                 deliver_every: int = 4, metrics=None, decoder: str = "auto", steps_per_replay: int = 16,
                 pipeline: bool | None = None, vocoder_batch: int = 16, vocoder_frames: int = 2048,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.synth = synth
        self.acoustic = synth.acoustic_module
        if int(self.acoustic.config.n_frames_per_step) != 1:
            raise ValueError("continuous batching supports n_frames_per_step = 1 only")
        if max_queue < 1 or deliver_every < 1:
            raise ValueError("max_queue and deliver_every must be >= 1")
        self.device = synth.device
        self.policy = AdmissionPolicy.default(int(max_rows or getattr(synth, "max_batch", 8)), rows_per_call)
        self.max_queue = int(max_queue)
        self.deliver_every = int(deliver_every)
        self.metrics = metrics
        self.clock = clock
        self.decoder = make_row_decoder(self.acoustic, self.device, decoder, steps_per_replay, pipeline)
        self.steps_per_replay = int(steps_per_replay)
        self.vocoder_stage = VocoderStage(synth, max_batch=vocoder_batch, max_frames=vocoder_frames, clock=clock)
        self._inbox: queue.Queue = queue.Queue()
        self._waiting: list[Call] = []        # live calls with pieces not decoding, in arrival order
        self._rows: list[Row] = []
        self._p: float | None = None          # the batch's prenet dropout
        self._lock = threading.Lock()
        self._unadmitted = 0                  # calls accepted and not yet fully admitted
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: Decoder steps (replays for the slot decoder) taken so far.
        self.steps_done = 0
        #: Rows in the batch per step, the latest 1024 (tests and metrics read it).
        self.step_sizes: deque[int] = deque(maxlen=1024)
        #: Called on the decode thread after each step with its index and the rows that took it.
        self.on_step: Callable[[int, list[Row]], None] | None = None

    @property
    def max_rows(self) -> int:
        return self.policy.max_rows

    @property
    def use_slots(self) -> bool:
        """Whether rows decode in a ``SlotDecoder`` (else the eager step API)."""
        return isinstance(self.decoder, SlotRowDecoder)

    @property
    def vocoder_batch_sizes(self) -> deque[int]:
        """Pieces per unary vocoder call, the latest 1024."""
        return self.vocoder_stage.batch_sizes

    @property
    def load(self) -> int:
        return len(self._rows) + sum(len(c.todo) for c in list(self._waiting)) + self._inbox.qsize()

    @property
    def queue_depth(self) -> int:
        return self._unadmitted

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is None:
            self.vocoder_stage.start()
            self._thread = threading.Thread(target=self._run, name="t2-scheduler", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stops after the calls in flight finish; blocks until the threads end."""
        self._closed = True
        if self._thread is not None:
            self._inbox.put(_STOP)
            self._thread.join()
            self._thread = None
        self.vocoder_stage.close()

    def warmup(self, input_lengths: tuple[int, ...] = WARM_INPUT_LENGTHS,
               stream: StreamConfig | None = None) -> None:
        """Captures the slot decoder's graphs (every rows bucket up to ``max_rows``, the input-length
        buckets of ``input_lengths``, the voice's default prenet dropout) on the decode thread, and,
        with ``stream`` (the server's chunking), the vocoder's graphs of that stream's steady windows
        at the voice's default sigma and denoiser (``VocoderStage.warm_streaming``), so no call
        waits for a capture. Blocking; a no-op without graphs, or while rows decode."""
        defaults = SynthesisOptions().merged_over(self.synth.voice.defaults)
        if stream is not None:
            t0 = time.perf_counter()
            done = self.vocoder_stage.warm_streaming(
                stream, self._postnet, sigma=defaults.sigma, denoiser_strength=defaults.denoiser_strength,
                n_mel=int(self.acoustic.config.n_mel_channels))
            if done:
                logger.info("vocoder: %d streaming window graphs (shapes %s) captured in %.2fs", len(done),
                            sorted({shape for shape, _ in done}), time.perf_counter() - t0)
        if not self.use_slots or not self.decoder.engine.use_graphs:
            return
        p = float(defaults.prenet_dropout)

        def work() -> None:
            t0 = time.perf_counter()
            n = self.decoder.warmup(self.max_rows, input_lengths, p)
            logger.info("slot decoder: %d graphs (K=%d, prenet_dropout=%g) captured in %.2fs", n,
                        self.steps_per_replay, p, time.perf_counter() - t0)

        self.run_on_decode_thread(work)

    def run_on_decode_thread(self, fn: Callable[[], None]) -> None:
        """Runs ``fn()`` on the decode thread between steps and waits for it (re-raises its error)."""
        if self._thread is None:
            raise RuntimeError("the scheduler is not started")
        task = _Task(fn)
        self._inbox.put(task)
        task.done.wait()
        if task.error is not None:
            raise task.error

    # ----------------------------------------------------------------- API
    def _submit(self, text, options: SynthesisOptions, deadline: float | None, streaming: bool,
                word_timings: bool, chunks: StreamConfig | None = None) -> Call:
        if self._closed:
            raise ShuttingDownError("server is shutting down")
        with self._lock:
            if self._unadmitted >= self.max_queue:
                raise QueueFullError(f"request queue is full ({self.max_queue} waiting); retry later")
            self._unadmitted += 1
        try:
            t0 = time.perf_counter()
            plan = self.synth.plan(text, options) if isinstance(text, str) else text
            loop = asyncio.get_running_loop()
            opts = options.merged_over(self.synth.voice.defaults)
            call = Call(seq=next(self._seq), text=plan.text, opts=opts, pieces=[list(ids) for _, ids in plan.pieces],
                        cleaned=list(plan.cleaned), loop=loop, deadline=deadline, streaming=streaming,
                        done=None if streaming else loop.create_future(), dropped=plan.dropped,
                        arrival_step=self.steps_done, piece_texts=[t for t, _ in plan.pieces],
                        text_normalizer=plan.text_normalizer, word_timings=bool(word_timings))
            if chunks is not None:       # MelStreamer's thresholds with the postnet's context
                call.chunk_first = chunks.first_chunk_frames + chunks.overlap_frames + POSTNET_CONTEXT
                call.chunk_every = chunks.chunk_frames
            if opts.seed is not None:
                call.generator = torch.Generator(device=self.device).manual_seed(opts.seed)
            call.text_seconds = time.perf_counter() - t0
        except BaseException:
            self._admitted_one()
            raise
        self._inbox.put(call)
        return call

    def _admitted_one(self) -> None:
        with self._lock:
            self._unadmitted -= 1

    async def synthesize(self, text, options: SynthesisOptions, *, deadline: float | None = None,
                         word_timings: bool = False) -> ScheduledOutcome:
        """Whole utterance (unary) of ``text``: a ``str`` or its ``tts.synthesizer.TextPlan``
        (``Synthesizer.plan``); with its words' times when ``word_timings``. Cancelling the caller
        removes its rows between steps."""
        call = self._submit(text, options, deadline, streaming=False, word_timings=word_timings)
        try:
            return await call.done
        finally:
            call.cancelled = True   # no-op when finished; frees the rows of a cancelled call

    async def stream(self, text, options: SynthesisOptions, *, deadline: float | None = None,
                     chunk_frames: int = 32, overlap_frames: int = 8, first_chunk_frames: int = 8,
                     word_timings: bool = False) -> AsyncIterator[StreamPiece]:
        """Yields ``StreamPiece``s of ``text`` (``str`` or ``TextPlan``) as frames are decoded and vocoded;
        with ``word_timings``, a piece's words come with its last chunk."""
        cfg = StreamConfig(chunk_frames=chunk_frames, overlap_frames=overlap_frames,
                           first_chunk_frames=first_chunk_frames)
        call = self._submit(text, options, deadline, streaming=True, word_timings=word_timings, chunks=cfg)
        o = call.opts
        vocode = make_vocode(self.vocoder_stage.vocoder, self.vocoder_stage.denoiser, sigma=o.sigma,
                             denoiser_strength=o.denoiser_strength, generator=call.generator,
                             dtype=self.vocoder_stage.dtype)
        streamers: dict[int, MelStreamer] = {}
        buffered: dict[int, deque] = {}
        current = 0
        timer = self.synth.word_timer(call.text, call.text_normalizer) if call.word_timings else None
        try:
            while current < len(call.pieces):
                kind, piece, payload = await call.events.get()
                if kind == "error":
                    raise payload
                buffered.setdefault(piece, deque()).append((kind, payload))
                while current < len(call.pieces) and buffered.get(current):
                    k, pl = buffered[current].popleft()
                    st = streamers.setdefault(current, MelStreamer(vocode, self._postnet, cfg))
                    words = []
                    if k == "frames":
                        chunks = await self.vocoder_stage.run_stream(call, st, pl)
                    else:                       # the row's last frames (if any) and its end: one vocoder job
                        rest, frames, spoken = pl
                        chunks = await self.vocoder_stage.run_stream(call, st, rest, finish=True, audio_frames=frames)
                        if timer is not None:
                            words = await asyncio.to_thread(piece_words, timer, call, current, frames, spoken)
                        del streamers[current], buffered[current]
                        current += 1
                    for j, c in enumerate(chunks):
                        yield StreamPiece(audio=c, words=tuple(words) if j == len(chunks) - 1 else ())
                    if words and not chunks:
                        yield StreamPiece(audio=np.zeros(0, np.float32), words=tuple(words))
            yield StreamPiece(audio=np.zeros(0, np.float32), normalized_text=" ".join(call.cleaned), last=True)
        finally:
            call.cancelled = True

    def _postnet(self, mel: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.acoustic.postnet_forward(mel.to(self.device)).float()

    # ---------------------------------------------------------- decode loop
    def _run(self) -> None:
        with torch.inference_mode(), self.decoder.thread_context():
            while True:
                try:
                    if not self._rows and not self._waiting:
                        item = self._inbox.get()          # idle: block on the queue
                        if item is _STOP:
                            return
                        self._accept(item)
                    stop = self._drain_inbox()
                    self._drop_dead()
                    self._admit()
                    if self._rows:
                        self._step()
                    if stop and not self._rows and not self._waiting:
                        return
                    if stop:
                        self._inbox.put(_STOP)
                except Exception as exc:  # noqa: BLE001 - fail the batch, keep serving
                    logger.exception("Tacotron2 decoder batch failed; failing its %d rows", len(self._rows))
                    for row in self._rows:
                        row.call.fail(exc)
                    self._rows, self._p = [], None
                    self.decoder.reset()
                    self._drop_dead()

    def _accept(self, item) -> None:
        if isinstance(item, _Task):
            try:
                item.fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                item.error = exc
            item.done.set()
            return
        self._waiting.append(item)

    def _drain_inbox(self) -> bool:
        stop = False
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return stop
            if item is _STOP:
                stop = True
            else:
                self._accept(item)

    def _drop_dead(self) -> None:
        now = self.clock()
        for c in [c for c in self._waiting if not c.alive(now)]:
            self._waiting.remove(c)
            c.todo.clear()
            self._mark_admitted(c)
        dead = [r for r in self._rows if not r.call.alive(now)]
        if dead:
            self._leave(dead)

    def _mark_admitted(self, call: Call) -> None:
        if not call.admitted:
            call.admitted = True
            self._admitted_one()

    def _leave(self, rows: list[Row]) -> None:
        self.decoder.leave(rows)
        gone = set(map(id, rows))
        self._rows = [r for r in self._rows if id(r) not in gone]
        if not self._rows:
            self._p = None

    def _admit(self) -> None:
        if not self._waiting:
            return
        plan = plan_admission(self.policy, self._waiting, self._rows, self._p)
        if plan.evict:
            self._leave(plan.evict)
            for r in plan.evict:                  # decoded again from the start later
                c = r.call
                c.todo.appendleft(r.piece)
                c.todo = deque(sorted(c.todo))
                if c not in self._waiting:
                    self._waiting.append(c)
            self._waiting.sort(key=lambda c: c.seq)
        if not plan.join:
            return
        joining = []
        now, now_perf = time.monotonic(), time.perf_counter()
        for c in plan.join:
            piece = c.todo.popleft()
            r = Row(call=c, piece=piece, most=step_limit(c.opts.stop_rule or "gate", len(c.pieces[piece]),
                                                         c.opts.max_decoder_steps))
            joining.append(r)
            if c.join_step is None:
                c.join_step, c.started, c.started_perf = self.steps_done, now, now_perf
            if not c.todo:
                self._waiting.remove(c)
                self._mark_admitted(c)
        self.decoder.join([RowStart(r, r.ids, r.call.opts.gate_threshold, r.call.opts.stop_rule or "gate",
                                    align=r.call.word_timings) for r in joining])
        self._rows.extend(joining)
        self._p = plan.join[0].prenet_dropout

    def _step(self) -> None:
        b = len(self._rows)
        out = self.decoder.step(self._p)
        index = self.steps_done
        self.steps_done += 1
        self.step_sizes.append(b)
        finished = []
        posts: list[tuple[Call, tuple]] = []       # streaming events of this step, handed over together
        for r in self._rows:
            rf = out.get(r)
            if rf is None:        # joined after the replay read now was queued (pipelined slot decoder)
                continue
            most = r.most
            limit = most - r.steps                                      # steps this row may still make
            gate_fired = rf.stop is not None and rf.stop < limit        # its gate (or attention) ended it
            width = rf.frames.shape[1]
            n = min(width if rf.stop is None else rf.stop + 1, limit)
            r.frames.append(rf.frames if n == width else rf.frames[:, :n])
            if rf.align is not None:
                r.align.append(rf.align[:n])
            r.steps += n
            r.call.max_batch = max(r.call.max_batch, b)
            if gate_fired or r.steps >= most:
                finished.append((r, r.steps - 1 if gate_fired else r.steps, gate_fired))
            elif r.call.streaming and r.steps >= r.next_delivery(self.deliver_every):
                posts.append((r.call, ("frames", r.piece, self._undelivered(r))))
        if self.on_step is not None:
            self.on_step(index, list(self._rows))
        if finished:
            self._leave([r for r, _, _ in finished])
            ready = [r for r, frames, fired in finished if self._finish_row(r, frames, fired, posts)]
            if ready:
                self.vocoder_stage.add_pieces([(r.call, r.piece) for r in ready])
        if posts:
            post_all(posts)

    # -------------------------------------------------------- row results
    def _undelivered(self, r: Row) -> torch.Tensor:
        """A streaming row's frames not delivered yet ``[n_mel, k]``, marked delivered."""
        mel = torch.cat(r.frames[r.sent_chunks:], dim=1)
        r.sent_chunks = len(r.frames)
        r.sent = r.steps
        return mel

    def _finish_row(self, r: Row, audio_frames: int, gate_fired: bool, posts: list[tuple[Call, tuple]]) -> bool:
        """Ends a decoded row; True when it is a unary piece for the vocoder stage (a streaming row's
        end event goes to ``posts``)."""
        call = r.call
        if not gate_fired:
            call.hit_max += 1
            logger.warning("Tacotron2: a piece reached its step limit (%d; max_decoder_steps=%d, stop rule %s) "
                           "before it stopped", audio_frames, call.opts.max_decoder_steps, call.opts.stop_rule)
        call.decoded += 1
        if call.decoded == len(call.pieces):
            call.acoustic_done = time.perf_counter()
        if call.streaming:
            rest = self._undelivered(r) if r.sent < r.steps else None
            posts.append((call, ("end", r.piece, (rest, audio_frames,
                                                   r.spoken(audio_frames) if call.word_timings else None))))
            return False
        call.mels[r.piece] = (torch.cat(r.frames, dim=1), audio_frames)   # [n_mel, steps] decoder output
        if call.word_timings:
            call.aligns[r.piece] = r.spoken(audio_frames)
        return True

