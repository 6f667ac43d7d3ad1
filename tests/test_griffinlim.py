"""Griffin-Lim vocoder: WaveGlow's interface, faithful magnitudes, determinism, voices built on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tts.errors import InvalidInputError, VoiceError
from tts.models.griffinlim import GriffinLim, PassThroughDenoiser
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


@pytest.mark.parametrize("bad", [torch.zeros(80, 10), torch.zeros(1, 79, 10)])
def test_bad_mel_names_the_field(bad):
    with pytest.raises(InvalidInputError, match="mel must be"):
        GriffinLim(n_iter=1).infer(bad)


@pytest.mark.parametrize("spec,match", [({"n_iter": 0}, "n_iter"), ({"power": 9}, "power"),
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
    gl = GriffinLim(n_iter=7, power=1.5, momentum=0.9)
    again = GriffinLim.from_config(gl.config())
    assert again.config() == gl.config()


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
