"""The generic dynamic batcher, driven by fake batch functions (no model)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tts.server.batcher import BatcherConfig, DynamicBatcher
from tts.server.errors import DeadlineExpiredError, QueueFullError, ShuttingDownError

pytestmark = pytest.mark.timeout(60)


class Recorder:
    """A batch function that records its batches and doubles its inputs."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.gate = gate
        self.threads: set[str] = set()

    def __call__(self, items: list[int]) -> list[int]:
        self.threads.add(threading.current_thread().name)
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.delay:
            time.sleep(self.delay)
        self.batches.append(list(items))
        return [2 * x for x in items]


def run(coro):
    return asyncio.run(coro)


def test_config_validation():
    with pytest.raises(ValueError, match="max_batch_size"):
        BatcherConfig(max_batch_size=0)
    with pytest.raises(ValueError, match="preferred"):
        BatcherConfig(max_batch_size=4, preferred_batch_sizes=(8,))
    assert BatcherConfig(max_batch_size=8, preferred_batch_sizes=(4, 2, 4)).preferred_batch_sizes == (2, 4)


def test_concurrent_calls_are_batched_and_results_routed():
    rec = Recorder(delay=0.01)

    async def main():
        b = DynamicBatcher([rec], BatcherConfig(max_batch_size=4, max_queue_delay_s=0.05))
        await b.start()
        outs = await asyncio.gather(*(b.submit(i) for i in range(10)))
        await b.close()
        return outs

    outs = run(main())
    assert [o.result for o in outs] == [2 * i for i in range(10)]
    assert sorted(x for batch in rec.batches for x in batch) == list(range(10))
    assert max(len(bt) for bt in rec.batches) == 4
    assert all(len(bt) <= 4 for bt in rec.batches)
    assert len(rec.batches) == 3  # 4 + 4 + 2
    assert {o.batch_size for o in outs} == {4, 2}


def test_keys_never_mix():
    rec = Recorder()

    async def main():
        b = DynamicBatcher([rec], BatcherConfig(max_batch_size=8, max_queue_delay_s=0.02))
        await b.start()
        outs = await asyncio.gather(*(b.submit(i, key=i % 2) for i in range(8)))
        await b.close()
        return outs

    outs = run(main())
    assert [o.result for o in outs] == [2 * i for i in range(8)]
    for bt in rec.batches:
        assert len({x % 2 for x in bt}) == 1


def test_single_call_waits_at_most_the_queue_delay():
    rec = Recorder()

    async def main():
        b = DynamicBatcher([rec], BatcherConfig(max_batch_size=8, max_queue_delay_s=0.1))
        await b.start()
        t0 = time.monotonic()
        out = await b.submit(1)
        dt = time.monotonic() - t0
        await b.close()
        return out, dt

    out, dt = run(main())
    assert out.result == 2 and out.batch_size == 1
    assert 0.09 <= dt < 1.0
    assert out.queue_seconds >= 0.09


#: A queue delay no test waits out: a call that leaves at all left without it.
FOREVER = 3600.0


def test_a_lone_call_leaves_at_once_when_no_other_call_is_in_flight():
    """One client: the only call in flight is the queued one, so waiting could not fill a batch."""
    rec = Recorder()

    async def main():
        b = DynamicBatcher([rec], BatcherConfig(max_batch_size=8, max_queue_delay_s=FOREVER), in_flight=lambda: 1)
        await b.start()
        out = await asyncio.wait_for(b.submit(1), 30)
        await b.close()
        return out

    out = run(main())
    assert out.result == 2 and out.batch_size == 1 and rec.batches == [[1]]


def test_calls_queued_together_with_none_to_come_leave_as_one_batch_at_once():
    rec = Recorder()

    async def main():
        b = DynamicBatcher([rec], BatcherConfig(max_batch_size=8, max_queue_delay_s=FOREVER), in_flight=lambda: 3)
        await b.start()
        outs = await asyncio.wait_for(asyncio.gather(*(b.submit(i) for i in range(3))), 30)
        await b.close()
        return outs

    outs = run(main())
    assert [o.result for o in outs] == [0, 2, 4] and rec.batches == [[0, 1, 2]]


def test_a_call_queued_behind_a_running_batch_leaves_once_that_batch_is_answered():
    """Two clients: B arrives while A's batch runs. When A's batch ends, A's call is on its way out
    (answered, not returned yet): B is all that could be batched, and leaves at once."""
    gate = threading.Event()
    rec = Recorder(gate=gate)
    in_flight = [0]
    b = DynamicBatcher([rec], BatcherConfig(max_batch_size=8, max_queue_delay_s=FOREVER),
                       in_flight=lambda: in_flight[0])

    async def call(x):
        in_flight[0] += 1
        try:
            return await b.submit(x)
        finally:
            in_flight[0] -= 1

    async def main():
        await b.start()
        first = asyncio.create_task(call(1))
        await asyncio.wait_for(_until(lambda: b.running == 1), 30)     # A's batch holds the worker
        second = asyncio.create_task(call(2))
        await asyncio.sleep(0.01)
        gate.set()
        outs = await asyncio.wait_for(asyncio.gather(first, second), 30)
        await b.close()
        return outs

    outs = run(main())
    assert [o.result for o in outs] == [2, 4] and rec.batches == [[1], [2]]


async def _until(cond) -> None:
    while not cond():
        await asyncio.sleep(0.005)


def test_the_queue_delay_holds_while_other_calls_may_still_join():
    """Another call in flight (not queued yet) may still join: the lone queued call waits the delay,
    and a call that arrives within it shares its batch."""
    rec = Recorder()
    in_flight = 2

    async def main():
        b = DynamicBatcher([rec], BatcherConfig(max_batch_size=8, max_queue_delay_s=0.2), in_flight=lambda: in_flight)
        await b.start()
        first = asyncio.create_task(b.submit(1))
        await asyncio.sleep(0.02)
        assert not first.done()
        second = await b.submit(2)
        out = await first
        await b.close()
        return out, second

    out, second = run(main())
    assert rec.batches == [[1, 2]] and out.batch_size == second.batch_size == 2
    assert out.queue_seconds >= 0.015


def test_the_engine_sends_a_lone_call_without_the_queue_delay():
    """``ServingEngine`` tells its batcher which calls are on their way (unary and streaming alike)."""
    from tts.options import SynthesisOptions
    from tts.server.engine import ServingEngine
    from tts.server.testing import FakeSynthesizer

    fake = FakeSynthesizer()

    async def main():
        engine = ServingEngine({"fake": [fake]}, batcher=BatcherConfig(max_batch_size=8, max_queue_delay_s=FOREVER))
        await engine.start()
        out = await asyncio.wait_for(engine.synthesize("fake", "Hello there", SynthesisOptions()), 30)
        pieces = await asyncio.wait_for(_collect(engine.stream("fake", "Hello there", SynthesisOptions())), 30)
        assert engine.batcher_calls == 0
        await engine.close()
        return out, pieces

    out, pieces = run(main())
    assert out.batch_size == 1 and len(out.result.audio) == len(fake.audio_for("Hello there"))
    assert pieces[-1].last and fake.batches == [1, 1]


async def _collect(agen) -> list:
    return [x async for x in agen]


def test_preferred_batch_size_leaves_without_waiting():
    rec = Recorder()

    async def main():
        b = DynamicBatcher([rec], BatcherConfig(max_batch_size=8, max_queue_delay_s=5.0, preferred_batch_sizes=(2,)))
        await b.start()
        t0 = time.monotonic()
        outs = await asyncio.gather(b.submit(1), b.submit(2))
        dt = time.monotonic() - t0
        await b.close()
        return outs, dt

    outs, dt = run(main())
    assert [o.result for o in outs] == [2, 4]
    assert dt < 2.0  # not the 5 s delay
    assert rec.batches == [[1, 2]]


def test_full_queue_is_refused():
    gate = threading.Event()
    rec = Recorder(gate=gate)

    async def main():
        b = DynamicBatcher([rec], BatcherConfig(max_batch_size=1, max_queue_delay_s=0, max_queue_size=2))
        await b.start()
        first = asyncio.create_task(b.submit(0))
        while b.running == 0:  # first item taken into a (blocked) batch
            await asyncio.sleep(0.001)
        queued = [asyncio.create_task(b.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0.01)
        assert b.queue_depth == 2
        with pytest.raises(QueueFullError, match="full"):
            await b.submit(3)
        gate.set()
        outs = await asyncio.gather(first, *queued)
        await b.close()
        return outs

    outs = run(main())
    assert [o.result for o in outs] == [0, 2, 4]


def test_cancelled_call_leaves_queue_and_frees_its_slot():
    gate = threading.Event()
    rec = Recorder(gate=gate)

    async def main():
        b = DynamicBatcher([rec], BatcherConfig(max_batch_size=4, max_queue_delay_s=0, max_queue_size=1))
        await b.start()
        blocker = asyncio.create_task(b.submit(0))
        while b.running == 0:
            await asyncio.sleep(0.001)
        victim = asyncio.create_task(b.submit(1))
        await asyncio.sleep(0.01)
        assert b.queue_depth == 1
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await victim
        assert b.queue_depth == 0
        taker = asyncio.create_task(b.submit(5))  # the freed slot is usable
        await asyncio.sleep(0.01)
        gate.set()
        outs = await asyncio.gather(blocker, taker)
        await b.close()
        return outs

    outs = run(main())
    assert [o.result for o in outs] == [0, 10]
    assert all(1 not in bt for bt in rec.batches)


def test_expired_deadline_is_not_run():
    gate = threading.Event()
    rec = Recorder(gate=gate)

    async def main():
        b = DynamicBatcher([rec], BatcherConfig(max_batch_size=1, max_queue_delay_s=0))
        await b.start()
        blocker = asyncio.create_task(b.submit(0))
        while b.running == 0:
            await asyncio.sleep(0.001)
        late = asyncio.create_task(b.submit(7, deadline=time.monotonic() + 0.02))
        await asyncio.sleep(0.05)
        gate.set()
        await blocker
        with pytest.raises(DeadlineExpiredError):
            await late
        await b.close()

    run(main())
    assert [7] not in rec.batches


def test_failing_batch_resolves_every_waiter_and_batcher_survives():
    calls = []

    def fn(items):
        calls.append(list(items))
        if any(x < 0 for x in items):
            raise RuntimeError("boom")
        return items

    async def main():
        b = DynamicBatcher([fn], BatcherConfig(max_batch_size=8, max_queue_delay_s=0.05))
        await b.start()
        res = await asyncio.gather(*(b.submit(x) for x in (1, -1, 2)), return_exceptions=True)
        after = await b.submit(9)
        await b.close()
        return res, after

    res, after = run(main())
    assert all(isinstance(r, RuntimeError) and "boom" in str(r) for r in res)
    assert after.result == 9


def test_wrong_result_count_is_an_error_for_all():
    async def main():
        b = DynamicBatcher([lambda items: [1]], BatcherConfig(max_batch_size=4, max_queue_delay_s=0.05))
        await b.start()
        res = await asyncio.gather(*(b.submit(x) for x in range(3)), return_exceptions=True)
        await b.close()
        return res

    res = run(main())
    assert all(isinstance(r, RuntimeError) and "3 items" in str(r) for r in res)


def test_two_workers_share_the_load():
    a, c = Recorder(delay=0.05), Recorder(delay=0.05)

    async def main():
        b = DynamicBatcher([a, c], BatcherConfig(max_batch_size=2, max_queue_delay_s=0))
        await b.start()
        outs = await asyncio.gather(*(b.submit(i) for i in range(12)))
        await b.close()
        return outs

    outs = run(main())
    assert [o.result for o in outs] == [2 * i for i in range(12)]
    assert a.batches and c.batches
    assert {o.worker for o in outs} == {0, 1}
    assert a.threads.isdisjoint(c.threads)


def test_close_drains_then_refuses():
    rec = Recorder(delay=0.01)

    async def main():
        b = DynamicBatcher([rec], BatcherConfig(max_batch_size=2, max_queue_delay_s=0.01))
        await b.start()
        tasks = [asyncio.create_task(b.submit(i)) for i in range(5)]
        await asyncio.sleep(0)
        await b.close()
        outs = await asyncio.gather(*tasks)
        with pytest.raises((ShuttingDownError, RuntimeError)):
            await b.submit(1)
        return outs

    outs = run(main())
    assert [o.result for o in outs] == [0, 2, 4, 6, 8]
