"""The OpenAI-compatible HTTP API of tts-server on loopback: the real ``openai`` client, audio equal to the
gRPC door's, errors in OpenAI's shape, auth, TLS, health, drain, metrics, and the README's curl examples."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import base64
import io
import json
import logging
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import openai
import pytest
import soundfile as sf

from tts.client import TTSClient
from tts.server.app import ServerConfig, TTSServer
from tts.server.audio import Encoding, decode
from tts.server.batcher import BatcherConfig
from tts.server.http_models import FORMATS, MODELS, OPENAI_VOICES
from tts.server.stream_encode import MP3_STREAM_DELAY
from tts.server.testing import FakeSynthesizer, FakeVoice, ServerThread
from tts.server.types import StreamPiece

pytestmark = pytest.mark.timeout(120)

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]
TEXT = "Hello there, this is the HTTP door of the server speaking."
PCM_STEP = 1 / 32767          # one step of 16-bit audio


def start(synths, **cfg) -> ServerThread:
    cfg.setdefault("batcher", BatcherConfig(max_batch_size=8, max_queue_delay_s=0.005))
    cfg.setdefault("max_text_chars", 200)
    server = TTSServer(synths, ServerConfig(host=HOST, port=0, metrics_port=0, http_port=0, **cfg))
    st = ServerThread(server)
    st.start()
    return st


@pytest.fixture(scope="module")
def fake():
    return FakeSynthesizer()


@pytest.fixture(scope="module")
def other():
    return FakeSynthesizer(voice=FakeVoice(name="other", sample_rate=16000))


@pytest.fixture(scope="module")
def server(fake, other):
    st = start({"fake": [fake], "other": [other]})
    yield st
    st.stop()


def base(st: ServerThread, scheme: str = "http") -> str:
    return f"{scheme}://{HOST}:{st.server.http_port}"


@pytest.fixture()
def oai(server):
    with openai.OpenAI(base_url=base(server) + "/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture()
def grpc_client(server):
    with TTSClient(f"{HOST}:{server.server.port}", timeout=30) as c:
        yield c


def request(st_or_url, path: str = "", body=None, *, raw: bytes | None = None, method: str | None = None,
            headers: dict | None = None, context=None) -> tuple[int, dict, bytes]:
    """(status, headers with lower-case names, body) of one plain HTTP request (urllib)."""
    url = (base(st_or_url) if isinstance(st_or_url, ServerThread) else st_or_url) + path
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60, context=context) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def speech_body(**kw) -> dict:
    return {"model": "tts-1", "input": TEXT, "voice": "alloy", **kw}


def assert_error(status: int, headers: dict, body: bytes, want_status: int, param=None, code=None) -> dict:
    assert status == want_status, body
    assert headers["content-type"] == "application/json"
    err = json.loads(body)
    assert set(err) == {"error"} and set(err["error"]) == {"message", "type", "param", "code"}
    assert err["error"]["message"] and isinstance(err["error"]["type"], str)
    assert err["error"]["param"] == param
    if code is not None:
        assert err["error"]["code"] == code
    return err["error"]


def grpc_audio(client: TTSClient, text: str, **kw) -> np.ndarray:
    r = client.synthesize(text, encoding="FLOAT32", **kw)
    return decode(r.audio, Encoding.FLOAT32)


def peak_hz(audio: np.ndarray, rate: int) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(audio))) * rate / len(audio))


def check_mp3(data: bytes, want: np.ndarray, rate: int) -> None:
    """A streamed MP3 decodes as one file to ``want`` delayed by the codec's delay (no Xing tag in a stream)."""
    got, got_rate = sf.read(io.BytesIO(data), dtype="float32")
    assert got_rate == rate
    frame = 576 if rate < 32000 else 1152
    d = MP3_STREAM_DELAY
    assert 0 <= len(got) - d - len(want) <= 2 * frame, (len(got), len(want))
    rms = lambda a: float(np.sqrt(np.mean(np.square(a))))             # noqa: E731
    assert rms(got[:d - 200]) < 0.01                                   # the codec's delay: silence
    assert rms(got[d + 200:d + 2200]) == pytest.approx(rms(want[200:2200]), rel=0.1)
    aligned = got[d:d + len(want)]
    assert np.corrcoef(aligned, want)[0, 1] > 0.99
    assert abs(peak_hz(aligned, rate) - peak_hz(want, rate)) < 5


# ----------------------------------------------------------------------------- the OpenAI client

@pytest.mark.parametrize("fmt", ["wav", "pcm"])
def test_openai_client_wav_and_pcm_equal_grpc_audio(oai, grpc_client, fmt):
    r = oai.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format=fmt)
    want = grpc_audio(grpc_client, TEXT)
    assert r.response.headers["x-sample-rate"] == "22050" and r.response.headers["x-voice"] == "fake"
    if fmt == "wav":
        assert r.response.headers["content-type"] == "audio/wav" and r.content[:4] == b"RIFF"
        got, rate = sf.read(io.BytesIO(r.content), dtype="float32")
        assert rate == 22050
    else:
        assert r.response.headers["content-type"] == "audio/pcm"
        got = np.frombuffer(r.content, dtype="<i2").astype(np.float32) / 32767
    assert len(got) == len(want)
    assert np.abs(got - want).max() <= PCM_STEP


def test_openai_client_mp3_is_the_same_audio(oai, grpc_client, fake):
    r = oai.audio.speech.create(model="tts-1-hd", voice="nova", input=TEXT)           # mp3: OpenAI's default
    assert r.response.headers["content-type"] == "audio/mpeg"
    check_mp3(r.content, grpc_audio(grpc_client, TEXT), 22050)


@pytest.mark.parametrize("fmt", ["mulaw", "alaw"])
def test_g711_formats_are_the_grpc_bytes(server, grpc_client, fmt):
    """mulaw/alaw (this server's extension of response_format): headerless G.711 at the voice's rate,
    byte for byte what tts.v1 sends for MULAW/ALAW, streamed as made."""
    status, headers, body = request(server, "/v1/audio/speech", speech_body(response_format=fmt))
    assert status == 200 and headers["x-sample-rate"] == "22050"
    assert headers["content-type"] == {"mulaw": "audio/basic", "alaw": "audio/x-alaw-basic"}[fmt]
    assert body == grpc_client.synthesize(TEXT, encoding=fmt.upper()).audio
    assert len(body) == len(grpc_audio(grpc_client, TEXT))                  # one byte a sample


def test_opus_and_flac_match_grpc(server, grpc_client, fake):
    status, headers, body = request(server, "/v1/audio/speech", speech_body(response_format="opus"))
    assert status == 200 and headers["content-type"] == "audio/ogg; codecs=opus"
    assert headers["x-sample-rate"] == "48000"                # 22050 is not an Opus rate
    got, rate = sf.read(io.BytesIO(body), dtype="float32")
    ref = decode(grpc_client.synthesize(TEXT, encoding="OGG_OPUS").audio, Encoding.OGG_OPUS)
    assert rate == 48000 and len(got) == len(ref)
    assert np.corrcoef(got, ref)[0, 1] > 0.99
    status, headers, body = request(server, "/v1/audio/speech", speech_body(response_format="flac"))
    assert status == 200 and headers["content-type"] == "audio/flac"
    assert body == grpc_client.synthesize(TEXT, encoding="FLAC").audio      # the same encoder, whole


@pytest.mark.parametrize("fmt", ["pcm", "wav", "mp3"])
def test_streaming_response_sends_audio_before_it_is_all_made(server, oai, monkeypatch, fmt):
    """The first bytes reach the client while the engine still holds back the rest of the audio."""
    release = threading.Event()
    watchdog = threading.Timer(20, release.set)          # a server that does not stream fails, never hangs
    rate = 22050
    t = np.arange(3 * rate) / rate
    audio = (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)

    async def held_stream(voice, text, options, deadline=None):
        yield StreamPiece(audio=audio[:rate])
        while not release.is_set():
            await asyncio.sleep(0.01)
        yield StreamPiece(audio=audio[rate:])
        yield StreamPiece(audio=np.zeros(0, np.float32), normalized_text=text, last=True)

    monkeypatch.setattr(server.server.engine, "stream", held_stream)
    watchdog.start()
    try:
        with oai.audio.speech.with_streaming_response.create(
                model="gpt-4o-mini-tts", voice="alloy", input="Held back", response_format=fmt,
                instructions="Speak calmly.") as r:
            assert r.headers["transfer-encoding"] == "chunked" and "content-length" not in r.headers
            chunks = r.iter_bytes()
            first = next(chunks)
            assert first and not release.is_set()          # arrived before the rest was made
            release.set()
            data = first + b"".join(chunks)
    finally:
        watchdog.cancel()
    if fmt == "pcm":
        got = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767
    elif fmt == "wav":
        assert data[:4] == b"RIFF" and data[4:8] == b"\xff\xff\xff\xff"        # length unknown when sent
        got, _ = sf.read(io.BytesIO(data), dtype="float32")
    else:
        check_mp3(data, audio, rate)
        return
    assert len(got) == len(audio) and np.abs(got - audio).max() <= PCM_STEP


def test_streaming_iter_bytes_of_the_real_engine_stream_equals_unary(oai, grpc_client):
    text = "Streamed through the engine, " * 6
    with oai.audio.speech.with_streaming_response.create(model="tts-1", voice="echo", input=text,
                                                         response_format="pcm") as r:
        pieces = list(r.iter_bytes(chunk_size=4096))
    got = np.frombuffer(b"".join(pieces), dtype="<i2").astype(np.float32) / 32767
    want = grpc_audio(grpc_client, text)
    assert len(pieces) > 1 and len(got) == len(want) and np.abs(got - want).max() <= PCM_STEP


def test_a_client_that_leaves_mid_stream_frees_its_call_quietly(server, monkeypatch, caplog):
    """Closing the connection after the first bytes closes the engine's stream (so its decoder rows and
    queue slots are freed), leaves no call in flight and logs no error."""
    closed = threading.Event()

    async def endless_stream(voice, text, options, deadline=None):
        try:
            while True:
                yield StreamPiece(audio=np.full(4096, 0.1, np.float32))
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    monkeypatch.setattr(server.server.engine, "stream", endless_stream)
    with caplog.at_level(logging.INFO):
        with socket.create_connection((HOST, server.server.http_port), timeout=30) as sock:
            body = json.dumps(speech_body(response_format="pcm")).encode()
            sock.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        assert closed.wait(20)
        deadline = time.monotonic() + 20
        while server.server.http.inflight and time.monotonic() < deadline:
            time.sleep(0.01)
    assert server.server.http.inflight == 0
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_a_fault_after_the_first_bytes_cuts_the_response_short(server, monkeypatch, caplog):
    """Once the status went out, a fault can only end the body early: the client sees an incomplete chunked
    body (never a complete-looking file), the server logs the fault once and keeps serving."""
    import http.client

    async def failing_stream(voice, text, options, deadline=None):
        yield StreamPiece(audio=np.full(4096, 0.1, np.float32))
        raise RuntimeError("simulated fault in the middle of a stream")

    monkeypatch.setattr(server.server.engine, "stream", failing_stream)
    with caplog.at_level(logging.INFO):
        conn = http.client.HTTPConnection(HOST, server.server.http_port, timeout=30)
        try:
            conn.request("POST", "/v1/audio/speech", body=json.dumps(speech_body(response_format="pcm")),
                         headers={"Content-Type": "application/json", "X-Request-Id": "cut-1"})
            r = conn.getresponse()
            assert r.status == 200
            with pytest.raises(http.client.IncompleteRead) as info:
                r.read()
            assert len(info.value.partial) == 2 * 4096
        finally:
            conn.close()
        deadline = time.monotonic() + 20
        while server.server.http.inflight and time.monotonic() < deadline:
            time.sleep(0.01)
    errors = [r for r in caplog.records if r.name == "tts.server.http" and r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cut-1" in errors[0].getMessage() and errors[0].exc_info
    monkeypatch.undo()
    assert request(server, "/v1/audio/speech", speech_body(response_format="pcm"))[0] == 200


def test_http_calls_share_the_engine_batches(server, fake):
    texts = [f"Concurrent request {i}" for i in range(12)]
    before = len(fake.batches)
    with cf.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda t: request(server, "/v1/audio/speech",
                                                  speech_body(input=t, response_format="pcm")), texts))
    for t, (status, _, body) in zip(texts, results):
        got = np.frombuffer(body, dtype="<i2").astype(np.float32) / 32767
        assert status == 200 and np.abs(got - fake.audio_for(t)).max() <= PCM_STEP
    sizes = fake.batches[before:]
    assert sum(sizes) == 12 and 1 < max(sizes) <= 8          # batched by the shared dynamic batcher


def test_voices_speed_and_voice_objects(server, oai, grpc_client, other):
    # A voice of the server by its name: its own rate.
    r = oai.audio.speech.create(model="tts-1", voice="other", input="Hi there", response_format="pcm")
    assert r.response.headers["x-sample-rate"] == "16000" and r.response.headers["x-voice"] == "other"
    got = np.frombuffer(r.content, dtype="<i2").astype(np.float32) / 32767
    assert np.abs(got - other.audio_for("Hi there")).max() <= PCM_STEP
    # OpenAI's voice object {"id": ...} names a voice the same way.
    status, headers, body = request(server, "/v1/audio/speech",
                                    speech_body(voice={"id": "other"}, input="Hi there", response_format="pcm"))
    assert status == 200 and body == r.content
    # speed is the speaking rate option: the same audio as gRPC's speaking_rate.
    r = oai.audio.speech.create(model="tts-1", voice="shimmer", input=TEXT, response_format="pcm", speed=2.0)
    got = np.frombuffer(r.content, dtype="<i2").astype(np.float32) / 32767
    want = grpc_audio(grpc_client, TEXT, options={"speaking_rate": 2.0})
    assert np.abs(got - want).max() <= PCM_STEP
    assert np.abs(want).max() == pytest.approx(0.25, abs=1e-3)        # the fake halves its amplitude at speed 2


@pytest.mark.parametrize("voice", OPENAI_VOICES)
def test_every_openai_voice_name_is_the_default_voice(server, voice):
    status, headers, _ = request(server, "/v1/audio/speech",
                                 speech_body(voice=voice, input="Hi", response_format="pcm"))
    assert status == 200 and headers["x-voice"] == "fake"


# ----------------------------------------------------------------------------- errors

LONG_VOICE = "v" * 500


@pytest.mark.parametrize("body, raw, status, param, code", [
    (None, b'{"model": "tts-1", "input": ', 400, None, "invalid_json"),
    (None, b"[1, 2]", 400, None, "invalid_body"),
    (speech_body(input=""), None, 400, "input", None),
    (speech_body(input="   "), None, 400, "input", None),
    (speech_body(input="!!! ???"), None, 400, "input", None),                     # nothing speakable
    (speech_body(input=12), None, 400, "input", None),
    (speech_body(input="a\ud800b"), None, 400, "input", None),                  # a lone surrogate escape
    (speech_body(voice=5), None, 400, "voice", None),
    ({"model": "tts-1", "voice": "alloy"}, None, 400, "input", "missing_required_parameter"),
    (speech_body(voice="nobody"), None, 400, "voice", "voice_not_found"),
    (speech_body(voice=LONG_VOICE), None, 400, "voice", "voice_not_found"),
    (speech_body(response_format="aac"), None, 400, "response_format", "unsupported_response_format"),
    (speech_body(response_format="ogg"), None, 400, "response_format", "unsupported_response_format"),
    (speech_body(input="x" * 201), None, 413, "input", "string_above_max_length"),
    (speech_body(speed=0.1), None, 400, "speed", None),
    (speech_body(speed=4.5), None, 400, "speed", None),
    (speech_body(speed="fast"), None, 400, "speed", None),
    (speech_body(model="whisper-1"), None, 400, "model", "model_not_found"),
    (speech_body(stream_format="sse"), None, 400, "stream_format", None),
])
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server, caplog, body, raw, status, param, code):
    with caplog.at_level(logging.INFO):
        got = request(server, "/v1/audio/speech", body, raw=raw)
    err = assert_error(*got, status, param=param, code=code)
    if body is not None and body.get("voice") == LONG_VOICE:
        assert LONG_VOICE not in err["message"] and "v" * 64 + "..." in err["message"]
    if body is not None and body.get("response_format") == "aac":
        assert "aac is not supported" in err["message"] and all(f in err["message"] for f in FORMATS)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]     # no tracebacks
    assert request(server, "/v1/audio/speech", speech_body(input="Still here", response_format="pcm"))[0] == 200


def test_openai_client_raises_its_own_errors(oai):
    with pytest.raises(openai.BadRequestError) as info:
        oai.audio.speech.create(model="tts-1", voice="nobody", input="Hi")
    assert info.value.status_code == 400 and info.value.body["param"] == "voice"
    with pytest.raises(openai.BadRequestError) as info:
        oai.audio.speech.create(model="tts-1", voice="alloy", input="Hi", response_format="aac")
    assert "aac" in info.value.body["message"]
    with pytest.raises(openai.APIStatusError) as info:
        oai.audio.speech.create(model="tts-1", voice="alloy", input="x" * 201)
    assert info.value.status_code == 413


def test_body_over_the_limit_is_413(server):
    """A body over ``max_receive_bytes`` (the gRPC message limit) is refused: by its Content-Length before it
    is read, and a chunked one once it passes the limit."""
    import http.client

    limit = server.server.config.max_receive_bytes
    with socket.create_connection((HOST, server.server.http_port), timeout=30) as sock:
        sock.sendall(f"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {limit + 10}\r\n\r\n".encode())
        reply = b""
        while b"}}" not in reply:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert json.loads(body)["error"]["code"] == "request_too_large"
    body = json.dumps(speech_body(input="x" * limit)).encode()
    conn = http.client.HTTPConnection(HOST, server.server.http_port, timeout=30)
    try:
        conn.request("POST", "/v1/audio/speech", body=(body[i:i + 65536] for i in range(0, len(body), 65536)),
                     headers={"Content-Type": "application/json"}, encode_chunked=True)
        r = conn.getresponse()
        assert_error(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read(), 413, code="request_too_large")
    finally:
        conn.close()


def test_unknown_route_and_method_are_openai_errors(server):
    assert_error(*request(server, "/v1/nothing"), 404, code="not_found")
    assert_error(*request(server, "/v1/audio/speech"), 405, code="method_not_allowed")        # GET


def test_internal_fault_is_500_with_request_id_and_server_keeps_serving(server, fake, caplog):
    with caplog.at_level(logging.ERROR, logger="tts.server.http"):
        status, headers, body = request(server, "/v1/audio/speech", speech_body(input=fake.fail_text),
                                        headers={"X-Request-Id": "req-42"})
    err = assert_error(status, headers, body, 500, code="internal_error")
    assert "req-42" in err["message"] and headers["x-request-id"] == "req-42"
    assert any(r.exc_info and "req-42" in r.getMessage() for r in caplog.records)
    assert request(server, "/v1/audio/speech", speech_body(response_format="pcm"))[0] == 200


def test_full_queue_is_429_and_recovers():
    slow = FakeSynthesizer(delay_s=0.3)
    st = start({"fake": [slow]}, batcher=BatcherConfig(max_batch_size=1, max_queue_delay_s=0, max_queue_size=2))
    try:
        with cf.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: request(st, "/v1/audio/speech",
                                                      speech_body(input=f"text {i}", response_format="pcm")),
                                    range(8)))
        statuses = [s for s, _, _ in results]
        # the two queued requests are always served; a third only if the worker took one before the
        # rest arrived; eight in 0.3 s cannot all fit
        assert statuses.count(429) >= 1 and statuses.count(200) >= 2 and set(statuses) <= {200, 429}
        for s, h, b in results:
            if s == 429:
                assert_error(s, h, b, 429, code="queue_full")
                assert h["retry-after"] == "1"
        assert request(st, "/v1/audio/speech", speech_body(response_format="pcm"))[0] == 200
    finally:
        st.stop()


# ----------------------------------------------------------------------------- info endpoints

def test_health_ready_models_voices_docs(server):
    status, _, body = request(server, "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, _, body = request(server, "/ready")
    assert status == 200 and json.loads(body)["status"] == "ready"
    status, _, body = request(server, "/v1/models")
    models = json.loads(body)
    assert status == 200 and models["object"] == "list"
    assert [m["id"] for m in models["data"]] == list(MODELS) and {m["object"] for m in models["data"]} == {"model"}
    assert json.loads(request(server, "/v1/models/tts-1")[2])["id"] == "tts-1"
    assert_error(*request(server, "/v1/models/nope"), 404, param="model", code="model_not_found")
    status, _, body = request(server, "/v1/audio/voices")
    voices = json.loads(body)
    assert [(v["name"], v["sample_rate"], v["default"]) for v in voices["voices"]] == [
        ("fake", 22050, True), ("other", 16000, False)]
    assert voices["openai_aliases"] == {v: "fake" for v in OPENAI_VOICES}
    assert voices["max_input_chars"] == 200 and voices["response_formats"] == list(FORMATS)
    status, headers, body = request(server, "/docs")
    assert status == 200 and headers["content-type"].startswith("text/html") and b"swagger" in body.lower()
    status, _, body = request(server, "/openapi.json")
    spec = json.loads(body)
    assert status == 200 and "/v1/audio/speech" in spec["paths"]
    schema = spec["components"]["schemas"]["SpeechRequest"]
    assert {"model", "input", "voice"} <= set(schema["required"])


def test_openai_client_lists_models(oai):
    assert [m.id for m in oai.models.list()] == list(MODELS)


def test_http_calls_are_counted_in_the_shared_metrics(server):
    request(server, "/v1/audio/speech", speech_body(response_format="pcm"))
    request(server, "/v1/audio/speech", speech_body(voice="nobody"))
    text = urllib.request.urlopen(f"http://{HOST}:{server.server.metrics_port}/metrics", timeout=10).read().decode()

    def count(code: str) -> float:
        m = re.search(rf'tts_requests_total{{code="{code}",method="http.speech"}} (\S+)', text)
        return float(m.group(1)) if m else 0.0

    assert count("200") >= 1 and count("400") >= 1
    assert "tts_time_to_first_audio_seconds_count" in text


# ----------------------------------------------------------------------------- auth, TLS

def test_bearer_token_auth_with_openai_shape():
    st = start({"fake": [FakeSynthesizer()]}, auth_tokens=("s3cret",))
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            status, h, body = request(st, "/v1/audio/speech", speech_body(), headers=headers)
            assert_error(status, h, body, 401, code="invalid_api_key")
            assert h["www-authenticate"] == "Bearer"
            assert request(st, "/v1/models", headers=headers)[0] == 401
        # Auth comes first: a bad body without a token is still 401.
        assert request(st, "/v1/audio/speech", raw=b"{nope")[0] == 401
        with openai.OpenAI(base_url=base(st) + "/v1", api_key="wrong", max_retries=0) as c:
            with pytest.raises(openai.AuthenticationError) as info:
                c.audio.speech.create(model="tts-1", voice="alloy", input="Hi")
            assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
        with openai.OpenAI(base_url=base(st) + "/v1", api_key="s3cret", max_retries=0) as c:
            r = c.audio.speech.create(model="tts-1", voice="alloy", input="Hi", response_format="wav")
            assert r.content[:4] == b"RIFF"
        for path in ("/health", "/ready", "/docs", "/openapi.json"):          # probes and docs stay open
            assert request(st, path)[0] == 200
    finally:
        st.stop()


def _openssl_cert(tmp_path: Path, name: str) -> tuple[bytes, bytes]:
    """(cert, key) PEM made with the README's openssl command (self-signed, CN=localhost, SAN 127.0.0.1)."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "30", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(tmp_path / f"{name}.key"), "-out", str(tmp_path / f"{name}.pem")],
                   check=True, capture_output=True)
    return (tmp_path / f"{name}.pem").read_bytes(), (tmp_path / f"{name}.key").read_bytes()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_tls_with_a_self_signed_certificate_and_mtls(tmp_path, caplog):
    import ssl

    from tts.server.app import TLSConfig

    cert, key = _openssl_cert(tmp_path, "server")
    caplog.set_level(logging.INFO)
    st = start({"fake": [FakeSynthesizer()]}, tls=TLSConfig(cert=cert, key=key))
    try:
        url = base(st, "https")
        http_client = openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=str(tmp_path / "server.pem")))
        with openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0, http_client=http_client) as c:
            r = c.audio.speech.create(model="tts-1", voice="alloy", input="Over TLS", response_format="wav")
        assert sf.read(io.BytesIO(r.content))[1] == 22050
        with pytest.raises(urllib.error.URLError):                                      # an unknown issuer
            urllib.request.urlopen(url + "/health", timeout=10)
        with pytest.raises((ConnectionError, urllib.error.URLError, OSError)):           # plaintext to TLS
            urllib.request.urlopen(base(st) + "/health", timeout=10).read()
        with TTSClient(f"{HOST}:{st.server.port}", root_cert=cert, timeout=10) as g:    # gRPC: same material
            assert g.synthesize("Over TLS").audio[:4] == b"RIFF"
    finally:
        st.stop()
    client_cert, client_key = _openssl_cert(tmp_path, "client")
    st = start({"fake": [FakeSynthesizer()]}, tls=TLSConfig(cert=cert, key=key, client_ca=client_cert))
    try:
        ctx = ssl.create_default_context(cafile=str(tmp_path / "server.pem"))
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):          # no client certificate
            urllib.request.urlopen(base(st, "https") + "/health", timeout=10, context=ctx).read()
        ctx.load_cert_chain(str(tmp_path / "client.pem"), str(tmp_path / "client.key"))
        assert request(base(st, "https"), "/health", context=ctx)[0] == 200
    finally:
        st.stop()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]   # refused handshakes: quiet


# ----------------------------------------------------------------------------- lifecycle

def test_drain_finishes_inflight_calls_and_refuses_new_ones():
    slow = FakeSynthesizer(delay_s=1.5)
    st = start({"fake": [slow]})
    port = st.server.http_port
    try:
        with cf.ThreadPoolExecutor(2) as pool:
            inflight = pool.submit(request, st, "/v1/audio/speech",
                                   speech_body(input="In flight", response_format="pcm"))
            deadline = time.monotonic() + 30
            while st.server.http.inflight == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert st.server.http.inflight == 1
            stopper = pool.submit(st.call, st.server.stop(10), 60)
            while request(st, "/ready")[0] != 503 and time.monotonic() < deadline:
                time.sleep(0.01)
            err = assert_error(*request(st, "/ready"), 503, code="draining")
            assert "draining" in err["message"]
            assert json.loads(request(st, "/health")[2])["status"] == "draining"
            status, headers, body = request(st, "/v1/audio/speech", speech_body(input="Too late"))
            assert_error(status, headers, body, 503, code="draining")
            status, _, audio = inflight.result(timeout=60)
            assert status == 200 and len(audio) == 2 * len(slow.audio_for("In flight"))
            stopper.result(timeout=60)
        with pytest.raises(OSError):
            socket.create_connection((HOST, port), timeout=5)
    finally:
        st.stop()


def test_port_zero_and_http_off_by_default(server):
    assert server.server.http_port and server.server.http_port not in (0, server.server.port)
    assert ServerConfig().http_port is None
    with pytest.raises(ValueError, match="http_port"):
        ServerConfig(http_port=70000)


def test_cli_flag_and_a_busy_port_name_the_flag(capsys):
    from tts.cli.server import build_parser, main, server_config

    args = build_parser().parse_args(["--http-port", "0"])
    assert server_config(args).http_port == 0
    assert server_config(build_parser().parse_args([])).http_port is None
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc = main(["--host", HOST, "--port", "0", "--metrics-port", "-1", "--http-port", str(port)])
    err = capsys.readouterr().err
    assert rc != 0 and "HTTP port" in err and "--http-port" in err and "Traceback" not in err
    rc = main(["--http-port", "70000"])
    assert rc != 0 and "--http-port must be in 0..65535" in capsys.readouterr().err


# ----------------------------------------------------------------------------- real voices

def test_reference_voices_over_http_equal_grpc_unary():
    """The small random-weight reference voices (Tacotron2 through the continuous scheduler, FastSpeech through
    the batcher, both with WaveGlow vocoded in streamed chunks) give over HTTP the audio of gRPC's unary call."""
    from tts.options import SynthesisOptions
    from tts.synthesizer import Synthesizer
    from tts.voice import Voice

    fixtures = ROOT / "tests" / "fixtures" / "reference"
    waveglow = fixtures / "waveglow/checkpoint_WaveGlow_ngc_style_ddp.pt"
    t2 = Voice.from_checkpoints(tacotron2=fixtures / "tacotron2/checkpoint_Tacotron2_current_1gpu.pt",
                                waveglow=waveglow, name="t2")
    fs = Voice.from_checkpoints(fastspeech=fixtures / "fastspeech/checkpoint_005000.pt", waveglow=waveglow, name="fs")
    for v in (t2, fs):      # deterministic defaults: HTTP has no sigma or dropout fields
        v.defaults = SynthesisOptions(sigma=0.0, prenet_dropout=0.0).merged_over(v.defaults)
    st = start({"t2": [Synthesizer(t2, max_batch=8)], "fs": [Synthesizer(fs, max_batch=8)]}, warmup=False,
               stream_chunk_frames=16, stream_first_chunk_frames=4, stream_overlap_frames=8)
    try:
        with TTSClient(f"{HOST}:{st.server.port}", timeout=120) as g, \
                openai.OpenAI(base_url=base(st) + "/v1", api_key="k", max_retries=0, timeout=120) as c:
            lengths = {}
            for voice, speed in (("t2", None), ("fs", None), ("fs", 1.5)):
                text = "Hello there."
                kw = {} if speed is None else {"speed": speed}
                r = c.audio.speech.create(model="tts-1", voice=voice, input=text, response_format="wav", **kw)
                got, rate = sf.read(io.BytesIO(r.content), dtype="float32")
                want = grpc_audio(g, text, voice=voice, options={} if speed is None else {"speaking_rate": speed})
                assert rate == 22050 and len(got) == len(want) > 0, voice
                assert np.abs(got - np.clip(want, -1, 1)).max() <= PCM_STEP + 1e-6, voice
                lengths[voice, speed] = len(got)
            assert lengths["fs", 1.5] < lengths["fs", None]             # speed reached FastSpeech's length regulator
    finally:
        st.stop()


# ----------------------------------------------------------------------------- the README

def readme_http_block() -> str:
    """The one runnable sh block of the README's HTTP API section, as written."""
    from test_readme import MARKED, README, section

    blocks = MARKED.findall(section(README.read_text(encoding="utf-8"), "## HTTP API (OpenAI-compatible)"))
    runs = [code for kind, code in blocks if kind == "run"]
    assert len(runs) == 1
    return runs[0]


@pytest.mark.timeout(300)
def test_readme_curl_examples_run_as_written(tmp_path):
    """The README's block runs in bash -e: the real tts-server (bundled voice) and the curl lines, with only the
    ports changed (free ones in place of 50051 and 8000; --metrics-port 0 in case 8002 is taken)."""
    from test_readme import free_port, run_block

    code = readme_http_block()
    assert "curl" in code and "--host 127.0.0.1" in code and "kill %1" in code
    grpc_port, http_port = free_port(), free_port()
    run = (code.replace("--port 50051", f"--port {grpc_port} --metrics-port 0")
               .replace("--http-port 8000", f"--http-port {http_port}").replace(":8000/", f":{http_port}/"))
    assert "8000" not in run and "50051" not in run
    r = run_block(run, tmp_path, 280)
    assert r.returncode == 0, r.stdout
    assert "Traceback" not in r.stdout, r.stdout
    assert f"HTTP (OpenAI-compatible) on port {http_port}" in r.stdout
    assert "SIGTERM received" in r.stdout and "tts-server: stopped" in r.stdout, r.stdout
    wav, rate = sf.read(tmp_path / "hello.wav", dtype="float32")
    assert rate == 22050 and len(wav) > 0.3 * rate
    mp3, rate = sf.read(tmp_path / "hello.mp3", dtype="float32")
    assert rate == 22050 and 0 <= len(mp3) - MP3_STREAM_DELAY - len(wav) <= 2 * 576
    pcm = (tmp_path / "hello.pcm").read_bytes()
    assert len(pcm) > 0.3 * 2 * 22050 and len(pcm) % 2 == 0
    voices, _ = json.JSONDecoder().raw_decode(r.stdout[r.stdout.index('{"voices"'):])
    assert voices["default_voice"] == "heart" and voices["openai_aliases"]["alloy"] == "heart"
    timed = json.loads((tmp_path / "hello.json").read_text())
    assert [w["word"] for w in timed["words"]] == ["It", "costs", "$5"]
    assert timed["normalized_text"].startswith("it costs five dollars")
    audio, rate = sf.read(io.BytesIO(base64.b64decode(timed["audio"])), dtype="float32")
    assert rate == timed["sample_rate"] == 22050
    ends = [w["end"] for w in timed["words"]]
    assert ends == sorted(ends) and 0 < ends[-1] <= len(audio) / rate + 1e-3


def test_readme_python_example_runs_as_written(server, tmp_path, monkeypatch):
    """The README's OpenAI SDK example, with the port of this test's server in place of 8000."""
    from test_readme import README, section

    body = section(README.read_text(encoding="utf-8"), "## HTTP API (OpenAI-compatible)")
    (code,) = re.findall(r"```python\n(.*?)```", body, re.S)
    assert "127.0.0.1:8000" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace(":8000/", f":{server.server.http_port}/"), "README.md", "exec"), {})
    audio, rate = sf.read(tmp_path / "hello.wav")
    assert rate == 22050 and len(audio) == 256 * len("Hello there.")
