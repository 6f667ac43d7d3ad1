"""FastSpeech (CUDA-Optimized FastSpeech of NVIDIA DeepLearningExamples) as plain ``torch.nn``.

Inference only: the module names and parameter shapes are DLE's, so a DLE
state_dict (its ``module.`` prefix removed) loads with ``load_state_dict``;
dropout layers (parameter-free, off in eval) are left out.

The arithmetic follows DLE exactly, including its padding behaviour, so that
padded batches reproduce DLE's batch outputs:

- self-attention masks padded *keys* with ``-65504`` (not ``-inf``), so a row
  of an all-padding item stays finite;
- in every position-wise feed-forward block the hidden activation of ``w_1``
  at padded positions is *not* masked before ``w_2``, and in the duration
  predictor the LayerNorm outputs at padded positions are not masked before
  ``conv1d_2``; both leak into the last real position. A padded item therefore
  differs slightly from the same item run alone, while the *amount* of padding
  (one frame or many) makes no difference with kernel size 3;
- the output is cut to ``max_seq_len`` frames (``FastSpeechOutput.truncated``
  says for which items; DLE cuts silently).

Shapes: ``B`` batch, ``T_in`` input symbols, ``T`` mel frames, ``d`` =
``d_model``, ``n_mel`` = ``n_mels``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tts.errors import CheckpointError, InvalidInputError

logger = logging.getLogger(__name__)

#: Size of each attention head's query, key and value, hard-coded in DLE
#: (``d_k=64, d_v=64``) whatever ``d_model`` is.
D_K = 64
#: Value DLE writes into masked attention scores (the float16 minimum).
ATTN_MASK_VALUE = -65504.0
#: Rows of DLE FastSpeech's symbol embedding: ``len(symbols) + 1``.
DLE_N_PHNS = 149

#: hparams-YAML key (DLE ``base.yaml``) -> FastSpeechConfig field, where they differ.
HPARAMS_ALIASES = {"num_mels": "n_mels"}


@dataclass(frozen=True)
class FastSpeechConfig:
    """Architecture of a FastSpeech model: DLE's constructor kwargs.

    Defaults are the model section of DLE's ``fastspeech/hparams/base.yaml``
    (``num_mels`` there is ``n_mels`` here).
    """

    max_seq_len: int = 2048
    """Rows of the position tables minus one: the longest input (symbols) and output (frames)."""
    d_model: int = 384
    """Width of the symbol embedding and of every FFT block."""
    phoneme_side_n_layer: int = 6
    """FFT blocks of the encoder (phoneme side)."""
    phoneme_side_head: int = 2
    """Attention heads of each encoder block (each 64 wide, whatever d_model is)."""
    phoneme_side_conv1d_filter_size: int = 1536
    """Hidden channels of the encoder's position-wise convolutions."""
    phoneme_side_output_size: int = 384
    """Encoder output width fed to the duration predictor; must equal d_model."""
    mel_side_n_layer: int = 6
    """FFT blocks of the decoder (mel side)."""
    mel_side_head: int = 2
    """Attention heads of each decoder block (each 64 wide)."""
    mel_side_conv1d_filter_size: int = 1536
    """Hidden channels of the decoder's position-wise convolutions."""
    mel_side_output_size: int = 384
    """Decoder output width fed to mel_linear; must equal d_model."""
    fft_conv1d_kernel: int = 3
    """Kernel size of the position-wise convolutions (odd)."""
    fft_conv1d_padding: int = 1
    """Padding of the position-wise convolutions; must be (fft_conv1d_kernel - 1) // 2."""
    duration_predictor_filter_size: int = 256
    """Channels of the duration predictor's two convolutions."""
    duration_predictor_kernel_size: int = 3
    """Kernel size of the duration predictor's convolutions (odd; DLE only works with 3)."""
    dropout: float = 0.1
    """Training dropout; kept for the record, inference ignores it."""
    n_mels: int = 80
    """Mel channels of the output (``num_mels`` in the hparams YAML)."""
    fused_layernorm: bool = False
    """DLE used apex FusedLayerNorm when true; same weights and maths, so ignored here."""
    n_phns: int = DLE_N_PHNS
    """Rows of the symbol embedding (DLE: len(symbols) + 1 = 149; id 0 is padding)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "fused_layernorm":
                if not isinstance(value, bool):
                    raise InvalidInputError(f"fused_layernorm must be true or false, got {value!r}",
                                            field=f.name)
            elif f.name == "dropout":
                if isinstance(value, bool) or not isinstance(value, (int, float)) \
                        or not 0.0 <= float(value) < 1.0:
                    raise InvalidInputError(f"dropout must be a number in [0, 1), got {value!r}",
                                            field=f.name)
            else:
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise InvalidInputError(f"{f.name} must be a positive integer, got {value!r}",
                                            field=f.name)
        for name in ("phoneme_side_output_size", "mel_side_output_size"):
            if getattr(self, name) != self.d_model:
                raise InvalidInputError(
                    f"{name} ({getattr(self, name)}) must equal d_model ({self.d_model})", field=name)
        if self.fft_conv1d_kernel % 2 == 0:
            raise InvalidInputError(f"fft_conv1d_kernel must be odd, got {self.fft_conv1d_kernel}",
                                    field="fft_conv1d_kernel")
        if self.fft_conv1d_padding != (self.fft_conv1d_kernel - 1) // 2:
            raise InvalidInputError(
                f"fft_conv1d_padding ({self.fft_conv1d_padding}) must be (fft_conv1d_kernel - 1) // 2 "
                f"= {(self.fft_conv1d_kernel - 1) // 2} so that blocks keep the sequence length",
                field="fft_conv1d_padding")
        if self.duration_predictor_kernel_size % 2 == 0:
            raise InvalidInputError(
                f"duration_predictor_kernel_size must be odd, got {self.duration_predictor_kernel_size}",
                field="duration_predictor_kernel_size")

    # -- construction -------------------------------------------------------

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FastSpeechConfig:
        """Build from constructor kwargs; ``num_mels`` is accepted for ``n_mels``.

        Missing keys take the defaults (base.yaml); unknown keys raise
        ``InvalidInputError`` (a typo must not pass silently).
        """
        if not isinstance(values, Mapping):
            raise InvalidInputError(f"FastSpeech config must be a mapping, got {type(values).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            field = HPARAMS_ALIASES.get(key, key)
            if field not in names:
                raise InvalidInputError(f"unknown FastSpeech config key {key!r}", field=str(key))
            if field in kwargs and kwargs[field] != value:
                raise InvalidInputError(f"both {key!r} and {field!r} given, with different values",
                                        field=field)
            kwargs[field] = value
        return cls(**kwargs)

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any], *, source: object = "hparams") -> FastSpeechConfig:
        """Build from a DLE hparams mapping (base.yaml key names; other keys are ignored).

        Every model key DLE's scripts read must be present (``fused_layernorm``
        and ``n_phns`` may be absent). Raises ``CheckpointError`` naming
        ``source`` for missing keys or bad values.
        """
        if not isinstance(hparams, Mapping):
            raise CheckpointError(source, f"hparams must be a mapping of keys to values, "
                                          f"found {type(hparams).__name__}")
        kwargs: dict[str, Any] = {}
        missing = []
        for key in hparams_model_keys():
            field = HPARAMS_ALIASES.get(key, key)
            if key in hparams:
                kwargs[field] = hparams[key]
            elif field in hparams:
                kwargs[field] = hparams[field]
            elif field not in _OPTIONAL_HPARAMS:
                missing.append(key)
        if missing:
            raise CheckpointError(source, f"hparams lack the FastSpeech model keys {missing}")
        try:
            return cls(**kwargs)
        except InvalidInputError as exc:
            raise CheckpointError(source, f"bad FastSpeech hparams: {exc}") from exc

    @classmethod
    def from_hparams_yaml(cls, path: str | os.PathLike[str]) -> FastSpeechConfig:
        """Read a DLE hparams YAML file (``fastspeech/hparams/*.yaml`` key names).

        ``parent_yaml`` (DLE's inheritance, relative to the file's folder) is
        followed; keys of the child win. Raises ``CheckpointError`` naming the
        file when it is missing, not YAML, or lacks model keys.
        """
        return cls.from_hparams(read_hparams_yaml(path), source=path)

    # -- export -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Constructor kwargs as a plain dict (DLE names, ``n_mels`` not ``num_mels``)."""
        return dataclasses.asdict(self)

    def compute_hash(self) -> str:
        """Hash of the fields that change the network graph (not dropout/fused_layernorm)."""
        graph = {k: v for k, v in self.to_dict().items() if k not in ("dropout", "fused_layernorm")}
        return hashlib.sha256(json.dumps(graph, sort_keys=True).encode()).hexdigest()[:16]


#: Model fields a DLE hparams file need not have.
_OPTIONAL_HPARAMS = frozenset({"fused_layernorm", "n_phns"})


def hparams_model_keys() -> list[str]:
    """The hparams-YAML keys that describe the model (base.yaml names, plus ``n_phns``)."""
    inverse = {v: k for k, v in HPARAMS_ALIASES.items()}
    return [inverse.get(f.name, f.name) for f in dataclasses.fields(FastSpeechConfig)]


def read_hparams_yaml(path: str | os.PathLike[str], _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a DLE hparams YAML file into one dict, following ``parent_yaml``.

    Like DLE's ``Hparam``: all documents of the file are merged, then the
    parent file (path relative to this file's folder) fills the keys this one
    lacks. Raises ``CheckpointError`` naming the file on every failure.
    """
    import yaml  # lazily: only this function needs it

    p = os.fspath(path)
    if not os.path.exists(p):
        raise CheckpointError(p, "hparams file not found")
    if os.path.isdir(p):
        raise CheckpointError(p, "is a directory, not an hparams YAML file")
    real = os.path.realpath(p)
    if real in _seen:
        raise CheckpointError(p, "parent_yaml chain loops back to this file")
    try:
        with open(p, encoding="utf-8") as f:
            docs = list(yaml.safe_load_all(f))
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(p, f"not a valid YAML file ({first})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(p, f"cannot read hparams file ({exc})") from exc
    merged: dict[str, Any] = {}
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, Mapping):
            raise CheckpointError(p, f"expected a mapping of hparams at the top level, "
                                     f"found {type(doc).__name__}")
        merged.update({str(k): v for k, v in doc.items()})
    if not merged:
        raise CheckpointError(p, "hparams file is empty")
    parent = merged.get("parent_yaml")
    if parent:
        parent_path = os.path.join(os.path.dirname(p), str(parent))
        base = read_hparams_yaml(parent_path, _seen + (real,))
        base.update(merged)
        merged = base
        merged.pop("parent_yaml", None)
    return merged


# -- building blocks ----------------------------------------------------------


def sinusoid_table(n_position: int, d_hid: int) -> Tensor:
    """DLE's fixed position table ``[n_position, d_hid]`` float32, row 0 (padding) zeros."""
    pos = torch.arange(n_position, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(d_hid, dtype=torch.float64)
    exponent = 2.0 * torch.div(j, 2, rounding_mode="floor") / d_hid
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), exponent)
    table = angle.clone()
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    table[0] = 0.0
    return table.float()


class MultiHeadAttention(nn.Module):
    """Self-attention with q, k, v packed in one ``linear`` (per head: 64 q, 64 k, 64 v)."""

    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.linear = nn.Linear(d_model, n_head * 3 * D_K)
        self.layer_norm = nn.LayerNorm(d_model)
        self.fc = nn.Linear(n_head * D_K, d_model)

    def forward(self, x: Tensor, key_pad: Tensor) -> Tensor:
        """x: [B, T, d]; key_pad: [B, T] bool, True at padding. Returns [B, T, d]."""
        b, t, _ = x.shape
        qkv = self.linear(x).view(b, t, self.n_head, 3 * D_K).transpose(1, 2)  # [B, H, T, 192]
        q, k, v = qkv.split(D_K, dim=-1)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D_K)  # [B, H, T, T]
        scores = scores.masked_fill(key_pad[:, None, None, :], ATTN_MASK_VALUE)
        attn = torch.softmax(scores, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, self.n_head * D_K)
        return self.layer_norm(self.fc(out) + x)


class PositionwiseFeedForward(nn.Module):
    """Conv1d -> ReLU -> Conv1d, residual, LayerNorm. The hidden is NOT masked (as DLE)."""

    def __init__(self, d_model: int, d_hid: int, kernel: int, padding: int) -> None:
        super().__init__()
        self.w_1 = nn.Conv1d(d_model, d_hid, kernel_size=kernel, padding=padding)
        self.w_2 = nn.Conv1d(d_hid, d_model, kernel_size=kernel, padding=padding)
        self.layer_norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, T, d] -> [B, T, d]."""
        h = self.w_2(F.relu(self.w_1(x.transpose(1, 2)))).transpose(1, 2)
        return self.layer_norm(h + x)


class FFTBlock(nn.Module):
    """One feed-forward Transformer block; output zeroed at padding after each half."""

    def __init__(self, d_model: int, d_inner: int, n_head: int, kernel: int, padding: int) -> None:
        super().__init__()
        self.slf_attn = MultiHeadAttention(d_model, n_head)
        self.pos_ffn = PositionwiseFeedForward(d_model, d_inner, kernel, padding)

    def forward(self, x: Tensor, key_pad: Tensor, keep: Tensor) -> Tensor:
        """x: [B, T, d]; key_pad: [B, T] bool; keep: [B, T, 1] in x's dtype (1 real, 0 pad)."""
        x = self.slf_attn(x, key_pad) * keep
        return self.pos_ffn(x) * keep


class FFTBlocks(nn.Module):
    """Position table (a frozen parameter, as DLE stores it) plus a stack of FFT blocks."""

    def __init__(self, max_seq_len: int, n_layers: int, n_head: int, d_model: int, d_inner: int,
                 kernel: int, padding: int) -> None:
        super().__init__()
        self.position = nn.Embedding(max_seq_len + 1, d_model)
        with torch.no_grad():
            self.position.weight.copy_(sinusoid_table(max_seq_len + 1, d_model))
        self.position.weight.requires_grad_(False)
        self.layer_stack = nn.ModuleList(
            FFTBlock(d_model, d_inner, n_head, kernel, padding) for _ in range(n_layers))

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """x: [B, T, d]; pos: [B, T] int64, 1.. at real positions, 0 at padding. Returns [B, T, d]."""
        key_pad = pos.eq(0)
        keep = pos.ne(0).unsqueeze(-1).to(x.dtype)
        out = x + self.position(pos)
        for layer in self.layer_stack:
            out = layer(out, key_pad, keep)
        return out


class DurationPredictor(nn.Module):
    """Two Conv1d/ReLU/LayerNorm stages and a linear layer; predicts log(1 + frames)."""

    def __init__(self, input_size: int, filter_size: int, kernel: int) -> None:
        super().__init__()
        pad = (kernel - 1) // 2  # DLE hard-codes 1, the same for its (only working) kernel 3
        self.conv1d_1 = nn.Conv1d(input_size, filter_size, kernel_size=kernel, padding=pad)
        self.layer_norm_1 = nn.LayerNorm(filter_size)
        self.conv1d_2 = nn.Conv1d(filter_size, filter_size, kernel_size=kernel, padding=pad)
        self.layer_norm_2 = nn.LayerNorm(filter_size)
        self.linear_layer = nn.Linear(filter_size, 1)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        """x: [B, T_in, d]; keep: [B, T_in, 1] in x's dtype. Returns log-durations [B, T_in], 0 at padding."""
        out = x * keep
        out = self.layer_norm_1(F.relu(self.conv1d_1(out.transpose(1, 2)).transpose(1, 2)))
        # As DLE: the LayerNorm output at padded positions is not masked before conv1d_2.
        out = self.layer_norm_2(F.relu(self.conv1d_2(out.transpose(1, 2)).transpose(1, 2)))
        out = self.linear_layer(out) * keep
        return out.squeeze(-1)


class LengthRegulator(nn.Module):
    """Holds the duration predictor (DLE's module tree); expansion is ``FastSpeech.regulate``."""

    def __init__(self, input_size: int, filter_size: int, kernel: int) -> None:
        super().__init__()
        self.duration_predictor = DurationPredictor(input_size, filter_size, kernel)


# -- the model ----------------------------------------------------------------


@dataclass
class FastSpeechOutput:
    """Result of ``FastSpeech.infer`` for a batch."""

    mel: Tensor
    """[B, T, n_mel] in the model's dtype; T = min(max(sum of repeats), max_seq_len).
    Padded frames equal ``mel_linear.bias`` (as DLE). Transpose for a vocoder: [B, n_mel, T]."""
    mel_mask: Tensor
    """[B, T] bool, True for real frames."""
    mel_lengths: Tensor
    """[B] int64, frames present in ``mel`` (= mel_mask.sum(1); after any cut to max_seq_len)."""
    duration: Tensor
    """[B, T_in] float32, predicted frames per symbol, exp(out) - 1 clamped at 0,
    before alpha and rounding; 0 at padding."""
    repeats: Tensor
    """[B, T_in] int64, round(duration * alpha) (ties to even); repeats.sum(1) is the uncut length."""
    encoder_outputs: Tensor
    """[B, T_in, d_model], phoneme-side output, zeros at padding."""
    truncated: Tensor
    """[B] bool, True where repeats.sum(1) > max_seq_len and the mel was cut (the text is too long
    for this model: split it and synthesize the parts)."""


class FastSpeech(nn.Module):
    """CUDA-Optimized FastSpeech (DLE), inference only. State-dict names are DLE's."""

    def __init__(self, config: FastSpeechConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else FastSpeechConfig()
        self.config = cfg
        self.max_seq_len = cfg.max_seq_len
        self.word_emb = nn.Embedding(cfg.n_phns, cfg.d_model, padding_idx=0)
        self.phoneme_side = FFTBlocks(cfg.max_seq_len, cfg.phoneme_side_n_layer, cfg.phoneme_side_head,
                                      cfg.d_model, cfg.phoneme_side_conv1d_filter_size,
                                      cfg.fft_conv1d_kernel, cfg.fft_conv1d_padding)
        self.length_regulator = LengthRegulator(cfg.phoneme_side_output_size,
                                                cfg.duration_predictor_filter_size,
                                                cfg.duration_predictor_kernel_size)
        self.mel_side = FFTBlocks(cfg.max_seq_len, cfg.mel_side_n_layer, cfg.mel_side_head,
                                  cfg.d_model, cfg.mel_side_conv1d_filter_size,
                                  cfg.fft_conv1d_kernel, cfg.fft_conv1d_padding)
        self.mel_linear = nn.Linear(cfg.mel_side_output_size, cfg.n_mels)

    # -- pieces (trusted inputs; for engines) ----------------------------------

    @staticmethod
    def positions(seq: Tensor) -> Tensor:
        """Positions the DLE data loader builds: [B, T_in] int64, 1..len at symbols, 0 where seq == 0."""
        real = seq.ne(0)
        return torch.cumsum(real, dim=1) * real

    def encode(self, seq: Tensor, pos: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Phoneme side. seq, pos: [B, T_in] int64 -> (encoder_outputs [B, T_in, d] (0 at padding),
        mask [B, T_in] bool, True at real symbols)."""
        if pos is None:
            pos = self.positions(seq)
        x = self.word_emb(seq)
        return self.phoneme_side(x, pos), pos.ne(0)

    def predict_durations(self, encoder_outputs: Tensor, mask: Tensor) -> Tensor:
        """Durations in frames: [B, T_in] float32, clamp(exp(log_d) - 1, 0), 0 at padding."""
        keep = mask.unsqueeze(-1).to(encoder_outputs.dtype)
        log_d = self.length_regulator.duration_predictor(encoder_outputs, keep)
        return torch.clamp_min(torch.exp(log_d) - 1, 0).float()

    def frames_needed(self, repeats: Tensor, allow_truncation: bool = True,
                      max_len: int | None = None) -> tuple[Tensor, Tensor]:
        """``repeats [B, T_in]`` -> (mel frames each item needs ``[B]``, cut to the limit ``[B] bool``).

        DLE cuts an over-long output at ``max_seq_len`` frames (``max_len``, default the
        model's); here that is logged, and with ``allow_truncation=False`` refused with
        InvalidInputError(field="text").
        """
        limit = self.max_seq_len if max_len is None else int(max_len)
        total = repeats.sum(dim=1)
        truncated = total > limit
        if bool(truncated.any()):
            worst = int(total.max())
            if not allow_truncation:
                raise InvalidInputError(
                    f"text too long: it needs {worst} mel frames, this FastSpeech model makes at most "
                    f"{limit}; split it into shorter sentences", field="text")
            logger.warning("FastSpeech output cut to max_seq_len=%d frames for %d of %d items "
                           "(longest needed %d)", limit, int(truncated.sum()), repeats.shape[0], worst)
        return total, truncated

    @staticmethod
    def durations_to_repeats(duration: Tensor, alpha: float = 1.0) -> Tensor:
        """[B, T_in] int64 frames per symbol: round(float32(duration) * alpha), ties to even (as DLE)."""
        return torch.round(duration.float() * alpha).long()

    @staticmethod
    def regulate(encoder_outputs: Tensor, repeats: Tensor, max_len: int | None = None
                 ) -> tuple[Tensor, Tensor]:
        """Length regulator: repeat symbol i ``repeats[:, i]`` times.

        encoder_outputs: [B, T_in, d]; repeats: [B, T_in] int64 >= 0.
        Returns (expanded [B, T, d], zeros at padded frames; mel_pos [B, T] int64, 1.. at real
        frames, 0 at padding) with T = ``max_len`` when given (frames beyond it are cut, missing
        ones padded) else the longest item's total. Vectorised: one gather for the batch.
        """
        b, t_in, d = encoder_outputs.shape
        repeats = repeats.to(torch.long)
        ends = torch.cumsum(repeats, dim=1)  # [B, T_in] frame index where each symbol ends
        total = ends[:, -1] if t_in > 0 else repeats.new_zeros(b)
        t_out = int(total.max()) if max_len is None and b > 0 else int(max_len or 0)
        frames = torch.arange(t_out, device=encoder_outputs.device)
        valid = frames.unsqueeze(0) < total.unsqueeze(1)  # [B, T]
        if t_in == 0 or t_out == 0:
            return (encoder_outputs.new_zeros(b, t_out, d),
                    torch.zeros(b, t_out, dtype=torch.long, device=encoder_outputs.device))
        idx = torch.searchsorted(ends, frames.unsqueeze(0).expand(b, t_out).contiguous(), right=True)
        idx = idx.clamp_(max=t_in - 1)
        expanded = torch.gather(encoder_outputs, 1, idx.unsqueeze(-1).expand(b, t_out, d))
        expanded = expanded * valid.unsqueeze(-1).to(expanded.dtype)
        mel_pos = (frames + 1).unsqueeze(0) * valid
        return expanded, mel_pos

    def decode(self, expanded: Tensor, mel_pos: Tensor) -> Tensor:
        """Mel side and projection: [B, T, d], [B, T] -> mel [B, T, n_mel]; padded frames = mel_linear.bias.

        T == 0 (every duration rounded to 0) gives an empty [B, 0, n_mel] mel, as DLE skips the mel side.
        """
        if expanded.shape[1] == 0:
            return expanded.new_zeros(expanded.shape[0], 0, self.mel_linear.out_features)
        return self.mel_linear(self.mel_side(expanded, mel_pos))

    # -- the whole thing --------------------------------------------------------

    def forward(self, seq: Tensor, pos: Tensor | None = None, alpha: float = 1.0) -> FastSpeechOutput:
        """Same as ``infer``."""
        return self.infer(seq, pos, alpha=alpha)

    @torch.no_grad()
    def infer(self, seq: Tensor, pos: Tensor | None = None, *, alpha: float = 1.0,
              allow_truncation: bool = True) -> FastSpeechOutput:
        """Symbol ids to mel, as DLE's ``Fastspeech.forward`` in eval mode.

        seq: [B, T_in] int64 symbol ids, right-padded with 0. pos: [B, T_in] int64 positions
        (1..len, 0 at padding), computed from ``seq != 0`` when None. alpha: duration scale
        (> 0; 1.3 = 30 % longer, slower speech).

        Outputs longer than ``max_seq_len`` frames are cut to it as DLE does, but reported in
        ``truncated`` (and logged); with ``allow_truncation=False`` they raise
        ``InvalidInputError(field="text")`` instead. Inputs are validated here (bad ids,
        too many symbols, bad alpha -> ``InvalidInputError``).
        """
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
                or not math.isfinite(alpha) or alpha <= 0:
            raise InvalidInputError(f"alpha (duration scale) must be a finite number > 0, got {alpha!r}",
                                    field="alpha")
        self._check_input(seq, pos)
        enc, mask = self.encode(seq, pos)
        duration = self.predict_durations(enc, mask)
        repeats = self.durations_to_repeats(duration, float(alpha))
        total, truncated = self.frames_needed(repeats, allow_truncation)
        t_out = min(int(total.max()) if total.numel() else 0, self.max_seq_len)
        expanded, mel_pos = self.regulate(enc, repeats, t_out)
        mel = self.decode(expanded, mel_pos)
        mel_mask = mel_pos.ne(0)
        return FastSpeechOutput(mel=mel, mel_mask=mel_mask, mel_lengths=mel_mask.sum(dim=1),
                                duration=duration, repeats=repeats, encoder_outputs=enc,
                                truncated=truncated)

    def _check_input(self, seq: Tensor, pos: Tensor | None) -> None:
        if not isinstance(seq, Tensor) or seq.dim() != 2 or seq.dtype.is_floating_point \
                or seq.dtype == torch.bool or seq.is_complex():
            raise InvalidInputError("seq must be an integer tensor [batch, symbols]", field="text")
        if seq.shape[1] == 0 or seq.shape[0] == 0:
            raise InvalidInputError("seq is empty: at least one symbol per item is needed", field="text")
        n_phns = self.word_emb.num_embeddings
        if bool((seq < 0).any()) or bool((seq >= n_phns).any()):
            raise InvalidInputError(f"symbol ids must lie in [0, {n_phns}); got "
                                    f"{int(seq.min())}..{int(seq.max())}", field="text")
        if pos is not None:
            if not isinstance(pos, Tensor) or pos.shape != seq.shape or pos.dtype.is_floating_point:
                raise InvalidInputError(f"pos must be an integer tensor of seq's shape {tuple(seq.shape)}",
                                        field="pos")
            if bool((pos < 0).any()):
                raise InvalidInputError("pos must be >= 0", field="pos")
            longest = int(pos.max())
        else:
            longest = int(seq.ne(0).sum(dim=1).max())
        if longest > self.max_seq_len:
            raise InvalidInputError(
                f"text too long: {longest} symbols, this FastSpeech model takes at most "
                f"{self.max_seq_len}; split it into shorter sentences", field="text")
