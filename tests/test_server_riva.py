"""NVIDIA Riva's TTS API (``nvidia.riva.tts.RivaSpeechSynthesis``) on loopback, called with the real
``nvidia-riva-client`` package: the audio equals what ``tts.v1`` sends for the same text and options,
client mistakes are INVALID_ARGUMENT naming the field, auth and ids work as for ``tts.v1``.

A model-free fake voice for the API; the small reference FastSpeech voice for ``custom_dictionary``
and the server's lexicon (they change the phonemes, which a fake does not speak).
"""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf

riva_client = pytest.importorskip("riva.client")

from riva.client.proto import riva_tts_pb2 as client_tts  # noqa: E402  (after the importorskip)

from tts.audio import g711_decode  # noqa: E402
from tts.client import TTSClient  # noqa: E402
from tts.server.app import ServerConfig, TTSServer  # noqa: E402
from tts.server.audio import Encoding, decode  # noqa: E402
from tts.server.batcher import BatcherConfig  # noqa: E402
from tts.server.testing import FakeSynthesizer, FakeVoice, ServerThread  # noqa: E402

pytestmark = pytest.mark.timeout(240)

HOST = "127.0.0.1"
FIXTURES = Path(__file__).parent / "fixtures" / "reference"
AudioEncoding = riva_client.AudioEncoding
TEXT = "Riva clients can talk to this server, and every chunk of audio arrives in order"


def start(synths, default_voice=None, **cfg) -> ServerThread:
    cfg.setdefault("batcher", BatcherConfig(max_batch_size=8, max_queue_delay_s=0.005))
    cfg.setdefault("max_text_chars", 200)
    st = ServerThread(TTSServer(synths, ServerConfig(host=HOST, port=0, metrics_port=0, **cfg),
                                default_voice=default_voice))
    st.start()
    return st


@pytest.fixture(scope="module")
def fake():
    return FakeSynthesizer()


@pytest.fixture(scope="module")
def server(fake):
    other = FakeSynthesizer(voice=FakeVoice(name="other", sample_rate=16000))
    st = start({"fake": [fake], "other": [other]})
    yield st
    st.stop()


@pytest.fixture(scope="module")
def riva(server):
    auth = riva_client.Auth(uri=f"{HOST}:{server.server.port}")
    yield riva_client.SpeechSynthesisService(auth)
    auth.channel.close()


@pytest.fixture()
def v1(server):
    with TTSClient(f"{HOST}:{server.server.port}", timeout=30) as c:
        yield c


def pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2")


def error_of(fn) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


# ----------------------------------------------------------------------------- unary

def test_linear_pcm_is_raw_16_bit_samples_equal_to_tts_v1(riva, v1, fake):
    r = riva.synthesize(TEXT, sample_rate_hz=0)                       # 0: the voice's rate
    want = v1.synthesize(TEXT, encoding="LINEAR_PCM16")
    assert r.audio[:4] != b"RIFF"                                     # no header, as Riva sends it
    assert r.audio == want.audio
    assert len(pcm(r.audio)) == len(fake.audio_for(TEXT))
    assert np.abs(pcm(r.audio) / 32767.0 - fake.audio_for(TEXT)).max() < 1e-4
    assert r.meta.text == TEXT and r.meta.processed_text == want.normalized_text == TEXT.lower()


def test_the_clients_default_rate_and_resampling_equal_tts_v1(riva, v1):
    assert riva.synthesize(TEXT).audio == v1.synthesize(TEXT, encoding="LINEAR_PCM16").audio     # 22050 = voice
    r = riva.synthesize(TEXT, sample_rate_hz=16000)
    want = v1.synthesize(TEXT, encoding="LINEAR_PCM16", sample_rate_hz=16000)
    assert r.audio == want.audio and len(pcm(r.audio)) == want.duration_seconds * 16000


def test_flac_decodes_to_the_tts_v1_audio(riva, v1):
    r = riva.synthesize(TEXT, encoding=AudioEncoding.FLAC, sample_rate_hz=0)
    audio, rate = sf.read(io.BytesIO(r.audio), dtype="int16")
    assert rate == 22050
    assert np.array_equal(audio, pcm(v1.synthesize(TEXT, encoding="LINEAR_PCM16").audio))


def test_ogg_opus_is_48_khz_when_the_rate_is_not_an_opus_rate(riva, v1):
    r = riva.synthesize(TEXT, encoding=AudioEncoding.OGGOPUS, sample_rate_hz=22050)
    want = v1.synthesize(TEXT, encoding="OGG_OPUS")
    audio, rate = sf.read(io.BytesIO(r.audio), dtype="float32")
    assert r.audio[:4] == b"OggS" and rate == want.sample_rate_hz == 48000
    assert abs(len(audio) - want.duration_seconds * 48000) < 2000
    r16 = riva.synthesize(TEXT, encoding=AudioEncoding.OGGOPUS, sample_rate_hz=16000)
    assert sf.info(io.BytesIO(r16.audio)).samplerate == 16000


@pytest.mark.parametrize("law", ["MULAW", "ALAW"])
def test_g711_is_headerless_8_bit_of_the_tts_v1_samples(riva, v1, law):
    from tts.audio import encode

    r = riva.synthesize(TEXT, encoding=getattr(AudioEncoding, law), sample_rate_hz=8000)
    exact = decode(v1.synthesize(TEXT, encoding="FLOAT32", sample_rate_hz=8000).audio, Encoding.FLOAT32)
    assert len(r.audio) == len(exact)                                  # one byte a sample, no header
    assert r.audio == encode(exact, 8000, law)
    assert np.abs(g711_decode(r.audio, law) - exact).max() < 0.02     # G.711 companding error


def test_voice_names(riva, v1, fake):
    default = riva.synthesize(TEXT, sample_rate_hz=0).audio
    for riva_name in ("English-US.Female-1", "English-US-Male-1", "english-us.female-2"):
        assert riva.synthesize(TEXT, voice_name=riva_name, sample_rate_hz=0).audio == default
    other = riva.synthesize(TEXT, voice_name="other", sample_rate_hz=0)
    assert other.audio == v1.synthesize(TEXT, voice="other", encoding="LINEAR_PCM16").audio
    assert len(pcm(other.audio)) == len(fake.audio_for(TEXT))        # the other voice, at its 16 kHz


@pytest.mark.parametrize("code", ["en-US", "en", "en-GB", "EN_us", ""])
def test_english_language_codes(riva, code):
    assert len(riva.synthesize("Hello", language_code=code).audio) == 2 * 5 * 256


def test_request_id_is_returned(server):
    from tts.server.proto_gen import riva_tts_pb2

    with grpc.insecure_channel(f"{HOST}:{server.server.port}") as channel:
        stub = riva_client.proto.riva_tts_pb2_grpc.RivaSpeechSynthesisStub(channel)
        req = client_tts.SynthesizeSpeechRequest(text="Hello", encoding=AudioEncoding.LINEAR_PCM)
        req.id.value = "call-42"
        assert stub.Synthesize(req, timeout=30).id.value == "call-42"
        assert [r.id.value for r in stub.SynthesizeOnline(iter([req]), timeout=30)] != []
        assert all(r.id.value == "call-42" for r in stub.SynthesizeOnline(iter([req]), timeout=30))
    assert riva_tts_pb2.DESCRIPTOR.services_by_name["RivaSpeechSynthesis"].full_name == \
        "nvidia.riva.tts.RivaSpeechSynthesis"


# ----------------------------------------------------------------------------- streaming

@pytest.mark.parametrize("encoding", ["LINEAR_PCM", "MULAW", "ALAW"])
def test_online_chunks_join_into_the_unary_audio(riva, encoding):
    enc = getattr(AudioEncoding, encoding)
    text = TEXT + ", " + TEXT                                          # several 8192-sample chunks
    chunks = list(riva.synthesize_online(text, encoding=enc, sample_rate_hz=0))
    assert len([c for c in chunks if c.audio]) >= 3
    assert b"".join(c.audio for c in chunks) == riva.synthesize(text, encoding=enc, sample_rate_hz=0).audio
    assert chunks[-1].meta.processed_text == text.lower() and chunks[-1].meta.text == text
    assert all(not c.meta.text for c in chunks[:-1])


def test_online_resamples_like_unary(riva):
    chunks = list(riva.synthesize_online(TEXT, sample_rate_hz=16000))
    assert b"".join(c.audio for c in chunks) == riva.synthesize(TEXT, sample_rate_hz=16000).audio


def test_online_speaks_each_streamed_text_in_turn(riva):
    texts = ["First text here.", "Then the second one."]
    chunks = list(riva.synthesize_online(texts, sample_rate_hz=0))
    metas = [c.meta.text for c in chunks if c.meta.text]
    assert metas == texts
    joined = b"".join(c.audio for c in chunks)
    assert joined == b"".join(riva.synthesize(t, sample_rate_hz=0).audio for t in texts)


# ----------------------------------------------------------------------------- config

def test_config_lists_the_voices(riva):
    stub = riva.stub
    configs = stub.GetRivaSynthesisConfig(client_tts.RivaSynthesisConfigRequest(), timeout=30).model_config
    by_name = {c.model_name: dict(c.parameters) for c in configs}
    assert set(by_name) == {"fake", "other"}
    assert by_name["fake"]["voice_name"] == "fake" and by_name["fake"]["language_code"] == "en-US"
    assert by_name["fake"]["sample_rate"] == "22050" and by_name["other"]["sample_rate"] == "16000"
    assert by_name["fake"]["is_default"] == "true" and by_name["other"]["is_default"] == "false"
    one = stub.GetRivaSynthesisConfig(client_tts.RivaSynthesisConfigRequest(model_name="other"), timeout=30)
    assert [c.model_name for c in one.model_config] == ["other"]
    code, message = error_of(lambda: stub.GetRivaSynthesisConfig(
        client_tts.RivaSynthesisConfigRequest(model_name="nope"), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "model_name" in message and "'nope'" in message


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, words", [
    (dict(voice_name="Spanish-US.Female-1"), ["voice_name", "'Spanish-US.Female-1'", "fake", "other"]),
    (dict(voice_name="nobody"), ["voice_name", "'nobody'"]),
    (dict(language_code="de-DE"), ["language_code", "'de-DE'", "English"]),
    (dict(language_code="fr"), ["language_code", "'fr'"]),
    (dict(text=""), ["text", "empty"]),
    (dict(text="   "), ["text", "empty"]),
    (dict(text="x" * 201), ["text", "201", "200"]),
    (dict(text="?!"), ["text", "speakable"]),
    (dict(sample_rate_hz=100), ["sample_rate_hz", "100"]),
    (dict(encoding=7), ["encoding", "7"]),
])
def test_bad_input_is_invalid_argument_with_a_clear_message(riva, kwargs, words):
    args = {"text": "Hello", **kwargs}
    for call in (lambda: riva.synthesize(**args), lambda: list(riva.synthesize_online(**args))):
        code, message = error_of(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, message
        assert all(w in message for w in words), message
        assert "Traceback" not in message and "internal" not in message


def test_streaming_refuses_container_encodings(riva):
    for enc in (AudioEncoding.FLAC, AudioEncoding.OGGOPUS):
        code, message = error_of(lambda: list(riva.synthesize_online("Hello", encoding=enc)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "encoding" in message and "LINEAR_PCM" in message


def test_zero_shot_prompts_are_refused(riva, tmp_path):
    prompt = tmp_path / "prompt.wav"
    prompt.write_bytes(b"RIFF0000WAVE")
    code, message = error_of(lambda: riva.synthesize("Hello", zero_shot_audio_prompt_file=prompt))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "zero_shot_data" in message


def test_bad_custom_dictionary_is_invalid_argument(riva):
    for entry, words in (({"tomato": "T AH0 XX Q"}, ["custom_dictionary", "'XX'", "'Q'"]),
                         ({"tomato": "təˈmɑːtoʊ"}, ["custom_dictionary", "ARPAbet"])):
        code, message = error_of(lambda: riva.synthesize("Hello", custom_dictionary=entry))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, message
        assert all(w in message for w in words), message


def test_a_valid_custom_dictionary_is_accepted_by_a_voice_without_phonemes(riva, v1):
    r = riva.synthesize(TEXT, sample_rate_hz=0, custom_dictionary={"riva": "R IY1 V AH0"})
    assert r.audio == v1.synthesize(TEXT, encoding="LINEAR_PCM16").audio


def test_unknown_fields_of_newer_clients_are_ignored(riva, v1):
    r = riva.synthesize(TEXT, sample_rate_hz=0, custom_configuration={"speed": "2"})
    assert r.audio == v1.synthesize(TEXT, encoding="LINEAR_PCM16").audio


# ----------------------------------------------------------------------------- auth, health, metrics

def test_bearer_token_via_metadata():
    st = start({"fake": [FakeSynthesizer()]}, auth_tokens=("s3cret",))
    try:
        uri = f"{HOST}:{st.server.port}"
        good = riva_client.SpeechSynthesisService(
            riva_client.Auth(uri=uri, metadata_args=[["authorization", "Bearer s3cret"]]))
        assert len(good.synthesize("Hello", sample_rate_hz=0).audio) == 2 * 5 * 256
        assert b"".join(c.audio for c in good.synthesize_online("Hello", sample_rate_hz=0)) != b""
        for metadata in (None, [["authorization", "Bearer wrong"]]):
            bad = riva_client.SpeechSynthesisService(riva_client.Auth(uri=uri, metadata_args=metadata))
            for call in (lambda: bad.synthesize("Hello"), lambda: list(bad.synthesize_online("Hello"))):
                code, message = error_of(call)
                assert code == grpc.StatusCode.UNAUTHENTICATED and "token" in message
    finally:
        st.stop()


def test_health_and_metrics_cover_the_riva_service(server, riva):
    import urllib.request

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"{HOST}:{server.server.port}") as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="nvidia.riva.tts.RivaSpeechSynthesis"), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    list(riva.synthesize_online("Count this stream"))
    error_of(lambda: list(riva.synthesize_online("Hello", language_code="xx")))
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=10).read().decode()
    lines = [ln for ln in body.splitlines() if ln.startswith("tts_requests_total") and "SynthesizeOnline" in ln]
    codes = {ln.split('code="')[1].split('"')[0]: float(ln.split()[-1]) for ln in lines}
    assert codes.get("OK", 0) >= 1 and codes.get("INVALID_ARGUMENT", 0) >= 1, lines


# ----------------------------------------------------------------------------- a real voice

@pytest.fixture(scope="module")
def fs_voice():
    from tts.options import SynthesisOptions
    from tts.voice import Voice

    voice = Voice.from_checkpoints(fastspeech=FIXTURES / "fastspeech/checkpoint_005000.pt",
                                   waveglow=FIXTURES / "waveglow/checkpoint_WaveGlow_ngc_style_ddp.pt", name="fs")
    voice.defaults = SynthesisOptions(sigma=0.0).merged_over(voice.defaults)      # no noise: repeatable
    return voice


@pytest.fixture(scope="module")
def real(fs_voice):
    from tts.synthesizer import Synthesizer
    from tts.text.lexicon import parse_lexicon

    lexicon = parse_lexicon("READ  R EH1 D\n", source="test.dict")
    st = start({"fs": [Synthesizer(fs_voice, lexicon=lexicon)]}, warmup=False)
    yield st
    st.stop()


def test_real_voice_audio_equals_tts_v1_and_custom_dictionary_changes_it(real):
    port = real.server.port
    riva = riva_client.SpeechSynthesisService(riva_client.Auth(uri=f"{HOST}:{port}"))
    text = "I say tomato."
    with TTSClient(f"{HOST}:{port}", timeout=60) as v1:
        want = v1.synthesize(text, encoding="LINEAR_PCM16")
    plain = riva.synthesize(text, sample_rate_hz=0)
    assert plain.audio == want.audio and plain.meta.processed_text == "i say tomato."
    custom = riva.synthesize(text, sample_rate_hz=0, custom_dictionary={"tomato": "T AH0 M AA1 T OW2"})
    assert custom.meta.processed_text == "i say {T AH0 M AA1 T OW2}."
    assert custom.audio != plain.audio
    # The dictionary is the call's own: the next call reads the text as before.
    assert riva.synthesize(text, sample_rate_hz=0).audio == plain.audio
    # The same phonemes written as an ARPAbet group give the same audio.
    assert riva.synthesize("I say {T AH0 M AA1 T OW2}.", sample_rate_hz=0).audio == custom.audio


def test_custom_dictionary_goes_on_top_of_the_servers_lexicon(real):
    riva = riva_client.SpeechSynthesisService(riva_client.Auth(uri=f"{HOST}:{real.server.port}"))
    r = riva.synthesize("Read it.", sample_rate_hz=0)
    assert r.meta.processed_text == "{R EH1 D} it."                       # the server's --lexicon
    r = riva.synthesize("Read it.", sample_rate_hz=0, custom_dictionary={"read": "R IY1 D"})
    assert r.meta.processed_text == "{R IY1 D} it."                       # the call's entry wins
    chunks = list(riva.synthesize_online("Read it.", sample_rate_hz=0, custom_dictionary={"it": "IH1 T"}))
    assert chunks[-1].meta.processed_text == "{R EH1 D} {IH1 T}."
