"""Every Tacotron2 decoder kernel against its PyTorch twin, on random weights (GPU).

Runs on a CUDA GPU (``-m gpu``); the same functions also run on the CPU
under ``TRITON_INTERPRET=1`` (``python tests/test_plugins_decoder.py``).
"""

from __future__ import annotations

import pytest
import torch

from tts.plugins import decoder as K

pytestmark = pytest.mark.gpu


def _dev() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _w(*shape, dtype, dev, scale=None):
    scale = scale if scale is not None else shape[-1] ** -0.5
    return (torch.randn(*shape, device=dev) * scale).to(dtype)


def _err(a, b):
    return float((a.float() - b.float()).abs().max())


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_linear_act(dtype, batch):
    dev = _dev()
    x = torch.randn(batch, 80, device=dev)
    w = _w(256, 80, dtype=dtype, dev=dev)
    out = torch.full((batch, 256), float("nan"), device=dev)
    ref = torch.empty_like(out)
    K.linear_act(x, w, out, relu=True)
    K.linear_act_ref(x, w, ref, relu=True)
    assert _err(out, ref) < 1e-4


def test_linear_dropout_statistics_and_determinism():
    dev = _dev()
    x = torch.rand(4, 256, device=dev) + 0.5
    w = torch.eye(256, device=dev)
    seed = torch.tensor([1234], dtype=torch.int64, device=dev)
    step = torch.tensor([7], dtype=torch.int64, device=dev)
    a = torch.empty(4, 256, device=dev)
    b = torch.empty_like(a)
    K.linear_act(x, w, a, relu=True, p=0.5, seed=seed, step=step, step_i=1, salt=0)
    K.linear_act(x, w, b, relu=True, p=0.5, seed=seed, step=step, step_i=1, salt=0)
    assert torch.equal(a, b)                                   # same seed, step: same mask
    kept = a != 0
    frac = float(kept.float().mean())
    assert 0.4 < frac < 0.6
    torch.testing.assert_close(a[kept], 2.0 * x[kept])         # scaled by 1 / (1 - p)
    K.linear_act(x, w, b, relu=True, p=0.5, seed=seed, step=step, step_i=2, salt=0)
    assert not torch.equal(a != 0, b != 0)                      # next step: another mask


@pytest.mark.parametrize("kernel", ["location_energy2", "location_energy3"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("t", [7, 40])
@pytest.mark.parametrize("strided", [False, True])
def test_location_energy(kernel, dtype, t, strided):
    """The location-energy kernels (unrolled FMA taps; tensor cores in tf32x3) against their PyTorch
    twin, with the location weights contiguous (the engine's layout) or any other strides."""
    dev = _dev()
    batch, a, ks = 3, 16, 31
    pq = torch.randn(batch, a, device=dev)
    w_loc = _w(a, 2, ks, dtype=torch.float32, dev=dev, scale=0.3)
    if strided:         # the same values stored tap-major [2, KS, A]
        w_loc = w_loc.permute(1, 2, 0).contiguous().permute(2, 0, 1)
        assert w_loc.stride() == (1, ks * a, a)
    att_w = torch.rand(batch, t, device=dev)
    att_cum = torch.rand(batch, t, device=dev) * 3
    pm = _w(batch, t, a, dtype=dtype, dev=dev, scale=1.0)
    v = _w(a, dtype=torch.float32, dev=dev, scale=0.5)
    lengths = torch.tensor([t, max(1, t - 3), 1], dtype=torch.int32, device=dev)
    out = torch.full((batch, t), float("nan"), device=dev)
    ref = torch.empty_like(out)
    getattr(K, kernel)(pq, w_loc, att_w, att_cum, pm, v, lengths, out, bt=16)
    K.location_energy_ref(pq, w_loc, att_w, att_cum, pm, v, lengths, ref)
    assert torch.equal(torch.isinf(out), torch.isinf(ref))
    fin = torch.isfinite(ref)
    assert _err(out[fin], ref[fin]) < 1e-4
    if kernel == "location_energy3":       # the fp32 engine's: IEEE float32 products
        K.location_energy3(pq, w_loc, att_w, att_cum, pm, v, lengths, out, bt=16, precision="ieee")
        assert torch.equal(torch.isinf(out), torch.isinf(ref))
        assert _err(out[fin], ref[fin]) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("t", [5, 70])
def test_attention_context(dtype, t):
    dev = _dev()
    batch, e, steps = 2, 96, 4
    energy = torch.randn(batch, t, device=dev) * 3
    energy[1, t // 2 + 1:] = float("-inf")
    memory = _w(batch, t, e, dtype=dtype, dev=dev, scale=1.0)
    aw1, ac1 = torch.rand(batch, t, device=dev), torch.rand(batch, t, device=dev)
    aw2, ac2 = aw1.clone(), ac1.clone()
    ctx1 = torch.full((batch, e), float("nan"), device=dev)
    ctx2 = torch.empty_like(ctx1)
    align = torch.zeros(batch, steps, t, device=dev)
    step = torch.tensor([1], dtype=torch.int64, device=dev)
    K.attention_context(energy, memory, aw1, ac1, ctx1, align, step, 2, be=32, bt=16)
    K.attention_context_ref(energy, memory, aw2, ac2, ctx2)
    assert _err(ctx1, ctx2) < 1e-4
    assert _err(aw1, aw2) < 1e-6 and _err(ac1, ac2) < 1e-6
    assert _err(align[:, 3], aw2) < 1e-6 and float(align[:, :3].abs().sum()) == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_projection(dtype):
    dev = _dev()
    batch, hd, e, nf, steps = 3, 64, 32, 20, 5
    xs = (torch.randn(batch, hd, device=dev), torch.randn(batch, e, device=dev))
    w = _w(nf + 1, hd + e, dtype=dtype, dev=dev)
    b = torch.randn(nf + 1, device=dev)
    b[nf] = torch.tensor([0.0], device=dev)
    frame1 = torch.empty(batch, nf, device=dev)
    frame2 = torch.empty_like(frame1)
    mel = torch.zeros(batch, steps, nf, device=dev)
    gate = torch.zeros(batch, steps, device=dev)
    nf1 = torch.tensor([1, 1, 0], dtype=torch.int32, device=dev)
    len1 = torch.tensor([4, 4, 2], dtype=torch.int32, device=dev)
    nf2, len2 = nf1.clone(), len1.clone()
    mel_row, gate_row = torch.empty(batch, nf, device=dev), torch.empty(batch, device=dev)
    step = torch.tensor([2], dtype=torch.int64, device=dev)
    K.projection(xs, w, b, frame1, mel, gate, nf1, len1, 0.5, step, 1, bn=8, bk=32)
    K.projection_ref(xs, w, b, frame2, mel_row, gate_row, nf2, len2, 0.5)
    assert _err(frame1, frame2) < 1e-4
    assert _err(mel[:, 3], mel_row) < 1e-4 and _err(gate[:, 3], gate_row) < 1e-4
    assert torch.equal(nf1, nf2) and torch.equal(len1, len2)


LSTM2_CONFIGS = [dict(bh=1, bk=64), dict(bh=2, bk=32, split=3), dict(bh=2, bk=512),
                 dict(bh=4, bk=32, dot=True), dict(bh=4, bk=64, dot=True, split=2),
                 # bk dividing every input segment: one x load per chunk (SEG)
                 dict(bh=2, bk=16), dict(bh=1, bk=16, split=3),
                 dict(bh=4, bk=16, dot=True, split=2),
                 # dot=2: the transposed tensor-core product (acc^T += w @ x^T)
                 dict(bh=4, bk=32, dot=2), dict(bh=8, bk=16, dot=2, split=2),
                 # an 8-row batch tile on tensor cores
                 dict(bh=8, bk=16, dot=2, split=2, bb=8)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("cfg", LSTM2_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_lstm_cell2(dtype, batch, cfg):
    dev = _dev()
    k1, k2, h = 32, 48, 64
    xs = (torch.randn(batch, k1, device=dev), torch.randn(batch, k2, device=dev),
          torch.randn(batch, h, device=dev).tanh())
    w = _w(4 * h, k1 + k2 + h, dtype=dtype, dev=dev)
    b = torch.randn(4 * h, device=dev) * 0.1
    c0 = torch.randn(batch, h, device=dev)
    c1, c2 = c0.clone(), c0.clone()
    h1 = torch.full((batch, h), float("nan"), device=dev)
    h2 = torch.empty_like(h1)
    K.lstm_cell2(xs, w, b, c1, h1, **cfg)
    K.lstm_cell_ref(xs, w, b, c2, h2)
    assert _err(h1, h2) < 1e-4 and _err(c1, c2) < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="NGC sizes: CUDA only (slow in the interpreter)")
@pytest.mark.parametrize("batch,cfg", [(1, dict(bh=1, bk=512)), (1, dict(bh=2, bk=256, split=4)),
                                       (8, dict(bh=8, bk=128, dot=True, split=2)),
                                       (8, dict(bh=16, bk=128, dot=2, split=4, bb=8))])
def test_lstm_cell2_ngc_size_split_k_is_deterministic(batch, cfg):
    """Split-K at the decoder LSTM's size: 20 launches on one workspace, every result bit-equal
    (fixed-order combine, counters back at 0) and equal to the twin."""
    dev = "cuda"
    h, ks = 1024, (1024, 512, 1024)
    xs = tuple(torch.randn(batch, k, device=dev).tanh() for k in ks)
    w = _w(4 * h, sum(ks), dtype=torch.float16, dev=dev)
    b = torch.randn(4 * h, device=dev) * 0.1
    c0 = torch.randn(batch, h, device=dev)
    ws = K.lstm2_workspace(cfg.get("split", 1), 16, h, dev)
    outs = []
    for _ in range(20):
        c1, h1 = c0.clone(), torch.full((batch, h), float("nan"), device=dev)
        K.lstm_cell2(xs, w, b, c1, h1, ws=ws, **cfg)
        outs.append((c1, h1))
    c2, h2 = c0.clone(), torch.empty(batch, h, device=dev)
    K.lstm_cell_ref(xs, w, b, c2, h2)
    assert int(ws[1].abs().sum()) == 0
    for c1, h1 in outs:
        assert torch.equal(c1, outs[0][0]) and torch.equal(h1, outs[0][1])
    assert _err(outs[0][1], h2) < 1e-4 and _err(outs[0][0], c2) < 1e-4


# ----------------------------------------------------------------------------- PDL code paths

def _pdl_modes() -> list[int]:
    """PDL modes to check against plain launches: 3 (the PDL code paths without griddepcontrol)
    everywhere, 1 (real programmatic dependent launches) on sm_90+ GPUs."""
    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9:
        return [1, 3]
    return [3]


@pytest.mark.parametrize("pdl", _pdl_modes())
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_pdl_gemv_kernels_equal_plain_launches(pdl, dtype):
    """linear_act (one and several K chunks, dropout), projection, location_energy2 and
    attention_context (one and several T chunks): results with ``pdl`` equal the plain launch."""
    dev = _dev()
    seed = torch.tensor([99], dtype=torch.int64, device=dev)
    step = torch.tensor([3], dtype=torch.int64, device=dev)
    for batch, kdim, bk, p in ((1, 80, 128, 0.0), (3, 100, 32, 0.5)):
        x = torch.randn(batch, kdim, device=dev)
        w = _w(40, kdim, dtype=dtype, dev=dev)
        a, b = torch.empty(batch, 40, device=dev), torch.empty(batch, 40, device=dev)
        for out, mode in ((a, 0), (b, pdl)):
            K.linear_act(x, w, out, relu=True, p=p, seed=seed, step=step, step_i=1, bn=4, bk=bk, pdl=mode)
        assert torch.equal(a, b)
    batch, hd, e, nf, steps = 3, 64, 32, 20, 5
    xs = (torch.randn(batch, hd, device=dev), torch.randn(batch, e, device=dev))
    w = _w(nf + 1, hd + e, dtype=dtype, dev=dev)
    bias = torch.randn(nf + 1, device=dev)
    res = []
    for mode in (0, pdl):
        frame = torch.empty(batch, nf, device=dev)
        mel, gate = torch.zeros(batch, steps, nf, device=dev), torch.zeros(batch, steps, device=dev)
        nfl = torch.tensor([1, 1, 0], dtype=torch.int32, device=dev)
        ln = torch.tensor([4, 4, 2], dtype=torch.int32, device=dev)
        K.projection(xs, w, bias, frame, mel, gate, nfl, ln, 0.5, step, 1, bn=8, bk=32, pdl=mode)
        res.append((frame, mel, gate, nfl, ln))
    assert all(torch.equal(u, v) for u, v in zip(*res))
    batch, a_dim, ks, t = 3, 16, 31, 40
    pq = torch.randn(batch, a_dim, device=dev)
    w_loc = _w(a_dim, 2, ks, dtype=torch.float32, dev=dev, scale=0.3)
    att_w, att_cum = torch.rand(batch, t, device=dev), torch.rand(batch, t, device=dev) * 3
    pm = _w(batch, t, a_dim, dtype=dtype, dev=dev, scale=1.0)
    v = _w(a_dim, dtype=torch.float32, dev=dev, scale=0.5)
    lengths = torch.tensor([t, t - 3, 1], dtype=torch.int32, device=dev)
    outs = [torch.empty(batch, t, device=dev) for _ in range(2)]
    for out, mode in zip(outs, (0, pdl)):
        K.location_energy2(pq, w_loc, att_w, att_cum, pm, v, lengths, out, bt=8, pdl=mode)
    assert torch.equal(outs[0], outs[1])
    for out, mode in zip(outs, (0, pdl)):
        K.location_energy3(pq, w_loc, att_w, att_cum, pm, v, lengths, out, bt=16, pdl=mode)
    assert torch.equal(outs[0], outs[1])
    memory = _w(batch, t, 96, dtype=dtype, dev=dev, scale=1.0)
    for bt in (16, 64):
        res = []
        for mode in (0, pdl):
            aw, ac = att_w.clone(), att_cum.clone()
            ctx, align = torch.empty(batch, 96, device=dev), torch.zeros(batch, steps, t, device=dev)
            K.attention_context(outs[0], memory, aw, ac, ctx, align, step, 0, be=32, bt=bt, pdl=mode)
            res.append((ctx, aw, ac, align))
        assert all(torch.equal(u, v) for u, v in zip(*res))


@pytest.mark.parametrize("pdl", _pdl_modes())
@pytest.mark.parametrize("cfg", LSTM2_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_pdl_lstm_cell2_equals_plain_launch(pdl, cfg):
    dev = _dev()
    batch, k1, k2, h = 5, 32, 48, 64
    xs = (torch.randn(batch, k1, device=dev), torch.randn(batch, k2, device=dev),
          torch.randn(batch, h, device=dev).tanh())
    w = _w(4 * h, k1 + k2 + h, dtype=torch.float16, dev=dev)
    b = torch.randn(4 * h, device=dev) * 0.1
    c0 = torch.randn(batch, h, device=dev)
    res = []
    for mode in (0, pdl):
        c, hh = c0.clone(), torch.full((batch, h), float("nan"), device=dev)
        K.lstm_cell2(xs, w, b, c, hh, pdl=mode, **cfg)
        res.append((c, hh))
    dc, dh = _err(res[0][0], res[1][0]), _err(res[0][1], res[1][1])
    assert torch.equal(res[0][0], res[1][0]) and torch.equal(res[0][1], res[1][1]), \
        f"pdl={pdl} {cfg}: max |c - c0| {dc:.3g}, max |h - h0| {dh:.3g}"


if __name__ == "__main__":  # CPU check of the kernels: TRITON_INTERPRET=1 python tests/...
    import sys
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", "-o", "markers=gpu",
                          "--override-ini=addopts=", "-m", "gpu or not gpu"]))
