"""The in-flight count and drain of one door of the server (the gRPC servicer, the HTTP front end)."""

from __future__ import annotations

import asyncio

from tts.server.errors import ShuttingDownError

__all__ = ["DrainGate"]


class DrainGate:
    """Counts a door's synthesis calls in (``_enter``) and out (``_leave``); once ``drain`` is called
    it refuses new ones (``ShuttingDownError``) and waits for the running ones."""

    def __init__(self) -> None:
        self.draining = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def _enter(self) -> None:
        """Counts a synthesis call in; refuses it (UNAVAILABLE, 503) once the server drains."""
        if self.draining:
            raise ShuttingDownError("server is shutting down and takes no new calls; retry elsewhere")
        self._inflight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    @property
    def inflight(self) -> int:
        """Synthesis calls running now."""
        return self._inflight

    async def drain(self, timeout: float) -> bool:
        """Refuse new synthesis calls from now on and wait up to ``timeout`` s for the running ones to
        finish; True if they all did."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
