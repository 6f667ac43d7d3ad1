"""Programmatic dependent launch (PDL) of the Tacotron2 decoder step: the engine with PDL on
equals PDL off (``Tacotron2Engine(pdl=...)``, ``resolve_pdl``).

CPU: mode 3 (the kernels' PDL code paths without griddepcontrol) under ``TRITON_INTERPRET=1``
on a tiny model, in a subprocess. GPU (sm_90+): modes 1 and 2 in CUDA graphs on an NGC-size
random model, ``decode`` and ``SlotDecoder``, batch 1 and 8.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tts.engines.tacotron2 import Tacotron2Engine, resolve_pdl


def test_resolve_pdl_switches(monkeypatch):
    cpu = torch.device("cpu")
    kw = dict(device=cpu, backend="triton", kernels="v2", use_graphs=False)
    monkeypatch.delenv("TTS_DECODER_PDL", raising=False)
    assert resolve_pdl(None, **kw) == 0                  # no CUDA graphs on sm_90+: off
    assert resolve_pdl(True, **kw) == 0
    assert resolve_pdl(3, **kw) == 3                     # the code paths alone: anywhere
    assert resolve_pdl(3, **dict(kw, kernels="v1")) == 0
    assert resolve_pdl(3, **dict(kw, backend="torch")) == 0
    monkeypatch.setenv("TTS_DECODER_PDL", "3")
    assert resolve_pdl(None, **kw) == 3
    assert resolve_pdl(0, **kw) == 0                     # the argument wins over the environment
    monkeypatch.setenv("TTS_DECODER_PDL", "0")
    assert resolve_pdl(None, **kw) == 0
    with pytest.raises(ValueError):
        resolve_pdl(5, **kw)


def test_pdl_code_paths_under_interpreter():
    """Engine decode and slot decoder with pdl=3 equal pdl=0 bit for bit (tiny model, fp32 batch 2
    and fp16 batch 3 = the tensor-core split-K LSTM tiles), on the CPU under TRITON_INTERPRET=1
    (the kernels' PDL paths themselves: tests/test_plugins_decoder.py)."""
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import json, os
        import torch
        from tts.cli.bench import random_models
        from tts.engines.tacotron2 import Tacotron2Engine
        t2, _, _ = random_models("tacotron2", "tiny", 0)
        # wide tiles (few programs: the interpreter runs them one by one); fp16 batch 3 = the
        # tensor-core split-K LSTM path with two weight chunks before the wait
        # fp16 batch 3 again with the batch-8 default's switches: transposed product, 8-row batch
        # tile, the tensor-core location energy (loc_k 3)
        cases = ((2, "fp32", dict(bh=8, bk=32, split=1, num_warps=4, dot=False, static=False), 1, 2),
                 (3, "fp16", dict(bh=8, bk=64, split=2, num_warps=4, dot=True, static=False), 2, 2),
                 (3, "fp16", dict(bh=8, bk=64, split=2, num_warps=4, dot=2, static=False, bb=8), 1, 3))
        for bsz, prec, lstm, pre, loc_k in cases:
            os.environ["TTS_DECODER_TILES"] = json.dumps(dict(lstm=lstm, pdl_pre=pre, loc_bt=16, loc_k=loc_k,
                                                              query=[16, 64], proj=[32, 64]))
            g = torch.Generator().manual_seed(bsz)
            ids = torch.randint(1, 148, (bsz, 11), generator=g)
            lens = torch.full((bsz,), 11)
            mels, slots = [], []
            for pdl in (0, 3):
                eng = Tacotron2Engine(t2, device="cpu", precision=prec, backend="triton", steps_per_replay=2,
                                      pdl=pdl)
                assert eng.pdl == pdl
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
    env.pop("TTS_DECODER_PDL", None)
    env.pop("TTS_DECODER_TILES", None)
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
@pytest.mark.parametrize("mode", [1, 2])
def test_gpu_decode_pdl_equals_plain(bsz, mode, monkeypatch):
    monkeypatch.delenv("TTS_DECODER_PDL", raising=False)
    t2 = _ngc_model()
    ids, lens = _inputs(bsz)
    mels = []
    for pdl in (0, mode):
        eng = Tacotron2Engine(t2, device="cuda", precision="fp16", backend="triton", pdl=pdl)
        assert eng.pdl == pdl and eng.use_graphs
        enc = eng.encode(ids, lens)
        outs = [eng.decode(enc, lens, max_decoder_steps=200, prenet_dropout=0.0, early_stopping=False)
                for _ in range(2)]     # the second call replays the captured graph
        assert torch.equal(outs[0].mel, outs[1].mel)
        mels.append(outs[1].mel)
        assert torch.isfinite(mels[-1]).all()
    err = float((mels[0] - mels[1]).abs().max())
    print(f"\nPDL mode {mode} vs off, batch {bsz}, 200 steps: mel max abs diff {err:.3g}")
    assert err <= 1e-6


@pytest.mark.gpu
@pytest.mark.skipif(not _sm90(), reason="PDL needs sm_90+")
@pytest.mark.parametrize("rows", [1, 8])
def test_gpu_slots_pdl_equal_plain(rows, monkeypatch):
    monkeypatch.delenv("TTS_DECODER_PDL", raising=False)
    t2 = _ngc_model()
    ids, lens = _inputs(rows, t_in=100, seed=2)
    frames = []
    for pdl in (0, 1):
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

