"""The TorchScript baseline (``tts.models.scripted``): ``torch.jit.script`` compiles it, it shares
the eager models' weights, and with the same seed it gives the eager models' outputs (CPU, fp32)."""

from __future__ import annotations

import pytest
import torch

from tts.cli.bench import tiny_configs
from tts.models.scripted import ScriptableWaveGlow, script_tacotron2, script_waveglow
from tts.models.tacotron2 import Tacotron2
from tts.models.waveglow import WaveGlow

ATOL = 1e-5


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    t2c, wgc, _ = tiny_configs()
    t2 = Tacotron2(t2c).eval()
    wg = WaveGlow(wgc).eval()
    with torch.no_grad():          # DLE zeroes `end`: give the couplings something to do
        for wn in wg.WN:
            wn.end.weight.normal_(0.0, 0.05)
            wn.end.bias.normal_(0.0, 0.05)
    wg.remove_weight_norm()
    return t2, wg


def _batch():
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([9, 17, 13])           # not sorted: the eager model takes any order
    ids = torch.zeros(3, 17, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        ids[i, :n] = torch.randint(1, 148, (n,), generator=g)
    return ids, lengths


@pytest.mark.parametrize("dropout", [0.5, 0.0])
def test_scripted_tacotron2_equals_eager_with_the_same_seed(models, dropout):
    """DLE's prenet dropout (on at inference) draws from the global RNG in the same order in both,
    so the same seed gives the same mel, lengths and alignments."""
    t2, _ = models
    st = script_tacotron2(t2, max_decoder_steps=25, early_stopping=False, prenet_dropout=dropout)
    assert isinstance(st, torch.jit.ScriptModule)
    ids, lengths = _batch()
    with torch.no_grad():
        torch.manual_seed(7)
        mel, mel_lengths, align = st(ids, lengths)
        torch.manual_seed(7)
        ref = t2.infer(ids, lengths, max_decoder_steps=25, early_stopping=False, prenet_dropout=dropout)
        after_scripted = torch.rand(1)
        torch.manual_seed(7)
        st(ids, lengths)
        assert torch.equal(torch.rand(1), after_scripted)          # the same RNG consumption
    assert mel.shape == ref.mel_postnet.shape == (3, 80, 25)
    assert float((mel - ref.mel_postnet).abs().max()) <= ATOL
    assert torch.equal(mel_lengths, ref.mel_lengths) and mel_lengths.dtype == torch.int32
    assert float((align - ref.alignments).abs().max()) <= ATOL
    assert float(align[0, :, 9:].abs().max()) == 0.0                # padding gets no attention
    if dropout:
        torch.manual_seed(8)
        with torch.no_grad():
            other, _, _ = st(ids, lengths)
        assert float((other - mel).abs().max()) > 1e-3              # dropout is really on


def test_scripted_tacotron2_stops_on_the_gate_as_eager(models):
    """Early stopping on the gate: every item stops on its own gate, decoding goes on until all
    stopped; the lengths and the decoded length equal the eager model's."""
    t2, _ = models
    st = script_tacotron2(t2, max_decoder_steps=60, early_stopping=True, gate_threshold=0.5)
    ids, lengths = _batch()
    with torch.no_grad():
        gate_bias = t2.decoder.gate_layer.linear_layer.bias
        saved = gate_bias.clone()
        gate_bias.fill_(0.3)       # shared weights: the scripted module sees the change too
        try:
            torch.manual_seed(3)
            mel, mel_lengths, _ = st(ids, lengths)
            torch.manual_seed(3)
            ref = t2.infer(ids, lengths, max_decoder_steps=60, early_stopping=True, gate_threshold=0.5)
        finally:
            gate_bias.copy_(saved)
    assert mel.shape[-1] == ref.mel_postnet.shape[-1] < 60
    assert torch.equal(mel_lengths, ref.mel_lengths)
    assert float((mel - ref.mel_postnet).abs().max()) <= ATOL


def test_scripted_parts_and_settings(models):
    """encode / decode / postnet are the three parts of forward; the settings are attributes of
    the compiled module (as DLE's config sets them) and can be changed between calls."""
    t2, _ = models
    st = script_tacotron2(t2, max_decoder_steps=12, early_stopping=False, prenet_dropout=0.0)
    ids, lengths = _batch()
    with torch.no_grad():
        memory = st.encode(ids, lengths)
        assert float((memory - t2.encode(ids, lengths)).abs().max()) <= ATOL
        mel, gate, align, mel_lengths = st.decode(memory, lengths)
        assert mel.shape == (3, 80, 12) and gate.shape == (3, 12) and align.shape == (3, 12, 17)
        whole, _, _ = st(ids, lengths)
        assert torch.equal(st.postnet(mel), whole)
        st.max_decoder_steps = 5
        assert st(ids, lengths)[0].shape[-1] == 5


def test_scripted_modules_share_the_eager_weights(models):
    t2, wg = models
    st, sw = script_tacotron2(t2), script_waveglow(wg)
    eager = {p.data_ptr() for p in t2.parameters()}
    assert {p.data_ptr() for p in st.parameters()} <= eager
    assert st.decoder_rnn.weight_ih.data_ptr() == t2.decoder.decoder_rnn.weight_ih.data_ptr()
    assert {p.data_ptr() for p in sw.parameters()} <= {p.data_ptr() for p in wg.parameters()}
    inverse_only = sum(c.conv.weight.numel() for c in wg.convinv)     # inference uses the cached inverses
    assert sum(p.numel() for p in sw.parameters()) == sum(p.numel() for p in wg.parameters()) - inverse_only
    assert sw.convinv_rev[0].W_inverse.data_ptr() == wg.convinv[len(wg.convinv) - 1].W_inverse.data_ptr()


@pytest.mark.parametrize("sigma", [0.6, 0.0])
def test_scripted_waveglow_equals_eager_with_the_same_seed(models, sigma):
    """DLE's ``_infer_ts``: initial noise, then early noise per early-output flow, drawn in the
    eager model's order."""
    _, wg = models
    sw = script_waveglow(wg)
    mel = torch.randn(2, 80, 11, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.manual_seed(5)
        got = sw(mel, sigma)
        torch.manual_seed(5)
        want = wg.infer(mel, sigma=sigma)
    assert got.shape == want.shape == (2, 11 * 256)
    assert float(want.abs().max()) > 0.01
    assert float((got - want).abs().max()) <= ATOL


def test_scripted_waveglow_needs_weight_norm_removed():
    _, wgc, _ = tiny_configs()
    with pytest.raises(ValueError, match="remove_weight_norm"):
        ScriptableWaveGlow(WaveGlow(wgc))
