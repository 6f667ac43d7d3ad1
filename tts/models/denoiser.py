"""WaveGlow bias removal by spectral subtraction (DLE ``waveglow/denoiser.py``).

The bias is the magnitude spectrum of what WaveGlow makes of an all-zero
(or random) mel at sigma 0; ``strength`` times its first frame is
subtracted from every frame of the audio's magnitude, which is clamped at
zero and resynthesised with the original phase.

Differences from DLE: the bias mel has the WaveGlow's own number of mel
channels (DLE hard-codes 80), and audio too short for the STFT's reflect
padding (``N <= filter_length // 2``, i.e. 1-2 mel frames) is zero-padded
internally and cut back, where DLE fails.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tts.errors import InvalidInputError
from tts.models.stft import STFT

__all__ = ["Denoiser", "waveglow_bias_audio", "BIAS_MEL_FRAMES"]

#: Frames of the mel from which the bias is computed (DLE: 88).
BIAS_MEL_FRAMES = 88

_MODES = ("zeros", "normal")


def waveglow_bias_audio(waveglow: nn.Module, mode: str = "zeros", *,
                        n_frames: int = BIAS_MEL_FRAMES,
                        generator: torch.Generator | None = None) -> Tensor:
    """WaveGlow's output for a zero (``"zeros"``) or N(0, 1) (``"normal"``) mel, sigma 0.

    Returns ``[1, 256 * n_frames]`` float32. The mel has ``waveglow.n_mel_channels``
    channels and the device and dtype of its weights.
    """
    if mode not in _MODES:
        raise InvalidInputError(f"denoiser mode must be one of {_MODES}, got {mode!r}", field="mode")
    weight = waveglow.upsample.weight
    n_mel = waveglow.upsample.in_channels
    shape = (1, n_mel, n_frames)
    if mode == "zeros":
        mel = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
    else:
        mel = torch.randn(shape, generator=generator, device=weight.device).to(weight.dtype)
    with torch.no_grad():
        return waveglow.infer(mel, sigma=0.0).float()


class Denoiser(nn.Module):
    """Removes WaveGlow's bias from its audio.

    Built from a WaveGlow (weight norm removed or not; on its device). The
    STFT and the ``bias_spec`` buffer ``[1, filter_length // 2 + 1, 1]`` are
    float32; ``forward`` casts its input to the buffers' dtype.
    """

    def __init__(self, waveglow: nn.Module, filter_length: int = 1024, n_overlap: int = 4,
                 win_length: int = 1024, mode: str = "zeros", *,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if n_overlap < 1 or filter_length % n_overlap:
            raise InvalidInputError(
                f"n_overlap must divide filter_length={filter_length}, got {n_overlap}",
                field="n_overlap")
        device = waveglow.upsample.weight.device
        self.stft = STFT(filter_length=filter_length, hop_length=filter_length // n_overlap,
                         win_length=win_length).to(device)
        bias_audio = waveglow_bias_audio(waveglow, mode, generator=generator)
        with torch.no_grad():
            bias_spec, _ = self.stft.transform(bias_audio)
        self.register_buffer("bias_spec", bias_spec[:, :, :1].contiguous())

    @property
    def min_samples(self) -> int:
        """Shortest input the STFT takes without internal padding."""
        return self.stft.filter_length // 2 + 1

    def forward(self, audio: Tensor, strength: float = 0.01) -> Tensor:
        """``audio [B, N] float`` -> denoised ``[B, 1, hop * (N // hop)]`` (hop = 256 by default).

        ``strength`` scales the subtracted bias (DLE inference.py uses 0.01;
        0 gives the plain STFT round trip).
        """
        if audio.dim() != 2:
            raise InvalidInputError(f"audio must be [B, N], got shape {tuple(audio.shape)}",
                                    field="audio")
        n = audio.size(1)
        hop = self.stft.hop_length
        out_len = hop * (n // hop)
        if n < self.min_samples:
            audio = F.pad(audio, (0, self.min_samples - n))
        spec, angles = self.stft.transform(audio)
        spec = torch.clamp(spec - self.bias_spec * strength, min=0.0)
        return self.stft.inverse(spec, angles)[:, :, :out_len]
