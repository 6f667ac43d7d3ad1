"""Prometheus metrics of one server, in its own registry, served over HTTP on request.

Nothing is registered at import time: each ``ServerMetrics`` owns a
``CollectorRegistry`` (so two servers in one process, as in tests, do not clash).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_RTF_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500)

#: Stages timed per request.
STAGES = ("queue", "text", "acoustic", "vocoder", "denoiser", "encode")


class _GpuMemoryCollector:
    """Reads CUDA memory at scrape time (nothing when torch has no CUDA)."""

    def __init__(self, devices: Callable[[], list[int]]) -> None:
        self._devices = devices

    def collect(self):
        g = GaugeMetricFamily("tts_gpu_memory_bytes", "CUDA memory held by this process's PyTorch allocator",
                              labels=["device", "kind"])
        try:
            import torch

            if torch.cuda.is_available():
                for d in self._devices():
                    g.add_metric([str(d), "allocated"], float(torch.cuda.memory_allocated(d)))
                    g.add_metric([str(d), "reserved"], float(torch.cuda.memory_reserved(d)))
                    g.add_metric([str(d), "max_allocated"], float(torch.cuda.max_memory_allocated(d)))
        except Exception:  # a scrape must never fail because of this
            logger.debug("GPU memory read failed", exc_info=True)
        yield g


class ServerMetrics:
    """All metrics of one server."""

    def __init__(self, *, gpu_devices: Callable[[], list[int]] = lambda: []) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tts_requests", "Finished calls by method (gRPC method, or http.speech) and status "
                                "code (gRPC code name, or HTTP status)",
                                ["method", "code"], registry=r)
        self.latency = Histogram("tts_request_latency_seconds", "Server-side latency of a call, arrival to last byte",
                                 ["method"], buckets=_LATENCY_BUCKETS, registry=r)
        self.stage = Histogram("tts_stage_seconds", "Seconds per pipeline stage of one request",
                               ["stage"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttfa = Histogram("tts_time_to_first_audio_seconds",
                              "Streaming: arrival of the call to the first audio chunk sent",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.rtf = Histogram("tts_realtime_factor", "Seconds of audio produced per second of server time, per call",
                             buckets=_RTF_BUCKETS, registry=r)
        self.audio_seconds = Counter("tts_audio_seconds", "Seconds of audio produced", registry=r)
        self.batch_size = Histogram("tts_batch_size", "Items per executed batch", ["stage"],
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("tts_batch_seconds", "Execution time of a batch", ["stage"],
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("tts_queue_depth", "Requests waiting for a batch", ["queue"], registry=r)
        self.inflight = Gauge("tts_inflight_requests", "Calls being served now", registry=r)
        r.register(_GpuMemoryCollector(gpu_devices))

    def observe_batch(self, stage: str, size: int, seconds: float) -> None:
        self.batch_size.labels(stage).observe(size)
        self.batch_seconds.labels(stage).observe(seconds)


class MetricsHTTPServer:
    """The ``/metrics`` endpoint on its own port (prometheus_client's WSGI server in a thread)."""

    def __init__(self, metrics: ServerMetrics, port: int, host: str = "127.0.0.1") -> None:
        from prometheus_client import start_http_server

        self._server, self._thread = start_http_server(port, addr=host, registry=metrics.registry)
        #: The bound port (useful when 0 was asked for).
        self.port = int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
