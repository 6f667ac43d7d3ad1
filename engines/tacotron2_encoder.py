"""Tacotron2 engine, encoder and postnet: CUDA graphs per (batch, length) bucket, no host sync.

Encoder (``GraphEncoder``): ids ``[B, T_in]`` are padded to a bucket (batch to a power of two,
at least ``ENCODER_MIN_BATCH``; length to a multiple of ``INPUT_MULTIPLE``). Positions past the
caller's ``T_in`` are zeroed after the embedding and after every convolution but the last, so
they are exactly the convolutions' own zero padding and valid outputs do not change. The
bidirectional LSTM runs as two one-direction cuDNN calls: forward over the padded sequence (its
valid outputs do not depend on what follows them), backward over each item reversed within its
own length by a gather with indices computed on the device. Padded positions are zeroed.
``encode_packed`` is the model's own path (``pack_padded_sequence``, lengths copied to the
host): the CPU default.

Postnet (``GraphPostnet``): mel padded to a multiple of ``POSTNET_MULTIPLE`` frames, positions
past the caller's length zeroed after every layer but the last (exact, as above);
``postnet_eager`` runs the convolutions as they are.

Without CUDA graphs (CPU) the bucketed paths run eagerly on the same static buffers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

from tts.engines._graphs import LRU, capture

__all__ = ["INPUT_MULTIPLE", "ENCODER_MIN_BATCH", "POSTNET_MULTIPLE", "MAX_PIECE_RUNS", "PieceRuns",
           "GraphEncoder", "GraphPostnet", "encode_packed", "postnet_eager"]

#: Input lengths are padded up to a multiple of this (one buffer set and graph per bucket).
INPUT_MULTIPLE = 32
#: Smallest batch bucket of the encoder: PyTorch picks cuDNN's persistent LSTM kernels (fp16,
#: unpacked, one direction) only for batches that are multiples of 8 (sm80+).
ENCODER_MIN_BATCH = 8
#: Mel lengths of the postnet graphs are padded up to a multiple of this.
POSTNET_MULTIPLE = 64
#: Encoder/postnet buckets (static inputs with their graphs) an engine keeps.
MAX_PIECE_RUNS = 48


def pow2(n: int) -> int:
    """``n`` rounded up to a power of two (1 for n <= 1)."""
    return 1 << max(0, (int(n) - 1).bit_length())


class PieceRun:
    """Static inputs, output and CUDA graph of one bucket of the encoder or the postnet.

    One caller at a time (as the decoder's buckets): the engine copies the inputs in,
    replays (or runs the body eagerly) and copies the output out."""

    def __init__(self, **inputs: Tensor) -> None:
        self.inp = inputs
        self.out: Tensor | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self._t: int | None = None

    def set_t(self, t: int) -> None:
        """The caller's length into the ``t`` input (a launch only when it changes)."""
        if t != self._t:
            self.inp["t"].fill_(t)
            self._t = t


class PieceRuns:
    """The encoder's and the postnet's bucket runs of one engine (one LRU for both)."""

    def __init__(self, device: torch.device, use_graphs: bool, max_runs: int = MAX_PIECE_RUNS) -> None:
        self.device = device
        self.use_graphs = use_graphs
        self.runs: LRU[PieceRun] = LRU(max_runs)

    def get(self, key: tuple, make: Callable[[], PieceRun]) -> PieceRun:
        return self.runs.get_or_make(key, make)

    def run(self, run: PieceRun, body: Callable[[PieceRun], Tensor]) -> Tensor:
        """The output of ``body(run)`` for the inputs now in ``run``: a graph replay (captured at
        the first call) or, without graphs, ``body`` itself."""
        if not self.use_graphs:
            return body(run)
        if run.graph is None:
            # two warm-up calls: compile kernels, pick algorithms, warm the allocator
            run.graph, run.out = capture(lambda: body(run), self.device, warmup=2)
        run.graph.replay()
        return run.out


def _take(x: Tensor, idx: Tensor) -> Tensor:
    """``x[b, idx[b, t]]``: ``x [B, T, C]``, ``idx [B, T]``."""
    return x.gather(1, idx.unsqueeze(2).expand(-1, -1, x.shape[2]))


def _reversal(lengths: Tensor, pos: Tensor) -> Tensor:
    """``[B, T]`` indices reversing each item within its length (an involution there; 0 past it)."""
    return (lengths.unsqueeze(1) - 1 - pos.unsqueeze(0)).clamp(min=0)


def encode_packed(ids: Tensor, lengths: Tensor, embedding: Tensor, convs: list[tuple[Tensor, Tensor]],
                  lstm: torch.nn.LSTM) -> Tensor:
    """The model's encoder on prepared weights: ``ids [B, T_in]`` -> ``[B, T_in, E]`` (lengths go
    to the host for ``pack_padded_sequence``)."""
    x = F.embedding(ids.to(embedding.device), embedding).transpose(1, 2)
    for w, b in convs:
        x = F.relu(F.conv1d(x, w, b, padding=(w.shape[-1] - 1) // 2))
    x = x.transpose(1, 2)
    t_in = x.shape[1]
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        x, lengths.detach().to("cpu", torch.int64), batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=t_in)
    return out


class GraphEncoder:
    """The encoder on bucketed static inputs (module docstring): ``ids [B, T_in] int64``,
    ``lengths [B]`` (host or device) -> ``[B, T_in, E]`` in ``dtype``, 0 at padded positions."""

    def __init__(self, runs: PieceRuns, embedding: Tensor, convs: list[tuple[Tensor, Tensor]],
                 lstms: tuple[torch.nn.LSTM, torch.nn.LSTM], dtype: torch.dtype) -> None:
        self.runs, self.embedding, self.convs, self.lstms, self.dtype = runs, embedding, convs, lstms, dtype

    def __call__(self, ids: Tensor, lengths: Tensor) -> Tensor:
        bsz, t_in = ids.shape
        bp = max(pow2(bsz), ENCODER_MIN_BATCH)
        tp = INPUT_MULTIPLE * math.ceil(t_in / INPUT_MULTIPLE)
        dev = self.runs.device

        def make() -> PieceRun:
            return PieceRun(ids=torch.zeros(bp, tp, dtype=torch.int64, device=dev),
                            lengths=torch.ones(bp, dtype=torch.int64, device=dev),
                            t=torch.zeros(1, dtype=torch.int64, device=dev),
                            pos=torch.arange(tp, device=dev))

        run = self.runs.get(("enc", bp, tp), make)
        with torch.autocast(dev.type, enabled=False):
            inp = run.inp
            if (bsz, t_in) != (bp, tp):
                inp["ids"].zero_()
            inp["ids"][:bsz, :t_in].copy_(ids, non_blocking=True)
            if bsz < bp:
                inp["lengths"][bsz:].fill_(1)        # padded rows: one position
            inp["lengths"][:bsz].copy_(lengths, non_blocking=True)
            run.set_t(t_in)
            out = self.runs.run(run, self._body)
            return out[:bsz, :t_in].clone()

    def _body(self, run: PieceRun) -> Tensor:
        """The encoder over a bucket's static inputs -> ``[Bp, Tp, E]`` (0 at padded positions)."""
        ids, pos, t_in = run.inp["ids"], run.inp["pos"], run.inp["t"]
        lengths = torch.minimum(run.inp["lengths"], t_in).clamp_(min=1)   # gather indices stay in range
        keep = (pos < t_in).to(self.dtype)                 # [Tp]: inside the caller's T_in
        x = F.embedding(ids, self.embedding) * keep[:, None]
        x = x.transpose(1, 2)
        last = len(self.convs) - 1
        for i, (w, b) in enumerate(self.convs):
            x = F.relu(F.conv1d(x, w, b, padding=(w.shape[-1] - 1) // 2))
            if i < last:      # past T_in the next convolution sees zeros, as its own padding
                x = x * keep
        # after the last convolution positions >= T_in (>= every length) reach no valid output
        x = x.transpose(1, 2)                                # [Bp, Tp, E]
        fwd_lstm, bwd_lstm = self.lstms
        rev = _reversal(lengths, pos)
        xr = _take(x, rev)
        fwd, _ = fwd_lstm(x)
        bwd, _ = bwd_lstm(xr)
        y = torch.cat((fwd, _take(bwd, rev)), 2)
        valid = (pos.unsqueeze(0) < lengths.unsqueeze(1)).to(y.dtype)
        return y * valid.unsqueeze(2)


def postnet_eager(mel: Tensor, layers: list[tuple[Tensor, Tensor]], dtype: torch.dtype) -> Tensor:
    """``mel [B, n_mel, T]`` -> ``mel + postnet(mel)`` in ``dtype`` (prepared convolutions)."""
    x = mel.to(dtype)
    last = len(layers) - 1
    y = x
    for i, (w, b) in enumerate(layers):
        y = F.conv1d(y, w, b, padding=(w.shape[-1] - 1) // 2)
        if i < last:
            y = torch.tanh(y)
    return x + y


class GraphPostnet:
    """``postnet_eager`` on bucketed static inputs: ``mel [B, n_mel, T]`` -> ``[B, n_mel, T]`` in ``dtype``."""

    def __init__(self, runs: PieceRuns, layers: list[tuple[Tensor, Tensor]], dtype: torch.dtype) -> None:
        self.runs, self.layers, self.dtype = runs, layers, dtype

    def __call__(self, mel: Tensor) -> Tensor:
        bsz, n_mel, t = mel.shape
        bp, tp = pow2(bsz), POSTNET_MULTIPLE * math.ceil(t / POSTNET_MULTIPLE)
        dev = self.runs.device

        def make() -> PieceRun:
            return PieceRun(mel=torch.zeros(bp, n_mel, tp, dtype=self.dtype, device=dev),
                            t=torch.zeros(1, dtype=torch.int64, device=dev), pos=torch.arange(tp, device=dev))

        run = self.runs.get(("post", bp, n_mel, tp), make)
        with torch.autocast(dev.type, enabled=False):
            inp = run.inp
            if (bsz, t) != (bp, tp):
                inp["mel"].zero_()
            inp["mel"][:bsz, :, :t].copy_(mel, non_blocking=True)
            run.set_t(t)
            out = self.runs.run(run, self._body)
            return out[:bsz, :, :t].clone()

    def _body(self, run: PieceRun) -> Tensor:
        x = run.inp["mel"]                                   # 0 past the caller's T
        keep = (run.inp["pos"] < run.inp["t"]).to(self.dtype)
        last = len(self.layers) - 1
        y = x
        for i, (w, b) in enumerate(self.layers):
            y = F.conv1d(y, w, b, padding=(w.shape[-1] - 1) // 2)
            if i < last:
                y = torch.tanh(y) * keep                     # past T: the next layer's zero padding
        return x + y
