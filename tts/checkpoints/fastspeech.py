"""Loading CUDA-Optimized FastSpeech checkpoints (the layout DLE's trainer writes).

DLE's ``Trainer.save`` writes ``{"step", "model", "optim"}`` where ``model``
is the state_dict of ``nn.DataParallel(model)`` (every key ``module.``-prefixed)
and there is no architecture in the file: DLE takes it from the hparams YAML.
Here the architecture is read from the tensor shapes wherever they tell it
(which is everything that matters for inference: widths, layer and head
counts, kernel sizes, mel channels, vocabulary, ``max_seq_len`` from the
position tables); the YAML (or dict, or config) supplies the rest (dropout,
fused_layernorm) and is overridden, with a log line, where it disagrees with
the shapes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

import torch

from tts.checkpoints import require_kind
from tts.checkpoints.common import get_state_dict, load_into, read_checkpoint
from tts.errors import CheckpointError, InvalidInputError
from tts.models.fastspeech import D_K, FastSpeech, FastSpeechConfig

logger = logging.getLogger(__name__)

#: Package resource with DLE's base hparams (fastspeech/hparams/base.yaml values).
BASE_HPARAMS = "fastspeech_base.yaml"

ConfigLike = FastSpeechConfig | Mapping[str, Any] | str | os.PathLike[str] | None


def base_config() -> FastSpeechConfig:
    """The config of DLE's ``base.yaml`` as shipped in ``tts/data/fastspeech_base.yaml``."""
    ref = resources.files("tts.data").joinpath(BASE_HPARAMS)
    with resources.as_file(ref) as path:
        return FastSpeechConfig.from_hparams_yaml(path)


def resolve_config(config: ConfigLike) -> FastSpeechConfig:
    """Turn the ``config`` argument of ``load_fastspeech`` into a FastSpeechConfig."""
    if config is None:
        return base_config()
    if isinstance(config, FastSpeechConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        return FastSpeechConfig.from_hparams_yaml(config)
    if isinstance(config, Mapping):
        return FastSpeechConfig.from_dict(config)
    raise TypeError(f"config must be a FastSpeechConfig, a dict, a YAML path or None, "
                    f"not {type(config).__name__}")


def _n_layers(sd: Mapping[str, torch.Tensor], side: str) -> int | None:
    pat = re.compile(rf"^{side}\.layer_stack\.(\d+)\.")
    idx = [int(m.group(1)) for k in sd if (m := pat.match(k))]
    return max(idx) + 1 if idx else None


def infer_from_shapes(sd: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> dict[str, Any]:
    """Config fields that the (prefix-stripped) state_dict's shapes determine.

    Fields whose tensors are absent are left out (the key check of
    ``load_into`` reports the missing tensors afterwards).
    """
    out: dict[str, Any] = {}

    def shape(key: str) -> tuple[int, ...] | None:
        t = sd.get(key)
        return tuple(t.shape) if t is not None else None

    if (s := shape("word_emb.weight")) and len(s) == 2:
        out["n_phns"], out["d_model"] = s
    tables = {side: s[0] - 1 for side in ("phoneme_side", "mel_side")
              if (s := shape(f"{side}.position.weight")) and len(s) == 2}
    if len(set(tables.values())) > 1:
        raise CheckpointError(path, f"the two position tables disagree on max_seq_len: {tables}")
    if tables:
        out["max_seq_len"] = next(iter(tables.values()))
    for side in ("phoneme_side", "mel_side"):
        if (n := _n_layers(sd, side)) is not None:
            out[f"{side}_n_layer"] = n
        pre = f"{side}.layer_stack.0."
        if (s := shape(pre + "slf_attn.linear.weight")) and len(s) == 2:
            if s[0] % (3 * D_K):
                raise CheckpointError(path, f"{pre}slf_attn.linear.weight has {s[0]} rows, not a multiple "
                                            f"of 3*{D_K} (q, k, v of {D_K} per head)")
            out[f"{side}_head"] = s[0] // (3 * D_K)
        if (s := shape(pre + "pos_ffn.w_1.weight")) and len(s) == 3:
            out[f"{side}_conv1d_filter_size"] = s[0]
            out["fft_conv1d_kernel"] = s[2]
            out["fft_conv1d_padding"] = (s[2] - 1) // 2
    dp = "length_regulator.duration_predictor."
    if (s := shape(dp + "conv1d_1.weight")) and len(s) == 3:
        out["duration_predictor_filter_size"] = s[0]
        out["phoneme_side_output_size"] = s[1]
        out["duration_predictor_kernel_size"] = s[2]
    if (s := shape("mel_linear.weight")) and len(s) == 2:
        out["n_mels"], out["mel_side_output_size"] = s
    return out


def load_fastspeech(path: str | os.PathLike[str], *, config: ConfigLike = None) -> FastSpeech:
    """Load a CUDA-Optimized FastSpeech checkpoint: a FastSpeech in eval mode, float32, on CPU.

    ``config``: a DLE hparams YAML path (base.yaml key names, ``parent_yaml`` followed),
    a dict of constructor kwargs (``num_mels`` accepted for ``n_mels``), a
    ``FastSpeechConfig``, or None for DLE's base hparams. Shapes in the file override it
    (logged when they differ). Every failure is a ``CheckpointError`` naming the file.
    """
    try:
        cfg = resolve_config(config)
    except InvalidInputError as exc:
        raise CheckpointError(path, f"bad FastSpeech config: {exc}") from exc
    ckpt = read_checkpoint(path)
    sd = get_state_dict(ckpt, path, keys=("model", "state_dict"))
    require_kind(sd, path, "fastspeech")

    inferred = infer_from_shapes(sd, path)
    changed = {k: (getattr(cfg, k), v) for k, v in inferred.items() if getattr(cfg, k) != v}
    if changed:
        level = logging.INFO if config is None else logging.WARNING
        logger.log(level, "%s: architecture taken from the weights where the config differs: %s",
                   path, ", ".join(f"{k} {a} -> {b}" for k, (a, b) in sorted(changed.items())))
    try:
        cfg = dataclasses.replace(cfg, **inferred)
    except InvalidInputError as exc:
        raise CheckpointError(path, f"weights describe an impossible FastSpeech: {exc}") from exc

    model = FastSpeech(cfg)
    load_into(model, sd, path, "FastSpeech")
    model.float().eval()
    step = ckpt.get("step")
    logger.info("loaded FastSpeech from %s (step %s, d_model %d, layers %d+%d, n_mels %d, max_seq_len %d)",
                path, step, cfg.d_model, cfg.phoneme_side_n_layer, cfg.mel_side_n_layer,
                cfg.n_mels, cfg.max_seq_len)
    return model
