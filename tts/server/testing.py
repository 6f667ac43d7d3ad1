"""Helpers for tests and examples: a model-free fake synthesizer and a server on a background thread.

Nothing here runs at import; the fake is deterministic and fast so that
server behaviour (batching, errors, cancellation) can be tested without models.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from tts.errors import InvalidInputError
from tts.options import SynthesisOptions
from tts.synthesizer import StageTimings, SynthesisResult

logger = logging.getLogger(__name__)


@dataclass
class FakeVoice:
    name: str = "fake"
    acoustic_kind: str = "fake"
    sample_rate: int = 22050


@dataclass
class FakeSynthesizer:
    """Audio = a sine whose length is ``samples_per_char * len(text)``; deterministic.

    ``delay_s`` per batch (plus ``delay_per_char_s``), ``fail_text``: a text
    that makes the batch raise RuntimeError (an internal fault).
    """

    voice: FakeVoice = field(default_factory=FakeVoice)
    samples_per_char: int = 256
    delay_s: float = 0.0
    delay_per_char_s: float = 0.0
    fail_text: str = "__internal_fault__"
    batches: list[int] = field(default_factory=list)
    options_seen: list = field(default_factory=list)      #: the options of every batch, in order
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def sample_rate(self) -> int:
        return self.voice.sample_rate

    def check_text(self, text: str, options: SynthesisOptions | None = None, *, lexicon=None) -> None:
        """Like ``Synthesizer.check_text``; a ``lexicon`` is accepted and not used (the fake speaks no phonemes)."""
        if not text.strip():
            raise InvalidInputError("text is empty", field="text")
        if not any(c.isalnum() for c in text):
            raise InvalidInputError("text has nothing speakable", field="text")

    def audio_for(self, text: str, options: SynthesisOptions | None = None) -> np.ndarray:
        n = self.samples_per_char * len(text)
        t = np.arange(n, dtype=np.float32) / self.sample_rate
        freq = 200.0 + (sum(map(ord, text)) % 400)
        scale = 1.0 if options is None or options.speed is None else 1.0 / options.speed
        return (0.5 * scale * np.sin(2 * np.pi * freq * t)).astype(np.float32)

    def synthesize_batch(self, texts, options=None, *, word_timings=False):
        """Like ``Synthesizer.synthesize_batch``; ``word_timings`` is accepted (the fake has no words)."""
        with self.lock:
            self.batches.append(len(texts))
            self.options_seen.append(options)
        if any(t == self.fail_text for t in texts):
            raise RuntimeError("simulated internal fault in the model")
        delay = self.delay_s + self.delay_per_char_s * max(len(t) for t in texts)
        if delay:
            time.sleep(delay)
        out = []
        for t in texts:
            audio = self.audio_for(t, options)
            out.append(SynthesisResult(text=t, normalized_text=" ".join(t.lower().split()), audio=audio,
                                       sample_rate=self.sample_rate, mel=np.zeros((1, 1), np.float32),
                                       timings=StageTimings(total=delay)))
        return out


class ServerThread:
    """Runs a ``TTSServer`` on its own event loop in a daemon thread (for sync tests and tools)."""

    def __init__(self, server) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="tts-server-loop", daemon=True)

    def start(self) -> int:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(timeout=300)

    def stop(self, grace: float = 5.0) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(grace), self.loop).result(timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)

    def call(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
