"""Which waiting pieces join the Tacotron2 decoder batch next, and which rows make room (pure).

The batch has ``max_rows`` rows; every row is one piece of one call. Between
two steps the scheduler asks ``plan_admission`` for the rows to start:

1. Round robin over calls: the next row goes to the waiting call with the
   fewest rows decoding, then streaming before unary (a stream's listener
   hears every delay), then the earliest arrival. A call holds at most
   ``share`` rows this way, so the pieces of a long text interleave with
   other calls instead of filling the batch.
2. A call with no row at all while every row is taken makes room: a unary
   row of a call holding two or more rows leaves (the one with the fewest
   steps done; its piece decodes again from the start later). Streaming
   rows never leave: their frames are already on the way to the listener.
3. Rows beyond a call's share are handed out only while ``share`` rows stay
   free, so a call arriving later finds a row at the next step.
4. A stream's first row joins alone: its other pieces join from the next
   step on, so its first audio does not wait for their encoders (they are
   heard only after the first piece).

All rows of a step share one prenet dropout probability: when the next call
in line asks for another one, nobody joins until the batch drains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tts.server.work import Call, Row


@dataclass(frozen=True)
class AdmissionPolicy:
    """Limits of the decoder batch."""

    #: Most rows decoding at once (>= 1).
    max_rows: int
    #: Rows one call may hold while others wait, and rows kept free for newcomers (1..max_rows).
    share: int

    def __post_init__(self) -> None:
        if self.max_rows < 1 or not 1 <= self.share <= self.max_rows:
            raise ValueError(f"need max_rows >= 1 and share in 1..max_rows, got {self.max_rows}, {self.share}")

    @classmethod
    def default(cls, max_rows: int, share: int | None = None) -> AdmissionPolicy:
        """``share`` defaults to a quarter of the rows (at least one)."""
        return cls(max_rows=max_rows, share=max(1, max_rows // 4) if share is None else share)


@dataclass
class Admission:
    """The plan for one step: rows to evict first, then one entry per row to start."""

    evict: list[Row] = field(default_factory=list)
    #: Calls in the order their next piece joins (a call may appear more than once).
    join: list[Call] = field(default_factory=list)


def plan_admission(policy: AdmissionPolicy, waiting: Sequence[Call], rows: Sequence[Row],
                   prenet_dropout: float | None) -> Admission:
    """The rows to start and to evict now.

    ``waiting``: live calls with pieces not decoding (``Call.todo``), ``rows``: the rows decoding,
    ``prenet_dropout``: the batch's probability (None when no row decodes). Reads ``Call.todo``,
    ``Call.streaming``, ``Call.join_step``, ``Call.seq``, ``Call.prenet_dropout``, ``Row.call``, ``Row.steps``
    and ``Row.piece``; changes nothing.
    """
    held: dict[int, int] = {}
    for r in rows:
        held[id(r.call)] = held.get(id(r.call), 0) + 1
    left = {id(c): len(c.todo) for c in waiting}
    for c in waiting:                   # a stream that has not started: one row now (rule 4)
        if c.streaming and c.join_step is None:
            left[id(c)] = min(left[id(c)], 1)
    free = policy.max_rows - len(rows)
    p = prenet_dropout
    plan = Admission()
    evictable = [r for r in rows if not r.call.streaming]

    def key(c: Call) -> tuple:
        return held.get(id(c), 0), c.streaming is False, c.seq

    def next_call(limit: int) -> Call | None:
        cands = [c for c in waiting if left[id(c)] > 0 and held.get(id(c), 0) < limit]
        return min(cands, key=key) if cands else None

    def take(c: Call) -> None:
        nonlocal free, p
        plan.join.append(c)
        held[id(c)] = held.get(id(c), 0) + 1
        left[id(c)] -= 1
        free -= 1
        p = c.prenet_dropout

    while (c := next_call(policy.share)) is not None:
        if p is not None and c.prenet_dropout != p:
            return plan                                     # drain first
        if free == 0:
            victims = [r for r in evictable if held[id(r.call)] > 1]
            if held.get(id(c), 0) > 0 or not victims:
                break
            v = min(victims, key=lambda r: (r.steps, -r.piece))
            evictable.remove(v)
            plan.evict.append(v)
            held[id(v.call)] -= 1
            free += 1
        take(c)
    while free > policy.share and (c := next_call(policy.max_rows)) is not None:
        if p is not None and c.prenet_dropout != p:
            break
        take(c)
    return plan
