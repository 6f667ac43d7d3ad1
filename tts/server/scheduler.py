"""Continuous batching for Tacotron2: requests join and leave the running decoder batch between steps.

One ``TacotronScheduler`` per (voice, device). Its decode thread owns a
batch of rows (one row = one text piece of a request) and loops:

1. take new requests from the inbox (blocking only when no row runs: it
   waits on the queue, never sleep-polls);
2. drop rows whose call was cancelled or whose deadline passed (their slot
   frees at once);
3. admit waiting rows up to ``max_rows``: each is encoded alone (the
   encoder's convolutions see padding, so a row encoded alone gives exactly
   the single-request result) and joined with ``DecoderState.concat``;
4. run one ``Decoder.step`` for the whole batch;
5. rows whose stop gate fired (or that reached their ``max_decoder_steps``)
   leave with ``DecoderState.select``; the batch narrows its input length
   when the longest row has left.

A short request that arrives while a long one decodes joins at the next step
and leaves as soon as it is done: it is never held back by the long one.

Two decoders drive the rows (``decoder=``):

- ``"slots"`` (the default where the acoustic model is the fast engine on
  CUDA): ``Tacotron2Engine.slots``, a ``SlotDecoder`` with static buffers of
  a (rows, input length) bucket. A row joins a free slot between replays and
  every replay advances all slots ``steps_per_replay`` (K, default 16) steps
  in one CUDA graph; the host reads the K frames and gates once per replay,
  so a row may overrun its stop gate by up to K - 1 steps (discarded). The
  decoder grows or shrinks its bucket as rows come and go (live rows are
  moved, unchanged). Its thread decodes on a high-priority CUDA stream of its
  own, so the vocoder's work on the default stream does not queue in front of
  it. Streaming rows get their frames after every replay. On CPU the same
  decoder runs eagerly (the PyTorch twin), which the tests use.
- ``"eager"`` (the default on CPU): the module's step API, one
  ``Decoder.step`` per step, states joined with ``DecoderState.concat``.

Finished requests go to a second thread (the vocoder thread): postnet over
the rows' frames, WaveGlow, denoiser, as ``Synthesizer`` does for one
request. Requests that are ready when the vocoder thread gets to them are
vocoded together: pieces of equal frame count (and equal sigma and denoiser
strength, no seed) share one batched postnet/WaveGlow/denoiser call of at
most ``vocoder_batch`` rows (a power of two, so few graph shapes); unequal
lengths are never padded together, because padding changes WaveGlow's
output near the end. Streaming calls instead receive their frames every few steps and
vocode them in overlapping chunks (``tts.streaming.MelStreamer``).

Each row keeps its own gate threshold and step limit. Rows only share a
step with rows of the same ``prenet_dropout`` (one dropout probability per
step call); requests with another value wait until the batch drains. The
engine sends requests that ask for a ``seed`` with ``prenet_dropout > 0`` to
the dynamic batcher instead, because dropout masks drawn for a shared batch
would depend on the other rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from tts.errors import InvalidInputError
from tts.options import SynthesisOptions
from tts.server.errors import DeadlineExpiredError, QueueFullError, ShuttingDownError
from tts.streaming import HOP, MelStreamer, StreamConfig, make_vocode, synthesizer_modules

logger = logging.getLogger(__name__)

_STOP = object()
DECODERS = ("auto", "eager", "slots")
#: Input-length buckets whose slot-decoder graphs ``warmup`` captures (longer inputs capture on first use).
WARM_INPUT_LENGTHS = (32, 64, 128)


@dataclass(eq=False)
class _Task:
    """Work run on the decode thread between replays (``TacotronScheduler.warmup``)."""

    fn: Callable[[], None]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


@dataclass
class ScheduledOutcome:
    """A unary result from the scheduler and how it was served."""

    #: ``tts.synthesizer.SynthesisResult``.
    result: object
    #: Seconds from arrival until its first row joined the batch.
    queue_seconds: float
    #: Largest batch (rows) it decoded in.
    batch_size: int


@dataclass(eq=False)
class _Request:
    text: str
    opts: SynthesisOptions                       # merged over the voice defaults (no None)
    pieces: list[list[int]]
    cleaned: list[str]
    loop: asyncio.AbstractEventLoop
    deadline: float | None
    streaming: bool
    events: asyncio.Queue                        # (kind, piece, payload) for streaming
    done: asyncio.Future | None = None           # unary completion
    enqueued: float = field(default_factory=time.monotonic)
    started: float | None = None                 # monotonic time its first row joined
    started_perf: float | None = None            # perf_counter at the same moment
    text_seconds: float = 0.0
    acoustic_done: float = 0.0
    max_batch: int = 0
    cancelled: bool = False
    rows_left: int = 0
    piece_mels: dict = field(default_factory=dict)     # piece -> (decoder mel [n_mel, T], audio_frames)
    failed: bool = False


@dataclass(eq=False)
class _Row:
    req: _Request
    piece: int
    ids: list[int]
    frames: list[torch.Tensor] = field(default_factory=list)   # chunks [n_mel, n] (fps = 1), in order
    sent: int = 0                                               # frames already delivered (streaming)
    sent_chunks: int = 0                                        # chunks already delivered
    steps: int = 0
    slot: int = -1                                              # its SlotDecoder slot


class TacotronScheduler:
    """Continuous batching of one Tacotron2 ``Synthesizer`` (see module doc).

    Args:
        synth: a ``tts.synthesizer.Synthesizer`` whose voice is Tacotron2.
        max_rows: most rows decoding at once (default: the synthesizer's ``max_batch``).
        max_queue: most requests waiting to join; one more gets ``QueueFullError``.
        deliver_every: streaming rows get their new frames every this many steps (eager decoder;
            the slot decoder delivers after every replay).
        decoder: ``"slots"``, ``"eager"`` or ``"auto"`` (slots where the acoustic model is the fast
            engine on CUDA, else eager). ``"slots"`` on CPU runs the slot decoder's PyTorch twin.
        steps_per_replay: decoder steps per slot-decoder replay (K).
        vocoder_batch: most pieces in one batched vocoder call (16: H100, WaveGlow-256 fused, c=64 unary
            558.7x vs 528.8x real time at 8, same run; benchmarks/README.md).
    """

    def __init__(self, synth, *, max_rows: int | None = None, max_queue: int = 256, deliver_every: int = 4,
                 metrics=None, decoder: str = "auto", steps_per_replay: int = 16, vocoder_batch: int = 16) -> None:
        self.synth = synth
        self.max_rows = int(max_rows or getattr(synth, "max_batch", 8))
        self.max_queue = max_queue
        self.deliver_every = deliver_every
        self.metrics = metrics
        acoustic, vocoder, denoiser, dtype = synthesizer_modules(synth)
        self.acoustic, self.vocoder, self.denoiser, self.vocoder_dtype = acoustic, vocoder, denoiser, dtype
        self.device = synth.device
        self.n_mel = int(acoustic.config.n_mel_channels)
        if int(acoustic.config.n_frames_per_step) != 1:
            raise ValueError("continuous batching supports n_frames_per_step = 1 only")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if steps_per_replay < 1 or vocoder_batch < 1:
            raise ValueError("steps_per_replay and vocoder_batch must be >= 1")
        from tts.engines.tacotron2 import Tacotron2Engine

        fast = isinstance(acoustic, Tacotron2Engine) and acoustic.device.type == "cuda"
        #: Whether rows decode in a ``SlotDecoder`` (else the eager step API).
        self.use_slots = decoder == "slots" or (decoder == "auto" and fast)
        self.steps_per_replay = int(steps_per_replay)
        self.vocoder_batch = int(vocoder_batch)
        self._slot_engine = None
        if self.use_slots:
            if isinstance(acoustic, Tacotron2Engine):
                self._slot_engine = acoustic
            else:   # an eager module (CPU): the engine's PyTorch twin in float32 on its device
                dev = torch.device(self.device)
                self._slot_engine = Tacotron2Engine(acoustic, device=dev, precision="fp32",
                                                    backend="auto" if dev.type == "cuda" else "torch")
            if hasattr(vocoder, "max_graphs"):   # unary batch shapes and streaming windows share its LRU
                vocoder.max_graphs = max(int(vocoder.max_graphs), 12)
        self._sd = None                     # the SlotDecoder in use
        self._voc_ready: deque = deque()    # unary requests whose rows are all decoded
        self._inbox: queue.Queue = queue.Queue()
        self._pending: list[_Row] = []
        self._rows: list[_Row] = []
        self._state = None
        self._prev: torch.Tensor | None = None
        self._p: float | None = None
        self._waiting = 0   # requests accepted but not yet fully admitted
        self._thread: threading.Thread | None = None
        self._vocoder_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="t2-vocoder")
        self._closed = False
        #: Per step (eager) or replay (slots): number of rows in the batch (tests and metrics read it).
        self.step_sizes: list[int] = []
        #: Pieces per vocoder call of unary requests (tests read it).
        self.vocoder_batch_sizes: list[int] = []

    @property
    def load(self) -> int:
        return len(self._rows) + len(self._pending) + self._inbox.qsize()

    @property
    def queue_depth(self) -> int:
        return self._waiting

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="t2-scheduler", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stops after the rows in flight finish; blocks until the threads end."""
        self._closed = True
        if self._thread is not None:
            self._inbox.put(_STOP)
            self._thread.join()
            self._thread = None
        self._vocoder_pool.shutdown(wait=True)

    def warmup(self, input_lengths: tuple[int, ...] = WARM_INPUT_LENGTHS) -> None:
        """Captures the slot decoder's graphs (every rows bucket up to ``max_rows``, the input-length
        buckets of ``input_lengths``, the voice's default prenet dropout) on the decode thread, so no
        call waits for a capture. Blocking; a no-op without slots or graphs, or while rows decode."""
        eng = self._slot_engine
        if eng is None or not eng.use_graphs:
            return
        p = float(SynthesisOptions().merged_over(self.synth.voice.defaults).prenet_dropout)

        def work() -> None:
            if self._rows:
                return
            from tts.engines.tacotron2 import slot_buckets

            top, _ = slot_buckets(self.max_rows, 1)
            t0 = time.perf_counter()
            n = 0
            for t in sorted({slot_buckets(1, x)[1] for x in input_lengths}):
                rows = 1
                while rows <= top:
                    eng.slots(rows, t, steps_per_replay=self.steps_per_replay).capture(p)
                    rows, n = rows * 2, n + 1
            self._sd = None
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
    def _plan(self, text: str) -> tuple[list[list[int]], list[str]]:
        from tts.text import encode, split_text

        s = self.synth
        parts = [text.strip()] if len(text) <= s.max_piece_chars else split_text(text, s.max_piece_chars)
        ids, cleaned = [], []
        for part in parts:
            enc = encode(part, s.voice.frontend)
            if enc.ids:
                ids.append(list(enc.ids))
                cleaned.append(enc.cleaned.strip())
        if not ids:
            raise InvalidInputError("text has nothing speakable: none of its characters is in the voice's "
                                    "symbol set", field="text")
        return ids, cleaned

    def _submit(self, text: str, options: SynthesisOptions, deadline: float | None, streaming: bool) -> _Request:
        if self._closed:
            raise ShuttingDownError("server is shutting down")
        if self._waiting >= self.max_queue:
            raise QueueFullError(f"request queue is full ({self.max_queue} waiting); retry later")
        t0 = time.perf_counter()
        pieces, cleaned = self._plan(text)
        loop = asyncio.get_running_loop()
        req = _Request(text=text, opts=options.merged_over(self.synth.voice.defaults), pieces=pieces,
                       cleaned=cleaned, loop=loop, deadline=deadline, streaming=streaming,
                       events=asyncio.Queue(), done=None if streaming else loop.create_future())
        req.text_seconds = time.perf_counter() - t0
        req.rows_left = len(pieces)
        self._waiting += 1
        self._inbox.put(req)
        return req

    async def synthesize(self, text: str, options: SynthesisOptions, *, deadline: float | None = None
                         ) -> ScheduledOutcome:
        """Whole utterance (unary). Cancelling the caller removes its rows between steps."""
        req = self._submit(text, options, deadline, streaming=False)
        try:
            return await req.done
        finally:
            req.cancelled = True   # no-op when finished; frees the rows of a cancelled call

    async def stream(self, text: str, options: SynthesisOptions, *, deadline: float | None = None,
                     chunk_frames: int = 32, overlap_frames: int = 8, first_chunk_frames: int = 8
                     ) -> AsyncIterator:
        """Yields ``StreamPiece``s as frames are decoded and vocoded."""
        from tts.server.engine import StreamPiece

        cfg = StreamConfig(chunk_frames=chunk_frames, overlap_frames=overlap_frames,
                           first_chunk_frames=first_chunk_frames)
        req = self._submit(text, options, deadline, streaming=True)
        loop = asyncio.get_running_loop()
        o = req.opts
        gen = None if o.seed is None else torch.Generator(device=self.device).manual_seed(o.seed)
        vocode = make_vocode(self.vocoder, self.denoiser, sigma=o.sigma, denoiser_strength=o.denoiser_strength,
                             generator=gen, dtype=self.vocoder_dtype)
        postnet = self._postnet
        streamers = {}
        buffered: dict[int, list] = {}
        current = 0
        try:
            while current < len(req.pieces):
                kind, piece, payload = await req.events.get()
                if kind == "error":
                    raise payload
                buffered.setdefault(piece, []).append((kind, payload))
                while current < len(req.pieces) and buffered.get(current):
                    k, pl = buffered[current].pop(0)
                    st = streamers.setdefault(current, MelStreamer(vocode, postnet, cfg))
                    if k == "frames":
                        chunks = await loop.run_in_executor(self._vocoder_pool, st.push, pl)
                    else:  # "end": payload = audio frames of this piece
                        chunks = await loop.run_in_executor(self._vocoder_pool, st.finish, pl)
                        current += 1
                    for c in chunks:
                        yield StreamPiece(audio=c)
            yield StreamPiece(audio=np.zeros(0, np.float32), normalized_text=" ".join(req.cleaned), last=True)
        finally:
            req.cancelled = True

    def _postnet(self, mel: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.acoustic.postnet_forward(mel.to(self.device)).float()

    # ---------------------------------------------------------- decode loop
    def _run(self) -> None:
        stream = None
        if self.use_slots and torch.device(self.device).type == "cuda":
            # the decoder's replays are short and latency-bound: a high-priority stream of their own
            stream = torch.cuda.Stream(torch.device(self.device), priority=-1)
        with torch.inference_mode(), (torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()):
            while True:
                try:
                    if not self._rows and not self._pending:
                        item = self._inbox.get()          # idle: block on the queue
                        if item is _STOP:
                            return
                        self._accept(item)
                    stop = self._drain_inbox()
                    self._drop_dead()
                    self._admit()
                    if self._rows:
                        self._step()
                    if stop and not self._rows and not self._pending:
                        return
                    if stop:
                        self._inbox.put(_STOP)
                except Exception as exc:  # noqa: BLE001 - fail the batch, keep serving
                    logger.exception("Tacotron2 decoder batch failed; failing its %d rows", len(self._rows))
                    for row in self._rows:
                        self._fail(row.req, exc)
                    failed = {id(r.req) for r in self._rows}
                    self._pending = [r for r in self._pending if id(r.req) not in failed]
                    self._rows, self._state, self._prev, self._p = [], None, None, None
                    if self._sd is not None:
                        self._sd.reset()

    def _accept(self, req) -> None:
        if isinstance(req, _Task):
            try:
                req.fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                req.error = exc
            req.done.set()
            return
        for i, ids in enumerate(req.pieces):
            self._pending.append(_Row(req=req, piece=i, ids=ids))

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

    def _dead(self, req: _Request, now: float) -> bool:
        if req.failed:
            return True
        if req.cancelled:
            return True
        if req.deadline is not None and now >= req.deadline:
            self._fail(req, DeadlineExpiredError("deadline passed during synthesis"))
            return True
        return False

    def _drop_dead(self) -> None:
        now = time.monotonic()
        dead_pending = [r for r in self._pending if self._dead(r.req, now)]
        for r in dead_pending:
            self._pending.remove(r)
            if r.piece == 0 and r.req.started is None:
                self._waiting -= 1
                r.req.started = now
        keep = [i for i, r in enumerate(self._rows) if not self._dead(r.req, now)]
        if len(keep) != len(self._rows):
            if self.use_slots:
                for i in set(range(len(self._rows))) - set(keep):
                    self._sd.leave(self._rows[i].slot)
                self._rows = [self._rows[i] for i in keep]
                self._fit_slots([])
            else:
                self._select(keep)

    def _admit(self) -> None:
        if not self._pending or len(self._rows) >= self.max_rows:
            return
        p = self._p if self._rows else self._pending[0].req.opts.prenet_dropout
        joining = []
        for r in list(self._pending):
            if len(self._rows) + len(joining) >= self.max_rows:
                break
            if r.req.opts.prenet_dropout != p:
                continue
            joining.append(r)
            self._pending.remove(r)
        if not joining:
            return
        if self.use_slots:
            self._admit_slots(joining, p)
            return
        dec = self.acoustic.decoder
        states, prevs = [], []
        now = time.monotonic()
        for r in joining:
            ids = torch.tensor([r.ids], dtype=torch.long, device=self.device)
            lengths = torch.tensor([len(r.ids)], dtype=torch.long, device=self.device)
            memory = self.acoustic.encode(ids, lengths)
            st = dec.init_state(memory, lengths)
            states.append(st)
            prevs.append(dec.go_frame(st))
            if r.req.started is None:
                r.req.started = now
                r.req.started_perf = time.perf_counter()
                self._waiting -= 1
        from tts.models.tacotron2 import DecoderState

        if self._state is not None:
            states.insert(0, self._state)
            prevs.insert(0, self._prev)
        self._state = DecoderState.concat(states)
        self._prev = torch.cat(prevs, 0)
        self._rows.extend(joining)
        self._p = p

    def _admit_slots(self, joining: list[_Row], p: float) -> None:
        self._fit_slots(joining)
        sd = self._sd
        now = time.monotonic()
        for r, slot in zip(joining, sd.free_slots()):
            ids = torch.tensor([r.ids], dtype=torch.long, device=self.device)
            lengths = torch.tensor([len(r.ids)], dtype=torch.long, device=self.device)
            memory = self.acoustic.encode(ids, lengths)
            sd.join(slot, memory, len(r.ids), gate_threshold=r.req.opts.gate_threshold)
            r.slot = slot
            if r.req.started is None:
                r.req.started = now
                r.req.started_perf = time.perf_counter()
                self._waiting -= 1
        self._rows.extend(joining)
        self._p = p

    def _fit_slots(self, joining: list[_Row]) -> None:
        """Moves the slot decoder to the bucket of the live rows plus ``joining`` (grow or shrink)."""
        from tts.engines.tacotron2 import slot_buckets

        n = len(self._rows) + len(joining)
        if n == 0:
            return                         # keep the decoder (all slots free) for the next rows
        want = slot_buckets(n, max(len(r.ids) for r in self._rows + joining))
        sd = self._sd
        if sd is None:
            self._sd = self._slot_engine.slots(*want, steps_per_replay=self.steps_per_replay)
            return
        if want == (sd.rows, sd.t_in):
            return
        self._sd = sd.resized(*want, keep=[r.slot for r in self._rows])
        for j, r in enumerate(self._rows):
            r.slot = j

    def _select(self, keep: list[int]) -> None:
        if not keep:
            self._rows, self._state, self._prev, self._p = [], None, None, None
            return
        self._rows = [self._rows[i] for i in keep]
        self._state = self._state.select(keep)
        self._prev = self._prev.index_select(0, torch.as_tensor(keep, device=self._prev.device))
        longest = max(len(r.ids) for r in self._rows)
        if longest < self._state.max_input_length:
            self._state = self._state.narrow_inputs(longest)

    def _step(self) -> None:
        if self.use_slots:
            self._step_slots()
            return
        b = len(self._rows)
        self.step_sizes.append(b)
        out = self.acoustic.decoder.step(self._state, self._prev, prenet_dropout=self._p)
        self._prev = out.frame
        fired = (torch.sigmoid(out.gate_logit.float())).cpu().tolist()
        frames = out.frame
        keep = []
        for i, r in enumerate(self._rows):
            r.frames.append(frames[i].unsqueeze(1))
            r.steps += 1
            r.req.max_batch = max(r.req.max_batch, b)
            gate_fired = fired[i] > r.req.opts.gate_threshold
            if gate_fired or r.steps >= r.req.opts.max_decoder_steps:
                audio_frames = r.steps - 1 if gate_fired else r.steps
                if not gate_fired:
                    logger.warning("Tacotron2: a piece reached max_decoder_steps=%d before its stop gate fired",
                                   r.req.opts.max_decoder_steps)
                self._finish_row(r, audio_frames)
            else:
                keep.append(i)
                if r.req.streaming and r.steps - r.sent >= self.deliver_every:
                    self._deliver(r)
        if len(keep) != b:
            self._select(keep)

    def _step_slots(self) -> None:
        sd = self._sd
        b = len(self._rows)
        self.step_sizes.append(b)
        out = sd.run(self._p)
        k = sd.steps_per_replay
        keep = []
        for r in self._rows:
            s = r.slot
            stop = out.stop[s]
            limit = r.req.opts.max_decoder_steps - r.steps      # steps this row may still make
            gate_fired = stop is not None and stop < limit
            n = min(k if stop is None else stop + 1, limit)
            r.frames.append(out.frames[s, :n].t().contiguous())   # [n_mel, n]
            r.steps += n
            r.req.max_batch = max(r.req.max_batch, b)
            if gate_fired or r.steps >= r.req.opts.max_decoder_steps:
                if not gate_fired:
                    logger.warning("Tacotron2: a piece reached max_decoder_steps=%d before its stop gate fired",
                                   r.req.opts.max_decoder_steps)
                sd.leave(s)
                self._finish_row(r, r.steps - 1 if gate_fired else r.steps)
            else:
                keep.append(r)
                if r.req.streaming:
                    self._deliver(r)
        if len(keep) != b:
            self._rows = keep
            self._fit_slots([])

    # -------------------------------------------------------- row results
    def _deliver(self, r: _Row) -> None:
        mel = torch.cat(r.frames[r.sent_chunks:], dim=1)   # [n_mel, k]
        r.sent_chunks = len(r.frames)
        r.sent = r.steps
        self._post(r.req, ("frames", r.piece, mel))

    def _post(self, req: _Request, event) -> None:
        req.loop.call_soon_threadsafe(req.events.put_nowait, event)

    def _fail(self, req: _Request, exc: Exception) -> None:
        if req.failed:
            return
        req.failed = True
        if req.streaming:
            self._post(req, ("error", -1, exc))
        else:
            def resolve():
                if req.done is not None and not req.done.done():
                    req.done.set_exception(exc)
            req.loop.call_soon_threadsafe(resolve)

    def _finish_row(self, r: _Row, audio_frames: int) -> None:
        req = r.req
        if req.streaming:
            if r.sent < r.steps:
                self._deliver(r)
            self._post(req, ("end", r.piece, audio_frames))
            return
        mel = torch.cat(r.frames, dim=1)   # [n_mel, steps] decoder output
        req.piece_mels[r.piece] = (mel, audio_frames)
        req.rows_left -= 1
        if req.rows_left == 0:
            req.acoustic_done = time.perf_counter()
            self._voc_ready.append(req)
            self._vocoder_pool.submit(self._vocode_ready)

    def _vocode_ready(self) -> None:
        """Vocoder thread: every unary request ready now, vocoded together (``_vocode_requests``)."""
        reqs = []
        while True:
            try:
                reqs.append(self._voc_ready.popleft())
            except IndexError:
                break
        if reqs:
            self._vocode_requests(reqs)

    def _vocode_requests(self, reqs: list[_Request]) -> None:
        """Vocoder thread: postnet, WaveGlow, denoiser for every piece of ``reqs``, then each result.

        Pieces of unseeded requests with equal frame counts, sigma and denoiser strength share
        batched calls (``_batches``); a seeded request's pieces go alone, in order, through its own
        generator, as ``Synthesizer`` does. A failing call fails only the requests in it."""
        from tts.synthesizer import StageTimings, SynthesisResult

        groups: dict[tuple, list[tuple[_Request, int]]] = {}
        gens: dict[int, torch.Generator] = {}
        for req in reqs:
            o = req.opts
            if o.seed is not None:
                gens[id(req)] = torch.Generator(device=self.device).manual_seed(o.seed)
            for i in range(len(req.pieces)):
                frames = req.piece_mels[i][0].shape[-1]
                key = (frames, o.sigma, o.denoiser_strength) if o.seed is None else ("seed", id(req), i)
                groups.setdefault(key, []).append((req, i))
        pieces: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        times: dict[int, list[float]] = {id(r): [0.0, 0.0, 0.0] for r in reqs}
        for items in groups.values():
            for batch in _batches(items, self.vocoder_batch):
                try:
                    self._vocode_batch(batch, gens.get(id(batch[0][0])), pieces, times)
                except Exception as exc:  # noqa: BLE001 - resolved, never left hanging
                    logger.exception("vocoding failed")
                    for req, _ in batch:
                        self._fail(req, exc)
        for req in reqs:
            if req.failed:
                continue
            try:
                post_s, voc_s, den_s = times[id(req)]
                audio = torch.cat([pieces[(id(req), i)][0] for i in range(len(req.pieces))])
                mel = torch.cat([pieces[(id(req), i)][1] for i in range(len(req.pieces))], dim=-1)
                acoustic = max(0.0, req.acoustic_done - (req.started_perf or req.acoustic_done)) + post_s
                timings = StageTimings(text=req.text_seconds, acoustic=acoustic, vocoder=voc_s, denoiser=den_s,
                                       total=req.text_seconds + acoustic + voc_s + den_s)
                result = SynthesisResult(text=req.text, normalized_text=" ".join(req.cleaned),
                                         audio=audio.numpy().astype(np.float32), sample_rate=self.synth.sample_rate,
                                         mel=mel.numpy().astype(np.float32), timings=timings,
                                         pieces=len(req.pieces))
                outcome = ScheduledOutcome(result=result, queue_seconds=max(0.0, (req.started or req.enqueued)
                                                                            - req.enqueued),
                                           batch_size=req.max_batch)
            except Exception as exc:  # noqa: BLE001 - resolved, never left hanging
                logger.exception("vocoding failed")
                self._fail(req, exc)
                continue
            self._resolve(req, outcome)

    def _vocode_batch(self, batch: list[tuple[_Request, int]], gen: torch.Generator | None,
                      pieces: dict, times: dict) -> None:
        """One postnet/WaveGlow/denoiser call over pieces of equal frame count: ``[B, n_mel, T]``.
        Stores (audio float32 CPU ``[256 * audio_frames]``, post-net mel float32 CPU ``[n_mel, T]``)."""
        o = batch[0][0].opts
        with torch.inference_mode():
            mel = torch.stack([req.piece_mels[i][0] for req, i in batch]).to(self.device)
            t0 = time.perf_counter()
            post = self.acoustic.postnet_forward(mel).float()
            t1 = time.perf_counter()
            audio = self.vocoder.infer(post.to(self.vocoder_dtype), sigma=o.sigma, generator=gen).float()
            t2 = time.perf_counter()
            if o.denoiser_strength:
                audio = self.denoiser(audio, strength=o.denoiser_strength).reshape(len(batch), -1)
            audio = audio.cpu()
            post = post.cpu()
            t3 = time.perf_counter()
        self.vocoder_batch_sizes.append(len(batch))
        for j, (req, i) in enumerate(batch):
            n = req.piece_mels[i][1]
            pieces[(id(req), i)] = (audio[j, :HOP * n], post[j])
            tm = times[id(req)]
            tm[0], tm[1], tm[2] = tm[0] + t1 - t0, tm[1] + t2 - t1, tm[2] + t3 - t2

    def _resolve(self, req: _Request, outcome: ScheduledOutcome) -> None:
        def resolve():
            if req.done is not None and not req.done.done():
                req.done.set_result(outcome)

        req.loop.call_soon_threadsafe(resolve)


def _batches(items: list, cap: int) -> list[list]:
    """``items`` cut into runs of power-of-two lengths <= ``cap``, largest first (few vocoder shapes)."""
    out = []
    while items:
        n = 1 << (min(cap, len(items)).bit_length() - 1)
        out.append(items[:n])
        items = items[n:]
    return out
