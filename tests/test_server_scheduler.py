"""The Tacotron2 scheduler's fairness, deadlines and queue bound, on CPU with the reference voice.

Every bound is counted in decoder steps (replays for the slot decoder),
vocoder jobs or calls, never in seconds: the scheduler's ``on_step`` and
the vocoder stage's ``on_job`` hooks record what ran, and deadlines are
read on a clock the test drives.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tts.options import SynthesisOptions
from tts.server.admission import AdmissionPolicy, plan_admission
from tts.server.errors import DeadlineExpiredError, QueueFullError
from tts.server.scheduler import TacotronScheduler

pytestmark = pytest.mark.timeout(240)

FIXTURES = Path(__file__).parent / "fixtures" / "reference"
DET = dict(prenet_dropout=0.0, sigma=0.0)
SHORT = "Hello there."
LONG = "A much longer sentence that should take the decoder many more steps to finish speaking."
#: Ten pieces (max_piece_chars = 256) whose gate never fires: a call that would hold every row
#: (stop rule ``gate``: the random model's attention would end them).
HOG_TEXT = " ".join([LONG] * 20)
HOG = SynthesisOptions(gate_threshold=0.999, max_decoder_steps=100_000, stop_rule="gate", **DET)
#: The slot decoder pipelined (next replay queued before the last is read), as on CUDA, and not.
DECODERS = [{"decoder": "eager"}, {"decoder": "slots", "steps_per_replay": 4, "pipeline": False},
            {"decoder": "slots", "steps_per_replay": 4, "pipeline": True}]
DECODER_IDS = ["eager", "slots", "slots-pipelined"]


@pytest.fixture(scope="module")
def synth():
    from tts.synthesizer import Synthesizer
    from tts.voice import Voice

    voice = Voice.from_checkpoints(tacotron2=FIXTURES / "tacotron2/checkpoint_Tacotron2_current_1gpu.pt",
                                   waveglow=FIXTURES / "waveglow/checkpoint_WaveGlow_ngc_style_ddp.pt", name="t2")
    return Synthesizer(voice, max_batch=16)


class Trace:
    """Per decoder step: {call seq: rows of that call} (the scheduler's ``on_step`` hook)."""

    def __init__(self, sched: TacotronScheduler):
        self.steps: list[dict[int, int]] = []
        self.arrival: dict[int, int] = {}
        sched.on_step = self._record

    def _record(self, index: int, rows) -> None:
        assert index == len(self.steps)
        rec: dict[int, int] = {}
        for r in rows:
            rec[r.call.seq] = rec.get(r.call.seq, 0) + 1
            self.arrival[r.call.seq] = r.call.arrival_step
        self.steps.append(rec)

    def indices(self, seq: int) -> list[int]:
        return [i for i, rec in enumerate(self.steps) if seq in rec]


@contextlib.contextmanager
def hold_decode_thread(sched: TacotronScheduler):
    """The decode thread waits between steps for the length of the block (calls queue, none joins)."""
    entered, release = threading.Event(), threading.Event()
    t = threading.Thread(target=sched.run_on_decode_thread, args=(lambda: (entered.set(), release.wait()),))
    t.start()
    entered.wait()
    try:
        yield
    finally:
        release.set()
        t.join()


@contextlib.contextmanager
def running(sched: TacotronScheduler):
    sched.start()
    try:
        yield sched
    finally:
        sched.close()


async def until(cond, tries: int = 5000) -> None:
    """Yields to the loop until ``cond()`` holds (bounded number of tries)."""
    for _ in range(tries):
        if cond():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition never held")


# ----------------------------------------------------------------------------- admission policy (pure)

def _call(seq, pieces, *, running=0, streaming=False, p=0.0):
    """A call with ``pieces`` pieces waiting (after ``running`` pieces that decode as rows)."""
    return SimpleNamespace(seq=seq, todo=deque(range(running, running + pieces)), streaming=streaming,
                           prenet_dropout=p, join_step=0 if running else None)


def _rows(call, n, steps=(10,)):
    return [SimpleNamespace(call=call, piece=i, steps=steps[i % len(steps)]) for i in range(n)]


def test_admission_round_robin_share_reserve_and_eviction():
    pol = AdmissionPolicy(max_rows=8, share=2)
    lone = _call(0, 8)
    assert plan_admission(pol, [lone], [], None).join == [lone] * 6           # `share` rows stay free
    a, b = _call(0, 2, running=6), _call(1, 1)
    plan = plan_admission(pol, [a, b], _rows(a, 6), 0.0)
    assert plan.join == [b] and plan.evict == []                             # fewest rows first; 1 left free
    a, c, b = _call(0, 0, running=6), _call(1, 0, running=2), _call(2, 1)
    rows = _rows(a, 6, steps=(50, 3, 40, 60, 70, 80)) + _rows(c, 2)
    plan = plan_admission(pol, [b], rows, 0.0)
    assert plan.join == [b] and plan.evict == [rows[1]]                     # A's row with fewest steps
    s, u = _call(0, 0, running=4, streaming=True), _call(1, 0, running=4, streaming=True)
    plan = plan_admission(pol, [_call(2, 1)], _rows(s, 4) + _rows(u, 4), 0.0)
    assert plan.join == [] and plan.evict == []                             # streaming rows never leave
    unary, stream = _call(0, 3), _call(1, 3, streaming=True)
    plan = plan_admission(AdmissionPolicy(max_rows=2, share=1), [unary, stream], [], None)
    assert plan.join == [stream, unary]                                      # streams first among equals
    fresh = _call(0, 4, streaming=True)
    assert plan_admission(pol, [fresh], [], None).join == [fresh]            # a new stream's first row alone
    going = _call(0, 3, running=1, streaming=True)
    assert plan_admission(pol, [going], _rows(going, 1), 0.0).join == [going] * 3     # then the others
    x, y, z = _call(0, 1, p=0.5), _call(1, 1), _call(2, 1)
    assert plan_admission(pol, [x, y], _rows(z, 1), 0.0).join == []          # drain before another dropout
    assert plan_admission(pol, [x, y], [], None).join == [x]
    with pytest.raises(ValueError):
        AdmissionPolicy(max_rows=4, share=5)


# ----------------------------------------------------------------------------- fairness

@pytest.mark.parametrize("kw", DECODERS, ids=DECODER_IDS)
def test_short_call_joins_at_once_and_finishes_under_a_row_hog(synth, kw):
    """A ten-piece call whose gate never fires (max_decoder_steps 100 000) holds at most
    max_rows - share rows; a short call sent while it decodes joins within one step, finishes
    first with its single-request audio; cancelling the hog frees its rows at the next step."""
    sched = TacotronScheduler(synth, max_rows=4, **kw)
    trace = Trace(sched)
    want = synth.synthesize(SHORT, SynthesisOptions(**DET)).audio

    async def main():
        hog = asyncio.ensure_future(sched.synthesize(HOG_TEXT, HOG))
        await until(lambda: len(trace.steps) >= 3)
        short = await sched.synthesize(SHORT, SynthesisOptions(**DET))
        assert not hog.done()
        hog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hog
        cancelled_at = sched.steps_done
        await until(lambda: len(sched.decoder) == 0)
        return short, cancelled_at

    with running(sched):
        short, cancelled_at = asyncio.run(main())
    assert short.queue_steps <= 1
    assert np.abs(short.result.audio - want).max() < 1e-5 and len(short.result.audio) == len(want)
    hog_rows = [rec.get(0, 0) for rec in trace.steps]
    assert max(hog_rows) == 3                                  # 4 rows, share 1: one stays free
    assert max(trace.indices(0)) <= cancelled_at               # no step for it after the cancel
    assert len(trace.indices(1)) < len(trace.indices(0))


def test_a_long_piece_is_vocoded_in_chunks_that_interleave_with_other_calls(synth, monkeypatch):
    """A 400-frame piece with ``vocoder_frames=64`` takes seven vocoder jobs; a short call whose
    piece is ready after the first one is vocoded next; the long audio equals the synthesizer's."""
    sched = TacotronScheduler(synth, max_rows=4, decoder="eager", vocoder_frames=64)
    stage = sched.vocoder_stage
    jobs, entered, release = [], threading.Event(), threading.Event()
    real = stage._run_long

    def held(e):
        entered.set()
        release.wait()                       # until the short call's piece is queued too
        real(e)

    monkeypatch.setattr(stage, "_run_long", held)
    stage.on_job = jobs.append
    long_opts = SynthesisOptions(gate_threshold=0.999, max_decoder_steps=400, stop_rule="gate", **DET)
    done: list[str] = []

    async def run(name, text, opts):
        out = await sched.synthesize(text, opts)
        done.append(name)
        return out

    async def main():
        long = asyncio.ensure_future(run("long", LONG, long_opts))
        await until(entered.is_set)
        short = asyncio.ensure_future(run("short", SHORT, SynthesisOptions(**DET)))
        await until(lambda: stage.pending == 2)
        release.set()
        return await long, await short

    with running(sched):
        long, short = asyncio.run(main())
    assert [j.pieces for j in jobs] == [((0, 0),), ((1, 0),)] + [((0, 0),)] * 6
    assert done == ["short", "long"]
    want = synth.synthesize(LONG, long_opts).audio
    assert len(long.result.audio) == len(want) == 256 * 400
    assert np.abs(long.result.audio - want).max() < 1e-5


# ----------------------------------------------------------------------------- deadlines

@pytest.mark.parametrize("kw", DECODERS, ids=DECODER_IDS)
def test_deadline_stops_decoding_at_the_next_step(synth, kw):
    """The clock counts decoder steps: a call whose deadline is step 10 takes steps 0..9 only."""
    box = {}
    sched = TacotronScheduler(synth, max_rows=4, clock=lambda: float(box["s"].steps_done), **kw)
    box["s"] = sched
    trace = Trace(sched)

    async def main():
        with pytest.raises(DeadlineExpiredError):
            await sched.synthesize(HOG_TEXT, HOG, deadline=10.0)
        await until(lambda: len(sched.decoder) == 0)

    with running(sched):
        asyncio.run(main())
    assert trace.indices(0) == list(range(10))
    assert sched.vocoder_stage.pending == 0


def test_deadline_passed_while_queued_for_the_vocoder_skips_its_vocoding(synth, monkeypatch):
    now = [0.0]
    sched = TacotronScheduler(synth, max_rows=4, decoder="eager", clock=lambda: now[0])
    stage = sched.vocoder_stage
    jobs, started, release = [], threading.Event(), threading.Event()
    real = stage._vocode

    def held(batch):
        started.set()
        release.wait()                       # the vocoder is busy with the first call
        return real(batch)

    monkeypatch.setattr(stage, "_vocode", held)
    stage.on_job = jobs.append
    opts = SynthesisOptions(**DET)

    async def main():
        first = asyncio.ensure_future(sched.synthesize(SHORT, opts))
        await until(started.is_set)
        late = asyncio.ensure_future(sched.synthesize(LONG, opts, deadline=5.0))
        await until(lambda: stage.pending == 1)          # decoded, queued for the vocoder
        now[0] = 10.0
        release.set()
        with pytest.raises(DeadlineExpiredError):
            await late
        return await first

    with running(sched):
        out = asyncio.run(main())
    assert len(out.result.audio) > 0
    assert [p for j in jobs for p in j.pieces] == [(0, 0)]    # the late call's piece never ran


# ----------------------------------------------------------------------------- queue bound

def test_max_queue_refuses_exactly_the_excess(synth):
    sched = TacotronScheduler(synth, max_rows=4, max_queue=4, decoder="eager")
    assert sched.step_sizes.maxlen == 1024 and sched.vocoder_batch_sizes.maxlen == 1024

    async def main():
        with hold_decode_thread(sched):
            tasks = [asyncio.ensure_future(sched.synthesize(SHORT, SynthesisOptions(**DET))) for _ in range(16)]
            await asyncio.sleep(0)
            assert sched.queue_depth == 4
        return await asyncio.gather(*tasks, return_exceptions=True)

    with running(sched):
        res = asyncio.run(main())
    assert sum(isinstance(r, QueueFullError) for r in res) == 12
    assert all(len(r.result.audio) > 0 for r in res if not isinstance(r, Exception))
    assert sched.queue_depth == 0


def test_serving_engine_passes_max_queue_size_to_the_scheduler(synth):
    from tts.server.batcher import BatcherConfig
    from tts.server.engine import ServingEngine

    engine = ServingEngine({"t2": [synth]}, batcher=BatcherConfig(max_queue_size=4),
                           scheduler_options={"decoder": "eager"})

    async def main():
        await engine.start()
        try:
            sched = engine.schedulers["t2"][0]
            assert sched.max_queue == 4
            with hold_decode_thread(sched):
                tasks = [asyncio.ensure_future(engine.synthesize("t2", SHORT, SynthesisOptions(**DET)))
                         for _ in range(16)]
                await asyncio.sleep(0)
            return await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await engine.close()

    res = asyncio.run(main())
    assert sum(isinstance(r, QueueFullError) for r in res) == 12
    assert sum(not isinstance(r, Exception) for r in res) == 4


# ----------------------------------------------------------------------------- streams beside unary calls

def test_streams_progress_while_unary_calls_run(synth):
    """Three four-piece unary calls take two rows each (8 rows, share 2); two streams sent then
    join within one step, hear audio before any unary call is done, and the vocoder never runs
    two unary batches in a row while a streaming job waits."""
    sched = TacotronScheduler(synth, max_rows=8, decoder="eager")
    trace = Trace(sched)
    jobs = []
    sched.vocoder_stage.on_job = jobs.append
    events: list[str] = []

    async def unary(i):
        await sched.synthesize(" ".join([LONG] * 8), SynthesisOptions(**DET))
        events.append(f"unary {i} done")

    async def stream(i):
        async for piece in sched.stream(LONG, SynthesisOptions(**DET), chunk_frames=16, first_chunk_frames=4):
            if len(piece.audio) and f"stream {i} audio" not in events:
                events.append(f"stream {i} audio")

    async def main():
        with hold_decode_thread(sched):                     # the three join together
            tasks = [asyncio.ensure_future(unary(i)) for i in range(3)]
            await asyncio.sleep(0)
        await until(lambda: len(trace.steps) >= 5)
        assert trace.steps[0] == {0: 2, 1: 2, 2: 2}
        tasks += [asyncio.ensure_future(stream(i)) for i in range(2)]
        await asyncio.gather(*tasks)

    with running(sched):
        asyncio.run(main())
    for seq in (3, 4):                                      # the streams
        assert trace.indices(seq)[0] - trace.arrival[seq] <= 1
    first_unary = min(events.index(f"unary {i} done") for i in range(3))
    assert events.index("stream 0 audio") < first_unary and events.index("stream 1 audio") < first_unary
    assert {j.kind for j in jobs} == {"unary", "stream"}
    for j1, j2 in zip(jobs, jobs[1:]):
        assert not (j1.kind == j2.kind == "unary" and j2.streams_waiting > 0)


@pytest.mark.parametrize("kw", DECODERS, ids=DECODER_IDS)
def test_stream_frames_are_delivered_as_they_complete_a_chunk(synth, monkeypatch, kw):
    """A streaming row's frames reach the vocoder when they complete the stream's next audio chunk:
    every delivery makes audio (no vocoder job and thread hop for frames that cannot), the first as
    soon as its frames are decoded; the audio is the unary audio."""
    import tts.server.scheduler as scheduler

    pushes: list[tuple[int, int]] = []            # (frames pushed so far, chunks that push planned)

    class Counting(scheduler.MelStreamer):
        def plan_push(self, frames):
            out = super().plan_push(frames)
            pushes.append((self.n_frames, len(out)))
            return out

    monkeypatch.setattr(scheduler, "MelStreamer", Counting)
    sched = TacotronScheduler(synth, max_rows=4, **kw)
    opts = SynthesisOptions(**DET, max_decoder_steps=120)
    want = synth.synthesize(LONG, opts).audio

    async def main():
        return [p async for p in sched.stream(LONG, opts, chunk_frames=16, first_chunk_frames=4, overlap_frames=8)]

    with running(sched):
        pieces = asyncio.run(main())
    audio = np.concatenate([p.audio for p in pieces])
    assert len(audio) == len(want) and np.abs(audio - want).max() < 1e-4
    assert len(pushes) >= 3 and all(n > 0 for _, n in pushes[:-1])       # the last: with the end of the piece
    k = sched.decoder.steps_per_call
    first = 4 + 8 + 10                                     # first chunk + overlap + the postnet's context
    assert pushes[0][0] == -(-first // k) * k               # the first step (replay) that completes it


# ----------------------------------------------------------------------------- streams batched in the vocoder stage

CHUNKS = dict(chunk_frames=16, first_chunk_frames=4, overlap_frames=8)


def record_stream_jobs(stage, monkeypatch) -> dict[int, list]:
    """Call seq -> the streaming jobs the stage was given, in order: (streamer id, frames, finish, audio_frames)."""
    asked: dict[int, list] = {}
    real = stage.run_stream

    def run_stream(call, streamer, frames=None, *, finish=False, audio_frames=None):
        asked.setdefault(call.seq, []).append((id(streamer), frames, finish, audio_frames))
        return real(call, streamer, frames, finish=finish, audio_frames=audio_frames)

    monkeypatch.setattr(stage, "run_stream", run_stream)
    return asked


def replay(sched: TacotronScheduler, jobs: list, opts: SynthesisOptions, seed: int | None = None) -> np.ndarray:
    """The audio of a stream's recorded jobs through lone ``MelStreamer``s (``push``/``finish``: each window
    alone, as without the stage's batching)."""
    import torch

    from tts.streaming import MelStreamer, StreamConfig, make_vocode

    o = opts.merged_over(sched.synth.voice.defaults)
    stage = sched.vocoder_stage
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    vocode = make_vocode(stage.vocoder, stage.denoiser, sigma=o.sigma, denoiser_strength=o.denoiser_strength,
                         generator=gen, dtype=stage.dtype)
    streamers: dict = {}
    out: list = []
    for sid, frames, finish, n in jobs:
        st = streamers.setdefault(sid, MelStreamer(vocode, sched._postnet, StreamConfig(**CHUNKS)))
        out += (st.push(frames) if frames is not None else []) + (st.finish(n) if finish else [])
    return np.concatenate(out)


async def streamed(sched: TacotronScheduler, text: str, opts: SynthesisOptions) -> np.ndarray:
    return np.concatenate([p.audio async for p in sched.stream(text, opts, **CHUNKS)])


def stream_jobs(jobs) -> list:
    return [j for j in jobs if j.kind == "stream"]


def test_concurrent_streams_share_vocoder_calls_and_give_the_lone_audio(synth, monkeypatch):
    """Four streams of one text started together: their first chunks go out in one vocoder call, and so
    does every later window (the four stay in step: a decoder step's deliveries and a vocoder call's
    answers reach the event loop together), so they take as many calls as one stream alone; each
    stream's audio is that of its frames through a lone ``MelStreamer`` and that of the stream alone."""
    n = 4
    sched = TacotronScheduler(synth, max_rows=8, decoder="eager")
    stage = sched.vocoder_stage
    jobs: list = []
    stage.on_job = jobs.append
    asked = record_stream_jobs(stage, monkeypatch)
    opts = SynthesisOptions(**DET, max_decoder_steps=120)

    async def main():
        lone = await streamed(sched, LONG, opts)
        with hold_decode_thread(sched):                 # the four join (and deliver) together
            tasks = [asyncio.ensure_future(streamed(sched, LONG, opts)) for _ in range(n)]
            await asyncio.sleep(0)
        return lone, await asyncio.gather(*tasks)

    with running(sched):
        lone, together = asyncio.run(main())
    alone_calls = sum(j.pieces == ((0, -1),) for j in stream_jobs(jobs))
    sizes = list(stage.stream_batch_sizes)
    windows = sum(sizes[:alone_calls])
    assert sizes[:alone_calls] == [1] * alone_calls and windows >= 5
    batched = stream_jobs(jobs)[alone_calls:]
    assert sorted(s for s, _ in batched[0].pieces) == [1, 2, 3, 4] and sizes[alone_calls] == n
    assert sum(sizes[alone_calls:]) == n * windows                       # every window once
    assert len(batched) == alone_calls                                    # each call holds all four
    assert np.array_equal(lone, replay(sched, asked[0], opts))           # alone: exactly the lone streamer
    for seq, audio in enumerate(together, start=1):
        assert len(audio) == len(lone)
        # Stated tolerance: fp32 rounding of batched convolutions (~3e-8 here); rows decoded together.
        assert np.abs(audio - replay(sched, asked[seq], opts)).max() < 1e-6
        assert np.abs(audio - lone).max() < 1e-5


def test_a_seeded_stream_is_never_batched_and_equals_its_lone_run(synth, monkeypatch):
    """A seeded stream between two unseeded ones of the same options and text: its windows go alone,
    through its generator, and its audio is the lone run's with that seed; the other two share calls."""
    sched = TacotronScheduler(synth, max_rows=8, decoder="eager")
    stage = sched.vocoder_stage
    jobs: list = []
    stage.on_job = jobs.append
    asked = record_stream_jobs(stage, monkeypatch)
    plain = SynthesisOptions(prenet_dropout=0.0, sigma=0.6, max_decoder_steps=120)
    seeded = SynthesisOptions(prenet_dropout=0.0, sigma=0.6, seed=7, max_decoder_steps=120)

    async def main():
        lone = await streamed(sched, LONG, seeded)
        with hold_decode_thread(sched):
            tasks = [asyncio.ensure_future(streamed(sched, LONG, o)) for o in (plain, seeded, plain)]
            await asyncio.sleep(0)
        return lone, await asyncio.gather(*tasks)

    with running(sched):
        lone, (_, audio, _) = asyncio.run(main())
    together = [j for j in stream_jobs(jobs) if (0, -1) not in j.pieces]
    assert all(j.pieces == ((2, -1),) for j in together if (2, -1) in j.pieces)
    assert any(set(j.pieces) == {(1, -1), (3, -1)} for j in together)
    assert np.array_equal(audio, replay(sched, asked[2], seeded, seed=7))
    assert np.array_equal(lone, replay(sched, asked[0], seeded, seed=7))
    assert len(audio) == len(lone) and np.abs(audio - lone).max() < 1e-5


def test_a_stream_cancelled_in_a_batch_does_not_break_the_others(synth, monkeypatch):
    """Four streams' first chunks share a vocoder call; one stream is cancelled while the call runs:
    the other three get their audio, and no later call holds the cancelled stream's work."""
    sched = TacotronScheduler(synth, max_rows=8, decoder="eager")
    stage = sched.vocoder_stage
    asked = record_stream_jobs(stage, monkeypatch)
    jobs: list = []
    entered, release = threading.Event(), threading.Event()

    def on_job(job):
        jobs.append(job)
        if job.kind == "stream" and not entered.is_set():
            entered.set()
            release.wait()                          # the batch is picked; its stream 1 is cancelled now

    stage.on_job = on_job
    opts = SynthesisOptions(**DET, max_decoder_steps=120)

    async def main():
        with hold_decode_thread(sched):
            tasks = [asyncio.ensure_future(streamed(sched, LONG, opts)) for _ in range(4)]
            await asyncio.sleep(0)
        try:
            await until(entered.is_set)
            tasks[1].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tasks[1]
        finally:
            release.set()
        return await asyncio.gather(*(tasks[i] for i in (0, 2, 3)))

    with running(sched):
        outs = asyncio.run(main())
    first, *later = stream_jobs(jobs)
    assert len(first.pieces) == 4
    assert later and all((1, -1) not in j.pieces for j in later)
    for seq, audio in zip((0, 2, 3), outs):
        assert np.abs(audio - replay(sched, asked[seq], opts)).max() < 1e-6
    assert stage.pending == 0


def test_a_failing_batched_call_fails_its_streams_and_the_stage_serves_on(synth, monkeypatch):
    from tts.streaming import MelStreamer

    sched = TacotronScheduler(synth, max_rows=8, decoder="eager")
    real, failed = MelStreamer.vocode_windows, []

    def once(self, windows):
        if not failed:
            failed.append(len(windows))
            raise RuntimeError("vocoder broke")
        return real(self, windows)

    monkeypatch.setattr(MelStreamer, "vocode_windows", once)
    opts = SynthesisOptions(**DET, max_decoder_steps=40)

    async def main():
        with hold_decode_thread(sched):
            tasks = [asyncio.ensure_future(streamed(sched, LONG, opts)) for _ in range(2)]
            await asyncio.sleep(0)
        res = await asyncio.gather(*tasks, return_exceptions=True)
        return res, await streamed(sched, LONG, opts)

    with running(sched):
        res, after = asyncio.run(main())
    assert failed == [2] and all(isinstance(r, RuntimeError) for r in res)
    assert len(after) > 0 and sched.vocoder_stage.pending == 0


def test_a_streaming_job_without_a_chunk_costs_no_vocoder_call(synth):
    """Frames that complete no chunk, and an end with no audio left, are answered without a vocoder job."""
    import torch

    from tts.server.vocoding import VocoderStage
    from tts.server.work import Call
    from tts.streaming import MelStreamer, StreamConfig, make_vocode

    stage = VocoderStage(synth)
    jobs: list = []
    stage.on_job = jobs.append
    opts = SynthesisOptions(**DET).merged_over(synth.voice.defaults)
    mel = torch.randn(synth.voice.vocoder.n_mel_channels, 30, generator=torch.Generator().manual_seed(0))

    async def main():
        call = Call(seq=0, text="x", opts=opts, pieces=[[1]], cleaned=["x"], loop=asyncio.get_running_loop(),
                    deadline=None, streaming=True)
        vocode = make_vocode(stage.vocoder, stage.denoiser, sigma=0.0, denoiser_strength=opts.denoiser_strength)
        st = MelStreamer(vocode, stage.acoustic.postnet_forward, StreamConfig(**CHUNKS))
        few = await stage.run_stream(call, st, mel[:, :21])                 # 4 + 8 + 10 frames make the first
        first = await stage.run_stream(call, st, mel[:, 21:])
        end = await stage.run_stream(call, st, None, finish=True, audio_frames=4)    # nothing left
        return few, first, end

    stage.start()
    try:
        few, first, end = asyncio.run(main())
    finally:
        stage.close()
    assert few == [] and end == [] and [len(c) for c in first] == [4 * 256]
    assert [(j.kind, j.pieces) for j in jobs] == [("stream", ((0, -1),))]


def test_a_streaming_job_queued_as_the_stage_closes_gets_shutting_down(synth):
    from tts.server.errors import ShuttingDownError
    from tts.server.vocoding import VocoderStage
    from tts.server.work import Call
    from tts.streaming import MelStreamer

    stage = VocoderStage(synth)
    opts = SynthesisOptions(**DET).merged_over(synth.voice.defaults)

    async def main():
        call = Call(seq=0, text="x", opts=opts, pieces=[[1]], cleaned=["x"], loop=asyncio.get_running_loop(),
                    deadline=None, streaming=True)
        fut = stage.run_stream(call, MelStreamer(lambda m: m), None, finish=True)
        stage.close()                           # before the loop's next turn hands the job over
        with pytest.raises(ShuttingDownError):
            await fut

    stage.start()
    asyncio.run(main())


def test_warm_streaming_runs_every_steady_window_shape_at_every_batch(synth, monkeypatch):
    """A vocoder with graphs gets a stream's steady windows (the first, the second, then whole chunks
    with context on both sides) at batches 1, 2, ... ``max_batch`` before serving, so no stream waits
    for a capture; eager modules get nothing."""
    import torch

    from tts.server.vocoding import VocoderStage
    from tts.streaming import StreamConfig

    stage = VocoderStage(synth, max_batch=2)
    cfg = StreamConfig(chunk_frames=32, overlap_frames=8, first_chunk_frames=8)
    kw = dict(sigma=0.0, denoiser_strength=0.0, n_mel=synth.voice.vocoder.n_mel_channels)
    post = stage.acoustic.postnet_forward
    assert stage.warm_streaming(cfg, post, **kw) == []
    seen = []                   # a vocoder with graphs (it records the shapes it is given)
    monkeypatch.setattr(stage.vocoder, "use_graphs", True, raising=False)
    monkeypatch.setattr(stage.vocoder, "infer", lambda mel, **k: (seen.append(tuple(mel.shape)),
                                                                  torch.zeros(mel.shape[0], 256 * mel.shape[-1]))[1])
    done = stage.warm_streaming(cfg, post, **kw)
    # postnet input / vocoder window: [0, 8) + 8 right + 10 context; [8, 40) from 0; [40, 72) from 32
    assert done == [(s, b) for s in ((26, 16), (58, 48), (68, 48)) for b in (1, 2)]
    assert seen == [(b, kw["n_mel"], t) for t in (16, 48, 48) for b in (1, 2)]


def test_griffinlim_streams_share_vocoder_calls_and_keep_each_streams_phase(monkeypatch):
    """The bundled Tacotron2 voice (Griffin-Lim with a PGHI start, whose windows continue their
    stream's phase): three streams started together share vocoder calls, taking each stream's
    windows in plan order, and each gets the audio of its frames through a lone ``MelStreamer``."""
    from tts.synthesizer import Synthesizer
    from tts.voice import load_voice

    synth = Synthesizer(load_voice("slt-tacotron2"))
    sched = TacotronScheduler(synth, max_rows=8, decoder="eager")
    asked = record_stream_jobs(sched.vocoder_stage, monkeypatch)
    opts = SynthesisOptions(prenet_dropout=0.0)
    texts = [LONG, "Short and sweet, this one.", "The third stream speaks a middle length sentence."]

    async def main():
        with hold_decode_thread(sched):
            tasks = [asyncio.ensure_future(streamed(sched, t, opts)) for t in texts]
            await asyncio.sleep(0)
        return await asyncio.gather(*tasks)

    with running(sched):
        got = asyncio.run(main())
    assert max(sched.vocoder_stage.stream_batch_sizes) > 1          # windows of different streams shared calls
    for seq, audio in enumerate(got):
        want = replay(sched, asked[seq], opts)
        assert len(audio) == len(want)
        snr = 10 * np.log10((want ** 2).sum() / ((audio - want) ** 2).sum())
        assert snr > 60, (texts[seq], snr)


@pytest.mark.parametrize("voice", ["slt-tacotron2", "fixture"])
def test_a_griffinlim_streams_windows_join_vocoder_calls_only_in_plan_order(voice, synth):
    """Stream A's next window has the steady shape; stream B's next one the shape before it, then one
    of A's shape. With the bundled voice (Griffin-Lim continuing each stream's phase) B's later
    window must wait for its earlier one; with the WaveGlow fixture it shares A's call at once."""
    import torch

    from tts.server.vocoding import _StreamJob
    from tts.streaming import MelStreamer, StreamConfig, make_vocode
    from tts.synthesizer import Synthesizer
    from tts.voice import load_voice

    s = synth if voice == "fixture" else Synthesizer(load_voice(voice))
    stage = TacotronScheduler(s, max_rows=8, decoder="eager").vocoder_stage
    o = SynthesisOptions(**DET).merged_over(s.voice.defaults)
    vocode = make_vocode(stage.vocoder, stage.denoiser, sigma=o.sigma, denoiser_strength=o.denoiser_strength,
                         dtype=stage.dtype)
    assert (getattr(vocode, "window", None) is not None) == (voice != "fixture")

    def job(seq, done):
        st = MelStreamer(vocode, None, StreamConfig(**CHUNKS))
        j = _StreamJob(SimpleNamespace(seq=seq, generator=None, opts=o, voc_jobs=0), st, None, False, None, None)
        j.windows = st.plan_push(torch.zeros(80, 44))             # chunks [0, 4), [4, 20), [20, 36)
        j.audio = [torch.zeros(1)] * done + [None] * (len(j.windows) - done)
        return j

    a, b = job(0, done=2), job(1, done=1)
    assert [w.shape for w in a.windows] == [(12, 12), (28, 28), (32, 32)]
    stage._streams.extend([a, b])
    _, batch = stage._pick_windows()
    assert batch == ([(a, 2)] if voice != "fixture" else [(a, 2), (b, 2)])


def test_a_streams_first_chunk_goes_before_the_chunks_other_streams_queued(synth):
    """Stream A (older) has steady windows queued; stream B, just started, has its first window: the
    next vocoder call is B's first chunk, not A's backlog (time to first audio under load). With no
    first window queued the oldest job goes first, as before."""
    import torch

    from tts.server.vocoding import _StreamJob
    from tts.streaming import MelStreamer, StreamConfig, make_vocode

    stage = TacotronScheduler(synth, max_rows=8, decoder="eager").vocoder_stage
    o = SynthesisOptions(**DET).merged_over(synth.voice.defaults)
    vocode = make_vocode(stage.vocoder, stage.denoiser, sigma=o.sigma, denoiser_strength=o.denoiser_strength,
                         dtype=stage.dtype)

    def job(seq, frames, committed):
        st = MelStreamer(vocode, None, StreamConfig(**CHUNKS))
        windows = st.plan_push(torch.zeros(80, frames))
        for w in windows[:committed]:                            # chunks already sent
            st.commit(w, torch.zeros((w.hi - w.lo) * 256))
        j = _StreamJob(SimpleNamespace(seq=seq, generator=None, opts=o, voc_jobs=0), st, None, False, None, None)
        j.windows = windows[committed:]
        j.audio = [None] * len(j.windows)
        return j

    a, b = job(0, 76, committed=1), job(1, 12, committed=0)    # A: chunks 2-4 queued; B: its first chunk
    assert a.streamer.chunks_out == 1 and b.streamer.chunks_out == 0
    assert [w.shape for w in b.windows] == [(12, 12)] and all(w.shape == (32, 32) for w in a.windows[1:])
    stage._streams.extend([a, b])
    _, batch = stage._pick_windows()
    assert batch == [(b, 0)]
    stage._streams.remove(b)
    _, batch = stage._pick_windows()
    assert batch[0] == (a, 0)
