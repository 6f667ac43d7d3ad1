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


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # The references were computed with one thread; two threads differ by ~3e-6.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
