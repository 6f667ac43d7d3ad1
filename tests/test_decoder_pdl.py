"""Programmatic dependent launch (PDL) of the Tacotron2 decoder step: the engine with PDL on
equals PDL off (``Tacotron2Engine(pdl=...)``, ``resolve_pdl``).

CPU: the kernels' PDL code paths without griddepcontrol (plugin mode 3) under
``TRITON_INTERPRET=1`` on a tiny model, in a subprocess. GPU (sm_90+): PDL in CUDA graphs on an
NGC-size random model, ``decode`` and ``SlotDecoder``, batch 1 and 8.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tts.engines.tacotron2 import Tacotron2Engine, resolve_pdl


def test_resolve_pdl_switches():
    cpu = torch.device("cpu")
    kw = dict(device=cpu, backend="triton", use_graphs=False)
    assert resolve_pdl(None, **kw) == 0                  # no CUDA graphs on sm_90+: off
    assert resolve_pdl(True, **kw) == 0
    assert resolve_pdl(False, **kw) == 0
    assert resolve_pdl(None, **dict(kw, backend="torch")) == 0
    for bad in (2, 3, "on"):
        with pytest.raises(ValueError):
            resolve_pdl(bad, **kw)


def test_pdl_code_paths_under_interpreter():
    """Engine decode and slot decoder with the kernels' PDL code paths equal plain launches bit for
    bit (tiny model, the default tiles: fp32 batch 2, fp16 batch 3 = the transposed tensor-core
    split-K LSTM with an 8-row batch tile and the tensor-core location energy), on the CPU under
    TRITON_INTERPRET=1 (the kernels' PDL paths themselves: tests/test_plugins_decoder.py)."""
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import torch
        from tts.cli.bench import random_models
        from tts.engines.tacotron2 import Tacotron2Engine
        t2, _, _ = random_models("tacotron2", "tiny", 0)
        for bsz, prec in ((2, "fp32"), (3, "fp16")):
            g = torch.Generator().manual_seed(bsz)
            ids = torch.randint(1, 148, (bsz, 11), generator=g)
            lens = torch.full((bsz,), 11)
            mels, slots = [], []
            for pdl in (0, 3):
                eng = Tacotron2Engine(t2, device="cpu", precision=prec, backend="triton", steps_per_replay=2)
                assert eng.pdl == 0                   # no PDL off CUDA ...
                eng.pdl = pdl                         # ... but its code paths (plugin mode 3) can run
                enc = eng.encode(ids, lens)
                mels.append(eng.decode(enc, lens, max_decoder_steps=2, prenet_dropout=0.0,
                                       early_stopping=False).mel)
                sd = eng.slots(2, 32, steps_per_replay=2)
                sd.join(0, enc[0], 11)
                sd.join(1, enc[1], 7)
                slots.append(sd.run(0.0).frames)
            assert torch.equal(mels[0], mels[1]), (bsz, float((mels[0] - mels[1]).abs().max()))
            assert torch.equal(slots[0], slots[1]), bsz
        print("ok")
    """)
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


# ----------------------------------------------------------------------------- GPU

def _sm90() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9


_NGC = {}


def _ngc_model():
    if "t2" not in _NGC:
        from tts.cli.bench import random_models
        t2, _, _ = random_models("tacotron2", "ngc", 0)
        _NGC["t2"] = t2.cuda()
    return _NGC["t2"]


def _inputs(bsz: int, t_in: int = 128, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 148, (bsz, t_in), generator=g)
    lens = torch.full((bsz,), t_in)
    lens[1:] = torch.randint(t_in // 2, t_in + 1, (bsz - 1,), generator=g)   # unequal lengths
    return ids.cuda(), lens.cuda()


@pytest.mark.gpu
@pytest.mark.skipif(not _sm90(), reason="PDL needs sm_90+")
@pytest.mark.parametrize("bsz", [1, 8])
def test_gpu_decode_pdl_equals_plain(bsz):
    t2 = _ngc_model()
    ids, lens = _inputs(bsz)
    mels = []
    for pdl in (False, None):
        eng = Tacotron2Engine(t2, device="cuda", precision="fp16", backend="triton", pdl=pdl)
        assert eng.pdl == (0 if pdl is False else 1) and eng.use_graphs
        enc = eng.encode(ids, lens)
        outs = [eng.decode(enc, lens, max_decoder_steps=200, prenet_dropout=0.0, early_stopping=False)
                for _ in range(2)]     # the second call replays the captured graph
        assert torch.equal(outs[0].mel, outs[1].mel)
        mels.append(outs[1].mel)
        assert torch.isfinite(mels[-1]).all()
    err = float((mels[0] - mels[1]).abs().max())
    print(f"\nPDL on vs off, batch {bsz}, 200 steps: mel max abs diff {err:.3g}")
    assert err <= 1e-6


@pytest.mark.gpu
@pytest.mark.skipif(not _sm90(), reason="PDL needs sm_90+")
@pytest.mark.parametrize("rows", [1, 8])
def test_gpu_slots_pdl_equal_plain(rows):
    t2 = _ngc_model()
    ids, lens = _inputs(rows, t_in=100, seed=2)
    frames = []
    for pdl in (False, True):
        eng = Tacotron2Engine(t2, device="cuda", precision="fp16", backend="triton", pdl=pdl)
        enc = eng.encode(ids, lens)
        sd = eng.slots(rows, 128, steps_per_replay=16)
        for s in range(rows):
            sd.join(s, enc[s], int(lens[s]))
            sd.run(0.0)                         # rows join one replay apart
        frames.append(torch.cat([sd.run(0.0).frames for _ in range(12)], 1))
    err = float((frames[0] - frames[1]).abs().max())
    print(f"\nslots PDL on vs off, {rows} rows: frames max abs diff {err:.3g}")
    assert err <= 1e-6
