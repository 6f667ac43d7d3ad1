"""The server with the real reference voices (small random-weight Tacotron2, FastSpeech, WaveGlow) on CPU.

Checks numbers against the in-process ``Synthesizer``: unary equals single-request
synthesis, continuous batching lets a short request overtake a long one, long
text is split and spoken whole, streamed audio equals unary audio, and a
200-request load run at concurrency 16 has zero errors.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import serve_synths
from tts.client import TTSClient
from tts.options import SynthesisOptions
from tts.server.audio import Encoding, decode

pytestmark = pytest.mark.timeout(240)

HOST = "127.0.0.1"
FIXTURES = Path(__file__).parent / "fixtures" / "reference"
DET = dict(prenet_dropout=0.0, sigma=0.0)           # deterministic options
SHORT = "Hello there."
LONG = "A much longer sentence that should take the decoder many more steps to finish speaking."


@pytest.fixture(scope="module")
def voices():
    from tts.voice import Voice

    t2 = Voice.from_checkpoints(tacotron2=FIXTURES / "tacotron2/checkpoint_Tacotron2_current_1gpu.pt",
                                waveglow=FIXTURES / "waveglow/checkpoint_WaveGlow_ngc_style_ddp.pt", name="t2")
    fs = Voice.from_checkpoints(fastspeech=FIXTURES / "fastspeech/checkpoint_005000.pt",
                                waveglow=FIXTURES / "waveglow/checkpoint_WaveGlow_ngc_style_ddp.pt", name="fs")
    return t2, fs


@pytest.fixture(scope="module")
def synths(voices):
    from tts.synthesizer import Synthesizer

    t2, fs = voices
    return {"t2": Synthesizer(t2, max_batch=16), "fs": Synthesizer(fs, max_batch=16)}


def _serve(synths: dict, scheduler_options: dict | None = None):
    """A loopback server of ``synths`` (default voice t2), started; the caller stops it."""
    return serve_synths(synths, 16, scheduler_options)


@pytest.fixture(scope="module")
def server(synths):
    st = _serve(synths)
    yield st
    st.stop()


@pytest.fixture()
def client(server):
    with TTSClient(f"{HOST}:{server.server.port}", timeout=120) as c:
        yield c


class StepRecorder:
    """Rows per decoder step of a scheduler while in the ``with`` block (its ``on_step`` hook)."""

    def __init__(self, sched):
        self.sched, self.sizes = sched, []

    def __enter__(self):
        self.sched.on_step = lambda index, rows: self.sizes.append(len(rows))
        return self

    def __exit__(self, *exc):
        self.sched.on_step = None


def unary(client, text, voice="t2", **opts):
    r = client.synthesize(text, voice=voice, encoding="FLOAT32", options={**DET, **opts})
    return decode(r.audio, Encoding.FLOAT32), r


@pytest.mark.parametrize("voice", ["t2", "fs"])
def test_unary_equals_single_request_synthesis(client, synths, voice):
    want = synths[voice].synthesize(LONG, SynthesisOptions(**DET))
    got, r = unary(client, LONG, voice)
    assert len(got) == len(want.audio) > 0
    assert np.abs(got - want.audio).max() < 1e-5
    assert r.normalized_text == want.normalized_text
    assert r.duration_seconds == pytest.approx(want.audio_seconds)


def test_t2_concurrent_calls_equal_single_requests(client, synths):
    texts = [SHORT, LONG, "Testing, one two three.", "The rain in Spain stays mainly in the plain.",
             "Numbers like 42 are expanded."]
    wants = [synths["t2"].synthesize(t, SynthesisOptions(**DET)).audio for t in texts]
    with cf.ThreadPoolExecutor(len(texts)) as pool:
        gots = list(pool.map(lambda t: unary(client, t), texts))
    assert max(r.timings.batch_size for _, r in gots) > 1           # they did share decoder steps
    for (got, _), want in zip(gots, wants):
        assert len(got) == len(want)
        assert np.abs(got - want).max() < 1e-5


def test_short_request_overtakes_long_one(server, client):
    """Continuous batching: a short call that starts after a long one finishes first."""
    sched = server.server.engine.schedulers["t2"][0]
    done: list[str] = []
    with cf.ThreadPoolExecutor(2) as pool, StepRecorder(sched) as rec:
        def run(name, text):
            unary(client, text, max_decoder_steps=80)
            done.append(name)

        long_f = pool.submit(run, "long", LONG)
        while len(rec.sizes) < 5:                        # the long one is decoding
            time.sleep(0.002)
        short_f = pool.submit(run, "short", SHORT)
        short_f.result(60)
        long_f.result(60)
    assert done == ["short", "long"]
    assert rec.sizes[0] == 1 and 2 in rec.sizes and rec.sizes[-1] == 1     # joined, then left


def test_long_text_is_split_and_spoken_whole(client, synths):
    text = " ".join([LONG] * 6)                             # ~540 characters > max_piece_chars (256)
    want = synths["t2"].synthesize(text, SynthesisOptions(**DET))
    assert want.pieces > 1
    got, r = unary(client, text)
    assert len(got) == len(want.audio)
    assert np.abs(got - want.audio).max() < 1e-5
    assert r.normalized_text == want.normalized_text


@pytest.mark.parametrize("voice", ["t2", "fs"])
def test_streamed_audio_equals_unary(client, voice):
    want, _ = unary(client, LONG, voice)
    t0 = time.perf_counter()
    first = None
    parts = []
    for chunk in client.stream(LONG, voice=voice, encoding="FLOAT32", options=DET):
        if first is None and chunk.audio:
            first = time.perf_counter() - t0
        parts.append(decode(chunk.audio, Encoding.FLOAT32))
    total = time.perf_counter() - t0
    got = np.concatenate(parts)
    assert len([p for p in parts if len(p)]) >= 3
    assert len(got) == len(want)
    # Stated tolerance: 1e-5 absolute (float rounding; audio peaks ~0.03 for this model).
    assert np.abs(got - want).max() < 1e-5
    assert first is not None and first < total


def test_200_requests_at_concurrency_16_zero_errors(server):
    from tts.server.loadgen import LoadConfig, run_level

    cfg = LoadConfig(target=f"{HOST}:{server.server.port}",
                     texts=(SHORT, "Testing, one two three.", "Good morning.", "How are you today?"),
                     requests=200, duration_s=200, timeout_s=120, options=tuple(DET.items()))
    res = asyncio.run(run_level(cfg, 16))
    print(f"\n200 requests @16: {res.row()}")
    assert res.errors == {}
    assert res.requests == 200 and len(res.latencies) == 200
    assert res.throughput > 0


def test_scheduler_failing_step_fails_its_rows_and_keeps_serving(synths, monkeypatch):
    from tts.errors import InvalidInputError
    from tts.server.scheduler import TacotronScheduler

    sched = TacotronScheduler(synths["t2"], max_rows=4)
    real_step = sched.acoustic.decoder.step
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated device fault")
        return real_step(*a, **k)

    monkeypatch.setattr(sched.acoustic.decoder, "step", flaky)
    sched.start()

    async def main():
        opts = SynthesisOptions(**DET)
        res = await asyncio.gather(*(sched.synthesize(t, opts) for t in (SHORT, LONG)), return_exceptions=True)
        after = await sched.synthesize(SHORT, opts)
        with pytest.raises(InvalidInputError):
            await sched.synthesize("   ", opts)
        return res, after

    try:
        res, after = asyncio.run(main())
    finally:
        sched.close()
    assert all(isinstance(r, RuntimeError) and "simulated" in str(r) for r in res)
    assert len(after.result.audio) > 0


# ----------------------------------------------------------------------------- slot decoder on CPU
# The same server with the scheduler forced onto the slot decoder (``decoder="slots"``: the fast
# engine's continuous-batching decoder, its PyTorch twin on CPU, K = 4 steps per replay). Stated
# tolerance against the in-process synthesizer (eager model): 1e-5 absolute on audio (the engine's
# folded weights round differently from the eager modules; measured ~1e-7).

@pytest.fixture(scope="module")
def slot_server(synths):
    st = _serve({"t2": synths["t2"]}, {"decoder": "slots", "steps_per_replay": 4})
    yield st
    st.stop()


@pytest.fixture()
def slot_client(slot_server):
    with TTSClient(f"{HOST}:{slot_server.server.port}", timeout=120) as c:
        yield c


def test_slots_scheduler_uses_the_slot_decoder(slot_server):
    sched = slot_server.server.engine.schedulers["t2"][0]
    assert sched.use_slots and sched.steps_per_replay == 4
    from tts.server.scheduler import TacotronScheduler

    assert not TacotronScheduler(slot_server.server.engine.synthesizers["t2"][0]).use_slots   # CPU default: eager


def test_slots_unary_and_concurrent_calls_equal_single_requests(slot_client, slot_server, synths):
    texts = [LONG, SHORT, "Testing, one two three.", "The rain in Spain stays mainly in the plain.",
             "Numbers like 42 are expanded."]
    wants = [synths["t2"].synthesize(t, SynthesisOptions(**DET)) for t in texts]
    got, r = unary(slot_client, LONG)
    assert len(got) == len(wants[0].audio) and np.abs(got - wants[0].audio).max() < 1e-5
    assert r.normalized_text == wants[0].normalized_text
    sched = slot_server.server.engine.schedulers["t2"][0]
    with cf.ThreadPoolExecutor(len(texts)) as pool, StepRecorder(sched) as rec:
        gots = list(pool.map(lambda t: unary(slot_client, t), texts))
    assert max(r.timings.batch_size for _, r in gots) > 1             # rows shared replays
    assert max(rec.sizes) > 1
    for (got, _), want in zip(gots, wants):
        assert len(got) == len(want.audio)
        assert np.abs(got - want.audio).max() < 1e-5


def test_slots_long_text_split_and_streamed_equal_unary(slot_client, synths):
    text = " ".join([LONG] * 4)                                     # > max_piece_chars: several pieces
    want = synths["t2"].synthesize(text, SynthesisOptions(**DET))
    assert want.pieces > 1
    got, _ = unary(slot_client, text)
    assert len(got) == len(want.audio) and np.abs(got - want.audio).max() < 1e-5
    parts = [decode(c.audio, Encoding.FLOAT32) for c in slot_client.stream(LONG, encoding="FLOAT32", options=DET)]
    streamed = np.concatenate(parts)
    solo, _ = unary(slot_client, LONG)
    assert len([p for p in parts if len(p)]) >= 3
    assert len(streamed) == len(solo) and np.abs(streamed - solo).max() < 1e-5


def test_slots_short_request_overtakes_long_one(slot_server, slot_client):
    sched = slot_server.server.engine.schedulers["t2"][0]
    done: list[str] = []
    with cf.ThreadPoolExecutor(2) as pool, StepRecorder(sched) as rec:
        def run(name, text):
            unary(slot_client, text, max_decoder_steps=80)
            done.append(name)

        long_f = pool.submit(run, "long", LONG)
        while len(rec.sizes) < 2:                        # the long one is decoding (2 replays)
            time.sleep(0.002)
        short_f = pool.submit(run, "short", SHORT)
        short_f.result(60)
        long_f.result(60)
    assert done == ["short", "long"]
    assert rec.sizes[0] == 1 and 2 in rec.sizes and rec.sizes[-1] == 1


def test_slots_equal_length_pieces_share_vocoder_calls(slot_server, synths):
    """Requests finishing together with equal frame counts are vocoded in one batched call; the
    audio is that of each request alone."""
    from test_server_scheduler import hold_decode_thread

    sched = slot_server.server.engine.schedulers["t2"][0]
    want = synths["t2"].synthesize(SHORT, SynthesisOptions(**DET)).audio
    jobs = []

    async def main():
        opts = SynthesisOptions(**DET)
        with hold_decode_thread(sched):         # all four queue first, so they join (and finish) together
            tasks = [asyncio.ensure_future(sched.synthesize(SHORT, opts)) for _ in range(4)]
            await asyncio.sleep(0)
        return await asyncio.gather(*tasks)

    sched.vocoder_stage.on_job = jobs.append
    try:
        outs = asyncio.run(main())      # straight to the server's scheduler, from a loop of our own
    finally:
        sched.vocoder_stage.on_job = None
    assert [len(j.pieces) for j in jobs] == [4]
    for o in outs:
        assert len(o.result.audio) == len(want)
        assert np.abs(o.result.audio - want).max() < 1e-5


def test_slots_deadline_and_failing_replay_free_their_rows(synths, monkeypatch):
    from tts.engines.tacotron2 import SlotDecoder
    from tts.server.errors import DeadlineExpiredError
    from tts.server.scheduler import TacotronScheduler

    sched = TacotronScheduler(synths["t2"], max_rows=4, decoder="slots", steps_per_replay=2)
    real_launch = SlotDecoder.launch
    calls = {"n": 0, "fail_at": None, "sleep": 0.02}

    def flaky(self, *a, **k):
        calls["n"] += 1
        time.sleep(calls["sleep"])                       # a slow device: the deadline passes mid-decode
        if calls["n"] == calls["fail_at"]:
            raise RuntimeError("simulated device fault")
        return real_launch(self, *a, **k)

    monkeypatch.setattr(SlotDecoder, "launch", flaky)
    sched.start()

    async def main():
        opts = SynthesisOptions(**DET)
        await sched.synthesize(SHORT, opts)                          # warm (first calls are slow)
        with pytest.raises(DeadlineExpiredError):
            await sched.synthesize(LONG, opts, deadline=time.monotonic() + 0.2)
        for _ in range(200):                                        # the decode thread frees its slot
            if sched.decoder.sd.n_active == 0:
                break
            await asyncio.sleep(0.01)
        assert sched.decoder.sd.n_active == 0 and calls["n"] >= 4   # it had joined, then left
        calls["fail_at"], calls["sleep"] = calls["n"] + 3, 0.0
        res = await asyncio.gather(*(sched.synthesize(t, opts) for t in (SHORT, LONG)), return_exceptions=True)
        after = await sched.synthesize(SHORT, opts)
        return res, after

    try:
        res, after = asyncio.run(main())
    finally:
        sched.close()
    assert all(isinstance(r, RuntimeError) and "simulated" in str(r) for r in res)
    want = synths["t2"].synthesize(SHORT, SynthesisOptions(**DET)).audio
    assert len(after.result.audio) == len(want) and np.abs(after.result.audio - want).max() < 1e-5
    assert sched.decoder.sd.n_active == 0 and len(sched.decoder) == 0
