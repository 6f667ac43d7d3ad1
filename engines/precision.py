"""What a precision name means for the float32 arithmetic of a CUDA process: the one place that
sets torch's TF32 switches for the engines, the ``Synthesizer``, the server and ``tts-bench``.

``fp32``
    IEEE float32: TF32 off in every matmul and convolution (``torch.backends.cuda.matmul
    .allow_tf32 = False``, ``torch.backends.cudnn.allow_tf32 = False``,
    ``torch.set_float32_matmul_precision("highest")``); the Triton kernels take float32 inputs
    with ``input_precision="ieee"`` (``dot_precision``).
``tf32``
    Float32 tensors, TF32 tensor cores allowed in cuBLAS and cuDNN (``allow_tf32 = True``,
    matmul precision ``"high"``). The Triton kernels stay IEEE.
``fp16``
    Float16 weights; the switches are left as the process has them (torch's defaults: TF32 off
    in matmuls, on in cuDNN convolutions), for the few float32 parts (denoiser, FastSpeech's
    phoneme side), as NVIDIA's ``inference.py`` leaves them.

The switches are global to the process, so one process runs one float32 mode; on a CPU nothing
is set (CPU float32 is IEEE).
"""

from __future__ import annotations

import torch

__all__ = ["PRECISIONS", "ENGINE_PRECISIONS", "dtype_of", "float32_math", "set_float32_math", "dot_precision"]

#: Every precision name a command takes.
PRECISIONS = ("fp32", "tf32", "fp16")
#: The names the engines take (the same set).
ENGINE_PRECISIONS = PRECISIONS


def dtype_of(precision: str) -> torch.dtype:
    """The weights' dtype of ``precision``: float16 for ``fp16``, else float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return torch.float16 if precision == "fp16" else torch.float32


def float32_math(precision: str) -> str | None:
    """``"ieee"`` (fp32), ``"tf32"`` (tf32) or None (fp16: left alone)."""
    dtype_of(precision)
    return {"fp32": "ieee", "tf32": "tf32"}.get(precision)


def set_float32_math(precision: str, device: torch.device | str | None = "cuda") -> str | None:
    """Set torch's float32 switches for ``precision`` when ``device`` is a CUDA device (see the
    module docstring); returns the mode set (``"ieee"``/``"tf32"``), or None where nothing was set."""
    mode = float32_math(precision)
    dev = torch.device(device) if device is not None else None
    if mode is None or dev is None or dev.type != "cuda":
        return None
    tf32 = mode == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    return mode


def dot_precision(dtype: torch.dtype, reduced: str = "tf32") -> str:
    """``input_precision`` of a Triton ``tl.dot`` over inputs of ``dtype``: ``"ieee"`` for
    float32 (whatever the TF32 switches say), ``reduced`` for 16-bit inputs (where it is moot)."""
    return "ieee" if dtype == torch.float32 else reduced
