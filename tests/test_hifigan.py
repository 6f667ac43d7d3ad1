"""HiFi-GAN: config, DLE parity on the reference fixtures, checkpoint layouts and their errors."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from conftest import FIXTURES, load_npz
from tts.checkpoints import detect_kind, load_hifigan, load_waveglow
from tts.checkpoints.common import read_checkpoint
from tts.checkpoints.hifigan import infer_hifigan_config
from tts.errors import CheckpointError, InvalidInputError
from tts.models.hifigan import HiFiGAN, HiFiGANConfig, HiFiGANDenoiser

HG = FIXTURES / "hifigan"
SMALL = HG / "small_gen_checkpoint_10.pt"
RB2 = HG / "resblock2_gen_checkpoint_10.pt"
RB2_FOLDED = HG / "resblock2_folded_state_dict.pt"
WAVEGLOW = FIXTURES / "waveglow" / "checkpoint_WaveGlow_ngc_style_ddp.pt"
TOL = 1e-5


def _mel(ref: dict) -> torch.Tensor:
    return torch.from_numpy(ref["mel"])


def _close(audio: torch.Tensor, want: np.ndarray) -> None:
    want_t = torch.from_numpy(want).reshape(audio.shape)
    assert audio.dtype == torch.float32
    assert torch.allclose(audio, want_t, atol=TOL, rtol=0), (audio - want_t).abs().max().item()


@pytest.fixture(scope="module")
def small_ref() -> dict:
    return load_npz("hifigan/small_ref.npz")


@pytest.fixture(scope="module")
def rb2_ref() -> dict:
    return load_npz("hifigan/resblock2_ref.npz")


# --- config -----------------------------------------------------------------------------------

def test_config_defaults_are_dle():
    cfg = HiFiGANConfig()
    assert cfg.upsample_rates == (8, 8, 2, 2) and cfg.upsample_kernel_sizes == (16, 16, 4, 4)
    assert cfg.upsample_initial_channel == 512 and cfg.resblock == "1"
    assert cfg.resblock_kernel_sizes == (11, 7, 3)
    assert cfg.resblock_dilation_sizes == ((1, 3, 5),) * 3
    assert cfg.hop_length == 256 and cfg.n_mel_channels == 80
    assert HiFiGANConfig.from_dict(cfg.to_dict()) == cfg
    assert HiFiGANConfig.from_dict({"resblock": 1}).resblock == "1"


@pytest.mark.parametrize("changes", [
    {"upsample_rates": [8, 8, 2]},
    {"upsample_kernel_sizes": [16, 16, 4, 5]},
    {"upsample_kernel_sizes": [4, 16, 4, 4]},
    {"upsample_initial_channel": 100},
    {"upsample_initial_channel": 0},
    {"resblock": "3"},
    {"resblock_kernel_sizes": [11, 8, 3]},
    {"resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]]},
    {"resblock_dilation_sizes": [[1, 3], [1, 3], [1, 3]]},
    {"resblock": "2"},
    {"n_mel_channels": -1},
    {"upsample_rates": []},
    {"unknown": 1},
])
def test_config_validation(changes):
    with pytest.raises(InvalidInputError):
        HiFiGANConfig.from_dict({**HiFiGANConfig().to_dict(), **changes})


# --- module tree ------------------------------------------------------------------------------

def test_parameter_names_match_dle_at_default_size():
    """Names and shapes of DLE's default generator (listed from a reference checkpoint)."""
    layout = json.loads((HG / "default_config_layout.json").read_text())
    model = HiFiGAN(HiFiGANConfig.from_dict(layout["config"]))
    assert model.has_weight_norm
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == dict(map(tuple, layout["generator"]))
    model.remove_weight_norm()
    assert not model.has_weight_norm
    folded = model.state_dict()
    assert not any(k.endswith(("weight_g", "weight_v")) for k in folded)
    assert "resblocks.3.2.convs2.2.weight" in folded and "ups.0.weight" in folded


def test_infer_shape_and_errors():
    model = HiFiGAN(HiFiGANConfig(upsample_initial_channel=16)).eval()
    audio = model.infer(torch.zeros(3, 80, 5), 0.9, generator=torch.Generator())
    assert audio.shape == (3, 256 * 5)
    with pytest.raises(InvalidInputError):
        model.infer(torch.zeros(1, 40, 5))
    with pytest.raises(InvalidInputError):
        model.infer(torch.zeros(80, 5))


# --- parity with DLE's reference code ---------------------------------------------------------

@pytest.mark.parametrize("name", ["small", "resblock2"])
def test_parity_with_and_without_weight_norm(name, small_ref, rb2_ref):
    ref = small_ref if name == "small" else rb2_ref
    path = SMALL if name == "small" else RB2
    ckpt = read_checkpoint(path)
    weight_normed = HiFiGAN(ckpt["config"]).eval()
    weight_normed.load_state_dict(ckpt["generator"])
    with torch.no_grad():
        _close(weight_normed(_mel(ref)), ref["audio"])
    weight_normed.remove_weight_norm()
    _close(weight_normed.infer(_mel(ref)), ref["audio_folded"])
    loaded = load_hifigan(path)
    assert not loaded.has_weight_norm and not loaded.training
    _close(loaded.infer(_mel(ref)), ref["audio_folded"])
    # sigma / z / generator are ignored: deterministic
    _close(loaded.infer(_mel(ref), 0.6, generator=torch.Generator().manual_seed(1)), ref["audio_folded"])


def test_parity_batch_rows_alone(small_ref):
    model = load_hifigan(SMALL)
    mel = _mel(small_ref)
    for i in range(mel.size(0)):
        _close(model.infer(mel[i:i + 1]), small_ref["audio_folded"][i:i + 1])


def test_ema_weights(small_ref):
    _close(load_hifigan(SMALL, ema=True).infer(_mel(small_ref)), small_ref["audio_ema"])
    with pytest.raises(CheckpointError, match="no EMA weights"):
        load_hifigan(RB2, ema=True)


@pytest.mark.parametrize("name", ["small", "resblock2"])
def test_denoiser_matches_dle(name, small_ref, rb2_ref):
    ref = small_ref if name == "small" else rb2_ref
    model = load_hifigan(SMALL if name == "small" else RB2)
    den = HiFiGANDenoiser(model).eval()
    scale = float(np.abs(ref["bias_spec"]).max())
    assert torch.allclose(den.bias_spec, torch.from_numpy(ref["bias_spec"]), atol=1e-5 * scale, rtol=0)
    with torch.no_grad():
        out = den(model.infer(_mel(ref)), 0.1)
    assert out.shape == ref["denoised_0p1"].shape
    assert torch.allclose(out, torch.from_numpy(ref["denoised_0p1"]), atol=TOL, rtol=0)


# --- layouts ----------------------------------------------------------------------------------

def _save(tmp_path, obj, name="ckpt.pt"):
    p = tmp_path / name
    torch.save(obj, p)
    return p


def _variants(ckpt: dict) -> dict[str, dict]:
    gen = ckpt["generator"]
    flat = {}
    for k, v in gen.items():
        parts = k.split(".")
        if parts[0] == "resblocks":
            k = ".".join(["resblocks", str(int(parts[1]) * 3 + int(parts[2]))] + parts[3:])
        flat[k] = v
    return {
        "dle": ckpt,
        "ddp_prefix": {**ckpt, "generator": {"module." + k: v for k, v in gen.items()}},
        "old_gen_key": {"gen": gen, "config": ckpt["config"]},
        "state_dict_wrapped": {"state_dict": gen, "config": ckpt["config"]},
        "bare_no_config": dict(gen),
        "flat_resblocks_no_config": {"generator": flat},
        "squeezed_weight_g": {**ckpt, "generator": {k: (v.squeeze(-1) if k.endswith("weight_g") else v)
                                                    for k, v in gen.items()}},
        "fp16": {**ckpt, "generator": {k: v.half() for k, v in gen.items()}},
    }


@pytest.mark.parametrize("variant", ["dle", "ddp_prefix", "old_gen_key", "state_dict_wrapped",
                                     "bare_no_config", "flat_resblocks_no_config", "squeezed_weight_g",
                                     "fp16"])
def test_layouts_load(variant, tmp_path, small_ref):
    obj = _variants(read_checkpoint(SMALL))[variant]
    p = _save(tmp_path, obj)
    model = load_hifigan(p)
    assert detect_kind(p) == "hifigan"
    tol = 2e-3 if variant == "fp16" else TOL
    want = torch.from_numpy(small_ref["audio_folded"][:, 0])
    assert torch.allclose(model.infer(_mel(small_ref)), want, atol=tol, rtol=0)
    assert model.config == HiFiGANConfig.from_dict(read_checkpoint(SMALL)["config"])


def test_folded_state_dict_from_dle(rb2_ref, caplog):
    """DLE's own remove_weight_norm() result, saved as a bare state_dict (no config)."""
    cfg = read_checkpoint(RB2)["config"]
    _close(load_hifigan(RB2_FOLDED, config=cfg).infer(_mel(rb2_ref)), rb2_ref["audio_folded"])
    with caplog.at_level(logging.WARNING):
        inferred = infer_hifigan_config(read_checkpoint(RB2_FOLDED))
    assert "assumed" in caplog.text
    assert inferred.upsample_rates == (8, 8, 4) and inferred.resblock == "2"
    assert inferred.resblock_kernel_sizes == (3, 5, 7) and inferred.upsample_initial_channel == 32


def test_n_mel_from_conv_pre(tmp_path):
    model = HiFiGAN(HiFiGANConfig(upsample_initial_channel=16, n_mel_channels=40))
    sd = model.state_dict()
    cfg = {k: v for k, v in model.config.to_dict().items() if k != "n_mel_channels"}
    p = _save(tmp_path, {"generator": sd, "config": cfg})
    assert load_hifigan(p).n_mel_channels == 40


# --- wrong files ------------------------------------------------------------------------------

def test_waveglow_given_as_hifigan():
    with pytest.raises(CheckpointError, match="WaveGlow checkpoint, not a HiFi-GAN"):
        load_hifigan(WAVEGLOW)


def test_hifigan_given_as_waveglow():
    with pytest.raises(CheckpointError, match="HiFi-GAN checkpoint, not a WaveGlow"):
        load_waveglow(SMALL)


def test_discriminator_file(tmp_path):
    p = _save(tmp_path, {"mpd": {"x": torch.zeros(1)}, "msd": {}, "optim_g": {}, "epoch": 3})
    with pytest.raises(CheckpointError, match="discriminator checkpoint"):
        load_hifigan(p)


def test_missing_and_mismatched(tmp_path):
    with pytest.raises(CheckpointError, match="file not found"):
        load_hifigan(tmp_path / "nope.pt")
    ckpt = read_checkpoint(SMALL)
    gen = dict(ckpt["generator"])
    gen.pop("ups.1.bias")
    with pytest.raises(CheckpointError, match="missing keys"):
        load_hifigan(_save(tmp_path, {**ckpt, "generator": gen}, "a.pt"))
    bad_cfg = {**ckpt["config"], "upsample_initial_channel": 64}
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_hifigan(_save(tmp_path, {**ckpt, "config": bad_cfg}, "b.pt"))
    with pytest.raises(CheckpointError, match="config is invalid"):
        load_hifigan(_save(tmp_path, {**ckpt, "config": {**ckpt["config"], "resblock": "7"}}, "c.pt"))


# --- voices and tts-synth ---------------------------------------------------------------------

BUNDLED_T2 = FIXTURES.parents[2] / "tts" / "voices" / "slt-tacotron2" / "tacotron2.pt"


def _run_synth(args: list[str], capsys) -> tuple[int, str, str]:
    from tts.cli.synth import main
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_voice_from_checkpoints_and_manifest(tmp_path):
    from tts.voice import Voice
    voice = Voice.from_checkpoints(tacotron2=BUNDLED_T2, hifigan=SMALL)
    assert voice.vocoder_kind == "hifigan" and voice.describe()["vocoder"] == "hifigan"
    assert voice.sources["hifigan"] == str(SMALL)
    assert voice.defaults.denoiser_strength == 0.0          # DLE's HiFi-GAN inference default
    assert isinstance(voice.denoiser, HiFiGANDenoiser)
    folder = tmp_path / "v"
    folder.mkdir()
    (folder / "voice.json").write_text(json.dumps({
        "name": "hg", "acoustic": {"kind": "tacotron2", "checkpoint": str(BUNDLED_T2)},
        "vocoder": {"kind": "hifigan", "checkpoint": str(SMALL)},
        "defaults": {"denoiser_strength": 0.1}}))
    v2 = Voice.from_dir(folder)
    assert v2.vocoder_kind == "hifigan" and v2.defaults.denoiser_strength == 0.1


def test_voice_mistakes():
    from tts.errors import VoiceError
    from tts.voice import Voice
    with pytest.raises(VoiceError, match="exactly one vocoder"):
        Voice.from_checkpoints(tacotron2=BUNDLED_T2, hifigan=SMALL, waveglow=WAVEGLOW)
    with pytest.raises(CheckpointError, match="WaveGlow checkpoint, not a HiFi-GAN"):
        Voice.from_checkpoints(tacotron2=BUNDLED_T2, hifigan=WAVEGLOW)


def test_tts_synth_with_hifigan(tmp_path, capsys):
    import soundfile as sf
    phrases = tmp_path / "p.txt"
    phrases.write_text("Hello world.\nA second line.\n", encoding="utf-8")
    out = tmp_path / "o"
    code, _, err = _run_synth([str(phrases), "--out", str(out), "--tacotron2", str(BUNDLED_T2),
                               "--hifigan", str(SMALL), "--save-mel", "--max-decoder-steps", "200",
                               "--seed", "1"], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["voice"]["vocoder"] == "hifigan"
    model = load_hifigan(SMALL)
    for i in (1, 2):
        audio, rate = sf.read(out / f"{i}.wav", dtype="float32")
        assert rate == 22050
        mel = torch.from_numpy(np.load(out / f"{i}.mel.npy"))[None]
        want = model.infer(mel)[0].numpy()
        # Tacotron2 keeps the frame on which its gate fired for the postnet; the audio stops before it.
        assert want.shape[0] - 256 == audio.shape[0] > 0
        want = want[:audio.shape[0]]
        np.testing.assert_allclose(audio, want, atol=2 / 32768)


@pytest.mark.parametrize("args,needle", [
    (["--hifigan", str(SMALL)], "--hifigan needs an acoustic model"),
    (["--tacotron2", str(BUNDLED_T2), "--hifigan", str(SMALL), "--waveglow", str(WAVEGLOW)],
     "--waveglow or --hifigan, not both"),
    (["--voice", "x", "--hifigan", str(SMALL)], "either --voice or checkpoint files"),
])
def test_tts_synth_hifigan_flag_mistakes(tmp_path, capsys, args, needle):
    phrases = tmp_path / "p.txt"
    phrases.write_text("Hello.\n", encoding="utf-8")
    code, _, err = _run_synth([str(phrases), "--out", str(tmp_path / "o"), *args], capsys)
    assert code != 0 and needle in err, err


# --- engine -----------------------------------------------------------------------------------

def test_engine_is_the_eager_maths_on_cpu(small_ref):
    from tts.engines import make_engine
    from tts.engines.hifigan import HiFiGANEngine
    ckpt = read_checkpoint(SMALL)
    model = HiFiGAN(ckpt["config"]).eval()
    model.load_state_dict(ckpt["generator"])
    engine = HiFiGANEngine(model, device="cpu", precision="fp32")
    assert model.has_weight_norm and not engine.model.has_weight_norm      # folds a copy, not the model
    assert not engine.use_graphs
    _close(engine.infer(_mel(small_ref), 0.6), small_ref["audio_folded"])
    assert make_engine("hifigan", model, device="cpu", precision="fp32") is model   # the CPU runs eager
    with pytest.raises(InvalidInputError):
        engine.infer(torch.zeros(1, 40, 5))
    with pytest.raises(ValueError, match="precision"):
        HiFiGANEngine(model, device="cpu", precision="int8")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_graphs_on_cuda_match_the_reference(small_ref, precision):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from tts.engines import make_engine
    from tts.engines.hifigan import HiFiGANEngine
    engine = make_engine("hifigan", load_hifigan(SMALL), device="cuda", precision=precision)
    assert isinstance(engine, HiFiGANEngine) and engine.use_graphs
    mel = _mel(small_ref)
    want = torch.from_numpy(small_ref["audio_folded"]).reshape(mel.size(0), -1)
    tol = 2e-5 if precision == "fp32" else 2e-2            # fp32 is IEEE (no TF32); fp16 halves the mantissa
    for _ in range(2):                                     # capture, then replay
        audio = engine.infer(mel.cuda()).float().cpu()
        assert audio.shape == want.shape
        assert (audio - want).abs().max().item() < tol
    for i in range(mel.size(0)):                           # a row alone: its own graph, the same audio
        row = engine.infer(mel[i:i + 1].cuda()).float().cpu()
        assert (row - want[i:i + 1]).abs().max().item() < tol
