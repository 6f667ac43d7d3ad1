"""Griffin-Lim vocoder: WaveGlow's interface, faithful magnitudes, determinism, voices built on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tts.errors import InvalidInputError, VoiceError
from tts.models.griffinlim import PGHI_GAMMA_HANN, GriffinLim, PassThroughDenoiser, pghi_phase
from tts.models.stft import MelSpectrogram

#: A WaveGlow checkpoint in NVIDIA's layout (the parity fixture).
FIXTURE_WG = Path(__file__).resolve().parent / "fixtures" / "reference" / "waveglow" / \
    "checkpoint_WaveGlow_ngc_style_ddp.pt"


def _speechlike(n: int = 22050, seed: int = 0) -> torch.Tensor:
    """A gliding harmonic tone with a syllable-rate envelope, in [-0.5, 0.5]."""
    t = np.arange(n) / 22050
    f0 = 140 + 40 * np.sin(2 * np.pi * 1.5 * t)
    ph = 2 * np.pi * np.cumsum(f0) / 22050
    x = sum(np.sin(k * ph) / k for k in range(1, 12)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    x += 0.01 * np.random.default_rng(seed).standard_normal(n)
    return torch.tensor(0.5 * x / np.abs(x).max(), dtype=torch.float32)[None]


def test_rebuilds_the_magnitudes_of_its_mel():
    mm = MelSpectrogram().eval()
    audio = _speechlike()
    mel = mm(audio)                                   # [1, 80, T]
    gl = GriffinLim()
    out = gl.infer(mel)
    assert out.shape == (1, 256 * mel.shape[-1]) and out.dtype == torch.float32
    t = mel.shape[-1]
    rebuilt = mm(out.clamp(-1, 1))[..., :t]
    loud = mel > mel.max() - 5

    def err_of(x):
        return (x - mel)[loud].abs().mean().item()
    err = err_of(rebuilt)
    assert err < 0.25, err                            # natural-log mel units, bands within e^5 of the peak
    # loudness is preserved within 30 %
    assert 0.7 < out.pow(2).mean().sqrt().item() / audio.pow(2).mean().sqrt().item() < 1.3
    # more iterations fit the magnitudes better than a few
    few = mm(GriffinLim(n_iter=2).infer(mel).clamp(-1, 1))[..., :t]
    assert err_of(few) > err + 0.05
    # sharpening (power > 1) keeps each frame's energy, so the loudness too
    sharp = GriffinLim(power=1.5).infer(mel)
    assert 0.7 < sharp.pow(2).mean().sqrt().item() / audio.pow(2).mean().sqrt().item() < 1.3


def test_deterministic_by_default_and_follows_a_generator():
    mel = MelSpectrogram()(_speechlike(8000))
    gl = GriffinLim(n_iter=4)
    a, b = gl.infer(mel), gl.infer(mel, sigma=0.9)     # sigma is ignored
    assert torch.equal(a, b)
    g1 = gl.infer(mel, generator=torch.Generator().manual_seed(1))
    g1b = gl.infer(mel, generator=torch.Generator().manual_seed(1))
    g2 = gl.infer(mel, generator=torch.Generator().manual_seed(2))
    assert torch.equal(g1, g1b) and not torch.equal(g1, g2)


def test_batch_and_dtype_follow_the_mel():
    mel = MelSpectrogram()(torch.cat([_speechlike(6000), _speechlike(6000, 1)]))
    gl = GriffinLim(n_iter=2)
    out = gl.infer(mel.half())
    assert out.shape == (2, 256 * mel.shape[-1]) and out.dtype == torch.float16
    assert gl.infer(mel[:, :, :0]).shape == (2, 0)


@pytest.mark.parametrize("init", ["random", "pghi"])
def test_a_mel_of_one_or_two_frames_is_vocoded(init):
    """Shorter than the STFT's reflect padding allows: vocoded with silence after it, cut back."""
    gl = GriffinLim(n_iter=2, init=init)
    mel = MelSpectrogram()(_speechlike(4000))
    for t in (1, 2):
        out = gl.infer(mel[..., :t])
        assert out.shape == (1, 256 * t) and torch.isfinite(out).all() and out.abs().max() > 0


@pytest.mark.parametrize("bad", [torch.zeros(80, 10), torch.zeros(1, 79, 10)])
def test_bad_mel_names_the_field(bad):
    with pytest.raises(InvalidInputError, match="mel must be"):
        GriffinLim(n_iter=1).infer(bad)


@pytest.mark.parametrize("spec,match", [({"n_iter": 0}, "n_iter"), ({"power": 9}, "power"),
                                        ({"init": "zeros"}, "init"), ({"init": "pghi", "n_iter": -1}, "n_iter"),
                                        ({"momentum": 1.0}, "momentum"), ({"momentum": -0.1}, "momentum"),
                                        ({"momentum": "0.9"}, "momentum"), ({"n_iters": 5}, "unknown settings")])
def test_bad_settings(spec, match):
    with pytest.raises(InvalidInputError, match=match):
        GriffinLim.from_config(spec)


def test_momentum_zero_is_the_plain_algorithm_and_momentum_fits_faster():
    """``momentum`` 0 is Griffin and Lim's iteration, unchanged; 0.99 ("fast Griffin-Lim",
    Perraudin et al. 2013) fits the magnitudes of 32 iterations better than 32 plain ones, and
    about as well as 60 plain ones."""
    mm = MelSpectrogram().eval()
    mel = mm(_speechlike(11025))
    t = mel.shape[-1]
    gl = GriffinLim(n_iter=3)
    mag = torch.matmul(gl.pinv, torch.exp(mel)).clamp_min(1e-8)
    mag = torch.cat([mag, mag[..., -1:]], dim=-1)
    phase = torch.rand(mag.shape, generator=torch.Generator().manual_seed(0))
    spec = torch.polar(mag, 2 * torch.pi * phase)
    for _ in range(3):
        spec = mag * torch.exp(1j * torch.angle(gl._stft(gl._istft(spec, 256 * t))))
    assert torch.equal(gl.infer(mel), gl._istft(spec, 256 * t))

    def err(**kw):
        return (mm(GriffinLim(**kw).infer(mel).clamp(-1, 1))[..., :t] - mel).abs().mean().item()
    fast32, plain32, plain60 = err(n_iter=32, momentum=0.99), err(n_iter=32), err(n_iter=60)
    assert fast32 < plain32 and fast32 < plain60 * 1.1, (fast32, plain32, plain60)


def test_config_round_trips():
    for gl in (GriffinLim(n_iter=7, power=1.5, momentum=0.9), GriffinLim(n_iter=0, init="pghi")):
        again = GriffinLim.from_config(gl.config())
        assert again.config() == gl.config()


def _pghi_by_frames(mag: np.ndarray, hop: int, n_fft: int, gamma: float, tol: float = 1e-4) -> np.ndarray:
    """pghi_phase's rule written as the obvious loop over frames (float64)."""
    n_bins, n = mag.shape
    logm = np.log(np.maximum(mag, 1e-10))
    omega = 2 * np.pi * np.arange(n_bins)[:, None] / n_fft + (n_fft / gamma) * np.gradient(logm, axis=0)
    dphase_dbin = -(gamma / n_fft) * np.gradient(logm, axis=1) / hop - np.pi
    across = np.concatenate([np.zeros((1, n)), np.cumsum(0.5 * (dphase_dbin[1:] + dphase_dbin[:-1]), 0)])
    phase, prev = np.zeros_like(logm), None
    for t in range(n):
        col = mag[:, t]
        peaks = [m for m in range(1, n_bins - 1)
                 if col[m] >= col[m - 1] and col[m] > col[m + 1] and col[m] > tol * max(col.max(), 1e-10)]
        peaks = peaks or [int(np.argmax(col))]
        at_peak = {p: 0.0 if prev is None else prev[p] + hop * 0.5 * (omega[p, t - 1] + omega[p, t]) for p in peaks}
        for m in range(n_bins):
            left = max((p for p in peaks if p <= m), default=None)
            right = min((p for p in peaks if p >= m), default=None)
            own = right if left is None or (right is not None and right - m < m - left) else left
            phase[m, t] = at_peak[own] + across[m, t] - across[own, t]
        prev = phase[:, t]
    return phase


def test_pghi_phase_is_the_frame_by_frame_rule_and_fits_a_real_spectrogram():
    """The pointer-jumping PGHI equals the frame loop it replaces, and on the magnitudes of a real
    STFT it is nearly consistent on its own (the spectrogram of its audio within -15 dB of the
    magnitudes), where a random phase is not (about -4 dB); Griffin-Lim from it fits better still."""
    gl = GriffinLim(n_iter=1)
    audio = _speechlike(8000)
    mag = gl._stft(audio).abs()[0]
    phase = pghi_phase(mag, 256, 1024, PGHI_GAMMA_HANN * 1024 ** 2)
    assert phase.shape == mag.shape and phase.dtype == torch.float32
    ref = _pghi_by_frames(mag.double().numpy(), 256, 1024, PGHI_GAMMA_HANN * 1024 ** 2)
    assert np.abs(np.angle(np.exp(1j * (phase.double().numpy() - ref)))).max() < 1e-3

    def convergence_db(ph):
        rebuilt = gl._stft(gl._istft(torch.polar(mag, ph)[None], audio.shape[-1])).abs()[0]
        return 20 * np.log10(((rebuilt - mag).norm() / mag.norm()).item())
    rnd = 2 * torch.pi * torch.rand(mag.shape, generator=torch.Generator().manual_seed(0))
    assert convergence_db(phase) < -15 and convergence_db(rnd) > -6, (convergence_db(phase), convergence_db(rnd))


def test_pghi_init_is_deterministic_and_needs_fewer_iterations():
    """``init="pghi"`` ignores the generator (no random draw) and, from a mel, fits its magnitudes
    with 8 iterations better than a random start does with 32 (and with 4 better than with 8)."""
    mm = MelSpectrogram().eval()
    mel = mm(_speechlike(11025))
    t = mel.shape[-1]
    gl = GriffinLim(n_iter=4, init="pghi", momentum=0.99)
    a = gl.infer(mel)
    assert torch.equal(a, gl.infer(mel, generator=torch.Generator().manual_seed(5)))
    assert GriffinLim(n_iter=0, init="pghi").infer(mel).shape == (1, 256 * t)

    def err(x):
        return (mm(x.clamp(-1, 1))[..., :t] - mel).abs().mean().item()
    assert err(GriffinLim(n_iter=8, init="pghi", momentum=0.99).infer(mel)) < err(GriffinLim(n_iter=32, momentum=0.99).infer(mel))
    assert err(a) < err(GriffinLim(n_iter=8, momentum=0.99).infer(mel))


def test_make_engine_keeps_griffinlim_as_it_is_on_every_device():
    from tts.engines import make_engine
    gl, den = GriffinLim(n_iter=1), PassThroughDenoiser()
    for device in ("cpu", "cuda"):
        assert make_engine("waveglow", gl, device=device, precision="fp16") is gl
        assert make_engine("denoiser", den, device=device, precision="fp16") is den


def test_pass_through_denoiser_keeps_audio():
    x = torch.randn(2, 100)
    y = PassThroughDenoiser()(x, strength=0.5)
    assert y.shape == (2, 1, 100) and torch.equal(y[:, 0], x)


# --- voices on Griffin-Lim ---------------------------------------------------------------------



def test_bundled_default_voice_is_fastspeech_on_griffinlim():
    from tts.voice import bundled_voices, load_voice
    assert bundled_voices() == ["heart", "slt-tacotron2"]  # the first is the default
    v = load_voice("heart")
    assert (v.acoustic_kind, v.vocoder_kind, v.n_mel, v.sample_rate) == ("fastspeech", "griffinlim", 80, 22050)
    assert v.describe()["vocoder"] == "griffinlim" and isinstance(v.denoiser, PassThroughDenoiser)
    assert v.defaults.denoiser_strength == 0 and v.defaults.sigma == 0


def test_manifest_with_bad_griffinlim_settings_names_the_file(tmp_path):
    import shutil

    from tts.voice import BUNDLED_DIR, Voice
    d = tmp_path / "v"
    d.mkdir()
    shutil.copy(BUNDLED_DIR / "heart" / "fastspeech.pt", d / "fastspeech.pt")
    spec = json.loads((BUNDLED_DIR / "heart" / "voice.json").read_text())
    spec["vocoder"] = {"kind": "griffinlim", "n_iter": -1}
    (d / "voice.json").write_text(json.dumps(spec))
    with pytest.raises(VoiceError, match=r"voice.json: bad vocoder settings.*n_iter"):
        Voice.from_dir(d)
    spec["vocoder"] = {"kind": "melgan"}
    (d / "voice.json").write_text(json.dumps(spec))
    with pytest.raises(VoiceError, match="'waveglow' or 'griffinlim'"):
        Voice.from_dir(d)


def test_exactly_one_vocoder(tmp_path):
    from tts.voice import BUNDLED_DIR, Voice
    fs = BUNDLED_DIR / "heart" / "fastspeech.pt"
    with pytest.raises(VoiceError, match="exactly one vocoder"):
        Voice.from_checkpoints(fastspeech=fs)
    with pytest.raises(VoiceError, match="exactly one vocoder"):
        Voice.from_checkpoints(fastspeech=fs, waveglow=FIXTURE_WG, griffinlim={})


def test_synthesizer_on_a_griffinlim_voice_is_deterministic_and_cut_to_length():
    from tts.synthesizer import Synthesizer
    from tts.voice import load_voice
    s = Synthesizer(load_voice("heart"))
    a = s.synthesize("Go to the station.")
    b = s.synthesize("Go to the station.")
    assert a.sample_rate == 22050 and np.array_equal(a.audio, b.audio)
    assert 0.4 < a.audio.size / 22050 < 3.0 and 0.01 < float(np.sqrt(np.mean(a.audio ** 2))) < 0.5
    both = s.synthesize_batch(["Go to the station.", "A much longer sentence follows this one here."])
    # FastSpeech in a padded batch may move a duration by a frame (DLE's behaviour); GL follows it
    assert abs(both[0].audio.size - a.audio.size) <= 2 * 256 and both[1].audio.size > both[0].audio.size


def test_pghi_window_continues_from_a_given_first_frame():
    """``pghi_phase(start=)``: a window that starts from the phase one pass over the whole
    spectrogram found for its first frame gets that pass's phase for every frame (its last one
    included: the same magnitudes); ``infer_window`` returns it with the audio."""
    gl = GriffinLim(n_iter=1, init="pghi")
    mag = gl._stft(_speechlike(8000)).abs()[0]
    gamma = PGHI_GAMMA_HANN * 1024 ** 2
    whole = pghi_phase(mag, 256, 1024, gamma)
    part = pghi_phase(mag[:, 10:], 256, 1024, gamma, start=whole[:, 10])
    assert np.abs(np.angle(np.exp(1j * (part - whole[:, 10:]).double().numpy()))).max() < 1e-4
    assert not torch.allclose(pghi_phase(mag[:, 10:], 256, 1024, gamma), part)
    mel = MelSpectrogram()(_speechlike(8000))
    audio, phase = gl.infer_window(mel)
    assert torch.equal(audio, gl.infer(mel)) and phase.shape == (513, mel.shape[-1] + 1)
    with pytest.raises(ValueError, match="init='pghi'"):
        GriffinLim(n_iter=1).infer_window(mel)


@pytest.mark.gpu
def test_pghi_griffinlim_on_cuda_fits_as_on_cpu():
    """On CUDA the PGHI start and the iterations fit the mel as well as on the CPU (the FFTs round
    differently, so the audio is close, not equal)."""
    mm = MelSpectrogram().eval()
    mel = mm(_speechlike(22050))
    t = mel.shape[-1]
    gl = GriffinLim(n_iter=2, init="pghi", momentum=0.99, power=1.3)
    cpu = gl.infer(mel)
    gpu = gl.to("cuda").infer(mel.cuda()).cpu()

    def err(x):
        return (mm(x.clamp(-1, 1))[..., :t] - mel).abs().mean().item()
    assert gpu.shape == cpu.shape and abs(err(gpu) - err(cpu)) < 0.01, (err(gpu), err(cpu))
    assert (gpu - cpu).norm() / cpu.norm() < 0.05
