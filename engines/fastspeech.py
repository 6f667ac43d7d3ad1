"""FastSpeech multi-engine: one CUDA graph per (batch, input bucket) and (batch, output bucket).

A request runs on the smallest input bucket that holds its symbols and the
smallest output bucket that holds its frames; ``select_bucket`` is a pure
function that returns a bucket or raises. A request longer than every bucket
is refused with ``InvalidInputError`` (the caller splits the text), never
truncated. Padding is masked the way the model masks batch padding, so a
bucketed item equals the eager model's output for the same item in a padded
batch (the model's docstring explains the tiny leak of padding into the last
real position, which is independent of the amount of padding).
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from tts.errors import InvalidInputError
from tts.models.fastspeech import FastSpeech, FastSpeechOutput

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


class _Graphed:
    """``fn(*inputs) -> tuple of tensors`` captured once per input shape (CUDA) or run directly."""

    def __init__(self, fn: Callable[..., tuple[Tensor, ...]], use_graphs: bool, max_graphs: int = 16) -> None:
        self.fn = fn
        self.use_graphs = use_graphs
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple, tuple] = OrderedDict()
        self._pool = None

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        if not self.use_graphs:
            return self.fn(*inputs)
        key = tuple((tuple(x.shape), x.dtype) for x in inputs)
        entry = self._graphs.get(key)
        if entry is None:
            static = [x.clone() for x in inputs]
            stream = torch.cuda.Stream(inputs[0].device)
            stream.wait_stream(torch.cuda.current_stream(inputs[0].device))
            with torch.cuda.stream(stream):
                self.fn(*static)
            torch.cuda.current_stream(inputs[0].device).wait_stream(stream)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                outs = self.fn(*static)
            entry = (graph, static, outs)
            self._graphs[key] = entry
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        graph, static, outs = entry
        for s, x in zip(static, inputs):
            s.copy_(x)
        graph.replay()
        return tuple(o.clone() for o in outs)


class FastSpeechEngine:
    """Fast ``FastSpeech.infer`` on length buckets; same arguments, same result type.

    ``input_buckets``/``output_buckets_`` override the buckets (symbols / frames).
    """

    def __init__(self, model: FastSpeech, *, device: torch.device | str = "cuda", precision: str = "fp16",
                 input_buckets: Sequence[int] = INPUT_BUCKETS, output_buckets_: Sequence[int] | None = None,
                 use_graphs: bool | None = None) -> None:
        if precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be fp16 or fp32, got {precision!r}")
        self.device = torch.device(device)
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.reference = model
        self.model = copy.deepcopy(model).to(self.device, self.dtype).eval()
        self.max_seq_len = model.max_seq_len
        self.input_buckets = tuple(sorted(b for b in input_buckets if b <= model.max_seq_len))
        self.output_buckets = tuple(output_buckets_ or output_buckets(model.max_seq_len))
        graphs = self.device.type == "cuda" if use_graphs is None else bool(use_graphs)
        self._encoder = _Graphed(self._encode, graphs)
        self._decoder = _Graphed(self._decode, graphs)

    def _encode(self, seq: Tensor) -> tuple[Tensor, Tensor]:
        enc, mask = self.model.encode(seq)
        return enc, self.model.predict_durations(enc, mask)

    def _decode(self, expanded: Tensor, mel_pos: Tensor) -> tuple[Tensor]:
        return (self.model.decode(expanded, mel_pos),)

    def buckets_for(self, n_symbols: int, n_frames: int) -> tuple[int, int]:
        """(input bucket, output bucket) for a request; raises InvalidInputError if none holds it."""
        return select_bucket(n_symbols, self.input_buckets), select_bucket(n_frames, self.output_buckets)

    @torch.inference_mode()
    def infer(self, seq: Tensor, pos: Tensor | None = None, *, alpha: float = 1.0,
              allow_truncation: bool = True) -> FastSpeechOutput:
        """``seq [B, T_in] int64`` (0-padded) -> ``FastSpeechOutput`` (mel ``[B, T, n_mel]`` engine dtype).

        ``pos`` must be None or the positions of ``seq``'s non-zero symbols (engines compute them).
        Output longer than the largest bucket or ``max_seq_len`` raises InvalidInputError.
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
            total = repeats.sum(dim=1)
            t_out = int(total.max())
            if t_out > self.max_seq_len:
                raise InvalidInputError(
                    f"text too long: it needs {t_out} mel frames, this FastSpeech model makes at most "
                    f"{self.max_seq_len}; split it into shorter sentences", field="text")
            out_b = select_bucket(max(t_out, 1), self.output_buckets)
            expanded, mel_pos = self.model.regulate(enc, repeats, out_b)
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
                                truncated=torch.zeros(b, dtype=torch.bool, device=self.device))

    __call__ = infer
