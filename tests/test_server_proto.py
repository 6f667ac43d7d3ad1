"""The committed generated protobuf code matches proto/ (DESIGN rule 9), and field numbers stay stable."""

from __future__ import annotations

from pathlib import Path

import pytest

from tts.server import codegen

pytestmark = pytest.mark.timeout(60)


def _drop_json_names(messages) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _drop_json_names(message.nested_type)


def test_committed_code_matches_the_proto(tmp_path: Path):
    """What matters in the generated code (every message, field, enum and service, as protoc
    compiles ``proto/`` now) equals the descriptor the committed module carries. Compared as
    descriptors, not text, so a different patch release of grpcio-tools does not fail it."""
    pytest.importorskip("grpc_tools")
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    from tts.server.proto_gen import tts_pb2, tts_pb2_grpc

    out = tmp_path / "set.pb"
    rc = protoc.main(["grpc_tools.protoc", f"-I{codegen.PROTO_ROOT}", f"--descriptor_set_out={out}",
                      str(codegen.PROTO_ROOT / codegen.PROTO_FILE)])
    assert rc == 0
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    committed = descriptor_pb2.FileDescriptorProto.FromString(tts_pb2.DESCRIPTOR.serialized_pb)
    fresh.ClearField("source_code_info")
    _drop_json_names(fresh.message_type)   # derived names: descriptor sets carry them, modules not
    assert committed == fresh, "tts_pb2 is stale: run `python -m tts.server.codegen`"
    for service in fresh.service:
        servicer = getattr(tts_pb2_grpc, f"{service.name}Servicer")
        assert {m.name for m in service.method} <= set(vars(servicer)), service.name


def test_regenerating_writes_the_modules(tmp_path: Path):
    pytest.importorskip("grpc_tools")
    (tmp_path / "__init__.py").write_text((codegen.OUT_DIR / "__init__.py").read_text())
    written = codegen.generate(out_dir=tmp_path)
    assert sorted(p.name for p in written) == sorted(codegen.GENERATED + codegen.RIVA_GENERATED
                                                      + ("riva_descriptors.py",))
    grpc_text = (tmp_path / "tts_pb2_grpc.py").read_text()
    assert "from tts.server.proto_gen import tts_pb2" in grpc_text and "from tts.v1 import" not in grpc_text


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
        "text": 1, "voice": 2, "encoding": 3, "sample_rate_hz": 4, "options": 5, "word_timings": 6}
    assert numbers(tts_pb2.SynthesizeResponse) == {
        "audio": 1, "sample_rate_hz": 2, "duration_seconds": 3, "normalized_text": 4,
        "timings": 5, "voice": 6, "encoding": 7, "dropped_chars": 8, "words": 9}
    assert numbers(tts_pb2.AudioChunk) == {
        "audio": 1, "sample_rate_hz": 2, "offset_samples": 3, "last": 4, "normalized_text": 5, "dropped_chars": 6,
        "words": 7}
    assert numbers(tts_pb2.WordTiming) == {
        "word": 1, "start_seconds": 2, "end_seconds": 3, "char_start": 4, "char_end": 5}
    assert numbers(tts_pb2.SynthesisOptions) == {
        "speaking_rate": 1, "denoiser_strength": 2, "sigma": 3, "seed": 4,
        "max_decoder_steps": 5, "gate_threshold": 6, "prenet_dropout": 7, "text_normalizer": 8, "stop_rule": 9}
    enc = tts_pb2.AudioEncoding
    assert [enc.Value(n) for n in ("AUDIO_ENCODING_UNSPECIFIED", "LINEAR_PCM16", "FLOAT32", "WAV", "FLAC", "OGG_OPUS",
                                   "MP3", "MULAW", "ALAW")] == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    from tts.server.audio import Encoding
    assert {e.name: e.value for e in Encoding} == {
        ("UNSPECIFIED" if n == "AUDIO_ENCODING_UNSPECIFIED" else n): v for n, v in enc.items()}
    methods = {m.name for m in tts_pb2.DESCRIPTOR.services_by_name["TextToSpeech"].methods}
    assert methods == {"Synthesize", "StreamingSynthesize", "ListVoices"}


# ----------------------------------------------------------------------------- NVIDIA Riva's TTS API

def _riva_modules():
    from tts.server.proto_gen import riva_audio_pb2, riva_common_pb2, riva_tts_pb2
    return {"riva/proto/riva_common.proto": riva_common_pb2, "riva/proto/riva_audio.proto": riva_audio_pb2,
            "riva/proto/riva_tts.proto": riva_tts_pb2}


def test_committed_riva_code_matches_the_proto(tmp_path: Path):
    """As for tts.v1: the committed Riva modules carry the descriptors protoc makes of
    ``proto/riva/proto/`` now (NVIDIA's files, kept as published)."""
    pytest.importorskip("grpc_tools")
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    from tts.server.proto_gen import riva_tts_pb2_grpc

    out = tmp_path / "set.pb"
    rc = protoc.main(["grpc_tools.protoc", f"-I{codegen.PROTO_ROOT}", f"--descriptor_set_out={out}",
                      *(str(codegen.PROTO_ROOT / f) for f in codegen.RIVA_PROTO_FILES)])
    assert rc == 0
    fresh = {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file}
    modules = _riva_modules()
    assert set(fresh) == set(modules)
    for name, module in modules.items():
        want = fresh[name]
        want.ClearField("source_code_info")
        _drop_json_names(want.message_type)
        committed = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        assert committed == want, f"{module.__name__} is stale: run `python -m tts.server.codegen`"
    service = fresh["riva/proto/riva_tts.proto"].service[0]
    assert {m.name for m in service.method} == {"Synthesize", "SynthesizeOnline", "GetRivaSynthesisConfig"}
    assert {m.name for m in service.method} <= set(vars(riva_tts_pb2_grpc.RivaSpeechSynthesisServicer))


def test_riva_names_are_nvidias_and_the_modules_are_ours():
    """Clients call ``/nvidia.riva.tts.RivaSpeechSynthesis/...``; the Python modules live in
    ``tts.server.proto_gen`` (never ``riva.``, the package nvidia-riva-client installs) and
    register in their own descriptor pool."""
    from google.protobuf import descriptor_pool

    from tts.server.proto_gen import riva_descriptors, riva_tts_pb2

    service = riva_tts_pb2.DESCRIPTOR.services_by_name["RivaSpeechSynthesis"]
    assert service.full_name == "nvidia.riva.tts.RivaSpeechSynthesis"
    assert riva_tts_pb2.SynthesizeSpeechRequest.DESCRIPTOR.full_name == "nvidia.riva.tts.SynthesizeSpeechRequest"
    assert riva_tts_pb2.DESCRIPTOR.pool is riva_descriptors.POOL
    assert riva_tts_pb2.DESCRIPTOR.pool is not descriptor_pool.Default()
    for name in ("riva_tts_pb2.py", "riva_tts_pb2_grpc.py", "riva_tts_pb2.pyi"):
        text = (codegen.OUT_DIR / name).read_text()
        imports = [ln.strip() for ln in text.splitlines() if ln.strip().startswith(("from ", "import "))]
        assert not [ln for ln in imports if ln.startswith(("from riva", "import riva"))], name
    enc = _riva_modules()["riva/proto/riva_audio.proto"].AudioEncoding
    assert [enc.Value(n) for n in ("ENCODING_UNSPECIFIED", "LINEAR_PCM", "FLAC", "MULAW", "OGGOPUS", "ALAW")] == [
        0, 1, 2, 3, 4, 20]


def test_riva_modules_import_beside_nvidia_riva_client():
    """One process imports both the client's generated Riva modules and ours, and their
    messages read each other's bytes."""
    client_tts = pytest.importorskip("riva.client.proto.riva_tts_pb2")
    from tts.server.proto_gen import riva_tts_pb2

    ours = riva_tts_pb2.SynthesizeSpeechRequest(text="hi", voice_name="v", sample_rate_hz=16000,
                                                custom_dictionary="tomato  T AH0 M EY1 T OW2")
    theirs = client_tts.SynthesizeSpeechRequest.FromString(ours.SerializeToString())
    assert (theirs.text, theirs.voice_name, theirs.sample_rate_hz) == ("hi", "v", 16000)
    assert theirs.custom_dictionary == "tomato  T AH0 M EY1 T OW2"
