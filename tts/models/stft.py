"""Short-time Fourier transform and the Tacotron2/WaveGlow mel front end.

Numerically the same as DeepLearningExamples' ``tacotron2_common/stft.py``
(a convolution with a windowed Fourier basis, overlap-add inverse normalised
by the window's sum-square envelope) and ``TacotronSTFT.mel_spectrogram``
(Slaney mel filterbank as ``librosa.filters.mel(htk=False, norm="slaney")``,
natural log of the magnitude clamped at 1e-5). librosa is not needed: the
window comes from scipy, the filterbank and envelope are computed here.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import get_window
from torch import Tensor, nn

from tts.errors import InvalidInputError

__all__ = ["STFT", "MelSpectrogram", "mel_filterbank", "window_sumsquare", "TINY_FLOAT32"]

#: librosa's ``tiny(np.float32)``: the envelope is divided out only where it exceeds this.
TINY_FLOAT32 = float(np.finfo(np.float32).tiny)


def _pad_center(data: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad a 1-D array on both sides to ``size`` (librosa ``pad_center``)."""
    n = data.shape[-1]
    if n > size:
        raise ValueError(f"cannot center-pad length {n} to {size}")
    left = (size - n) // 2
    return np.pad(data, (left, size - n - left))


def _window(window: str, win_length: int, filter_length: int) -> np.ndarray:
    """Periodic window of ``win_length`` zero-padded in the middle of ``filter_length`` (float64)."""
    return _pad_center(np.asarray(get_window(window, win_length, fftbins=True), dtype=np.float64),
                       filter_length)


@functools.lru_cache(maxsize=8)
def _bases(filter_length: int, hop_length: int, win_length: int,
           window: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Forward and inverse windowed Fourier bases, (2 * (F // 2 + 1), 1, F) float32 each."""
    scale = filter_length / hop_length
    fourier = np.fft.fft(np.eye(filter_length))
    cutoff = filter_length // 2 + 1
    fourier = np.vstack([np.real(fourier[:cutoff, :]), np.imag(fourier[:cutoff, :])])
    forward = fourier[:, None, :].astype(np.float32)
    inverse = np.linalg.pinv(scale * fourier).T[:, None, :].astype(np.float32)
    if window is not None:
        win = _window(window, win_length, filter_length).astype(np.float32)
        forward = forward * win
        inverse = inverse * win
    forward.setflags(write=False)
    inverse.setflags(write=False)
    return forward, inverse


def window_sumsquare(window: str, n_frames: int, hop_length: int, win_length: int,
                     n_fft: int) -> np.ndarray:
    """Sum-square envelope of the window over ``n_frames`` frames (librosa 0.6), float32.

    Length ``n_fft + hop_length * (n_frames - 1)``. Kept for reference and
    tests; ``STFT.inverse`` computes the same envelope with torch.
    """
    n = n_fft + hop_length * (n_frames - 1)
    out = np.zeros(n, dtype=np.float32)
    win_sq = _window(window, win_length, n_fft) ** 2
    for i in range(n_frames):
        start = i * hop_length
        out[start:min(n, start + n_fft)] += win_sq[:max(0, min(n_fft, n - start))]
    return out


class STFT(nn.Module):
    """STFT by strided convolution and its inverse by transposed convolution.

    ``transform(x: [B, N]) -> (magnitude, phase)``, each ``[B, F // 2 + 1, 1 + N // hop]``
    (for ``filter_length = 2 * (filter_length // 2)``); the input is reflect-padded
    by ``filter_length // 2`` on both sides, so ``N`` must exceed that.
    ``inverse(magnitude, phase) -> [B, 1, hop * (frames - 1)]``.
    Computation happens in the dtype of the buffers (float32 unless the module is cast).
    """

    def __init__(self, filter_length: int = 800, hop_length: int = 200, win_length: int = 800,
                 window: str | None = "hann") -> None:
        super().__init__()
        if not (0 < hop_length <= filter_length):
            raise InvalidInputError(f"hop_length must be in 1..filter_length, got {hop_length}",
                                    field="hop_length")
        if window is not None and not (0 < win_length <= filter_length):
            raise InvalidInputError(f"win_length must be in 1..filter_length, got {win_length}",
                                    field="win_length")
        #: Size of the Fourier transform (samples per frame).
        self.filter_length = filter_length
        #: Samples between successive frames.
        self.hop_length = hop_length
        #: Length of the analysis window (centred and zero-padded to filter_length).
        self.win_length = win_length
        #: scipy window name, or None for no window.
        self.window = window
        forward, inverse = _bases(filter_length, hop_length, win_length, window)
        self.register_buffer("forward_basis", torch.from_numpy(forward.copy()))
        self.register_buffer("inverse_basis", torch.from_numpy(inverse.copy()))
        if window is not None:
            win_sq = _window(window, win_length, filter_length) ** 2
            # Overlap-added with torch in float32 (librosa accumulates float64 squares into float32).
            self.register_buffer("window_square", torch.from_numpy(win_sq.astype(np.float32)),
                                 persistent=False)
        else:
            self.window_square = None

    @property
    def n_freqs(self) -> int:
        """Number of frequency bins, ``filter_length // 2 + 1``."""
        return self.filter_length // 2 + 1

    def transform(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x: [B, N]`` -> ``(magnitude, phase)``, each ``[B, n_freqs, 1 + N // hop]``."""
        if x.dim() != 2:
            raise InvalidInputError(f"STFT input must be [B, N], got shape {tuple(x.shape)}")
        pad = self.filter_length // 2
        if x.size(1) <= pad:
            raise InvalidInputError(
                f"STFT input has {x.size(1)} samples; reflect padding needs more than {pad}")
        x = x.to(self.forward_basis.dtype)
        x = F.pad(x.unsqueeze(1), (pad, pad), mode="reflect")
        spec = F.conv1d(x, self.forward_basis, stride=self.hop_length)
        cutoff = self.n_freqs
        real, imag = spec[:, :cutoff, :], spec[:, cutoff:, :]
        magnitude = torch.sqrt(real * real + imag * imag)
        phase = torch.atan2(imag, real)
        return magnitude, phase

    def inverse(self, magnitude: Tensor, phase: Tensor) -> Tensor:
        """``magnitude, phase: [B, n_freqs, frames]`` -> audio ``[B, 1, hop * (frames - 1)]``."""
        spec = torch.cat([magnitude * torch.cos(phase), magnitude * torch.sin(phase)], dim=1)
        out = F.conv_transpose1d(spec, self.inverse_basis, stride=self.hop_length)
        if self.window_square is not None:
            n_frames = magnitude.size(-1)
            ones = torch.ones(1, 1, n_frames, dtype=torch.float32, device=out.device)
            envelope = F.conv_transpose1d(
                ones, self.window_square.float().view(1, 1, -1), stride=self.hop_length).view(-1)
            nonzero = envelope > TINY_FLOAT32
            divided = out.float() / torch.where(nonzero, envelope, torch.ones_like(envelope))
            out = divided.to(out.dtype) * (float(self.filter_length) / self.hop_length)
        pad = self.filter_length // 2
        return out[:, :, pad:out.size(-1) - pad]

    def forward(self, x: Tensor) -> Tensor:
        """Round trip ``x: [B, N]`` -> ``[B, 1, hop * (N // hop)]``."""
        magnitude, phase = self.transform(x)
        return self.inverse(magnitude, phase)


# --- mel filterbank (librosa.filters.mel, htk=False, norm="slaney") -------------------------

_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asanyarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_region = hz >= _MIN_LOG_HZ
    return np.where(log_region,
                    _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-300) / _MIN_LOG_HZ) / _LOGSTEP, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asanyarray(mel, dtype=np.float64)
    hz = _F_SP * mel
    log_region = mel >= _MIN_LOG_MEL
    return np.where(log_region, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), hz)


def mel_filterbank(sampling_rate: float, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Slaney-style mel filterbank ``[n_mels, n_fft // 2 + 1]`` float32, as librosa's default."""
    if fmax is None:
        fmax = sampling_rate / 2.0
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sampling_rate)
    mel_points = np.linspace(_hz_to_mel(np.array(fmin)), _hz_to_mel(np.array(fmax)), n_mels + 2)
    mel_f = _mel_to_hz(mel_points)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    weights = np.zeros((n_mels, len(fft_freqs)), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


class MelSpectrogram(nn.Module):
    """DLE ``TacotronSTFT.mel_spectrogram``: ``audio [B, N]`` in [-1, 1] -> log-mel ``[B, n_mel, 1 + N // hop]``.

    The input range is not checked (that would synchronise a GPU); DLE asserts it.
    """

    def __init__(self, filter_length: int = 1024, hop_length: int = 256, win_length: int = 1024,
                 n_mel_channels: int = 80, sampling_rate: int = 22050, mel_fmin: float = 0.0,
                 mel_fmax: float | None = 8000.0, clip_val: float = 1e-5) -> None:
        super().__init__()
        #: Number of mel bands.
        self.n_mel_channels = n_mel_channels
        #: Sample rate of the audio in Hz.
        self.sampling_rate = sampling_rate
        #: Magnitudes are clamped to at least this before the log.
        self.clip_val = clip_val
        self.stft_fn = STFT(filter_length, hop_length, win_length)
        basis = mel_filterbank(sampling_rate, filter_length, n_mel_channels, mel_fmin, mel_fmax)
        self.register_buffer("mel_basis", torch.from_numpy(basis))

    def forward(self, audio: Tensor) -> Tensor:
        """``audio: [B, N] float`` -> ``[B, n_mel, 1 + N // hop]`` natural-log mel."""
        magnitude, _ = self.stft_fn.transform(audio)
        mel = torch.matmul(self.mel_basis, magnitude)
        return torch.log(torch.clamp(mel, min=self.clip_val))

    mel_spectrogram = forward
