"""Engines run their kernels with their own CUDA device current (``tts-server --devices 0,1``).

On two H200s the server's ``cuda:1`` worker failed at warm-up ("Pointer argument cannot be
accessed from Triton") because Triton launches on the current device. ``on_device`` makes the
engine's device current around every public entry point; the CPU test checks the switching with
``torch.cuda``'s device functions replaced, the GPU test needs two GPUs.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from tts.engines._device import on_device


class _Eng:
    def __init__(self, device):
        self.device = torch.device(device)
        self.seen = []

    @on_device
    def work(self, x, *, y=0):
        self.seen.append(_current[0])
        return x + y


class _Slots:
    def __init__(self, engine):
        self.engine = engine

    @on_device
    def run(self):
        return _current[0]


_current = [0]


@pytest.fixture
def fake_cuda(monkeypatch):
    entered = []

    @contextlib.contextmanager
    def device(dev):
        prev = _current[0]
        _current[0] = torch.device(dev).index
        entered.append(_current[0])
        try:
            yield
        finally:
            _current[0] = prev

    monkeypatch.setattr(torch.cuda, "current_device", lambda: _current[0])
    monkeypatch.setattr(torch.cuda, "device", device)
    _current[0] = 0
    return entered


def test_switches_to_the_engines_device_and_back(fake_cuda):
    e = _Eng("cuda:1")
    assert e.work(2, y=3) == 5 and e.seen == [1] and _current[0] == 0 and fake_cuda == [1]
    assert _Slots(e).run() == 1 and _current[0] == 0          # objects that reach the device via .engine


def test_no_switch_when_already_current_or_not_indexed_or_cpu(fake_cuda):
    for dev in ("cuda:0", "cuda", "cpu"):
        e = _Eng(dev)
        e.work(1)
        assert e.seen == [0]
    assert fake_cuda == []


def test_every_public_engine_entry_point_is_wrapped():
    from tts.engines.fastspeech import FastSpeechEngine
    from tts.engines.tacotron2 import SlotDecoder, Tacotron2Engine
    from tts.engines.waveglow import DenoiserEngine, WaveGlowEngine

    names = {Tacotron2Engine: ("encode", "postnet_forward", "decode", "infer", "__call__", "slots"),
             SlotDecoder: ("join", "leave", "capture", "run", "launch", "resized", "reset"),
             WaveGlowEngine: ("infer", "__call__"), DenoiserEngine: ("__call__", "forward"),
             FastSpeechEngine: ("infer", "__call__")}
    for cls, methods in names.items():
        for m in methods:
            fn = getattr(cls, m)
            assert fn.__code__ is on_device(lambda self: None).__code__, f"{cls.__name__}.{m} is not on_device"


@pytest.mark.gpu
def test_engines_on_the_second_gpu_from_a_thread_on_the_first():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA GPUs")
    import copy
    import threading

    from tts.cli.bench import random_models
    from tts.engines import make_engine

    t2, wg, den = random_models("tacotron2", "tiny", 0)
    # a first capture on cuda:0, as the server's first worker does: torch.cuda.graph's default
    # capture stream is made then, on cuda:0 (two H200s: a cuda:1 engine that captured on it
    # launched its Triton kernels on cuda:0 and its graph was empty)
    a0 = make_engine("tacotron2", copy.deepcopy(t2).to("cuda:0"), device="cuda:0", precision="fp16", cache=None)
    a0.infer(torch.randint(1, 100, (1, 20), device="cuda:0"), torch.tensor([20], device="cuda:0"),
             max_decoder_steps=32)
    dev = torch.device("cuda:1")
    out = {}

    def work():
        torch.cuda.set_device(0)
        a = make_engine("tacotron2", copy.deepcopy(t2).to(dev), device=dev, precision="fp16", cache=None)
        v = make_engine("waveglow", copy.deepcopy(wg).to(dev), device=dev, precision="fp16", cache=None)
        ids = torch.randint(1, 100, (1, 20), device=dev)
        res = a.infer(ids, torch.tensor([20], device=dev), max_decoder_steps=32)
        out["audio"] = v.infer(res.mel_postnet, 0.6)
        out["graphs"] = len(a._buckets)

    th = threading.Thread(target=work)
    th.start()
    th.join()
    assert out["audio"].device == dev and bool(torch.isfinite(out["audio"].float()).all())


def test_every_engine_graph_capture_names_its_stream():
    """One capture helper (``tts.engines._graphs.capture``) for every engine, and it passes
    ``torch.cuda.graph(..., stream=...)``: without it the capture runs on the process's default
    capture stream, made on whatever device was current at the first capture (cuda:0), and a
    second GPU's engine captures an empty graph."""
    import ast
    from pathlib import Path

    import tts.engines as pkg

    calls = []
    for path in sorted(Path(pkg.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "graph"
                    and ast.unparse(node.func.value) == "torch.cuda"):
                calls.append(path.name)
                kws = {k.arg: ast.unparse(k.value) for k in node.keywords}
                assert "stream" in kws, f"{path.name}:{node.lineno} has no stream="
                assert kws.get("capture_error_mode") == "'thread_local'", f"{path.name}:{node.lineno}"
    assert calls == ["_graphs.py"]


def test_only_the_env_module_reads_the_environment():
    """``tts.engines._env`` is the one place of the engines and kernels that touches ``os.environ``."""
    import ast
    from pathlib import Path

    import tts.engines as engines
    import tts.plugins as plugins

    readers = set()
    for pkg in (engines, plugins):
        for path in sorted(Path(pkg.__file__).parent.glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv"):
                    readers.add(f"{pkg.__name__}.{path.stem}")
    assert readers == {"tts.engines._env"}
