"""Every Triton launch of the Tacotron2 decoder step compiles for sm_90 (Hopper), on any machine.

The Triton interpreter (the CPU tests) does not run Triton's code generator, so errors that only
compilation raises (e.g. a non-constexpr bound where a constexpr is needed) need this check.
The launches are those ``tacotron2_step.triton_step`` makes at NVIDIA's sizes with the engine's
default tiles (recorded with the kernels replaced by stubs, so nothing runs), with programmatic
dependent launch off and on. ``triton.compile`` with a CUDA target needs no GPU (its bundled
ptxas builds the cubin).
"""

from __future__ import annotations

import json

import pytest
import torch

triton = pytest.importorskip("triton")

_TYPES = {torch.float32: "*fp32", torch.float16: "*fp16", torch.int32: "*i32", torch.int64: "*i64"}


def _launches(bsz: int, dtype: torch.dtype, pdl: int) -> list[tuple[str, tuple, dict]]:
    """(kernel name, argument types, keywords) of every launch of one NGC-size decoder step."""
    from tts.engines.tacotron2_builder import prepare_weights
    from tts.engines.tacotron2_step import DecoderBuffers, triton_step
    from tts.models.tacotron2 import Tacotron2, Tacotron2Config
    from tts.plugins import decoder as K

    rec = []

    class Stub:
        def __init__(self, name):
            self.name = name

        def __getitem__(self, grid):
            def launch(*args, **kw):
                types = tuple(_TYPES[a.dtype] if isinstance(a, torch.Tensor) else
                              "fp32" if isinstance(a, float) else "i32" for a in args)
                rec.append((self.name, types, kw))
            return launch

    c = Tacotron2Config()
    with torch.device("meta"):
        t2 = Tacotron2(c)
    w = prepare_weights(t2, dtype, torch.device("meta"))
    buf = DecoderBuffers(bsz, 128, 16, n_frame=c.n_mel_channels, p_dim=c.prenet_dim, ha=c.attention_rnn_dim,
                         hd=c.decoder_rnn_dim, e=c.encoder_embedding_dim, a=c.attention_dim, wd=dtype,
                         device=torch.device("meta"))
    stubs = {n: Stub(n) for n in ("linear_act", "attention_context", "projection", "lstm_cell2",
                                  "location_energy2", "location_energy3")}
    orig = K._kernels
    K._kernels = lambda: stubs
    try:
        triton_step(w, buf, 0, 0.5, 0.5, dtype=dtype, pdl=pdl, hmax=max(c.attention_rnn_dim, c.decoder_rnn_dim))
    finally:
        K._kernels = orig
    return rec


def _compile(name: str, types: tuple, kw: dict):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from tts.plugins._decoder_triton import KERNELS
    k = KERNELS[name]
    kw = dict(kw)
    opts = {"num_warps": kw.pop("num_warps", 4)}
    if kw.pop("launch_pdl", False):
        opts["launch_pdl"] = True
    sig, const, pos = {}, {}, list(types)
    for i, p in enumerate(k.params):
        if p.is_constexpr:
            sig[p.name] = "constexpr"
            const[(i,)] = kw.pop(p.name, p.default)
        else:
            sig[p.name] = pos.pop(0)
    assert not kw and not pos, (name, kw, pos)
    return triton.compile(ASTSource(fn=k, signature=sig, constexprs=const), target=GPUTarget("cuda", 90, 32),
                          options=opts)


@pytest.mark.slow
@pytest.mark.parametrize("pdl", [0, 1])
@pytest.mark.parametrize("bsz,dtype", [(1, torch.float16), (8, torch.float16), (16, torch.float16),
                                       (32, torch.float16), (4, torch.float32)],
                         ids=["b1-fp16", "b8-fp16", "b16-fp16", "b32-fp16", "b4-fp32"])
def test_decoder_step_compiles_for_sm90(bsz, dtype, pdl):
    launches = _launches(bsz, dtype, pdl)
    assert len(launches) == 8
    seen = set()
    for name, types, kw in launches:
        key = json.dumps([name, types, kw], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        try:
            c = _compile(name, types, kw)
        except RuntimeError as exc:   # no ptxas / backend on this machine: not what this test checks
            if "ptxas" in str(exc).lower():
                pytest.skip(f"no CUDA toolchain: {exc}"[:200])
            raise
        ptx = c.asm["ptx"]
        assert ("griddepcontrol.wait" in ptx) == bool(pdl), name


def test_lstm_cell2_rejects_a_bad_batch_tile_or_pdl_mode():
    from tts.plugins import decoder as K
    xs = tuple(torch.zeros(2, k) for k in (16, 16, 32))
    w, b = torch.zeros(128, 64, dtype=torch.float16), torch.zeros(128)
    c, h = torch.zeros(2, 32), torch.zeros(2, 32)
    with pytest.raises(ValueError, match="power of two"):
        K.lstm_cell2(xs, w, b, c, h, bh=4, bk=16, dot=2, bb=12)
    with pytest.raises(ValueError, match="pdl"):
        K.lstm_cell2(xs, w, b, c, h, bh=4, bk=16, pdl=2)
