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


def test_a_whole_mel_stream_goes_part_by_part_from_its_first_piece(monkeypatch):
    """FastSpeech streams (and other whole-mel streams) run the acoustic model on the first piece alone,
    then on the next part while the current one is vocoded: the first audio does not wait for the whole
    text's mels. The audio and the word timings are those of the unary call."""
    from pathlib import Path

    from tts.options import SynthesisOptions
    from tts.server.engine import ServingEngine
    from tts.synthesizer import Synthesizer
    from tts.voice import Voice

    fixtures = Path(__file__).parent / "fixtures" / "reference"
    voice = Voice.from_checkpoints(fastspeech=fixtures / "fastspeech/checkpoint_005000.pt",
                                   waveglow=fixtures / "waveglow/checkpoint_WaveGlow_ngc_style_ddp.pt", name="fs")
    synth = Synthesizer(voice, max_batch=4, max_piece_chars=16)
    text = "Hello there. How are you? Fine, thanks. And you?"
    plan = synth.plan(text)
    assert len(plan.pieces) == 4
    opts = SynthesisOptions(sigma=0.0)
    want = synth.synthesize(plan, opts, word_timings=True)
    acoustic_pieces: list[int] = []                 # pieces of each acoustic-model call, in order
    inner = synth.acoustic

    def acoustic(texts, options=None, **kw):
        acoustic_pieces.extend(len(t.pieces) for t in texts)
        return inner(texts, options, **kw)

    monkeypatch.setattr(synth, "acoustic", acoustic)

    async def main():
        engine = ServingEngine({"fs": [synth]}, batcher=BatcherConfig(max_batch_size=4))
        await engine.start()
        pieces, at_first_audio = [], None
        async for p in engine.stream("fs", plan, opts, word_timings=True):
            if len(p.audio) and at_first_audio is None:
                at_first_audio = list(acoustic_pieces)
            pieces.append(p)
        await engine.close()
        return pieces, at_first_audio

    pieces, at_first_audio = asyncio.run(main())
    assert at_first_audio[0] == 1 and sum(at_first_audio) < 4       # the first piece alone; not the whole text
    assert acoustic_pieces == [1, 2, 1]                             # then parts of half a batch
    audio = np.concatenate([p.audio for p in pieces])
    assert len(audio) == len(want.audio) and np.abs(audio - want.audio).max() < 1e-4
    words = [w for p in pieces for w in p.words]
    assert [(w.word, w.char_start, w.char_end) for w in words] == [(w.word, w.char_start, w.char_end)
                                                                   for w in want.words]
    np.testing.assert_allclose([w.start_s for w in words], [w.start_s for w in want.words], atol=1e-6)
    np.testing.assert_allclose([w.end_s for w in words], [w.end_s for w in want.words], atol=1e-6)
    assert pieces[-1].last and pieces[-1].normalized_text == want.normalized_text
