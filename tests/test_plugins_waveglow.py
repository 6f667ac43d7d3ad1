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
