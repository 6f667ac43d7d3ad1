"""FastSpeech: parity with DLE CUDA-Optimized FastSpeech, checkpoint loading, errors."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

from conftest import FIXTURES, load_npz
from tts.checkpoints import load_fastspeech as load_fastspeech_entry
from tts.checkpoints.fastspeech import base_config, infer_from_shapes, load_fastspeech
from tts.errors import CheckpointError, InvalidInputError
from tts.models.fastspeech import FastSpeech, FastSpeechConfig, hparams_model_keys

FS = FIXTURES / "fastspeech"
CKPT = FS / "checkpoint_005000.pt"
ATOL = 1e-4


@pytest.fixture(scope="module")
def model() -> FastSpeech:
    return load_fastspeech(CKPT, config=FS / "hparams.yaml")


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return load_npz("fastspeech/ref_fastspeech.npz")


@pytest.fixture(scope="module")
def fixture_kwargs() -> dict:
    return json.loads((FS / "hparams.json").read_text())["model_kwargs"]


def _ckpt_sd() -> dict[str, torch.Tensor]:
    return torch.load(CKPT, map_location="cpu", weights_only=True)


# -- parity -------------------------------------------------------------------


@pytest.mark.parametrize("alpha, tag", [(1.0, "1p0"), (1.3, "1p3")])
def test_batch_parity(model, ref, alpha, tag):
    seq, pos = torch.from_numpy(ref["seq"]), torch.from_numpy(ref["pos"])
    out = model.infer(seq, pos, alpha=alpha)
    np.testing.assert_allclose(out.encoder_outputs.numpy(), ref["encoder_outputs"], atol=1e-5)
    np.testing.assert_allclose(out.duration.numpy(), ref[f"duration_alpha{tag}"], atol=ATOL)
    np.testing.assert_array_equal(out.repeats.numpy(), ref[f"repeats_alpha{tag}"])
    np.testing.assert_array_equal(out.mel_lengths.numpy(), ref[f"mel_lengths_alpha{tag}"])
    np.testing.assert_array_equal(out.mel_mask.numpy(), ref[f"mel_mask_alpha{tag}"])
    assert out.mel.shape == ref[f"mel_alpha{tag}"].shape
    np.testing.assert_allclose(out.mel.numpy(), ref[f"mel_alpha{tag}"], atol=ATOL)
    assert out.mel_lengths.dtype == torch.int64 and out.repeats.dtype == torch.int64
    assert out.mel_mask.dtype == torch.bool and not out.truncated.any()
    # padded frames are mel_linear's bias, as DLE returns them
    pad = ~out.mel_mask
    np.testing.assert_allclose(out.mel[pad].numpy(),
                               model.mel_linear.bias.detach().expand(int(pad.sum()), -1).numpy(), atol=1e-6)
    # pos computed from seq gives the same
    again = model.infer(seq, alpha=alpha)
    assert torch.equal(again.mel, out.mel) and torch.equal(again.repeats, out.repeats)


def test_e2e_sentences(model):
    e2e = load_npz("e2e/ref_e2e_fastspeech.npz")
    for i in range(len(e2e["text_index"])):
        out = model(torch.from_numpy(e2e[f"ids_{i}"])[None])
        np.testing.assert_allclose(out.duration.numpy(), e2e[f"duration_{i}"], atol=ATOL)
        np.testing.assert_array_equal(out.repeats.numpy(), e2e[f"repeats_{i}"])
        np.testing.assert_array_equal(out.mel_lengths.numpy(), e2e[f"mel_len_{i}"])
        np.testing.assert_allclose(out.mel.transpose(1, 2).numpy(), e2e[f"mel_{i}"], atol=ATOL)


def test_pieces_compose_to_infer(model, ref):
    seq = torch.from_numpy(ref["seq"])
    full = model.infer(seq, alpha=1.3)
    with torch.no_grad():
        enc, mask = model.encode(seq)
        dur = model.predict_durations(enc, mask)
        rep = model.durations_to_repeats(dur, 1.3)
        expanded, mel_pos = model.regulate(enc, rep, int(rep.sum(1).max()))
        mel = model.decode(expanded, mel_pos)
    assert torch.equal(mask, seq.ne(0))
    assert torch.equal(rep, full.repeats) and torch.equal(mel, full.mel)
    assert torch.equal(mel_pos.ne(0), full.mel_mask)


def test_amount_of_padding_does_not_matter(model, ref):
    """DLE leaks padding into the last real position, but one pad position leaks as much as many
    (kernel 3): a length bucket larger than the batch's longest item changes nothing."""
    seq = torch.from_numpy(ref["seq"])
    base = model.infer(seq)
    wider = model.infer(torch.nn.functional.pad(seq, (0, 17)))
    n = seq.shape[1]
    # item 0 fills the batch: unpadded in `base`, padded in `wider`, so it differs (DLE's leak)
    assert (wider.duration[0, :n] - base.duration[0]).abs().max() > 1e-3
    # items 1 and 2 are padded in both runs: identical
    torch.testing.assert_close(wider.duration[1:, :n], base.duration[1:], atol=1e-5, rtol=0)
    assert torch.equal(wider.repeats[1:, :n], base.repeats[1:])
    # items 1 and 2 are padded in both runs: their mels are unchanged by a longer mel bucket too
    with torch.no_grad():
        enc, _ = model.encode(seq)
        t = int(base.repeats.sum(1).max())
        mel_wide = model.decode(*model.regulate(enc, base.repeats, t + 9))
    torch.testing.assert_close(mel_wide[1:, :t], base.mel[1:], atol=1e-5, rtol=0)


def test_regulate_matches_repeat_interleave():
    g = torch.Generator().manual_seed(0)
    enc = torch.randn(4, 7, 5, generator=g)
    rep = torch.randint(0, 4, (4, 7), generator=g)
    rep[2] = 0  # an item with no frames
    rep[1, :3] = 0  # leading symbols with no frames
    expected = pad_sequence([torch.repeat_interleave(enc[i], rep[i], dim=0) for i in range(4)],
                            batch_first=True)
    exp_pos = pad_sequence([torch.arange(1, int(rep[i].sum()) + 1) for i in range(4)], batch_first=True)
    got, pos = FastSpeech.regulate(enc, rep)
    assert torch.equal(got, expected) and torch.equal(pos, exp_pos)
    longer, lpos = FastSpeech.regulate(enc, rep, expected.shape[1] + 3)
    assert torch.equal(longer[:, :expected.shape[1]], expected) and not longer[:, expected.shape[1]:].any()
    assert not lpos[:, expected.shape[1]:].any()
    cut, cpos = FastSpeech.regulate(enc, rep, 5)
    assert torch.equal(cut, expected[:, :5]) and torch.equal(cpos, exp_pos[:, :5])


# -- loading ------------------------------------------------------------------


def test_config_sources_agree(fixture_kwargs, model, ref):
    from_yaml = FastSpeechConfig.from_hparams_yaml(FS / "hparams.yaml")
    from_json = FastSpeechConfig.from_dict(fixture_kwargs)
    assert from_yaml == from_json == model.config
    seq = torch.from_numpy(ref["seq"])
    expected = model.infer(seq).mel
    for cfg in (FS / "hparams.yaml", str(FS / "hparams.yaml"), fixture_kwargs, from_json, None):
        m = load_fastspeech(CKPT, config=cfg)
        assert m.config == from_json, cfg
        assert not m.training and all(p.dtype == torch.float32 for p in m.parameters())
        assert torch.equal(m.infer(seq).mel, expected)
    # the package-level entry point too
    assert load_fastspeech_entry(CKPT).config == from_json


def test_shape_inference_overrides_config(caplog):
    # base.yaml (d_model 384, 6 layers, 80 mels, 2048) vs the fixture (64, 2, 40, 400)
    with caplog.at_level(logging.WARNING, logger="tts.checkpoints.fastspeech"):
        m = load_fastspeech(CKPT, config=dataclasses.asdict(FastSpeechConfig()))
    assert m.config.d_model == 64 and m.config.n_mels == 40 and m.config.max_seq_len == 400
    assert m.config.phoneme_side_head == 2 and m.config.mel_side_n_layer == 2
    assert "d_model 384 -> 64" in caplog.text and str(CKPT) in caplog.text
    sd = {k.removeprefix("module."): v for k, v in _ckpt_sd()["model"].items()}
    inferred = infer_from_shapes(sd, CKPT)
    not_from_shapes = {"dropout", "fused_layernorm", "num_mels"}
    assert set(inferred) == set(hparams_model_keys()) - not_from_shapes | {"n_mels"}


def test_base_config_is_dle_base_yaml():
    cfg = base_config()
    assert cfg == FastSpeechConfig()
    assert (cfg.d_model, cfg.phoneme_side_n_layer, cfg.max_seq_len, cfg.n_mels,
            cfg.duration_predictor_filter_size) == (384, 6, 2048, 80, 256)


def _randomized(cfg: FastSpeechConfig, seed: int) -> FastSpeech:
    torch.manual_seed(seed)
    m = FastSpeech(cfg)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "position" in name:
                continue
            p.normal_(0.0, 0.15 if p.dim() > 1 else 0.1)
            if "layer_norm" in name and name.endswith("weight"):
                p.add_(1.0)
        m.length_regulator.duration_predictor.linear_layer.bias.fill_(1.2)
    return m.eval()


def test_random_config_roundtrip(tmp_path):
    cfg = FastSpeechConfig(max_seq_len=120, d_model=48, phoneme_side_n_layer=1, phoneme_side_head=3,
                           phoneme_side_conv1d_filter_size=80, phoneme_side_output_size=48,
                           mel_side_n_layer=3, mel_side_head=1, mel_side_conv1d_filter_size=96,
                           mel_side_output_size=48, fft_conv1d_kernel=5, fft_conv1d_padding=2,
                           duration_predictor_filter_size=32, duration_predictor_kernel_size=3,
                           dropout=0.1, n_mels=24, n_phns=149)
    m = _randomized(cfg, 7)
    path = tmp_path / "checkpoint_000123.pt"
    torch.save({"step": 123, "model": {f"module.{k}": v for k, v in m.state_dict().items()},
                "optim": {"state": {}, "param_groups": []}}, path)
    loaded = load_fastspeech(path)  # no config: all from shapes, rest from base.yaml
    assert loaded.config == cfg
    seq = torch.randint(1, 149, (2, 11), generator=torch.Generator().manual_seed(3))
    seq[1, 8:] = 0
    a, b = m.infer(seq, alpha=0.9), loaded.infer(seq, alpha=0.9)
    assert torch.equal(a.mel, b.mel) and torch.equal(a.repeats, b.repeats)
    assert a.mel.shape[-1] == 24 and a.encoder_outputs.shape == (2, 11, 48)
    assert cfg.compute_hash() == loaded.config.compute_hash() != FastSpeechConfig().compute_hash()
    assert dataclasses.replace(cfg, dropout=0.3).compute_hash() == cfg.compute_hash()


def test_yaml_parent_and_aliases(tmp_path, fixture_kwargs):
    base = (FS / "hparams.yaml").read_text()
    (tmp_path / "base.yaml").write_text(base)
    (tmp_path / "infer.yaml").write_text('parent_yaml: "base.yaml"\nbatch_size: 1\nd_model: 64\n')
    cfg = FastSpeechConfig.from_hparams_yaml(tmp_path / "infer.yaml")
    assert cfg == FastSpeechConfig.from_dict(fixture_kwargs)
    assert FastSpeechConfig.from_dict({"num_mels": 40}).n_mels == 40


# -- errors -------------------------------------------------------------------


def _save_variant(tmp_path, edit) -> str:
    ckpt = _ckpt_sd()
    edit(ckpt["model"])
    path = tmp_path / "variant.pt"
    torch.save(ckpt, path)
    return str(path)


def _raises_naming(path, match, fn, *args, **kwargs):
    with pytest.raises(CheckpointError, match=match) as info:
        fn(*args, **kwargs)
    assert str(path) in str(info.value) and info.value.path == str(path)
    return info.value


def test_wrong_kind():
    wg = FIXTURES / "waveglow" / "checkpoint_WaveGlow_ngc_style_ddp.pt"
    _raises_naming(wg, "WaveGlow checkpoint, not a FastSpeech", load_fastspeech, wg)


def test_missing_and_corrupt(tmp_path):
    missing = tmp_path / "nope.pt"
    _raises_naming(missing, "not found", load_fastspeech, missing)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(CKPT.read_bytes()[:5000])
    _raises_naming(corrupt, "corrupt|not a", load_fastspeech, corrupt)
    nomodel = tmp_path / "nomodel.pt"
    torch.save({"step": 1, "optim": {}}, nomodel)
    _raises_naming(nomodel, "no model weights", load_fastspeech, nomodel)


def test_key_removed(tmp_path):
    path = _save_variant(tmp_path, lambda sd: sd.pop("module.mel_side.layer_stack.1.pos_ffn.w_2.bias"))
    _raises_naming(path, r"missing keys \[mel_side.layer_stack.1.pos_ffn.w_2.bias\]", load_fastspeech, path)


def test_shape_mismatch(tmp_path):
    def edit(sd):
        sd["module.phoneme_side.layer_stack.1.slf_attn.fc.weight"] = torch.zeros(64, 129)
    path = _save_variant(tmp_path, edit)
    _raises_naming(path, "shape mismatch for phoneme_side.layer_stack.1.slf_attn.fc.weight",
                   load_fastspeech, path)

    def heads(sd):
        sd["module.mel_side.layer_stack.0.slf_attn.linear.weight"] = torch.zeros(200, 64)
    path = _save_variant(tmp_path, heads)
    _raises_naming(path, "multiple of 3", load_fastspeech, path)

    def tables(sd):
        sd["module.mel_side.position.weight"] = torch.zeros(301, 64)
    path = _save_variant(tmp_path, tables)
    _raises_naming(path, "position tables disagree", load_fastspeech, path)


@pytest.mark.parametrize("text, match", [
    ("d_model: [unclosed\n", "not a valid YAML"),
    ("- 1\n- 2\n", "mapping"),
    ("", "empty"),
    ("d_model: 64\n", r"lack the FastSpeech model keys \[.*max_seq_len"),
])
def test_bad_yaml(tmp_path, text, match):
    path = tmp_path / "hp.yaml"
    path.write_text(text)
    _raises_naming(path, match, FastSpeechConfig.from_hparams_yaml, path)
    with pytest.raises(CheckpointError, match=match):
        load_fastspeech(CKPT, config=path)


def test_bad_yaml_value_and_path(tmp_path):
    good = (FS / "hparams.yaml").read_text()
    path = tmp_path / "hp.yaml"
    path.write_text(good.replace("d_model: 64", "d_model: sixty-four"))
    _raises_naming(path, "d_model must be a positive integer", FastSpeechConfig.from_hparams_yaml, path)
    missing = tmp_path / "missing.yaml"
    _raises_naming(missing, "hparams file not found", load_fastspeech, CKPT, config=missing)
    loop = tmp_path / "loop.yaml"
    loop.write_text('parent_yaml: "loop.yaml"\n')
    _raises_naming(loop, "loops", FastSpeechConfig.from_hparams_yaml, loop)


def test_config_validation():
    with pytest.raises(InvalidInputError, match="unknown FastSpeech config key") as info:
        FastSpeechConfig.from_dict({"d_modle": 64})
    assert info.value.field == "d_modle"
    with pytest.raises(InvalidInputError) as info:
        FastSpeechConfig(d_model=0)
    assert info.value.field == "d_model"
    with pytest.raises(InvalidInputError, match="must equal d_model"):
        FastSpeechConfig(d_model=64)
    with pytest.raises(InvalidInputError, match="fft_conv1d_padding"):
        FastSpeechConfig(fft_conv1d_kernel=5)
    with pytest.raises(InvalidInputError, match="dropout"):
        FastSpeechConfig(dropout=1.5)
    with pytest.raises(CheckpointError, match="bad FastSpeech config"):
        load_fastspeech(CKPT, config={"d_model": "x"})
    with pytest.raises(TypeError):
        load_fastspeech(CKPT, config=42)


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf"), "fast", True])
def test_bad_alpha(model, alpha):
    with pytest.raises(InvalidInputError) as info:
        model.infer(torch.tensor([[12, 13, 14]]), alpha=alpha)
    assert info.value.field == "alpha"


def test_bad_input(model):
    for seq in (torch.tensor([[1, 149]]), torch.tensor([[-1, 3]]), torch.tensor([[1.0, 2.0]]),
                torch.tensor([1, 2, 3]), torch.zeros(1, 0, dtype=torch.long)):
        with pytest.raises(InvalidInputError) as info:
            model.infer(seq)
        assert info.value.field == "text"
    with pytest.raises(InvalidInputError, match="too long: 401 symbols") as info:
        model.infer(torch.full((1, 401), 12))
    with pytest.raises(InvalidInputError) as info:
        model.infer(torch.tensor([[1, 2]]), torch.tensor([[1]]))
    assert info.value.field == "pos"


def test_overflow_is_reported(model, ref, caplog):
    seq = torch.from_numpy(ref["seq"])
    with caplog.at_level(logging.WARNING, logger="tts.models.fastspeech"):
        out = model.infer(seq, alpha=2.5)
    needed = out.repeats.sum(1)
    assert needed[0] > 400 and needed[2] < 400
    assert out.truncated.tolist() == (needed > 400).tolist()
    assert out.mel.shape[1] == 400
    assert out.mel_lengths.tolist() == torch.clamp(needed, max=400).tolist()
    assert "cut to max_seq_len=400" in caplog.text
    with pytest.raises(InvalidInputError, match="text too long") as info:
        model.infer(seq, alpha=2.5, allow_truncation=False)
    assert info.value.field == "text"


def test_zero_length_output():
    m = _randomized(FastSpeechConfig(max_seq_len=50, d_model=32, phoneme_side_n_layer=1,
                                     phoneme_side_conv1d_filter_size=16, phoneme_side_output_size=32,
                                     mel_side_n_layer=1, mel_side_conv1d_filter_size=16,
                                     mel_side_output_size=32, duration_predictor_filter_size=8,
                                     n_mels=10), 1)
    with torch.no_grad():
        m.length_regulator.duration_predictor.linear_layer.bias.fill_(-50.0)
    out = m.infer(torch.tensor([[12, 13], [14, 0]]))
    assert out.mel.shape == (2, 0, 10) and out.mel_lengths.tolist() == [0, 0]
    assert not out.truncated.any() and out.mel_mask.shape == (2, 0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_other_dtypes(ref, dtype):
    m = load_fastspeech(CKPT).to(dtype)
    out = m.infer(torch.from_numpy(ref["seq"]))
    assert out.mel.dtype == dtype and out.encoder_outputs.dtype == dtype
    assert out.duration.dtype == torch.float32 and torch.isfinite(out.mel).all()
    if dtype == torch.float64:
        np.testing.assert_array_equal(out.repeats.numpy(), ref["repeats_alpha1p0"])
        np.testing.assert_allclose(out.mel.numpy(), ref["mel_alpha1p0"], atol=ATOL)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda(ref, dtype, monkeypatch):
    # cuDNN convolutions default to TF32 (durations then differ by ~5e-3): off for fp32 parity
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    m = load_fastspeech(CKPT).to("cuda", dtype)
    out = m.infer(torch.from_numpy(ref["seq"]).cuda())
    assert out.mel.device.type == "cuda" and out.mel.dtype == dtype
    np.testing.assert_allclose(out.duration.cpu().numpy(), ref["duration_alpha1p0"],
                               atol=ATOL if dtype == torch.float32 else 0.1)
    if dtype == torch.float32:
        np.testing.assert_array_equal(out.repeats.cpu().numpy(), ref["repeats_alpha1p0"])
        np.testing.assert_allclose(out.mel.cpu().numpy(), ref["mel_alpha1p0"], atol=1e-3)
    else:
        assert torch.isfinite(out.mel).all()
        assert (out.mel_lengths.cpu() - torch.from_numpy(ref["mel_lengths_alpha1p0"])).abs().max() <= 3
