"""Loading DLE Tacotron2 checkpoints of every layout into ``tts.models.tacotron2.Tacotron2``.

Layouts (all handled by the shared readers): today's ``train.py`` (zip,
``state_dict`` + ``config``), the 2020 apex/DDP one (legacy pickle,
``module.`` prefix), the 2019 one (``--fp16-run``: mixed float16/float32
tensors), and a bare state_dict. Hyper-parameters come from, in order of
precedence: the ``config`` argument, the file's ``config`` dict, the tensor
shapes (inference-only settings such as ``max_decoder_steps`` then take the
``Tacotron2Config`` defaults).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import torch

from tts.checkpoints import require_kind
from tts.checkpoints.common import get_state_dict, load_into, read_checkpoint
from tts.errors import CheckpointError
from tts.models.tacotron2 import Tacotron2, Tacotron2Config

logger = logging.getLogger(__name__)

__all__ = ["load_tacotron2", "infer_config_from_state_dict"]


def load_tacotron2(path: str | os.PathLike[str], *,
                   config: Tacotron2Config | Mapping[str, Any] | None = None) -> Tacotron2:
    """Read a Tacotron2 checkpoint into a float32 CPU model in eval mode.

    ``config``: a ``Tacotron2Config`` is used as is; a dict overrides single
    fields of the file's (or inferred) config, e.g. ``{"max_decoder_steps": 1000}``.
    Raises ``CheckpointError`` naming the file for every problem with the
    file, including a config that does not fit the tensors' shapes; raises
    ``ValueError`` for an invalid ``config`` argument.
    """
    ckpt = read_checkpoint(path)
    sd = get_state_dict(ckpt, path)
    require_kind(sd, path, "tacotron2")

    if isinstance(config, Tacotron2Config):
        cfg = config
    else:
        values = _file_or_inferred_config(ckpt, sd, path)
        if config is not None:
            if not isinstance(config, Mapping):
                raise ValueError(f"config must be a Tacotron2Config, a dict or None, got {type(config).__name__}")
            cfg = Tacotron2Config.from_dict({**values, **dict(config)})
        else:
            try:
                cfg = Tacotron2Config.from_dict(values)
            except (ValueError, TypeError) as exc:
                raise CheckpointError(path, f"invalid Tacotron2 config in the file: {exc}") from exc

    model = Tacotron2(cfg)
    load_into(model, sd, path, "tacotron2")
    model.float().eval()
    logger.info("loaded Tacotron2 from %s (%d parameters, n_mel=%d)", path,
                sum(p.numel() for p in model.parameters()), cfg.n_mel_channels)
    return model


def _file_or_inferred_config(ckpt: Mapping[str, Any], sd: Mapping[str, torch.Tensor],
                             path: str | os.PathLike[str]) -> dict[str, Any]:
    """The file's ``config`` dict, completed from the shapes where it lacks fields."""
    file_cfg = ckpt.get("config")
    if file_cfg is not None and not isinstance(file_cfg, Mapping):
        logger.warning("%s: ignoring 'config' of type %s; inferring the config from tensor shapes",
                       path, type(file_cfg).__name__)
        file_cfg = None
    if file_cfg is not None:
        known = {f.name for f in fields(Tacotron2Config)}
        if all(name in file_cfg for name in known):
            return dict(file_cfg)
        inferred = infer_config_from_state_dict(sd, path).to_dict()
        missing = sorted(known - set(file_cfg))
        logger.info("%s: config lacks %s; taking them from shapes/defaults", path, ", ".join(missing))
        return {**inferred, **dict(file_cfg)}
    logger.info("%s: no config in the file; inferring it from tensor shapes", path)
    return infer_config_from_state_dict(sd, path).to_dict()


def infer_config_from_state_dict(sd: Mapping[str, torch.Tensor],
                                 path: str | os.PathLike[str] = "<state_dict>") -> Tacotron2Config:
    """Every shape-determined ``Tacotron2Config`` field from a (prefix-free) state_dict.

    The other fields (``max_decoder_steps``, ``gate_threshold``, dropouts,
    ``mask_padding``, ``decoder_no_early_stopping``) take their defaults.
    Raises ``CheckpointError`` when a needed key is missing or the shapes do
    not fit together.
    """
    def shape(key: str, ndim: int) -> tuple[int, ...]:
        t = sd.get(key)
        if t is None:
            raise CheckpointError(path, f"cannot infer the Tacotron2 config: missing key {key}")
        if t.dim() != ndim:
            raise CheckpointError(path, f"cannot infer the Tacotron2 config: {key} has shape "
                                        f"{tuple(t.shape)}, expected {ndim} dimensions")
        return tuple(t.shape)

    n_symbols, emb_dim = shape("embedding.weight", 2)
    n_enc = _count(sd, r"encoder\.convolutions\.(\d+)\.0\.conv\.weight")
    if n_enc == 0:
        raise CheckpointError(path, "cannot infer the Tacotron2 config: no encoder convolutions "
                                    "(encoder.convolutions.0.0.conv.weight)")
    enc_dim, _, enc_k = shape("encoder.convolutions.0.0.conv.weight", 3)
    _, att_rnn = shape("decoder.attention_rnn.weight_hh", 2)
    prenet_dim, frame_dim = shape("decoder.prenet.layers.0.linear_layer.weight", 2)
    att_dim, _ = shape("decoder.attention_layer.query_layer.linear_layer.weight", 2)
    loc_f, _, loc_k = shape("decoder.attention_layer.location_layer.location_conv.conv.weight", 3)
    _, dec_rnn = shape("decoder.decoder_rnn.weight_hh", 2)
    proj_out, _ = shape("decoder.linear_projection.linear_layer.weight", 2)
    n_post = _count(sd, r"postnet\.convolutions\.(\d+)\.0\.conv\.weight")
    post_dim, n_mel, post_k = shape("postnet.convolutions.0.0.conv.weight", 3)
    if proj_out % n_mel or proj_out != frame_dim:
        raise CheckpointError(path, "cannot infer the Tacotron2 config: linear_projection gives "
                                    f"{proj_out} values per step and the prenet takes {frame_dim}, "
                                    f"which is not a whole number of {n_mel}-channel mel frames")
    values = dict(
        n_mel_channels=n_mel, n_symbols=n_symbols, symbols_embedding_dim=emb_dim,
        encoder_kernel_size=enc_k, encoder_n_convolutions=n_enc, encoder_embedding_dim=enc_dim,
        attention_rnn_dim=att_rnn, attention_dim=att_dim, attention_location_n_filters=loc_f,
        attention_location_kernel_size=loc_k, n_frames_per_step=proj_out // n_mel,
        decoder_rnn_dim=dec_rnn, prenet_dim=prenet_dim, postnet_embedding_dim=post_dim,
        postnet_kernel_size=post_k, postnet_n_convolutions=n_post,
    )
    try:
        return Tacotron2Config(**values)
    except ValueError as exc:
        raise CheckpointError(path, f"tensor shapes give an invalid Tacotron2 config: {exc}") from exc


def _count(sd: Mapping[str, Any], pattern: str) -> int:
    """1 + the largest index captured by ``pattern`` over the keys (0 when none match)."""
    rx = re.compile(pattern)
    idx = [int(m.group(1)) for k in sd if (m := rx.fullmatch(k))]
    return max(idx) + 1 if idx else 0
