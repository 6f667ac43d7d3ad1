"""``--precision fp32`` is IEEE fp32 on CUDA: the torch switches the engines, the Synthesizer and
tts-bench set (``tts.engines.precision``), and the Triton kernels' float32 dot precision. No GPU
needed: the switches are plain process settings, the kernels are checked by their source and by
Triton's interpreter."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tts.engines import precision as P

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def switches(monkeypatch):
    """torch's float32 switches, restored after the test; starts from TF32 allowed everywhere."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("medium")
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.set_float32_matmul_precision(saved[2])


def _state():
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision())


def test_fp32_on_cuda_turns_tf32_off_everywhere(switches):
    assert P.set_float32_math("fp32", "cuda") == "ieee"
    assert _state() == (False, False, "highest")


def test_tf32_is_asked_for_explicitly(switches):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    assert P.set_float32_math("tf32", torch.device("cuda:1")) == "tf32"
    assert _state() == (True, True, "high")


def test_fp16_and_cpu_leave_the_switches_alone(switches):
    assert P.set_float32_math("fp16", "cuda") is None
    assert P.set_float32_math("fp32", "cpu") is None
    assert _state() == (True, True, "medium")
    with pytest.raises(ValueError, match="precision must be one of"):
        P.set_float32_math("bf16", "cuda")
    assert P.dtype_of("tf32") == torch.float32 and P.dtype_of("fp16") == torch.float16


@pytest.mark.parametrize("module,cls", [("tts.engines.tacotron2", "Tacotron2Engine"),
                                        ("tts.engines.waveglow", "WaveGlowEngine"),
                                        ("tts.engines.fastspeech", "FastSpeechEngine"),
                                        ("tts.engines.hifigan", "HiFiGANEngine")])
@pytest.mark.parametrize("precision", ["fp32", "tf32"])
def test_every_engine_sets_the_float32_math_of_its_precision(module, cls, precision, monkeypatch, switches):
    """Building an engine applies its precision to its device (here the switches' function is
    asked for a CUDA device by a CPU engine's stand-in: the call and its arguments are checked)."""
    import importlib

    from tts.cli.bench import random_models
    mod = importlib.import_module(module)
    calls = []
    monkeypatch.setattr(mod, "set_float32_math", lambda prec, dev: calls.append((prec, torch.device(dev))))
    kind = "fastspeech" if cls == "FastSpeechEngine" else "tacotron2"
    acoustic, wg, _ = random_models(kind, "tiny", 0)
    model = wg if cls == "WaveGlowEngine" else acoustic
    if cls == "HiFiGANEngine":
        from tts.models.hifigan import HiFiGAN, HiFiGANConfig
        model = HiFiGAN(HiFiGANConfig(upsample_initial_channel=16)).eval()
    getattr(mod, cls)(model, device="cpu", precision=precision)
    assert calls == [(precision, torch.device("cpu"))]
    P.set_float32_math(*calls[0][:1], "cuda")          # what the engine's call does on a GPU
    assert _state() == ((True, True, "high") if precision == "tf32" else (False, False, "highest"))


def test_engines_reject_unknown_precisions():
    from tts.cli.bench import random_models
    from tts.engines.waveglow import WaveGlowEngine
    _, wg, _ = random_models("tacotron2", "tiny", 0)
    with pytest.raises(ValueError, match="precision must be one of"):
        WaveGlowEngine(wg, device="cpu", precision="bf16")


def test_synthesizer_sets_the_float32_math_and_checks_the_device(monkeypatch):
    from tts import synthesizer as S
    from tts.errors import InvalidInputError
    from tts.voice import load_voice
    voice = load_voice("heart")
    calls = []
    monkeypatch.setattr(P, "set_float32_math", lambda prec, dev: calls.append((prec, str(dev))))
    S.Synthesizer(voice, device="cpu", precision="fp32")
    assert calls == [("fp32", "cpu")]
    with pytest.raises(InvalidInputError, match="precision tf32 needs a CUDA device"):
        S.Synthesizer(voice, device="cpu", precision="tf32")
    assert "tf32" in S.PRECISIONS


def test_cli_precision_choices():
    from tts.cli import synth
    args = synth.build_parser().parse_args(["x.txt", "--out", "o", "--precision", "tf32"])
    assert args.precision == "tf32"


# ----------------------------------------------------------------------------- Triton kernels

def test_fp32_engines_give_the_location_energy_ieee_inputs():
    from tts.engines.tacotron2_step import location_precision, triton_step
    assert location_precision(torch.float32) == "ieee"
    assert location_precision(torch.float16) == "tf32x3"
    src = inspect.getsource(triton_step)
    assert "precision=location_precision(dtype)" in src
    from tts.plugins import waveglow as W
    assert W._prec(torch.float32) == "ieee"


def test_no_triton_dot_hard_codes_a_tf32_precision():
    """Every ``tl.dot`` of the kernels either takes its input precision from a parameter
    (``PREC``: ieee for float32 engines) or multiplies float16 operands; none names tf32 itself
    and none uses the old ``allow_tf32`` switch."""
    for path in sorted((ROOT / "plugins").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "allow_tf32" not in text, path.name
        for call in re.findall(r"tl\.dot\([^\n]*", text):
            assert "input_precision=\"" not in call and "input_precision='" not in call, (path.name, call)
            if "input_precision" not in call:
                assert re.search(r"tl\.dot\((w, tl\.trans\((hi|lo)\)|(hi|lo), wt)", call), (path.name, call)


def test_location_energy3_in_ieee_matches_its_twin():
    """The tensor-core location energy with ``precision="ieee"`` (the fp32 engine's) against the
    PyTorch twin, in Triton's CPU interpreter (a subprocess: the interpreter is chosen when the
    kernels are first imported)."""
    pytest.importorskip("triton")
    code = """
import torch
from tts.plugins import decoder as K
g = torch.Generator().manual_seed(0)
batch, t, a, ks = 2, 9, 16, 31
pq = torch.randn(batch, a, generator=g)
w_loc = torch.randn(a, 2, ks, generator=g) * 0.3
att_w, att_cum = torch.rand(batch, t, generator=g), torch.rand(batch, t, generator=g) * 3
pm = torch.randn(batch, t, a, generator=g)
v = torch.randn(a, generator=g) * 0.5
lengths = torch.tensor([t, 4], dtype=torch.int32)
out, ref = torch.full((batch, t), float("nan")), torch.empty(batch, t)
K.location_energy3(pq, w_loc, att_w, att_cum, pm, v, lengths, out, bt=16, precision="ieee")
K.location_energy_ref(pq, w_loc, att_w, att_cum, pm, v, lengths, ref)
assert torch.equal(torch.isinf(out), torch.isinf(ref))
fin = torch.isfinite(ref)
print("ERR", float((out[fin] - ref[fin]).abs().max()), int(fin.sum()))
try:
    K.location_energy3(pq, w_loc, att_w, att_cum, pm, v, lengths, out, precision="tf32")
except ValueError as exc:
    print("REFUSED", exc)
"""
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    err, n = re.search(r"ERR (\S+) (\d+)", r.stdout).groups()
    assert float(err) <= 1e-5 and int(n) == 2 * 9 - 5
    assert "REFUSED precision must be tf32x3 or ieee" in r.stdout
