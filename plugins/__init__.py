"""Custom GPU kernels for the hot loops, each with a pure-PyTorch twin.

- ``tts.plugins.decoder``: the fused Tacotron2 decoder step (Triton).
- ``tts.plugins.waveglow``: WaveGlow's gated activation and whole coupling layers (Triton).

Triton is imported only when a kernel is first launched; each kernel loader first calls
``interpreter_compat`` (a no-op outside Triton's CPU interpreter, ``TRITON_INTERPRET=1``).
This package reads no environment variables (``tts.engines._env`` documents them).
"""

from __future__ import annotations


def interpreter_compat() -> bool:
    """Make Triton's interpreter work with numpy >= 2.4; returns whether it patched anything.

    Triton 3.6's interpreter holds scalars as 1-element arrays and converts them with
    ``int(array)`` for ``range()`` bounds, which numpy 2.4 refuses ("only 0-dimensional arrays
    can be converted to Python scalars"); this reads the single element instead. Only the
    interpreter (CPU testing) is affected; compiled kernels never go through it.
    """
    try:
        import numpy as np
        import triton.runtime.interpreter as interp
    except Exception:  # noqa: BLE001 - no Triton: nothing to patch
        return False
    orig = getattr(interp, "_patch_lang_tensor", None)
    if orig is None or getattr(orig, "_tts_compat", False):
        return False
    if tuple(int(p) for p in np.__version__.split(".")[:2]) < (2, 4):
        return False

    def patched(tensor, scope):
        orig(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._tts_compat = True
    interp._patch_lang_tensor = patched
    return True
