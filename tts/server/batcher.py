"""Dynamic batcher: collects concurrent calls into batches for a blocking batch function.

Semantics (as Triton's dynamic batcher):

- A batch holds items of one ``key`` only (same voice and options), at most
  ``max_batch_size`` of them, oldest first.
- When enough items of a key wait to fill ``max_batch_size`` or one of
  ``preferred_batch_sizes``, the largest such batch leaves at once;
  otherwise the batcher waits until the oldest item has waited
  ``max_queue_delay_s`` and then sends what it has.
- Unless no other call could join: given ``in_flight`` (the number of the
  server's calls that may still submit, queued ones included), when every one
  of them is already queued (or was just answered, on its way out), waiting
  cannot grow a batch, and the oldest key's items leave at once. So a lone
  call (one client) never waits ``max_queue_delay_s``; while other calls run
  or are about to submit, the delay applies as above.
- The queue is bounded: ``submit`` on a full queue raises ``QueueFullError``.
- A caller that is cancelled (client cancel, gRPC deadline) leaves the queue
  and frees its slot at once; an item whose own deadline has passed when its
  batch forms is resolved with ``DeadlineExpiredError`` and not run.
- Every accepted item is resolved: with its result, or with the exception the
  batch function raised (every item of a failing batch gets it).
- One worker per batch function (one per device); workers take batches from
  the one shared queue, so load spreads over devices. Each worker runs its
  function in its own thread, one batch at a time.

The batcher waits on an ``asyncio.Condition``; it never sleep-polls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tts.server.errors import DeadlineExpiredError, QueueFullError, ShuttingDownError

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: A batch function: items of one key in, one result per item out (same order).
BatchFn = Callable[[list[T]], Sequence[R]]


@dataclass(frozen=True)
class BatcherConfig:
    """Load-time settings of the dynamic batcher."""

    #: Largest number of items in one batch (>= 1).
    max_batch_size: int = 8
    #: Longest time the oldest waiting item is held back to fill a batch, seconds (>= 0).
    max_queue_delay_s: float = 0.005
    #: Batch sizes that are sent as soon as they are reached (each in 1..max_batch_size).
    preferred_batch_sizes: tuple[int, ...] = ()
    #: Most items waiting (not yet running) at once; one more is refused (>= 1).
    max_queue_size: int = 256

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_queue_delay_s < 0:
            raise ValueError(f"max_queue_delay_s must be >= 0, got {self.max_queue_delay_s}")
        if self.max_queue_size < 1:
            raise ValueError(f"max_queue_size must be >= 1, got {self.max_queue_size}")
        for size in self.preferred_batch_sizes:
            if not 1 <= size <= self.max_batch_size:
                raise ValueError(
                    f"preferred batch size {size} is outside 1..max_batch_size={self.max_batch_size}"
                )
        object.__setattr__(self, "preferred_batch_sizes", tuple(sorted(set(self.preferred_batch_sizes))))


@dataclass(frozen=True)
class Batched(Generic[R]):
    """The result of one item and how it was batched."""

    #: What the batch function returned for this item.
    result: R
    #: Seconds the item waited in the queue before its batch started.
    queue_seconds: float
    #: Number of items in the batch it ran in.
    batch_size: int
    #: Index of the worker (device) that ran it.
    worker: int


@dataclass(eq=False)
class _Entry(Generic[T]):
    item: T
    key: Hashable
    future: asyncio.Future
    enqueued: float
    deadline: float | None  # time.monotonic() value, or None
    started: float = field(default=0.0)
    answered: bool = False  # its future was given a result or an error by the batcher


class DynamicBatcher(Generic[T, R]):
    """Batches concurrent ``submit`` calls for blocking batch functions (one per worker).

    Args:
        batch_fns: one function per worker, e.g. one per GPU; each gets a
            ``list[T]`` of one key and returns one result per item.
        config: batching limits.
        on_batch: optional callback ``(worker, batch_size, seconds)`` after every batch (metrics).
        in_flight: optional count of the calls that may still ``submit`` (the queued ones included);
            when it is no more than the queued items, they leave without waiting (module doc).
            None: the delay always applies.
    """

    def __init__(
        self,
        batch_fns: Sequence[BatchFn],
        config: BatcherConfig = BatcherConfig(),
        *,
        on_batch: Callable[[int, int, float], None] | None = None,
        name: str = "batcher",
        in_flight: Callable[[], int] | None = None,
    ) -> None:
        if not batch_fns:
            raise ValueError("DynamicBatcher needs at least one batch function")
        self.config = config
        self._fns = list(batch_fns)
        self._on_batch = on_batch
        self._in_flight = in_flight
        self._name = name
        self._queue: list[_Entry[T]] = []
        self._cond: asyncio.Condition | None = None
        self._tasks: list[asyncio.Task] = []
        self._executors: list[ThreadPoolExecutor] = []
        self._closing = False
        self._running = 0
        self._answered = 0      # items answered whose ``submit`` has not returned yet

    # ------------------------------------------------------------------ state
    @property
    def queue_depth(self) -> int:
        """Items waiting for a batch (not counting running ones)."""
        return len(self._queue)

    @property
    def running(self) -> int:
        """Items in batches that are running now."""
        return self._running

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Starts one worker task per batch function on the running loop."""
        if self._tasks:
            return
        self._cond = asyncio.Condition()
        for i, fn in enumerate(self._fns):
            ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self._name}-{i}")
            self._executors.append(ex)
            self._tasks.append(asyncio.create_task(self._worker(i, fn, ex), name=f"{self._name}-{i}"))

    async def close(self, timeout: float | None = None) -> bool:
        """Stops taking new items, runs what is queued, then stops the workers. With ``timeout``,
        waits that many seconds at most: then queued items fail with ShuttingDownError and running
        batches are abandoned (their threads finish on their own). True if everything finished."""
        if self._cond is None:
            return True
        async with self._cond:
            self._closing = True
            self._cond.notify_all()
        finished = True
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            finished = not pending
        # Anything left (no worker alive) is resolved, never left hanging.
        for entry in self._queue:
            if not entry.future.done():
                self._answer(entry, exc=ShuttingDownError("server is shutting down"))
        self._queue.clear()
        for ex in self._executors:
            ex.shutdown(wait=finished, cancel_futures=True)
        self._tasks.clear()
        self._executors.clear()
        return finished

    # ----------------------------------------------------------------- submit
    async def submit(self, item: T, *, key: Hashable = None, deadline: float | None = None) -> Batched[R]:
        """Queues ``item`` and waits for its result.

        ``deadline`` is a ``time.monotonic()`` value after which the item is not run.
        Raises QueueFullError when the queue is full, ShuttingDownError while
        closing, DeadlineExpiredError, or what the batch function raised.
        Cancelling the awaiting task removes the item from the queue.
        """
        if self._cond is None:
            raise RuntimeError("DynamicBatcher.start() was not called")
        if self._closing:
            raise ShuttingDownError("server is shutting down")
        if len(self._queue) >= self.config.max_queue_size:
            raise QueueFullError(
                f"request queue is full ({self.config.max_queue_size} waiting); retry later"
            )
        loop = asyncio.get_running_loop()
        entry = _Entry(item=item, key=key, future=loop.create_future(), enqueued=time.monotonic(), deadline=deadline)
        async with self._cond:
            self._queue.append(entry)
            self._cond.notify_all()
        try:
            return await entry.future
        finally:
            if entry.answered:
                self._answered -= 1
            if entry in self._queue:  # cancelled while waiting: free the slot
                self._queue.remove(entry)
                if not entry.future.done():
                    entry.future.cancel()

    # ----------------------------------------------------------------- worker
    def _expire(self, now: float) -> None:
        keep = []
        for e in self._queue:
            if e.future.done():  # cancelled
                continue
            if e.deadline is not None and now >= e.deadline:
                self._answer(e, exc=DeadlineExpiredError("deadline passed while the request was queued"))
                continue
            keep.append(e)
        self._queue[:] = keep

    def _pick(self, now: float) -> tuple[list[_Entry[T]], float | None]:
        """Returns (batch, None) when a batch should leave now, else ([], seconds to wait)."""
        if not self._queue:
            return [], None
        cfg = self.config
        oldest = self._queue[0]
        same = [e for e in self._queue if e.key == oldest.key]
        n = len(same)
        if n >= cfg.max_batch_size:
            take = cfg.max_batch_size
        else:
            fitting = [p for p in cfg.preferred_batch_sizes if p <= n]
            waited = now - oldest.enqueued
            if fitting and (fitting[-1] == n or not cfg.preferred_batch_sizes[-1] > n):
                take = fitting[-1]
            elif waited >= cfg.max_queue_delay_s or self._closing or self._none_to_come():
                take = n
            else:
                wait = cfg.max_queue_delay_s - waited
                if oldest.deadline is not None:
                    wait = min(wait, max(0.0, oldest.deadline - now))
                return [], wait
        return same[:take], None

    def _none_to_come(self) -> bool:
        """True when every call that may still submit is queued (waiting could not grow a batch): calls
        whose item was just answered are on their way out, not in."""
        return self._in_flight is not None and self._in_flight() - self._answered <= len(self._queue)

    def _answer(self, e: _Entry[T], result: object = None, exc: BaseException | None = None) -> None:
        e.answered = True
        self._answered += 1
        if exc is not None:
            e.future.set_exception(exc)
        else:
            e.future.set_result(result)

    async def _worker(self, index: int, fn: BatchFn, executor: ThreadPoolExecutor) -> None:
        assert self._cond is not None
        loop = asyncio.get_running_loop()
        while True:
            async with self._cond:
                while True:
                    now = time.monotonic()
                    self._expire(now)
                    batch, wait = self._pick(now)
                    if batch:
                        break
                    if self._closing and not self._queue:
                        return
                    if wait is None:
                        await self._cond.wait()
                    else:
                        try:
                            await asyncio.wait_for(self._cond.wait(), timeout=wait)
                        except asyncio.TimeoutError:
                            pass
                for e in batch:
                    self._queue.remove(e)
            await self._run(index, fn, executor, loop, batch)

    async def _run(self, index, fn, executor, loop, batch: list[_Entry[T]]) -> None:
        started = time.monotonic()
        for e in batch:
            e.started = started
        self._running += len(batch)
        try:
            results = await loop.run_in_executor(executor, fn, [e.item for e in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
        except BaseException as exc:  # noqa: BLE001 - every waiting call gets the error
            err = exc if isinstance(exc, Exception) else ShuttingDownError(f"batch aborted: {exc!r}")
            logger.debug("batch of %d failed on worker %d: %r", len(batch), index, exc)
            for e in batch:
                if not e.future.done():
                    self._answer(e, exc=err)
            if err is not exc:
                raise
            results = None
        finally:
            self._running -= len(batch)
        seconds = time.monotonic() - started
        if results is not None:
            for e, r in zip(batch, results):
                if not e.future.done():
                    self._answer(e, Batched(result=r, queue_seconds=started - e.enqueued, batch_size=len(batch),
                                            worker=index))
        if self._on_batch is not None:
            try:
                self._on_batch(index, len(batch), seconds)
            except Exception:  # metrics must never break serving
                logger.exception("on_batch callback failed")
