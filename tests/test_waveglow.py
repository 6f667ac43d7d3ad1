"""WaveGlow: config, DLE parity on the reference fixtures, checkpoint loading and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FIXTURES, load_npz
from tts.checkpoints.waveglow import infer_waveglow_config, load_waveglow
from tts.errors import CheckpointError, InvalidInputError
from tts.models.stft import MelSpectrogram, mel_filterbank
from tts.models.waveglow import WaveGlow, WaveGlowConfig, WeightNormConv1d, WNConfig

CKPT = FIXTURES / "waveglow" / "checkpoint_WaveGlow_ngc_style_ddp.pt"
T2_CKPT = FIXTURES / "tacotron2" / "checkpoint_Tacotron2_current_1gpu.pt"


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return load_npz("waveglow/ref_waveglow.npz")


@pytest.fixture(scope="module")
def hparams() -> dict:
    return json.loads((FIXTURES / "waveglow" / "hparams.json").read_text())


@pytest.fixture(scope="module")
def waveglow() -> WaveGlow:
    return load_waveglow(CKPT)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a)


def _close(got: torch.Tensor, want: np.ndarray, atol: float) -> None:
    assert tuple(got.shape) == want.shape
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=0, atol=atol)


def _raw(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _random_model(config: WaveGlowConfig, seed: int = 0) -> WaveGlow:
    """A WaveGlow with weight norm on and non-zero ``end`` layers (DLE zeroes them)."""
    torch.manual_seed(seed)
    model = WaveGlow(config)
    with torch.no_grad():
        for wn in model.WN:
            wn.end.weight.normal_(0, 0.05)
            wn.end.bias.normal_(0, 0.05)
    return model.eval()


# --- config -----------------------------------------------------------------------------------

def test_config_defaults_are_waveglow256():
    c = WaveGlowConfig()
    assert (c.n_mel_channels, c.n_flows, c.n_group, c.n_early_every, c.n_early_size) == (80, 12, 8, 4, 2)
    assert c.WN_config == WNConfig(n_layers=8, kernel_size=3, n_channels=256)
    assert c.n_remaining_channels == 4
    assert WaveGlowConfig.from_dict(c.to_dict()) == c


def test_config_from_fixture_dict(hparams):
    c = WaveGlowConfig.from_dict(hparams["model_config"])
    assert c.to_dict() == hparams["model_config"]
    assert c.n_remaining_channels == hparams["n_remaining_channels"]


@pytest.mark.parametrize("changes", [
    {"n_group": 7}, {"n_group": 0}, {"n_flows": 0}, {"n_early_every": 0}, {"n_early_size": 3},
    {"n_mel_channels": 0}, {"n_early_size": 8}, {"n_flows": 2.0},
    {"WN_config": {"n_layers": 0, "kernel_size": 3, "n_channels": 8}},
    {"WN_config": {"n_layers": 2, "kernel_size": 2, "n_channels": 8}},
    {"WN_config": {"n_layers": 2, "kernel_size": 3, "n_channels": 7}},
    {"WN_config": {"n_layers": 2, "kernel_size": 3, "n_channels": 8, "dilation": 2}},
    {"sampling_rate": 22050},
])
def test_config_validation(changes):
    data = {**WaveGlowConfig().to_dict(), **changes}
    with pytest.raises(InvalidInputError):
        WaveGlowConfig.from_dict(data)


# --- module structure -------------------------------------------------------------------------

def test_parameter_names_match_dle():
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    entry = next(e for e in manifest if e["path"] == CKPT.relative_to(FIXTURES).as_posix())
    dle = {name.removeprefix("module."): tuple(shape) for name, shape, _ in entry["state_dict"]}
    model = WaveGlow(WaveGlowConfig.from_dict(entry["top_level"]["config"]))
    assert model.has_weight_norm
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == dle

    model.remove_weight_norm()
    assert not model.has_weight_norm
    folded = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert not any(k.endswith(("weight_g", "weight_v")) for k in folded)
    assert "WN.0.start.weight" in folded and "WN.3.in_layers.1.weight" in folded
    assert len(folded) == len(dle) - sum(k.endswith("weight_g") for k in dle)


def test_weight_norm_fold_is_exact():
    torch.manual_seed(3)
    conv = WeightNormConv1d(6, 10, 3, dilation=2, padding=2)
    with torch.no_grad():
        conv.weight_g.mul_(1.7)
    x = torch.randn(2, 6, 20)
    folded = conv.fold()
    assert set(dict(folded.named_parameters())) == {"weight", "bias"}
    torch.testing.assert_close(folded(x), conv(x), rtol=0, atol=1e-6)


def test_inverses_prepared_once(waveglow, ref):
    inverses = [c.W_inverse for c in waveglow.convinv]
    assert all(inv is not None for inv in inverses)
    waveglow.infer(_t(ref["mel_input"]), 0.0)
    assert all(c.W_inverse is inv for c, inv in zip(waveglow.convinv, inverses))
    w = waveglow.convinv[0].conv.weight.squeeze(-1).double()
    torch.testing.assert_close(inverses[0].squeeze(-1).double() @ w, torch.eye(w.size(0), dtype=torch.float64),
                               rtol=0, atol=1e-6)


# --- parity with DLE --------------------------------------------------------------------------

def test_audio_sigma0(waveglow, ref):
    _close(waveglow.infer(_t(ref["mel_input"]), sigma=0.0), ref["audio_sigma0"], 1e-4)


@pytest.mark.parametrize("sigma,tag", [(0.6, "0p6"), (0.9, "0p9"), (1.0, "1p0")])
def test_audio_with_stored_noise(waveglow, ref, sigma, tag):
    audio = waveglow.infer(_t(ref["mel_input"]), sigma=sigma, z=_t(ref["z"]))
    _close(audio, ref[f"audio_z_sigma{tag}"], 1e-4)


def test_flow_states(waveglow, ref):
    trace = waveglow.infer_with_states(_t(ref["mel_input"]), sigma=0.9, z=_t(ref["z"]))
    _close(trace.audio, ref["audio_z_sigma0p9"], 1e-4)
    assert sorted(trace.flow_states) == [0, 1, 2, 3]
    for k in range(4):
        _close(trace.flow_states[k], ref[f"flow{k}_after_convinv_z_sigma0p9"], 1e-4)


@pytest.mark.parametrize("archive", ["e2e/ref_e2e.npz", "e2e/ref_e2e_fastspeech.npz"])
def test_e2e_audio(waveglow, archive):
    data = load_npz(archive)
    for i in range(len(data["text_index"])):
        mel = _t(data[f"mel_{i}"])
        audio = waveglow.infer(mel, sigma=0.0)
        assert audio.shape == (1, 256 * mel.shape[2])
        _close(audio, data[f"audio_{i}"], 1e-5)


def test_mel_front_end(ref, hparams):
    h = hparams["mel_input"]
    mel_fn = MelSpectrogram(h["filter_length"], h["hop_length"], h["win_length"], h["n_mel_channels"],
                            h["sampling_rate"], h["mel_fmin"], h["mel_fmax"])
    mel = mel_fn(_t(ref["wave_input"]))
    assert mel.shape == ref["mel_input"].shape == (2, 40, 1 + 5888 // 256)
    _close(mel, ref["mel_input"], 1e-4)


def test_mel_filterbank_properties():
    fb = mel_filterbank(22050, 1024, 80, 0.0, 8000.0)
    assert fb.shape == (80, 513) and fb.dtype == np.float32
    assert (fb >= 0).all() and (fb.sum(axis=1) > 0).all()
    freqs = np.fft.rfftfreq(1024, 1 / 22050)
    assert fb[:, freqs > 8000.0].max() == 0.0
    peaks = fb.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all()


# --- noise, dtype, shapes ---------------------------------------------------------------------

def test_seeded_generator_is_reproducible(waveglow, ref):
    mel = _t(ref["mel_input"])
    a = waveglow.infer(mel, 0.6, generator=torch.Generator().manual_seed(7))
    b = waveglow.infer(mel, 0.6, generator=torch.Generator().manual_seed(7))
    c = waveglow.infer(mel, 0.6, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert torch.isfinite(a).all()


def test_bad_inputs(waveglow, ref):
    mel = _t(ref["mel_input"])
    with pytest.raises(InvalidInputError):
        waveglow.infer(mel[:, :20])
    with pytest.raises(InvalidInputError):
        waveglow.infer(mel[0])
    with pytest.raises(InvalidInputError):
        waveglow.infer(mel, 0.9, z=_t(ref["z"])[:, :6])


def test_float64_and_single_frame(waveglow, ref):
    mel = _t(ref["mel_input"])
    model64 = load_waveglow(CKPT).double()
    audio = model64.infer(mel.double(), 0.9, z=_t(ref["z"]).double())
    assert audio.dtype == torch.float64
    _close(audio.float(), ref["audio_z_sigma0p9"], 1e-4)
    one = waveglow.infer(mel[:, :, :1], 0.0)
    assert one.shape == (2, 256) and torch.isfinite(one).all()


def test_forward_inverts_infer():
    cfg = WaveGlowConfig(n_mel_channels=6, n_flows=5, n_group=8, n_early_every=2, n_early_size=2,
                         WN_config=WNConfig(n_layers=2, kernel_size=3, n_channels=16))
    model = _random_model(cfg, seed=11).double()
    torch.manual_seed(0)
    mel = torch.randn(2, 6, 4, dtype=torch.float64)
    audio = 0.3 * torch.randn(2, 256 * 4, dtype=torch.float64)
    with torch.no_grad():
        out = model(mel, audio)
    # forward writes [early(k=2), early(k=4), rest]; infer reads [rest, early(k=4), early(k=2)].
    z = out.z
    z_infer = torch.cat([z[:, 4:], z[:, 2:4], z[:, :2]], 1)
    assert len(out.log_s) == len(out.log_det_w) == 5
    torch.testing.assert_close(model.infer(mel, 1.0, z=z_infer), audio, rtol=0, atol=1e-9)


# --- loading ----------------------------------------------------------------------------------

def test_load_without_config_infers_it(waveglow, ref, hparams, tmp_path):
    ckpt = _raw(CKPT)
    del ckpt["config"]
    path = tmp_path / "no_config.pt"
    torch.save(ckpt, path)
    model = load_waveglow(path)
    assert model.config == WaveGlowConfig.from_dict(hparams["model_config"])
    mel, z = _t(ref["mel_input"]), _t(ref["z"])
    assert torch.equal(model.infer(mel, 0.9, z=z), waveglow.infer(mel, 0.9, z=z))


def test_load_folded_and_half_state_dicts(waveglow, ref, tmp_path):
    mel, z = _t(ref["mel_input"]), _t(ref["z"])
    want = waveglow.infer(mel, 0.9, z=z)
    plain = tmp_path / "plain.pt"
    torch.save(waveglow.state_dict(), plain)  # bare, folded: as torch.hub / exports have it
    model = load_waveglow(plain)
    assert not model.has_weight_norm
    torch.testing.assert_close(model.infer(mel, 0.9, z=z), want, rtol=0, atol=1e-6)

    ckpt = _raw(CKPT)
    ckpt["state_dict"] = {k: v.half() for k, v in ckpt["state_dict"].items()}
    half = tmp_path / "half.pt"
    torch.save(ckpt, half)
    model = load_waveglow(half)
    assert model.upsample.weight.dtype == torch.float32
    assert (model.infer(mel, 0.9, z=z) - want).abs().max() < 0.05


@pytest.mark.parametrize("cfg", [
    WaveGlowConfig(n_mel_channels=8, n_flows=5, n_group=4, n_early_every=3, n_early_size=2,
                   WN_config=WNConfig(n_layers=3, kernel_size=5, n_channels=16)),
    WaveGlowConfig(n_mel_channels=12, n_flows=6, n_group=12, n_early_every=2, n_early_size=4,
                   WN_config=WNConfig(n_layers=1, kernel_size=1, n_channels=8)),
    WaveGlowConfig(n_mel_channels=4, n_flows=3, n_group=6, n_early_every=1, n_early_size=0,
                   WN_config=WNConfig(n_layers=2, kernel_size=3, n_channels=4)),
], ids=["smaller", "wider-groups", "no-early-output"])
def test_random_config_round_trip(cfg, tmp_path):
    model = _random_model(cfg, seed=5)
    sd = {"module." + k: v for k, v in model.state_dict().items()}
    with_cfg, without = tmp_path / "with.pt", tmp_path / "without.pt"
    torch.save({"epoch": 1, "config": cfg.to_dict(), "state_dict": sd}, with_cfg)
    torch.save({"state_dict": sd}, without)

    model.remove_weight_norm().prepare_inference()
    torch.manual_seed(1)
    mel = torch.randn(2, cfg.n_mel_channels, 3)
    z = torch.randn(2, cfg.n_group, 3 * 256 // cfg.n_group)
    want = model.infer(mel, 0.8, z=z)
    for path in (with_cfg, without):
        loaded = load_waveglow(path)
        assert not loaded.training and not loaded.has_weight_norm
        torch.testing.assert_close(loaded.infer(mel, 0.8, z=z), want, rtol=0, atol=1e-6)
    inferred = load_waveglow(without).config
    if cfg.n_early_size:
        assert inferred == cfg
    else:  # without early outputs, n_early_every/size cannot be read off the shapes
        assert inferred.n_remaining_channels == cfg.n_remaining_channels == cfg.n_group


def test_larger_default_config_round_trip(tmp_path):
    cfg = WaveGlowConfig(n_mel_channels=80, n_flows=12,
                         WN_config=WNConfig(n_layers=8, kernel_size=3, n_channels=16))
    model = WaveGlow(cfg)
    path = tmp_path / "wg.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    assert infer_waveglow_config(_raw(path)["state_dict"]) == cfg
    loaded = load_waveglow(path)
    assert loaded.config == cfg and len(loaded.WN) == 12


def test_explicit_config_overrides_file(tmp_path, hparams):
    cfg = dict(hparams["model_config"])
    assert load_waveglow(CKPT, config=cfg).config == WaveGlowConfig.from_dict(cfg)
    wrong = {**cfg, "WN_config": {**cfg["WN_config"], "n_channels": 16}}
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_waveglow(CKPT, config=wrong)


# --- errors -----------------------------------------------------------------------------------

def _assert_names(exc: pytest.ExceptionInfo, path: Path) -> None:
    assert exc.value.path == str(path)
    assert str(path) in str(exc.value)


def test_error_wrong_kind():
    with pytest.raises(CheckpointError, match="Tacotron2 checkpoint, not a WaveGlow") as exc:
        load_waveglow(T2_CKPT)
    _assert_names(exc, T2_CKPT)


def test_error_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="not found") as exc:
        load_waveglow(path)
    _assert_names(exc, path)


def test_error_corrupt_and_truncated(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint" * 64)
    with pytest.raises(CheckpointError) as exc:
        load_waveglow(junk)
    _assert_names(exc, junk)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(CKPT.read_bytes()[:200_000])
    with pytest.raises(CheckpointError) as exc:
        load_waveglow(cut)
    _assert_names(exc, cut)


@pytest.mark.parametrize("drop_config", [False, True])
def test_error_key_removed(tmp_path, drop_config):
    ckpt = _raw(CKPT)
    del ckpt["state_dict"]["module.WN.1.cond_layers.0.weight_v"]
    if drop_config:
        del ckpt["config"]
    path = tmp_path / "missing_key.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="WN.1.cond_layers.0.weight_v") as exc:
        load_waveglow(path)
    _assert_names(exc, path)


def test_error_shape_mismatch(tmp_path):
    ckpt = _raw(CKPT)
    ckpt["state_dict"]["module.WN.2.end.weight"] = torch.zeros(8, 32, 1)
    path = tmp_path / "bad_shape.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="shape mismatch for WN.2.end.weight") as exc:
        load_waveglow(path)
    _assert_names(exc, path)


def test_error_bad_stored_config(tmp_path):
    ckpt = _raw(CKPT)
    ckpt["config"] = {**ckpt["config"], "n_group": 7}
    path = tmp_path / "bad_config.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="config") as exc:
        load_waveglow(path)
    _assert_names(exc, path)


# --- GPU (skipped without CUDA) ---------------------------------------------------------------

@pytest.mark.gpu
def test_gpu_fp16_close_to_reference(ref):
    model = load_waveglow(CKPT).cuda().half()
    mel, z = _t(ref["mel_input"]).cuda().half(), _t(ref["z"]).cuda().half()
    audio = model.infer(mel, 0.9, z=z)
    assert audio.dtype == torch.float16 and audio.device.type == "cuda"
    err = (audio.float().cpu() - _t(ref["audio_z_sigma0p9"])).abs().max().item()
    assert err < 0.05, err
    noisy = model.infer(mel, 0.6, generator=torch.Generator(device="cuda").manual_seed(0))
    assert torch.isfinite(noisy).all()
