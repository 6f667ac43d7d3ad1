"""Tacotron2 model and checkpoint loader: parity with the DLE reference fixtures,
all checkpoint layouts, config inference, error cases, the step-level decoder API."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from conftest import FIXTURES, load_npz
from tts.checkpoints.tacotron2 import infer_config_from_state_dict, load_tacotron2
from tts.errors import CheckpointError
from tts.models.tacotron2 import DecoderState, Tacotron2, Tacotron2Config

T2 = FIXTURES / "tacotron2"
CURRENT = T2 / "checkpoint_Tacotron2_current_1gpu.pt"
NGC = T2 / "checkpoint_Tacotron2_ngc_style_ddp.pt"
LEGACY_FP16 = T2 / "checkpoint_Tacotron2_legacy_fp16.pt"
WAVEGLOW = FIXTURES / "waveglow" / "checkpoint_WaveGlow_ngc_style_ddp.pt"

ATOL = 1e-3          # mel, gate, alignments (README "Determinism and tolerances")
ATOL_ENCODER = 1e-5  # encoder outputs


@pytest.fixture(scope="module")
def model() -> Tacotron2:
    return load_tacotron2(CURRENT)


@pytest.fixture(scope="module")
def ckpt() -> dict:
    return torch.load(CURRENT, map_location="cpu", weights_only=True)


def _inputs(ref: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(ref["input_ids"]), torch.from_numpy(ref["input_lengths"])


def _close(actual: torch.Tensor, expected: np.ndarray, atol: float, what: str) -> None:
    a = actual.detach().numpy()
    assert a.shape == expected.shape, f"{what}: shape {a.shape} != {expected.shape}"
    err = float(np.abs(a - expected).max())
    assert err <= atol, f"{what}: max abs error {err:.3g} > {atol}"


# --------------------------------------------------------------------------- parity

@pytest.mark.parametrize("case, early_stopping", [
    ("ref_single", True), ("ref_batch3", True), ("ref_batch3_no_early_stopping", False)])
def test_parity_with_dle_reference(model, case, early_stopping):
    ref = load_npz(f"tacotron2/{case}.npz")
    ids, lengths = _inputs(ref)
    out = model.infer(ids, lengths, prenet_dropout=0.0, early_stopping=early_stopping)
    _close(out.encoder_outputs, ref["encoder_outputs"], ATOL_ENCODER, "encoder_outputs")
    _close(out.mel, ref["mel_outputs"], ATOL, "mel")
    _close(out.mel_postnet, ref["mel_outputs_postnet"], ATOL, "mel_postnet")
    _close(out.gate, ref["gate_outputs"], ATOL, "gate")
    _close(out.alignments, ref["alignments"], ATOL, "alignments")
    assert out.mel_lengths.dtype == torch.int32
    np.testing.assert_array_equal(out.mel_lengths.numpy(), ref["mel_lengths"])


def test_config_no_early_stopping_is_the_default_for_such_a_model(ckpt):
    cfg = dataclasses.replace(Tacotron2Config.from_dict(ckpt["config"]), decoder_no_early_stopping=True)
    m = load_tacotron2(CURRENT, config=cfg)
    ref = load_npz("tacotron2/ref_batch3_no_early_stopping.npz")
    out = m.infer(*_inputs(ref), prenet_dropout=0.0)
    _close(out.mel_postnet, ref["mel_outputs_postnet"], ATOL, "mel_postnet")
    np.testing.assert_array_equal(out.mel_lengths.numpy(), ref["mel_lengths"])


def test_unsorted_batch_gives_the_sorted_results(model):
    ref = load_npz("tacotron2/ref_batch3.npz")
    ids, lengths = _inputs(ref)
    perm = torch.tensor([2, 0, 1])
    out = model.infer(ids[perm], lengths[perm], prenet_dropout=0.0)
    _close(out.mel_postnet, ref["mel_outputs_postnet"][perm.numpy()], ATOL, "mel_postnet")
    _close(out.encoder_outputs, ref["encoder_outputs"][perm.numpy()], ATOL_ENCODER, "encoder_outputs")
    np.testing.assert_array_equal(out.mel_lengths.numpy(), ref["mel_lengths"][perm.numpy()])


def test_e2e_sentences(model):
    ref = load_npz("e2e/ref_e2e.npz")
    for i in range(len(ref["text_index"])):
        ids = torch.from_numpy(ref[f"ids_{i}"]).unsqueeze(0)
        out = model.infer(ids, torch.tensor([ids.size(1)]), prenet_dropout=0.0)
        _close(out.mel_postnet, ref[f"mel_{i}"], ATOL, f"sentence {i} mel")
        _close(out.gate, ref[f"gate_{i}"], ATOL, f"sentence {i} gate")
        np.testing.assert_array_equal(out.mel_lengths.numpy(), ref[f"mel_len_{i}"])


# --------------------------------------------------------------------------- layouts

def test_all_layouts_load(model):
    ref = load_npz("tacotron2/ref_batch3.npz")
    ids, lengths = _inputs(ref)
    ngc = load_tacotron2(NGC)
    fp16 = load_tacotron2(LEGACY_FP16)
    for m in (model, ngc, fp16):
        assert not m.training
        assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in m.parameters())
        assert m.config == model.config

    sd, sd_ngc, sd_fp16 = model.state_dict(), ngc.state_dict(), fp16.state_dict()
    for k, v in sd.items():
        assert torch.equal(sd_ngc[k], v), k
        expected = v.half().float() if v.is_floating_point() else v
        assert torch.equal(sd_fp16[k], expected), f"{k}: fp16 weights are not the fp32 ones rounded to fp16"

    out = model.infer(ids, lengths, prenet_dropout=0.0)
    out_ngc = ngc.infer(ids, lengths, prenet_dropout=0.0)
    for name in ("mel", "mel_postnet", "gate", "alignments", "encoder_outputs", "mel_lengths"):
        assert torch.equal(getattr(out, name), getattr(out_ngc, name)), name

    out_fp16 = fp16.infer(ids, lengths, prenet_dropout=0.0)
    assert torch.equal(out_fp16.mel_lengths, out.mel_lengths)
    assert (out_fp16.mel_postnet - out.mel_postnet).abs().max() < 0.05
    assert (out_fp16.gate - out.gate).abs().max() < 0.05


# --------------------------------------------------------------------------- config

def test_config_inferred_from_shapes(ckpt, tmp_path, model):
    stored = Tacotron2Config.from_dict(ckpt["config"])
    no_cfg = {k: v for k, v in ckpt.items() if k != "config"}
    path = tmp_path / "no_config.pt"
    torch.save(no_cfg, path)
    m = load_tacotron2(path)
    for name in Tacotron2Config.SHAPE_FIELDS:
        assert getattr(m.config, name) == getattr(stored, name), name
    assert m.config.max_decoder_steps == 2000 and m.config.gate_threshold == 0.5
    assert infer_config_from_state_dict(ckpt["state_dict"]) == m.config
    # same weights, same outputs once the inference settings agree
    ref = load_npz("tacotron2/ref_single.npz")
    out = m.infer(*_inputs(ref), prenet_dropout=0.0, max_decoder_steps=stored.max_decoder_steps)
    _close(out.mel_postnet, ref["mel_outputs_postnet"], ATOL, "mel_postnet")


def test_config_argument_overrides_fields():
    m = load_tacotron2(CURRENT, config={"max_decoder_steps": 12, "gate_threshold": 0.6})
    assert m.config.max_decoder_steps == 12 and m.config.gate_threshold == 0.6
    assert m.config.n_mel_channels == 40


def test_small_random_model_roundtrip_by_shape_inference(tmp_path):
    cfg = Tacotron2Config(
        n_mel_channels=8, n_symbols=20, symbols_embedding_dim=16, encoder_kernel_size=3,
        encoder_n_convolutions=2, encoder_embedding_dim=16, attention_rnn_dim=24, attention_dim=8,
        attention_location_n_filters=4, attention_location_kernel_size=7, n_frames_per_step=2,
        decoder_rnn_dim=20, prenet_dim=12, max_decoder_steps=9, postnet_embedding_dim=10,
        postnet_kernel_size=3, postnet_n_convolutions=3)
    torch.manual_seed(0)
    m = Tacotron2(cfg).eval()
    path = tmp_path / "small.pt"
    torch.save(m.state_dict(), path)
    loaded = load_tacotron2(path)
    for name in Tacotron2Config.SHAPE_FIELDS:
        assert getattr(loaded.config, name) == getattr(cfg, name), name
    ids = torch.tensor([[3, 5, 7, 9, 11], [2, 4, 6, 0, 0]])
    lengths = torch.tensor([5, 3])
    a = m.infer(ids, lengths, prenet_dropout=0.0)
    b = loaded.infer(ids, lengths, prenet_dropout=0.0, max_decoder_steps=9)
    assert a.mel.shape == (2, 8, 2 * a.gate.size(1))
    assert torch.equal(a.mel_postnet, b.mel_postnet) and torch.equal(a.mel_lengths, b.mel_lengths)


@pytest.mark.parametrize("bad", [
    {"n_mel_channels": 0}, {"encoder_kernel_size": 4}, {"gate_threshold": 1.5},
    {"encoder_embedding_dim": 63, "symbols_embedding_dim": 63}, {"symbols_embedding_dim": 32},
    {"postnet_n_convolutions": 1}, {"p_decoder_dropout": 1.0}, {"mask_padding": 1},
    {"prenet_dim": 2.5}, {"max_decoder_steps": True},
])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        Tacotron2Config(**bad)


def test_config_from_dict_ignores_unknown_keys(caplog):
    with caplog.at_level(logging.WARNING, logger="tts.models.tacotron2"):
        cfg = Tacotron2Config.from_dict({"n_mel_channels": 40, "sampling_rate": 22050})
    assert cfg.n_mel_channels == 40 and cfg.prenet_dim == 256
    assert "sampling_rate" in caplog.text
    assert Tacotron2Config.from_dict(cfg.to_dict()) == cfg
    assert len(cfg.to_dict()) == 22


# --------------------------------------------------------------------------- errors

def _drop_key(ckpt, key):
    sd = dict(ckpt["state_dict"])
    del sd[key]
    return {**ckpt, "state_dict": sd}


def test_error_wrong_kind():
    with pytest.raises(CheckpointError, match="WaveGlow checkpoint, not a Tacotron2") as e:
        load_tacotron2(WAVEGLOW)
    assert str(WAVEGLOW) in str(e.value)


def test_error_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="not found") as e:
        load_tacotron2(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("make", ["garbage", "truncated_zip", "truncated_legacy"])
def test_error_unreadable_file(tmp_path, make):
    path = tmp_path / f"{make}.pt"
    if make == "garbage":
        path.write_bytes(b"this is not a checkpoint\x00\x01\x02" * 100)
    else:
        data = (CURRENT if make == "truncated_zip" else NGC).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint|not a loadable") as e:
        load_tacotron2(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("with_config", [True, False])
def test_error_missing_key(ckpt, tmp_path, with_config):
    key = "decoder.gate_layer.linear_layer.bias"
    bad = _drop_key(ckpt, key)
    if not with_config:
        del bad["config"]
    path = tmp_path / "missing_key.pt"
    torch.save(bad, path)
    with pytest.raises(CheckpointError, match="missing keys") as e:
        load_tacotron2(path)
    assert str(path) in str(e.value) and key in str(e.value)


def test_error_key_needed_for_inference_missing(ckpt, tmp_path):
    bad = _drop_key(ckpt, "decoder.decoder_rnn.weight_hh")
    del bad["config"]
    path = tmp_path / "no_rnn.pt"
    torch.save(bad, path)
    with pytest.raises(CheckpointError, match="decoder.decoder_rnn.weight_hh") as e:
        load_tacotron2(path)
    assert str(path) in str(e.value)


def test_error_shape_mismatch_config_vs_tensors(ckpt, tmp_path):
    path = tmp_path / "bad_config.pt"
    torch.save({**ckpt, "config": {**ckpt["config"], "prenet_dim": 48}}, path)
    with pytest.raises(CheckpointError, match=r"shape mismatch for decoder\.prenet\.layers\.0\.linear_layer"
                                              r"\.weight: checkpoint has \(32, 40\).*\(48, 40\)") as e:
        load_tacotron2(path)
    assert str(path) in str(e.value)
    with pytest.raises(CheckpointError, match=r"shape mismatch .*\(32, 40\)"):
        load_tacotron2(CURRENT, config={"prenet_dim": 48})


def test_error_shape_mismatch_tensor(ckpt, tmp_path):
    sd = dict(ckpt["state_dict"])
    sd["decoder.attention_layer.v.linear_layer.weight"] = torch.zeros(1, 33)
    path = tmp_path / "bad_tensor.pt"
    torch.save({**ckpt, "state_dict": sd}, path)
    with pytest.raises(CheckpointError, match=r"decoder\.attention_layer\.v\.linear_layer\.weight.*\(1, 33\)"):
        load_tacotron2(path)


def test_error_invalid_file_config(ckpt, tmp_path):
    path = tmp_path / "invalid_config.pt"
    torch.save({**ckpt, "config": {**ckpt["config"], "gate_threshold": 7.0}}, path)
    with pytest.raises(CheckpointError, match="invalid Tacotron2 config.*gate_threshold") as e:
        load_tacotron2(path)
    assert str(path) in str(e.value)


# --------------------------------------------------------------------------- inference options

def test_prenet_dropout_reproducible_with_generator(model):
    ref = load_npz("tacotron2/ref_batch3.npz")
    ids, lengths = _inputs(ref)
    runs = [model.infer(ids, lengths, prenet_dropout=0.5, max_decoder_steps=30,
                        generator=torch.Generator().manual_seed(seed)) for seed in (7, 7, 8)]
    assert torch.equal(runs[0].mel_postnet, runs[1].mel_postnet)
    assert torch.equal(runs[0].mel_lengths, runs[1].mel_lengths)
    det = model.infer(ids, lengths, prenet_dropout=0.0, max_decoder_steps=30)
    n = min(det.mel.size(2), runs[0].mel.size(2))
    assert not torch.allclose(runs[0].mel[..., :n], det.mel[..., :n], atol=1e-3)
    n = min(runs[2].mel.size(2), runs[0].mel.size(2))
    assert not torch.equal(runs[0].mel[..., :n], runs[2].mel[..., :n])
    # without a generator: torch's global RNG, like DLE's F.dropout
    torch.manual_seed(3)
    g1 = model.infer(ids, lengths, max_decoder_steps=10)
    torch.manual_seed(3)
    g2 = model.infer(ids, lengths, max_decoder_steps=10)
    assert torch.equal(g1.mel, g2.mel)


def test_max_decoder_steps_reached(model, caplog):
    ref = load_npz("tacotron2/ref_batch3.npz")
    ids, lengths = _inputs(ref)
    with caplog.at_level(logging.WARNING, logger="tts.models.tacotron2"):
        out = model.infer(ids, lengths, prenet_dropout=0.0, max_decoder_steps=20)
    assert out.mel.shape == (3, 40, 20) and out.gate.shape == (3, 20)
    assert out.mel_lengths.tolist() == [20, 20, 6]
    assert "max_decoder_steps=20" in caplog.text
    _close(out.mel, ref["mel_outputs"][..., :20], ATOL, "mel prefix")


def test_invalid_inputs(model):
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match="lengths"):
        model.infer(ids, torch.tensor([4]))
    with pytest.raises(ValueError, match="lengths"):
        model.infer(ids, torch.tensor([0]))
    with pytest.raises(ValueError, match="symbol ids"):
        model.infer(torch.tensor([[5, 148]]), torch.tensor([2]))
    with pytest.raises(ValueError, match="ids"):
        model.infer(ids.float(), torch.tensor([3]))
    with pytest.raises(ValueError, match="prenet_dropout"):
        model.infer(ids, torch.tensor([3]), prenet_dropout=1.0)
    with pytest.raises(ValueError, match="max_decoder_steps"):
        model.infer(ids, torch.tensor([3]), max_decoder_steps=0)


# --------------------------------------------------------------------------- step API

def test_step_api_matches_infer(model):
    ref = load_npz("tacotron2/ref_batch3.npz")
    ids, lengths = _inputs(ref)
    full = model.infer(ids, lengths, prenet_dropout=0.0)
    dec = model.decoder
    with torch.no_grad():
        memory = model.encode(ids, lengths)
        state = dec.init_state(memory, lengths)
        frame = dec.go_frame(state)
        frames, gates, aligns = [], [], []
        for _ in range(full.gate.size(1)):
            frame, gate, weights = dec.step(state, frame, prenet_dropout=0.0)
            frames.append(frame)
            gates.append(gate)
            aligns.append(weights)
        mel = torch.stack(frames, 2)
        assert torch.equal(mel, full.mel)
        assert torch.equal(torch.stack(gates, 1), full.gate)
        assert torch.equal(torch.stack(aligns, 1), full.alignments)
        assert torch.equal(model.postnet_forward(mel), full.mel_postnet)
        assert state.attention_weights_cum.shape == (3, ids.size(1))


def test_decoder_state_select_and_concat(model):
    """Continuous batching: items split off and joined with other lengths decode as before."""
    ref = load_npz("tacotron2/ref_batch3.npz")
    ids, lengths = _inputs(ref)
    dec = model.decoder
    with torch.no_grad():
        state = dec.init_state(model.encode(ids, lengths), lengths)
        frame = dec.go_frame(state)
        for _ in range(3):
            frame, _, _ = dec.step(state, frame, prenet_dropout=0.0)
        # item 2 (length 8) alone, trimmed to its own length, joined in front of items 0 and 1
        t = int(lengths[2])
        single = state.select([2]).narrow_inputs(t)
        assert single.memory.shape == (1, t, 64) and single.attention_weights.shape == (1, t)
        with pytest.raises(ValueError, match="longer"):
            state.narrow_inputs(t)
        joined = DecoderState.concat([single, state.select([0, 1])])
        assert joined.max_input_length == ids.size(1) and joined.mask[0, t:].all()
        frame_j = frame[[2, 0, 1]]
        for _ in range(5):
            frame, gate, w = dec.step(state, frame, prenet_dropout=0.0)
            frame_j, gate_j, w_j = dec.step(joined, frame_j, prenet_dropout=0.0)
            torch.testing.assert_close(frame_j, frame[[2, 0, 1]], atol=1e-5, rtol=0)
            torch.testing.assert_close(gate_j, gate[[2, 0, 1]], atol=1e-5, rtol=0)
            torch.testing.assert_close(w_j, w[[2, 0, 1]], atol=1e-6, rtol=0)
