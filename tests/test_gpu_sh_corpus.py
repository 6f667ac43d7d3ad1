"""``recipes/bundled_voice/gpu.sh corpus`` reads the transcripts that ``fetch_deps.sh`` gzips into
``.recipe_data/`` (gzipped so that the tree that travels to the GPU stays under 64 MiB). Its text
stage runs before Festival is needed, so these run here without Festival: the transcripts are
unpacked whole into the work folder, an offset past their end is refused naming the line count,
so is a slice shorter than ``CORPUS_LIMIT`` (it would train on a few sentences many times over
without a word), and a missing ``.recipe_data`` is refused naming the command that makes it.
``gpu.sh cont`` refuses a model it does not know."""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINES = ["LJ001-0001|Printing, in the only sense with which we are at present concerned.",
         "LJ001-0002|in being comparatively modern.",
         "LJ001-0003|For although the Chinese took impressions from wood blocks engraved in relief."]


def _corpus(cwd: Path, **env) -> subprocess.CompletedProcess:
    e = dict(os.environ, WORK_DIR=str(cwd / "work"), **env)
    return subprocess.run(["bash", str(ROOT / "recipes" / "bundled_voice" / "gpu.sh"), "corpus"], cwd=cwd,
                          env=e, capture_output=True, text=True, timeout=120)


def test_gzipped_transcripts_are_unpacked_and_an_offset_past_their_end_is_refused(tmp_path):
    (tmp_path / ".recipe_data").mkdir()
    with gzip.open(tmp_path / ".recipe_data" / "train.txt.gz", "wt") as f:
        f.write("\n".join(LINES) + "\n")
    r = _corpus(tmp_path, CORPUS_OFFSET="3")
    assert r.returncode == 2, r.stderr
    assert "CORPUS_OFFSET=3 is past the end of train.txt (3 lines)" in r.stderr
    assert "Traceback" not in r.stderr
    assert (tmp_path / "work" / "train.txt").read_text().splitlines() == LINES


def test_a_slice_shorter_than_the_limit_is_refused_naming_the_largest_offset(tmp_path):
    (tmp_path / ".recipe_data").mkdir()
    with gzip.open(tmp_path / ".recipe_data" / "train.txt.gz", "wt") as f:
        f.write("\n".join(LINES) + "\n")
    r = _corpus(tmp_path, CORPUS_OFFSET="2", CORPUS_LIMIT="2")
    assert r.returncode == 2, r.stderr
    assert ("CORPUS_OFFSET=2 leaves 1 of train.txt's 3 lines, fewer than CORPUS_LIMIT=2: "
            "pick an offset at most 1") in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "work" / "corpus").exists()


def test_missing_transcripts_name_fetch_deps(tmp_path):
    r = _corpus(tmp_path, CORPUS_OFFSET="0")
    assert r.returncode == 2
    assert f"no {tmp_path}/.recipe_data/train.txt.gz: run recipes/bundled_voice/fetch_deps.sh" in r.stderr
    assert not (tmp_path / "work" / "corpus").exists()


def test_cont_refuses_an_unknown_model_before_any_work(tmp_path):
    # cont starts a model from INIT or else its shipped file; a model it does not know is named,
    # with the three it does, before any training starts
    e = dict(os.environ, WORK_DIR=str(tmp_path / "work"))
    r = subprocess.run(["bash", str(ROOT / "recipes" / "bundled_voice" / "gpu.sh"), "cont", "tacotron", "1"],
                       cwd=tmp_path, env=e, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "gpu.sh cont: unknown model 'tacotron' (fastspeech, tacotron2, waveglow, hifigan)" in r.stderr
    assert not (tmp_path / "work" / "train_tacotron.out").exists()
