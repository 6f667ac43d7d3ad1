"""A small Python client for the ``tts.v1.TextToSpeech`` gRPC API.

Example::

    from tts.client import TTSClient

    with TTSClient("127.0.0.1:50051") as c:
        wav = c.synthesize("Hello world.").audio            # WAV bytes
        for chunk in c.stream("Hello again."):              # raw PCM16 chunks
            play(chunk.audio)

TLS: ``TTSClient(target, tls=True, root_cert=pem)``; mTLS adds
``client_cert=``/``client_key=``; a bearer token goes in ``token=``.
Every call answered ``UNAVAILABLE`` (a server restarting, draining, or refusing for a moment)
is retried by gRPC itself, through the channel's retry policy (``RETRY_POLICY``: up to
``MAX_ATTEMPTS`` tries with exponential backoff; a stream only before its first chunk).
``retry_s=60`` keeps retrying for up to 60 s (a server still starting or not there yet); a
server still unreachable then raises ``ServerUnreachableError``.

``AsyncTTSClient`` is the same client for asyncio (``grpc.aio``)::

    async with AsyncTTSClient("127.0.0.1:50051") as c:
        wav = (await c.synthesize("Hello world.")).audio
        async for chunk in c.stream("Hello again."):
            play(chunk.audio)
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

import grpc

from tts.server.proto_gen import tts_pb2, tts_pb2_grpc

logger = logging.getLogger(__name__)

#: Encoding names accepted by ``encoding=`` (the proto enum's names).
ENCODINGS = ("WAV", "LINEAR_PCM16", "FLOAT32", "FLAC", "OGG_OPUS", "MP3", "MULAW", "ALAW")
#: ``encoding`` name -> file suffix used by ``tts-client``.
SUFFIX = {"WAV": ".wav", "FLAC": ".flac", "OGG_OPUS": ".ogg", "LINEAR_PCM16": ".pcm", "FLOAT32": ".f32",
          "MP3": ".mp3", "MULAW": ".ulaw", "ALAW": ".alaw"}

_OPTION_NAMES = ("speaking_rate", "denoiser_strength", "sigma", "seed", "max_decoder_steps", "gate_threshold",
                 "prenet_dropout", "text_normalizer", "stop_rule")


#: Longest pause between two tries of a call answered UNAVAILABLE (and between reconnects), seconds.
MAX_BACKOFF_S = 1.0
#: Tries of one call answered UNAVAILABLE that gRPC's retry policy makes (gRPC caps it at 5).
MAX_ATTEMPTS = 5
#: The channel's retry policy (gRPC service config): UNAVAILABLE is retried for every method of
#: ``tts.v1.TextToSpeech``, with exponential backoff (gRPC draws each pause at random up to the bound).
RETRY_POLICY = {
    "methodConfig": [{
        "name": [{"service": "tts.v1.TextToSpeech"}],
        "retryPolicy": {
            "maxAttempts": MAX_ATTEMPTS,
            "initialBackoff": "0.1s",
            "maxBackoff": f"{MAX_BACKOFF_S:g}s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }]
}


class ServerUnreachableError(ConnectionError, grpc.RpcError):
    """No server answers at the target (refused, unknown host, ...), after any retries.

    Also a ``grpc.RpcError`` with code ``UNAVAILABLE``, as the failed call was.
    """

    def __init__(self, target: str, reason: str, waited_s: float) -> None:
        waited = f" (retried for {waited_s:g} s)" if waited_s > 0 else ""
        super().__init__(f"cannot reach a tts-server at {target}: {reason}{waited}")
        self.target = target
        self.reason = reason

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return str(self)


def channel_options(max_receive_bytes: int = 64 << 20) -> list[tuple[str, Any]]:
    return [("grpc.max_receive_message_length", max_receive_bytes),
            ("grpc.max_send_message_length", 4 << 20),
            # gRPC's own reconnect backoff grows to 120 s; a client waiting for a server
            # that is starting should notice it within a second.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", int(MAX_BACKOFF_S * 1000)),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", json.dumps(RETRY_POLICY))]


def connection_failure(exc: grpc.RpcError) -> str | None:
    """The reason, when an UNAVAILABLE error means no server could be reached (else None)."""
    if exc.code() != grpc.StatusCode.UNAVAILABLE:
        return None
    details = exc.details() or ""
    low = details.lower()
    if not any(k in low for k in ("failed to connect", "connection refused", "dns resolution failed",
                                  "errors resolving", "lookup", "no route to host", "connection reset",
                                  "socket closed", "handshake", "unreachable")):
        return None
    return details.rsplit(": ", 1)[-1].strip(" []") or details


def credentials(*, root_cert: bytes | None = None, client_cert: bytes | None = None,
                client_key: bytes | None = None) -> grpc.ChannelCredentials:
    """TLS channel credentials (``root_cert`` None = the system's roots)."""
    return grpc.ssl_channel_credentials(root_certificates=root_cert, private_key=client_key,
                                        certificate_chain=client_cert)


def make_channel(target: str, *, tls: bool = False, root_cert: bytes | None = None,
                 client_cert: bytes | None = None, client_key: bytes | None = None,
                 server_name: str | None = None, aio: bool = False, max_receive_bytes: int = 64 << 20):
    """A (sync or ``grpc.aio``) channel to ``target`` ("host:port"), plaintext or TLS."""
    opts = channel_options(max_receive_bytes)
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    mod = grpc.aio if aio else grpc
    if tls or root_cert is not None or client_cert is not None:
        creds = credentials(root_cert=root_cert, client_cert=client_cert, client_key=client_key)
        return mod.secure_channel(target, creds, options=opts)
    return mod.insecure_channel(target, options=opts)


def build_request(text: str, *, voice: str = "", encoding: str | int = "WAV", sample_rate_hz: int = 0,
                  options: Mapping[str, Any] | None = None, word_timings: bool = False) -> tts_pb2.SynthesizeRequest:
    """A ``SynthesizeRequest``; ``options`` keys are the proto's option names (``sigma``, ``seed``, ...);
    ``word_timings``: ask for the words' start and end times."""
    enc = tts_pb2.AudioEncoding.Value(encoding) if isinstance(encoding, str) else int(encoding)
    req = tts_pb2.SynthesizeRequest(text=text, voice=voice, encoding=enc, sample_rate_hz=sample_rate_hz,
                                    word_timings=bool(word_timings))
    for key, value in (options or {}).items():
        if key not in _OPTION_NAMES:
            raise ValueError(f"unknown option {key!r}; known: {', '.join(_OPTION_NAMES)}")
        if value is not None:
            setattr(req.options, key, value)
    return req


def metadata(token: str | None = None, request_id: str | None = None) -> list[tuple[str, str]]:
    md = []
    if token:
        md.append(("authorization", f"Bearer {token}"))
    if request_id:
        md.append(("x-request-id", request_id))
    return md


class _ClientBase:
    """What both clients hold: the channel (blocking or ``grpc.aio``), its stub, token and deadlines."""

    _AIO = False

    def __init__(self, target: str, *, token: str | None = None, tls: bool = False,
                 root_cert: bytes | None = None, client_cert: bytes | None = None,
                 client_key: bytes | None = None, server_name: str | None = None,
                 timeout: float | None = 60.0, retry_s: float = 0.0) -> None:
        self.target = target
        self.token = token
        self.timeout = timeout
        self.retry_s = max(0.0, float(retry_s))
        self._waited = False
        self.channel = make_channel(target, tls=tls, root_cert=root_cert, client_cert=client_cert,
                                    client_key=client_key, server_name=server_name, aio=self._AIO)
        self.stub = tts_pb2_grpc.TextToSpeechStub(self.channel)


class TTSClient(_ClientBase):
    """Blocking client. ``timeout`` (seconds) is the default deadline of every call (each try);
    ``retry_s`` how long a call answered ``UNAVAILABLE`` is retried, with backoff (0 = never)."""

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> TTSClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _kw(self, timeout, request_id):
        return {"timeout": self.timeout if timeout is None else timeout,
                "metadata": metadata(self.token, request_id)}

    def _retrying(self, call: Callable[[], Any]) -> Any:
        """``call()``, tried again on UNAVAILABLE for up to ``retry_s`` (backoff 0.1 s doubling to 1 s)."""
        start, delay = time.monotonic(), 0.1
        while True:
            try:
                return call()
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                if self.retry_s > 0 and not self._waited:
                    self._waited = True
                    logger.info("waiting for a tts-server at %s (%s); retrying for up to %.0f s", self.target,
                                connection_failure(exc) or f"UNAVAILABLE: {exc.details()}", self.retry_s)
                waited = time.monotonic() - start
                if waited + delay > self.retry_s:
                    reason = connection_failure(exc)
                    if reason is not None:
                        raise ServerUnreachableError(self.target, reason, self.retry_s) from None
                    raise
                time.sleep(delay)
                delay = min(2 * delay, MAX_BACKOFF_S)

    def synthesize(self, text: str, *, voice: str = "", encoding: str | int = "WAV", sample_rate_hz: int = 0,
                   options: Mapping[str, Any] | None = None, timeout: float | None = None,
                   request_id: str | None = None, word_timings: bool = False) -> tts_pb2.SynthesizeResponse:
        """Whole utterance in one response (raises ``grpc.RpcError`` on failure); ``word_timings``: the
        response's ``words`` say when each word is spoken."""
        req = build_request(text, voice=voice, encoding=encoding, sample_rate_hz=sample_rate_hz, options=options,
                            word_timings=word_timings)
        return self._retrying(lambda: self.stub.Synthesize(req, **self._kw(timeout, request_id)))

    def stream(self, text: str, *, voice: str = "", encoding: str | int = "LINEAR_PCM16",
               sample_rate_hz: int = 0, options: Mapping[str, Any] | None = None,
               timeout: float | None = None, request_id: str | None = None,
               word_timings: bool = False) -> Iterator[tts_pb2.AudioChunk]:
        """Audio chunks as the server produces them (raw LINEAR_PCM16, FLOAT32, MULAW or ALAW); with
        ``word_timings`` each chunk's ``words`` are the words it completes.

        With ``retry_s`` a call refused before its first chunk is retried; once audio has
        arrived an error ends the stream (a retry would repeat audio).
        """
        req = build_request(text, voice=voice, encoding=encoding, sample_rate_hz=sample_rate_hz, options=options,
                            word_timings=word_timings)
        if self.retry_s <= 0:
            return self.stub.StreamingSynthesize(req, **self._kw(timeout, request_id))
        return self._stream_retrying(req, timeout, request_id)

    def _stream_retrying(self, req, timeout, request_id) -> Iterator[tts_pb2.AudioChunk]:
        def first():
            call = self.stub.StreamingSynthesize(req, **self._kw(timeout, request_id))
            return call, next(call, None)
        call, chunk = self._retrying(first)
        if chunk is None:
            return
        yield chunk
        yield from call

    def list_voices(self, timeout: float | None = None) -> tts_pb2.ListVoicesResponse:
        return self._retrying(lambda: self.stub.ListVoices(tts_pb2.ListVoicesRequest(), **self._kw(timeout, None)))

    def health(self, service: str = "", timeout: float | None = 10.0) -> str:
        """``SERVING``, ``NOT_SERVING``, ... from the standard health service."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


class AsyncTTSClient(_ClientBase):
    """``TTSClient`` for asyncio (``grpc.aio``): the same arguments; ``synthesize``, ``list_voices``
    and ``health`` are coroutines, ``stream`` an async iterator. Use it as ``async with``."""

    _AIO = True

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncTTSClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    _kw = TTSClient._kw

    async def _retrying(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """``await call()``, tried again on UNAVAILABLE for up to ``retry_s`` (as ``TTSClient``)."""
        start, delay = time.monotonic(), 0.1
        while True:
            try:
                return await call()
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                if self.retry_s > 0 and not self._waited:
                    self._waited = True
                    logger.info("waiting for a tts-server at %s (%s); retrying for up to %.0f s", self.target,
                                connection_failure(exc) or f"UNAVAILABLE: {exc.details()}", self.retry_s)
                if time.monotonic() - start + delay > self.retry_s:
                    reason = connection_failure(exc)
                    if reason is not None:
                        raise ServerUnreachableError(self.target, reason, self.retry_s) from None
                    raise
                await asyncio.sleep(delay)
                delay = min(2 * delay, MAX_BACKOFF_S)

    async def synthesize(self, text: str, *, voice: str = "", encoding: str | int = "WAV", sample_rate_hz: int = 0,
                         options: Mapping[str, Any] | None = None, timeout: float | None = None,
                         request_id: str | None = None) -> tts_pb2.SynthesizeResponse:
        """Whole utterance in one response (raises ``grpc.RpcError`` on failure)."""
        req = build_request(text, voice=voice, encoding=encoding, sample_rate_hz=sample_rate_hz, options=options)
        return await self._retrying(lambda: self.stub.Synthesize(req, **self._kw(timeout, request_id)))

    async def stream(self, text: str, *, voice: str = "", encoding: str | int = "LINEAR_PCM16",
                     sample_rate_hz: int = 0, options: Mapping[str, Any] | None = None,
                     timeout: float | None = None, request_id: str | None = None) -> AsyncIterator[tts_pb2.AudioChunk]:
        """Audio chunks as the server produces them; with ``retry_s`` a call refused before its first
        chunk is retried, once audio has arrived an error ends the stream."""
        req = build_request(text, voice=voice, encoding=encoding, sample_rate_hz=sample_rate_hz, options=options)

        async def first():
            call = self.stub.StreamingSynthesize(req, **self._kw(timeout, request_id))
            try:
                chunk = await call.read()
            except BaseException:
                call.cancel()
                raise
            return call, chunk

        call, chunk = await self._retrying(first)
        try:
            while chunk is not grpc.aio.EOF:
                yield chunk
                chunk = await call.read()
        finally:
            call.cancel()           # a no-op once the stream ended; frees the call when the caller stops early

    async def list_voices(self, timeout: float | None = None) -> tts_pb2.ListVoicesResponse:
        return await self._retrying(
            lambda: self.stub.ListVoices(tts_pb2.ListVoicesRequest(), **self._kw(timeout, None)))

    async def health(self, service: str = "", timeout: float | None = 10.0) -> str:
        """``SERVING``, ``NOT_SERVING``, ... from the standard health service."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
