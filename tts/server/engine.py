"""The serving engine: voices on devices, the dynamic batcher, the Tacotron2 scheduler and streaming.

The servicer (``tts.server.servicer``) only translates protos; everything
that touches models goes through ``ServingEngine``:

- ``synthesize``: unary. FastSpeech voices (and Tacotron2 voices when
  continuous batching is off) go through the ``DynamicBatcher`` into
  ``Synthesizer.synthesize_batch`` on one of the devices. Tacotron2 voices
  with continuous batching go through ``tts.server.scheduler``: their
  decoder rows join and leave the running batch between steps.
- ``stream``: mel frames are vocoded in overlapping chunks as soon as they
  exist (``tts.streaming``) and yielded as float audio pieces.

Synthesizers are duck-typed: anything with ``voice`` (``name``,
``acoustic_kind``), ``sample_rate``, ``check_text(text)`` and
``synthesize_batch(texts, options)`` serves (tests use small fakes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tts.options import SynthesisOptions
from tts.server.batcher import BatcherConfig, DynamicBatcher
from tts.server.errors import DeadlineExpiredError
from tts.server.types import StreamPiece

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthItem:
    """One unary request as the batcher carries it."""

    voice: str
    #: The text, or its ``tts.synthesizer.TextPlan`` (planned once, when the request was validated).
    text: object
    options: SynthesisOptions
    #: Acoustic model only (streaming): the result carries the mel, the audio is vocoded in chunks.
    mel_only: bool = False
    #: The call asked for word timings (items with and without share a batch; only these compute them).
    word_timings: bool = False


@dataclass(frozen=True)
class VoiceInfo:
    """What ListVoices says about a voice."""

    name: str
    sample_rate: int
    acoustic_model: str
    is_default: bool


@dataclass
class Outcome:
    """A finished unary synthesis and how it was served."""

    #: ``tts.synthesizer.SynthesisResult`` (or a fake's equivalent).
    result: object
    queue_seconds: float
    batch_size: int
    worker: int


async def _in_daemon_thread(fn, timeout: float | None) -> bool:
    """Runs ``fn()`` in a daemon thread (one a process exit does not wait for); True if it returned
    within ``timeout`` seconds (None = no limit)."""
    import threading

    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def settle(exc: BaseException | None) -> None:
        if not done.done():
            done.set_result(None) if exc is None else done.set_exception(exc)

    def run() -> None:
        exc = None
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - raised in the awaiting coroutine, as to_thread would
            exc = e
        try:
            loop.call_soon_threadsafe(settle, exc)
        except RuntimeError:        # the loop is gone: nobody waits any more
            pass

    threading.Thread(target=run, name="engine-close", daemon=True).start()
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout)
        return True
    except asyncio.TimeoutError:
        return False


class ServingEngine:
    """Voices on devices behind a dynamic batcher (and, for Tacotron2, a continuous scheduler).

    Args:
        synthesizers: voice name -> one synthesizer per device (same order of devices for every voice).
        default_voice: name used when a request leaves ``voice`` empty.
        batcher: dynamic batching limits.
        metrics: optional ``ServerMetrics``.
        continuous: use the continuous-batching scheduler for Tacotron2 voices.
        stream_chunk_frames: mel frames per streamed vocoder chunk.
        scheduler_options: keyword arguments of every ``TacotronScheduler`` (e.g. ``decoder="slots"``
            to run the slot decoder on CPU); read when ``start`` makes the schedulers.
    """

    def __init__(self, synthesizers: Mapping[str, Sequence[object]], *, default_voice: str | None = None,
                 batcher: BatcherConfig = BatcherConfig(), metrics=None, continuous: bool = True,
                 stream_chunk_frames: int = 32, stream_overlap_frames: int = 8,
                 stream_first_chunk_frames: int = 8, scheduler_options: Mapping[str, object] | None = None) -> None:
        if not synthesizers:
            raise ValueError("ServingEngine needs at least one voice")
        counts = {len(v) for v in synthesizers.values()}
        if len(counts) != 1 or 0 in counts:
            raise ValueError("every voice needs one synthesizer per device")
        self.synthesizers = {k: list(v) for k, v in synthesizers.items()}
        self.default_voice = default_voice or next(iter(synthesizers))
        if self.default_voice not in self.synthesizers:
            raise ValueError(f"default voice {self.default_voice!r} is not loaded")
        self.n_workers = counts.pop()
        self.metrics = metrics
        self.continuous = continuous
        self.stream_chunk_frames = stream_chunk_frames
        self.stream_overlap_frames = stream_overlap_frames
        self.stream_first_chunk_frames = stream_first_chunk_frames
        self.scheduler_options = dict(scheduler_options or {})
        fns = [self._batch_fn(i) for i in range(self.n_workers)]
        #: Calls on their way through the dynamic batcher (from before their first submit to after
        #: their last): when all of them are queued, the batcher sends them without its delay.
        self.batcher_calls = 0
        self.batcher: DynamicBatcher[SynthItem, object] = DynamicBatcher(
            fns, batcher, on_batch=self._on_batch, name="synth", in_flight=lambda: self.batcher_calls)
        self.schedulers: dict[str, list] = {}
        self._started = False

    # ------------------------------------------------------------------ info
    @property
    def voice_names(self) -> list[str]:
        return list(self.synthesizers)

    def voices(self) -> list[VoiceInfo]:
        out = []
        for name, synths in self.synthesizers.items():
            s = synths[0]
            out.append(VoiceInfo(name=name, sample_rate=int(s.sample_rate),
                                 acoustic_model=str(s.voice.acoustic_kind), is_default=name == self.default_voice))
        return out

    def sample_rate(self, voice: str) -> int:
        return int(self.synthesizers[voice][0].sample_rate)

    @property
    def queue_depth(self) -> int:
        return self.batcher.queue_depth + sum(s.queue_depth for ss in self.schedulers.values() for s in ss)

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Starts the batcher workers and the Tacotron2 schedulers."""
        if self._started:
            return
        await self.batcher.start()
        if self.continuous:
            for name, synths in self.synthesizers.items():
                if getattr(synths[0].voice, "acoustic_kind", "") == "tacotron2" and hasattr(synths[0], "device"):
                    from tts.server.scheduler import TacotronScheduler

                    opts = {"max_queue": self.batcher.config.max_queue_size, **self.scheduler_options}
                    self.schedulers[name] = [TacotronScheduler(s, metrics=self.metrics, **opts) for s in synths]
            for ss in self.schedulers.values():
                for s in ss:
                    s.start()
        self._started = True

    async def close(self, timeout: float | None = None) -> bool:
        """Finishes queued work, then stops workers and schedulers. With ``timeout``, waits that many
        seconds at most and abandons what still runs; True if everything finished."""
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout

        def left() -> float | None:
            return None if end is None else max(0.0, end - loop.time())

        finished = await self.batcher.close(timeout=left())
        for ss in self.schedulers.values():
            for s in ss:
                finished = await _in_daemon_thread(s.close, left()) and finished
        self._started = False
        return finished

    def warmup(self, text: str = "Warm up.") -> None:
        """Runs every voice once on every device (blocking), so the first call is not slow."""
        for name, synths in self.synthesizers.items():
            for s in synths:
                t0 = time.perf_counter()
                s.synthesize_batch([text], SynthesisOptions(seed=0))
                logger.info("warmed up voice %s on %s in %.2fs", name, getattr(s, "device", "?"),
                            time.perf_counter() - t0)
        from tts.streaming import StreamConfig
        for scheds in self.schedulers.values():
            for sched in scheds:
                sched.warmup(stream=StreamConfig(chunk_frames=self.stream_chunk_frames,   # graphs, if any
                                                 overlap_frames=self.stream_overlap_frames,
                                                 first_chunk_frames=self.stream_first_chunk_frames))

    # --------------------------------------------------------------- checks
    def check_text(self, voice: str, text: str, options: SynthesisOptions | None = None, *, lexicon=None):
        """Raises InvalidInputError(field='text') for text the voice cannot speak; returns the text's
        plan (``tts.synthesizer.TextPlan``: the request's only text planning, read with the call's
        ``text_normalizer`` and, on top of the server's, the call's ``lexicon``), or None from a fake."""
        if lexicon is not None:
            return self.synthesizers[voice][0].check_text(text, options, lexicon=lexicon)
        return self.synthesizers[voice][0].check_text(text, options)

    # ------------------------------------------------------------------ unary
    def _scheduler_for(self, voice: str, options: SynthesisOptions):
        """The least-loaded Tacotron2 scheduler for this call, or None for the dynamic batcher."""
        scheds = self.schedulers.get(voice)
        if not scheds:
            return None
        merged = options.merged_over(self.synthesizers[voice][0].voice.defaults)
        if merged.seed is not None and merged.prenet_dropout:
            return None   # reproducible dropout masks need a batch of its own
        return min(scheds, key=lambda s: s.load)

    async def synthesize(self, voice: str, text, options: SynthesisOptions,
                         deadline: float | None = None, *, word_timings: bool = False) -> Outcome:
        """Synthesizes one text (``str`` or its ``TextPlan`` from ``check_text``) whole; ``deadline``
        is a ``time.monotonic()`` value; ``word_timings``: the result carries its words' times
        (else none are computed)."""
        sched = self._scheduler_for(voice, options)
        if sched is not None:
            out = await sched.synthesize(text, options, deadline=deadline, word_timings=word_timings)
            if self.metrics is not None:
                self.metrics.batch_size.labels("decoder").observe(out.batch_size)
            return Outcome(result=out.result, queue_seconds=out.queue_seconds, batch_size=out.batch_size,
                           worker=self.schedulers[voice].index(sched))
        self.batcher_calls += 1
        try:
            return await self._batched(voice, text, options, deadline, word_timings)
        finally:
            self.batcher_calls -= 1

    async def _batched(self, voice: str, text, options: SynthesisOptions, deadline: float | None,
                       word_timings: bool) -> Outcome:
        parts = self._parts(voice, text, options)
        if len(parts) == 1:
            b = await self.batcher.submit(SynthItem(voice, text, options, word_timings=word_timings),
                                          key=(voice, options), deadline=deadline)
            return Outcome(result=b.result, queue_seconds=b.queue_seconds, batch_size=b.batch_size, worker=b.worker)
        # A long text goes in parts, one after another, so other calls' pieces interleave with its
        # own (a short call waits for at most one batch), and a call whose deadline passed or whose
        # client left stops before its next part.
        done = []
        for part in parts:
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExpiredError("deadline passed during synthesis")
            done.append(await self.batcher.submit(SynthItem(voice, part, options, word_timings=word_timings),
                                                  key=(voice, options), deadline=deadline))
        from tts.synthesizer import SynthesisResult

        return Outcome(result=SynthesisResult.joined(text, [b.result for b in done]),
                       queue_seconds=done[0].queue_seconds, batch_size=max(b.batch_size for b in done),
                       worker=done[0].worker)

    def _parts(self, voice: str, text, options: SynthesisOptions) -> list:
        """``text`` cut into parts of at most half a batch of pieces, or ``[text]`` when it is not cut
        (a fake's text, a short one, or a seeded call: its pieces draw noise from one generator)."""
        size = max(1, self.batcher.config.max_batch_size // 2)
        if not hasattr(text, "split") or isinstance(text, str) or len(text.pieces) <= size:
            return [text]
        if options.merged_over(self.synthesizers[voice][0].voice.defaults).seed is not None:
            return [text]
        return text.split(size)

    def _batch_fn(self, worker: int):
        def run(items: list[SynthItem]) -> list[object]:
            synth = self.synthesizers[items[0].voice][worker]
            texts = [it.text for it in items]
            timed = [it.word_timings for it in items]
            if items[0].mel_only and hasattr(synth, "device"):
                from tts.server.acoustic import acoustic_mels

                return acoustic_mels(synth, texts, items[0].options, word_timings=timed)
            if any(timed):
                return synth.synthesize_batch(texts, items[0].options, word_timings=timed)
            return synth.synthesize_batch(texts, items[0].options)      # no timings (the default)

        return run

    def _on_batch(self, worker: int, size: int, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.observe_batch("synthesize", size, seconds)

    # -------------------------------------------------------------- streaming
    async def stream(self, voice: str, text, options: SynthesisOptions,
                     deadline: float | None = None, *, word_timings: bool = False) -> AsyncIterator[StreamPiece]:
        """Yields audio pieces as they are vocoded; their concatenation is the utterance (``text``: a
        ``str`` or its ``TextPlan``). A vocoder that cannot work in chunks (Griffin-Lim from random
        phases finds each phase from the whole spectrogram) makes the whole audio first, then sends
        it in chunks; Griffin-Lim with a PGHI start continues its phase from chunk to chunk
        (``tts.streaming``), so it streams as WaveGlow does.
        ``word_timings``: pieces carry the words they complete (else none are computed)."""
        sched = self._scheduler_for(voice, options) if self._vocodes_in_chunks(voice) else None
        if sched is not None:
            async for piece in sched.stream(text, options, deadline=deadline, chunk_frames=self.stream_chunk_frames,
                                            overlap_frames=self.stream_overlap_frames,
                                            first_chunk_frames=self.stream_first_chunk_frames,
                                            word_timings=word_timings):
                yield piece
            return
        async for piece in self._stream_whole_mel(voice, text, options, deadline, word_timings):
            yield piece

    def _vocodes_in_chunks(self, voice: str) -> bool:
        from tts.streaming import continues_phase

        synth = self.synthesizers[voice][0]
        return (getattr(getattr(synth, "voice", None), "vocoder_kind", "") != "griffinlim"
                or continues_phase(getattr(synth, "vocoder_module", None)))

    def _stream_parts(self, voice: str, text, options: SynthesisOptions) -> list:
        """A stream's parts for ``_stream_whole_mel``: its first piece alone (its first audio waits for
        no other piece's acoustic model), then parts as ``_parts`` cuts them; ``[text]`` where
        ``_parts`` does not cut (a fake's text, one piece, a seeded call)."""
        if not hasattr(text, "split") or isinstance(text, str) or len(text.pieces) == 1:
            return [text]
        if options.merged_over(self.synthesizers[voice][0].voice.defaults).seed is not None:
            return [text]
        import dataclasses

        rest = dataclasses.replace(text, text=" ".join(t for t, _ in text.pieces[1:]), pieces=text.pieces[1:],
                                   cleaned=text.cleaned[1:], dropped="")
        return text.split(1)[:1] + self._parts(voice, rest, options)

    async def _stream_whole_mel(self, voice, text, options, deadline, word_timings) -> AsyncIterator[StreamPiece]:
        """The acoustic model runs part by part (through the batcher), then each part's mel is vocoded
        chunk by chunk: the first piece alone, so the first audio waits only for its own acoustic
        model; the next part's acoustic model runs while this one's audio is vocoded.

        Used for FastSpeech (non-autoregressive: its mel comes in one fast pass)
        and Tacotron2 calls that cannot share a continuous batch. Synthesizers
        without model modules (test fakes) send their unary audio in chunks.
        """
        synth = self.synthesizers[voice][0]
        rate = int(synth.sample_rate)
        mel_only = self._vocodes_in_chunks(voice)
        key = (voice, options, "mel" if mel_only else "audio")
        parts = self._stream_parts(voice, text, options)

        async def acoustic(part):
            self.batcher_calls += 1
            try:
                item = SynthItem(voice, part, options, mel_only=mel_only, word_timings=word_timings)
                return (await self.batcher.submit(item, key=key, deadline=deadline)).result
            finally:
                self.batcher_calls -= 1

        from tts.timings import relocate

        pending = asyncio.ensure_future(acoustic(parts[0]))
        samples, cursor = 0, 0
        try:
            for i in range(len(parts)):
                result = await pending
                pending = asyncio.ensure_future(acoustic(parts[i + 1])) if i + 1 < len(parts) else None
                # known before its audio: sent with its first chunk (times and offsets in the whole text)
                words = tuple(getattr(result, "words", ()))
                if words and len(parts) > 1:
                    words = tuple(relocate(text.text, words, samples / rate, start=cursor))
                    cursor = words[-1].char_end
                async for chunk in self._vocoded(synth, result, options, deadline):
                    samples += len(chunk)
                    yield StreamPiece(audio=chunk, words=words)
                    words = ()
                if words:
                    yield StreamPiece(audio=np.zeros(0, np.float32), words=words)
        finally:
            if pending is not None:                 # the stream ended early: the next part is not needed
                pending.cancel()
                if pending.done() and not pending.cancelled():
                    pending.exception()             # retrieved: a failed prefetch is not reported twice
        normalized = text.normalized_text if len(parts) > 1 else result.normalized_text
        yield StreamPiece(audio=np.zeros(0, np.float32), normalized_text=normalized, last=True)

    async def _vocoded(self, synth, result, options, deadline) -> AsyncIterator[np.ndarray]:
        """The audio of one acoustic result in chunks: its own audio cut up (a vocoder that cannot work in
        chunks, a fake), or its mels vocoded chunk by chunk."""
        if getattr(result, "audio", None) is not None and len(result.audio):
            audio = np.asarray(result.audio, dtype=np.float32)
            step = 256 * self.stream_chunk_frames
            for i in range(0, len(audio), step):
                yield audio[i:i + step]
            return
        from tts.streaming import StreamConfig, stream_vocode_mel

        cfg = StreamConfig(chunk_frames=self.stream_chunk_frames, overlap_frames=self.stream_overlap_frames,
                           first_chunk_frames=self.stream_first_chunk_frames)
        for mel, audio_frames in result.pieces:
            it = stream_vocode_mel(synth, mel, options, config=cfg, audio_frames=audio_frames)
            while True:
                if deadline is not None and time.monotonic() > deadline:
                    raise DeadlineExpiredError("deadline passed while streaming")
                chunk = await asyncio.to_thread(next, it, None)
                if chunk is None:
                    break
                yield chunk
