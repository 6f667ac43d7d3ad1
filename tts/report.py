"""Latency statistics, real-time factor and the environment of a measurement.

Shared by ``tts-synth`` (its ``report.json``) and ``tts-bench``. Percentiles
use linear interpolation between closest ranks (numpy's default), as
NVIDIA's inference scripts do.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class LatencyStats:
    """Summary of a list of durations, in seconds."""

    count: int
    mean: float
    std: float
    p50: float
    p90: float
    p95: float
    p99: float
    total: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> LatencyStats:
        a = np.asarray(list(seconds), dtype=np.float64)
        if a.size == 0:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        p = np.percentile(a, PERCENTILES)
        return cls(int(a.size), float(a.mean()), float(a.std()), *map(float, p), float(a.sum()))

    def as_ms(self) -> dict[str, float]:
        """The statistics in milliseconds (count and total seconds kept as they are)."""
        d = asdict(self)
        return {k: (v * 1000.0 if k not in ("count", "total") else v) for k, v in d.items()}


def rtf(audio_seconds: float, compute_seconds: float) -> float:
    """Real-time factor: seconds of audio produced per second of compute (higher is faster)."""
    return audio_seconds / compute_seconds if compute_seconds > 0 else float("inf")


def environment(device: Any = "cpu") -> dict[str, Any]:
    """Versions and hardware a measurement was taken on."""
    import torch

    import tts
    env: dict[str, Any] = {
        "tts": tts.__version__, "python": sys.version.split()[0], "torch": torch.__version__,
        "numpy": np.__version__, "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(), "cuda": torch.version.cuda, "device": str(device),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(idx)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   gpu_capability=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version())
        try:
            import triton
            env["triton"] = triton.__version__
        except ImportError:
            pass
    return env


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A plain text table: ``columns`` is [(key, header)]; floats printed with 2 decimals."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "inf" if v == float("inf") else f"{v:.2f}"
        return str(v)
    body = [[cell(r.get(k, "")) for k, _ in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, (_, h) in enumerate(columns)]
    line = "  ".join(h.rjust(w) if i else h.ljust(w) for i, ((_, h), w) in enumerate(zip(columns, widths)))
    out = [line, "  ".join("-" * w for w in widths)]
    for b in body:
        out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(b, widths))))
    return "\n".join(out)
