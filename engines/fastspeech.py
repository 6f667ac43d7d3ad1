"""FastSpeech multi-engine: one CUDA graph per (batch, input bucket) and (batch, output bucket).

A request runs on the smallest input bucket that holds its symbols and the
smallest output bucket that holds its frames; ``select_bucket`` is a pure
function that returns a bucket or raises. A request with more symbols than
the largest bucket is refused with ``InvalidInputError`` (the caller splits
the text), never truncated; output longer than ``max_seq_len`` frames is cut
and reported in ``truncated`` exactly as ``FastSpeech.infer`` does.

Padding (``exact=True``, the default): DLE FastSpeech lets padding leak into
the last real position (the hidden of each feed-forward block's ``w_1`` and
the duration predictor's first LayerNorm output are not zeroed at padded
positions before the next kernel-3 convolution). The engine zeroes both at
padded positions, on the input side and the mel side, so every item of a
padded bucket computes exactly what the eager model computes for that item
run alone, unpadded (the single-utterance reference): the convolution then
sees the same zeros its own zero padding gives. ``exact=False`` keeps DLE's
batch arithmetic (the eager model's own modules).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from tts.engines._device import on_device
from tts.engines._graphs import LRU, GraphPool, capture
from tts.engines.precision import ENGINE_PRECISIONS, set_float32_math
from tts.errors import InvalidInputError
from tts.models.fastspeech import FastSpeech, FastSpeechOutput

logger = logging.getLogger(__name__)

__all__ = ["FastSpeechEngine", "select_bucket", "INPUT_BUCKETS", "output_buckets"]

#: Input-length buckets (symbols).
INPUT_BUCKETS = (32, 64, 96, 128, 256)


def output_buckets(max_seq_len: int, step: int = 128) -> tuple[int, ...]:
    """Output-length buckets (frames): multiples of ``step`` up to the model's ``max_seq_len``."""
    out = list(range(step, max_seq_len, step)) + [max_seq_len]
    return tuple(sorted(set(out)))


def select_bucket(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= ``length``; InvalidInputError if ``length`` exceeds them all.

    Pure: reads nothing but its arguments, changes nothing.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise InvalidInputError(f"length must be a positive integer, got {length!r}", field="text")
    for b in sorted(buckets):
        if b >= length:
            return b
    raise InvalidInputError(
        f"{length} is longer than the largest engine bucket ({max(buckets)}); split the text into "
        "shorter sentences", field="text")


def _ffn_masked(ffn: torch.nn.Module, x: Tensor, keep: Tensor) -> Tensor:
    """``PositionwiseFeedForward`` with its hidden zeroed at padding: x ``[B, T, d]``, keep ``[B, T, 1]``."""
    h = F.relu(ffn.w_1(x.transpose(1, 2))) * keep.transpose(1, 2)
    h = ffn.w_2(h).transpose(1, 2)
    return ffn.layer_norm(h + x)


def fft_blocks_exact(blocks: torch.nn.Module, x: Tensor, pos: Tensor) -> Tensor:
    """``FFTBlocks.forward`` with every padded hidden zeroed: ``[B, T, d]``, ``pos [B, T]`` -> ``[B, T, d]``.

    Each item's rows equal the model's output for that item alone (no padding).
    """
    key_pad = pos.eq(0)
    keep = pos.ne(0).unsqueeze(-1).to(x.dtype)
    out = x + blocks.position(pos)
    for layer in blocks.layer_stack:
        out = layer.slf_attn(out, key_pad) * keep
        out = _ffn_masked(layer.pos_ffn, out, keep) * keep
    return out


def durations_exact(dp: torch.nn.Module, x: Tensor, keep: Tensor) -> Tensor:
    """``DurationPredictor.forward`` with the first LayerNorm's output zeroed at padding: log-durations [B, T_in]."""
    out = x * keep
    out = dp.layer_norm_1(F.relu(dp.conv1d_1(out.transpose(1, 2)).transpose(1, 2))) * keep
    out = dp.layer_norm_2(F.relu(dp.conv1d_2(out.transpose(1, 2)).transpose(1, 2)))
    return (dp.linear_layer(out) * keep).squeeze(-1)


class _Graphed:
    """``fn(*inputs) -> tuple of tensors`` captured once per input shape (CUDA) or run directly."""

    def __init__(self, fn: Callable[..., tuple[Tensor, ...]], use_graphs: bool, max_graphs: int = 16) -> None:
        self.fn = fn
        self.use_graphs = use_graphs
        self._graphs: LRU[tuple] = LRU(max_graphs)
        self._pool = GraphPool()

    def _capture(self, inputs: tuple[Tensor, ...]) -> tuple:
        static = [x.clone() for x in inputs]
        graph, outs = capture(lambda: self.fn(*static), inputs[0].device, pool=self._pool)
        return graph, static, outs

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        if not self.use_graphs:
            return self.fn(*inputs)
        key = tuple((tuple(x.shape), x.dtype) for x in inputs)
        graph, static, outs = self._graphs.get_or_make(key, lambda: self._capture(inputs))
        for s, x in zip(static, inputs):
            s.copy_(x)
        graph.replay()
        return tuple(o.clone() for o in outs)


class FastSpeechEngine:
    """Fast ``FastSpeech.infer`` on length buckets; same arguments, same result type.

    ``input_buckets``/``output_buckets_`` override the buckets (symbols / frames).
    ``exact``: zero padded hiddens so that a bucketed item equals the item run alone
    (default; see the module docstring); False keeps DLE's padded-batch arithmetic.
    ``fp32_durations``: at fp16, run the phoneme side and the duration predictor in
    float32 (default): durations are rounded to whole frames, and float16 rounding moves
    some across a rounding boundary, which shifts every later frame; the mel side, with
    several times more positions, runs in float16.
    """

    def __init__(self, model: FastSpeech, *, device: torch.device | str = "cuda", precision: str = "fp16",
                 input_buckets: Sequence[int] = INPUT_BUCKETS, output_buckets_: Sequence[int] | None = None,
                 use_graphs: bool | None = None, exact: bool = True, fp32_durations: bool = True) -> None:
        if precision not in ENGINE_PRECISIONS:
            raise ValueError(f"precision must be one of {list(ENGINE_PRECISIONS)}, got {precision!r}")
        self.device = torch.device(device)
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        set_float32_math(precision, self.device)   # fp32: IEEE float32 (no TF32)
        self.reference = model
        self.model = copy.deepcopy(model).to(self.device, self.dtype).eval()
        self.enc_model = self.model
        if self.dtype != torch.float32 and fp32_durations:
            p0 = next(model.parameters())
            if p0.device == self.device and p0.dtype == torch.float32:
                self.enc_model = model.eval()
            else:
                self.enc_model = copy.deepcopy(model).to(self.device, torch.float32).eval()
        self.config = model.config
        self.max_seq_len = model.max_seq_len
        self.exact = bool(exact)
        self.input_buckets = tuple(sorted(b for b in input_buckets if b <= model.max_seq_len))
        self.output_buckets = tuple(output_buckets_ or output_buckets(model.max_seq_len))
        graphs = self.device.type == "cuda" if use_graphs is None else bool(use_graphs)
        self._encoder = _Graphed(self._encode, graphs)
        self._decoder = _Graphed(self._decode, graphs)

    def _encode(self, seq: Tensor) -> tuple[Tensor, Tensor]:
        """``seq [B, T_in]`` -> (encoder outputs ``[B, T_in, d]`` engine dtype, durations ``[B, T_in]`` f32)."""
        m = self.enc_model
        if not self.exact:
            enc, mask = m.encode(seq)
            return enc.to(self.dtype), m.predict_durations(enc, mask)
        pos = m.positions(seq)
        enc = fft_blocks_exact(m.phoneme_side, m.word_emb(seq), pos)
        keep = pos.ne(0).unsqueeze(-1).to(enc.dtype)
        log_d = durations_exact(m.length_regulator.duration_predictor, enc, keep)
        return enc.to(self.dtype), torch.clamp_min(torch.exp(log_d.float()) - 1, 0)

    def _decode(self, expanded: Tensor, mel_pos: Tensor) -> tuple[Tensor]:
        m = self.model
        if not self.exact:
            return (m.decode(expanded, mel_pos),)
        return (m.mel_linear(fft_blocks_exact(m.mel_side, expanded, mel_pos)),)

    def buckets_for(self, n_symbols: int, n_frames: int) -> tuple[int, int]:
        """(input bucket, output bucket) for a request; raises InvalidInputError if none holds it."""
        return select_bucket(n_symbols, self.input_buckets), select_bucket(n_frames, self.output_buckets)

    @on_device
    @torch.inference_mode()
    def infer(self, seq: Tensor, pos: Tensor | None = None, *, alpha: float = 1.0,
              allow_truncation: bool = True) -> FastSpeechOutput:
        """``seq [B, T_in] int64`` (0-padded) -> ``FastSpeechOutput`` (mel ``[B, T, n_mel]`` engine dtype).

        ``pos`` must be None or the positions of ``seq``'s non-zero symbols (engines compute them).
        More symbols than the largest bucket raise InvalidInputError; output longer than
        ``max_seq_len`` is cut and flagged in ``truncated`` (or raises with ``allow_truncation=False``).
        """
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) \
                or alpha <= 0:
            raise InvalidInputError(f"alpha (duration scale) must be a finite number > 0, got {alpha!r}",
                                    field="alpha")
        self.reference._check_input(seq, pos)
        seq = seq.to(self.device)
        b, t_in = seq.shape
        n_sym = int(seq.ne(0).sum(1).max())
        in_b = select_bucket(max(n_sym, 1), self.input_buckets)
        keep = min(t_in, in_b)
        padded = torch.zeros(b, in_b, dtype=torch.long, device=self.device)
        padded[:, :keep] = seq[:, :keep]
        with torch.autocast(self.device.type, enabled=False):
            enc, duration = self._encoder(padded)
            repeats = self.model.durations_to_repeats(duration, float(alpha))
            total, truncated = self.model.frames_needed(repeats, allow_truncation, self.max_seq_len)
            t_out = min(int(total.max()), self.max_seq_len)
            out_b = select_bucket(max(t_out, 1), self.output_buckets)
            expanded, mel_pos = self.model.regulate(enc, repeats, out_b)
            mel_pos = mel_pos * (mel_pos <= t_out)       # frames past max_seq_len are cut
            expanded = expanded * mel_pos.ne(0).unsqueeze(-1).to(expanded.dtype)
            (mel,) = self._decoder(expanded, mel_pos)
        mel = mel[:, :t_out]
        mel_pos = mel_pos[:, :t_out]
        pad_w = t_in - keep
        enc_out = enc[:, :keep]
        dur_out, rep_out = duration[:, :keep], repeats[:, :keep]
        if pad_w > 0:
            enc_out = torch.nn.functional.pad(enc_out, (0, 0, 0, pad_w))
            dur_out = torch.nn.functional.pad(dur_out, (0, pad_w))
            rep_out = torch.nn.functional.pad(rep_out, (0, pad_w))
        mel_mask = mel_pos.ne(0)
        return FastSpeechOutput(mel=mel, mel_mask=mel_mask, mel_lengths=mel_mask.sum(dim=1),
                                duration=dur_out, repeats=rep_out, encoder_outputs=enc_out,
                                truncated=truncated)

    __call__ = infer
