"""The one place where exceptions become gRPC status codes (plus request ids, auth and call metrics).

Every RPC handler of the server runs inside ``ServingInterceptor``:

- a request id is taken from the ``x-request-id`` metadata or made up, kept
  in ``request_id`` (a context variable) for logs, and returned in the
  trailing metadata;
- with a bearer token configured, calls without ``authorization: Bearer
  <token>`` fail with UNAUTHENTICATED (the health service stays open so load
  balancers can probe it);
- exceptions map to codes in ``status_for``: client mistakes are never
  INTERNAL, and an INTERNAL error is logged with its request id while the
  server keeps serving;
- every finished call is counted by method and code, and timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hmac
import logging
import time
import uuid
from collections.abc import Sequence

import grpc

from tts.errors import InvalidInputError
from tts.server.errors import (AuthError, DeadlineExpiredError, QueueFullError, ResponseTooLargeError,
                               ShuttingDownError, clip)

logger = logging.getLogger(__name__)

#: The id of the call being served (for log lines).
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

#: Methods open without a token.
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


def status_for(exc: BaseException, rid: str) -> tuple[grpc.StatusCode, str]:
    """The status code and message a call ends with when its handler raised ``exc``."""
    code, message = _status_for(exc, rid)
    return code, clip(message, MAX_MESSAGE_CHARS)


def _status_for(exc: BaseException, rid: str) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, InvalidInputError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, (QueueFullError, ResponseTooLargeError)):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, DeadlineExpiredError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)
    if isinstance(exc, ShuttingDownError):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, AuthError):
        return grpc.StatusCode.UNAUTHENTICATED, str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error (request id {rid}); the server logged the details"


def bearer_ok(value: str, tokens: Sequence[bytes]) -> bool:
    """True when ``value`` (an authorization header or metadata value) is ``Bearer <one of tokens>``;
    the comparison takes the same time whatever the token (every door checks tokens here)."""
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return False
    given = token.strip().encode()
    return any(hmac.compare_digest(given, t) for t in tokens)


#: Longest status message sent (gRPC metadata limits are a few KB; a longer one would fail the call).
MAX_MESSAGE_CHARS = 1024


class UndecodableRequest:
    """Stands for a request message that could not be parsed (bad wire format, invalid UTF-8 in a
    string field): the handler answers INVALID_ARGUMENT instead of gRPC's UNKNOWN and traceback."""

    def __init__(self, what: str, exc: Exception) -> None:
        reason = "a string field holds invalid UTF-8" if "utf-8" in str(exc).lower() else "not a valid message"
        self.error = InvalidInputError(f"request: cannot decode the {what} ({reason}); strings must be UTF-8",
                                       field="request")


def _tolerant(deserializer):
    """``deserializer`` returning an ``UndecodableRequest`` where it would raise."""
    if deserializer is None:
        return None

    def parse(data: bytes):
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - DecodeError and friends: a client mistake
            what = getattr(getattr(deserializer, "__self__", None), "__name__", "request message")
            return UndecodableRequest(what, exc)

    return parse


def _short(method: str) -> str:
    return method.rsplit("/", 1)[-1] or method


def _cancelled_code(context) -> grpc.StatusCode:
    """How a call that ended without a status of ours ended: its deadline passed, or its client left."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


class _Call:
    """One call's bookkeeping: counted in once, counted out exactly once, however it ends."""

    def __init__(self, metrics, name: str, rid: str) -> None:
        self.metrics, self.name, self.rid = metrics, name, rid
        self.started: float | None = None
        self.finished = False

    def finish(self, code: grpc.StatusCode) -> None:
        if self.finished:
            return
        self.finished = True
        m = self.metrics
        if m is not None:
            if self.started is not None:
                m.inflight.dec()
                m.latency.labels(self.name).observe(time.perf_counter() - self.started)
            m.requests.labels(self.name, code.name).inc()

    async def fail(self, context, exc: BaseException) -> None:
        code, message = status_for(exc, self.rid)
        if code == grpc.StatusCode.INTERNAL:
            logger.error("request %s (%s) failed with an internal error", self.rid, self.name, exc_info=exc)
        else:
            logger.info("request %s (%s): %s: %s", self.rid, self.name, code.name, message)
        self.finish(code)
        await context.abort(code, message)

    def gone(self, context, how: str) -> None:
        """The client cancelled, its deadline passed or its connection died: one quiet line."""
        code = _cancelled_code(context)
        logger.debug("request %s (%s): %s (%s)", self.rid, self.name, code.name, how)
        self.finish(code)


class ServingInterceptor(grpc.aio.ServerInterceptor):
    """Request ids, bearer-token auth, error mapping and call metrics for every RPC."""

    def __init__(self, *, tokens: Sequence[str] = (), metrics=None) -> None:
        self._tokens = [t.encode() for t in tokens if t]
        self._metrics = metrics

    def _authorized(self, metadata) -> bool:
        if not self._tokens:
            return True
        for key, value in metadata or ():
            if key == "authorization":
                value = value if isinstance(value, str) else value.decode("latin-1")
                if value.partition(" ")[0].lower() == "bearer":
                    return bearer_ok(value, self._tokens)
        return False

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        metadata = handler_call_details.invocation_metadata
        rid = next((v for k, v in metadata or () if k == "x-request-id" and isinstance(v, str)), "")
        rid = rid[:64] or uuid.uuid4().hex[:16]
        needs_auth = not method.startswith(OPEN_PREFIXES)
        authorized = (not needs_auth) or self._authorized(metadata)
        name = _short(method)
        track = not method.startswith(("/grpc.health.v1.", "/grpc.reflection."))

        def begin(context) -> float:
            request_id.set(rid)
            context.set_trailing_metadata((("x-request-id", rid),))
            if not authorized:
                raise AuthError("missing or invalid bearer token (metadata 'authorization: Bearer <token>')")
            if track and self._metrics is not None:
                self._metrics.inflight.inc()
            return time.perf_counter()

        def new_call() -> _Call:
            return _Call(self._metrics if track else None, name, rid)

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary_unary(request, context):
                call = new_call()
                try:
                    call.started = begin(context)
                    if isinstance(request, UndecodableRequest):
                        raise request.error
                    response = await inner(request, context)
                except asyncio.CancelledError:
                    call.gone(context, "cancelled")
                    raise
                except Exception as exc:  # noqa: BLE001 - mapped in status_for
                    await call.fail(context, exc)
                else:
                    call.finish(grpc.StatusCode.OK)
                    return response
                finally:
                    call.finish(_cancelled_code(context))    # only where nothing above counted it

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer)

        def streamed(inner):
            """``inner`` (a response-streaming handler: unary-stream, or Riva's bidirectional
            SynthesizeOnline, whose ``request`` is the request iterator) wrapped: every call is
            counted once however it ends."""
            async def handler(request, context):
                call = new_call()
                try:
                    call.started = begin(context)
                    if isinstance(request, UndecodableRequest):
                        raise request.error
                    async with contextlib.aclosing(inner(request, context)) as items:
                        async for item in items:
                            yield item
                except (asyncio.CancelledError, GeneratorExit):
                    # A client that cancels or whose socket dies ends the stream here, at a yield
                    # (GeneratorExit when gRPC closes the generator): counted once, no traceback.
                    call.gone(context, "stream closed by the client or its connection")
                    raise
                except Exception as exc:  # noqa: BLE001 - mapped in status_for
                    await call.fail(context, exc)
                else:
                    call.finish(grpc.StatusCode.OK)
                finally:
                    call.finish(_cancelled_code(context))

            return handler

        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                streamed(handler.unary_stream), request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer)

        if handler.stream_stream is not None and track:      # Riva's SynthesizeOnline
            return grpc.stream_stream_rpc_method_handler(
                streamed(handler.stream_stream), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)

        # Other streaming-request methods (reflection): only auth applies.
        if not authorized:
            async def deny(request_iterator, context):
                request_id.set(rid)
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

            if handler.stream_stream is not None:
                async def deny_stream(request_iterator, context):
                    await deny(request_iterator, context)
                    yield  # pragma: no cover - abort raised

                return grpc.stream_stream_rpc_method_handler(
                    deny_stream, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)
            return grpc.stream_unary_rpc_method_handler(
                deny, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler
