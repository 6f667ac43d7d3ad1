"""Load generator for a running server, in the manner of Triton's perf_analyzer.

For each concurrency level C, C closed-loop workers send requests back to
back (each waits for its reply before sending the next) for a measurement
window (``requests`` calls or ``duration_s`` seconds, whichever ends first,
after ``warmup`` calls). Reported per level: throughput (calls/s and audio
seconds per second), latency percentiles, time to first audio (streaming),
errors by status code.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)


def parse_range(text: str) -> list[int]:
    """``"1:64:8"`` -> [1, 9, 17, ..., 57] plus 64 (start:end:step, end included); ``"1,4,16"`` -> [1, 4, 16]."""
    if "," in text or ":" not in text:
        values = [int(x) for x in text.split(",") if x.strip()]
    else:
        parts = [int(x) for x in text.split(":")]
        if len(parts) == 2:
            parts.append(1)
        if len(parts) != 3:
            raise ValueError(f"expected START:END[:STEP], got {text!r}")
        start, end, step = parts
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        values = list(range(start, end + 1, step))
        if values and values[-1] != end:
            values.append(end)
    if not values or any(v < 1 for v in values):
        raise ValueError(f"concurrency values must be >= 1, got {text!r}")
    return values


@dataclass
class LevelResult:
    """Measurements at one concurrency level."""

    concurrency: int
    requests: int
    errors: dict[str, int]
    seconds: float
    audio_seconds: float
    latencies: list[float] = field(repr=False)
    ttfa: list[float] = field(repr=False)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def rtf(self) -> float:
        """Seconds of audio per wall second (the DESIGN's RTF, > 1 = faster than real time)."""
        return self.audio_seconds / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) if values else float("nan")

    def row(self) -> dict[str, float]:
        lat = self.latencies
        return {
            "concurrency": self.concurrency, "requests": self.requests,
            "errors": sum(self.errors.values()), "throughput_rps": self.throughput, "audio_rtf": self.rtf,
            "p50_ms": 1e3 * self.percentile(lat, 50), "p90_ms": 1e3 * self.percentile(lat, 90),
            "p95_ms": 1e3 * self.percentile(lat, 95), "p99_ms": 1e3 * self.percentile(lat, 99),
            "avg_ms": 1e3 * (float(np.mean(lat)) if lat else float("nan")),
            "ttfa_p50_ms": 1e3 * self.percentile(self.ttfa, 50), "ttfa_p99_ms": 1e3 * self.percentile(self.ttfa, 99),
        }


@dataclass(frozen=True)
class LoadConfig:
    """What to send and for how long."""

    target: str
    texts: tuple[str, ...]
    streaming: bool = False
    voice: str = ""
    encoding: str = "LINEAR_PCM16"
    requests: int = 200          # measured calls per level (upper bound)
    duration_s: float = 60.0     # measurement window per level (upper bound)
    warmup: int = 0              # unmeasured calls per level
    timeout_s: float = 120.0
    token: str | None = None
    root_cert: bytes | None = None
    options: tuple[tuple[str, object], ...] = ()


async def _one(stub, req, metadata, timeout, streaming) -> tuple[float, float | None, float]:
    t0 = time.perf_counter()
    if streaming:
        first = None
        samples = 0
        rate = 1
        async for chunk in stub.StreamingSynthesize(req, timeout=timeout, metadata=metadata):
            if first is None and chunk.audio:
                first = time.perf_counter() - t0
            samples += len(chunk.audio) // (2 if req.encoding in (0, 1) else 4)
            rate = chunk.sample_rate_hz or rate
        return time.perf_counter() - t0, first, samples / rate
    resp = await stub.Synthesize(req, timeout=timeout, metadata=metadata)
    return time.perf_counter() - t0, None, resp.duration_seconds


async def run_level(cfg: LoadConfig, concurrency: int) -> LevelResult:
    """Drives one concurrency level against ``cfg.target`` and measures it."""
    import grpc

    from tts.client import build_request, make_channel, metadata
    from tts.server.proto_gen import tts_pb2_grpc

    channel = make_channel(cfg.target, aio=True, root_cert=cfg.root_cert)
    stub = tts_pb2_grpc.TextToSpeechStub(channel)
    md = metadata(cfg.token)
    enc = cfg.encoding if cfg.streaming else ("WAV" if cfg.encoding == "LINEAR_PCM16" else cfg.encoding)
    reqs = [build_request(t, voice=cfg.voice, encoding=enc, options=dict(cfg.options)) for t in cfg.texts]
    counter = itertools.count()
    latencies: list[float] = []
    ttfa: list[float] = []
    errors: Counter[str] = Counter()
    audio = 0.0
    measured = 0
    deadline = [float("inf")]

    async def worker() -> None:
        nonlocal audio, measured
        while True:
            i = next(counter)
            if i >= cfg.warmup + cfg.requests or time.perf_counter() > deadline[0]:
                return
            req = reqs[i % len(reqs)]
            try:
                lat, first, secs = await _one(stub, req, md, cfg.timeout_s, cfg.streaming)
            except grpc.aio.AioRpcError as exc:
                if i >= cfg.warmup:
                    errors[exc.code().name] += 1
                    measured += 1
                continue
            if i >= cfg.warmup:
                latencies.append(lat)
                if first is not None:
                    ttfa.append(first)
                audio += secs
                measured += 1

    try:
        if cfg.warmup:
            warm = [asyncio.create_task(_warm(stub, reqs[0], md, cfg)) for _ in range(min(cfg.warmup, concurrency))]
            await asyncio.gather(*warm, return_exceptions=True)
            counter = itertools.count(cfg.warmup)
        t0 = time.perf_counter()
        deadline[0] = t0 + cfg.duration_s
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
    finally:
        await channel.close()
    return LevelResult(concurrency=concurrency, requests=measured, errors=dict(errors), seconds=seconds,
                       audio_seconds=audio, latencies=latencies, ttfa=ttfa)


async def _warm(stub, req, md, cfg) -> None:
    await _one(stub, req, md, cfg.timeout_s, cfg.streaming)


async def run_levels(cfg: LoadConfig, levels: list[int]) -> list[LevelResult]:
    return [await run_level(cfg, c) for c in levels]


def format_table(results: list[LevelResult]) -> str:
    """A fixed-width table, one row per concurrency level."""
    cols = ["concurrency", "requests", "errors", "throughput_rps", "audio_rtf", "p50_ms", "p90_ms", "p95_ms",
            "p99_ms", "ttfa_p50_ms", "ttfa_p99_ms"]
    head = " ".join(f"{c:>14}" for c in cols)
    lines = [head]
    for r in results:
        row = r.row()
        lines.append(" ".join(f"{row[c]:>14.1f}" if isinstance(row[c], float) else f"{row[c]:>14}" for c in cols))
    return "\n".join(lines)
