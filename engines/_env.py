"""The environment variables of the engines and kernels: the only module of ``tts.engines`` and
``tts.plugins`` that reads (or sets) ``os.environ``. Every function reads the variable when it is
called, never at import.

``TTS_ENGINE_CACHE``
    Folder of the on-disk engine cache (``tts.engines.cache``). ``off``, ``0``, ``none``,
    ``false``, ``no`` or an empty value turn the cache off; unset: the default folder.
``XDG_CACHE_HOME``
    Base of the default cache folder: ``$XDG_CACHE_HOME/tts-serve/engines`` (else
    ``~/.cache/tts-serve/engines``).
``TRITON_CACHE_DIR``
    Triton's own compile cache. Left alone when the user set it; otherwise an active engine
    cache points it into itself (``EngineCache.activate_triton``), so kernels compile once per
    GPU and software stack.
``TRITON_INTERPRET``
    ``1``: Triton runs kernels in its CPU interpreter (tests). The engines then accept the
    ``triton`` backend off CUDA and launch without programmatic dependent launch.
"""

from __future__ import annotations

import os

#: Variable naming the engine-cache folder (or turning the cache off).
ENGINE_CACHE = "TTS_ENGINE_CACHE"
#: Values of ``TTS_ENGINE_CACHE`` that turn the cache off (compared lower-case, stripped).
CACHE_OFF = frozenset({"", "0", "off", "none", "false", "no"})


def engine_cache_setting() -> str | None:
    """``$TTS_ENGINE_CACHE`` as set (None when unset)."""
    return os.environ.get(ENGINE_CACHE)


def user_cache_home() -> str:
    """``$XDG_CACHE_HOME``, else ``~/.cache``."""
    return os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")


def triton_cache_dir() -> str | None:
    """``$TRITON_CACHE_DIR`` when set and non-empty, else None."""
    return os.environ.get("TRITON_CACHE_DIR") or None


def set_triton_cache_dir(path: str) -> None:
    """Point Triton's compile cache at ``path`` (read by Triton at its next compile)."""
    os.environ["TRITON_CACHE_DIR"] = str(path)


def triton_interpret() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET") == "1"
