"""Training forwards (teacher forcing) and losses for FastSpeech, Tacotron2 and WaveGlow.

The models in ``tts.models`` are the inference definitions with DLE's module
trees; training drives the same modules (so trained weights load with the
ordinary loaders) and adds what inference leaves out:

- FastSpeech: dropout, added with forward hooks on the sub-layers where DLE
  applies it (after attention's ``fc``, after the FFN's ``w_2``, after the
  duration predictor's LayerNorms), active only in ``train()`` mode;
- Tacotron2: the teacher-forced decoder loop (prenet over all ground-truth
  frames at once, as DLE's ``Decoder.forward``);
- WaveGlow: DLE's negative log-likelihood on ``WaveGlow.forward``.

Shapes: B batch, T_in symbols, T mel frames, n_mel mel bands.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tts.models.fastspeech import FastSpeech
from tts.models.tacotron2 import Tacotron2
from tts.models.waveglow import WaveGlow


# -- FastSpeech -----------------------------------------------------------------


def add_fastspeech_dropout(model: FastSpeech, p: float) -> list[torch.utils.hooks.RemovableHandle]:
    """Apply dropout ``p`` (train mode only) where DLE's FastSpeech has it; returns the hooks."""
    handles = []

    def hook(module: nn.Module, _inp: object, out: Tensor) -> Tensor:
        return F.dropout(out, p, module.training)

    for side in (model.phoneme_side, model.mel_side):
        for layer in side.layer_stack:
            handles.append(layer.slf_attn.fc.register_forward_hook(hook))
            handles.append(layer.pos_ffn.w_2.register_forward_hook(hook))
    dp = model.length_regulator.duration_predictor
    handles.append(dp.layer_norm_1.register_forward_hook(hook))
    handles.append(dp.layer_norm_2.register_forward_hook(hook))
    return handles


@dataclass
class FastSpeechTrainOutput:
    mel: Tensor  # [B, T, n_mel]
    log_duration: Tensor  # [B, T_in], predicted log(1 + frames)


def fastspeech_forward(model: FastSpeech, ids: Tensor, durations: Tensor, n_frames: int
                       ) -> FastSpeechTrainOutput:
    """Teacher-forced FastSpeech: ground-truth durations drive the length regulator."""
    enc, mask = model.encode(ids)
    keep = mask.unsqueeze(-1).to(enc.dtype)
    log_d = model.length_regulator.duration_predictor(enc, keep)
    expanded, mel_pos = model.regulate(enc, durations, n_frames)
    mel = model.mel_linear(model.mel_side(expanded, mel_pos))
    return FastSpeechTrainOutput(mel=mel, log_duration=log_d)


def fastspeech_loss(out: FastSpeechTrainOutput, mel: Tensor, mel_lengths: Tensor, durations: Tensor,
                    input_lengths: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Masked mel MSE + MSE of log(1 + duration) (DLE's duration target)."""
    t = mel.shape[1]
    fmask = (torch.arange(t, device=mel.device)[None, :] < mel_lengths[:, None]).unsqueeze(-1)
    mel_loss = ((out.mel - mel) ** 2 * fmask).sum() / (fmask.sum() * mel.shape[2])
    imask = torch.arange(durations.shape[1], device=mel.device)[None, :] < input_lengths[:, None]
    target = torch.log1p(durations.float())
    dur_loss = (((out.log_duration - target) ** 2) * imask).sum() / imask.sum()
    total = mel_loss + dur_loss
    return total, {"loss": total.detach(), "mel": mel_loss.detach(), "duration": dur_loss.detach()}


# -- Tacotron2 ----------------------------------------------------------------------


@dataclass
class Tacotron2TrainOutput:
    mel: Tensor  # [B, n_mel, T]
    mel_postnet: Tensor  # [B, n_mel, T]
    gate: Tensor  # [B, T] logits
    alignments: Tensor  # [B, T, T_in]


def tacotron2_forward(model: Tacotron2, ids: Tensor, input_lengths: Tensor, mel: Tensor,
                      self_feed: float = 0.0, self_feed_passes: int = 1) -> Tacotron2TrainOutput:
    """Teacher forcing: ``mel [B, n_mel, T]`` ground truth; frame t is predicted from frame t-1
    (``self_feed``, ``self_feed_passes``: see ``teacher_forced_decode``).

    Needs ``n_frames_per_step == 1``. The prenet runs over all inputs at once with dropout 0.5
    (DLE keeps it on always); the rest is ``Decoder.step``'s arithmetic.
    """
    dec = model.decoder
    if dec.n_frames_per_step != 1:
        raise ValueError("training supports n_frames_per_step == 1 only")
    memory = model.encode(ids, input_lengths)
    mel_out, gates, aligns = teacher_forced_decode(dec, memory, input_lengths, mel, self_feed,
                                                   self_feed_passes)
    return Tacotron2TrainOutput(mel=mel_out, mel_postnet=model.postnet_forward(mel_out),
                                gate=gates, alignments=aligns)


def teacher_forced_decode(dec: nn.Module, memory: Tensor, input_lengths: Tensor, mel: Tensor,
                          self_feed: float = 0.0, self_feed_passes: int = 1
                          ) -> tuple[Tensor, Tensor, Tensor]:
    """The decoder loop of ``tacotron2_forward`` over all ``T`` frames of ``mel [B, n_mel, T]``:
    ``(mel_out [B, n_mel, T], gate logits [B, T], alignments [B, T, T_in])``.

    ``self_feed`` > 0: parallel scheduled sampling (Duckworth et al., 2019), against the exposure
    bias of teacher forcing (inference feeds the decoder its own frames). A first teacher-forced
    pass without gradients predicts every frame; each input frame is then replaced by that
    prediction with probability ``self_feed``, and the loop runs again on the mixture, with
    gradients. The targets stay the real frames. Static shapes: CUDA-graph capturable.

    ``self_feed_passes`` K > 1: the predictions mixed in are those of the K-th gradient-free pass,
    pass k fed pass k-1's predictions (a Jacobi iteration of the autoregression, which converges
    to the free-running output): inputs K generations of self-dependence deep.
    """
    if self_feed_passes < 1:
        raise ValueError(f"self_feed_passes must be at least 1, got {self_feed_passes!r}")
    if self_feed > 0.0:
        with torch.no_grad():
            own_mel = mel
            for _ in range(self_feed_passes):
                own_mel, _, _ = _decode_loop(dec, memory, input_lengths, own_mel)
        own = torch.rand(mel.shape[0], 1, mel.shape[2], device=mel.device) < self_feed
        mel = torch.where(own, own_mel.to(mel.dtype), mel)
    return _decode_loop(dec, memory, input_lengths, mel)


def _decode_loop(dec: nn.Module, memory: Tensor, input_lengths: Tensor, mel: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """``teacher_forced_decode`` with the inputs ``mel`` as given."""
    state = dec.init_state(memory, input_lengths)
    b, n_mel, t = mel.shape
    prev = torch.cat([mel.new_zeros(b, n_mel, 1), mel[:, :, :-1]], dim=2).transpose(1, 2)  # [B, T, n_mel]
    x_all = dec.prenet(prev, 0.5)  # [B, T, prenet_dim]
    frames, gates, aligns = [], [], []
    for i in range(t):
        ah, ac = dec.attention_rnn(torch.cat((x_all[:, i], state.attention_context), -1),
                                   (state.attention_hidden, state.attention_cell))
        ah = F.dropout(ah, dec.p_attention_dropout, dec.training)
        weights_cat = torch.stack((state.attention_weights, state.attention_weights_cum), dim=1)
        context, weights = dec.attention_layer(ah, state.memory, state.processed_memory,
                                               weights_cat, state.mask)
        dh, dc = dec.decoder_rnn(torch.cat((ah, context), -1), (state.decoder_hidden, state.decoder_cell))
        dh = F.dropout(dh, dec.p_decoder_dropout, dec.training)
        hc = torch.cat((dh, context), dim=1)
        frames.append(dec.linear_projection(hc))
        gates.append(dec.gate_layer(hc).squeeze(1))
        aligns.append(weights)
        state.attention_hidden, state.attention_cell = ah, ac
        state.decoder_hidden, state.decoder_cell = dh, dc
        state.attention_weights = weights
        state.attention_weights_cum = state.attention_weights_cum + weights
        state.attention_context = context
    return torch.stack(frames, dim=2), torch.stack(gates, dim=1), torch.stack(aligns, dim=1)


def duration_prior(durations: Tensor, input_lengths: Tensor, n_frames: int, sigma: float = 1.5
                   ) -> Tensor:
    """Soft alignment prior ``[B, T, T_in]`` from symbol durations: at frame t a Gaussian (width
    ``sigma`` symbols) around the symbol whose duration covers t; zero at padded symbols."""
    ends = torch.cumsum(durations, dim=1)  # [B, T_in]
    frames = torch.arange(n_frames, device=durations.device)
    idx = torch.searchsorted(ends, frames.unsqueeze(0).expand(durations.shape[0], -1).contiguous(),
                             right=True)
    idx = torch.minimum(idx, (input_lengths - 1).unsqueeze(1))  # [B, T]
    sym = torch.arange(durations.shape[1], device=durations.device).float()
    prior = torch.exp(-((sym[None, None, :] - idx[:, :, None].float()) ** 2) / (2 * sigma ** 2))
    valid = sym[None, None, :] < input_lengths[:, None, None]
    return prior * valid


def tacotron2_loss(out: Tacotron2TrainOutput, mel: Tensor, mel_lengths: Tensor, prior: Tensor | None,
                   input_lengths: Tensor, guide_weight: float | Tensor
                   ) -> tuple[Tensor, dict[str, Tensor]]:
    """DLE's loss (MSE before and after the postnet + gate BCE), padding masked, plus a guided-
    attention term ``guide_weight * mean(A * (1 - prior))`` over real frames and symbols.

    ``guide_weight`` may be a 0-d tensor (the CUDA-graphed step): then the term is always
    added (no host sync on its value)."""
    b, n_mel, t = mel.shape
    fmask = torch.arange(t, device=mel.device)[None, :] < mel_lengths[:, None]  # [B, T]
    m3 = fmask.unsqueeze(1)
    denom = m3.sum() * n_mel
    mel_loss = ((out.mel - mel) ** 2 * m3).sum() / denom
    post_loss = ((out.mel_postnet - mel) ** 2 * m3).sum() / denom
    gate_target = (torch.arange(t, device=mel.device)[None, :] >= (mel_lengths[:, None] - 1)).float()
    gate_loss = F.binary_cross_entropy_with_logits(out.gate, gate_target, reduction="none")
    gate_loss = (gate_loss * fmask).sum() / fmask.sum()
    total = mel_loss + post_loss + gate_loss
    logs = {"mel": mel_loss.detach(), "mel_postnet": post_loss.detach(), "gate": gate_loss.detach()}
    if prior is not None and (isinstance(guide_weight, Tensor) or guide_weight > 0):
        imask = torch.arange(out.alignments.shape[2], device=mel.device)[None, :] < input_lengths[:, None]
        m = fmask.unsqueeze(2) & imask.unsqueeze(1)
        guide = (out.alignments * (1.0 - prior) * m).sum() / fmask.sum()
        total = total + guide_weight * guide
        logs["guide"] = guide.detach()
    logs["loss"] = total.detach()
    return total, logs


# -- WaveGlow ---------------------------------------------------------------------


def waveglow_loss(model: WaveGlow, mel: Tensor, audio: Tensor, sigma: float = 1.0
                  ) -> tuple[Tensor, dict[str, Tensor]]:
    """DLE's ``WaveGlowLoss``: ``(sum z^2 / (2 sigma^2) - sum log_s - sum log|det W|) / numel(z)``."""
    out = model(mel, audio)
    z = out.z.float()
    log_s_total = sum(ls.float().sum() for ls in out.log_s)
    log_det_total = sum(out.log_det_w)
    loss = torch.sum(z * z) / (2 * sigma * sigma) - log_s_total - log_det_total
    loss = loss / z.numel()
    return loss, {"loss": loss.detach()}


def waveglow_sample(model: WaveGlow, mel: Tensor, n_samples: int, sigma: float) -> Tensor:
    """WaveGlow's inference direction with gradients: ``n_samples`` of audio ``[B, n_samples]``
    drawn from noise of scale ``sigma`` given ``mel [B, n_mel, T]`` (``256 * T >= n_samples``).

    The same maths as ``WaveGlow.infer`` (DLE's order of noise and early outputs), but the
    inverse 1x1 convolutions are computed on the fly in float32 (``linalg.inv_ex``: no host
    synchronisation, so the step stays capturable in a CUDA graph) and the weight-normed
    training layers are used, so that a loss on the audio trains the model."""
    spect = model.upsample(mel)[:, :, :n_samples]
    b = spect.size(0)
    spect = spect.unfold(2, model.n_group, model.n_group).permute(0, 2, 1, 3)
    spect = spect.reshape(b, spect.size(1), -1).permute(0, 2, 1)
    t_g = spect.size(2)

    def noise(channels: int) -> Tensor:
        return sigma * torch.randn(b, channels, t_g, device=spect.device, dtype=spect.dtype)

    audio = noise(model.n_remaining_channels)
    for k in reversed(range(model.n_flows)):
        n_half = audio.size(1) // 2
        out = model.WN[k](audio[:, :n_half, :], spect)
        audio_1 = (audio[:, n_half:, :] - out[:, :n_half, :]) * torch.exp(-out[:, n_half:, :])
        audio = torch.cat([audio[:, :n_half, :], audio_1], 1)
        w_inv = torch.linalg.inv_ex(model.convinv[k].conv.weight.squeeze(-1).float())[0]
        audio = F.conv1d(audio, w_inv.to(audio.dtype).unsqueeze(-1))
        if k % model.n_early_every == 0 and k > 0:
            audio = torch.cat((noise(model.n_early_size), audio), 1)
    return audio.permute(0, 2, 1).reshape(b, -1)


def waveglow_spectral_loss(model: WaveGlow, mel: Tensor, audio: Tensor, mel_fn, sigma: float
                           ) -> Tensor:
    """Mean absolute log-mel difference between a sample drawn at ``sigma`` from ``mel`` and
    the real ``audio`` (``mel_fn``: NVIDIA's mel front end). Maximum likelihood alone can leave a
    small WaveGlow's samples spectrally flat (peaks too low, valleys filled with noise): this term
    trains the samples themselves to carry the spectrum."""
    fake = waveglow_sample(model, mel, audio.size(1), sigma)
    with torch.no_grad():
        target = mel_fn(audio)
    return (_log_mel(mel_fn, fake.float()) - target).abs().mean()


def _log_mel(mel_fn, audio: Tensor) -> Tensor:
    """``mel_fn(audio)`` with a gradient that stays finite where a bin's magnitude is 0."""
    stft = mel_fn.stft_fn
    pad = stft.filter_length // 2
    x = F.pad(audio.unsqueeze(1), (pad, pad), mode="reflect")
    spec = F.conv1d(x, stft.forward_basis, stride=stft.hop_length)
    n = stft.n_freqs
    magnitude = torch.sqrt(spec[:, :n, :] ** 2 + spec[:, n:, :] ** 2 + 1e-12)
    return torch.log(torch.clamp(torch.matmul(mel_fn.mel_basis, magnitude), min=mel_fn.clip_val))
