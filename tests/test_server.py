"""The gRPC server on loopback with a model-free fake voice: API, errors, batching, health, metrics, security."""

from __future__ import annotations

import concurrent.futures as cf
import io
import subprocess
import time
import urllib.request

import grpc
import numpy as np
import pytest
import soundfile as sf

from tts.client import TTSClient
from tts.server.app import ServerConfig, TLSConfig, TTSServer
from tts.server.audio import Encoding, decode
from tts.server.batcher import BatcherConfig
from tts.server.proto_gen import tts_pb2, tts_pb2_grpc
from tts.server.testing import FakeSynthesizer, FakeVoice, ServerThread

pytestmark = pytest.mark.timeout(120)

HOST = "127.0.0.1"


def start(synths, **cfg) -> ServerThread:
    cfg.setdefault("batcher", BatcherConfig(max_batch_size=8, max_queue_delay_s=0.005))
    server = TTSServer(synths, ServerConfig(host=HOST, port=0, metrics_port=0, max_text_chars=200, **cfg))
    st = ServerThread(server)
    st.start()
    for ss in synths.values():          # forget the warm-up runs
        for s in ss:
            s.batches.clear()
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


@pytest.fixture()
def client(server):
    with TTSClient(f"{HOST}:{server.server.port}", timeout=30) as c:
        yield c


def code_of(fn) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


# ----------------------------------------------------------------------------- API

def test_unary_wav_matches_the_voice(client, fake):
    r = client.synthesize("Hello world")
    audio, rate = sf.read(io.BytesIO(r.audio), dtype="float32")
    want = fake.audio_for("Hello world")
    assert rate == r.sample_rate_hz == 22050
    assert r.encoding == tts_pb2.WAV
    assert len(audio) == len(want)
    assert np.abs(audio - want).max() < 1e-4          # 16-bit quantisation
    assert r.duration_seconds == pytest.approx(len(want) / 22050)
    assert r.normalized_text == "hello world"
    assert r.voice == "fake"
    assert r.timings.batch_size >= 1 and r.timings.total_seconds > 0


@pytest.mark.parametrize("encoding", ["LINEAR_PCM16", "FLOAT32", "FLAC", "OGG_OPUS"])
def test_encodings(client, fake, encoding):
    r = client.synthesize("Encode me", encoding=encoding)
    want = fake.audio_for("Encode me")
    got = decode(r.audio, Encoding[encoding])
    if encoding == "OGG_OPUS":
        assert r.sample_rate_hz == 48000          # 22050 is not an Opus rate
        assert abs(len(got) - len(want) * 48000 / 22050) < 2000
        return
    assert r.sample_rate_hz == 22050
    assert len(got) == len(want)
    tol = 1e-6 if encoding == "FLOAT32" else 1e-4
    assert np.abs(got - want).max() < tol


def test_unspecified_encoding_is_wav(client):
    r = client.synthesize("Default", encoding=0)
    assert r.encoding == tts_pb2.WAV and r.audio[:4] == b"RIFF"


def test_resampling(client, fake):
    r = client.synthesize("Resample me", encoding="FLOAT32", sample_rate_hz=16000)
    got = decode(r.audio, Encoding.FLOAT32)
    want = fake.audio_for("Resample me")
    assert r.sample_rate_hz == 16000
    assert len(got) == int(np.ceil(len(want) * 16000 / 22050))
    # Same tone: the spectrum peaks at the same frequency.
    f_got = np.argmax(np.abs(np.fft.rfft(got))) * 16000 / len(got)
    f_want = np.argmax(np.abs(np.fft.rfft(want))) * 22050 / len(want)
    assert abs(f_got - f_want) < 5


def test_streaming_equals_unary(client, fake):
    text = "Stream this text please, it is long enough to need several chunks of audio"
    chunks = list(client.stream(text, encoding="FLOAT32"))
    audio = np.concatenate([decode(c.audio, Encoding.FLOAT32) for c in chunks])
    assert len(chunks) > 2
    assert chunks[-1].last and chunks[-1].normalized_text == "stream this text please, it is long enough to need several chunks of audio"
    assert all(not c.last for c in chunks[:-1])
    offsets = [c.offset_samples for c in chunks]
    sizes = [len(c.audio) // 4 for c in chunks]
    assert offsets == list(np.cumsum([0] + sizes[:-1]))
    np.testing.assert_array_equal(audio, fake.audio_for(text))


def test_streaming_pcm16_default_and_resampled(client, fake):
    chunks = list(client.stream("Stream", encoding=0))
    assert sum(len(c.audio) for c in chunks) == 2 * len(fake.audio_for("Stream"))
    chunks = list(client.stream("Stream", encoding="LINEAR_PCM16", sample_rate_hz=44100))
    assert {c.sample_rate_hz for c in chunks} == {44100}
    assert sum(len(c.audio) for c in chunks) // 2 == 2 * len(fake.audio_for("Stream"))


def test_list_voices(client):
    r = client.list_voices()
    assert [(v.name, v.sample_rate_hz, v.is_default) for v in r.voices] == [
        ("fake", 22050, True), ("other", 16000, False)]
    assert r.max_text_chars == 200


def test_other_voice(client):
    r = client.synthesize("Hi there", voice="other", encoding="FLOAT32")
    assert r.sample_rate_hz == 16000 and r.voice == "other"


def test_64_concurrent_calls_all_correct(client, fake):
    texts = [f"Request number {i} " + "x" * (i % 7) for i in range(64)]
    n_batches = len(fake.batches)
    with cf.ThreadPoolExecutor(64) as pool:
        results = list(pool.map(lambda t: client.synthesize(t, encoding="FLOAT32"), texts))
    for t, r in zip(texts, results):
        np.testing.assert_array_equal(decode(r.audio, Encoding.FLOAT32), fake.audio_for(t))
        assert r.normalized_text == " ".join(t.lower().split())
    sizes = fake.batches[n_batches:]
    assert sum(sizes) == 64 and max(sizes) > 1 and max(sizes) <= 8   # batched, within the limit


# ------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("kwargs, field", [
    (dict(text=""), "text"),
    (dict(text="   "), "text"),
    (dict(text="x" * 201), "text"),
    (dict(text="!!! ???"), "text"),                       # nothing speakable
    (dict(text="hi", voice="nobody"), "voice"),
    (dict(text="hi", encoding=99), "encoding"),
    (dict(text="hi", sample_rate_hz=5), "sample_rate_hz"),
    (dict(text="hi", sample_rate_hz=-1), "sample_rate_hz"),
    (dict(text="hi", options=dict(sigma=-1.0)), "options.sigma"),
    (dict(text="hi", options=dict(speaking_rate=0.0)), "options.speaking_rate"),
    (dict(text="hi", options=dict(gate_threshold=1.5)), "options.gate_threshold"),
    (dict(text="hi", options=dict(max_decoder_steps=0)), "options.max_decoder_steps"),
    (dict(text="hi", options=dict(prenet_dropout=1.0)), "options.prenet_dropout"),
    (dict(text="hi", options=dict(denoiser_strength=float("nan"))), "options.denoiser_strength"),
    (dict(text="hi", options=dict(seed=2**64 - 1)), "options.seed"),
    (dict(text="hi", options=dict(stop_rule="never")), "options.stop_rule"),
    (dict(text="hi", options=dict(text_normalizer="nope")), "options.text_normalizer"),
])
def test_bad_input_is_invalid_argument_naming_the_field(client, kwargs, field):
    text = kwargs.pop("text")
    code, details = code_of(lambda: client.synthesize(text, **kwargs))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert field in details
    code, details = code_of(lambda: list(client.stream(text, **{**kwargs, "encoding": kwargs.get(
        "encoding", "LINEAR_PCM16")})))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and field in details


@pytest.mark.parametrize("encoding", ["WAV", "FLAC", "OGG_OPUS"])
def test_streaming_refuses_container_encodings(client, encoding):
    code, details = code_of(lambda: list(client.stream("hi", encoding=encoding)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "encoding" in details


def test_oversized_message_is_refused_by_grpc(server):
    with TTSClient(f"{HOST}:{server.server.port}") as c:
        code, _ = code_of(lambda: c.synthesize("a" * (2 << 20)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_internal_fault_is_internal_with_request_id_and_server_keeps_serving(client, fake, caplog):
    with caplog.at_level("ERROR", logger="tts.server.interceptors"):
        with pytest.raises(grpc.RpcError) as info:
            client.synthesize(fake.fail_text, request_id="req-abc-123")
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "req-abc-123" in info.value.details()
    assert "simulated" not in info.value.details()          # no internals leak to the client
    assert any("req-abc-123" in r.getMessage() for r in caplog.records)
    assert client.synthesize("still alive").audio


# ------------------------------------------------------- cancellation, deadline, load

def test_deadline_exceeded_and_cancel_free_the_queue():
    slow = FakeSynthesizer(delay_s=0.5)
    st = start({"fake": [slow]}, batcher=BatcherConfig(max_batch_size=1, max_queue_delay_s=0, max_queue_size=4))
    try:
        with TTSClient(f"{HOST}:{st.server.port}") as c:
            blocker = cf.ThreadPoolExecutor(1).submit(c.synthesize, "blocker")
            time.sleep(0.1)
            code, _ = code_of(lambda: c.synthesize("late", timeout=0.2))
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED
            fut = c.stub.Synthesize.future(tts_pb2.SynthesizeRequest(text="cancel me"))
            time.sleep(0.1)
            assert fut.cancel()
            blocker.result(10)
            time.sleep(0.1)
            assert st.server.engine.queue_depth == 0
            # Neither the expired nor the cancelled call ran.
            assert slow.batches.count(1) == len(slow.batches) and len(slow.batches) == 1
            assert c.synthesize("after").audio
    finally:
        st.stop()


def test_full_queue_is_resource_exhausted_and_recovers():
    slow = FakeSynthesizer(delay_s=0.3)
    st = start({"fake": [slow]}, batcher=BatcherConfig(max_batch_size=1, max_queue_delay_s=0, max_queue_size=2))
    try:
        with TTSClient(f"{HOST}:{st.server.port}") as c:
            with cf.ThreadPoolExecutor(8) as pool:
                futs = [pool.submit(c.synthesize, f"text {i}") for i in range(8)]
                codes = []
                for f in futs:
                    try:
                        f.result()
                        codes.append(grpc.StatusCode.OK)
                    except grpc.RpcError as exc:
                        codes.append(exc.code())
            assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 1
            assert codes.count(grpc.StatusCode.OK) >= 2     # the two queued; a third if one ran first
            assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert c.synthesize("after").audio
    finally:
        st.stop()


def test_two_workers_spread_batches():
    a, b = FakeSynthesizer(delay_s=0.05), FakeSynthesizer(delay_s=0.05)
    st = start({"fake": [a, b]}, batcher=BatcherConfig(max_batch_size=2, max_queue_delay_s=0))
    try:
        with TTSClient(f"{HOST}:{st.server.port}") as c, cf.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: c.synthesize(f"t{i}"), range(16)))
        assert a.batches and b.batches and sum(a.batches) + sum(b.batches) == 16
    finally:
        st.stop()


# -------------------------------------------------------- health, reflection, metrics

def test_health(server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"{HOST}:{server.server.port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ("", "tts.v1.TextToSpeech"):
            assert stub.Check(health_pb2.HealthCheckRequest(service=service)).status == \
                health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health_pb2.HealthCheckRequest(service="nope"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_the_service(server):
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(f"{HOST}:{server.server.port}") as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        reqs = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="tts.v1.TextToSpeech")]
        answers = list(stub.ServerReflectionInfo(iter(reqs)))
    names = {s.name for s in answers[0].list_services_response.service}
    assert {"tts.v1.TextToSpeech", "grpc.health.v1.Health"} <= names
    fd = descriptor_pb2.FileDescriptorProto.FromString(answers[1].file_descriptor_response.file_descriptor_proto[0])
    assert fd.package == "tts.v1"
    assert {m.name for m in fd.service[0].method} == {"Synthesize", "StreamingSynthesize", "ListVoices"}


def test_metrics_scrape(server, client):
    client.synthesize("metrics please")
    list(client.stream("metrics stream"))
    with pytest.raises(grpc.RpcError):
        client.synthesize("")
    body = urllib.request.urlopen(f"http://{HOST}:{server.server.metrics_port}/metrics", timeout=10).read().decode()

    def value(prefix: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(prefix))

    assert value('tts_requests_total{code="OK",method="Synthesize"}') >= 1
    assert value('tts_requests_total{code="INVALID_ARGUMENT",method="Synthesize"}') >= 1
    assert value('tts_requests_total{code="OK",method="StreamingSynthesize"}') >= 1
    assert value("tts_time_to_first_audio_seconds_count") >= 1
    assert value('tts_batch_size_count{stage="synthesize"}') >= 1
    assert value('tts_stage_seconds_count{stage="vocoder"}') >= 1
    assert value("tts_realtime_factor_count") >= 1
    assert 'tts_queue_depth{queue="synthesize"} 0.0' in body
    assert "tts_gpu_memory_bytes" in body


# --------------------------------------------------------------------- security

def _self_signed(tmp_path, name: str, ca=None):
    """(cert_pem, key_pem) for CN=name, SAN localhost/127.0.0.1, signed by ``ca`` or self-signed."""
    crypto = pytest.importorskip("cryptography")
    del crypto
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = (ca[2], ca[3]) if ca else (subject, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                           x509.IPAddress(ipaddress.ip_address(HOST))]), False)
               .add_extension(x509.BasicConstraints(ca=ca is None, path_length=None), True))
    cert = builder.sign(issuer_key, hashes.SHA256())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert_pem, key_pem, subject, key


def test_tls_and_mtls(tmp_path):
    ca_cert, ca_key, ca_name, ca_k = _self_signed(tmp_path, "test-ca")
    srv_cert, srv_key, _, _ = _self_signed(tmp_path, "localhost", ca=(ca_cert, ca_key, ca_name, ca_k))
    cli_cert, cli_key, _, _ = _self_signed(tmp_path, "client", ca=(ca_cert, ca_key, ca_name, ca_k))
    fake = FakeSynthesizer()
    st = start({"fake": [fake]}, tls=TLSConfig(cert=srv_cert, key=srv_key))
    try:
        with TTSClient(f"{HOST}:{st.server.port}", root_cert=ca_cert, timeout=10) as c:
            assert c.synthesize("secure").audio[:4] == b"RIFF"
        with TTSClient(f"{HOST}:{st.server.port}", timeout=5) as c:     # plaintext to a TLS port
            code, _ = code_of(lambda: c.synthesize("plain"))
            assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        st.stop()
    st = start({"fake": [fake]}, tls=TLSConfig(cert=srv_cert, key=srv_key, client_ca=ca_cert))
    try:
        with TTSClient(f"{HOST}:{st.server.port}", root_cert=ca_cert, client_cert=cli_cert, client_key=cli_key,
                       timeout=10) as c:
            assert c.synthesize("mutual").audio
        with TTSClient(f"{HOST}:{st.server.port}", root_cert=ca_cert, timeout=5) as c:   # no client cert
            code, _ = code_of(lambda: c.synthesize("anonymous"))
            assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        st.stop()


def test_bearer_token_auth():
    st = start({"fake": [FakeSynthesizer()]}, auth_tokens=("s3cret", "other-token"))
    target = f"{HOST}:{st.server.port}"
    try:
        for token in (None, "wrong"):
            with TTSClient(target, token=token) as c:
                code, details = code_of(lambda: c.synthesize("hi"))
                assert code == grpc.StatusCode.UNAUTHENTICATED and "token" in details
                code, _ = code_of(lambda: list(c.stream("hi")))
                assert code == grpc.StatusCode.UNAUTHENTICATED
                code, _ = code_of(lambda: c.list_voices())
                assert code == grpc.StatusCode.UNAUTHENTICATED
                assert c.health() == "SERVING"              # health stays open for load balancers
        for token in ("s3cret", "other-token"):
            with TTSClient(target, token=token) as c:
                assert c.synthesize("hi").audio
        body = urllib.request.urlopen(f"http://{HOST}:{st.server.metrics_port}/metrics", timeout=10).read().decode()
        assert 'tts_requests_total{code="UNAUTHENTICATED",method="Synthesize"}' in body
    finally:
        st.stop()


def test_server_never_touches_files(server, client, tmp_path, monkeypatch):
    """A request naming a path is just text: nothing is read or written."""
    import builtins

    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    r = client.synthesize(str(tmp_path / "x.wav"), voice="fake")
    assert r.audio and not list(tmp_path.iterdir())
    assert opened == []


def test_openssl_available_for_docs():
    """The README tells users to make certificates with openssl; it is present here."""
    out = subprocess.run(["openssl", "version"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("openssl CLI not installed")
    assert out.stdout.startswith(("OpenSSL", "LibreSSL"))


def test_drain_refuses_new_calls_with_unavailable_while_running_ones_finish():
    """Stopping: running calls (unary and streaming) complete; a call sent meanwhile, or right
    after the last reply, is refused by the server with UNAVAILABLE (retryable), never
    CANCELLED by the transport; after the port closes, calls are UNAVAILABLE too."""
    slow = FakeSynthesizer(delay_s=0.4)
    st = start({"fake": [slow]}, batcher=BatcherConfig(max_batch_size=1, max_queue_delay_s=0, max_queue_size=8))
    try:
        with TTSClient(f"{HOST}:{st.server.port}") as c:
            pool = cf.ThreadPoolExecutor(4)
            running = [pool.submit(c.synthesize, f"running call {i}") for i in range(2)]
            streaming = pool.submit(lambda: list(c.stream("running stream")))
            time.sleep(0.2)
            stopping = cf.ThreadPoolExecutor(1).submit(lambda: st.call(st.server.stop(30.0), timeout=60))
            time.sleep(0.1)
            assert st.server._servicer.draining
            # The server's own answer, on a channel without retries (TTSClient retries UNAVAILABLE
            # and would reach the closed port by then: tests/test_client.py).
            raw_channel = grpc.insecure_channel(f"{HOST}:{st.server.port}", options=[("grpc.enable_retries", 0)])
            raw = tts_pb2_grpc.TextToSpeechStub(raw_channel)
            code, details = code_of(lambda: raw.Synthesize(tts_pb2.SynthesizeRequest(text="new during drain"),
                                                           timeout=10))
            assert code == grpc.StatusCode.UNAVAILABLE and "shutting down" in details
            code, _ = code_of(lambda: list(raw.StreamingSynthesize(
                tts_pb2.SynthesizeRequest(text="new stream during drain"), timeout=10)))
            assert code == grpc.StatusCode.UNAVAILABLE
            raw_channel.close()
            assert all(f.result(30).audio[:4] == b"RIFF" for f in running)
            assert streaming.result(30)[-1].last
            code, _ = code_of(lambda: c.synthesize("right after the last reply", timeout=10))
            assert code == grpc.StatusCode.UNAVAILABLE
            stopping.result(30)
            assert st.server._servicer.inflight == 0
            code, _ = code_of(lambda: c.synthesize("after stop", timeout=10))
            assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        st.loop.call_soon_threadsafe(st.loop.stop)
