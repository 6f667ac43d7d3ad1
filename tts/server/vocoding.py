"""The vocoder stage of the Tacotron2 scheduler: one thread runs every postnet/WaveGlow/denoiser call.

Two kinds of work reach it:

- unary pieces (``add_pieces``), each as soon as its row has finished
  decoding: postnet over the decoder frames, WaveGlow, denoiser, as
  ``Synthesizer`` does for one request. When every piece of a call is
  vocoded, the call is resolved with its ``SynthesisResult``. A piece of
  more than ``max_frames`` frames (a stop gate that never fired) is
  vocoded in overlapping chunks of ``max_frames``, one chunk per job, as
  streaming does (``tts.streaming.MelStreamer``).
- streaming jobs (``run_stream``): a ``MelStreamer`` push (and, at the end
  of a piece, finish) of one call, awaited by that call's coroutine. The
  stage plans the job's windows (``MelStreamer.plan_push``/``plan_finish``);
  when every window has its audio, it commits them in order and hands the
  coroutine its chunks. A job with no window (no chunk became final) is
  answered at once, without a vocoder call or a turn.

Work is cut small and taken in turns, so no call holds the thread for
long: streaming and unary vocoder calls alternate while both wait, and the
next unary job is for the call that has had the fewest vocoder jobs so far
(then the piece that became ready first). Pieces of unseeded calls with
equal frame count, sigma and denoiser strength share one batched call of at
most ``max_batch`` pieces (a power of two, so few graph shapes); unequal
lengths are never padded together, because padding changes WaveGlow's
output near the end. Streaming windows follow the same rule: the oldest
streaming job that starts a piece's audio (a stream's first chunk, so a
new stream's first audio does not wait behind the chunks other streams
have queued), else the oldest streaming job, picks with its next window
the shape (postnet input and vocoder window frames), sigma and denoiser
strength, and every queued window of an unseeded stream that matches it,
up to ``max_batch`` (a power of two), goes into one postnet call and one
WaveGlow+denoiser call; so the first chunks of streams that start
together go out together. (With a Griffin-Lim voice
only each stream's next window can join: its windows go in plan order.) A seeded call's pieces and
windows go alone, in order, through the call's own generator. Before each
call the stage drops the work of calls that were cancelled, failed or
whose deadline passed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from tts.server.errors import DeadlineExpiredError, ShuttingDownError
from tts.server.types import ScheduledOutcome
from tts.server.work import Call, later_all, piece_words, settle
from tts.streaming import HOP, POSTNET_CONTEXT, MelStreamer, StreamConfig, Window, make_vocode

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VocoderJob:
    """One unit of the stage's work, as ``VocoderStage.on_job`` sees it before it runs."""

    #: ``"unary"`` or ``"stream"``.
    kind: str
    #: (call ``seq``, piece) of each piece in a unary batch; (call ``seq``, -1) of each stream whose
    #: windows a streaming vocoder call holds.
    pieces: tuple[tuple[int, int], ...]
    #: Streaming jobs queued besides those this one serves, when it was picked.
    streams_waiting: int


@dataclass(eq=False)
class _Queued:
    """A unary piece waiting for (or, when long, part way through) the vocoder."""

    ready: int
    call: Call
    piece: int
    #: A long piece: its streamer, post-net mel ``[n_mel, T]``, frames pushed and audio chunks so far.
    streamer: MelStreamer | None = None
    post: torch.Tensor | None = None
    pushed: int = 0
    chunks: list | None = None

    @property
    def frames(self) -> int:
        return self.call.mels[self.piece][0].shape[-1]


@dataclass(eq=False)
class _StreamJob:
    """A streaming call's push (and, at its piece's end, finish), waiting for the vocoder."""

    call: Call
    streamer: MelStreamer
    #: Decoder frames ``[n_mel, k]`` to push, or None.
    frames: torch.Tensor | None
    #: Then ``finish(audio_frames)``.
    finish: bool
    audio_frames: int | None
    future: asyncio.Future
    #: Its windows, planned on the stage's thread, and each window's audio once vocoded.
    windows: list[Window] | None = None
    audio: list = field(default_factory=list)

    def pending(self) -> list[int]:
        """Indices of the windows not vocoded yet."""
        return [i for i, a in enumerate(self.audio) if a is None]

    def key(self, i: int) -> tuple:
        """What window ``i`` may share a vocoder call by: its shape and the call's options."""
        o = self.call.opts
        return self.windows[i].shape, o.sigma, o.denoiser_strength, self.streamer.postnet is not None


class VocoderStage:
    """The scheduler's vocoder thread (see module doc).

    Args:
        synth: the ``tts.synthesizer.Synthesizer`` whose modules run here.
        max_batch: most unary pieces, or streaming windows, in one batched call.
        max_frames: longer pieces are vocoded in chunks of this many frames, one per job.
        clock: the clock deadlines are read on (``time.monotonic``).
    """

    def __init__(self, synth, *, max_batch: int = 16, max_frames: int = 2048,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_batch < 1 or max_frames < 1:
            raise ValueError(f"max_batch and max_frames must be >= 1, got {max_batch}, {max_frames}")
        self.synth = synth
        self.acoustic, self.vocoder = synth.acoustic_module, synth.vocoder_module
        self.denoiser, self.dtype = synth.denoiser_module, synth.vocoder_dtype
        self.device = synth.device
        self.max_batch = int(max_batch)
        self.max_frames = int(max_frames)
        self.clock = clock
        # Unary batch shapes and streaming windows (two steady shapes per power-of-two batch) share
        # the vocoder's and the denoiser's graph LRUs.
        shapes = 12 + 2 * self.max_batch.bit_length()
        for m in (self.vocoder, self.denoiser):
            if hasattr(m, "max_graphs"):
                m.max_graphs = max(int(m.max_graphs), shapes)
        self._cond = threading.Condition()
        self._pieces: list[_Queued] = []
        self._streams: deque[_StreamJob] = deque()
        self._arriving: list[_StreamJob] = []     # queued by run_stream, not yet seen by the thread
        self._ready = itertools.count()
        self._stream_turn = True
        self._closing = False
        self._serving = False                     # the thread runs (or will run) queued work
        self._thread: threading.Thread | None = None
        #: Pieces per unary vocoder call, the latest 1024 (tests and metrics read it).
        self.batch_sizes: deque[int] = deque(maxlen=1024)
        #: Windows per streaming vocoder call, the latest 1024.
        self.stream_batch_sizes: deque[int] = deque(maxlen=1024)
        #: Called on the stage's thread with each ``VocoderJob`` before it runs (tracing, tests).
        self.on_job: Callable[[VocoderJob], None] | None = None

    @property
    def pending(self) -> int:
        """Unary pieces and streaming jobs queued."""
        with self._cond:
            return len(self._pieces) + len(self._streams) + len(self._arriving)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is None:
            self._closing = False
            self._serving = True
            self._thread = threading.Thread(target=self._run, name="t2-vocoder", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Finishes the queued work, then stops the thread (blocking)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def warm_streaming(self, config: StreamConfig, postnet: Callable[[torch.Tensor], torch.Tensor] | None, *,
                       sigma: float, denoiser_strength: float, n_mel: int) -> list[tuple[tuple[int, int], int]]:
        """Runs a stream's steady window shapes (its first window, then the windows of whole chunks)
        at every power-of-two batch up to ``max_batch`` through the postnet, the vocoder and the
        denoiser, so that a vocoder with CUDA graphs captures them before the first call waits for
        a capture. Blocking; call it before serving (the stage's thread must be idle). A no-op
        (returns []) for a vocoder without graphs; else the (window shape, batch) pairs run."""
        if not getattr(self.vocoder, "use_graphs", False):
            return []
        vocode = make_vocode(self.vocoder, self.denoiser, sigma=sigma, denoiser_strength=denoiser_strength,
                             dtype=self.dtype)
        probe = MelStreamer(vocode, postnet, config)
        ctx = config.overlap_frames + (POSTNET_CONTEXT if postnet is not None else 0)
        frames = config.first_chunk_frames + 3 * config.chunk_frames + 2 * ctx
        shapes: dict[tuple[int, int], Window] = {}
        for w in probe.plan_push(torch.zeros(n_mel, frames, device=self.device)):
            shapes.setdefault(w.shape, w)
        done = []
        with torch.inference_mode():
            for shape, w in shapes.items():
                b = 1
                while b <= self.max_batch:
                    probe.vocode_windows([w] * b)
                    done.append((shape, b))
                    b *= 2
        return done

    # ------------------------------------------------------------------ work in
    def add_pieces(self, pieces: list[tuple[Call, int]]) -> None:
        """Queues unary (call, piece)s, all at once (their decoder mels are in ``call.mels[piece]``)."""
        with self._cond:
            self._pieces.extend(_Queued(next(self._ready), call, piece) for call, piece in pieces)
            self._cond.notify()

    def run_stream(self, call: Call, streamer: MelStreamer, frames: torch.Tensor | None = None, *,
                   finish: bool = False, audio_frames: int | None = None) -> asyncio.Future:
        """Queues ``streamer.push(frames)`` (unless None), then with ``finish`` ``streamer.finish(audio_frames)``,
        for streaming ``call``; the future (of the running loop) gets the audio chunks, a list of float32
        arrays. One job per streamer at a time: the next one is queued after this future is done.

        The job joins the stage's queue at the loop's next turn, with every job queued in this turn:
        the jobs that one decoder step's deliveries (or one vocoder call's answers) make, whose
        coroutines run in the same turn, are seen, and batched, together."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._cond:
            if self._closing or self._thread is None:
                fut.set_exception(ShuttingDownError("server is shutting down"))
                return fut
            self._arriving.append(_StreamJob(call, streamer, frames, finish, audio_frames, fut))
        loop.call_soon(self._arrive)
        return fut

    def _arrive(self) -> None:
        with self._cond:
            jobs, self._arriving = self._arriving, []
            if self._serving:
                if jobs:
                    self._streams.extend(jobs)
                    self._cond.notify()
                return
        for job in jobs:                          # the thread ended while they arrived
            job.call.later(settle, job.future, None, ShuttingDownError("server is shutting down"))

    # ---------------------------------------------------------------- thread
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing and not self._has_work():
                    self._cond.wait()
                if not self._has_work():
                    self._serving = False
                    return
                job = self._pick()
            if job is None:
                continue
            if self.on_job is not None:
                self.on_job(job[0])
            if job[0].kind == "stream":
                self._run_streams(job[1])
            elif isinstance(job[1], _Queued):
                self._run_long(job[1])
            else:
                self._run_unary(job[1])

    def _has_work(self) -> bool:
        return bool(self._streams) or any(self._eligible(e) for e in self._pieces)

    @staticmethod
    def _eligible(e: _Queued) -> bool:
        return e.call.generator is None or e.piece == len(e.call.audio)    # seeded: pieces in order

    def _pick(self) -> tuple[VocoderJob, object] | None:
        """Under the lock: the next job (streaming windows, a long piece's ``_Queued`` or a unary batch),
        after dropping the work of dead calls and answering streaming jobs that need no vocoder call."""
        now = self.clock()
        self._pieces = [e for e in self._pieces if e.call.alive(now)]
        self._plan_streams(now)
        ready = [e for e in self._pieces if self._eligible(e)]
        if self._streams and (self._stream_turn or not ready):
            self._stream_turn = False
            return self._pick_windows()
        self._stream_turn = True
        if not ready:
            return None
        order = sorted(ready, key=lambda e: (e.call.voc_jobs, e.ready))
        first = order[0]
        if first.frames > self.max_frames:
            first.call.voc_jobs += 1
            return VocoderJob("unary", ((first.call.seq, first.piece),), len(self._streams)), first
        if first.call.generator is not None:
            batch = [first]
        else:
            key = self._group(first)
            same = [e for e in order if e.call.generator is None and e.frames <= self.max_frames
                    and self._group(e) == key]
            batch = same[:self._batch_of(len(same))]
        for e in batch:
            self._pieces.remove(e)
        for call in dict.fromkeys(e.call for e in batch):
            call.voc_jobs += 1
        pieces = tuple((e.call.seq, e.piece) for e in batch)
        return VocoderJob("unary", pieces, len(self._streams)), [(e.call, e.piece) for e in batch]

    def _batch_of(self, n: int) -> int:
        """How many of ``n`` waiting items one batched call takes: the largest power of two at most
        ``n`` and ``max_batch`` (so few graph shapes)."""
        return 1 << (min(self.max_batch, n).bit_length() - 1)

    @staticmethod
    def _group(e: _Queued) -> tuple:
        return e.frames, e.call.opts.sigma, e.call.opts.denoiser_strength

    def _plan_streams(self, now: float) -> None:
        """Under the lock: drops the streaming jobs of dead calls (their coroutines get the reason), plans
        new jobs' windows and answers the jobs left with none to vocode."""
        keep: deque[_StreamJob] = deque()
        for job in self._streams:
            call = job.call
            if job.future.done():                 # its coroutine is gone
                continue
            if not call.alive(now):
                expired = call.deadline is not None and now >= call.deadline
                exc = DeadlineExpiredError("deadline passed during synthesis") if expired else asyncio.CancelledError()
                call.later(settle, job.future, None, exc)
                continue
            if job.windows is None:
                try:
                    st = job.streamer
                    job.windows = ((st.plan_push(job.frames) if job.frames is not None else [])
                                   + (st.plan_finish(job.audio_frames) if job.finish else []))
                except Exception as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                    logger.exception("streaming plan failed")
                    call.later(settle, job.future, None, exc)
                    continue
                job.audio = [None] * len(job.windows)
                if not job.windows:
                    call.later(settle, job.future, [], None)
                    continue
            keep.append(job)
        self._streams = keep

    def _pick_windows(self) -> tuple[VocoderJob, list[tuple[_StreamJob, int]]]:
        """Under the lock: the next window of the oldest streaming job that starts a piece's audio
        (else of the oldest job) and, unless its call is seeded, the queued windows of unseeded streams
        that can share its vocoder call (see module doc)."""
        head = next((job for job in self._streams if job.streamer.chunks_out == 0), self._streams[0])
        first = head.pending()[0]
        if head.call.generator is not None:
            batch = [(head, first)]
        else:
            key = head.key(first)
            # A Griffin-Lim stream continues each window's phase from its previous window
            # (tts.streaming): its windows go in plan order, so only each job's next one may join.
            in_order = getattr(head.streamer.vocode, "window", None) is not None
            same = [(job, i) for job in self._streams if job.call.generator is None
                    for i in (job.pending()[:1] if in_order else job.pending()) if job.key(i) == key]
            batch = same[:self._batch_of(len(same))]
        jobs = list(dict.fromkeys(job for job, _ in batch))
        for job in jobs:
            job.call.voc_jobs += 1
        pieces = tuple((job.call.seq, -1) for job in jobs)
        return VocoderJob("stream", pieces, len(self._streams) - len(jobs)), batch

    def _run_streams(self, batch: list[tuple[_StreamJob, int]]) -> None:
        """One postnet call and one vocoder call over streaming windows of one shape; then each job whose
        windows all have their audio gets its chunks."""
        jobs = list(dict.fromkeys(job for job, _ in batch))
        try:
            with torch.inference_mode():
                audio = batch[0][0].streamer.vocode_windows([job.windows[i] for job, i in batch])
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting coroutines, never left hanging
            logger.exception("streaming vocoding failed")
            later_all([(job.call, settle, (job.future, None, exc)) for job in jobs])
            self._drop(jobs)
            return
        self.stream_batch_sizes.append(len(batch))
        for j, (job, i) in enumerate(batch):
            job.audio[i] = audio[j]
        done = [job for job in jobs if not job.pending()]
        answers = []
        for job in done:
            try:
                chunks = [job.streamer.commit(w, a) for w, a in zip(job.windows, job.audio)]
            except Exception as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                logger.exception("streaming vocoding failed")
                answers.append((job.call, settle, (job.future, None, exc)))
            else:
                answers.append((job.call, settle, (job.future, chunks, None)))
        later_all(answers)          # in one turn of each loop: their next jobs are queued together
        self._drop(done)

    def _drop(self, jobs: list[_StreamJob]) -> None:
        gone = set(jobs)
        with self._cond:
            self._streams = deque(j for j in self._streams if j not in gone)

    def _run_unary(self, batch: list[tuple[Call, int]]) -> None:
        try:
            self._vocode(batch)
        except Exception as exc:  # noqa: BLE001 - resolved, never left hanging
            logger.exception("vocoding failed")
            for call, _ in batch:
                call.fail(exc)
            return
        for call in dict.fromkeys(c for c, _ in batch):
            if len(call.audio) == len(call.pieces) and not call.failed:
                self._finish(call)

    def _run_long(self, e: _Queued) -> None:
        """One job of a long piece: (first) its postnet, then the audio of up to ``max_frames`` frames."""
        call = e.call
        try:
            with torch.inference_mode():
                t0 = time.perf_counter()
                if e.streamer is None:
                    e.post = self.acoustic.postnet_forward(call.mels[e.piece][0][None].to(self.device)).float()[0]
                    o = call.opts
                    vocode = make_vocode(self.vocoder, self.denoiser, sigma=o.sigma,
                                         denoiser_strength=o.denoiser_strength, generator=call.generator,
                                         dtype=self.dtype)
                    cfg = StreamConfig(chunk_frames=self.max_frames, first_chunk_frames=self.max_frames)
                    e.streamer, e.chunks = MelStreamer(vocode, None, cfg), []
                t1 = time.perf_counter()
                n = min(self.max_frames, e.post.shape[-1] - e.pushed)
                e.chunks += e.streamer.push(e.post[:, e.pushed:e.pushed + n])
                e.pushed += n
                done = e.pushed == e.post.shape[-1]
                if done:
                    e.chunks += e.streamer.finish(call.mels[e.piece][1])
                t2 = time.perf_counter()
        except Exception as exc:  # noqa: BLE001 - resolved, never left hanging
            logger.exception("vocoding failed")
            call.fail(exc)
            return
        call.voc_seconds[0] += t1 - t0
        call.voc_seconds[1] += t2 - t1
        if not done:
            return
        with self._cond:
            if e in self._pieces:
                self._pieces.remove(e)
        call.mels.pop(e.piece)
        call.audio[e.piece] = (torch.from_numpy(np.concatenate(e.chunks)), e.post.cpu())
        if len(call.audio) == len(call.pieces) and not call.failed:
            self._finish(call)

    def _vocode(self, batch: list[tuple[Call, int]]) -> None:
        """One postnet/WaveGlow/denoiser call over pieces of equal frame count: ``[B, n_mel, T]``."""
        o = batch[0][0].opts
        with torch.inference_mode():
            mel = torch.stack([call.mels[i][0] for call, i in batch]).to(self.device)
            t0 = time.perf_counter()
            post = self.acoustic.postnet_forward(mel).float()
            t1 = time.perf_counter()
            audio = self.vocoder.infer(post.to(self.dtype), sigma=o.sigma, generator=batch[0][0].generator).float()
            t2 = time.perf_counter()
            if o.denoiser_strength:
                audio = self.denoiser(audio, strength=o.denoiser_strength).reshape(len(batch), -1)
            audio = audio.cpu()
            post = post.cpu()
            t3 = time.perf_counter()
        self.batch_sizes.append(len(batch))
        for j, (call, i) in enumerate(batch):
            n = call.mels.pop(i)[1]
            call.audio[i] = (audio[j, :HOP * n], post[j])
            tm = call.voc_seconds
            tm[0], tm[1], tm[2] = tm[0] + t1 - t0, tm[1] + t2 - t1, tm[2] + t3 - t2

    def _finish(self, call: Call) -> None:
        """Every piece of ``call`` is vocoded: its result."""
        from tts.synthesizer import StageTimings, SynthesisResult

        try:
            n = len(call.pieces)
            post_s, voc_s, den_s = call.voc_seconds
            acoustic = max(0.0, call.acoustic_done - (call.started_perf or call.acoustic_done)) + post_s
            timings = StageTimings(text=call.text_seconds, acoustic=acoustic, vocoder=voc_s, denoiser=den_s,
                                   total=call.text_seconds + acoustic + voc_s + den_s)
            words = []
            if call.word_timings:
                timer = self.synth.word_timer(call.text, call.text_normalizer)
                for i in range(n):
                    piece_words(timer, call, i, len(call.audio[i][0]) // HOP, call.aligns.get(i))
                words = timer.words
            result = SynthesisResult(
                text=call.text, normalized_text=" ".join(call.cleaned), words=words,
                audio=torch.cat([call.audio[i][0] for i in range(n)]).numpy().astype(np.float32, copy=False),
                sample_rate=self.synth.sample_rate,
                mel=torch.cat([call.audio[i][1] for i in range(n)], dim=-1).numpy().astype(np.float32, copy=False),
                timings=timings, dropped=call.dropped, pieces=n, hit_max_steps=call.hit_max)
            outcome = ScheduledOutcome(
                result=result, queue_seconds=max(0.0, (call.started or call.enqueued) - call.enqueued),
                batch_size=call.max_batch, queue_steps=max(0, (call.join_step or 0) - call.arrival_step))
        except Exception as exc:  # noqa: BLE001 - resolved, never left hanging
            logger.exception("vocoding failed")
            call.fail(exc)
            return
        call.audio.clear()
        call.aligns.clear()
        call.resolve(outcome)
