"""Shared test fixtures: paths of the committed reference data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures" / "reference"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run through the device tool)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def sentences() -> list[dict]:
    with open(FIXTURES / "text" / "sentences.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def load_npz(rel: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / rel) as z:
        return {k: z[k] for k in z.files}


def fixture_synths(max_batch: int = 4, max_piece_chars: int = 16) -> dict:
    """Synthesizers of the fixture checkpoints: ``t2`` (Tacotron2 + WaveGlow) and ``fs`` (FastSpeech +
    WaveGlow), texts split into pieces of at most ``max_piece_chars``."""
    from tts.synthesizer import Synthesizer
    from tts.voice import Voice

    wg = FIXTURES / "waveglow/checkpoint_WaveGlow_ngc_style_ddp.pt"
    t2 = Voice.from_checkpoints(tacotron2=FIXTURES / "tacotron2/checkpoint_Tacotron2_current_1gpu.pt",
                                waveglow=wg, name="t2")
    fs = Voice.from_checkpoints(fastspeech=FIXTURES / "fastspeech/checkpoint_005000.pt", waveglow=wg, name="fs")
    return {"t2": Synthesizer(t2, max_batch=max_batch, max_piece_chars=max_piece_chars),
            "fs": Synthesizer(fs, max_batch=max_batch, max_piece_chars=max_piece_chars)}


def serve_synths(synths: dict, max_batch_size: int, scheduler_options: dict | None = None):
    """A loopback ``tts-server`` (a started ``ServerThread``; the caller stops it) of ``synths``, default
    voice ``t2``, streaming in 16-frame chunks (the first 4) with 8 frames of overlap."""
    from tts.server.app import ServerConfig, TTSServer
    from tts.server.batcher import BatcherConfig
    from tts.server.testing import ServerThread

    srv = TTSServer({k: [v] for k, v in synths.items()},
                    ServerConfig(host="127.0.0.1", port=0, metrics_port=0, warmup=False,
                                 batcher=BatcherConfig(max_batch_size=max_batch_size, max_queue_delay_s=0.002),
                                 stream_chunk_frames=16, stream_first_chunk_frames=4, stream_overlap_frames=8),
                    default_voice="t2")
    if scheduler_options is not None:
        srv.engine.scheduler_options = scheduler_options
    st = ServerThread(srv)
    st.start()
    return st


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # The references were computed with one thread; two threads differ by ~3e-6.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
