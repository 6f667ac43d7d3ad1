"""``tts.v1.TextToSpeech``: protos in, engine calls, protos out.

Errors are raised, never turned into status codes here: the one interceptor
(``tts.server.interceptors``) maps them.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tts.server.audio import Encoding, encode, inline, output_rate, raw_bytes
from tts.server.drain import DrainGate
from tts.server.engine import ServingEngine
from tts.server.errors import ResponseTooLargeError
from tts.server.interceptors import request_id
from tts.server.proto_gen import tts_pb2, tts_pb2_grpc
from tts.server.validation import validate_request

logger = logging.getLogger(__name__)


def _deadline(context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class TextToSpeechServicer(DrainGate, tts_pb2_grpc.TextToSpeechServicer):
    """The public API on top of a ``ServingEngine``; drains through ``DrainGate`` (UNAVAILABLE, answered by
    this servicer, so a caller never sees the transport cancel it)."""

    def __init__(self, engine: ServingEngine, *, max_text_chars: int, metrics=None,
                 max_send_bytes: int | None = None) -> None:
        self.engine = engine
        self.max_text_chars = max_text_chars
        #: Largest reply message (the server's ``grpc.max_send_message_length``); None = no check.
        self.max_send_bytes = max_send_bytes
        self.metrics = metrics
        DrainGate.__init__(self)

    def _validate(self, request, *, streaming: bool):
        req = validate_request(request, voices=self.engine.voice_names, default_voice=self.engine.default_voice,
                               max_text_chars=self.max_text_chars, streaming=streaming)
        plan = self.engine.check_text(req.voice, req.text, req.options)
        return req, (req.text if plan is None else plan)

    async def Synthesize(self, request, context):
        self._enter()
        try:
            return await self._synthesize(request, context)
        finally:
            self._leave()

    async def _synthesize(self, request, context):
        t0 = time.perf_counter()
        req, text = self._validate(request, streaming=False)
        out = await self.engine.synthesize(req.voice, text, req.options, deadline=_deadline(context),
                                           word_timings=req.word_timings)
        result = out.result
        t_enc = time.perf_counter()
        args = (result.audio, result.sample_rate, req.encoding, req.sample_rate_hz)
        # raw samples and WAV are a cast and a copy: done here, without a round trip through a thread
        encoded = encode(*args) if inline(len(result.audio), *args[1:]) else await asyncio.to_thread(encode, *args)
        encode_s = time.perf_counter() - t_enc
        total = time.perf_counter() - t0
        tm = result.timings
        response = tts_pb2.SynthesizeResponse(
            audio=encoded.data, sample_rate_hz=encoded.sample_rate, duration_seconds=encoded.seconds,
            normalized_text=result.normalized_text, voice=req.voice, encoding=int(encoded.encoding),
            dropped_chars=getattr(result, "dropped", ""),
            words=_words_pb(getattr(result, "words", ())) if req.word_timings else (),
            timings=tts_pb2.Timings(
                queue_seconds=out.queue_seconds, text_seconds=tm.text, acoustic_seconds=tm.acoustic,
                vocoder_seconds=tm.vocoder, denoiser_seconds=tm.denoiser, encode_seconds=encode_s,
                total_seconds=total, batch_size=out.batch_size))
        self._check_size(response, req)        # a refused reply is not counted as audio served
        self._observe(out.queue_seconds, tm, encode_s, total, encoded.seconds)
        logger.debug("request %s: %d chars -> %.2fs audio in %.3fs (batch %d)", request_id.get(),
                     len(req.text), encoded.seconds, total, out.batch_size)
        return response

    def _check_size(self, response, req) -> None:
        """A reply over the send limit would fail in gRPC's transport (a traceback, and a call counted
        OK); it is refused here instead, with what to change."""
        if self.max_send_bytes is None:
            return
        size = response.ByteSize()
        if size > self.max_send_bytes:
            raise ResponseTooLargeError(
                f"response: {size} bytes ({response.duration_seconds:.1f} s of {req.encoding.name} audio) is over "
                f"the server's largest message of {self.max_send_bytes} bytes (--max-send-bytes); use "
                "StreamingSynthesize, a compressed encoding (FLAC, OGG_OPUS), a lower sample_rate_hz or a shorter "
                "text")

    async def StreamingSynthesize(self, request, context):
        self._enter()
        try:
            async for chunk in self._stream(request, context):
                yield chunk
        finally:
            self._leave()

    async def _stream(self, request, context):
        t0 = time.perf_counter()
        req, text = self._validate(request, streaming=True)
        src_rate = self.engine.sample_rate(req.voice)
        rate = output_rate(src_rate, req.sample_rate_hz, req.encoding)
        resampler = _StreamResampler(src_rate, rate)
        offset = 0
        first = True
        words: list = []                 # word timings known and not sent yet, in order
        async for piece in self.engine.stream(req.voice, text, req.options, deadline=_deadline(context),
                                              word_timings=req.word_timings):
            words.extend(piece.words if req.word_timings else ())
            samples = resampler.push(piece.audio, final=piece.last)
            if len(samples) == 0 and not piece.last:
                continue
            done = len(words) if piece.last else _ended_by(words, (offset + len(samples)) / rate)
            if first and len(samples) and self.metrics is not None:
                self.metrics.ttfa.observe(time.perf_counter() - t0)
                first = False
            yield tts_pb2.AudioChunk(audio=raw_bytes(samples, req.encoding), sample_rate_hz=rate,
                                     offset_samples=offset, last=piece.last,
                                     normalized_text=piece.normalized_text if piece.last else "",
                                     dropped_chars=getattr(text, "dropped", "") if piece.last else "",
                                     words=_words_pb(words[:done]))
            del words[:done]
            offset += len(samples)
        total = time.perf_counter() - t0
        if self.metrics is not None and total > 0:
            self.metrics.rtf.observe((offset / rate) / total)
            self.metrics.audio_seconds.inc(offset / rate)

    async def ListVoices(self, request, context):
        return tts_pb2.ListVoicesResponse(
            voices=[tts_pb2.Voice(name=v.name, sample_rate_hz=v.sample_rate, acoustic_model=v.acoustic_model,
                                  is_default=v.is_default) for v in self.engine.voices()],
            max_text_chars=self.max_text_chars)

    def _observe(self, queue_s, tm, encode_s, total, audio_s) -> None:
        m = self.metrics
        if m is None:
            return
        for stage, value in (("queue", queue_s), ("text", tm.text), ("acoustic", tm.acoustic),
                             ("vocoder", tm.vocoder), ("denoiser", tm.denoiser), ("encode", encode_s)):
            m.stage.labels(stage).observe(value)
        if total > 0:
            m.rtf.observe(audio_s / total)
        m.audio_seconds.inc(audio_s)


def _words_pb(words) -> list:
    """``tts.timings.WordTiming``s -> ``tts.v1.WordTiming`` messages."""
    return [tts_pb2.WordTiming(word=w.word, start_seconds=w.start_s, end_seconds=w.end_s,
                               char_start=w.char_start, char_end=w.char_end) for w in words]


def _ended_by(words: list, seconds: float) -> int:
    """How many of ``words`` (in order) end within the first ``seconds`` of audio."""
    n = 0
    while n < len(words) and words[n].end_s <= seconds + 1e-9:
        n += 1
    return n


class _StreamResampler:
    """Resamples a stream piece by piece with the same filter as the unary path.

    Exactness at piece borders needs the filter's history; to stay simple and
    exact, pieces are buffered and resampled whole when the rate differs
    (streams at the voice's own rate, the common case, pass straight through).
    """

    def __init__(self, src: int, dst: int) -> None:
        self.src, self.dst = src, dst
        self._buf: list = []

    def push(self, audio, *, final: bool):
        import numpy as np

        from tts.audio import resample

        if self.src == self.dst:
            return audio
        self._buf.append(audio)
        if not final:
            return np.zeros(0, np.float32)
        whole = np.concatenate(self._buf) if self._buf else np.zeros(0, np.float32)
        return resample(whole, self.src, self.dst)
