"""HiFi-GAN training (tts/train/hifigan_gan.py, HiFiGANTask) on the tone corpus: discriminators,
losses, resumable chunks, export through ``load_hifigan``, voices, GTA mels. A small generator and
discriminators 8x narrower keep every test to a few seconds on CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tts.train.corpus import Corpus, write_tone_corpus
from tts.train.trainer import read_log, train

ROOT = Path(__file__).resolve().parents[1]

GEN = dict(upsample_initial_channel=32, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3, 5]])
SETTINGS = dict(batch_size=2, segment_length=4096, disc_width_div=8, lr=1e-3)


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> Path:
    return write_tone_corpus(tmp_path_factory.mktemp("tones") / "corpus", n=4, seconds=1.0)


def _state_equal(a, b, path="") -> int:
    """Asserts two checkpoint trees are equal, tensors bit for bit; returns the tensors compared."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
        return 1
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), path
        return sum(_state_equal(a[k], b[k], f"{path}/{k}") for k in a)
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        return sum(_state_equal(x, y, path) for x, y in zip(a, b))
    assert a == b, (path, a, b)
    return 0


# -- discriminators and losses ----------------------------------------------------------------------


def test_discriminator_outputs_and_feature_maps_have_dle_shapes():
    from tts.train.hifigan_gan import MultiPeriodDiscriminator, MultiScaleDiscriminator
    torch.manual_seed(0)
    y = torch.randn(3, 1, 4096) * 0.1
    mpd, msd = MultiPeriodDiscriminator(width_div=8), MultiScaleDiscriminator(width_div=8)
    outs, fmaps = mpd(y)
    assert len(outs) == len(fmaps) == 5
    for p, o, maps in zip((2, 3, 5, 7, 11), outs, fmaps):
        t = -(-4096 // p)                                     # padded up to a multiple of p
        lengths = [t]
        for _ in range(4):
            lengths.append((lengths[-1] + 2 * 2 - 5) // 3 + 1)
        assert [tuple(f.shape) for f in maps] == [(3 * p, c, n) for c, n in
                                                 zip((4, 16, 64, 128, 128, 1), lengths[1:] + lengths[-1:] * 2)]
        assert tuple(o.shape) == (3, p * lengths[-1])
    outs, fmaps = msd(y)
    assert len(outs) == len(fmaps) == 3 and all(len(m) == 8 for m in fmaps)
    assert [o.shape[0] for o in outs] == [3, 3, 3]
    assert [m[0].shape[-1] for m in fmaps] == [4096, 2048, 1024]   # AvgPool1d(4, 2, padding=1) halves
    assert [m[-1].shape[-1] for m in fmaps] == [64, 32, 16]        # total stride 64
    assert hasattr(msd.discriminators[0].convs[0], "weight_orig")  # spectral norm on the first only
    assert hasattr(msd.discriminators[1].convs[0], "weight_g")


def test_period_discriminator_equals_dle_2d_convolutions():
    """Columns folded into the batch with 1-D convolutions = DLE's ``(k, 1)`` 2-D convolutions."""
    from tts.models.hifigan import LRELU_SLOPE
    from tts.train.hifigan_gan import DiscriminatorP
    torch.manual_seed(1)
    d = DiscriminatorP(5, width_div=8)
    y = torch.randn(2, 1, 1003)
    out, fmap = d(y)
    x = F.pad(y, (0, 5 - 1003 % 5), "reflect").view(2, 1, -1, 5)
    ref = []
    for conv in [*d.convs, d.conv_post]:
        x = F.conv2d(x, conv.weight.unsqueeze(-1), conv.bias, (conv.stride, 1), (conv.padding, 0))
        if conv is not d.conv_post:
            x = F.leaky_relu(x, LRELU_SLOPE)
        ref.append(x)
    for f, r in zip(fmap, ref):   # [B*p, C, T'] against [B, C, T', p]
        torch.testing.assert_close(f, r.permute(0, 3, 1, 2).reshape(f.shape))
    # DLE flattens [B, 1, T', p] time-major; ours is period-major: the same scores, reordered
    torch.testing.assert_close(out, ref[-1].permute(0, 3, 1, 2).reshape(2, -1))


def test_spectral_norm_matches_torch_and_normalises_the_largest_singular_value():
    from tts.train.hifigan_gan import NormConv1d
    torch.manual_seed(2)
    ours = NormConv1d(8, 16, 5, 2, 2, groups=4, norm="spectral")
    ref = torch.nn.utils.spectral_norm(torch.nn.Conv1d(8, 16, 5, 2, 2, groups=4))
    with torch.no_grad():
        ref.weight_orig.copy_(ours.weight_orig)
        ref.bias.copy_(ours.bias)
        ref.weight_u.copy_(ours.weight_u)
        ref.weight_v.copy_(ours.weight_v)
    x = torch.randn(2, 8, 50)
    for _ in range(3):                      # each training-mode forward takes one power iteration
        torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(ours.weight_u, ref.weight_u)
    assert sorted(k for k in ours.state_dict()) == ["bias", "weight_orig", "weight_u", "weight_v"]
    for _ in range(50):
        ours(x)
    ours.eval()
    sigma = torch.linalg.matrix_norm(ours.weight.detach().flatten(1), ord=2)
    assert float(sigma) == pytest.approx(1.0, abs=1e-3)


def test_gan_losses_are_dle_least_squares_and_feature_matching():
    from tts.train.hifigan_gan import discriminator_loss, feature_loss, generator_loss
    real, fake = torch.tensor([[0.5, 1.5]]), torch.tensor([[0.25, -0.5]])
    outs = [torch.cat([real, fake])] * 2
    d = ((1 - real) ** 2).mean() + (fake ** 2).mean()
    assert float(discriminator_loss(outs)) == pytest.approx(2 * float(d))
    assert float(generator_loss(outs)) == pytest.approx(2 * float(((1 - fake) ** 2).mean()))
    fr, fg = torch.randn(6, 3, 4), torch.randn(6, 3, 4)      # a period-3 map of 2 items per half
    assert float(feature_loss([[torch.cat([fr, fg])]])) == pytest.approx(float((fr - fg).abs().mean()))


# -- training -------------------------------------------------------------------------------------


def test_a_few_steps_lower_the_loss(tones, tmp_path):
    torch.set_num_threads(2)
    r = train("hifigan", tones, tmp_path, max_steps=12, log_every=1, settings=SETTINGS, model_config=GEN)
    rows = read_log(tmp_path / "hifigan_log.csv")
    assert [x["step"] for x in rows] == list(range(1, 13)) and r.step == 12
    assert set(rows[0]) == {"step", "seconds", "loss", "mel", "gen", "fm", "disc"}
    for key in ("loss", "mel", "disc"):
        assert np.mean([x[key] for x in rows[-3:]]) < np.mean([x[key] for x in rows[:3]]), key


def test_resume_is_bit_identical_to_an_uninterrupted_run(tones, tmp_path):
    """Weights, spectral-norm vectors, both AdamW states and the logged losses: 3 + 3 steps are
    the 6 uninterrupted steps, bit for bit (learning-rate decay and generator warm-up included)."""
    torch.set_num_threads(2)
    kw = dict(log_every=1, model_config=GEN,
              settings=dict(SETTINGS, lr_decay=0.5, lr_decay_every=3, warmup=2))
    train("hifigan", tones, tmp_path / "a", max_steps=6, **kw)
    train("hifigan", tones, tmp_path / "b", steps=3, **kw)
    r = train("hifigan", tones, tmp_path / "b", steps=3, **kw)
    assert (r.start_step, r.step) == (3, 6)
    a, b = (torch.load(tmp_path / d / "hifigan_last.pt", weights_only=True) for d in "ab")
    assert set(a) == {"generator", "gen_ema", "config", "train_state", "mpd", "msd", "optim_g",
                      "optim_d", "train"}
    n = _state_equal({k: v for k, v in a.items() if k != "train"}, {k: v for k, v in b.items() if k != "train"})
    assert n > 500
    assert a["train"]["numpy_rng"] == b["train"]["numpy_rng"] and a["train_state"] == {"iters_all": 6}
    la, lb = (read_log(tmp_path / d / "hifigan_log.csv") for d in "ab")
    assert [{k: v for k, v in x.items() if k != "seconds"} for x in la] == \
        [{k: v for k, v in x.items() if k != "seconds"} for x in lb]
    lr = 1e-3 * 0.5 ** (5 / 3)             # the rate of the last step (step index 5)
    assert a["optim_g"]["param_groups"][0]["lr"] == pytest.approx(lr)
    assert a["optim_d"]["param_groups"][0]["lr"] == pytest.approx(lr)


def test_d_warmup_steps_leave_the_generator_alone(tones, tmp_path):
    torch.set_num_threads(2)
    kw = dict(log_every=1, model_config=GEN, settings=dict(SETTINGS, d_warmup=2))
    train("hifigan", tones, tmp_path, max_steps=0, **kw)
    g0 = torch.load(tmp_path / "hifigan_last.pt", weights_only=True)
    train("hifigan", tones, tmp_path, max_steps=2, **kw)
    g2 = torch.load(tmp_path / "hifigan_last.pt", weights_only=True)
    _state_equal(g0["generator"], g2["generator"])
    assert not torch.equal(g0["mpd"]["discriminators.0.conv_post.bias"], g2["mpd"]["discriminators.0.conv_post.bias"])
    train("hifigan", tones, tmp_path, max_steps=3, **kw)
    g3 = torch.load(tmp_path / "hifigan_last.pt", weights_only=True)
    assert not torch.equal(g2["generator"]["conv_post.bias"], g3["generator"]["conv_post.bias"])


def test_export_loads_through_load_hifigan_and_a_voice_speaks(tones, tmp_path):
    from tts.checkpoints import detect_kind, load_hifigan
    from tts.models.hifigan import HiFiGANConfig
    from tts.quality import voice_speaker
    from tts.train.export import export_acoustic, export_voices
    from tts.voice import Voice
    torch.set_num_threads(2)
    ck = tmp_path / "ck"
    train("hifigan", tones, ck, max_steps=2, settings=SETTINGS, model_config=GEN)
    # the training checkpoint itself is a DLE generator file to the loaders
    assert detect_kind(ck / "hifigan_last.pt") == "hifigan"
    full = load_hifigan(ck / "hifigan_last.pt")
    r = export_acoustic("hifigan", ck, tmp_path / "x")
    assert r["step"] == 2
    f = tmp_path / "x" / "hifigan.pt"
    ckpt = torch.load(f, weights_only=True)
    assert set(ckpt) == {"generator", "config", "train_state"} and ckpt["train_state"]["iters_all"] == 2
    assert all(v.dtype == torch.float16 for v in ckpt["generator"].values())
    assert not any(k.endswith("weight_g") for k in ckpt["generator"])      # weight norm folded
    gen = load_hifigan(f)
    assert gen.config == HiFiGANConfig.from_dict(dict(TASK_CFG(), **GEN))
    mel = torch.from_numpy(Corpus(tones)[0].mel[:40].T.astype(np.float32))[None]
    with torch.no_grad():
        torch.testing.assert_close(gen.infer(mel), full.infer(mel), atol=2e-3, rtol=0)
        assert gen.infer(mel).shape == (1, 40 * 256)
    # a hibari corpus's voices: FastSpeech + this HiFi-GAN in one folder (the default), Tacotron2 + it,
    # each with the hibari notice
    from tests.test_train import SETTINGS as OTHER, TINY
    for kind in ("fastspeech", "tacotron2"):
        train(kind, tones, ck, max_steps=1, settings=OTHER[kind], model_config=TINY[kind])
    res = export_voices(ck, tmp_path / "voices", name="tiny", teacher="hibari")
    assert res["voices"] == ["tiny", "tiny-tacotron2"] and res["steps"]["hifigan"] == 2
    assert sorted(res["sizes_mib"]) == ["tiny-tacotron2/tacotron2.pt", "tiny/fastspeech.pt", "tiny/hifigan.pt"]
    v = Voice.from_dir(tmp_path / "voices" / "tiny")
    assert v.vocoder_kind == "hifigan" and v.acoustic_kind == "fastspeech"
    assert v.defaults.denoiser_strength == 0
    for folder in ("tiny", "tiny-tacotron2"):
        assert "hibari" in (tmp_path / "voices" / folder / "NOTICE").read_text()
        assert "hibari" in json.loads((tmp_path / "voices" / folder / "voice.json").read_text())["about"]
    audio, rate = voice_speaker(v)("Go cat.")
    assert rate == 22050 and audio.size > 0 and np.isfinite(audio).all()
    t2 = Voice.from_dir(tmp_path / "voices" / "tiny-tacotron2")
    assert t2.vocoder_kind == "hifigan" and t2.sources["hifigan"].endswith("tiny/hifigan.pt")
    assert t2.defaults.prenet_dropout == 0.5
    assert sorted(p.name for p in (tmp_path / "voices" / "tiny-tacotron2").iterdir()) == \
        ["NOTICE", "tacotron2.pt", "voice.json"]
    # a Festival corpus's: the HiFi-GAN in a folder of its own, vocoding both, no hibari notice
    res = export_voices(ck, tmp_path / "fest", name="tiny")
    assert res["voices"] == ["tiny", "tiny-tacotron2", "tiny-hifigan", "tiny-tacotron2-hifigan"]
    assert not any((tmp_path / "fest").glob("*/NOTICE"))
    t2 = Voice.from_dir(tmp_path / "fest" / "tiny-tacotron2-hifigan")
    assert t2.sources["hifigan"].endswith("tiny-hifigan/hifigan.pt")
    assert sorted(p.name for p in (tmp_path / "fest" / "tiny-tacotron2-hifigan").iterdir()) == ["voice.json"]


def test_hibari_voices_without_a_hifigan_speak_through_griffin_lim(tmp_path):
    from tts.train.export import write_manifests
    from tts.voice import Voice
    (tmp_path / "v" / "x").mkdir(parents=True)
    (tmp_path / "v" / "x" / "fastspeech.pt").write_bytes(b"")
    assert write_manifests(tmp_path / "v", "x", "hibari") == [tmp_path / "v" / "x"]
    spec = json.loads((tmp_path / "v" / "x" / "voice.json").read_text())
    assert spec["vocoder"]["kind"] == "griffinlim" and "hibari" in spec["about"]
    (tmp_path / "v" / "x-tacotron2").mkdir()
    (tmp_path / "v" / "x-tacotron2" / "tacotron2.pt").write_bytes(b"")
    assert write_manifests(tmp_path / "v", "x", "hibari")[1] == tmp_path / "v" / "x-tacotron2"
    t2 = json.loads((tmp_path / "v" / "x-tacotron2" / "voice.json").read_text())
    # the Tacotron2's smoother mels are sharpened more than the FastSpeech's
    assert (spec["vocoder"]["power"], t2["vocoder"]["power"]) == (1.3, 1.5)
    assert {k: v for k, v in t2["vocoder"].items() if k != "power"} == \
        {k: v for k, v in spec["vocoder"].items() if k != "power"}
    assert t2["defaults"]["prenet_dropout"] == 0.5
    with pytest.raises(ValueError, match="teacher"):
        write_manifests(tmp_path / "v", "x", "piper")


def TASK_CFG() -> dict:
    from tts.train.tasks import MODEL_CONFIGS
    return dict(MODEL_CONFIGS["hifigan"])


def test_the_default_generator_is_v2_and_exports_under_2_mib(tones, tmp_path):
    from tts.train.export import export_acoustic
    r = train("hifigan", tones, tmp_path, max_steps=0, settings=dict(SETTINGS))
    assert r.step == 0
    cfg = torch.load(tmp_path / "hifigan_last.pt", weights_only=True)["config"]
    assert cfg["upsample_initial_channel"] == 128 and cfg["resblock_kernel_sizes"] == [3, 7, 11]
    assert cfg["upsample_rates"] == [8, 8, 2, 2] and cfg["resblock_dilation_sizes"] == [[1, 3, 5]] * 3
    r = export_acoustic("hifigan", tmp_path, tmp_path / "x")
    assert 1.5 < r["mib"] < 2.0


def test_init_from_an_exported_generator_continues_at_its_step(tones, tmp_path):
    """A cold machine: the exported fp16 generator (weight norm re-derived), its step and
    architecture; the discriminators start afresh."""
    from tts.checkpoints import load_hifigan
    from tts.train.export import export_acoustic
    torch.set_num_threads(2)
    train("hifigan", tones, tmp_path / "a", max_steps=3, settings=SETTINGS, model_config=GEN)
    export_acoustic("hifigan", tmp_path / "a", tmp_path / "x")
    f = tmp_path / "x" / "hifigan.pt"
    r = train("hifigan", tones, tmp_path / "b", steps=0, settings=SETTINGS, init_from=f)   # no --model-config
    assert (r.start_step, r.step) == (3, 3)
    ck = torch.load(tmp_path / "b" / "hifigan_last.pt", weights_only=True)
    assert ck["config"] == torch.load(f, weights_only=True)["config"]
    mel = torch.randn(1, 80, 12)
    from tts.models.hifigan import HiFiGAN
    g = HiFiGAN(ck["config"])
    g.load_state_dict(ck["generator"])
    g.remove_weight_norm()
    with torch.no_grad():
        torch.testing.assert_close(g.infer(mel), load_hifigan(f).infer(mel), atol=1e-5, rtol=0)
    r = train("hifigan", tones, tmp_path / "b", steps=2, settings=SETTINGS, init_from=f)
    assert (r.start_step, r.step) == (3, 5)


def test_hifigan_trains_on_fastspeech_gta_mels(tones, tmp_path):
    from tts.train.data import aligned_segments
    from tts.train.export import export_acoustic
    from tts.train.tasks import make_task
    from tests.test_train import SETTINGS as OTHER, TINY
    torch.set_num_threads(2)
    train("fastspeech", tones, tmp_path / "fs", max_steps=2, settings=OTHER["fastspeech"],
          model_config=TINY["fastspeech"])
    export_acoustic("fastspeech", tmp_path / "fs", tmp_path / "x")
    settings = dict(SETTINGS, gta=str(tmp_path / "x" / "fastspeech.pt"))
    task = make_task("hifigan", settings, GEN)
    c = Corpus(tones)
    pool = task.usable(c)
    task.prepare(c, pool, torch.device("cpu"))
    audio, mel = task.sample_batch(c, pool, np.random.default_rng(3))
    assert audio.shape == (2, 4096) and mel.shape == (2, 80, 16)
    rng = np.random.default_rng(3)
    idx = [pool[int(j)] for j in rng.integers(0, len(pool), size=2)]
    rng.random(2)
    a2, m2 = aligned_segments([c[i].audio for i in idx], [task._gta_mels[0][i] for i in idx], 4096, rng)
    assert torch.equal(audio, a2) and torch.equal(mel, m2[:, :, :16])
    assert not torch.equal(mel, aligned_segments([c[i].audio for i in idx], [c[i].mel for i in idx], 4096,
                                                 np.random.default_rng(0))[1][:, :, :16])
    r = train("hifigan", tones, tmp_path / "hg", max_steps=2, settings=settings, model_config=GEN)
    assert r.step == 2


def test_the_train_export_and_plot_commands(tones, tmp_path, capsys):
    from tts.train.__main__ import main
    torch.set_num_threads(2)
    ck = tmp_path / "ck"
    assert main(["train", "hifigan", "--corpus", str(tones), "--out", str(ck), "--steps", "2",
                 "--log-every", "1", "--settings", json.dumps(SETTINGS), "--model-config", json.dumps(GEN)]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 2
    assert main(["export", "--only", "hifigan", "--ckpt-dir", str(ck), "--out", str(tmp_path / "x")]) == 0
    assert (tmp_path / "x" / "hifigan.pt").is_file()
    # the hibari layout from the command line: this HiFi-GAN beside a FastSpeech in one folder
    voices = tmp_path / "voices"
    capsys.readouterr()
    assert main(["export", "--ckpt-dir", str(ck), "--out", str(voices), "--name", "h", "--teacher", "hibari"]) == 0
    assert json.loads(capsys.readouterr().out)["sizes_mib"].keys() == {"h/hifigan.pt"}
    shutil.copy(ROOT / "tts/voices/heart/fastspeech.pt", voices / "h" / "fastspeech.pt")
    assert main(["manifests", "--out", str(voices), "--name", "h", "--teacher", "hibari"]) == 0
    spec = json.loads((voices / "h" / "voice.json").read_text())
    assert spec["vocoder"] == {"kind": "hifigan", "checkpoint": "hifigan.pt"} and (voices / "h" / "NOTICE").is_file()
    with pytest.raises(SystemExit):
        main(["manifests", "--out", str(voices), "--teacher", "piper"])
    assert "invalid choice: 'piper'" in capsys.readouterr().err
    pytest.importorskip("matplotlib")
    assert main(["plot", "--ckpt-dir", str(ck), "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "hifigan_loss.png").is_file()
    assert main(["train", "hifigan", "--corpus", str(tones), "--out", str(ck), "--steps", "1",
                 "--settings", '{"segment_length": 1000}']) == 2
    assert "multiple of the hop" in capsys.readouterr().err


def test_learning_rates_decay_from_step_0_and_warm_the_generator_up_after_the_d_only_steps():
    from tts.train.tasks import make_task
    t = make_task("hifigan", dict(lr=1e-3, lr_decay=0.5, lr_decay_every=10, d_warmup=3, warmup=4))
    base = 1e-3 * 0.5 ** (100 / 10)
    assert t.learning_rates(100, warmup_from=100) == pytest.approx((0.0, base))        # D only
    assert t.learning_rates(103, 100)[0] == pytest.approx(1e-3 * 0.5 ** 10.3 / 4)       # 1st G step
    assert t.learning_rates(106, 100)[0] == pytest.approx(1e-3 * 0.5 ** 10.6)           # warmed up
    plain = make_task("hifigan", dict(lr=2e-4))
    assert plain.learning_rates(0, 0) == (2e-4, 2e-4)
    assert plain.learning_rates(1000, 0)[0] == pytest.approx(2e-4 * 0.999)
    with pytest.raises(ValueError, match="multiple of the hop"):
        make_task("hifigan", dict(segment_length=8000))
