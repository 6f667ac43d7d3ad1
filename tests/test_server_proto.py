"""The committed generated protobuf code matches proto/ (DESIGN rule 9), and field numbers stay stable."""

from __future__ import annotations

from pathlib import Path

import pytest

from tts.server import codegen

pytestmark = pytest.mark.timeout(60)


def test_regenerating_changes_nothing(tmp_path: Path):
    pytest.importorskip("grpc_tools")
    (tmp_path / "__init__.py").write_text((codegen.OUT_DIR / "__init__.py").read_text())
    codegen.generate(out_dir=tmp_path)
    for name in codegen.GENERATED:
        fresh = (tmp_path / name).read_text(encoding="utf-8")
        committed = (codegen.OUT_DIR / name).read_text(encoding="utf-8")
        assert fresh == committed, f"{name} is stale: run `python -m tts.server.codegen`"


def test_generated_imports_resolve_inside_the_package():
    from tts.server.proto_gen import tts_pb2, tts_pb2_grpc

    text = (codegen.OUT_DIR / "tts_pb2_grpc.py").read_text()
    assert "from tts.v1 import" not in text
    assert tts_pb2_grpc.TextToSpeechStub is not None
    assert tts_pb2.DESCRIPTOR.name == "tts/v1/tts.proto"
    assert tts_pb2.DESCRIPTOR.package == "tts.v1"


def test_field_numbers_are_stable():
    from tts.server.proto_gen import tts_pb2

    def numbers(msg):
        return {f.name: f.number for f in msg.DESCRIPTOR.fields}

    assert numbers(tts_pb2.SynthesizeRequest) == {
        "text": 1, "voice": 2, "encoding": 3, "sample_rate_hz": 4, "options": 5}
    assert numbers(tts_pb2.SynthesizeResponse) == {
        "audio": 1, "sample_rate_hz": 2, "duration_seconds": 3, "normalized_text": 4,
        "timings": 5, "voice": 6, "encoding": 7}
    assert numbers(tts_pb2.AudioChunk) == {
        "audio": 1, "sample_rate_hz": 2, "offset_samples": 3, "last": 4, "normalized_text": 5}
    assert numbers(tts_pb2.SynthesisOptions) == {
        "speaking_rate": 1, "denoiser_strength": 2, "sigma": 3, "seed": 4,
        "max_decoder_steps": 5, "gate_threshold": 6, "prenet_dropout": 7}
    enc = tts_pb2.AudioEncoding
    assert [enc.Value(n) for n in ("AUDIO_ENCODING_UNSPECIFIED", "LINEAR_PCM16", "FLOAT32", "WAV", "FLAC", "OGG_OPUS")] == [0, 1, 2, 3, 4, 5]
    methods = {m.name for m in tts_pb2.DESCRIPTOR.services_by_name["TextToSpeech"].methods}
    assert methods == {"Synthesize", "StreamingSynthesize", "ListVoices"}
