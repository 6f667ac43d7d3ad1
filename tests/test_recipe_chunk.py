"""``recipes/bundled_voice/gpu.sh`` with a step budget, here on CPU with a small synthetic corpus
already in place (so no Festival) and tiny batches: every trainer takes exactly the steps asked for,
whatever the machine's speed, and ``chunk`` leaves in ``$OUT`` exactly what ``finish.sh`` reads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GPU_SH = ROOT / "recipes" / "bundled_voice" / "gpu.sh"
#: One thread per process: the two trainers run side by side, and a multi-threaded BLAS on a busy
#: 2-core machine spins (the mel front end's set-up took 8.6 s instead of 0.6).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "THREADS": "1"}


@pytest.fixture(scope="module")
def tone_corpus(tmp_path_factory) -> Path:
    """4 tones of 1 s (``tts.train.corpus.write_tone_corpus``), built once, with one BLAS thread."""
    root = tmp_path_factory.mktemp("tones") / "corpus"
    subprocess.run([sys.executable, "-c", "import sys; from tts.train.corpus import write_tone_corpus; "
                    "write_tone_corpus(sys.argv[1], n=4, seconds=1.0)", str(root)],
                   cwd=ROOT, env=dict(os.environ, **ONE_THREAD), check=True, timeout=300)
    return root


def _gpu_sh(args: list[str], **env: str) -> subprocess.CompletedProcess:
    e = dict(os.environ, DEVICE="cpu", BATCH="2", LOG_EVERY="1", **ONE_THREAD, **env)
    for k in ("STEPS", "TO_STEP", "UNTIL", "INIT", "SETTINGS", "WG_SETTINGS", "T2_SETTINGS", "GRAPH"):
        if k not in env:
            e.pop(k, None)
    r = subprocess.run(["bash", str(GPU_SH), *args], cwd=ROOT, env=e, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _log_steps(path: Path) -> list[int]:
    return [json.loads(x)["step"] for x in path.read_text().splitlines() if x and not x.startswith("#")]


def test_chunk_takes_exactly_the_steps_asked_and_packs_what_finish_reads(tmp_path, tone_corpus):
    """The recipe's models (the bundled architectures) from scratch, 2 steps each."""
    work, out = tmp_path / "work", tmp_path / "out"
    out.mkdir()
    shutil.copytree(tone_corpus, work / "corpus")
    r = _gpu_sh(["chunk", "--steps", "2"], OUT=str(out), WORK_DIR=str(work),
                INIT=str(tmp_path / "absent.pt"),                 # from scratch, as in a fresh clone
                WG_SETTINGS='{"segment_length": 4000, "graph": true}', T2_SETTINGS='{"lr": 5e-4}')
    names = sorted(p.name for p in out.iterdir())
    assert names == ["outs.tgz", "tacotron2.pt", "tacotron2_log_continued.csv", "waveglow.pt.part00",
                     "waveglow.pt.part01", "waveglow_log_continued.csv"], names
    assert all(p.stat().st_size <= 15 * 2**20 for p in out.iterdir())   # what the device tool returns
    wg = tmp_path / "waveglow.pt"
    wg.write_bytes((out / "waveglow.pt.part00").read_bytes() + (out / "waveglow.pt.part01").read_bytes())
    for path in (wg, out / "tacotron2.pt"):
        ck = torch.load(path, map_location="cpu", weights_only=True)
        assert ck["iteration"] == 2
        assert all(v.dtype == torch.float16 for v in ck["state_dict"].values() if v.is_floating_point())
    for model in ("waveglow", "tacotron2"):
        assert _log_steps(out / f"{model}_log_continued.csv") == [1, 2]
    with tarfile.open(out / "outs.tgz") as t:
        assert sorted(t.getnames()) == ["train_tacotron2.out", "train_waveglow.out"]
    assert "waveglow: 1 shards, 2 steps" in r.stdout and "tacotron2: 2 steps" in r.stdout
    assert not (work / "corpus.log").exists()                  # the corpus was there, not rebuilt
    # the WaveGlow settings' "graph" is the trainer's --graph, the rest its task settings
    assert '"graph": "on"' in (work / "train_waveglow.out").read_text()
    ck = torch.load(work / "ckpt" / "waveglow_last.pt", map_location="cpu", weights_only=True)
    settings = json.loads(ck["train"]["settings"])
    assert settings["segment_length"] == 4000 and "graph" not in settings
    t2 = torch.load(work / "ckpt" / "tacotron2_last.pt", map_location="cpu", weights_only=True)
    assert json.loads(t2["train"]["settings"])["lr"] == 5e-4       # T2_SETTINGS reaches the Tacotron2


def test_cont_goes_on_from_the_shipped_file_for_exactly_the_steps_asked(tmp_path, tone_corpus):
    """``cont tacotron2`` starts from the shipped file at the step it records and takes STEPS steps;
    the next call on the same (warm) machine resumes that checkpoint, and TO_STEP ends it at that
    total step."""
    work = tmp_path / "work"
    shutil.copytree(tone_corpus, work / "corpus")
    shipped = ROOT / "tts" / "voices" / "slt-tacotron2" / "tacotron2.pt"
    start = int(torch.load(shipped, map_location="cpu", weights_only=True)["iteration"])
    ckpt = work / "ckpt" / "tacotron2_last.pt"
    _gpu_sh(["cont", "tacotron2", "5"], WORK_DIR=str(work), STEPS="2")
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["train"]["step"] == start + 2
    _gpu_sh(["cont", "tacotron2", "5"], WORK_DIR=str(work), STEPS="2", TO_STEP=str(start + 3))
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["train"]["step"] == start + 3
    assert _log_steps(work / "ckpt" / "tacotron2_log.csv") == [start + 1, start + 2, start + 3]


def test_cont_hifigan_resumes_on_a_warm_machine_and_packs_its_file(tmp_path, tone_corpus):
    """``cont hifigan`` from scratch (no shipped file), the next call on the same (warm) machine
    resuming the checkpoint up to TO_STEP, then ``pack-only hifigan``: the fp16 generator file
    that ``load_hifigan`` reads and the loss log."""
    from tts.checkpoints import load_hifigan
    work, out = tmp_path / "work", tmp_path / "out"
    out.mkdir()
    shutil.copytree(tone_corpus, work / "corpus")
    settings = '{"segment_length": 4096, "disc_width_div": 8, "amp": true, "compile": false}'
    ckpt = work / "ckpt" / "hifigan_last.pt"
    _gpu_sh(["cont", "hifigan", "5"], WORK_DIR=str(work), STEPS="2", SETTINGS=settings)
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["train"]["step"] == 2
    _gpu_sh(["cont", "hifigan", "5"], WORK_DIR=str(work), STEPS="5", TO_STEP="3", SETTINGS=settings)
    ck = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert ck["train"]["step"] == 3 and ck["train_state"] == {"iters_all": 3}
    assert _log_steps(work / "ckpt" / "hifigan_log.csv") == [1, 2, 3]
    _gpu_sh(["pack-only", "hifigan"], WORK_DIR=str(work), OUT=str(out))
    assert sorted(p.name for p in out.iterdir()) == ["hifigan.pt", "hifigan_log_continued.csv"]
    f = torch.load(out / "hifigan.pt", map_location="cpu", weights_only=True)
    assert f["train_state"]["iters_all"] == 3 and all(v.dtype == torch.float16 for v in f["generator"].values())
    assert load_hifigan(out / "hifigan.pt").config.upsample_initial_channel == 128


INIT_FS = ROOT / "tts/voices/heart/fastspeech.pt"


def test_train_runs_the_models_named_side_by_side_with_their_own_settings(tmp_path, tone_corpus):
    """``MODELS="fastspeech hifigan" gpu.sh train`` (the hibari recipe's first call): exactly those
    trainers, each with its ``SETTINGS_<model>``, for the steps asked, the FastSpeech from its
    ``INIT_fastspeech`` (the shipped one, at the step it records)."""
    work = tmp_path / "work"
    shutil.copytree(tone_corpus, work / "corpus")
    _gpu_sh(["train", "5"], WORK_DIR=str(work), STEPS="1", MODELS="fastspeech hifigan",
            SETTINGS_hifigan='{"segment_length": 4096, "disc_width_div": 8}',
            INIT_fastspeech=str(INIT_FS))
    assert sorted(p.name for p in (work / "ckpt").glob("*_last.pt")) == ["fastspeech_last.pt", "hifigan_last.pt"]
    ck = torch.load(work / "ckpt" / "hifigan_last.pt", map_location="cpu", weights_only=True)
    assert ck["train"]["step"] == 1 and json.loads(ck["train"]["settings"])["segment_length"] == 4096
    fs = torch.load(work / "ckpt" / "fastspeech_last.pt", map_location="cpu", weights_only=True)
    shipped = torch.load(INIT_FS, map_location="cpu", weights_only=True)["step"]
    assert shipped > 0 and fs["train"]["step"] == shipped + 1
