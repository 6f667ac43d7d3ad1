"""CPU tests of the on-disk engine cache: keys, file names, hits, stale/corrupt/foreign entries, env lookup."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from tts.engines.cache import (ENV_VAR, EngineCache, EngineKey, active_cache, cache_from_env, use_cache,
                               weights_hash)
from tts.engines.tacotron2 import Tacotron2Engine
from tts.engines.waveglow import WaveGlowEngine


def _models():
    from tts.cli.bench import random_models
    return random_models("tacotron2", "tiny", 0)


def test_key_names_weights_gpu_precision_and_versions():
    t2, wg, _ = _models()
    k = EngineKey.make("tacotron2", t2, "cpu", "fp32")
    assert k == EngineKey.make("tacotron2", t2, "cpu", "fp32")
    assert k.weights == weights_hash(t2) and len(k.weights) == 64
    assert k.torch == torch.__version__ and k.gpu == "cpu"
    name = k.filename()
    assert name.startswith("tacotron2-cpu-smnone-fp32-torch") and "-tts0.1.0-" in name and name.endswith(".engine")
    with torch.no_grad():
        t2.decoder.gate_layer.linear_layer.bias.add_(1e-3)        # one weight changed: another entry
    k2 = EngineKey.make("tacotron2", t2, "cpu", "fp32")
    assert k2.weights != k.weights and k2.digest() != k.digest() and k2.filename() != name
    assert EngineKey.make("tacotron2", t2, "cpu", "fp16").filename() != k2.filename()
    assert EngineKey.make("waveglow", wg, "cpu", "fp32", {"buckets": [1, 2]}).digest() != \
        EngineKey.make("waveglow", wg, "cpu", "fp32", {"buckets": [1, 3]}).digest()
    assert dataclasses.replace(k, triton="9.9").digest() != k.digest()


def _t2_run(eng):
    ids = torch.randint(1, 148, (2, 13), generator=torch.Generator().manual_seed(3))
    lengths = torch.tensor([13, 9])
    ids[1, 9:] = 0
    return eng.infer(ids, lengths, max_decoder_steps=6, prenet_dropout=0.0, early_stopping=False).mel_postnet


def test_tacotron2_entry_is_built_then_loaded_and_tampering_rebuilds(tmp_path, caplog):
    t2, _, _ = _models()
    cache = EngineCache(tmp_path)
    a = Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch", steps_per_replay=2, cache=cache)
    assert not a.cache_hit and cache.stats["builds"] == 1
    files = list(tmp_path.glob("tacotron2-*.engine"))
    assert len(files) == 1
    b = Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch", steps_per_replay=2, cache=cache)
    assert b.cache_hit and cache.stats["hits"] == 1
    ref = _t2_run(a)
    assert torch.equal(_t2_run(b), ref)

    data = bytearray(files[0].read_bytes())                      # flip one byte of the payload
    data[-100] ^= 0x55
    files[0].write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="tts.engines.cache"):
        c = Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch", steps_per_replay=2, cache=cache)
    assert not c.cache_hit and cache.stats["rejected"] == 1
    assert any("checksum" in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    assert torch.equal(_t2_run(c), ref)
    d = Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch", steps_per_replay=2, cache=cache)
    assert d.cache_hit                                           # the rebuilt entry is good again


def test_foreign_or_garbage_entry_is_rejected_and_force_rebuild_ignores_entries(tmp_path, caplog):
    t2, _, _ = _models()
    cache = EngineCache(tmp_path)
    key = EngineKey.make("tacotron2", t2, "cpu", "fp32")
    other = dataclasses.replace(key, weights="0" * 64)
    cache.store(other, {"x": torch.ones(2)})
    cache.path(other).replace(cache.path(key))                    # a valid file of another key, renamed
    with caplog.at_level(logging.WARNING, logger="tts.engines.cache"):
        assert cache.load(key) is None
    assert any("stale or foreign" in r.getMessage() for r in caplog.records)
    cache.path(key).write_bytes(b"not an engine")
    assert cache.load(key) is None and cache.stats["rejected"] == 2

    cache.store(key, {"x": torch.ones(2)})
    assert torch.equal(cache.load(key)["x"], torch.ones(2))
    forced = EngineCache(tmp_path, force_rebuild=True)
    got, hit = forced.get_or_build(key, lambda: {"x": torch.zeros(2)})
    assert not hit and torch.equal(got["x"], torch.zeros(2))
    assert torch.equal(cache.load(key)["x"], torch.zeros(2))       # overwritten


def test_waveglow_entry_round_trip(tmp_path):
    _, wg, _ = _models()
    cache = EngineCache(tmp_path)
    mel = torch.randn(1, 80, 5)
    z = torch.randn(1, wg.n_group, 5 * 256 // wg.n_group)
    a = WaveGlowEngine(wg, device="cpu", precision="fp32", cache=cache)
    b = WaveGlowEngine(wg, device="cpu", precision="fp32", cache=cache)
    assert not a.cache_hit and b.cache_hit
    assert torch.equal(a.infer(mel, 0.5, z=z), b.infer(mel, 0.5, z=z))


def test_cache_folder_is_read_from_the_environment_at_call_time(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_from_env().root == tmp_path / "xdg" / "tts-serve" / "engines"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_from_env().root == tmp_path / "home" / ".cache" / "tts-serve" / "engines"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "mine"))
    assert cache_from_env().root == tmp_path / "mine"
    monkeypatch.setenv(ENV_VAR, "off")
    assert cache_from_env() is None and active_cache() is None
    c = EngineCache(tmp_path / "ctx")
    with use_cache(c):
        assert active_cache() is c
    assert active_cache() is None


def test_build_engines_cli_reuses_voice_flags_and_needs_cuda(capsys):
    from tts.cli import build_engines
    args = build_engines.build_parser().parse_args(
        ["--tacotron2", "t.pt", "--waveglow", "w.pt", "--engine-cache", "/x", "--force-rebuild", "--precision", "fp16"])
    assert args.tacotron2 == "t.pt" and args.engine_cache == "/x" and args.force_rebuild and args.precision == "fp16"
    assert build_engines.main(["--device", "cpu"]) == 0
    assert "nothing to build" in capsys.readouterr().err
