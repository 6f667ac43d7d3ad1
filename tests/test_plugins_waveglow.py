"""WaveGlow's fused gated activation against its PyTorch twin (GPU; CPU under TRITON_INTERPRET=1)."""

from __future__ import annotations

import pytest
import torch

from tts.plugins.waveglow import gated_activation, gated_activation_ref

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("shape", [(1, 8, 37), (3, 16, 100)])
def test_gated_activation(dtype, shape):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    b, c, t = shape
    layers = 3
    in_act = torch.randn(b, 2 * c, t, device=dev).to(dtype)
    cond = torch.randn(b, layers * 2 * c, t, device=dev).to(dtype)
    for layer in range(layers):
        out = gated_activation(in_act, cond, layer)
        ref = gated_activation_ref(in_act, cond, layer)
        tol = 2e-3 if dtype == torch.float16 else 1e-5
        assert float((out.float() - ref.float()).abs().max()) < tol


def test_gated_activation_into_wider_buffer_keeps_extra_rows():
    """``out`` wider than C (the engine's gemm res/skip form): rows :C written, the rest untouched."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    b, c, t = 3, 16, 50
    in_act = torch.randn(b, 2 * c, t, device=dev)
    cond = torch.randn(b, 2 * 2 * c, t, device=dev)
    out = torch.full((b, c + 8, t), 7.0, device=dev)
    gated_activation(in_act, cond, 1, out=out)
    assert float((out[:, :c] - gated_activation_ref(in_act, cond, 1)).abs().max()) < 1e-5
    assert bool((out[:, c:] == 7.0).all())


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
