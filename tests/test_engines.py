"""CPU tests of the engines: same results as the eager models, bucket selection, make_engine."""

from __future__ import annotations

import pytest
import torch

from tts.engines import make_engine
from tts.engines.fastspeech import FastSpeechEngine, output_buckets, select_bucket
from tts.engines.tacotron2 import Tacotron2Engine
from tts.engines.waveglow import WaveGlowEngine
from tts.errors import InvalidInputError


def _models():
    from tts.cli.bench import random_models
    return random_models("tacotron2", "tiny", 0)


def test_select_bucket_is_pure_and_refuses_long_input():
    buckets = (32, 64, 96, 128, 256)
    assert select_bucket(1, buckets) == 32
    assert select_bucket(64, buckets) == 64
    assert select_bucket(65, buckets) == 96
    assert select_bucket(256, buckets) == 256
    assert buckets == (32, 64, 96, 128, 256)
    with pytest.raises(InvalidInputError):
        select_bucket(257, buckets)
    with pytest.raises(InvalidInputError):
        select_bucket(0, buckets)
    assert output_buckets(300) == (128, 256, 300)


@pytest.mark.parametrize("early_stopping", [False, True])
@pytest.mark.parametrize("backend", ["torch"])
def test_tacotron2_engine_matches_eager_fp32(early_stopping, backend):
    t2, _, _ = _models()
    ids = torch.randint(1, 148, (3, 21))
    lengths = torch.tensor([21, 9, 14])
    for b, n in enumerate(lengths.tolist()):
        ids[b, n:] = 0
    eng = Tacotron2Engine(t2, device="cpu", precision="fp32", backend=backend, steps_per_replay=4)
    ref = t2.infer(ids, lengths, max_decoder_steps=18, prenet_dropout=0.0, early_stopping=early_stopping)
    out = eng.infer(ids, lengths, max_decoder_steps=18, prenet_dropout=0.0, early_stopping=early_stopping)
    assert out.mel_postnet.shape == ref.mel_postnet.shape
    assert torch.equal(out.mel_lengths, ref.mel_lengths)
    assert float((out.mel_postnet - ref.mel_postnet).abs().max()) < 1e-4
    assert float((out.alignments - ref.alignments).abs().max()) < 1e-5
    assert float((out.gate - ref.gate).abs().max()) < 1e-4


def test_tacotron2_engine_stops_when_every_gate_fired():
    t2, _, _ = _models()
    with torch.no_grad():
        t2.decoder.gate_layer.linear_layer.bias.fill_(20.0)      # fires at the first step
    ids = torch.randint(1, 148, (2, 11))
    lengths = torch.tensor([11, 11])
    eng = Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch", steps_per_replay=4)
    ref = t2.infer(ids, lengths, max_decoder_steps=50, prenet_dropout=0.0)
    out = eng.infer(ids, lengths, max_decoder_steps=50, prenet_dropout=0.0)
    assert out.mel.shape == ref.mel.shape == (2, t2.config.n_mel_channels, 1)
    assert out.mel_lengths.tolist() == ref.mel_lengths.tolist() == [0, 0]


def test_tacotron2_engine_dropout_draws_masks():
    t2, _, _ = _models()
    ids = torch.randint(1, 148, (1, 12))
    lengths = torch.tensor([12])
    eng = Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch", steps_per_replay=2)
    a = eng.infer(ids, lengths, max_decoder_steps=6, prenet_dropout=0.5, early_stopping=False)
    b = eng.infer(ids, lengths, max_decoder_steps=6, prenet_dropout=0.5, early_stopping=False)
    assert not torch.equal(a.mel, b.mel)


@pytest.mark.parametrize("layout", ["gemm", "fused"])
@pytest.mark.parametrize("sigma", [0.0, 0.7])
def test_waveglow_engine_matches_eager_fp32(sigma, layout):
    _, wg, _ = _models()
    mel = torch.randn(2, 80, 7)
    z = torch.randn(2, wg.n_group, 7 * 256 // wg.n_group)
    eng = WaveGlowEngine(wg, device="cpu", precision="fp32", layout=layout)
    ref = wg.infer(mel, sigma, z=z)
    out = eng.infer(mel, sigma, z=z)
    assert out.shape == ref.shape
    assert float((out - ref).abs().max()) < 1e-4


def test_fastspeech_engine_runs_on_buckets_and_refuses_too_long():
    from tts.cli.bench import random_models
    fs, _, _ = random_models("fastspeech", "tiny", 0)
    eng = FastSpeechEngine(fs, device="cpu", precision="fp32", input_buckets=(8, 16))
    seq = torch.randint(1, 100, (2, 10))
    seq[1, 6:] = 0
    out = eng.infer(seq)
    ref = fs.infer(seq)
    assert out.mel.shape[0] == 2 and out.mel.shape[2] == ref.mel.shape[2]
    assert out.encoder_outputs.shape == ref.encoder_outputs.shape
    assert not bool(out.truncated.any())
    with pytest.raises(InvalidInputError):
        eng.infer(torch.randint(1, 100, (1, 17)))


def test_make_engine_on_cpu_returns_the_eager_module():
    t2, wg, den = _models()
    assert make_engine("tacotron2", t2, device="cpu", precision="fp32") is t2
    assert make_engine("denoiser", den, device="cpu", precision="fp32") is den
    with pytest.raises(ValueError):
        make_engine("nope", t2, device="cpu", precision="fp32")


def test_fastspeech_engine_bucketed_items_equal_each_item_run_alone():
    """exact=True: padding (input bucket, batch, output bucket) changes nothing (fp32 ~1e-6)."""
    from tts.cli.bench import random_models
    fs, _, _ = random_models("fastspeech", "tiny", 0)
    eng = FastSpeechEngine(fs, device="cpu", precision="fp32", input_buckets=(16, 32),
                           output_buckets_=(64, 128, 2048))
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(1, 100, (n,), generator=g) for n in (13, 7, 10)]
    batch = torch.zeros(3, 13, dtype=torch.long)
    for i, s in enumerate(seqs):
        batch[i, :len(s)] = s
    out = eng.infer(batch)
    again = eng.infer(batch)
    assert torch.equal(out.mel, again.mel)
    for i, s in enumerate(seqs):
        ref = fs.infer(s[None])
        n = int(ref.mel_lengths[0])
        assert int(out.mel_lengths[i]) == n
        assert torch.equal(out.repeats[i, :len(s)], ref.repeats[0])
        assert float((out.duration[i, :len(s)] - ref.duration[0]).abs().max()) < 1e-5
        assert float((out.mel[i, :n] - ref.mel[0]).abs().max()) < 1e-5
        assert float((out.encoder_outputs[i, :len(s)] - ref.encoder_outputs[0]).abs().max()) < 1e-5


def test_fastspeech_engine_reports_truncation_like_the_model():
    from tts.cli.bench import random_models
    fs, _, _ = random_models("fastspeech", "tiny", 0)
    eng = FastSpeechEngine(fs, device="cpu", precision="fp32", input_buckets=(32,), output_buckets_=(16, 20))
    eng.max_seq_len = 20
    seq = torch.randint(1, 100, (1, 12))
    out = eng.infer(seq)
    assert bool(out.truncated[0]) and out.mel.shape[1] == 20 and int(out.mel_lengths[0]) == 20
    with pytest.raises(InvalidInputError):
        eng.infer(seq, allow_truncation=False)
    assert eng.config is fs.config


def test_tacotron2_engine_step_api_equals_eager_decoder_steps():
    """The server's scheduler drives ``engine.decoder`` (eager step API) on the engine's device."""
    t2, _, _ = _models()
    eng = Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch", steps_per_replay=2)
    ids = torch.randint(1, 148, (1, 15))
    lengths = torch.tensor([15])
    with torch.inference_mode():                         # as the scheduler runs it
        mem_e = eng.encode(ids, lengths)
        mem_r = t2.encode(ids, lengths)
        se, sr = eng.decoder.init_state(mem_e, lengths), t2.decoder.init_state(mem_r, lengths)
        fe, fr = eng.decoder.go_frame(se), t2.decoder.go_frame(sr)
        for _ in range(5):
            oe = eng.decoder.step(se, fe, prenet_dropout=0.0)
            orf = t2.decoder.step(sr, fr, prenet_dropout=0.0)
            fe, fr = oe.frame, orf.frame
            assert fe.dtype == torch.float32
            assert float((fe - fr).abs().max()) < 1e-5
    assert eng.decoder.attention_rnn_dim == t2.decoder.attention_rnn_dim
