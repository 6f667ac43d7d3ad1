"""Tacotron2 (encoder, location-sensitive attention decoder, postnet) as pure ``torch.nn``.

The module tree reproduces NVIDIA DeepLearningExamples' (DLE) Tacotron2
exactly, so ``model.load_state_dict(dle_state_dict)`` works without renaming,
and ``Tacotron2.infer`` computes what DLE's ``Tacotron2.infer`` computes:

- the encoder convolutions run over the padding (the embedding of id 0);
- every item stops on its own gate, but decoding goes on for finished items
  until all have stopped (or ``max_decoder_steps``), and the postnet runs
  over the whole decoded length;
- that is ``stop_rule="gate"``, the default here; ``stop_rule="attention"``
  (``StopRule``) also stops an item whose attention has sat on its last input
  symbol for some frames, or that reached a step budget from its text length,
  so an item whose gate never fires does not run on to ``max_decoder_steps``;
- the prenet applies dropout p=0.5 *also in eval mode* (DLE's behaviour);
  ``prenet_dropout=0.0`` gives the deterministic mode of the reference
  fixtures.

The decoder can also be driven one step at a time with an explicit
``DecoderState`` (``Decoder.init_state`` / ``Decoder.step``), which is what
GPU engines and continuous batching build on; ``infer`` is built on the same
two calls.

Nothing here chooses a device or dtype: every tensor follows the inputs and
the weights, so the same code runs on CPU in float32 and on GPU in
float16/bfloat16.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tts.errors import InvalidInputError
from tts.models.layers import ConvNorm, LinearNorm, conv_bn, lengths_to_padding_mask

logger = logging.getLogger(__name__)

__all__ = [
    "Tacotron2Config", "Tacotron2", "Tacotron2Output", "Encoder", "Decoder",
    "DecoderState", "DecoderStepOutput", "DecoderOutput", "Attention", "Prenet", "Postnet",
    "STOP_RULES", "StopRule", "ATTENTION_STOP", "step_limit", "count_end_frames", "attention_ended",
    "check_stop_rule",
]


# --------------------------------------------------------------------------- stop rule

#: How the decoder decides that an item is done: ``gate`` (DLE: the stop gate alone, or
#: ``max_decoder_steps``) or ``attention`` (``StopRule``: the gate, or the attention on the last
#: input symbol, or a step budget from the text length).
STOP_RULES = ("gate", "attention")


@dataclass(frozen=True)
class StopRule:
    """The ``attention`` stop rule: an item also stops

    - once its cumulative attention on its last input symbol has been at least ``end_mass``
      for ``end_frames`` decoder steps (counted from the step it first reached ``end_mass``;
      cumulative attention never falls) and it has made at least ``min_steps`` steps (on one
      or two symbols the attention sits on the last one from the start); that step counts as
      the step on which the gate fired; or
    - at its step budget: ``ceil(steps_per_symbol * n) + margin`` steps (n: its input
      symbols; never more than ``max_decoder_steps``), a run-on like ``max_decoder_steps``.

    An item whose gate fires before either ends exactly where the gate rule ends it (same
    frames, same step count), so the rule changes only items that would run on. The
    constants come from the bundled ``slt-tacotron2`` (``recipes/bundled_voice/stop_rule.py``,
    numbers in ``recipes/bundled_voice/README.md``, "Known faults"): over 526 draws whose gate
    fired (val and train lines, phrase_8_128, short texts) the gate fired 0-36 steps after the
    last symbol's cumulative attention reached 1.0 (``end_frames`` 50 leaves 14), one- and
    two-symbol texts ended by the gate at up to step 87 with the attention on their last symbol
    from the first step (``min_steps`` 120), and sentences made 4.1-7.6 steps per symbol, mean
    5.2 (the budget: 10 per symbol, plus 120 for the shortest texts).
    """

    end_mass: float = 1.0
    end_frames: int = 50
    min_steps: int = 120
    steps_per_symbol: float = 10.0
    margin: int = 120

    def limit(self, n_symbols: int, max_steps: int) -> int:
        """Step budget of an item of ``n_symbols`` inputs: at most ``max_steps``."""
        return max(1, min(int(max_steps), int(math.ceil(self.steps_per_symbol * int(n_symbols))) + self.margin))

    def limits(self, lengths: Tensor, max_steps: int) -> Tensor:
        """``limit`` of each of ``lengths [B]`` as an int32 tensor on the same device."""
        budget = torch.ceil(lengths.to(torch.float64) * self.steps_per_symbol).to(torch.int64) + self.margin
        return budget.clamp(min=1, max=int(max_steps)).to(torch.int32)


#: The constants of the ``attention`` rule in every decoder (eager, CUDA-graph engine, slot decoder).
ATTENTION_STOP = StopRule()


def step_limit(stop_rule: str, n_symbols: int, max_steps: int) -> int:
    """The most decoder steps an item of ``n_symbols`` inputs makes under ``stop_rule``."""
    return ATTENTION_STOP.limit(n_symbols, max_steps) if stop_rule == "attention" else int(max_steps)


def count_end_frames(end_count: Tensor, cum_weights: Tensor, last: Tensor) -> None:
    """One step of the ``attention`` rule's count: ``end_count [B] int32`` += 1 (in place) where the
    cumulative attention ``cum_weights [B, T_in]`` at ``last [B]`` (int64: each item's last input
    position) is at least ``ATTENTION_STOP.end_mass``. The same tensor ops in every decoder
    (capturable in a CUDA graph)."""
    mass = cum_weights.gather(1, last.unsqueeze(1)).squeeze(1)
    end_count.add_((mass >= ATTENTION_STOP.end_mass).to(torch.int32))


def attention_ended(end_count: Tensor, steps: Tensor | int) -> Tensor:
    """``[B] bool``: the attention part of the rule fires, given ``end_count [B]`` after a step
    and ``steps`` (int or int tensor broadcastable to ``[B]``) made including that step."""
    return (end_count >= ATTENTION_STOP.end_frames) & (torch.as_tensor(steps, device=end_count.device)
                                                       >= ATTENTION_STOP.min_steps)


def check_stop_rule(stop_rule: str | None) -> str:
    """``stop_rule`` (None: ``gate``, DLE's) or InvalidInputError naming ``stop_rule``."""
    if stop_rule is None:
        return "gate"
    if stop_rule not in STOP_RULES:
        raise InvalidInputError(f"stop_rule must be one of {', '.join(STOP_RULES)}, got {stop_rule!r}",
                                field="stop_rule")
    return stop_rule


# --------------------------------------------------------------------------- config

@dataclass(frozen=True)
class Tacotron2Config:
    """Load-time hyper-parameters: DLE's 22 ``Tacotron2`` constructor kwargs.

    Field names equal the keys of the ``config`` dict in DLE checkpoints.
    Defaults are those of NVIDIA's published NGC model (DLE ``arg_parser``
    defaults with the 148-symbol English table).
    """

    mask_padding: bool = False
    """Training only: zero padded frames of the outputs (no effect on inference)."""
    n_mel_channels: int = 80
    """Mel channels of one output frame."""
    n_symbols: int = 148
    """Rows of the symbol embedding (size of the symbol table)."""
    symbols_embedding_dim: int = 512
    """Width of the symbol embedding (must equal encoder_embedding_dim)."""
    encoder_kernel_size: int = 5
    """Kernel size of the encoder convolutions (odd)."""
    encoder_n_convolutions: int = 3
    """Number of encoder convolution + BatchNorm blocks."""
    encoder_embedding_dim: int = 512
    """Encoder channels and output width (bidirectional LSTM of width/2 each way; even)."""
    attention_rnn_dim: int = 1024
    """Hidden size of the attention LSTMCell."""
    attention_dim: int = 128
    """Width of the attention energies' hidden space (query/memory/location projections)."""
    attention_location_n_filters: int = 32
    """Filters of the location convolution over previous and cumulative attention."""
    attention_location_kernel_size: int = 31
    """Kernel size of the location convolution (odd)."""
    n_frames_per_step: int = 1
    """Mel frames produced per decoder step."""
    decoder_rnn_dim: int = 1024
    """Hidden size of the decoder LSTMCell."""
    prenet_dim: int = 256
    """Width of both prenet layers."""
    max_decoder_steps: int = 2000
    """Inference: the most decoder steps before decoding stops regardless of the gate."""
    gate_threshold: float = 0.5
    """Inference: an item stops once sigmoid(gate logit) exceeds this."""
    p_attention_dropout: float = 0.1
    """Training only: dropout on the attention LSTM output."""
    p_decoder_dropout: float = 0.1
    """Training only: dropout on the decoder LSTM output."""
    postnet_embedding_dim: int = 512
    """Channels of the inner postnet convolutions."""
    postnet_kernel_size: int = 5
    """Kernel size of the postnet convolutions (odd)."""
    postnet_n_convolutions: int = 5
    """Number of postnet convolution + BatchNorm blocks (at least 2)."""
    decoder_no_early_stopping: bool = False
    """Inference: always run max_decoder_steps steps instead of stopping when all items stopped."""

    #: Fields that the tensor shapes of a state_dict determine (the rest are
    #: inference/training settings that a file without ``config`` lacks).
    SHAPE_FIELDS: ClassVar[tuple[str, ...]] = (
        "n_mel_channels", "n_symbols", "symbols_embedding_dim", "encoder_kernel_size",
        "encoder_n_convolutions", "encoder_embedding_dim", "attention_rnn_dim", "attention_dim",
        "attention_location_n_filters", "attention_location_kernel_size", "n_frames_per_step",
        "decoder_rnn_dim", "prenet_dim", "postnet_embedding_dim", "postnet_kernel_size",
        "postnet_n_convolutions",
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("bool", bool):
                if not isinstance(v, bool):
                    raise ValueError(f"Tacotron2Config.{f.name} must be a bool, got {v!r}")
            elif f.type in ("int", int):
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ValueError(f"Tacotron2Config.{f.name} must be a positive int, got {v!r}")
            elif f.type in ("float", float):
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ValueError(f"Tacotron2Config.{f.name} must be a number, got {v!r}")
        for name in ("encoder_kernel_size", "attention_location_kernel_size", "postnet_kernel_size"):
            if getattr(self, name) % 2 != 1:
                raise ValueError(f"Tacotron2Config.{name} must be odd, got {getattr(self, name)}")
        if self.encoder_embedding_dim % 2:
            raise ValueError("Tacotron2Config.encoder_embedding_dim must be even (bidirectional LSTM "
                             f"of half the width), got {self.encoder_embedding_dim}")
        if self.symbols_embedding_dim != self.encoder_embedding_dim:
            raise ValueError("Tacotron2Config.symbols_embedding_dim must equal encoder_embedding_dim "
                             f"(the embedding feeds the encoder convolutions), got "
                             f"{self.symbols_embedding_dim} and {self.encoder_embedding_dim}")
        if self.postnet_n_convolutions < 2:
            raise ValueError("Tacotron2Config.postnet_n_convolutions must be at least 2, "
                             f"got {self.postnet_n_convolutions}")
        if not 0.0 < self.gate_threshold < 1.0:
            raise ValueError(f"Tacotron2Config.gate_threshold must be in (0, 1), got {self.gate_threshold}")
        for name in ("p_attention_dropout", "p_decoder_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"Tacotron2Config.{name} must be in [0, 1), got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Tacotron2Config:
        """Build from a DLE ``config`` dict; unknown keys are ignored with a warning,
        missing keys take the defaults. Raises ValueError for invalid values."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            logger.warning("Tacotron2Config: ignoring unknown keys %s", ", ".join(unknown))
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        """The 22 fields as a plain dict (the layout of a DLE checkpoint's ``config``)."""
        return asdict(self)


# --------------------------------------------------------------------------- results

@dataclass
class Tacotron2Output:
    """Result of ``Tacotron2.infer``; float tensors in the model's dtype."""

    mel: Tensor
    """``[B, n_mel, T_out]`` decoder output before the postnet (T_out = steps * n_frames_per_step)."""
    mel_postnet: Tensor
    """``[B, n_mel, T_out]`` ``mel + postnet(mel)``: what DLE's ``infer`` returns first."""
    gate: Tensor
    """``[B, steps]`` gate logits (before sigmoid)."""
    alignments: Tensor
    """``[B, steps, T_in]`` attention weights, 0 at padded inputs."""
    mel_lengths: Tensor
    """``[B] int32`` decoder steps before each item's gate first fired (DLE rule);
    ``max_decoder_steps`` for items whose gate never fired."""
    encoder_outputs: Tensor
    """``[B, T_in, encoder_embedding_dim]``, exactly 0 at padded positions."""


class DecoderStepOutput(NamedTuple):
    """Result of one ``Decoder.step``."""

    frame: Tensor
    """``[B, n_mel * n_frames_per_step]`` projected output; the next step's ``prev_frame``."""
    gate_logit: Tensor
    """``[B]`` stop-gate logit (before sigmoid)."""
    attention_weights: Tensor
    """``[B, T_in]`` this step's attention weights."""


@dataclass
class DecoderOutput:
    """Result of ``Decoder.infer`` (before the postnet)."""

    mel: Tensor
    """``[B, n_mel, steps * n_frames_per_step]``."""
    gate: Tensor
    """``[B, steps]`` gate logits."""
    alignments: Tensor
    """``[B, steps, T_in]``."""
    mel_lengths: Tensor
    """``[B] int32`` (DLE gate rule, counted in decoder steps)."""


@dataclass
class DecoderState:
    """The recurrent state of the decoder for a batch of B items.

    All float tensors have the dtype and device of the encoder outputs;
    ``Decoder.step`` replaces the fields in place (the object is mutated).
    """

    attention_hidden: Tensor
    """``[B, attention_rnn_dim]`` attention LSTMCell h."""
    attention_cell: Tensor
    """``[B, attention_rnn_dim]`` attention LSTMCell c."""
    decoder_hidden: Tensor
    """``[B, decoder_rnn_dim]`` decoder LSTMCell h."""
    decoder_cell: Tensor
    """``[B, decoder_rnn_dim]`` decoder LSTMCell c."""
    attention_weights: Tensor
    """``[B, T_in]`` previous step's attention weights."""
    attention_weights_cum: Tensor
    """``[B, T_in]`` sum of all previous attention weights."""
    attention_context: Tensor
    """``[B, encoder_embedding_dim]`` previous step's attention context."""
    processed_memory: Tensor
    """``[B, T_in, attention_dim]`` ``memory_layer(memory)``, computed once."""
    memory: Tensor
    """``[B, T_in, encoder_embedding_dim]`` encoder outputs."""
    mask: Tensor
    """``[B, T_in] bool``, True at padded input positions."""

    @property
    def batch_size(self) -> int:
        return self.memory.size(0)

    @property
    def max_input_length(self) -> int:
        return self.memory.size(1)

    def select(self, index: Tensor | Sequence[int]) -> DecoderState:
        """A new state holding the items ``index`` (``[K]`` int) in that order.

        The input length stays ``T_in``; use ``concat([state])`` after a
        selection if trimming trailing padding matters.
        """
        idx = torch.as_tensor(index, dtype=torch.long, device=self.memory.device)
        return DecoderState(**{f.name: getattr(self, f.name).index_select(0, idx)
                               for f in fields(self)})

    def narrow_inputs(self, length: int) -> DecoderState:
        """A new state keeping input positions ``0..length-1`` (drop trailing padding,
        e.g. after the longest item left the batch). Every dropped position must be
        padding for every item (checked: ValueError otherwise)."""
        if not 1 <= length <= self.max_input_length:
            raise ValueError(f"length must be in 1..{self.max_input_length}, got {length}")
        if not bool(self.mask[:, length:].all()):
            raise ValueError(f"cannot narrow to {length} input positions: some items are longer")
        return DecoderState(**{f.name: (getattr(self, f.name).narrow(1, 0, length)
                                        if f.name in _TIME_FIELDS else getattr(self, f.name))
                               for f in fields(self)})

    @classmethod
    def concat(cls, states: Sequence[DecoderState]) -> DecoderState:
        """Join states of different input lengths into one batch (continuous batching).

        Each state is padded on the right to the longest ``T_in``: memory,
        processed memory and attention weights with zeros, the mask with True.
        Decoding the joined batch gives each item the same result as alone
        (masked positions get exactly zero attention), up to float rounding.
        """
        if not states:
            raise ValueError("DecoderState.concat needs at least one state")
        t_max = max(s.max_input_length for s in states)
        out: dict[str, Tensor] = {}
        for f in fields(cls):
            parts = []
            for s in states:
                t = getattr(s, f.name)
                pad = t_max - s.max_input_length
                if pad and f.name in _TIME_FIELDS:
                    if f.name == "mask":
                        t = F.pad(t, (0, pad), value=True)
                    elif t.dim() == 3:
                        t = F.pad(t, (0, 0, 0, pad))
                    else:
                        t = F.pad(t, (0, pad))
                parts.append(t)
            out[f.name] = torch.cat(parts, 0)
        return cls(**out)


_TIME_FIELDS = frozenset({"attention_weights", "attention_weights_cum", "processed_memory",
                          "memory", "mask"})


# --------------------------------------------------------------------------- modules

class LocationLayer(nn.Module):
    """Convolution over [previous, cumulative] attention, then a projection.

    ``[B, 2, T_in] -> [B, T_in, attention_dim]``.
    """

    def __init__(self, n_filters: int, kernel_size: int, attention_dim: int) -> None:
        super().__init__()
        self.location_conv = ConvNorm(2, n_filters, kernel_size=kernel_size,
                                      padding=(kernel_size - 1) // 2, bias=False)
        self.location_dense = LinearNorm(n_filters, attention_dim, bias=False, w_init_gain="tanh")

    def forward(self, attention_weights_cat: Tensor) -> Tensor:
        return self.location_dense(self.location_conv(attention_weights_cat).transpose(1, 2))


class Attention(nn.Module):
    """Location-sensitive additive attention (Chorowski et al.), as DLE computes it."""

    def __init__(self, attention_rnn_dim: int, embedding_dim: int, attention_dim: int,
                 n_filters: int, kernel_size: int) -> None:
        super().__init__()
        self.query_layer = LinearNorm(attention_rnn_dim, attention_dim, bias=False, w_init_gain="tanh")
        self.memory_layer = LinearNorm(embedding_dim, attention_dim, bias=False, w_init_gain="tanh")
        self.v = LinearNorm(attention_dim, 1, bias=False)
        self.location_layer = LocationLayer(n_filters, kernel_size, attention_dim)

    def forward(self, query: Tensor, memory: Tensor, processed_memory: Tensor,
                attention_weights_cat: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``query [B, attention_rnn_dim]``, ``memory [B, T_in, E]``,
        ``processed_memory [B, T_in, A]``, ``attention_weights_cat [B, 2, T_in]``,
        ``mask [B, T_in] bool`` -> ``(context [B, E], weights [B, T_in])``."""
        processed_query = self.query_layer(query.unsqueeze(1))
        processed_location = self.location_layer(attention_weights_cat)
        energies = self.v(torch.tanh(processed_query + processed_location + processed_memory))
        energies = energies.squeeze(2).masked_fill(mask, float("-inf"))
        weights = F.softmax(energies, dim=1)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)
        return context, weights


class Prenet(nn.Module):
    """Two bias-free linear layers with ReLU and dropout that DLE keeps on at inference."""

    def __init__(self, in_dim: int, sizes: Sequence[int]) -> None:
        super().__init__()
        in_sizes = [in_dim, *sizes[:-1]]
        self.layers = nn.ModuleList(LinearNorm(i, o, bias=False) for i, o in zip(in_sizes, sizes))

    def forward(self, x: Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
        """``x [B, n_mel * n_frames_per_step] -> [B, prenet_dim]``.

        ``p`` is the dropout probability, applied whatever the module's mode
        (p=0: no dropout). Without a generator the masks come from torch's
        global RNG through ``F.dropout``, exactly as DLE draws them; with one,
        from ``bernoulli_`` on that generator (which must be on x's device).
        """
        for linear in self.layers:
            x = F.relu(linear(x))
            if p > 0.0:
                if generator is None:
                    x = F.dropout(x, p=p, training=True)
                else:
                    keep = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator)
                    x = x * keep.div_(1.0 - p)
        return x


class Postnet(nn.Module):
    """Convolution + BatchNorm blocks (tanh between them) predicting a mel residual."""

    def __init__(self, n_mel_channels: int, embedding_dim: int, kernel_size: int,
                 n_convolutions: int) -> None:
        super().__init__()
        chans = [n_mel_channels] + [embedding_dim] * (n_convolutions - 1) + [n_mel_channels]
        self.convolutions = nn.ModuleList(
            conv_bn(chans[i], chans[i + 1], kernel_size,
                    "linear" if i == n_convolutions - 1 else "tanh")
            for i in range(n_convolutions))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, n_mel, T] -> [B, n_mel, T]`` (the residual, not yet added)."""
        last = len(self.convolutions) - 1
        for i, conv in enumerate(self.convolutions):
            x = conv(x)
            if i < last:
                x = torch.tanh(x)
            x = F.dropout(x, 0.5, self.training)
        return x


class Encoder(nn.Module):
    """Convolution + BatchNorm + ReLU blocks, then a bidirectional LSTM."""

    def __init__(self, n_convolutions: int, embedding_dim: int, kernel_size: int) -> None:
        super().__init__()
        self.convolutions = nn.ModuleList(
            conv_bn(embedding_dim, embedding_dim, kernel_size, "relu") for _ in range(n_convolutions))
        self.lstm = nn.LSTM(embedding_dim, embedding_dim // 2, 1, batch_first=True, bidirectional=True)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``x [B, E, T_in]`` (embedded, padding included), ``lengths [B]`` -> ``[B, T_in, E]``.

        The convolutions see the padding, as in DLE; the LSTM does not
        (packed sequence), and its outputs are 0 at padded positions. Items
        need not be sorted by length.
        """
        t_in = x.size(2)
        for conv in self.convolutions:
            x = F.dropout(F.relu(conv(x)), 0.5, self.training)
        x = x.transpose(1, 2)
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths.detach().to("cpu", torch.int64), batch_first=True, enforce_sorted=False)
        self.lstm.flatten_parameters()  # no-op on CPU; keeps cuDNN weights contiguous after .to()
        outputs, _ = self.lstm(packed)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True, total_length=t_in)
        return outputs


class Decoder(nn.Module):
    """Autoregressive decoder: prenet, attention LSTM, attention, decoder LSTM, projections.

    Step API (what ``infer`` is built on)::

        state = decoder.init_state(memory, memory_lengths)
        frame = decoder.go_frame(state)
        for _ in range(n):
            frame, gate_logit, weights = decoder.step(state, frame, prenet_dropout=0.0)

    ``step`` mutates ``state``; the frame it returns is the next ``prev_frame``.
    """

    def __init__(self, config: Tacotron2Config) -> None:
        super().__init__()
        c = config
        self.n_mel_channels = c.n_mel_channels
        self.n_frames_per_step = c.n_frames_per_step
        self.encoder_embedding_dim = c.encoder_embedding_dim
        self.attention_rnn_dim = c.attention_rnn_dim
        self.decoder_rnn_dim = c.decoder_rnn_dim
        self.p_attention_dropout = c.p_attention_dropout
        self.p_decoder_dropout = c.p_decoder_dropout
        self.max_decoder_steps = c.max_decoder_steps
        self.gate_threshold = c.gate_threshold
        self.early_stopping = not c.decoder_no_early_stopping
        frame_dim = c.n_mel_channels * c.n_frames_per_step
        e = c.encoder_embedding_dim
        self.prenet = Prenet(frame_dim, [c.prenet_dim, c.prenet_dim])
        self.attention_rnn = nn.LSTMCell(c.prenet_dim + e, c.attention_rnn_dim)
        self.attention_layer = Attention(c.attention_rnn_dim, e, c.attention_dim,
                                         c.attention_location_n_filters,
                                         c.attention_location_kernel_size)
        self.decoder_rnn = nn.LSTMCell(c.attention_rnn_dim + e, c.decoder_rnn_dim)
        self.linear_projection = LinearNorm(c.decoder_rnn_dim + e, frame_dim)
        self.gate_layer = LinearNorm(c.decoder_rnn_dim + e, 1, bias=True, w_init_gain="sigmoid")

    # -- step API ------------------------------------------------------------

    def init_state(self, memory: Tensor, memory_lengths: Tensor) -> DecoderState:
        """Zero state for ``memory [B, T_in, encoder_embedding_dim]`` (float, any device)
        and ``memory_lengths [B]`` (int, any device; each in 1..T_in)."""
        b, t_in, _ = memory.shape
        z = memory.new_zeros
        return DecoderState(
            attention_hidden=z(b, self.attention_rnn_dim),
            attention_cell=z(b, self.attention_rnn_dim),
            decoder_hidden=z(b, self.decoder_rnn_dim),
            decoder_cell=z(b, self.decoder_rnn_dim),
            attention_weights=z(b, t_in),
            attention_weights_cum=z(b, t_in),
            attention_context=z(b, self.encoder_embedding_dim),
            processed_memory=self.attention_layer.memory_layer(memory),
            memory=memory,
            mask=lengths_to_padding_mask(memory_lengths.to(memory.device), t_in),
        )

    def go_frame(self, state: DecoderState) -> Tensor:
        """The all-zero first ``prev_frame``: ``[B, n_mel * n_frames_per_step]``, memory dtype."""
        return state.memory.new_zeros(state.batch_size, self.n_mel_channels * self.n_frames_per_step)

    def step(self, state: DecoderState, prev_frame: Tensor, *, prenet_dropout: float = 0.5,
             generator: torch.Generator | None = None) -> DecoderStepOutput:
        """One decoder step; updates ``state`` in place (its fields are replaced).

        ``prev_frame [B, n_mel * n_frames_per_step]`` is the previous step's
        ``frame`` (or ``go_frame``). ``prenet_dropout`` is applied whatever the
        module's mode (DLE uses 0.5); ``generator`` draws its masks.
        """
        x = self.prenet(prev_frame, prenet_dropout, generator)
        ah, ac = self.attention_rnn(torch.cat((x, state.attention_context), -1),
                                    (state.attention_hidden, state.attention_cell))
        ah = F.dropout(ah, self.p_attention_dropout, self.training)
        weights_cat = torch.cat((state.attention_weights.unsqueeze(1),
                                 state.attention_weights_cum.unsqueeze(1)), dim=1)
        context, weights = self.attention_layer(ah, state.memory, state.processed_memory,
                                                weights_cat, state.mask)
        dh, dc = self.decoder_rnn(torch.cat((ah, context), -1),
                                  (state.decoder_hidden, state.decoder_cell))
        dh = F.dropout(dh, self.p_decoder_dropout, self.training)
        hidden_context = torch.cat((dh, context), dim=1)
        frame = self.linear_projection(hidden_context)
        gate = self.gate_layer(hidden_context).squeeze(1)

        state.attention_hidden, state.attention_cell = ah, ac
        state.decoder_hidden, state.decoder_cell = dh, dc
        state.attention_weights = weights
        state.attention_weights_cum = state.attention_weights_cum + weights
        state.attention_context = context
        return DecoderStepOutput(frame, gate, weights)

    # -- whole-utterance inference --------------------------------------------

    def infer(self, memory: Tensor, memory_lengths: Tensor, *, max_decoder_steps: int | None = None,
              gate_threshold: float | None = None, prenet_dropout: float = 0.5,
              early_stopping: bool | None = None,
              generator: torch.Generator | None = None, stop_rule: str | None = None) -> DecoderOutput:
        """Decode until every item's gate fired (or always, without early stopping)
        or ``max_decoder_steps`` steps; ``None`` options take the config's values.

        ``mel_lengths[b]`` counts the steps before item b's first
        ``sigmoid(gate) > gate_threshold``; items that never fire get
        ``max_decoder_steps`` (a warning is logged). ``stop_rule="attention"``
        (``StopRule``): an item also stops at the step its attention rule fires (counted
        as a gate), or at its step budget ``step_limit`` (``mel_lengths`` = the budget);
        ``None``/``"gate"``: DLE's rule.
        """
        max_steps = self.max_decoder_steps if max_decoder_steps is None else int(max_decoder_steps)
        threshold = self.gate_threshold if gate_threshold is None else float(gate_threshold)
        stop_early = self.early_stopping if early_stopping is None else bool(early_stopping)
        attention_rule = check_stop_rule(stop_rule) == "attention"

        state = self.init_state(memory, memory_lengths)
        frame = self.go_frame(state)
        b = state.batch_size
        mel_lengths = torch.zeros(b, dtype=torch.int32, device=memory.device)
        not_finished = torch.ones(b, dtype=torch.int32, device=memory.device)
        if attention_rule:
            lengths = memory_lengths.to(memory.device)
            last = (lengths - 1).to(torch.int64)
            limits = ATTENTION_STOP.limits(lengths, max_steps)
            end_count = torch.zeros(b, dtype=torch.int32, device=memory.device)
        frames: list[Tensor] = []
        gates: list[Tensor] = []
        aligns: list[Tensor] = []
        while True:
            out = self.step(state, frame, prenet_dropout=prenet_dropout, generator=generator)
            frames.append(out.frame)
            gates.append(out.gate_logit)
            aligns.append(out.attention_weights)
            go_on = torch.le(torch.sigmoid(out.gate_logit), threshold)
            if attention_rule:
                count_end_frames(end_count, state.attention_weights_cum, last)
                go_on = go_on & ~attention_ended(end_count, len(frames))
            not_finished = not_finished * go_on.to(torch.int32)
            mel_lengths += not_finished
            if attention_rule:
                not_finished = not_finished * torch.lt(mel_lengths, limits).to(torch.int32)
            if stop_early and not bool(not_finished.any()):
                break
            if len(frames) == max_steps:
                n_open = int(not_finished.sum())
                if n_open:
                    logger.warning("Tacotron2: reached max_decoder_steps=%d before the stop gate fired "
                                   "for %d of %d items", max_steps, n_open, b)
                break
            frame = out.frame
        if attention_rule:
            n_budget = int((mel_lengths >= limits).sum())
            if n_budget:
                logger.warning("Tacotron2: %d of %d items reached their step budget (stop rule 'attention') "
                               "before the stop gate or the attention ended them", n_budget, b)

        mel = torch.stack(frames, dim=1)  # [B, steps, n_mel * fps]
        mel = mel.view(b, -1, self.n_mel_channels).transpose(1, 2).contiguous()
        return DecoderOutput(mel=mel, gate=torch.stack(gates, dim=1),
                             alignments=torch.stack(aligns, dim=1), mel_lengths=mel_lengths)


class Tacotron2(nn.Module):
    """Tacotron2 with DLE's module tree and state_dict names."""

    def __init__(self, config: Tacotron2Config | None = None) -> None:
        super().__init__()
        c = config if config is not None else Tacotron2Config()
        self.config = c
        self.n_mel_channels = c.n_mel_channels
        self.n_frames_per_step = c.n_frames_per_step
        self.embedding = nn.Embedding(c.n_symbols, c.symbols_embedding_dim)
        bound = (3.0 * 2.0 / (c.n_symbols + c.symbols_embedding_dim)) ** 0.5
        nn.init.uniform_(self.embedding.weight, -bound, bound)
        self.encoder = Encoder(c.encoder_n_convolutions, c.encoder_embedding_dim, c.encoder_kernel_size)
        self.decoder = Decoder(c)
        self.postnet = Postnet(c.n_mel_channels, c.postnet_embedding_dim, c.postnet_kernel_size,
                               c.postnet_n_convolutions)

    def encode(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """``ids [B, T_in] int64`` (padded with 0), ``lengths [B]`` -> ``[B, T_in, E]``
        in the weights' dtype, 0 at padded positions."""
        return self.encoder(self.embedding(ids).transpose(1, 2), lengths)

    def postnet_forward(self, mel: Tensor) -> Tensor:
        """``mel [B, n_mel, T] -> mel + postnet(mel)``, same shape and dtype."""
        return mel + self.postnet(mel)

    @torch.no_grad()
    def infer(self, ids: Tensor, lengths: Tensor, *, max_decoder_steps: int | None = None,
              gate_threshold: float | None = None, prenet_dropout: float = 0.5,
              early_stopping: bool | None = None,
              generator: torch.Generator | None = None, stop_rule: str | None = None) -> Tacotron2Output:
        """Text ids to mel, as DLE's ``Tacotron2.infer``.

        ``ids [B, T_in] int64`` padded with id 0 (on the model's device),
        ``lengths [B] int`` (any order; each in 1..T_in). ``None`` options
        take the config's values; ``prenet_dropout`` defaults to DLE's
        always-on 0.5 (0.0 = deterministic); ``generator`` draws the prenet
        masks; ``stop_rule`` one of ``STOP_RULES`` (None: ``gate``, DLE's).
        Raises ValueError for malformed inputs or options.
        """
        self._check(ids, lengths, max_decoder_steps, gate_threshold, prenet_dropout, stop_rule)
        enc = self.encode(ids, lengths)
        dec = self.decoder.infer(enc, lengths, max_decoder_steps=max_decoder_steps,
                                 gate_threshold=gate_threshold, prenet_dropout=prenet_dropout,
                                 early_stopping=early_stopping, generator=generator, stop_rule=stop_rule)
        return Tacotron2Output(mel=dec.mel, mel_postnet=self.postnet_forward(dec.mel), gate=dec.gate,
                               alignments=dec.alignments, mel_lengths=dec.mel_lengths,
                               encoder_outputs=enc)

    forward = infer

    def _check(self, ids: Tensor, lengths: Tensor, max_decoder_steps: int | None,
               gate_threshold: float | None, prenet_dropout: float, stop_rule: str | None = None) -> None:
        def bad(message: str, field: str) -> InvalidInputError:
            return InvalidInputError(message, field=field)

        if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
            raise bad(f"ids must be a [B, T_in] integer tensor, got {tuple(ids.shape)} {ids.dtype}", "text")
        if ids.size(0) == 0 or ids.size(1) == 0:
            raise bad(f"ids must not be empty, got shape {tuple(ids.shape)}", "text")
        if lengths.dim() != 1 or lengths.size(0) != ids.size(0) or lengths.is_floating_point():
            raise bad(f"lengths must be a [B={ids.size(0)}] integer tensor, got "
                      f"{tuple(lengths.shape)} {lengths.dtype}", "lengths")
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 1 or hi > ids.size(1):
            raise bad(f"lengths must lie in 1..{ids.size(1)}, got min {lo} max {hi}", "lengths")
        id_lo, id_hi = int(ids.min()), int(ids.max())
        if id_lo < 0 or id_hi >= self.config.n_symbols:
            raise bad(f"symbol ids must lie in 0..{self.config.n_symbols - 1}, got min {id_lo} max {id_hi}",
                      "text")
        if max_decoder_steps is not None and (isinstance(max_decoder_steps, bool)
                                              or int(max_decoder_steps) < 1):
            raise bad(f"max_decoder_steps must be a positive int, got {max_decoder_steps!r}", "max_decoder_steps")
        if gate_threshold is not None and not 0.0 < float(gate_threshold) < 1.0:
            raise bad(f"gate_threshold must be in (0, 1), got {gate_threshold!r}", "gate_threshold")
        if not 0.0 <= float(prenet_dropout) < 1.0:
            raise bad(f"prenet_dropout must be in [0, 1), got {prenet_dropout!r}", "prenet_dropout")
        check_stop_rule(stop_rule)
