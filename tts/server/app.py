"""Assembles and runs the gRPC server: servicers (tts.v1 and Riva's TTS API), health, reflection, metrics,
TLS, auth, drain.

``TTSServer`` is what tests start on loopback and what ``tts-server`` runs.
Startup order: the engine is started and warmed up, then the server binds
its port and health reports SERVING. On SIGTERM/SIGINT health turns
NOT_SERVING, new calls are refused, calls in flight finish (up to
``grace_s``), then the engine and the metrics endpoint stop.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from tts.errors import TTSError
from tts.options import DEFAULT_MAX_TEXT_CHARS
from tts.server.batcher import BatcherConfig
from tts.server.engine import ServingEngine
from tts.server.interceptors import ServingInterceptor
from tts.server.metrics import MetricsHTTPServer, ServerMetrics
from tts.server.proto_gen import riva_tts_pb2_grpc, tts_pb2, tts_pb2_grpc
from tts.server.riva import SERVICE_NAME as RIVA_SERVICE_NAME
from tts.server.riva import RivaSpeechSynthesisServicer
from tts.server.servicer import TextToSpeechServicer

logger = logging.getLogger(__name__)

SERVICE_NAME = tts_pb2.DESCRIPTOR.services_by_name["TextToSpeech"].full_name  # "tts.v1.TextToSpeech"


#: Seconds the server keeps answering UNAVAILABLE after its last call finished, before it closes.
DRAIN_LINGER_S = 0.5


class BindError(TTSError):
    """A port of the server cannot be bound (in use, not allowed, unknown address)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        #: The ServerConfig field of the port: ``port``, ``metrics_port`` or ``http_port``.
        self.field = field


def check_bindable(host: str, port: int, what: str, field: str) -> None:
    """Raises BindError when ``host:port`` cannot be bound now (as gRPC and the metrics server bind:
    address reuse on, IPv6 wildcard dual-stack). Port 0 (any free port) always can."""
    if port == 0:
        return
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        infos = socket.getaddrinfo(name or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"{what} address {host}: unknown host ({exc.strerror})", field=field) from None
    for family, kind, proto, _, addr in infos:
        try:
            sock = socket.socket(family, kind, proto)
        except OSError:             # e.g. no IPv6 here: gRPC binds what it can, so do we
            continue
        with sock as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            try:
                s.bind(addr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise BindError(f"{what} port {port} on {host} is already in use (another server?)",
                                    field=field) from None
                raise BindError(f"cannot bind {what} port {port} on {host}: {exc.strerror or exc}",
                                field=field) from None


@dataclass(frozen=True)
class TLSConfig:
    """PEM material for TLS; with ``client_ca`` clients must present a certificate it signed (mTLS)."""

    #: Server certificate chain (PEM bytes).
    cert: bytes
    #: Server private key (PEM bytes).
    key: bytes
    #: CA that client certificates must chain to; None = no client certificates.
    client_ca: bytes | None = None

    @classmethod
    def from_files(cls, cert: str, key: str, client_ca: str | None = None) -> TLSConfig:
        """Reads the files once, at startup (requests never touch files)."""
        return cls(cert=Path(cert).read_bytes(), key=Path(key).read_bytes(),
                   client_ca=Path(client_ca).read_bytes() if client_ca else None)


@dataclass(frozen=True)
class ServerConfig:
    """Load-time settings of the gRPC server."""

    #: Address to bind ("[::]" all interfaces, "127.0.0.1" loopback).
    host: str = "[::]"
    #: gRPC port; 0 = any free port (see ``TTSServer.port``).
    port: int = 50051
    #: Prometheus HTTP port; None = no metrics endpoint; 0 = any free port.
    metrics_port: int | None = 8002
    #: Address the metrics endpoint binds.
    metrics_host: str = "0.0.0.0"
    #: Longest accepted request text, characters.
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    #: Largest gRPC message received / sent, bytes.
    max_receive_bytes: int = 1 << 20
    max_send_bytes: int = 64 << 20
    #: Dynamic batching limits.
    batcher: BatcherConfig = field(default_factory=BatcherConfig)
    #: Continuous batching of Tacotron2 decoder steps.
    continuous: bool = True
    #: Mel frames per streamed vocoder chunk, and overlap frames on each side.
    stream_chunk_frames: int = 32
    stream_overlap_frames: int = 8
    #: Frames of the first streamed chunk (small = low time to first audio).
    stream_first_chunk_frames: int = 8
    #: TLS material; None = plaintext.
    tls: TLSConfig | None = None
    #: Accepted bearer tokens; empty = no authentication.
    auth_tokens: tuple[str, ...] = ()
    #: Seconds in-flight calls get to finish on shutdown.
    grace_s: float = 30.0
    #: Run every voice once before reporting SERVING.
    warmup: bool = True
    #: OpenAI-compatible HTTP API port on ``host`` (``tts.server.http``); None = off; 0 = any free port.
    http_port: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.http_port is not None and not 0 <= self.http_port <= 65535:
            raise ValueError(f"http_port must be in 0..65535, got {self.http_port}")
        if self.max_text_chars < 1:
            raise ValueError(f"max_text_chars must be >= 1, got {self.max_text_chars}")
        if self.stream_chunk_frames < 1 or self.stream_overlap_frames < 0:
            raise ValueError("stream_chunk_frames must be >= 1 and stream_overlap_frames >= 0")


def check_ports(config: ServerConfig) -> None:
    """Raises BindError if the gRPC or metrics port of ``config`` cannot be bound now: a check to
    make before loading models (the ports are bound for good only after warm-up)."""
    check_bindable(config.host, config.port, "gRPC", "port")
    if config.metrics_port is not None:
        check_bindable(config.metrics_host, config.metrics_port, "metrics", "metrics_port")
    if config.http_port is not None:
        check_bindable(config.host, config.http_port, "HTTP", "http_port")


class TTSServer:
    """One gRPC server process's worth of serving (engine + grpc.aio server + metrics)."""

    def __init__(self, synthesizers, config: ServerConfig = ServerConfig(), *, default_voice: str | None = None,
                 gpu_devices: list[int] | None = None) -> None:
        self.config = config
        self.metrics = ServerMetrics(gpu_devices=lambda: list(gpu_devices or []))
        self.engine = ServingEngine(synthesizers, default_voice=default_voice, batcher=config.batcher,
                                    metrics=self.metrics, continuous=config.continuous,
                                    stream_chunk_frames=config.stream_chunk_frames,
                                    stream_overlap_frames=config.stream_overlap_frames,
                                    stream_first_chunk_frames=config.stream_first_chunk_frames)
        self.metrics.queue_depth.labels("synthesize").set_function(lambda: self.engine.queue_depth)
        self.port: int | None = None
        self.metrics_port: int | None = None
        #: The bound port of the OpenAI-compatible HTTP API (None when off).
        self.http_port: int | None = None
        #: The HTTP door (``tts.server.http.HTTPFrontEnd``) while it serves, else None.
        self.http = None
        self._server: grpc.aio.Server | None = None
        self._servicer: TextToSpeechServicer | None = None
        self._health = None
        self._metrics_http: MetricsHTTPServer | None = None
        self._stopped = asyncio.Event()
        self._signals: list[asyncio.Task] | None = None
        #: True once a stop gave up waiting for work still running (its threads end on their own).
        self.abandoned = False

    async def start(self) -> int:
        """Starts the engine (warm-up included), binds, reports SERVING; returns the gRPC port.

        A port that cannot be bound raises BindError, with everything started so far stopped.
        """
        try:
            return await self._start()
        except BaseException:
            await self._abort_start()
            raise

    async def _abort_start(self) -> None:
        http, self.http = self.http, None
        if http is not None:
            await http.close(0)
        if self._metrics_http is not None:
            self._metrics_http.close()
            self._metrics_http = None
        server, self._server = self._server, None
        if server is not None:
            await server.stop(None)
        await self.engine.close()

    async def _start(self) -> int:
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        from grpc_health.v1._async import HealthServicer
        from grpc_reflection.v1alpha import reflection

        cfg = self.config
        check_ports(cfg)
        await self.engine.start()
        if cfg.warmup:
            await asyncio.to_thread(self.engine.warmup)
        options = [
            ("grpc.max_receive_message_length", cfg.max_receive_bytes),
            ("grpc.max_send_message_length", cfg.max_send_bytes),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(
            interceptors=[ServingInterceptor(tokens=cfg.auth_tokens, metrics=self.metrics)], options=options)
        self._servicer = TextToSpeechServicer(self.engine, max_text_chars=cfg.max_text_chars, metrics=self.metrics,
                                              max_send_bytes=cfg.max_send_bytes)
        tts_pb2_grpc.add_TextToSpeechServicer_to_server(self._servicer, server)
        riva = RivaSpeechSynthesisServicer(self._servicer)      # Riva's TTS API, same engine and limits
        riva_tts_pb2_grpc.add_RivaSpeechSynthesisServicer_to_server(riva, server)
        self._health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server)
        address = f"{cfg.host}:{cfg.port}"
        self._server = server
        try:
            if cfg.tls is not None:
                creds = grpc.ssl_server_credentials(
                    [(cfg.tls.key, cfg.tls.cert)], root_certificates=cfg.tls.client_ca,
                    require_client_auth=cfg.tls.client_ca is not None)
                self.port = server.add_secure_port(address, creds)
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError:        # grpcio >= 1.60 raises where older versions returned 0
            self.port = 0
        if not self.port:
            check_bindable(cfg.host, cfg.port, "gRPC", "port")      # names the cause where it can
            raise BindError(f"cannot bind gRPC port {cfg.port} on {cfg.host}", field="port")
        if cfg.metrics_port is not None:        # before the gRPC server starts: a failure leaves nothing running
            try:
                self._metrics_http = MetricsHTTPServer(self.metrics, cfg.metrics_port, cfg.metrics_host)
            except OSError as exc:
                check_bindable(cfg.metrics_host, cfg.metrics_port, "metrics", "metrics_port")
                raise BindError(f"cannot bind metrics port {cfg.metrics_port} on {cfg.metrics_host}: "
                                f"{exc.strerror or exc}", field="metrics_port") from None
            self.metrics_port = self._metrics_http.port
        if cfg.http_port is not None:
            self._bind_http()
        await server.start()
        if self.http is not None:
            await self.http.start()
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self._health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await self._health.set(RIVA_SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        logger.info("serving %s on %s (port %d), metrics port %s, HTTP port %s", ", ".join(self.engine.voice_names),
                    cfg.host, self.port, self.metrics_port, self.http_port)
        return self.port

    def _bind_http(self) -> None:
        """Binds the HTTP API's port (serving starts with the gRPC server); BindError when it cannot."""
        from tts.server.http import HTTPFrontEnd

        cfg = self.config
        self.http = HTTPFrontEnd(self.engine, max_text_chars=cfg.max_text_chars, tokens=cfg.auth_tokens,
                                  max_body_bytes=cfg.max_receive_bytes, tls=cfg.tls, metrics=self.metrics)
        try:
            self.http_port = self.http.bind(cfg.host, cfg.http_port)
        except OSError as exc:
            check_bindable(cfg.host, cfg.http_port, "HTTP", "http_port")
            raise BindError(f"cannot bind HTTP port {cfg.http_port} on {cfg.host}: {exc.strerror or exc}",
                            field="http_port") from None

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, refuse new calls, let in-flight ones finish (``grace`` s), then stop everything."""
        if self._server is None:
            return
        server, self._server = self._server, None
        grace = self.config.grace_s if grace is None else grace
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._servicer is not None:
            # Our own drain first: new synthesis calls get UNAVAILABLE from the servicer while the
            # running ones finish. Stopping the transport with calls arriving would cancel them
            # instead (CANCELLED, which clients do not retry). A short linger answers callers that
            # raced the last reply the same way before the port closes. The HTTP door drains alike (503).
            drains = [self._servicer.drain(grace)] + ([self.http.drain(grace)] if self.http is not None else [])
            await asyncio.gather(*drains)
            await asyncio.sleep(min(DRAIN_LINGER_S, max(0.0, grace - (loop.time() - t0))))
        http, self.http = self.http, None
        await asyncio.gather(server.stop(max(0.0, grace - (loop.time() - t0))),
                             *([http.close(max(0.0, grace - (loop.time() - t0)))] if http is not None else []))
        # The grace bounds the whole stop: work still running then (a batch in a model thread) is
        # abandoned rather than waited for.
        if not await self.engine.close(timeout=max(0.0, grace - (loop.time() - t0))):
            self.abandoned = True
            logger.warning("grace period of %gs over: work still running was abandoned", grace)
        if self._metrics_http is not None:
            self._metrics_http.close()
            self._metrics_http = None
        self._stopped.set()
        logger.info("server stopped")

    async def wait(self) -> None:
        """Returns once ``stop`` has finished."""
        await self._stopped.wait()

    def handle_signals(self) -> None:
        """From now on SIGTERM and SIGINT drain and stop the server (idempotent). Call it before the
        port is announced, so that a signal sent right after the announcement drains too."""
        if self._signals is not None:
            return
        loop = asyncio.get_running_loop()
        stopping: list[asyncio.Task] = []
        self._signals = stopping

        def on_signal(sig: signal.Signals) -> None:
            if not stopping:
                logger.info("%s received: draining in-flight calls", sig.name)
                stopping.append(asyncio.ensure_future(self.stop()))

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)

    async def serve_until_signal(self) -> None:
        """Runs until SIGTERM or SIGINT, then drains and stops."""
        self.handle_signals()
        loop = asyncio.get_running_loop()
        try:
            await self.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            self._signals = None
