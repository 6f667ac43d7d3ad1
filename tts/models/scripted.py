"""TorchScript baselines: Tacotron2 and WaveGlow inference as NVIDIA's ``inference.py`` scripts them.

What NVIDIA DeepLearningExamples (DLE, ``PyTorch/SpeechSynthesis/Tacotron2``, commit 729963dd)
does, and what this module reproduces:

- ``inference.py`` ``main()`` builds Tacotron2 with ``forward_is_infer=True`` (``models.py``
  ``get_model``: a subclass whose ``forward(inputs, input_lengths)`` returns ``self.infer(...)``)
  and WaveGlow with ``forward_is_infer=True, jittable=True`` (``jittable`` is accepted and unused
  by ``get_model``), then calls ``waveglow.make_ts_scriptable()`` (``waveglow/model.py``:
  ``WN`` and ``convinv`` in reversed ``ModuleList`` copies, every inverse 1x1 weight computed
  once, ``forward = _infer_ts``) and ``torch.jit.script`` on both models.
- The ``Denoiser`` is *not* scripted: it is built from the (already half) WaveGlow and runs as
  an eager module on ``audios.float()`` (the STFT and its bias in float32).
- fp16 is ``model.half()`` of the whole model after ``eval()`` (``load_and_setup_model``,
  ``if fp16_run: model.half()``): weights, BatchNorm and LSTMs in float16, no autocast and no
  AMP at inference. The inputs are int64 ids; the mel leaves Tacotron2 in float16 and enters
  WaveGlow as it is.
- Tacotron2's scripted ``infer``: embedding, encoder ``infer`` (convolutions, then
  ``pack_padded_sequence`` of the LSTM input; the memory is ``max(lengths)`` long), the mask
  from ``get_mask_from_lengths`` (``max(lengths).item()``), the decoder loop with the prenet's
  dropout p=0.5 on in eval mode, outputs grown by ``torch.cat`` every step, the early stop
  tested with ``torch.sum(not_finished) == 0`` every step (one device-to-host read per step),
  ``max_decoder_steps`` and ``decoder_no_early_stopping`` from the model's config; then the
  postnet and ``(mel_outputs_postnet, mel_lengths, alignments)``.
- WaveGlow's ``_infer_ts``: upsample, trim ``kernel - stride`` frames, fold into groups, noise
  ``torch.randn(..., dtype=spect.dtype)`` times sigma, the flows in reverse (``WN`` with
  ``fused_add_tanh_sigmoid_multiply``; inverse 1x1 convolution), early noise prepended.
- ``inference.py`` sets no TF32 or cuDNN flags.
- DLE's CUDA-Optimized FastSpeech has no TorchScript path (its ``inferencer`` runs the eager
  module, ``.half()`` for fp16, or TensorRT engines): its baseline is the eager model.

The modules here are thin wrappers that *share* the parameters of this package's eager
``Tacotron2`` and ``WaveGlow`` (no copies) and compute their inference with the same operations
in DLE's order, written so that ``torch.jit.script`` compiles them. With the same seed they
consume the global RNG as the eager models do (prenet dropout masks, then WaveGlow noise), so
their outputs equal the eager ones up to float rounding. Differences from DLE: the encoder
packs with ``enforce_sorted=False`` (DLE requires inputs sorted by length, which its
``inference.py`` does), and the inverse 1x1 weights are this package's (computed in float64,
then cast; DLE inverts in float32).
"""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ScriptableTacotron2", "ScriptableWaveGlow", "script_tacotron2", "script_waveglow"]


class ScriptableTacotron2(nn.Module):
    """DLE's ``Tacotron2.infer`` (``forward = infer``) over the modules of an eager ``Tacotron2``.

    ``forward(ids [B, T_in] int64, lengths [B] int64) -> (mel_postnet [B, n_mel, T],
    mel_lengths [B] int32, alignments [B, T, T_in])``. ``encode``, ``decode`` and ``postnet``
    are the three parts, exported so a benchmark can time them apart.
    """

    def __init__(self, model: nn.Module, *, max_decoder_steps: int | None = None,
                 early_stopping: bool | None = None, gate_threshold: float | None = None,
                 prenet_dropout: float = 0.5) -> None:
        super().__init__()
        c = model.config
        d = model.decoder
        att = d.attention_layer
        self.embedding = model.embedding
        self.encoder_convolutions = model.encoder.convolutions
        self.encoder_lstm = model.encoder.lstm
        self.prenet_layers = d.prenet.layers
        self.attention_rnn = d.attention_rnn
        self.query_layer = att.query_layer
        self.memory_layer = att.memory_layer
        self.v = att.v
        self.location_conv = att.location_layer.location_conv
        self.location_dense = att.location_layer.location_dense
        self.decoder_rnn = d.decoder_rnn
        self.linear_projection = d.linear_projection
        self.gate_layer = d.gate_layer
        self.postnet_convolutions = model.postnet.convolutions
        self.n_mel_channels: int = c.n_mel_channels
        self.n_frames_per_step: int = c.n_frames_per_step
        self.attention_rnn_dim: int = c.attention_rnn_dim
        self.decoder_rnn_dim: int = c.decoder_rnn_dim
        self.encoder_embedding_dim: int = c.encoder_embedding_dim
        self.max_decoder_steps: int = int(c.max_decoder_steps if max_decoder_steps is None else max_decoder_steps)
        self.gate_threshold: float = float(c.gate_threshold if gate_threshold is None else gate_threshold)
        self.early_stopping: bool = bool((not c.decoder_no_early_stopping) if early_stopping is None
                                         else early_stopping)
        self.prenet_dropout: float = float(prenet_dropout)
        self.train(model.training)

    @torch.jit.export
    def encode(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """Embedding and encoder ``infer``: ``[B, max(lengths), E]``, 0 at padded positions."""
        x = self.embedding(ids).transpose(1, 2)
        for conv in self.encoder_convolutions:
            x = F.dropout(F.relu(conv(x)), 0.5, self.training)
        x = x.transpose(1, 2)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, _ = self.encoder_lstm(packed)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True)
        return outputs

    def _prenet(self, x: Tensor) -> Tensor:
        for linear in self.prenet_layers:
            x = F.dropout(F.relu(linear(x)), p=self.prenet_dropout, training=True)
        return x

    def _attention(self, query: Tensor, memory: Tensor, processed_memory: Tensor,
                   weights_cat: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        processed_query = self.query_layer(query.unsqueeze(1))
        processed_location = self.location_dense(self.location_conv(weights_cat).transpose(1, 2))
        energies = self.v(torch.tanh(processed_query + processed_location + processed_memory)).squeeze(2)
        energies = energies.masked_fill(mask, -float("inf"))
        weights = F.softmax(energies, dim=1)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)
        return context, weights

    @torch.jit.export
    def decode(self, memory: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """DLE's ``Decoder.infer``: ``(mel [B, n_mel, T], gate [B, T], alignments [B, T, T_in],
        mel_lengths [B] int32)``."""
        b = memory.size(0)
        t_in = memory.size(1)
        dtype = memory.dtype
        device = memory.device
        frame = torch.zeros(b, self.n_mel_channels * self.n_frames_per_step, dtype=dtype, device=device)
        max_len = int(torch.max(lengths).item())
        ids = torch.arange(0, max_len, device=lengths.device, dtype=lengths.dtype)
        mask = torch.le((ids < lengths.unsqueeze(1)).to(torch.uint8), 0)
        attention_hidden = torch.zeros(b, self.attention_rnn_dim, dtype=dtype, device=device)
        attention_cell = torch.zeros(b, self.attention_rnn_dim, dtype=dtype, device=device)
        decoder_hidden = torch.zeros(b, self.decoder_rnn_dim, dtype=dtype, device=device)
        decoder_cell = torch.zeros(b, self.decoder_rnn_dim, dtype=dtype, device=device)
        attention_weights = torch.zeros(b, t_in, dtype=dtype, device=device)
        attention_weights_cum = torch.zeros(b, t_in, dtype=dtype, device=device)
        attention_context = torch.zeros(b, self.encoder_embedding_dim, dtype=dtype, device=device)
        processed_memory = self.memory_layer(memory)
        mel_lengths = torch.zeros([b], dtype=torch.int32, device=device)
        not_finished = torch.ones([b], dtype=torch.int32, device=device)
        mel_outputs = torch.zeros(1)
        gate_outputs = torch.zeros(1)
        alignments = torch.zeros(1)
        first = True
        while True:
            x = self._prenet(frame)
            attention_hidden, attention_cell = self.attention_rnn(
                torch.cat((x, attention_context), -1), (attention_hidden, attention_cell))
            weights_cat = torch.cat((attention_weights.unsqueeze(1), attention_weights_cum.unsqueeze(1)), dim=1)
            attention_context, attention_weights = self._attention(
                attention_hidden, memory, processed_memory, weights_cat, mask)
            attention_weights_cum += attention_weights
            decoder_hidden, decoder_cell = self.decoder_rnn(
                torch.cat((attention_hidden, attention_context), -1), (decoder_hidden, decoder_cell))
            hidden_context = torch.cat((decoder_hidden, attention_context), dim=1)
            mel_output = self.linear_projection(hidden_context)
            gate_output = self.gate_layer(hidden_context)
            if first:
                mel_outputs = mel_output.unsqueeze(0)
                gate_outputs = gate_output
                alignments = attention_weights
                first = False
            else:
                mel_outputs = torch.cat((mel_outputs, mel_output.unsqueeze(0)), dim=0)
                gate_outputs = torch.cat((gate_outputs, gate_output), dim=0)
                alignments = torch.cat((alignments, attention_weights), dim=0)
            dec = torch.le(torch.sigmoid(gate_output), self.gate_threshold).to(torch.int32).squeeze(1)
            not_finished = not_finished * dec
            mel_lengths += not_finished
            if self.early_stopping and bool(torch.sum(not_finished) == 0):
                break
            if mel_outputs.size(0) == self.max_decoder_steps:
                break
            frame = mel_output
        # [T, B, ...] as DLE's parse_decoder_outputs leaves them; alignments/gates [T * B, ...]
        steps = mel_outputs.size(0)
        mel = mel_outputs.transpose(0, 1).contiguous()
        mel = mel.view(b, -1, self.n_mel_channels).transpose(1, 2)
        gate = gate_outputs.view(steps, b).transpose(0, 1).contiguous()
        align = alignments.view(steps, b, -1).transpose(0, 1).contiguous()
        return mel, gate, align, mel_lengths

    @torch.jit.export
    def postnet(self, mel: Tensor) -> Tensor:
        """``mel + postnet(mel)``."""
        x = mel
        last = len(self.postnet_convolutions) - 1
        for i, conv in enumerate(self.postnet_convolutions):
            if i < last:
                x = F.dropout(torch.tanh(conv(x)), 0.5, self.training)
            else:
                x = F.dropout(conv(x), 0.5, self.training)
        return mel + x

    def forward(self, ids: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        memory = self.encode(ids, lengths)
        mel, _, alignments, mel_lengths = self.decode(memory, lengths)
        return self.postnet(mel), mel_lengths, alignments


class _ScriptableWN(nn.Module):
    """DLE's ``WN.forward`` over the convolutions of an eager ``WN`` (weight norm removed)."""

    def __init__(self, wn: nn.Module) -> None:
        super().__init__()
        for name in ("start", "end"):
            if not isinstance(getattr(wn, name), nn.Conv1d):
                raise ValueError("script WaveGlow after remove_weight_norm(), as DLE does")
        for layers in (wn.in_layers, wn.cond_layers, wn.res_skip_layers):
            if not all(isinstance(m, nn.Conv1d) for m in layers):
                raise ValueError("script WaveGlow after remove_weight_norm(), as DLE does")
        self.start = wn.start
        self.end = wn.end
        self.in_layers = wn.in_layers
        self.cond_layers = wn.cond_layers
        self.res_skip_layers = wn.res_skip_layers
        self.n_layers: int = wn.n_layers
        self.n_channels: int = wn.n_channels

    def forward(self, audio: Tensor, spect: Tensor) -> Tensor:
        audio = self.start(audio)
        n = self.n_channels
        output = torch.zeros(0)
        for i, (in_layer, cond_layer, res_skip_layer) in enumerate(
                zip(self.in_layers, self.cond_layers, self.res_skip_layers)):
            in_act = in_layer(audio) + cond_layer(spect)
            acts = torch.tanh(in_act[:, :n, :]) * torch.sigmoid(in_act[:, n:, :])
            res_skip = res_skip_layer(acts)
            if i < self.n_layers - 1:
                audio = res_skip[:, :n, :] + audio
                skip = res_skip[:, n:, :]
            else:
                skip = res_skip
            if i == 0:
                output = skip
            else:
                output = output + skip
        return self.end(output)


class _InverseConv(nn.Module):
    """DLE's ``Invertible1x1Conv.infer`` with the eager module's cached inverse (shared)."""

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        if conv.W_inverse is None:
            conv.prepare()
        self.register_buffer("W_inverse", conv.W_inverse, persistent=False)

    def forward(self, z: Tensor) -> Tensor:
        return F.conv1d(z, self.W_inverse, bias=None, stride=1, padding=0)


class ScriptableWaveGlow(nn.Module):
    """DLE's ``WaveGlow._infer_ts`` (``make_ts_scriptable``) over an eager ``WaveGlow``.

    ``forward(mel [B, n_mel, T], sigma: float = 1.0) -> audio [B, 256 * T]``, the mel's dtype.
    """

    def __init__(self, waveglow: nn.Module) -> None:
        super().__init__()
        self.upsample = waveglow.upsample
        self.WN_rev = nn.ModuleList(_ScriptableWN(wn) for wn in reversed(waveglow.WN))
        self.convinv_rev = nn.ModuleList(_InverseConv(c) for c in reversed(waveglow.convinv))
        self.n_flows: int = waveglow.n_flows
        self.n_group: int = waveglow.n_group
        self.n_early_every: int = waveglow.n_early_every
        self.n_early_size: int = waveglow.n_early_size
        self.n_remaining_channels: int = waveglow.n_remaining_channels
        self.time_cutoff: int = int(waveglow.upsample.kernel_size[0] - waveglow.upsample.stride[0])
        self.train(waveglow.training)

    def forward(self, spect: Tensor, sigma: float = 1.0) -> Tensor:
        spect = self.upsample(spect)
        spect = spect[:, :, :-self.time_cutoff]
        spect = spect.unfold(2, self.n_group, self.n_group).permute(0, 2, 1, 3)
        spect = spect.contiguous().view(spect.size(0), spect.size(1), -1)
        spect = spect.permute(0, 2, 1)
        audio = torch.randn(spect.size(0), self.n_remaining_channels, spect.size(2),
                            device=spect.device, dtype=spect.dtype)
        audio *= sigma
        for kk, (wn, convinv) in enumerate(zip(self.WN_rev, self.convinv_rev)):
            k = self.n_flows - kk - 1
            n_half = int(audio.size(1) / 2)
            audio_0 = audio[:, :n_half, :]
            audio_1 = audio[:, n_half:, :]
            output = wn(audio_0, spect)
            s = output[:, n_half:, :]
            b = output[:, :n_half, :]
            audio_1 = (audio_1 - b) / torch.exp(s)
            audio = torch.cat([audio_0, audio_1], 1)
            audio = convinv(audio)
            if k % self.n_early_every == 0 and k > 0:
                z = torch.randn(spect.size(0), self.n_early_size, spect.size(2),
                                device=spect.device, dtype=spect.dtype)
                audio = torch.cat((sigma * z, audio), 1)
        return audio.permute(0, 2, 1).contiguous().view(audio.size(0), -1)


def script_tacotron2(model: nn.Module, **options) -> torch.jit.ScriptModule:
    """``torch.jit.script`` of ``ScriptableTacotron2(model, **options)`` (cast ``model`` first)."""
    return torch.jit.script(ScriptableTacotron2(model, **options))


def script_waveglow(waveglow: nn.Module) -> torch.jit.ScriptModule:
    """``torch.jit.script`` of ``ScriptableWaveGlow(waveglow)`` (weight norm removed, cast first)."""
    return torch.jit.script(ScriptableWaveGlow(waveglow))


# keep the typing names used in TorchScript annotations importable for the compiler
_ = (List, Tuple)
