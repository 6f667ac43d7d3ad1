"""Tacotron2 engine, builder: the prepared (folded, fused, cast) tensors the engine runs on.

``prepare(model, dtype, device)`` makes what the engine cache stores; ``Prepared.load`` puts it
on the engine's device. Everything is folded in float64 and then cast once:

- decoder (``DecoderWeights``): each LSTM's ``W_ih``/``W_hh`` concatenated into one matrix
  with the two biases summed; the location convolution folded with the location dense layer
  into one ``[A, 2, KS]`` filter; mel projection and gate stacked into one matrix;
- encoder and postnet convolutions: BatchNorm folded into each convolution (``fold_conv_bn``);
- the encoder's bidirectional LSTM split into two one-direction LSTMs (``split_lstm``), the
  form the graph encoder runs.

Sizes in the shapes below: ``n_frame = n_mel * frames_per_step``, ``P`` prenet, ``E`` encoder
embedding, ``Ha``/``Hd`` attention/decoder LSTM, ``A`` attention, ``KS`` location kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tts.models.tacotron2 import Tacotron2

__all__ = ["DecoderWeights", "Prepared", "fold_conv_bn", "prepare", "prepare_weights", "split_lstm"]


def fold_conv_bn(block: torch.nn.Sequential, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``Sequential(ConvNorm, BatchNorm1d)`` (eval) -> (weight ``[C_out, C_in, k]``, bias ``[C_out]``)
    of one equivalent convolution, in ``dtype``."""
    conv, bn = block[0].conv, block[1]
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    w = conv.weight.detach().double() * scale[:, None, None]
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(scale)
    b = (b - bn.running_mean.double()) * scale + bn.bias.detach().double()
    return w.to(dtype).contiguous(), b.to(dtype).contiguous()


@dataclass
class DecoderWeights:
    """Prepared decoder weights. Matrices in the engine dtype, small vectors float32."""

    pre_w1: Tensor   #: [P, n_frame]
    pre_w2: Tensor   #: [P, P]
    att_w: Tensor    #: [4 Ha, P + E + Ha]   attention LSTM [W_ih | W_hh]
    att_b: Tensor    #: [4 Ha] f32          b_ih + b_hh
    q_w: Tensor      #: [A, Ha]
    m_w: Tensor      #: [A, E]
    loc_w: Tensor    #: [A, 2, KS] f32      location dense o location conv
    v: Tensor        #: [A] f32
    dec_w: Tensor    #: [4 Hd, Ha + E + Hd]
    dec_b: Tensor    #: [4 Hd] f32
    proj_w: Tensor   #: [n_frame + 1, Hd + E]  mel projection rows, then the gate row
    proj_b: Tensor   #: [n_frame + 1] f32

    def tensors(self) -> dict[str, Tensor]:
        return dict(self.__dict__)


def prepare_weights(model: Tacotron2, dtype: torch.dtype, device: torch.device) -> DecoderWeights:
    """The decoder's weights fused as ``DecoderWeights`` (float64 folding, then cast)."""
    d = model.decoder
    a = d.attention_layer

    def mat(t: Tensor) -> Tensor:
        return t.detach().to(device=device, dtype=dtype).contiguous()

    def vec(t: Tensor) -> Tensor:
        return t.detach().to(device=device, dtype=torch.float32).contiguous()

    loc_conv = a.location_layer.location_conv.conv.weight.detach().double()      # [F, 2, KS]
    loc_dense = a.location_layer.location_dense.linear_layer.weight.detach().double()  # [A, F]
    loc = torch.einsum("af,fck->ack", loc_dense, loc_conv)
    return DecoderWeights(
        pre_w1=mat(d.prenet.layers[0].linear_layer.weight),
        pre_w2=mat(d.prenet.layers[1].linear_layer.weight),
        att_w=mat(torch.cat((d.attention_rnn.weight_ih, d.attention_rnn.weight_hh), 1)),
        att_b=vec(d.attention_rnn.bias_ih + d.attention_rnn.bias_hh),
        q_w=mat(a.query_layer.linear_layer.weight),
        m_w=mat(a.memory_layer.linear_layer.weight),
        # row-major [A, 2, KS]: a location program reuses each row from L1
        loc_w=vec(loc),
        v=vec(a.v.linear_layer.weight[0]),
        dec_w=mat(torch.cat((d.decoder_rnn.weight_ih, d.decoder_rnn.weight_hh), 1)),
        dec_b=vec(d.decoder_rnn.bias_ih + d.decoder_rnn.bias_hh),
        proj_w=mat(torch.cat((d.linear_projection.linear_layer.weight, d.gate_layer.linear_layer.weight), 0)),
        proj_b=vec(torch.cat((d.linear_projection.linear_layer.bias, d.gate_layer.linear_layer.bias), 0)),
    )


def prepare(model: Tacotron2, dtype: torch.dtype, device: torch.device) -> dict:
    """Every prepared tensor of the engine as plain containers (what the engine cache stores):
    ``w`` (``DecoderWeights`` fields), ``embedding [n_symbols, E]``, ``enc_convs`` and ``postnet``
    (lists of ``[weight, bias]`` with BatchNorm folded), all in ``dtype`` except the float32
    vectors of ``w``."""
    w = prepare_weights(model, dtype, device)
    return {"w": w.tensors(),
            "embedding": model.embedding.weight.detach().to(device, dtype),
            "enc_convs": [list(fold_conv_bn(blk, dtype)) for blk in model.encoder.convolutions],
            "postnet": [list(fold_conv_bn(blk, dtype)) for blk in model.postnet.convolutions]}


@dataclass
class Prepared:
    """``prepare``'s result on a device."""

    w: DecoderWeights
    embedding: Tensor                      #: [n_symbols, E]
    enc_convs: list[tuple[Tensor, Tensor]]  #: per encoder convolution: weight [E, E, k], bias [E]
    postnet: list[tuple[Tensor, Tensor]]    #: per postnet convolution: weight [C_out, C_in, k], bias [C_out]

    @classmethod
    def load(cls, d: dict, device: torch.device) -> Prepared:
        return cls(w=DecoderWeights(**{k: v.to(device) for k, v in d["w"].items()}),
                   embedding=d["embedding"].to(device),
                   enc_convs=[(w.to(device), b.to(device)) for w, b in d["enc_convs"]],
                   postnet=[(w.to(device), b.to(device)) for w, b in d["postnet"]])


def split_lstm(m: torch.nn.LSTM, device: torch.device, dtype: torch.dtype) -> tuple[torch.nn.LSTM, torch.nn.LSTM]:
    """A one-layer bidirectional LSTM as two one-direction LSTMs (forward, backward) with its weights,
    on ``device`` in ``dtype`` (cuDNN weights flattened). Call under ``torch.no_grad``."""
    mods = []
    for d in ("_l0", "_l0_reverse"):
        u = torch.nn.LSTM(m.input_size, m.hidden_size, 1, batch_first=True)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(u, name + "_l0").copy_(getattr(m, name + d))
        u = u.to(device, dtype).eval()
        u.flatten_parameters()
        mods.append(u)
    return mods[0], mods[1]
