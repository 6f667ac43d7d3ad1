"""Reading checkpoint files safely: shared by every model's loader.

A checkpoint is untrusted input, so it is always read with
``torch.load(..., weights_only=True, map_location="cpu")``. That also reads
files whose tensors are tagged ``cuda:0`` (as every DLE/NGC training run
leaves them) on a machine without a GPU.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tts.errors import CheckpointError

logger = logging.getLogger(__name__)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint file into a dict of plain Python objects and CPU tensors.

    Raises ``CheckpointError`` naming the file when it is missing, is a
    directory, is empty, is not a torch file, holds objects that
    ``weights_only`` loading refuses, or is not a dict at the top level.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(p, "file not found")
    if p.is_dir():
        raise CheckpointError(p, "is a directory, not a checkpoint file")
    if p.stat().st_size == 0:
        raise CheckpointError(p, "file is empty")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(p, _unpickling_problem(str(exc))) from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError,
            ImportError, KeyError, IndexError, TypeError, UnicodeDecodeError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(p, f"not a PyTorch checkpoint or truncated/corrupt ({msg})") from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(p, f"expected a dict at the top level, found {type(obj).__name__}")
    return dict(obj)


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Remove the DataParallel/DDP ``module.`` prefix from every key that has it.

    DLE does ``key.replace("module.", "")``; torch.hub additionally removes
    ``module.1.`` first. Only leading prefixes are removed here, repeatedly,
    which covers both without touching a ``module.`` in the middle of a name.
    """
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        k = key
        while True:
            if k.startswith("module.1."):
                k = k[len("module.1."):]
            elif k.startswith("module."):
                k = k[len("module."):]
            else:
                break
        out[k] = value
    return out


def get_state_dict(ckpt: Mapping[str, Any], path: str | os.PathLike[str],
                   keys: tuple[str, ...] = ("state_dict", "model", "generator", "gen")
                   ) -> dict[str, torch.Tensor]:
    """Find the model's state_dict in a training checkpoint and strip DDP prefixes.

    DLE Tacotron2/WaveGlow use ``state_dict``; the FastSpeech trainer uses
    ``model``; DLE HiFi-GAN uses ``generator`` (older files ``gen``); a bare
    state_dict (all values tensors) is accepted as is. (So a loader given
    another model's file finds its weights and can say which model it is.)
    """
    for key in keys:
        if key in ckpt and isinstance(ckpt[key], Mapping):
            sd = ckpt[key]
            break
    else:
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            sd = ckpt
        elif "mpd" in ckpt and "msd" in ckpt:
            raise CheckpointError(
                path, "this is a HiFi-GAN discriminator checkpoint (hifigan_discrim_checkpoint_*.pt); "
                      "give the generator checkpoint (hifigan_gen_checkpoint_*.pt) of the same epoch")
        else:
            found = ", ".join(sorted(map(str, ckpt.keys()))[:12]) or "nothing"
            raise CheckpointError(
                path, f"no model weights found: expected one of {list(keys)} (top-level keys: {found})")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(path, f"state_dict entry {bad[0]!r} is not a tensor")
    return strip_module_prefix(sd)


def conv_weight(sd: Mapping[str, torch.Tensor], prefix: str, path: Any, model: str) -> torch.Tensor:
    """The conv weight at ``prefix`` (``weight_v`` when weight norm is on, else ``weight``); a clear
    error naming ``model`` when neither is there."""
    for name in ("weight_v", "weight"):
        if prefix + name in sd:
            return sd[prefix + name]
    raise CheckpointError(path, f"cannot infer the {model} architecture: no {prefix}weight "
                                f"or {prefix}weight_v")


def load_into(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
              path: str | os.PathLike[str], kind: str) -> None:
    """``model.load_state_dict`` with errors that name the file and the keys.

    Checks missing and unexpected keys and shapes first, so the message says
    exactly what does not fit; dtypes are cast on copy (fp16 files load into
    fp32 modules).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        raise CheckpointError(path, f"does not match a {kind} model: " + "; ".join(parts))
    for k, t in expected.items():
        got = state_dict[k]
        if tuple(got.shape) != tuple(t.shape):
            raise CheckpointError(
                path, f"shape mismatch for {k}: checkpoint has {tuple(got.shape)}, "
                      f"{kind} model expects {tuple(t.shape)}")
    model.load_state_dict(state_dict, strict=True)


def _unpickling_problem(message: str) -> str:
    """Say what torch's weights-only unpickler refused, without its advice to load unsafely."""
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    if m:
        return (f"holds a Python object ({m.group(1)}) that a safe (weights-only) load refuses; "
                "checkpoints must hold tensors and plain data, as NVIDIA's training scripts write them "
                "(a whole pickled model is not accepted, because loading it can run arbitrary code)")
    return "not a PyTorch checkpoint (the file is not pickled tensor data, or it is corrupt)"


def _few(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return f"[{shown}]{more}"
