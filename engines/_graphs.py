"""CUDA-graph capture and the LRU that keeps captured graphs, shared by every engine.

``capture(fn, device)`` runs ``fn`` on a side stream of ``device`` (warm-up: Triton compiles,
cuDNN picks algorithms, the caching allocator grows), then captures one more call of ``fn`` in
a CUDA graph and returns the graph with what that call returned (the static outputs the graph
rewrites at every replay). Two details every capture needs:

- the capture runs on a stream of the engine's own device (``torch.cuda.graph(stream=...)``).
  Without it ``torch.cuda.graph`` uses one process-wide capture stream, made on whatever device
  was current at the process's first capture; a second GPU's engine then captures an empty
  graph, and its Triton kernels launch on the first GPU;
- ``capture_error_mode="thread_local"``: only this thread's CUDA calls are checked during the
  capture, so another thread (a vocoder engine, the scheduler's eager decoder step) may keep
  launching work meanwhile. Engines draw random numbers from generators of their own for the
  same reason: the device's default generator is in capture mode while a graph is captured.

``LRU`` holds the graphs (with their static buffers) of the shapes an engine met most recently.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

import torch

__all__ = ["GraphPool", "capture", "LRU", "ShapeGraphs"]

T = TypeVar("T")
V = TypeVar("V")


class GraphPool:
    """A CUDA-graph memory pool shared by the graphs captured into it (made at the first capture).

    Graphs of one pool may share memory: replay them one at a time, in stream order."""

    def __init__(self) -> None:
        self._handle = None

    def handle(self):
        if self._handle is None:
            self._handle = torch.cuda.graph_pool_handle()
        return self._handle


def capture(fn: Callable[[], T], device: torch.device, *, pool: GraphPool | None = None, warmup: int = 1,
            priority: int = 0) -> tuple[torch.cuda.CUDAGraph, T]:
    """``fn`` captured in a CUDA graph on ``device``: returns ``(graph, result of the captured call)``.

    ``warmup``: calls of ``fn`` on the side stream before the capture (their results are
    dropped; ``fn`` must tolerate running ``warmup + 1`` times). ``pool``: the memory pool of
    the graph (None: a private one). ``priority``: priority of the capture stream; captured
    kernels keep it at replay.
    """
    cur = torch.cuda.current_stream(device)
    stream = torch.cuda.Stream(device, priority=priority)
    stream.wait_stream(cur)
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    cur.wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=None if pool is None else pool.handle(), stream=stream,
                          capture_error_mode="thread_local"):
        out = fn()
    cur.wait_stream(stream)
    return graph, out


class LRU(Generic[V]):
    """At most ``max_items`` values by key, least recently used evicted first.

    ``max_items`` may be changed at any time (it is read at the next insertion). A new value
    makes room before it is built (``get_or_make``), so an evicted graph's memory is free for
    the next capture."""

    def __init__(self, max_items: int) -> None:
        self.max_items = int(max_items)
        self._items: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable) -> V | None:
        """The value of ``key`` (now the most recent), or None."""
        v = self._items.get(key)
        if v is not None:
            self._items.move_to_end(key)
        return v

    def _make_room(self) -> None:
        while self._items and len(self._items) >= max(1, self.max_items):
            self._items.popitem(last=False)

    def put(self, key: Hashable, value: V) -> V:
        """Store ``value`` as the most recent (replacing ``key``'s old value, else evicting first)."""
        if key in self._items:
            self._items[key] = value
            self._items.move_to_end(key)
        else:
            self._make_room()
            self._items[key] = value
        return value

    def get_or_make(self, key: Hashable, make: Callable[[], V]) -> V:
        """``get(key)``, else ``make()`` stored under ``key`` (room made first)."""
        v = self.get(key)
        if v is None:
            self._make_room()
            v = make()
            self._items[key] = v
        return v

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._items)

    def values(self):
        return self._items.values()

    def clear(self) -> None:
        self._items.clear()


class ShapeGraphs:
    """Mixin of the engines that keep one captured graph per input shape in ``self._graphs`` (an
    ``LRU``): their ``max_graphs`` knob."""

    _graphs: LRU

    @property
    def max_graphs(self) -> int:
        """Shapes (graphs with their static buffers) kept, least recently used evicted first."""
        return self._graphs.max_items

    @max_graphs.setter
    def max_graphs(self, n: int) -> None:
        self._graphs.max_items = int(n)
