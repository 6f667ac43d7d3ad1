"""The GPU machine's hibari corpus and HiFi-GAN chunk, here on CPU: ``gpu.sh corpus`` with
``TEACHER=hibari`` run by a Python that cannot import the installed hibari-tts (as on the GPU
image, which has none), only the carried folder that ``hibari-pack`` (``fetch_deps.sh hibari``)
writes; then ``cont hifigan`` and ``pack-only hifigan`` on that corpus."""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GPU_SH = ROOT / "recipes" / "bundled_voice" / "gpu.sh"
VAL = ROOT / "tests" / "fixtures" / "ljspeech_val_100.txt"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "THREADS": "1"}


@pytest.fixture(scope="module")
def no_hibari_python(tmp_path_factory) -> Path:
    """A folder whose ``python3`` is this interpreter without its site machinery (``-S``) and
    with every entry of its site-packages but hibari's on the path (symlinks; no ``.pth`` files):
    a Python like the GPU image's, which has torch, onnx and onnxruntime but no hibari-tts."""
    for mod in ("hibari", "onnxruntime", "onnx"):
        pytest.importorskip(mod, reason=f"hibari-pack needs {mod} here (the [train] extra)")
    d = tmp_path_factory.mktemp("gpu_like")
    farm = d / "site"
    farm.mkdir()
    for sp in (p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()):
        for entry in Path(sp).iterdir():
            name = entry.name
            if name.lower().startswith("hibari") or name.endswith(".pth") or name == "__pycache__" \
                    or name.startswith("__editable__") or (farm / name).exists():
                continue
            (farm / name).symlink_to(entry)
    bindir = d / "bin"
    bindir.mkdir()
    py = bindir / "python3"
    py.write_text(f'#!/bin/sh\nPYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{farm}" exec {sys.executable} -S "$@"\n')
    py.chmod(py.stat().st_mode | stat.S_IXUSR)
    return bindir


def _run(args: list[str], bindir: Path, **env: str) -> subprocess.CompletedProcess:
    e = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", DEVICE="cpu", LOG_EVERY="1", **ONE_THREAD, **env)
    for k in ("PYTHONPATH", "STEPS", "TO_STEP", "UNTIL", "INIT", "SETTINGS", "GRAPH", "TEACHER", "BATCH"):
        if k not in env:
            e.pop(k, None)
    r = subprocess.run(args, cwd=ROOT, env=e, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def test_hibari_corpus_and_hifigan_chunk_without_an_installed_hibari(tmp_path, no_hibari_python):
    bindir = no_hibari_python
    check = subprocess.run([str(bindir / "python3"), "-c", "import hibari"], capture_output=True, text=True)
    assert check.returncode != 0 and "No module named 'hibari'" in check.stderr
    _run([str(bindir / "python3"), "-c", "import torch, numpy, scipy, onnx, onnxruntime"], bindir)
    # fetch_deps.sh here: the transcripts gzipped, hibari-pack of them (this machine has hibari)
    rd = tmp_path / "recipe_data"
    rd.mkdir()
    lines = VAL.read_text(encoding="utf-8").splitlines()[:24]
    with gzip.open(rd / "train.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    texts = tmp_path / "train.txt"
    texts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    subprocess.run([sys.executable, "-m", "tts.train", "hibari-pack", "--texts", str(texts), "--out",
                    str(rd / "hibari")], cwd=ROOT, check=True, capture_output=True, timeout=300)
    # the GPU machine: 20 lines after skipping 2, two shards, on all cores
    work, out = tmp_path / "work", tmp_path / "out"
    out.mkdir()
    env = dict(WORK_DIR=str(work), RECIPE_DATA=str(rd))
    _run(["bash", str(GPU_SH), "corpus"], bindir, TEACHER="hibari", CORPUS_LIMIT="20", CORPUS_OFFSET="2",
         CORPUS_SHARDS="2", **env)
    summary = json.loads((work / "corpus" / "summary.json").read_text())
    assert summary["teacher"] == "hibari" and summary["utterances"] == 20 and summary["skipped"] == 0
    from tts.train.corpus import Corpus
    uids = sorted(it.uid for it in Corpus(work / "corpus").items)
    assert uids == sorted(line.split("|")[0] for line in lines[2:22])
    # HiFi-GAN: 2 steps from scratch (no shipped file yet), then packed
    settings = json.dumps({"segment_length": 4096, "disc_width_div": 8})
    _run(["bash", str(GPU_SH), "cont", "hifigan", "5"], bindir, STEPS="2", BATCH="2", SETTINGS=settings, **env)
    _run(["bash", str(GPU_SH), "pack-only", "hifigan"], bindir, OUT=str(out), **env)
    assert sorted(p.name for p in out.iterdir()) == ["hifigan.pt", "hifigan_log_continued.csv"]
    from tts.checkpoints import load_hifigan
    gen = load_hifigan(out / "hifigan.pt")
    assert gen.config.upsample_initial_channel == 128           # the bundled voice's V2 generator
    with torch.no_grad():
        audio = gen.infer(torch.from_numpy(Corpus(work / "corpus")[0].mel[:20].T.copy()).float()[None])
    assert audio.shape == (1, 20 * 256) and torch.isfinite(audio).all()
    # a corpus of another teacher is refused by name
    bad = subprocess.run(["bash", str(GPU_SH), "corpus"], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, TEACHER="espeak", WORK_DIR=str(tmp_path / "w2"), RECIPE_DATA=str(rd)))
    assert bad.returncode == 2 and "TEACHER must be festival or hibari" in bad.stderr
