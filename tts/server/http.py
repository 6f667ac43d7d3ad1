"""The OpenAI-compatible HTTP door: FastAPI on uvicorn, in the gRPC server's process and event loop.

``HTTPFrontEnd`` is started and stopped by ``tts.server.app.TTSServer`` (with
``ServerConfig.http_port``); it shares the server's ``ServingEngine`` (so
HTTP and gRPC calls batch together), its validation (``validate_request``:
the same text limit, voices and option ranges), its bearer tokens
(``interceptors.bearer_ok``), its TLS material and its metrics.

Endpoints (``/docs`` shows them with their bodies):

- ``POST /v1/audio/speech``: OpenAI's speech call. The audio is streamed as
  the engine makes it (``ServingEngine.stream``, chunked transfer) in the
  asked ``response_format`` (``tts.server.stream_encode``: mp3, opus, wav,
  pcm as they come, flac whole at the end); ``aac`` is refused with 400.
  OpenAI's voice names speak with the default voice; ``speed`` is the
  speaking rate option; ``instructions`` is ignored.
- ``GET /v1/audio/voices``, ``GET /v1/models`` (and ``/v1/models/{id}``).
- ``GET /health`` (200 while the process serves), ``GET /ready`` (200 once
  warmed up and bound, 503 while draining), ``/docs``, ``/openapi.json``.

Every error has OpenAI's shape ``{"error": {"message", "type", "param",
"code"}}``: 400 for bad input (invalid JSON and FastAPI's validation errors
included), 401 without a valid token (``/v1/*`` only, as gRPC health stays
open), 404/405 for unknown routes, 413 for input over the text limit or a
body over ``max_body_bytes``, 429 when the queue is full, 503 while
draining, 500 only for a fault of the server (logged with its request id).

Word timings: with ``"timestamps": true`` (this server's extension of the body) the reply is one
JSON body, the whole audio in base64 beside the words the engine's pieces carried
(``SpeechCall.words``); OpenAI's ``stream_format: "sse"`` is refused with 400.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
import ssl
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence

import numpy as np
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, StreamingResponse

from tts.errors import InvalidInputError, TTSError
from tts.server import http_models as m
from tts.server.drain import DrainGate
from tts.server.errors import DeadlineExpiredError, QueueFullError, ShuttingDownError
from tts.server.interceptors import bearer_ok, request_id
from tts.server.stream_encode import CONTENT_TYPES, format_rate, open_encoder

logger = logging.getLogger(__name__)

#: Longest voice or model name quoted back in an error message.
MAX_QUOTED_CHARS = 64

#: Label of ``POST /v1/audio/speech`` in ``tts_requests_total{method}`` (its code label is the HTTP status).
METRICS_METHOD = "http.speech"


class HTTPError(StarletteHTTPException):
    """An error response in OpenAI's shape (a Starlette HTTPException, so that FastAPI passes it through
    while it reads a body)."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message, headers)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _quote(name: str) -> str:
    """``name`` for an error message: repr, cut to ``MAX_QUOTED_CHARS`` characters."""
    return repr(name if len(name) <= MAX_QUOTED_CHARS else name[:MAX_QUOTED_CHARS] + "...")


def _client_error(exc: InvalidInputError) -> HTTPError:
    """A validation error of the shared (proto-named) validation, in this API's field names."""
    field = exc.field or ""
    message = str(exc)
    param = {"text": "input", "voice": "voice", "options.speaking_rate": "speed"}.get(field, field or None)
    for old, new in (("options.speaking_rate", "speed"), ("text", "input")):
        if message.startswith(old):
            message = new + message[len(old):]
            break
    return HTTPError(400, message, param=param, code="invalid_value")


def _mapped(exc: BaseException, rid: str) -> HTTPError:
    """The response of an exception raised while a speech call starts (before any audio was sent)."""
    if isinstance(exc, HTTPError):
        return exc
    if isinstance(exc, InvalidInputError):
        return _client_error(exc)
    if isinstance(exc, QueueFullError):
        return HTTPError(429, f"server overloaded: {exc}", type="server_overloaded", code="queue_full",
                         headers={"Retry-After": "1"})
    if isinstance(exc, ShuttingDownError):
        return HTTPError(503, str(exc), type="server_unavailable", code="draining", headers={"Retry-After": "1"})
    if isinstance(exc, DeadlineExpiredError):
        return HTTPError(504, str(exc), type="timeout", code="deadline_exceeded")
    return HTTPError(500, f"internal error (request id {rid}); the server logged the details", type="server_error",
                     code="internal_error")


# --------------------------------------------------------------------------- sockets and TLS

def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` as the gRPC server binds (address reuse on, IPv6 wildcard
    dual-stack); raises OSError when it cannot be bound."""
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    infos = socket.getaddrinfo(name or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    infos.sort(key=lambda info: info[0] != socket.AF_INET6)       # IPv6 first: dual-stack covers both
    error: OSError | None = None
    for family, kind, proto, _, addr in infos:
        try:
            sock = socket.socket(family, kind, proto)
        except OSError as exc:          # e.g. no IPv6 here
            error = exc
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(addr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError(f"no address for {host}")


def ssl_context(cert: bytes, key: bytes, client_ca: bytes | None = None) -> ssl.SSLContext:
    """A server TLS context from PEM bytes (``TLSConfig``); with ``client_ca``, client certificates are
    required. Python loads a key only from a path: an anonymous in-memory file holds the PEM (on
    Linux); elsewhere a private temporary file, removed at once."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with contextlib.ExitStack() as stack:
        paths = []
        for data in (cert, key):
            if hasattr(os, "memfd_create"):
                fd = os.memfd_create("tts-tls", os.MFD_CLOEXEC)
                stack.callback(os.close, fd)
                os.write(fd, data)
                paths.append(f"/proc/self/fd/{fd}")
            else:                                             # pragma: no cover - not Linux
                f = stack.enter_context(tempfile.NamedTemporaryFile(suffix=".pem"))
                f.write(data)
                f.flush()
                paths.append(f.name)
        ctx.load_cert_chain(paths[0], paths[1])
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=client_ca.decode("ascii"))
    return ctx


# --------------------------------------------------------------------------- one speech call

class SpeechCall:
    """One ``POST /v1/audio/speech`` from its validated body to the last byte (or the client leaving)."""

    def __init__(self, front: HTTPFrontEnd, voice: str, text, options, fmt: str, rid: str, *,
                 timestamps: bool = False) -> None:
        self.front, self.voice, self.text, self.options, self.fmt, self.rid = front, voice, text, options, fmt, rid
        #: ``"timestamps": true``: the engine computes the words' times (else it computes none).
        self.timestamps = timestamps
        self.voice_rate = front.engine.sample_rate(voice)
        self.rate = format_rate(fmt, self.voice_rate)
        self.t0 = time.perf_counter()
        self.samples = 0
        self.first_audio_s: float | None = None
        #: The last piece of the stream (normalized text; word timings once the engine sends them).
        self.last_piece = None
        #: Word timings the pieces carried so far (``tts.timings.WordTiming``).
        self.words: list = []
        self._pieces: AsyncIterator | None = None
        self._first = None
        self._closed = False

    async def begin(self) -> None:
        """Starts synthesis and waits for the first piece, so that errors before any audio (a full queue)
        still get their status."""
        asked = {"word_timings": True} if self.timestamps else {}         # else the engine's default: none
        self._pieces = self.front.engine.stream(self.voice, self.text, self.options, **asked).__aiter__()
        self._first = await self._pieces.__anext__()

    async def body(self) -> AsyncIterator[bytes]:
        """Encoded bytes as the pieces come."""
        encoder = open_encoder(self.fmt, self.rate)
        heavy = self.fmt not in ("pcm", "wav")          # codecs run off the event loop
        held: list[np.ndarray] = []                      # audio waiting for resampling (rate changes only)
        piece = self._first
        while True:
            self.words.extend(piece.words)
            audio = np.asarray(piece.audio, dtype=np.float32).reshape(-1)
            if self.rate != self.voice_rate:
                held.append(audio)
                audio = self._resampled(held) if piece.last else np.zeros(0, np.float32)
            self.samples += len(audio)
            data = b""
            if len(audio):
                data = await asyncio.to_thread(encoder.push, audio) if heavy else encoder.push(audio)
            if piece.last:
                self.last_piece = piece
                data += await asyncio.to_thread(encoder.finish) if heavy else encoder.finish()
            if data:
                if self.first_audio_s is None:
                    self.first_audio_s = time.perf_counter() - self.t0
                yield data
            if piece.last:
                return
            piece = await self._pieces.__anext__()

    def _resampled(self, held: list[np.ndarray]) -> np.ndarray:
        """The whole audio at the format's rate, resampled in one go as the unary gRPC path does (exact
        at piece borders; such formats start sending once the audio is complete)."""
        from tts.audio import resample

        return resample(np.concatenate(held), self.voice_rate, self.rate)

    async def close(self) -> None:
        """Closes the engine's stream: a call that ends early (failed, or its client left) frees its queue
        slot and decoder rows here."""
        if self._closed:
            return
        self._closed = True
        if self._pieces is not None:
            with contextlib.suppress(Exception):
                await self._pieces.aclose()

    async def finish(self, error: BaseException | None = None) -> None:
        """The response ended (sent, cut short by ``error``, or its client left): close and record the call."""
        if not self._closed:
            await self.close()
            self.front.record(self, error)


class SpeechResponse(StreamingResponse):
    """Streams a ``SpeechCall`` and finishes it however the response ends (done, failed, client gone).

    A failure after the status went out can only cut the response short (the
    client sees an incomplete chunked body): it is logged here, once.
    """

    def __init__(self, call: SpeechCall, **kwargs) -> None:
        super().__init__(self._guarded(call), **kwargs)
        self.call = call
        self._error: BaseException | None = None

    async def _guarded(self, call: SpeechCall):
        try:
            async for data in call.body():
                yield data
        except Exception as exc:
            self._error = exc
            raise

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except Exception as exc:        # noqa: BLE001 - logged, and the response is cut short
            exc = self._error or exc
            rid = self.call.rid
            if isinstance(exc, OSError) or (isinstance(exc, TTSError) and _mapped(exc, rid).status < 500):
                logger.info("request %s: response cut short: %s", rid, exc)
            else:
                logger.error("request %s: internal error while streaming; the response is cut short", rid,
                             exc_info=exc)
            self._error = exc
        finally:
            await self.call.finish(self._error)


# --------------------------------------------------------------------------- the front end

class HTTPFrontEnd(DrainGate):
    """The HTTP door of one ``TTSServer``: app, socket, uvicorn server, drain and in-flight counting."""

    def __init__(self, engine, *, max_text_chars: int, tokens: Sequence[str] = (), max_body_bytes: int = 1 << 20,
                 tls=None, metrics=None) -> None:
        self.engine = engine
        self.max_text_chars = max_text_chars
        self.tokens = [t.encode() for t in tokens if t]
        self.max_body_bytes = max_body_bytes
        self.tls = tls
        self.metrics = metrics
        self.ready = False
        self.port: int | None = None
        DrainGate.__init__(self)
        self._socket: socket.socket | None = None
        self._server = None
        self._task: asyncio.Task | None = None
        self.app = build_app(self)

    # ----------------------------------------------------------------- lifecycle
    def bind(self, host: str, port: int) -> int:
        """Binds the port now (raises OSError); serving starts with ``start``."""
        self._socket = bind_socket(host, port)
        self.port = int(self._socket.getsockname()[1])
        return self.port

    async def start(self) -> None:
        """Serves on the bound socket (uvicorn in this event loop); ready from now on."""
        import uvicorn

        class _Server(uvicorn.Server):
            def capture_signals(self):      # SIGTERM/SIGINT belong to TTSServer (it drains both doors)
                return contextlib.nullcontext()

        ctx = ssl_context(self.tls.cert, self.tls.key, self.tls.client_ca) if self.tls is not None else None
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off", server_header=False,
                                ssl_context_factory=(lambda _config, _default: ctx) if ctx is not None else None)
        self._server = _Server(config)
        self._task = asyncio.ensure_future(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():       # failed to start: its exception (or a plain error) surfaces here
                self._task.result()
                raise OSError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)
        self.ready = True
        logger.info("HTTP (OpenAI-compatible) on port %d%s", self.port, " with TLS" if ctx is not None else "")

    async def close(self, timeout: float = 5.0) -> None:
        """Stops accepting, closes idle connections, lets responses end (up to ``timeout`` s), stops."""
        self.ready = False
        server, self._server = self._server, None
        task, self._task = self._task, None
        if server is not None and task is not None:
            server.config.timeout_graceful_shutdown = max(0.1, timeout)
            server.should_exit = True
            try:
                await task
            except Exception:           # noqa: BLE001 - stopping must go on
                logger.exception("HTTP server failed while stopping")
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    # ----------------------------------------------------------------- calls
    def enter(self) -> None:
        if self.draining:
            raise HTTPError(503, "server is shutting down and takes no new calls; retry elsewhere",
                            type="server_unavailable", code="draining", headers={"Retry-After": "1"})
        self._enter()
        if self.metrics is not None:
            self.metrics.inflight.inc()

    def leave(self) -> None:
        self._leave()
        if self.metrics is not None:
            self.metrics.inflight.dec()

    def count(self, status: int, seconds: float | None = None) -> None:
        if self.metrics is not None:
            self.metrics.requests.labels(METRICS_METHOD, str(status)).inc()
            if seconds is not None:
                self.metrics.latency.labels(METRICS_METHOD).observe(seconds)

    def record(self, call: SpeechCall, error: BaseException | None) -> None:
        """A speech call ended (after its response started): metrics, in-flight count."""
        total = time.perf_counter() - call.t0
        self.leave()
        self.count(200 if error is None else 500, total)
        m_ = self.metrics
        if m_ is not None and call.samples:
            seconds = call.samples / call.rate
            m_.audio_seconds.inc(seconds)
            if total > 0:
                m_.rtf.observe(seconds / total)
            if call.first_audio_s is not None:
                m_.ttfa.observe(call.first_audio_s)
        logger.debug("request %s: %s %d samples at %d Hz in %.3fs", call.rid, call.fmt, call.samples, call.rate,
                     total)

    def resolve_voice(self, voice) -> str:
        name = voice.id if isinstance(voice, m.VoiceId) else voice
        if name in self.engine.voice_names:
            return name
        if name.lower() in m.OPENAI_VOICES:
            return self.engine.default_voice
        raise HTTPError(400, f"voice: unknown voice {_quote(name)}; available: "
                             f"{', '.join(sorted(self.engine.voice_names))}, or an OpenAI voice name "
                             f"({', '.join(m.OPENAI_VOICES)}) for the default voice",
                        param="voice", code="voice_not_found")

    def check(self, req: m.SpeechRequest):
        """The body's checks beyond its types: model, format, voice, text (the shared validation).
        Returns (voice, text plan, options, format)."""
        from tts.server.proto_gen import tts_pb2
        from tts.server.validation import validate_request

        if req.model not in m.MODELS:
            raise HTTPError(400, f"model: unknown model {_quote(req.model)}; use one of {', '.join(m.MODELS)}",
                            param="model", code="model_not_found")
        fmt = req.response_format
        if fmt not in m.FORMATS:
            what = "aac is not supported by this server" if fmt == "aac" else \
                f"{_quote(fmt)} is not a response format"
            raise HTTPError(400, f"response_format: {what}; supported: {', '.join(m.FORMATS)}",
                            param="response_format", code="unsupported_response_format")
        if req.stream_format not in (None, "audio"):
            raise HTTPError(400, f"stream_format: {_quote(req.stream_format)} is not supported; leave it out or "
                                 "use audio", param="stream_format", code="unsupported_stream_format")
        voice = self.resolve_voice(req.voice)
        if len(req.input) > self.max_text_chars:
            raise HTTPError(413, f"input: {len(req.input)} characters is over the maximum of {self.max_text_chars}",
                            param="input", code="string_above_max_length")
        try:
            req.input.encode("utf-8")
        except UnicodeEncodeError:          # JSON's lone surrogate escapes ("\ud800") are not text
            raise HTTPError(400, "input: is not valid Unicode text (it has a lone surrogate such as \\ud800)",
                            param="input", code="invalid_value") from None
        msg = tts_pb2.SynthesizeRequest(text=req.input, voice=voice, encoding=tts_pb2.LINEAR_PCM16)
        if req.speed is not None:
            msg.options.speaking_rate = req.speed
        valid = validate_request(msg, voices=self.engine.voice_names, default_voice=self.engine.default_voice,
                                 max_text_chars=self.max_text_chars, streaming=True)
        plan = self.engine.check_text(valid.voice, valid.text, valid.options)
        return valid.voice, (valid.text if plan is None else plan), valid.options, fmt

    async def speech(self, req: m.SpeechRequest):
        """``POST /v1/audio/speech``: checks, starts synthesis, returns the streaming response."""
        rid = request_id.get()
        t0 = time.perf_counter()
        self.enter()
        call = None
        try:
            voice, text, options, fmt = self.check(req)
            call = SpeechCall(self, voice, text, options, fmt, rid, timestamps=bool(req.timestamps))
            await call.begin()
        except BaseException as exc:
            error = _mapped(exc, rid) if isinstance(exc, Exception) else None
            if call is not None:
                await call.close()
            self.leave()
            if error is None:           # cancelled: the client left
                raise
            self.count(error.status, time.perf_counter() - t0)
            if error.status >= 500 and error.code == "internal_error":
                logger.error("request %s failed with an internal error", rid, exc_info=exc)
            else:
                logger.info("request %s: %d: %s", rid, error.status, error.message)
            raise error from None
        headers = {"X-Sample-Rate": str(call.rate), "X-Voice": voice}
        if req.timestamps:
            return await self._with_timestamps(call, headers)
        return SpeechResponse(call, media_type=CONTENT_TYPES[fmt], headers=headers)

    async def _with_timestamps(self, call: SpeechCall, headers: dict) -> JSONResponse:
        """The whole audio and its word timings as one JSON body (``"timestamps": true``)."""
        error: BaseException | None = None
        try:
            data = b"".join([chunk async for chunk in call.body()])
        except BaseException as exc:
            error = exc
            raise _mapped(exc, call.rid) if isinstance(exc, Exception) else exc from None
        finally:
            await call.finish(error)
        last = call.last_piece
        body = m.SpeechWithTimestamps(
            audio=base64.b64encode(data).decode("ascii"), format=call.fmt, sample_rate=call.rate,
            normalized_text=getattr(last, "normalized_text", "") or "",
            words=[m.WordTimingOut(word=w.word, start=round(w.start_s, 4), end=round(w.end_s, 4),
                                   char_start=w.char_start, char_end=w.char_end) for w in call.words])
        return JSONResponse(body.model_dump(), headers=headers)


# --------------------------------------------------------------------------- the app

#: Paths open without a token (probes and docs), as gRPC health is.
OPEN_PATHS = ("/health", "/ready", "/docs", "/docs/oauth2-redirect", "/openapi.json")


class _EdgeMiddleware:
    """Request id (``X-Request-Id`` in and out), bearer-token auth of ``/v1/*`` and the body size limit,
    before FastAPI reads anything."""

    def __init__(self, app, front: HTTPFrontEnd) -> None:
        self.app = app
        self.front = front

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        rid = new_request_id(headers.get("x-request-id"))
        request_id.set(rid)

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            await send(message)

        front = self.front
        error = None
        if front.tokens and scope["path"] not in OPEN_PATHS \
                and not bearer_ok(headers.get("authorization", ""), front.tokens):
            error = HTTPError(401, "missing or invalid bearer token (header 'Authorization: Bearer <token>')",
                              code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        elif (size := headers.get("content-length", "")).isdigit() and int(size) > front.max_body_bytes:
            error = _body_too_large(front.max_body_bytes)
        if error is not None:
            logger.info("request %s: %d: %s", rid, error.status, error.message)
            if scope["path"] == "/v1/audio/speech":
                front.count(error.status)
            await _json_error(error)(scope, receive, send_with_id)
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > front.max_body_bytes:         # a chunked body without a length
                    raise _body_too_large(front.max_body_bytes)
            return message

        await self.app(scope, limited_receive, send_with_id)


def _body_too_large(limit: int) -> HTTPError:
    return HTTPError(413, f"request body is over the limit of {limit} bytes", code="request_too_large")


def _json_error(error: HTTPError):
    from starlette.responses import JSONResponse

    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _validation_error(exc) -> HTTPError:
    """FastAPI's request validation error (422) as a 400 naming the first problem."""
    errors = list(exc.errors()) or [{"type": "", "loc": ("body",), "msg": "invalid request"}]
    e = errors[0]
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    param = loc[0] if loc else None
    kind = e.get("type", "")
    if kind == "json_invalid":
        detail = (e.get("ctx") or {}).get("error", "")
        return HTTPError(400, f"the body is not valid JSON ({detail})" if detail else "the body is not valid JSON",
                         code="invalid_json")
    if not loc:
        return HTTPError(400, "the body must be a JSON object with model, input and voice "
                              "(Content-Type: application/json)", code="invalid_body")
    if kind == "missing":
        return HTTPError(400, f"{param}: a value is required", param=param, code="missing_required_parameter")
    where = ".".join(loc)
    return HTTPError(400, f"{where}: {e.get('msg', 'invalid value')}", param=param, code="invalid_value")


def build_app(front: HTTPFrontEnd):
    """The FastAPI app of ``front`` (routes, OpenAI-shaped errors, the edge middleware)."""
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.security import HTTPBearer
    from starlette.responses import JSONResponse

    from tts import __version__

    app = FastAPI(title="tts-serve: OpenAI-compatible speech API", version=__version__,
                  description="POST /v1/audio/speech as OpenAI's API; the same server also speaks gRPC tts.v1.")
    app.add_middleware(_EdgeMiddleware, front=front)
    errors = {code: {"model": m.ErrorResponse} for code in (400, 401, 413, 429, 500, 503)}
    bearer = [Depends(HTTPBearer(auto_error=False))]         # documents the token in /docs; checked at the edge

    @app.exception_handler(HTTPError)
    async def on_http_error(request: Request, exc: HTTPError):
        return _json_error(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError):
        error = _validation_error(exc)
        logger.info("request %s: 400: %s", request_id.get(), error.message)
        if request.url.path == "/v1/audio/speech":
            front.count(400)
        return _json_error(error)

    @app.exception_handler(StarletteHTTPException)
    async def on_starlette_error(request: Request, exc: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return _json_error(HTTPError(exc.status_code, message, code=kind, headers=dict(exc.headers or {})))

    @app.post("/v1/audio/speech", response_class=JSONResponse, dependencies=bearer, summary="Speak text",
              responses={200: {"description": "the audio, streamed as it is made",
                               "content": {t.split(";")[0]: {} for t in CONTENT_TYPES.values()}}, **errors})
    async def speech(body: m.SpeechRequest):
        return await front.speech(body)

    @app.get("/v1/audio/voices", response_model=m.VoiceList, dependencies=bearer, responses=errors,
             summary="The voices of this server and the OpenAI voice names")
    async def voices():
        default = front.engine.default_voice
        return m.VoiceList(
            voices=[m.VoiceEntry(name=v.name, sample_rate=v.sample_rate, acoustic_model=v.acoustic_model,
                                 default=v.is_default) for v in front.engine.voices()],
            openai_aliases={name: default for name in m.OPENAI_VOICES}, default_voice=default,
            max_input_chars=front.max_text_chars, response_formats=list(m.FORMATS))

    @app.get("/v1/models", response_model=m.ModelList, dependencies=bearer, responses=errors,
             summary="The model ids accepted by /v1/audio/speech")
    async def models():
        return m.ModelList(data=[m.Model(id=name) for name in m.MODELS])

    @app.get("/v1/models/{model_id}", response_model=m.Model, dependencies=bearer,
             responses={**errors, 404: {"model": m.ErrorResponse}})
    async def model(model_id: str):
        if model_id not in m.MODELS:
            raise HTTPError(404, f"model {_quote(model_id)} does not exist; use one of {', '.join(m.MODELS)}",
                            param="model", code="model_not_found")
        return m.Model(id=model_id)

    @app.get("/health", response_model=m.Status, summary="Liveness: 200 while the process serves")
    async def health():
        return m.Status(status="draining" if front.draining else "ok",
                        details={"inflight": front.inflight, "voices": front.engine.voice_names})

    @app.get("/ready", response_model=m.Status, responses={503: {"model": m.ErrorResponse}},
             summary="Readiness: 200 once warmed up and bound, 503 while draining")
    async def ready():
        if front.draining or not front.ready:
            state = "draining" if front.draining else "starting"
            raise HTTPError(503, f"server is {state}", type="server_unavailable", code=state,
                            headers={"Retry-After": "1"})
        return m.Status(status="ready")

    return app


def new_request_id(given: str | None) -> str:
    """The id of a request: the client's ``X-Request-Id`` (its visible ASCII characters, at most 64) or a new one."""
    return "".join(c for c in (given or "") if "!" <= c <= "~")[:64] or uuid.uuid4().hex[:16]
