"""Growing a trained WaveGlow (``tts.train.grow``): exact for new layers, close for a shorter
upsampler, and the result loads, trains and vocodes like any other WaveGlow."""

from __future__ import annotations

import json

import pytest
import torch

from tts.checkpoints import load_waveglow
from tts.checkpoints.waveglow import infer_waveglow_config
from tts.errors import InvalidInputError
from tts.models.waveglow import WaveGlow, WaveGlowConfig
from tts.train.grow import grow_waveglow, refit_upsampler, upsample, upsampler_error

CFG = dict(n_flows=4, n_early_every=2, WN_config=dict(n_layers=2, n_channels=16))


def _smooth_mels(n: int, frames: int, seed: int) -> list[torch.Tensor]:
    """Log-mel-like inputs whose consecutive frames are correlated (as speech mels are)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(80, frames + 8, generator=g)
        k = torch.ones(1, 1, 9) / 9
        out.append(torch.nn.functional.conv1d(x[:, None], k)[:, 0] * 2 - 5)
    return out


def _trained_like(seed: int = 0) -> dict:
    """An exported file (folded weights, fp32) of a model whose every layer does something
    (a fresh WaveGlow's ``end`` layers are zero, which would hide mistakes)."""
    torch.manual_seed(seed)
    m = WaveGlow(CFG, weight_norm=False)
    with torch.no_grad():
        for wn in m.WN:
            wn.end.weight.normal_(0, 0.05)
            wn.end.bias.normal_(0, 0.05)
    return {"iteration": 123, "config": m.config.to_dict(), "state_dict": m.state_dict()}


def _model(ck: dict) -> WaveGlow:
    m = WaveGlow(ck["config"], weight_norm=False)
    m.load_state_dict(ck["state_dict"])
    return m.eval()


def test_upsample_kernel_config_round_trip_and_validation():
    assert "upsample_kernel" not in WaveGlowConfig().to_dict()        # DLE's dict, unchanged
    c = WaveGlowConfig.from_dict(dict(CFG, upsample_kernel=512))
    assert c.upsample_kernel == 512 and c.to_dict()["upsample_kernel"] == 512
    assert WaveGlow(c).upsample.weight.shape == (80, 80, 512)
    for bad in (500, 0, 128, 512.0):
        with pytest.raises(InvalidInputError, match="upsample_kernel"):
            WaveGlowConfig.from_dict(dict(CFG, upsample_kernel=bad))


@pytest.mark.parametrize("kernel", [1024, 512, 256])
def test_upsample_gemm_equals_the_models_transposed_convolution(kernel):
    m = WaveGlow(dict(CFG, upsample_kernel=kernel), weight_norm=False)
    mel = _smooth_mels(1, 13, 8)[0]
    ref = m.upsample(mel[None])[0, :, : 13 * 256]
    out = upsample(m.upsample.weight.detach(), m.upsample.bias.detach(), mel)
    assert out.shape == ref.shape == (80, 13 * 256)
    torch.testing.assert_close(out.float(), ref.detach(), atol=1e-4, rtol=1e-4)


def test_new_layers_leave_the_function_exactly_unchanged():
    ck = _trained_like()
    g = grow_waveglow(ck, n_layers=4)
    assert g["config"]["WN_config"]["n_layers"] == 4 and g["iteration"] == 123
    a, b = _model(ck), _model(g)
    mel = _smooth_mels(1, 20, 1)[0][None]
    z = torch.randn(1, 8, 20 * 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ya, yb = a.infer(mel, sigma=1.0, z=z), b.infer(mel, sigma=1.0, z=z)
        audio = ya[:, : 20 * 256 - 256]
        fa, fb = a(mel, audio), b(mel, audio)
    assert ya.abs().max() > 0.01
    assert torch.equal(ya, yb)
    assert torch.equal(fa.z, fb.z)
    # the new layers do have weights to train: the dilated and conditioning convolutions are not zero
    sd = g["state_dict"]
    assert sd["WN.0.in_layers.3.weight"].abs().sum() > 0 and sd["WN.0.cond_layers.3.weight"].abs().sum() > 0
    assert sd["WN.0.res_skip_layers.3.weight"].abs().sum() == 0
    assert sd["WN.0.res_skip_layers.1.weight"].shape[0] == 32          # old last layer: residual rows added
    with pytest.raises(ValueError, match="only grow"):
        grow_waveglow(g, n_layers=2)


def test_shorter_upsampler_refit_beats_cutting_and_stays_close():
    ck = _trained_like()
    sd = ck["state_dict"]
    old = (sd["upsample.weight"], sd["upsample.bias"])
    fit, test = _smooth_mels(30, 60, 3), _smooth_mels(8, 60, 4)
    cut = refit_upsampler(*old, 512, None)
    lsq = refit_upsampler(*old, 512, fit)
    assert cut[0].shape == lsq[0].shape == (80, 80, 512)
    assert torch.equal(cut[0], old[0][:, :, :512])      # without mels: the two newest frames' taps
    e_cut, e_lsq = upsampler_error(old, cut, test), upsampler_error(old, lsq, test)
    assert e_lsq < 0.5 * e_cut, (e_lsq, e_cut)
    assert upsampler_error(old, old, test) == 0.0
    g = grow_waveglow(ck, n_layers=3, upsample_kernel=512, mels=fit)
    assert g["config"]["upsample_kernel"] == 512
    a, b = _model(ck), _model(g)
    mel = test[0][None]
    z = torch.randn(1, 8, 60 * 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ya, yb = a.infer(mel, sigma=1.0, z=z), b.infer(mel, sigma=1.0, z=z)
    assert ya.shape == yb.shape
    assert float((ya - yb).norm() / ya.norm()) < 0.5 * e_cut
    for bad in (1024 + 256, 300, 0):
        with pytest.raises(ValueError, match="multiple of 256"):
            refit_upsampler(*old, bad, None)


def test_grown_file_loads_as_a_voice_waveglow_and_its_shape_is_inferred(tmp_path):
    g = grow_waveglow(_trained_like(), n_layers=3, upsample_kernel=768, mels=_smooth_mels(10, 40, 6))
    f = tmp_path / "waveglow.pt"
    torch.save(g, f)
    m = load_waveglow(f)
    assert m.config.upsample_kernel == 768 and m.config.WN_config.n_layers == 3
    cfg = infer_waveglow_config(g["state_dict"])                     # no config key needed
    assert cfg == m.config
    with torch.no_grad():
        audio = m.infer(_smooth_mels(1, 12, 7)[0][None], sigma=0.0)
    assert audio.shape == (1, 12 * 256) and torch.isfinite(audio).all()
    bad = dict(g["state_dict"], **{"upsample.weight": torch.zeros(80, 80, 700)})
    from tts.errors import CheckpointError
    with pytest.raises(CheckpointError, match="multiple of 256"):
        infer_waveglow_config(bad)


def test_cli_grows_a_file_and_reports_bad_input(tmp_path, capsys):
    from tts.train.__main__ import main
    src = tmp_path / "wg.pt"
    torch.save(_trained_like(), src)
    assert main(["grow-waveglow", str(src), str(tmp_path / "g.pt"), "--n-layers", "3",
                 "--upsample-kernel", "768"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["WN_config"]["n_layers"] == 3 and info["config"]["upsample_kernel"] == 768
    assert info["parameters"] < info["parameters_before"]
    assert torch.load(tmp_path / "g.pt", weights_only=True)["config"] == info["config"]
    assert not (tmp_path / "g.pt.tmp").exists()
    assert main(["grow-waveglow", str(tmp_path / "nope.pt"), str(tmp_path / "x.pt")]) == 2
    assert "nope.pt: no such file" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["grow-waveglow", str(tmp_path / "junk.pt"), str(tmp_path / "x.pt")]) == 2
    assert "junk.pt: not a readable checkpoint" in capsys.readouterr().err
    torch.save({"state_dict": {"embedding.weight": torch.zeros(2, 2)}}, tmp_path / "t2.pt")
    assert main(["grow-waveglow", str(tmp_path / "t2.pt"), str(tmp_path / "x.pt")]) == 2
    assert "t2.pt: not an exported WaveGlow" in capsys.readouterr().err
    assert main(["grow-waveglow", str(src), str(tmp_path / "x.pt"), "--n-layers", "1"]) == 2
    assert "only grow" in capsys.readouterr().err
    assert main(["grow-waveglow", str(src), str(tmp_path / "x.pt"), "--upsample-kernel", "1000"]) == 2
    assert "multiple of 256" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_cli_fits_the_upsampler_on_the_mels_of_a_voice(tmp_path, capsys):
    """``--mel-texts``: the bundled voice's FastSpeech makes the mels; 3/4 fit, 1/4 measure."""
    from tts.train.__main__ import main
    src = tmp_path / "wg.pt"
    torch.save(_trained_like(), src)
    texts = tmp_path / "t.txt"
    texts.write_text("a|The quick brown fox jumps over the lazy dog.\nb|It was a bright cold day in April.\n"
                     "c|Printing, in the only sense with which we are at present concerned.\n"
                     "d|The clocks were striking thirteen.\n", encoding="utf-8")
    args = ["grow-waveglow", str(src), str(tmp_path / "g.pt"), "--upsample-kernel", "512"]
    assert main(args + ["--mel-texts", str(texts), "--n", "4", "--voice", "heart"]) == 0
    fitted = json.loads(capsys.readouterr().out)["upsampler_error"]
    assert main(args) == 0
    assert "upsampler_error" not in json.loads(capsys.readouterr().out)   # nothing to measure it on
    cut = torch.load(tmp_path / "g.pt", weights_only=True)["state_dict"]
    assert torch.equal(cut["upsample.weight"], _trained_like()["state_dict"]["upsample.weight"][:, :, :512])
    assert 0.0 < fitted < 0.5
