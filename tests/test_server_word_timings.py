"""tts.v1 word timings (unary and streaming, batcher and Tacotron2 scheduler, eager and slot decoder) and the
MP3 / MULAW / ALAW encodings through the server and tts-client."""

from __future__ import annotations

import subprocess
import sys

import grpc
import numpy as np
import pytest
import soundfile as sf

from conftest import fixture_synths, serve_synths
from tts.client import TTSClient
from tts.options import SynthesisOptions
from tts.server.app import ServerConfig, TTSServer
from tts.server.audio import Encoding, decode
from tts.server.batcher import BatcherConfig
from tts.server.proto_gen import tts_pb2
from tts.server.testing import FakeSynthesizer, ServerThread

pytestmark = pytest.mark.timeout(600)

HOST = "127.0.0.1"
DET = dict(prenet_dropout=0.0, sigma=0.0, max_decoder_steps=80)
TEXT = "Hello there. How are you? Fine, thanks."     # three pieces at max_piece_chars=16
WORDS = ["Hello", "there", "How", "are", "you", "Fine", "thanks"]


@pytest.fixture(scope="module")
def synths():
    return fixture_synths()


def _serve(synths, scheduler_options=None) -> ServerThread:
    return serve_synths(synths, 2, scheduler_options)


@pytest.fixture(scope="module")
def expected(synths):
    return {k: s.synthesize(TEXT, SynthesisOptions(**DET), word_timings=True) for k, s in synths.items()}


@pytest.fixture(scope="module")
def server(synths):
    st = _serve(synths)
    yield st
    st.stop()


@pytest.fixture(scope="module")
def slot_server(synths):
    st = _serve({"t2": synths["t2"]}, {"decoder": "slots", "steps_per_replay": 4})
    yield st
    st.stop()


def same_words(got, want, tol):
    assert [w.word for w in got] == [w.word for w in want] == WORDS
    assert [(w.char_start, w.char_end) for w in got] == [(w.char_start, w.char_end) for w in want]
    np.testing.assert_allclose([w.start_seconds for w in got], [w.start_s for w in want], atol=tol)
    np.testing.assert_allclose([w.end_seconds for w in got], [w.end_s for w in want], atol=tol)


def unary_and_stream(st, voice):
    with TTSClient(f"{HOST}:{st.server.port}", timeout=300) as c:
        r = c.synthesize(TEXT, voice=voice, encoding="FLOAT32", options=DET, word_timings=True)
        plain = c.synthesize(TEXT, voice=voice, encoding="FLOAT32", options=DET)
        chunks = list(c.stream(TEXT, voice=voice, encoding="FLOAT32", options=DET, word_timings=True))
        plain_chunks = list(c.stream(TEXT, voice=voice, encoding="FLOAT32", options=DET))
    assert len(plain.words) == 0 and not any(len(ch.words) for ch in plain_chunks)     # off by default
    return r, chunks


def check_stream(chunks, r, tol):
    sent = 0
    got = []
    for ch in chunks:
        sent += len(ch.audio) // 4
        for w in ch.words:
            assert w.end_seconds <= sent / ch.sample_rate_hz + 1e-6    # a chunk carries words it completes
        got.extend(ch.words)
    assert chunks[-1].last
    assert [w.word for w in got] == [w.word for w in r.words]
    np.testing.assert_allclose([w.start_seconds for w in got], [w.start_seconds for w in r.words], atol=tol)
    np.testing.assert_allclose([w.end_seconds for w in got], [w.end_seconds for w in r.words], atol=tol)
    assert sum(1 for ch in chunks[:-1] if len(ch.words)) >= 1          # words arrive before the end


@pytest.mark.parametrize("voice", ["fs", "t2"])
def test_unary_and_streamed_words_equal_the_pipeline(server, expected, voice):
    r, chunks = unary_and_stream(server, voice)
    frame = 256 / r.sample_rate_hz
    same_words(r.words, expected[voice].words, 1e-6 if voice == "fs" else frame)
    assert r.words[-1].end_seconds <= r.duration_seconds + 1e-6
    check_stream(chunks, r, 1e-6 if voice == "fs" else frame)


def test_slot_decoder_words_equal_the_pipeline(slot_server, expected):
    assert slot_server.server.engine.schedulers["t2"][0].use_slots
    r, chunks = unary_and_stream(slot_server, "t2")
    frame = 256 / r.sample_rate_hz
    same_words(r.words, expected["t2"].words, frame)
    check_stream(chunks, r, frame)


def test_words_keep_their_times_when_the_audio_is_resampled(server, expected):
    with TTSClient(f"{HOST}:{server.server.port}", timeout=300) as c:
        r = c.synthesize(TEXT, voice="fs", encoding="WAV", sample_rate_hz=16000, options=DET, word_timings=True)
    assert r.sample_rate_hz == 16000
    same_words(r.words, expected["fs"].words, 1e-6)


# ------------------------------------------------------------------ formats (fake voice)

@pytest.fixture(scope="module")
def fake():
    return FakeSynthesizer()


@pytest.fixture(scope="module")
def fake_server(fake):
    st = ServerThread(TTSServer({"fake": [fake]}, ServerConfig(host=HOST, port=0, metrics_port=None,
                                                               batcher=BatcherConfig(max_batch_size=4))))
    st.start()
    yield st
    st.stop()


@pytest.fixture()
def client(fake_server):
    with TTSClient(f"{HOST}:{fake_server.server.port}", timeout=60) as c:
        yield c


@pytest.mark.parametrize("encoding", ["MULAW", "ALAW"])
def test_g711_unary_and_streaming(client, fake, encoding):
    text = "A G.711 stream needs several chunks of audio to test it properly"
    want = fake.audio_for(text)
    r = client.synthesize(text, encoding=encoding)
    assert r.encoding == Encoding[encoding] and r.sample_rate_hz == 22050
    assert len(r.audio) == len(want)                      # one byte a sample, no header
    got = decode(r.audio, Encoding[encoding])
    assert np.abs(got - want).max() < 0.04                # 8-bit logarithmic samples
    chunks = list(client.stream(text, encoding=encoding))
    assert len(chunks) > 2 and b"".join(c.audio for c in chunks) == r.audio     # chunks concatenate
    assert [c.offset_samples for c in chunks] == list(np.cumsum([0] + [len(c.audio) for c in chunks[:-1]]))


def test_mp3_unary_at_its_rate_or_resampled_to_48k(client, fake):
    want = fake.audio_for("Some MP3 audio")
    r = client.synthesize("Some MP3 audio", encoding="MP3")
    assert r.encoding == tts_pb2.MP3 and r.sample_rate_hz == 22050      # an MP3 rate
    got = decode(r.audio, Encoding.MP3)
    assert abs(len(got) - len(want)) <= 2400
    n = min(len(got), len(want))
    spectrum = lambda a: np.argmax(np.abs(np.fft.rfft(a[:n])))          # noqa: E731 - the same tone
    assert abs(int(spectrum(got)) - int(spectrum(want))) <= 2
    r = client.synthesize("Some MP3 audio", encoding="MP3", sample_rate_hz=20000)
    assert r.sample_rate_hz == 48000 and sf.info(__import__("io").BytesIO(r.audio)).samplerate == 48000


def test_mp3_cannot_stream(client):
    with pytest.raises(grpc.RpcError) as info:
        list(client.stream("hi", encoding="MP3"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "encoding" in info.value.details()
    assert "MULAW" in info.value.details()


def run_client(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tts.cli.client", *args], capture_output=True, text=True,
                          timeout=120)


def test_tts_client_writes_mp3_ulaw_alaw(fake_server, fake, tmp_path):
    target = f"{HOST}:{fake_server.server.port}"
    want = fake.audio_for("Client formats")
    for name, enc in (("a.mp3", "MP3"), ("a.ulaw", "MULAW"), ("a.alaw", "ALAW")):
        r = run_client("--server", target, "Client formats", "--out", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
        data = (tmp_path / name).read_bytes()
        got = decode(data, Encoding[enc])
        if enc == "MP3":
            assert sf.info(tmp_path / name).format == "MP3" and abs(len(got) - len(want)) <= 2400
        else:
            assert len(data) == len(want) and np.abs(got - want).max() < 0.04
    r = run_client("--server", target, "--stream", "--encoding", "ALAW", "Client formats",
                   "--out", str(tmp_path / "s.alaw"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "s.alaw").read_bytes() == (tmp_path / "a.alaw").read_bytes()
    r = run_client("--server", target, "--stream", "--encoding", "MP3", "x", "--out", str(tmp_path / "s.mp3"))
    assert r.returncode != 0 and "--stream" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("voice", ["t2", "fs"])
def test_http_timestamps_carry_the_words_of_the_grpc_reply(synths, voice):
    """``POST /v1/audio/speech`` with ``"timestamps": true`` (the HTTP door's documented option): one JSON
    body with the whole audio (base64, response_format) and the words of the tts.v1 reply for the same text."""
    import base64
    import io
    import json
    import urllib.request

    import dataclasses

    from tts.synthesizer import Synthesizer
    # OpenAI's body has no prenet_dropout or sigma: the voices' own defaults are made deterministic,
    # so that the HTTP call decodes what the gRPC call with DET does
    det = {k: Synthesizer(dataclasses.replace(s.voice, defaults=SynthesisOptions(**DET).merged_over(
        s.voice.defaults)), max_batch=4, max_piece_chars=16) for k, s in synths.items()}
    srv = TTSServer({k: [v] for k, v in det.items()},
                    ServerConfig(host=HOST, port=0, metrics_port=0, http_port=0, warmup=False,
                                 batcher=BatcherConfig(max_batch_size=2, max_queue_delay_s=0.002)),
                    default_voice="t2")
    st = ServerThread(srv)
    st.start()
    try:
        with TTSClient(f"{HOST}:{srv.port}", timeout=120) as c:
            want = c.synthesize(TEXT, voice=voice, encoding="FLOAT32", options=DET, word_timings=True)
        req = urllib.request.Request(
            f"http://{HOST}:{srv.http_port}/v1/audio/speech", method="POST",
            headers={"Content-Type": "application/json"},
            data=json.dumps({"model": "tts-1", "voice": voice, "input": TEXT, "response_format": "wav",
                             "timestamps": True}).encode())
        with urllib.request.urlopen(req, timeout=120) as r:
            assert r.headers["content-type"] == "application/json"
            body = json.loads(r.read())
    finally:
        st.stop()
    assert body["format"] == "wav" and body["sample_rate"] == 22050
    audio, rate = sf.read(io.BytesIO(base64.b64decode(body["audio"])), dtype="float32")
    assert rate == 22050
    duration = len(audio) / rate
    assert [w["word"] for w in body["words"]] == [w.word for w in want.words] == WORDS
    for got, w in zip(body["words"], want.words):
        assert got["start"] == pytest.approx(w.start_seconds, abs=1e-3)
        assert got["end"] == pytest.approx(w.end_seconds, abs=1e-3)
        assert TEXT[got["char_start"]:got["char_end"]] == got["word"]
        assert 0 <= got["start"] <= got["end"] <= duration + 1e-3
    starts = [w["start"] for w in body["words"]]
    assert starts == sorted(starts)
