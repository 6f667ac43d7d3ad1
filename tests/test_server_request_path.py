"""What a request does on its way through the server, counted (never timed): a unary reply in raw samples
or WAV at the voice's rate is encoded on the event loop, a codec or a resampled reply in a worker thread;
the encoding is the same either way."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tts.client import TTSClient
from tts.server import audio as server_audio
from tts.server.app import ServerConfig, TTSServer
from tts.server.audio import Encoding, decode
from tts.server.batcher import BatcherConfig
from tts.server.testing import FakeSynthesizer, ServerThread

pytestmark = pytest.mark.timeout(120)

HOST = "127.0.0.1"
TEXT = "Encode me where it is cheapest"


@pytest.fixture(scope="module")
def fake():
    return FakeSynthesizer()


@pytest.fixture(scope="module")
def server(fake):
    st = ServerThread(TTSServer({"fake": [fake]}, ServerConfig(host=HOST, port=0, metrics_port=None, warmup=False,
                                                               batcher=BatcherConfig(max_batch_size=4))))
    st.start()
    yield st
    st.stop()


@pytest.fixture()
def threaded_encodes(monkeypatch):
    """Encodes handed to a worker thread (``asyncio.to_thread(encode, ...)``), counted."""
    seen: list = []
    inner = asyncio.to_thread

    async def to_thread(fn, *args, **kwargs):
        if fn is server_audio.encode:
            seen.append(args[2])
        return await inner(fn, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", to_thread)
    return seen


@pytest.mark.parametrize("encoding, rate, threaded", [
    ("LINEAR_PCM16", 0, False), ("FLOAT32", 0, False), ("WAV", 0, False), ("WAV", 22050, False),
    ("WAV", 16000, True), ("FLAC", 0, True), ("MULAW", 0, True), ("OGG_OPUS", 0, True)])
def test_unary_encodes_cheap_replies_on_the_event_loop(server, fake, threaded_encodes, encoding, rate, threaded):
    with TTSClient(f"{HOST}:{server.server.port}", timeout=60) as c:
        r = c.synthesize(TEXT, encoding=encoding, sample_rate_hz=rate)
    assert threaded_encodes == ([Encoding[encoding]] if threaded else [])
    want = server_audio.encode(fake.audio_for(TEXT), fake.sample_rate, Encoding[encoding], rate)
    assert r.sample_rate_hz == want.sample_rate
    if encoding != "OGG_OPUS":                      # an Ogg stream has a random serial number
        assert r.audio == want.data                 # the same bytes either way
    if encoding in ("LINEAR_PCM16", "FLOAT32"):
        assert np.abs(decode(r.audio, Encoding[encoding]) - fake.audio_for(TEXT)).max() < 1e-4


def test_inline_is_bounded_by_length_and_resampling():
    n = server_audio.INLINE_MAX_SAMPLES
    assert server_audio.inline(n, 22050, Encoding.LINEAR_PCM16)
    assert server_audio.inline(n, 22050, Encoding.UNSPECIFIED)                    # WAV
    assert not server_audio.inline(n + 1, 22050, Encoding.LINEAR_PCM16)           # long: a thread
    assert not server_audio.inline(10, 22050, Encoding.FLOAT32, 16000)            # resampled: a thread
    assert not server_audio.inline(10, 22050, Encoding.MP3)                       # a codec: a thread
