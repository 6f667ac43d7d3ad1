"""``recipes/bundled_voice/t2_probe.py``: the DTW distance between free-running and teacher mels,
and the held-out teacher-forced loss that the recipe README's "ninth part" reports."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tts.models.tacotron2 import Tacotron2, Tacotron2Config
from tts.train import losses
from tts.train.corpus import Corpus
from tts.train.data import acoustic_batch
from tts.train.tasks import MODEL_CONFIGS

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


probe = _load("t2_probe", ROOT / "recipes" / "bundled_voice" / "t2_probe.py")


def test_dtw_undoes_a_time_warp():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(30, 80)).astype(np.float32)
    slow = np.repeat(teacher, 2, axis=0)          # every frame twice: the same speech, slower
    pairs = probe.dtw_pairs(slow, teacher)
    assert pairs[0].tolist() == [0, 0] and pairs[-1].tolist() == [59, 29]
    assert (np.diff(pairs, axis=0) >= 0).all()    # monotonic
    np.testing.assert_array_equal(pairs[:, 1], pairs[:, 0] // 2)
    corpus = [SimpleNamespace(mel=teacher)]
    d = probe.free_running_distance([slow], corpus)
    assert d["free_dist"] == pytest.approx(0.0, abs=1e-7) and d["length_ratio"] == pytest.approx(2.0)
    d = probe.free_running_distance([slow + 0.25], corpus)
    assert d["free_dist"] == pytest.approx(0.25, rel=1e-5)
    assert set(d) == {"free_dist", "free_dist_bands_0_19", "free_dist_bands_20_39",
                      "free_dist_bands_40_59", "free_dist_bands_60_79", "length_ratio"}


def test_teacher_forced_loss_is_the_training_loss_over_the_corpus(tmp_path):
    _load("wg_train_speed", ROOT / "tools" / "gpu" / "wg_train_speed.py").build_corpus(tmp_path / "c", 4)
    corpus = Corpus(tmp_path / "c")
    torch.manual_seed(0)
    cfg = dict(MODEL_CONFIGS["tacotron2"], decoder_rnn_dim=32, attention_rnn_dim=32, prenet_dim=16,
               postnet_embedding_dim=16, postnet_n_convolutions=3)
    model = Tacotron2(Tacotron2Config.from_dict(cfg)).eval()
    got = probe.teacher_forced_loss(model, corpus, batch=len(corpus))
    torch.manual_seed(0)
    b = acoustic_batch(corpus, list(range(len(corpus))))
    mel = b.mel.transpose(1, 2)
    with torch.no_grad():
        out = losses.tacotron2_forward(model, b.ids, b.input_lengths, mel)
        _, logs = losses.tacotron2_loss(out, mel, b.mel_lengths, None, b.input_lengths, 0.0)
    assert got == pytest.approx(float(logs["mel_postnet"]), rel=1e-6) and got > 0
