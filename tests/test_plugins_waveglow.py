"""WaveGlow's Triton kernels against their PyTorch twins (GPU; the whole-layer kernels also on the CPU
under Triton's interpreter, ``TRITON_INTERPRET=1``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("rows,c,width", [(37, 8, 16), (1000, 64, 512), (18560, 256, 4096)])
def test_gated_rows(dtype, rows, c, width):
    """The channels-last row gate on a column slice of a wider matrix (stride ``width``)."""
    from tts.plugins.waveglow import gated_rows, gated_rows_ref
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    big = (torch.randn(rows, width, device=dev) * 3).to(dtype)
    in_act = big[:, 2 * c:4 * c] if width >= 4 * c else big[:, :2 * c]
    out = gated_rows(in_act)
    ref = gated_rows_ref(in_act)
    tol = 2e-3 if dtype == torch.float16 else 1e-5
    assert out.shape == (rows, c) and float((out.float() - ref.float()).abs().max()) < tol
    wide = torch.full((rows, c), 7.0, device=dev, dtype=dtype)
    gated_rows(in_act, out=wide)
    assert torch.equal(wide, out)


# ----------------------------------------------------------------------------- whole WN layer kernels

def _wn_case(dtype, dev, b, phases, t, c, kt, dil, kc, seed=0):
    from tts.plugins.waveglow import wn_frame_pad
    g = torch.Generator().manual_seed(seed)
    half = (kt - 1) // 2
    fp = wn_frame_pad(half, dil, phases)
    x = torch.zeros(b, phases, t + 2 * fp, c)
    x[:, :, fp:fp + t] = torch.randn(b, phases, t, c, generator=g)
    w = torch.randn(kt * c, 2 * c, generator=g) * (kt * c) ** -0.5
    mel = torch.randn(b * t, kc, generator=g)
    wc = torch.randn(phases, kc, 2 * c, generator=g) * kc ** -0.5
    cb = torch.randn(2 * c, generator=g)
    cv = [v.to(dev, dtype) for v in (x.view(-1, c), w, mel, wc, cb)]
    return cv, half, fp


def _tol(dtype, ref):
    """fp16: a few units in the last place of the reference's largest value (fp32 sums in another order)."""
    return (4e-3 * max(1.0, float(ref.float().abs().max()))) if dtype == torch.float16 else 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("flat", [False, True], ids=["per-tap", "flat"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("b,phases,t,c,dil", [(1, 4, 37, 32, 1), (2, 4, 37, 32, 32), (1, 32, 580, 256, 128),
                                              (3, 32, 61, 256, 4)])
def test_wn_in_gate_matches_twin(dtype, b, phases, t, c, dil, flat):
    """Dilated taps across phase blocks (shifts beyond one frame), partial row tiles, real sizes;
    both loop forms of the kernel (a loop per tap, and one loop over all taps)."""
    from tts.plugins.waveglow import wn_in_gate, wn_in_gate_ref
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    (x, w, mel, wc, cb), half, fp = _wn_case(dtype, dev, b, phases, t, c, 3, dil, 64)
    out = torch.full((b * phases * t, c), float("nan"), device=dev, dtype=dtype)
    ref = torch.empty_like(out)
    wn_in_gate(x, w, mel, wc, cb, out, t=t, fp=fp, phases=phases, dil=dil, half=half, flat=flat)
    wn_in_gate_ref(x, w, mel, wc, cb, ref, t=t, fp=fp, phases=phases, dil=dil, half=half)
    assert float((out.float() - ref.float()).abs().max()) < _tol(dtype, ref)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("first,res", [(True, True), (False, True), (False, False)])
@pytest.mark.parametrize("b,phases,t,c", [(2, 4, 37, 32), (1, 32, 580, 256)])
def test_wn_res_end_matches_twin_and_keeps_padding(dtype, first, res, b, phases, t, c):
    from tts.plugins.waveglow import wn_res_end, wn_res_end_ref
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    (x, _, _, _, _), _, fp = _wn_case(dtype, dev, b, phases, t, c, 3, 8, 64)
    g = torch.Generator().manual_seed(1)
    rows = b * phases * t
    acts = torch.randn(rows, c, generator=g).to(dev, dtype)
    w = (torch.randn(c, c, generator=g) * c ** -0.5).to(dev, dtype) if res else None
    bias = torch.randn(c, generator=g).to(dev, dtype) if res else None
    e = torch.zeros(c, 16)
    e[:, :8] = torch.randn(c, 8, generator=g) * c ** -0.5
    e = e.to(dev, dtype)
    end = torch.randn(rows, 16, generator=g).to(dev)
    x1, x2, e1, e2 = x.clone(), x.clone(), end.clone(), end.clone()
    wn_res_end(acts, w, bias, x1, e, e1, t=t, fp=fp, first=first)
    wn_res_end_ref(acts, w, bias, x2, e, e2, t=t, fp=fp, first=first)
    assert float((x1.float() - x2.float()).abs().max()) < _tol(dtype, x2)
    assert float((e1 - e2).abs().max()) < 1e-4 * max(1.0, float(e2.abs().max()))
    assert bool((e1[:, 8:] == (0 if first else end[:, 8:])).all())        # zero columns stay as they were
    xv = x1.view(b, phases, t + 2 * fp, c)
    assert bool((xv[:, :, :fp] == 0).all()) and bool((xv[:, :, fp + t:] == 0).all())   # padding stays zero
    if not res:
        assert torch.equal(x1, x)


# ----------------------------------------------------------------------------- CPU (Triton's interpreter)

def test_wn_in_gate_kernels_on_the_interpreter_agree_with_the_twin_and_each_other():
    """Both loop forms of ``wn_in_gate``'s kernel under ``TRITON_INTERPRET=1`` (a subprocess: the variable is read
    at import): taps shifted across phase blocks, partial row tiles, small tiles, both dtypes. The
    flat loop sums the same products in the same order, so its output equals the per-tap loop's."""
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import sys
        import torch
        sys.path.insert(0, "tests")
        from test_plugins_waveglow import _tol, _wn_case
        from tts.plugins.waveglow import wn_in_gate, wn_in_gate_ref
        for dtype in (torch.float32, torch.float16):
            for b, phases, t, c, dil, tiles in [(2, 4, 37, 32, 32, None), (1, 8, 45, 64, 16, (64, 64, 16, 4, 2))]:
                (x, w, mel, wc, cb), half, fp = _wn_case(dtype, "cpu", b, phases, t, c, 3, dil, 64)
                ref = torch.empty(b * phases * t, c, dtype=dtype)
                wn_in_gate_ref(x, w, mel, wc, cb, ref, t=t, fp=fp, phases=phases, dil=dil, half=half)
                outs = []
                for flat in (False, True):
                    out = torch.full_like(ref, float("nan"))
                    wn_in_gate(x, w, mel, wc, cb, out, t=t, fp=fp, phases=phases, dil=dil, half=half, tiles=tiles,
                               flat=flat)
                    err = float((out.float() - ref.float()).abs().max())
                    assert err < _tol(dtype, ref), (dtype, b, phases, t, c, dil, flat, err)
                    outs.append(out)
                assert torch.equal(outs[0], outs[1]), (dtype, b, phases, t, c, dil)
        print("ok")
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600, cwd=root)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]
