"""On-disk engine cache: prepared (folded, cast) engine weights and Triton's compiled kernels.

What is cached, and what is not:

- the prepared tensors of an engine (``Tacotron2Engine``: BatchNorm folded
  into convolutions, LSTM weights concatenated, the location layer folded;
  ``WaveGlowEngine``: weight norm folded, the invertible 1x1 convolutions
  inverted in float64, conditioning layers stacked), in the engine dtype;
- Triton's compiled kernels: while a cache is active Triton's own cache
  directory (``TRITON_CACHE_DIR``, unless the user set it) points into
  ``<root>/triton/<environment digest>``, so the JIT compile happens once per
  GPU and software stack;
- CUDA graphs cannot be serialised: they are captured when an engine loads.

An entry is one file, ``<kind>-<gpu>-sm<cc>-<precision>-torch<ver>-tts<ver>-<digest>.engine``:
a magic line, one JSON header line (the full ``EngineKey`` and the payload's
SHA-256 and size), then the payload (``torch.save`` of a dict of tensors,
read back with ``weights_only=True``). The key names everything that changes
the prepared result: a hash of the module's state_dict bytes, the GPU and its
compute capability, torch/CUDA/Triton/package versions, precision and the
engine's options. An entry whose header does not carry the wanted key
(stale, foreign or renamed) or whose payload fails its checksum (corrupt,
truncated, tampered) is never used: it is logged and rebuilt.

Where: ``$TTS_ENGINE_CACHE`` if set (``off``/``0``/``none`` disables the
cache), else ``$XDG_CACHE_HOME/tts-serve/engines``, else
``~/.cache/tts-serve/engines``; read when a cache is made, never at import
(``tts.engines._env`` documents every variable the engines read).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tts.engines import _env

logger = logging.getLogger(__name__)

__all__ = ["EngineKey", "EngineCache", "weights_hash", "default_cache_dir", "cache_from_env",
           "active_cache", "use_cache", "ENV_VAR", "FORMAT_VERSION"]

#: Environment variable naming the cache folder (or ``off`` to disable it).
ENV_VAR = _env.ENGINE_CACHE
#: Bumped whenever the payload layout of any engine changes (part of every key).
FORMAT_VERSION = 1
MAGIC = b"TTS-ENGINE-CACHE\n"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/tts-serve/engines`` or ``~/.cache/tts-serve/engines`` (env read now)."""
    return Path(_env.user_cache_home()) / "tts-serve" / "engines"


def weights_hash(module: torch.nn.Module) -> str:
    """SHA-256 over the module's state_dict: every entry's name, dtype, shape and raw bytes."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        flat = t.contiguous().cpu().reshape(-1)
        if flat.numel():
            h.update(flat.view(torch.uint8).numpy().tobytes() if flat.dtype != torch.bool
                     else flat.to(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _versions() -> dict[str, str]:
    import tts
    try:
        import triton
        tv = triton.__version__
    except Exception:  # noqa: BLE001 - no Triton is a valid environment
        tv = "none"
    return {"torch": torch.__version__, "cuda": str(torch.version.cuda), "triton": tv, "tts": tts.__version__}


def _gpu(device: torch.device) -> tuple[str, str]:
    if device.type != "cuda":
        return "cpu", "none"
    props = torch.cuda.get_device_properties(device.index or 0)
    return props.name, f"{props.major}.{props.minor}"


@dataclass(frozen=True)
class EngineKey:
    """Everything that changes an engine's prepared tensors; ``digest()`` names the entry."""

    kind: str            #: engine kind (``tacotron2``, ``waveglow``, ...)
    weights: str         #: ``weights_hash`` of the module the engine was built from
    gpu: str             #: GPU name (``cpu`` off the GPU)
    capability: str      #: compute capability, e.g. ``9.0``
    precision: str       #: ``fp16``, ``fp32`` or ``tf32`` (``tts.engines.precision``)
    options: str         #: the engine's options that shape it (buckets, tiles, ...), as JSON
    torch: str
    cuda: str
    triton: str
    tts: str
    format: int = FORMAT_VERSION

    @classmethod
    def make(cls, kind: str, module: torch.nn.Module, device: torch.device | str, precision: str,
             options: dict[str, Any] | None = None, *, weights: str | None = None) -> EngineKey:
        gpu, cc = _gpu(torch.device(device))
        return cls(kind=kind, weights=weights or weights_hash(module), gpu=gpu, capability=cc,
                   precision=precision, options=json.dumps(options or {}, sort_keys=True, default=str),
                   **_versions())

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()

    def filename(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", self.gpu).strip("-") or "gpu"
        tv = re.sub(r"[^A-Za-z0-9.]+", "-", self.torch)
        return (f"{self.kind}-{slug}-sm{self.capability.replace('.', '')}-{self.precision}-torch{tv}"
                f"-tts{self.tts}-{self.digest()[:16]}.engine")


class CacheEntryError(Exception):
    """A cache file that must not be used (why in the message)."""


class EngineCache:
    """A folder of engine entries (see the module docstring).

    ``force_rebuild``: never read entries, always build and overwrite.
    ``stats`` counts ``hits``, ``builds`` and ``rejected`` entries of this object.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, force_rebuild: bool = False) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.force_rebuild = bool(force_rebuild)
        self.stats = {"hits": 0, "builds": 0, "rejected": 0}
        #: (kind, seconds, "build"|"load") of every get_or_build call, for benchmarks and logs.
        self.events: list[tuple[str, float, str]] = []

    def __repr__(self) -> str:
        return f"EngineCache({str(self.root)!r}, force_rebuild={self.force_rebuild})"

    def path(self, key: EngineKey) -> Path:
        return self.root / key.filename()

    # ------------------------------------------------------------ entries

    def load(self, key: EngineKey, device: torch.device | str = "cpu") -> dict[str, Any] | None:
        """The payload stored under ``key``, or None (missing, stale, foreign or corrupt: logged)."""
        p = self.path(key)
        if not p.exists():
            return None
        try:
            return self._read(p, key, device)
        except CacheEntryError as exc:
            self.stats["rejected"] += 1
            logger.warning("engine cache: %s is not usable (%s); rebuilding it", p, exc)
            return None

    def _read(self, p: Path, key: EngineKey, device: torch.device | str) -> dict[str, Any]:
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise CacheEntryError(f"cannot read: {exc}") from None
        if not data.startswith(MAGIC):
            raise CacheEntryError("not an engine cache file")
        nl = data.find(b"\n", len(MAGIC))
        if nl < 0:
            raise CacheEntryError("truncated header")
        try:
            header = json.loads(data[len(MAGIC):nl])
        except ValueError:
            raise CacheEntryError("corrupt header") from None
        if not isinstance(header, dict) or header.get("key") != dataclasses.asdict(key):
            raise CacheEntryError("stale or foreign entry: its key differs from this engine's")
        payload = data[nl + 1:]
        if len(payload) != header.get("size") or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
            raise CacheEntryError("payload checksum mismatch (corrupt or modified)")
        try:
            out = torch.load(io.BytesIO(payload), map_location=device, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means "do not use"
            raise CacheEntryError(f"payload does not load ({type(exc).__name__})") from None
        if not isinstance(out, dict):
            raise CacheEntryError("payload is not a dict")
        return out

    def store(self, key: EngineKey, payload: dict[str, Any]) -> Path:
        """Write ``payload`` (tensors, lists, numbers, strings) under ``key``, atomically."""
        buf = io.BytesIO()
        torch.save(_to_cpu(payload), buf)
        body = buf.getvalue()
        header = {"key": dataclasses.asdict(key), "sha256": hashlib.sha256(body).hexdigest(), "size": len(body),
                  "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.root.mkdir(parents=True, exist_ok=True)
        p = self.path(key)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".engine")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + body)
            os.replace(tmp, p)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return p

    def get_or_build(self, key: EngineKey, build: Callable[[], dict[str, Any]],
                     device: torch.device | str = "cpu") -> tuple[dict[str, Any], bool]:
        """(payload, hit): the stored payload, or ``build()``'s, stored for next time.

        A store that fails (read-only folder, full disk) is logged; the built payload is used.
        """
        t0 = time.perf_counter()
        if not self.force_rebuild:
            got = self.load(key, device)
            if got is not None:
                self.stats["hits"] += 1
                self.events.append((key.kind, time.perf_counter() - t0, "load"))
                logger.info("engine cache: loaded %s", self.path(key).name)
                return got, True
        payload = build()
        self.stats["builds"] += 1
        try:
            p = self.store(key, payload)
            logger.info("engine cache: built and stored %s", p.name)
        except OSError as exc:
            logger.warning("engine cache: could not store %s (%s); engine not cached", self.path(key), exc)
        self.events.append((key.kind, time.perf_counter() - t0, "build"))
        return payload, False

    # ------------------------------------------------------------ Triton

    def triton_dir(self) -> Path:
        """Triton's kernel cache for this GPU and software stack, inside the engine cache."""
        gpu, cc = _gpu(torch.device("cuda")) if torch.cuda.is_available() else ("cpu", "none")
        env = json.dumps({"gpu": gpu, "cc": cc, **_versions()}, sort_keys=True)
        return self.root / "triton" / hashlib.sha256(env.encode()).hexdigest()[:16]

    def activate_triton(self) -> Path | None:
        """Point Triton's compile cache into this cache (unless the user set ``TRITON_CACHE_DIR``)."""
        if _env.triton_cache_dir():
            return None
        d = self.triton_dir()
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        _env.set_triton_cache_dir(str(d))
        return d


def _to_cpu(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_cpu(v) for v in x]
    return x


def cache_from_env() -> EngineCache | None:
    """The cache ``$TTS_ENGINE_CACHE`` names (None when it says ``off``), else the default folder."""
    v = _env.engine_cache_setting()
    if v is not None and v.strip().lower() in _env.CACHE_OFF:
        return None
    return EngineCache(v) if v else EngineCache()


_ACTIVE: contextvars.ContextVar[EngineCache | None] = contextvars.ContextVar("tts_engine_cache", default=None)


def active_cache() -> EngineCache | None:
    """The cache ``use_cache`` set for this context, else ``cache_from_env()``."""
    c = _ACTIVE.get()
    return c if c is not None else cache_from_env()


@contextlib.contextmanager
def use_cache(cache: EngineCache) -> Iterator[EngineCache]:
    """Engines made inside the block (``make_engine`` without ``cache=``) use ``cache``."""
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)
