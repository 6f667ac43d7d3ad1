"""Griffin-Lim vocoder: NVIDIA's log-mel -> audio with no weights, behind WaveGlow's interface.

The mel is NVIDIA's (``tts.models.stft.MelSpectrogram``: natural log of an
80-band filterbank over the magnitude STFT, n_fft 1024, hop 256, Hann window
1024, 0-8000 Hz). The magnitude spectrogram is estimated with the filterbank's
pseudo-inverse (``|S| = max(pinv(F) exp(mel), eps) ** power``, rescaled to keep
each frame's energy; ``power`` > 1 sharpens the harmonics that the
pseudo-inverse smears) and ``n_iter``
Griffin-Lim iterations find a phase for it. They start from random phases drawn
with the caller's generator (``init="random"``; a fixed seed when none is given,
so the same mel always gives the same audio), or from the phase that the
magnitudes' own gradients imply (``init="pghi"``, phase-gradient heuristic
integration: ``pghi_phase``), which is nearly consistent already: a few
iterations (or none) then fit better than many from random phases, and keep
the harmonics' phases coherent from frame to frame. ``momentum`` m > 0 is "fast Griffin-Lim"
(Perraudin, Balazs and Sondergaard 2013; torchaudio's ``momentum``): each
iteration takes the phase of ``rebuilt - m / (1 + m) * previous rebuilt``,
which fits the magnitudes in about half the iterations; 0 is the plain
algorithm.

``GriffinLim.infer(mel, sigma, *, z=None, generator=None)`` has the signature of
``WaveGlow.infer`` and returns ``[B, 256 * T]`` like it, so every pipeline that
vocodes with WaveGlow (synthesizer, streaming, server) takes it unchanged;
``sigma`` and ``z`` are accepted and ignored. The arithmetic is float32
whatever the module's dtype; the output has the mel's dtype.

It is the vocoder of the bundled voices (``heart``, the default, and ``slt-tacotron2``): their
own HiFi-GAN and WaveGlow did not yet beat it on the quality gate (``recipes/bundled_voice/RESULTS.md``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tts.errors import InvalidInputError
from tts.models.stft import mel_filterbank

__all__ = ["GriffinLim", "PassThroughDenoiser", "pghi_phase"]

INITS = ("random", "pghi")
PGHI_GAMMA_HANN = 0.25645   # a Hann window of length L is treated as a Gaussian of time-frequency ratio this * L**2


def pghi_phase(mag: Tensor, hop: int, n_fft: int, gamma: float, tol: float = 1e-4,
               start: Tensor | None = None) -> Tensor:
    """A phase for the magnitudes ``mag [n_fft // 2 + 1, N]`` by phase-gradient heuristic integration.

    The phase's gradient follows from the log-magnitude's (Prusa, Balazs and Sondergaard 2017,
    exact for a Gaussian window of time-frequency ratio ``gamma`` in samples squared): along time
    a bin turns at its instantaneous frequency ``2 pi m / n_fft + (n_fft / gamma) d log|S| / dm``
    radians per sample, and across bins the phase steps by ``-(gamma / n_fft) d log|S| / dt - pi``
    (``torch.stft``'s centred frames). In each frame the peaks (local maxima above ``tol`` times
    the frame's largest magnitude; the largest bin where there are none) take the phase of their
    bin in the frame before, advanced along time; every other bin is reached across bins from its
    nearest peak. The peaks of the first frame start at 0; with ``start [n_bins]`` the first frame
    takes that phase in every bin instead (a window that continues where an earlier one left off:
    given the phase that the earlier window found for this frame, every later frame gets the phase
    that one pass over both would give, up to the frames at the window's right edge).

    Each peak hangs off one peak of the frame before, so the peaks form a forest along time; the
    sums along its paths are taken by pointer jumping (log2 N vectorized rounds) instead of a loop
    over frames. The arithmetic is float64; the result float32 on ``mag``'s device.
    """
    mag = mag.double()
    n_bins, n = mag.shape
    dev = mag.device
    logm = torch.log(mag.clamp_min(1e-10))
    dlog_dbin = torch.gradient(logm, dim=0)[0]
    dlog_dt = torch.gradient(logm, dim=1)[0] / hop if n > 1 else torch.zeros_like(logm)
    bins = torch.arange(n_bins, dtype=mag.dtype, device=dev).unsqueeze(1)
    omega = 2 * torch.pi * bins / n_fft + (n_fft / gamma) * dlog_dbin         # radians per sample
    dphase_dbin = -(gamma / n_fft) * dlog_dt - torch.pi
    # across[m, t]: the phase at bin m relative to bin 0 of frame t, by the trapezoid rule
    across = torch.cat([torch.zeros(1, n, dtype=mag.dtype, device=dev),
                        torch.cumsum(0.5 * (dphase_dbin[1:] + dphase_dbin[:-1]), 0)])
    peak = torch.zeros_like(mag, dtype=torch.bool)
    peak[1:-1] = ((mag[1:-1] >= mag[:-2]) & (mag[1:-1] > mag[2:])
                  & (mag[1:-1] > tol * mag.amax(0, keepdim=True).clamp_min(1e-10)))
    frames = torch.arange(n, device=dev)
    peak[mag.argmax(0), frames] |= ~peak.any(0)
    idx = torch.arange(n_bins, device=dev).unsqueeze(1).expand(n_bins, n)
    far = 4 * n_bins
    below = torch.where(peak, idx, torch.full_like(idx, -far)).cummax(0).values     # nearest peak at or below
    above = torch.where(peak, idx, torch.full_like(idx, far)).flip(0).cummin(0).values.flip(0)
    owner = torch.where((above - idx) < (idx - below), above, below)
    owner = torch.where(owner < 0, above, torch.where(owner >= n_bins, below, owner))
    if start is not None:             # the first frame is given: every bin its own root
        owner[:, 0] = idx[:, 0]
        peak[:, 0] = True
        across[:, 0] = 0
    # node (bin m, frame t) is t * n_bins + m; a peak's parent is its bin's owner in the frame before
    node = (frames * n_bins).unsqueeze(0) + idx
    parent = node.clone()
    offset = torch.zeros_like(mag)
    if n > 1:
        before = owner[:, :-1]
        step = (across[:, :-1] - across.gather(0, before)
                + hop * 0.5 * (omega[:, :-1] + omega[:, 1:])).remainder(2 * torch.pi)
        parent[:, 1:] = torch.where(peak[:, 1:], before + (frames[:-1] * n_bins).unsqueeze(0), node[:, 1:])
        offset[:, 1:] = torch.where(peak[:, 1:], step, torch.zeros_like(step))
    parent, offset = parent.t().reshape(-1), offset.t().reshape(-1)
    for _ in range(max(1, (n - 1).bit_length())):
        offset = offset + offset[parent]
        parent = parent[parent]
    if start is not None:             # each path's root is a first-frame bin: add its given phase
        offset = offset + start.to(offset).repeat(n)[parent]
    owner_node = (frames * n_bins).unsqueeze(0) + owner
    peak_phase = offset[owner_node.t().reshape(-1)].view(n, n_bins).t()
    return (peak_phase + across - across.gather(0, owner)).float()


class GriffinLim(nn.Module):
    """Weightless mel vocoder; see the module docstring."""

    def __init__(self, *, n_mel_channels: int = 80, sampling_rate: int = 22050, filter_length: int = 1024,
                 hop_length: int = 256, win_length: int = 1024, mel_fmin: float = 0.0,
                 mel_fmax: float = 8000.0, n_iter: int = 60, power: float = 1.0,
                 momentum: float = 0.0, init: str = "random") -> None:
        super().__init__()
        for name, value in (("n_mel_channels", n_mel_channels), ("sampling_rate", sampling_rate),
                            ("filter_length", filter_length), ("hop_length", hop_length),
                            ("win_length", win_length)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidInputError(f"griffinlim {name} must be a positive integer, got {value!r}",
                                        field=name)
        least = 0 if init == "pghi" else 1        # a PGHI phase stands alone; a random one never does
        if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < least:
            raise InvalidInputError(f"griffinlim n_iter must be an integer >= {least} with init {init!r}, "
                                    f"got {n_iter!r}", field="n_iter")
        if not 0 < power <= 4:
            raise InvalidInputError(f"griffinlim power must be in (0, 4], got {power!r}", field="power")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
            raise InvalidInputError(f"griffinlim momentum must be in [0, 1), got {momentum!r}", field="momentum")
        if init not in INITS:
            raise InvalidInputError(f"griffinlim init must be one of {list(INITS)}, got {init!r}", field="init")
        if win_length > filter_length:
            raise InvalidInputError("griffinlim win_length must not exceed filter_length", field="win_length")
        self.n_mel_channels = n_mel_channels
        self.sampling_rate = sampling_rate
        self.filter_length = filter_length
        self.hop_length = hop_length
        self.win_length = win_length
        self.n_iter = n_iter
        self.power = float(power)
        self.momentum = float(momentum)
        self.init = init
        self.mel_fmin, self.mel_fmax = float(mel_fmin), float(mel_fmax)
        basis = torch.tensor(mel_filterbank(sampling_rate, filter_length, n_mel_channels, mel_fmin, mel_fmax),
                             dtype=torch.float64)
        self.register_buffer("pinv", torch.linalg.pinv(basis).float(), persistent=False)   # [n_freq, n_mel]
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    def config(self) -> dict[str, Any]:
        """The manifest's ``vocoder`` entry (``kind`` included) that rebuilds this module."""
        return {"kind": "griffinlim", "n_iter": self.n_iter, "power": self.power, "momentum": self.momentum,
                "init": self.init, "n_mel_channels": self.n_mel_channels, "sampling_rate": self.sampling_rate,
                "filter_length": self.filter_length, "hop_length": self.hop_length,
                "win_length": self.win_length, "mel_fmin": self.mel_fmin, "mel_fmax": self.mel_fmax}

    @classmethod
    def from_config(cls, spec: dict[str, Any]) -> "GriffinLim":
        known = {"n_iter", "power", "momentum", "init", "n_mel_channels", "sampling_rate", "filter_length", "hop_length",
                 "win_length", "mel_fmin", "mel_fmax"}
        extra = sorted(set(spec) - known - {"kind"})
        if extra:
            raise InvalidInputError(f"griffinlim: unknown settings {extra}", field="vocoder")
        return cls(**{k: v for k, v in spec.items() if k in known})

    def _stft(self, x: Tensor) -> Tensor:
        return torch.stft(x, self.filter_length, self.hop_length, self.win_length, self.window.float(),
                          center=True, return_complex=True)

    def _istft(self, spec: Tensor, length: int) -> Tensor:
        return torch.istft(spec, self.filter_length, self.hop_length, self.win_length, self.window.float(),
                           center=True, length=length)

    @torch.no_grad()
    def infer(self, mel: Tensor, sigma: float = 0.0, *, z: Tensor | None = None,
              generator: torch.Generator | None = None) -> Tensor:
        """``mel [B, n_mel, T]`` (log) -> audio ``[B, hop * T]`` in the mel's dtype."""
        del sigma, z
        if mel.dim() != 3 or mel.size(1) != self.n_mel_channels:
            raise InvalidInputError(f"mel must be [B, {self.n_mel_channels}, T], got shape {tuple(mel.shape)}",
                                    field="mel")
        b, _, t = mel.shape
        if t == 0:
            return mel.new_zeros(b, 0)
        # Row by row: the iterations amplify float rounding, and batched FFTs round differently
        # from single ones, so only this keeps a row's audio independent of its batch.
        return torch.cat([self._row(mel[i:i + 1], generator)[0] for i in range(b)]).to(mel.dtype)

    @torch.no_grad()
    def infer_window(self, mel: Tensor, start_phase: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Streaming with ``init="pghi"``: ``mel [1, n_mel, T]`` (T >= 1) -> (audio ``[1, hop * T]``
        in the mel's dtype, the PGHI phase ``[n_fft // 2 + 1, >= T + 1]`` before the iterations; column k
        is frame k).
        ``start_phase [n_fft // 2 + 1]``: the PGHI phase of this window's first frame as an
        earlier, overlapping window found it (that window's returned phase at this frame), so the
        windows' phases continue one another as in one pass (``pghi_phase``)."""
        if self.init != "pghi":
            raise ValueError("infer_window needs init='pghi'")
        if mel.dim() != 3 or mel.size(0) != 1 or mel.size(1) != self.n_mel_channels or mel.size(2) == 0:
            raise InvalidInputError(f"mel must be [1, {self.n_mel_channels}, T>0], got shape {tuple(mel.shape)}",
                                    field="mel")
        audio, phase = self._row(mel, None, start_phase)
        return audio.to(mel.dtype), phase

    def _row(self, mel: Tensor, generator: torch.Generator | None,
             start_phase: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """One row ``[1, n_mel, T]`` -> (float32 audio ``[1, hop * T]``, the PGHI phase or None)."""
        b, _, t = mel.shape
        mag = torch.matmul(self.pinv.float(), torch.exp(mel.float())).clamp_min(1e-8)
        if self.power != 1.0:   # sharpen, keeping each frame's energy (so the loudness stays)
            sharp = mag ** self.power
            mag = sharp * (mag.norm(dim=1, keepdim=True) / sharp.norm(dim=1, keepdim=True))
        # The STFT's reflect padding needs more than filter_length / 2 samples: a mel of a frame or
        # two is vocoded with silent frames after it, then cut back.
        shortest = self.filter_length // (2 * self.hop_length) + 1
        if t < shortest:
            mag = torch.cat([mag, mag.new_full((b, mag.size(1), shortest - t), 1e-8)], dim=-1)
        length = self.hop_length * max(t, shortest)
        # STFT frames of `length` samples with center=True: length // hop + 1 (one more than T).
        n_frames = length // self.hop_length + 1
        mag = torch.cat([mag, mag[..., -1:].expand(b, mag.size(1), n_frames - mag.size(-1))], dim=-1)
        pghi = None
        if self.init == "pghi":
            pghi = pghi_phase(mag[0], self.hop_length, self.filter_length, PGHI_GAMMA_HANN * self.win_length ** 2,
                              start=start_phase)
            phase = pghi.unsqueeze(0)
        else:
            if generator is None:           # deterministic by default: the same mel, the same audio
                generator = torch.Generator(device=mag.device).manual_seed(0)
            phase = 2 * torch.pi * torch.rand(mag.shape, generator=generator, device=mag.device,
                                              dtype=torch.float32)
        spec = torch.polar(mag, phase)
        pull = self.momentum / (1 + self.momentum)   # "fast Griffin-Lim" (module docstring); 0: plain
        prev = None
        for _ in range(self.n_iter):
            audio = self._istft(spec, length)
            rebuilt = self._stft(audio)
            target = rebuilt - pull * prev if pull and prev is not None else rebuilt
            prev = rebuilt
            spec = mag * torch.exp(1j * torch.angle(target))
        return self._istft(spec, length)[..., :self.hop_length * t], pghi


class PassThroughDenoiser(nn.Module):
    """The denoiser slot of a Griffin-Lim voice: WaveGlow's bias spectrum has no meaning here,
    so any strength returns the audio unchanged (``[B, N] -> [B, 1, N]``, as ``Denoiser``)."""

    def forward(self, audio: Tensor, strength: float = 0.0) -> Tensor:
        del strength
        return audio.reshape(audio.size(0), 1, -1) if audio.dim() == 2 else audio
