"""WaveGlowEngine's channels-last ``gemm`` layout (the CPU vocoder) against the eager model.

Parity at the bundled voice's size (``tts.train.tasks.MODEL_CONFIGS``), at a tiny one and at
the NVIDIA-style fixture checkpoint; the noise it draws; the gate twins; the synthesizer's CPU
choice. GPU cases (fp16, CUDA graphs, the Triton row gate) are marked ``gpu``.
"""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import FIXTURES
from tts.checkpoints import load_waveglow
from tts.engines.waveglow import WaveGlowEngine, prepare, prepare_gemm
from tts.models.waveglow import WaveGlow, WaveGlowConfig
from tts.plugins.waveglow import gated_rows_ref, gated_rows_sigmoid_

CKPT = FIXTURES / "waveglow" / "checkpoint_WaveGlow_ngc_style_ddp.pt"


def _bundled_config() -> WaveGlowConfig:
    from tts.train.tasks import MODEL_CONFIGS
    return WaveGlowConfig.from_dict(copy.deepcopy(MODEL_CONFIGS["waveglow"]))


def _random(config: WaveGlowConfig, seed: int = 0) -> WaveGlow:
    torch.manual_seed(seed)
    m = WaveGlow(config)
    with torch.no_grad():       # DLE zeroes `end`: make the couplings do something
        for wn in m.WN:
            wn.end.weight.normal_(0, 0.05)
            wn.end.bias.normal_(0, 0.05)
    return m.eval()


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a.detach().float() - b.detach().float()).abs().max())


TINY = WaveGlowConfig(n_flows=4, n_early_every=2, WN_config={"n_layers": 2, "n_channels": 16})

#: The bundled WaveGlow after ``tts.train grow-waveglow`` (recipes/bundled_voice/README.md):
#: 6 WN layers, a 512-sample (2-frame) upsampler.
GROWN = WaveGlowConfig.from_dict(dict(copy.deepcopy(_bundled_config().to_dict()), upsample_kernel=512,
                                      WN_config={"n_layers": 6, "kernel_size": 3, "n_channels": 64}))


@pytest.mark.parametrize("batch,frames", [(1, 23), (2, 9)])
def test_bundled_config_matches_eager(batch, frames):
    wg = _random(_bundled_config())
    assert wg.config.WN_config.n_channels == 64 and wg.n_flows == 8
    eng = WaveGlowEngine(wg, device="cpu", precision="fp32", layout="gemm")
    assert eng.layout == "gemm" and not eng.fused and not eng.use_graphs
    mel = torch.randn(batch, 80, frames)
    z = torch.randn(batch, 8, frames * 32)
    for sigma in (0.0, 0.6):
        ref = wg.infer(mel, sigma, z=z)
        out = eng.infer(mel, sigma, z=z)
        assert out.dtype == torch.float32 and _err(out, ref) < 1e-4
        assert float(ref.abs().max()) > 0.1 or sigma == 0.0      # not a trivially small signal


def test_cpu_default_layout_is_gemm_and_fused_selectable():
    wg = _random(TINY)
    assert WaveGlowEngine(wg, device="cpu", precision="fp32").layout == "gemm"
    fused = WaveGlowEngine(wg, device="cpu", precision="fp32", layout="fused")
    gemm = WaveGlowEngine(wg, device="cpu", precision="fp32", layout="gemm")
    mel, z = torch.randn(2, 80, 6), torch.randn(2, 8, 6 * 32)
    assert _err(fused.infer(mel, 0.8, z=z), gemm.infer(mel, 0.8, z=z)) < 1e-5
    with pytest.raises(ValueError, match="layout"):
        WaveGlowEngine(wg, device="cpu", precision="fp32", layout="ncw")


def test_fixture_checkpoint_matches_eager():
    """The NVIDIA-style fixture (weight norm on in the file) at its own config."""
    wg = load_waveglow(CKPT).eval()
    eng = WaveGlowEngine(wg, device="cpu", precision="fp32")
    torch.manual_seed(1)
    mel = torch.randn(1, wg.n_mel_channels, 12) - 4.0
    z = torch.randn(1, wg.n_group, 12 * 256 // wg.n_group)
    assert _err(eng.infer(mel, 0.9, z=z), wg.infer(mel, 0.9, z=z)) < 1e-4


def test_draws_the_eager_noise_for_a_seeded_generator():
    wg = _random(_bundled_config())
    eng = WaveGlowEngine(wg, device="cpu", precision="fp32")
    mel = torch.randn(2, 80, 5)
    ref = wg.infer(mel, 0.7, generator=torch.Generator().manual_seed(3))
    out = eng.infer(mel, 0.7, generator=torch.Generator().manual_seed(3))
    assert _err(out, ref) < 1e-4
    other = eng.infer(mel, 0.7, generator=torch.Generator().manual_seed(4))
    assert _err(other, ref) > 1e-2


def test_composed_conditioning_equals_upsample_then_cond():
    """``cond_w`` (upsample composed with the stacked 1x1s, bias column) = upsample, group, 1x1."""
    wg = _random(TINY)
    up, flows = prepare(wg, torch.float32, torch.device("cpu"))
    gflows, taps = prepare_gemm(up, flows, wg.n_group, 16, torch.float32)
    assert taps == 4 and gflows[0].cond_w.shape[1] % 8 == 0
    mel = torch.randn(1, 80, 7)
    spect = wg._upsample_mel(mel)                                   # [1, 640, T_g]
    want = torch.nn.functional.conv1d(spect, flows[0].cond_w, flows[0].cond_b)[0].t()   # [T_g, L*2C]
    col = torch.zeros(7, gflows[0].cond_w.shape[1])
    mt = mel[0].t()
    for s in range(taps):
        sh = taps - 1 - s
        col[sh:, s * 80:(s + 1) * 80] = mt[:7 - sh]
    col[:, taps * 80] = 1.0
    got = (col @ gflows[0].cond_w.t()).view(7 * 32, -1)
    assert _err(got, want) < 1e-4


@pytest.mark.parametrize("rows,c", [(37, 8), (100, 64)])
def test_gate_twins_agree(rows, c):
    torch.manual_seed(0)
    a = torch.randn(rows, 2 * c) * 3
    ref = gated_rows_ref(a)
    scaled = a.clone()
    scaled[:, :c] *= -2.0                     # what prepare_gemm(sigmoid_gate=True) folds into the weights
    out2 = torch.full((rows, c), 9.0)
    gated_rows_sigmoid_(scaled.clone(), out2)            # in_act is overwritten: a copy
    assert _err(out2, ref) < 1e-6
    # a column slice of a wider matrix (the stacked conditioning) works the same
    wide = torch.randn(rows, 6 * c)
    wide[:, 2 * c:4 * c] = scaled
    out3 = torch.full((rows, c), 9.0)
    gated_rows_sigmoid_(wide[:, 2 * c:4 * c], out3)
    assert _err(out3, ref) < 1e-6


def test_cpu_synthesizer_vocoder_is_the_engine_unless_eager():
    from tts.synthesizer import SynthesisOptions, Synthesizer
    from tts.voice import Voice
    wg_ckpt = CKPT
    t2 = FIXTURES / "tacotron2" / "checkpoint_Tacotron2_current_1gpu.pt"
    v = Voice.from_checkpoints(tacotron2=t2, waveglow=wg_ckpt)
    auto = Synthesizer(v, device="cpu")
    assert isinstance(auto.vocoder_module, WaveGlowEngine) and auto.vocoder_module.layout == "gemm"
    eager = Synthesizer(v, device="cpu", engine="eager")
    assert isinstance(eager.vocoder_module, WaveGlow)
    opts = SynthesisOptions(seed=5)
    a = auto.synthesize("Hello there.", opts).audio
    b = eager.synthesize("Hello there.", opts).audio
    assert a.shape == b.shape and float(abs(a - b).max()) < 1e-3


@pytest.mark.parametrize("config", ["tiny", "bundled", "grown"])
@pytest.mark.parametrize("batch,frames", [(1, 23), (2, 9)])
def test_fused_layout_twins_match_eager(config, batch, frames):
    """The phase-major ``fused`` layout (here its PyTorch twins: no Triton on the CPU)."""
    wg = _random({"tiny": TINY, "bundled": _bundled_config(), "grown": GROWN}[config])
    eng = WaveGlowEngine(wg, device="cpu", precision="fp32", layout="fused")
    assert eng.layout == "fused" and not eng.fused and not eng.use_graphs and not eng._gflows
    mel = torch.randn(batch, 80, frames)
    z = torch.randn(batch, 8, frames * 32)
    for sigma in (0.0, 0.6):
        ref = wg.infer(mel, sigma, z=z)
        assert _err(eng.infer(mel, sigma, z=z), ref) < 1e-5


def test_fused_layout_tensors():
    """``prepare_fused``: per-phase conditioning [P, KC, 2C] equals the gemm layout's rows, its bias
    column a vector; the skip 1x1s composed with ``end``; the last layer has no residual."""
    from tts.engines.waveglow import END_COLS, KC_MULTIPLE, prepare_fused
    wg = _random(TINY)
    up, flows = prepare(wg, torch.float32, torch.device("cpu"))
    gflows, taps = prepare_gemm(up, flows, wg.n_group, 16, torch.float32)
    g0 = gflows[0]
    cond_w0, skip0, end_w0 = g0.cond_w.clone(), [w.clone() for w in g0.skip_w], g0.end_w.clone()
    fflows = prepare_fused(list(gflows), wg.n_group, taps * 80)
    f = fflows[0]
    layers, c = len(f.dil), 16
    kin = taps * 80
    assert len(f.wc) == layers and f.wc[0].shape[1] % KC_MULTIPLE == 0
    for ph in (0, 5, 31):
        for i in range(layers):
            rows = cond_w0[ph * layers * 2 * c + i * 2 * c:ph * layers * 2 * c + (i + 1) * 2 * c]
            assert torch.equal(f.wc[i][ph, :kin], rows[:, :kin].t()) and bool((f.wc[i][ph, kin:] == 0).all())
            assert torch.equal(f.cb[i], rows[:, kin])
    for i in range(layers):
        assert f.end_e[i].shape == (c, END_COLS)
        torch.testing.assert_close(f.end_e[i][:, :end_w0.shape[0]], (end_w0 @ skip0[i]).t())
        assert bool((f.end_e[i][:, end_w0.shape[0]:] == 0).all())
    assert f.res_wt[0].shape == (c, c) and f.res_wt[-1] is None and f.res_b[-1] is None
    assert f.in_wt[0].shape == (3 * c, 2 * c)


# --- GPU ----------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("precision,tol", [("fp32", 1e-4), ("fp16", 0.05)])   # fp32: CPU WaveGlow tolerance
def test_gpu_gemm_layout_matches_eager(precision, tol):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    wg = _random(WaveGlowConfig(n_flows=6, n_early_every=2, WN_config={"n_layers": 3, "n_channels": 32}))
    ref_model = copy.deepcopy(wg).cuda()
    gemm = WaveGlowEngine(wg, device="cuda", precision=precision, layout="gemm")
    assert gemm.use_graphs and gemm.layout == "gemm" and gemm.fused
    for b, t in ((1, 20), (3, 11), (1, 20)):          # graph reuse on the repeated shape
        mel = torch.randn(b, 80, t, device="cuda")
        z = torch.randn(b, wg.n_group, t * 256 // wg.n_group, device="cuda")
        ref = ref_model.infer(mel, 0.6, z=z)
        scale = float(ref.abs().max())
        assert _err(gemm.infer(mel, 0.6, z=z), ref) < tol * max(1.0, scale)


@pytest.mark.gpu
@pytest.mark.parametrize("precision,tol", [("fp32", 1e-4), ("fp16", 0.05)])   # fp32: CPU WaveGlow tolerance
@pytest.mark.parametrize("kernel", [1024, 512])
def test_gpu_fused_layout_matches_gemm_and_eager(precision, tol, kernel):
    """The Triton whole-layer kernels in CUDA graphs, several shapes, graph reuse; DLE's
    upsampler and the grown bundled WaveGlow's shorter one (2 mel taps)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    wg = _random(WaveGlowConfig(n_flows=6, n_early_every=2, upsample_kernel=kernel,
                                WN_config={"n_layers": 3, "n_channels": 64}))
    ref_model = copy.deepcopy(wg).cuda()
    fused = WaveGlowEngine(wg, device="cuda", precision=precision, layout="fused")
    gemm = WaveGlowEngine(wg, device="cuda", precision=precision, layout="gemm")
    assert fused.use_graphs and fused.fused and fused.layout == "fused"
    for b, t in ((1, 20), (3, 131), (1, 20)):
        mel = torch.randn(b, 80, t, device="cuda")
        z = torch.randn(b, wg.n_group, t * 256 // wg.n_group, device="cuda")
        ref = ref_model.infer(mel, 0.6, z=z)
        scale = float(ref.abs().max())
        out = fused.infer(mel, 0.6, z=z)
        assert out.shape == ref.shape and _err(out, ref) < tol * max(1.0, scale)
        assert _err(out, gemm.infer(mel, 0.6, z=z)) < tol * max(1.0, scale)


@pytest.mark.gpu
def test_gpu_default_layout_is_fused_for_fp16():
    wg = _random(TINY)
    assert WaveGlowEngine(wg, device="cuda", precision="fp16").layout == "fused"
    assert WaveGlowEngine(wg, device="cuda", precision="fp32").layout == "gemm"


def test_graph_lru_keeps_recent_and_evicts_oldest():
    from tts.engines._graphs import LRU
    c = LRU(2)
    made = []

    def make(v):
        def f():
            assert len(c) < c.max_items            # room is made before the value is built
            made.append(v)
            return v
        return f
    assert c.get_or_make(1, make("a")) == "a" and c.get_or_make(2, make("b")) == "b"
    assert c.get_or_make(1, make("x")) == "a"    # a hit: 1 becomes the most recent, nothing built
    assert c.get_or_make(3, make("c")) == "c" and list(c) == [1, 3]   # 2 (the oldest) evicted
    assert made == ["a", "b", "c"]
    c.put(1, "A")                                 # replaced, most recent
    assert c.get(1) == "A" and list(c) == [3, 1] and c.get(2) is None
    c.max_items = 1                               # read at the next insertion
    c.put(4, "d")
    assert list(c) == [4] and len(c) == 1


@pytest.mark.parametrize("config", [GROWN, WaveGlowConfig(n_flows=4, n_early_every=2, upsample_kernel=768,
                                                          WN_config={"n_layers": 3, "n_channels": 16})],
                         ids=["grown", "tiny-768"])
def test_grown_configs_match_eager(config):
    """A shorter upsampler (fewer mel taps in the composed conditioning GEMM) and more layers."""
    wg = _random(config, seed=3)
    eng = WaveGlowEngine(wg, device="cpu", precision="fp32", layout="gemm")
    assert eng._mel_taps == config.upsample_kernel // 256
    mel = torch.randn(2, 80, 11)
    z = torch.randn(2, 8, 11 * 32)
    ref = wg.infer(mel, 0.8, z=z)
    out = eng.infer(mel, 0.8, z=z)
    assert _err(out, ref) < 1e-4 and float(ref.abs().max()) > 0.1
