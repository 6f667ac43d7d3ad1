"""The v2 decoder LSTM kernel compiles for sm_90 (Hopper) in every switch combination, on any machine.

The Triton interpreter (the CPU tests) does not run Triton's code generator, so errors that only
compilation raises (e.g. a non-constexpr ``tl.static_range`` bound: the PDL commit made every
``static=True`` config fail on the GPU while the interpreter tests passed) need this check.
``triton.compile`` with a CUDA target needs no GPU (its bundled ptxas builds the cubin).
"""

from __future__ import annotations

import math

import pytest

triton = pytest.importorskip("triton")


def _compile(bh, bk, split=1, dot=False, static=True, pdl=0, pre=1, batch=8, segs=(256, 512, 1024), hdim=1024,
             num_warps=4, evict="", xlo=True, num_stages=None):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from tts.plugins._decoder_triton import lstm_cell2_kernel as k
    dot = int(dot) if 4 * bh >= 16 else 0
    bb = 16 if dot else min(16, 1 << max(0, (batch - 1).bit_length()))
    kt = sum(segs)
    kch = bk * math.ceil(math.ceil(kt / split) / bk)
    nit = kch // bk
    const = dict(BB=bb, BH=bh, BK=bk, NIT=nit, SPLIT=math.ceil(kt / kch), DOT=dot, STATIC=static,
                 SEG=all(s % bk == 0 for s in segs), PDL=pdl, PRE=max(1, min(pre, 2, nit)) if pdl else 1,
                 EVICT=evict, XLO=xlo)
    ptrs = {"x1": "*fp32", "x2": "*fp32", "x3": "*fp32", "w_ptr": "*fp16", "b_ptr": "*fp32", "c_ptr": "*fp32",
            "h_out": "*fp32", "ws_ptr": "*fp32", "cnt_ptr": "*i32"}
    names = k.arg_names
    sig = {n: "constexpr" if n in const else ptrs.get(n, "i32") for n in names}
    src = ASTSource(fn=k, signature=sig, constexprs={(names.index(n),): v for n, v in const.items()})
    opts = {"num_warps": num_warps, **({"num_stages": num_stages} if num_stages else {})}
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts)


@pytest.mark.parametrize("pdl", [0, 1, 2])
@pytest.mark.parametrize("cfg", [dict(bh=2, bk=512, static=False, batch=1), dict(bh=2, bk=128, static=True),
                                 dict(bh=8, bk=128, split=2, dot=True, static=False),
                                 dict(bh=8, bk=128, split=2, dot=True, static=True, pre=2),
                                 dict(bh=16, bk=128, split=4, dot=2, static=True)],
                         ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_lstm_cell2_compiles_for_sm90(cfg, pdl):
    try:
        c = _compile(pdl=pdl, **cfg)
    except RuntimeError as exc:   # no ptxas / backend on this machine: not what this test checks
        if "ptxas" in str(exc).lower():
            pytest.skip(f"no CUDA toolchain: {exc}"[:200])
        raise
    assert "griddepcontrol.wait" in c.asm["ptx"] if pdl else "griddepcontrol" not in c.asm["ptx"]


def test_lstm_cell2_evict_last_hint_reaches_the_ptx():
    """``evict="evict_last"``: the weight loads carry the L2 evict_last cache hint on sm_90."""
    try:
        c = _compile(bh=16, bk=128, split=4, dot=2, static=False, pdl=1, evict="evict_last")
        plain = _compile(bh=16, bk=128, split=4, dot=2, static=False, pdl=1)
    except RuntimeError as exc:
        if "ptxas" in str(exc).lower():
            pytest.skip(f"no CUDA toolchain: {exc}"[:200])
        raise
    assert "evict_last" in c.asm["ptx"] and "evict_last" not in plain.asm["ptx"]


def test_lstm_cell2_rejects_a_bad_evict_or_batch_tile():
    import torch

    from tts.plugins import decoder as K
    xs = tuple(torch.zeros(2, k) for k in (16, 16, 32))
    w, b = torch.zeros(128, 64, dtype=torch.float16), torch.zeros(128)
    c, h = torch.zeros(2, 32), torch.zeros(2, 32)
    with pytest.raises(ValueError, match="evict"):
        K.lstm_cell2(xs, w, b, c, h, bh=4, bk=16, evict="keep")
    with pytest.raises(ValueError, match="power of two"):
        K.lstm_cell2(xs, w, b, c, h, bh=4, bk=16, dot=2, bb=12)


def test_lstm_cell2_xlo_off_halves_the_tensor_core_products_and_num_stages_compiles():
    """``xlo=False``: x rounded to float16, one MMA per chunk instead of hi + lo; ``num_stages``
    reaches the compiler (the batch-8 tile with a 2- and a 4-deep pipeline compiles for sm_90)."""
    import re
    try:
        both = _compile(bh=16, bk=128, split=4, dot=2, static=False)
        hi_only = _compile(bh=16, bk=128, split=4, dot=2, static=False, xlo=False)
        for n in (2, 4):
            _compile(bh=16, bk=128, split=4, dot=2, static=False, num_stages=n)
    except RuntimeError as exc:
        if "ptxas" in str(exc).lower():
            pytest.skip(f"no CUDA toolchain: {exc}"[:200])
        raise

    def mmas(c):
        return len(re.findall(r"\b(?:mma|wgmma)\.", c.asm["ptx"]))
    assert mmas(hi_only) > 0 and 2 * mmas(hi_only) == mmas(both)
