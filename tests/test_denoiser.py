"""STFT and denoiser: DLE parity on the reference fixtures, short input, options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import FIXTURES, load_npz
from tts.checkpoints.waveglow import load_waveglow
from tts.errors import InvalidInputError
from tts.models.denoiser import Denoiser, waveglow_bias_audio
from tts.models.stft import STFT, window_sumsquare
from tts.models.waveglow import WaveGlow, WaveGlowConfig, WNConfig

CKPT = FIXTURES / "waveglow" / "checkpoint_WaveGlow_ngc_style_ddp.pt"


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return load_npz("denoiser/ref_denoiser.npz")


@pytest.fixture(scope="module")
def waveglow() -> WaveGlow:
    return load_waveglow(CKPT)


@pytest.fixture(scope="module")
def denoiser(waveglow) -> Denoiser:
    cfg = json.loads((FIXTURES / "denoiser" / "stft_config.json").read_text())
    return Denoiser(waveglow, filter_length=cfg["filter_length"], n_overlap=cfg["n_overlap"],
                    win_length=cfg["win_length"], mode=cfg["mode"])


def _close(got: torch.Tensor, want: np.ndarray, atol: float) -> None:
    assert tuple(got.shape) == want.shape
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=0, atol=atol)


def test_bias(waveglow, denoiser, ref):
    _close(waveglow_bias_audio(waveglow), ref["bias_audio"], 1e-4)
    _close(denoiser.bias_spec, ref["bias_spec"], 1e-4)
    assert denoiser.bias_spec.dtype == torch.float32
    assert "bias_spec" in denoiser.state_dict()


@pytest.mark.parametrize("strength,tag", [(0.01, "0p01"), (0.1, "0p1"), (0.0, "0")])
def test_strengths(denoiser, ref, strength, tag):
    _close(denoiser(torch.from_numpy(ref["audio_input"]), strength=strength),
           ref[f"denoised_strength{tag}"], 1e-4)


def test_default_strength_is_inference_py(denoiser, ref):
    audio = torch.from_numpy(ref["audio_input"])
    assert torch.equal(denoiser(audio), denoiser(audio, 0.01))


def test_e2e_denoised(waveglow, denoiser):
    data = load_npz("e2e/ref_e2e.npz")
    for i in range(len(data["text_index"])):
        audio = waveglow.infer(torch.from_numpy(data[f"mel_{i}"]), sigma=0.0)
        _close(denoiser(audio, strength=0.01).squeeze(1), data[f"denoised_{i}"], 1e-5)


@pytest.mark.parametrize("n", [1, 100, 255, 256, 300, 512, 513, 700])
def test_short_audio(denoiser, n):
    torch.manual_seed(n)
    audio = 0.1 * torch.randn(2, n)
    out = denoiser(audio, strength=0.01)
    assert out.shape == (2, 1, 256 * (n // 256))
    assert torch.isfinite(out).all()
    # strength 0 is the STFT round trip: the kept samples come back.
    kept = 256 * (n // 256)
    torch.testing.assert_close(denoiser(audio, strength=0.0)[:, 0], audio[:, :kept], rtol=0, atol=1e-5)


def test_one_and_two_frame_mels(waveglow, denoiser):
    for frames in (1, 2):
        mel = torch.zeros(1, waveglow.n_mel_channels, frames)
        out = denoiser(waveglow.infer(mel, 0.0))
        assert out.shape == (1, 1, 256 * frames) and torch.isfinite(out).all()


def test_bias_mel_uses_model_n_mel():
    torch.manual_seed(0)
    cfg = WaveGlowConfig(n_mel_channels=12, n_flows=2, n_group=4, n_early_every=2, n_early_size=2,
                         WN_config=WNConfig(n_layers=1, kernel_size=3, n_channels=4))
    model = WaveGlow(cfg).remove_weight_norm().eval()
    den = Denoiser(model, filter_length=256, n_overlap=4, win_length=256)
    assert den.bias_spec.shape == (1, 129, 1)
    out = den(torch.randn(1, 1000))
    assert out.shape == (1, 1, 64 * (1000 // 64))


def test_normal_mode_and_bad_options(waveglow):
    a = Denoiser(waveglow, mode="normal", generator=torch.Generator().manual_seed(3))
    b = Denoiser(waveglow, mode="normal", generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.bias_spec, b.bias_spec)
    with pytest.raises(InvalidInputError):
        Denoiser(waveglow, mode="ones")
    with pytest.raises(InvalidInputError):
        Denoiser(waveglow, n_overlap=3)
    with pytest.raises(InvalidInputError):
        a(torch.zeros(2, 1, 1000))


def test_stft_envelope_matches_librosa_formula():
    stft = STFT(1024, 256, 1024)
    n_frames = 9
    ones = torch.ones(1, 1, n_frames)
    env = torch.nn.functional.conv_transpose1d(ones, stft.window_square.view(1, 1, -1), stride=256)
    np.testing.assert_allclose(env.view(-1).numpy(), window_sumsquare("hann", n_frames, 256, 1024, 1024),
                               rtol=0, atol=1e-6)


def test_stft_shapes_and_round_trip():
    stft = STFT(filter_length=512, hop_length=128, win_length=400)
    torch.manual_seed(0)
    x = torch.randn(3, 2000)
    mag, phase = stft.transform(x)
    assert mag.shape == phase.shape == (3, 257, 1 + 2000 // 128)
    y = stft.inverse(mag, phase)
    assert y.shape == (3, 1, 128 * (2000 // 128))
    torch.testing.assert_close(y[:, 0], x[:, :y.shape[-1]], rtol=0, atol=1e-4)
    with pytest.raises(InvalidInputError):
        stft.transform(torch.zeros(1, 256))


@pytest.mark.gpu
def test_gpu_denoiser_on_fp16_waveglow(ref):
    model = load_waveglow(CKPT).cuda().half()
    den = Denoiser(model)
    assert den.bias_spec.device.type == "cuda" and den.bias_spec.dtype == torch.float32
    assert (den.bias_spec.cpu() - torch.from_numpy(ref["bias_spec"])).abs().max() < 0.05
    out = den(torch.from_numpy(ref["audio_input"]).cuda(), strength=0.01)
    err = (out.cpu() - torch.from_numpy(ref["denoised_strength0p01"])).abs().max().item()
    assert err < 1e-3, err


@pytest.mark.gpu
def test_denoiser_engine_graphs_match_eager_for_any_strength_and_shape():
    """DenoiserEngine on CUDA: one graph per (B, N), strength read from a device scalar."""
    import copy

    from tts.engines.waveglow import DenoiserEngine
    from tts.models.waveglow import WaveGlow, WaveGlowConfig

    torch.manual_seed(0)
    wg = WaveGlow(WaveGlowConfig(n_flows=4, n_early_every=2, WN_config={"n_layers": 2, "n_channels": 16})).cuda()
    ref = Denoiser(wg).cuda().eval()
    eng = DenoiserEngine(copy.deepcopy(ref), device="cuda")
    assert eng.use_graphs
    for b, n, s in ((1, 148480, 0.01), (1, 148480, 0.2), (3, 7000, 0.05), (1, 148480, 0.0)):
        audio = torch.randn(b, n, device="cuda") * 0.3
        with torch.no_grad():
            want = ref(audio, strength=s)
        got = eng(audio, s)
        assert got.shape == want.shape
        assert float((got - want).abs().max()) <= 1e-5 * max(1.0, float(want.abs().max()))
    assert len(eng._graphs) == 2
