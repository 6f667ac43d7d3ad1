"""Fairness of the dynamic-batcher path (FastSpeech voices): a long text goes in parts, so a short
call sent while it runs waits for at most one batch, and a long call whose client leaves stops
before its next part. Counted in batches, never in seconds; the long text's audio is unchanged."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from tts.options import SynthesisOptions
from tts.server.batcher import BatcherConfig
from tts.server.engine import ServingEngine

pytestmark = pytest.mark.timeout(300)

LONG = " ".join(f"Word {w} one. " for w in ("red", "blue", "green", "gold", "grey", "pink", "teal", "rose"))
SHORT = "Hello world."


@pytest.fixture(scope="module")
def synth():
    from tts.synthesizer import Synthesizer
    from tts.voice import load_voice

    return Synthesizer(load_voice("heart"), max_batch=2, max_piece_chars=16)


class Recorder:
    """Wraps ``synthesize_batch``: records each batch's texts; ``gate`` holds the first batch."""

    def __init__(self, synth):
        self.synth, self.batches, self.gate = synth, [], threading.Event()
        self.first = threading.Event()
        self.after_batch = None

    def __call__(self, texts, options=None):
        self.batches.append([getattr(t, "text", t) for t in texts])
        if len(self.batches) == 1:
            self.first.set()
            self.gate.wait(60)
        out = type(self.synth).synthesize_batch(self.synth, texts, options)
        if self.after_batch is not None:
            self.after_batch(len(self.batches))
        return out


def _engine(synth, rec):
    synth.synthesize_batch = rec
    return ServingEngine({"heart": [synth]}, batcher=BatcherConfig(max_batch_size=2, max_queue_delay_s=0.0))


def test_a_short_call_waits_for_at_most_one_batch_and_the_long_audio_is_unchanged(synth):
    whole = type(synth).synthesize(synth, synth.plan(LONG))
    rec = Recorder(synth)
    engine = _engine(synth, rec)

    async def main():
        await engine.start()
        try:
            long_task = asyncio.create_task(engine.synthesize("heart", synth.plan(LONG), SynthesisOptions()))
            await asyncio.to_thread(rec.first.wait, 60)          # the long call's first part runs
            short_task = asyncio.create_task(engine.synthesize("heart", synth.plan(SHORT), SynthesisOptions()))
            await asyncio.sleep(0)
            rec.gate.set()
            return await long_task, await short_task
        finally:
            del synth.synthesize_batch
            await engine.close()

    long_out, short_out = asyncio.run(main())
    pieces = len(synth.plan(LONG).pieces)
    assert pieces >= 8
    long_batches = [i for i, b in enumerate(rec.batches) if SHORT not in b]
    short_batch = next(i for i, b in enumerate(rec.batches) if SHORT in b)
    assert short_batch == 1, rec.batches                   # right after the batch that was running
    assert short_batch < long_batches[-1]
    assert long_out.result.pieces == pieces and long_out.result.normalized_text == whole.normalized_text
    assert long_out.result.audio.shape == whole.audio.shape
    assert float(np.abs(long_out.result.audio - whole.audio).max()) <= 1e-5


def test_a_cancelled_long_call_stops_before_its_next_part(synth):
    rec = Recorder(synth)
    rec.gate.set()
    engine = _engine(synth, rec)

    async def main():
        await engine.start()
        loop = asyncio.get_running_loop()
        try:
            task = asyncio.create_task(engine.synthesize("heart", synth.plan(LONG), SynthesisOptions()))
            rec.after_batch = lambda n: n == 2 and loop.call_soon_threadsafe(task.cancel)
            with pytest.raises(asyncio.CancelledError):
                await task
            ran = len(rec.batches)
            await engine.synthesize("heart", synth.plan(SHORT), SynthesisOptions())     # queue drained
            return ran
        finally:
            del synth.synthesize_batch
            await engine.close()

    ran = asyncio.run(main())
    assert ran == 2
    assert rec.batches[-1] == [SHORT]                       # no part of the long text ran after the cancel
    assert sum(len(b) for b in rec.batches[:-1]) < len(synth.plan(LONG).pieces)
