"""Gzipped loss logs (``<kind>_log.csv.gz``, as kept in recipes/bundled_voice/results/logs/) are
read by ``read_log`` and plotted by ``plot_losses`` / ``python -m tts.train plot``."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tts.train.trainer import read_log

pytest.importorskip("matplotlib")

from tts.train.export import plot_losses  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOGS = REPO / "recipes" / "bundled_voice" / "results" / "logs"

# Rows as trainer.train writes them: a "# [keys]" header line, then one JSON object per logged step
# (step, seconds, the task's loss terms, grad_norm where clipped).
T2_ROWS = [
    {"step": 1, "seconds": 0.52, "mel": 1.5, "mel_postnet": 1.25, "gate": 0.5, "guide": 0.25,
     "loss": 3.5, "grad_norm": 4.0},
    {"step": 50, "seconds": 20.25, "mel": 0.75, "mel_postnet": 0.625, "gate": 0.125, "guide": 0.0625,
     "loss": 1.5625, "grad_norm": 2.0},
    {"step": 100, "seconds": 40.5, "mel": 0.5, "mel_postnet": 0.375, "gate": 0.0625, "guide": 0.03125,
     "loss": 0.96875, "grad_norm": 1.0},
]
WG_ROWS = [
    {"step": 1, "seconds": 1.0, "loss": -2.5},
    {"step": 50, "seconds": 30.0, "loss": -4.75},
]


def _log_text(rows: list[dict]) -> str:
    return "# " + json.dumps(list(rows[0])) + "\n" + "".join(json.dumps(r) + "\n" for r in rows)


def _write_gz(path: Path, rows: list[dict]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(_log_text(rows))


def test_read_log_gz(tmp_path: Path) -> None:
    gz = tmp_path / "tacotron2_log.csv.gz"
    _write_gz(gz, T2_ROWS)
    assert gz.read_bytes()[:2] == b"\x1f\x8b"
    rows = read_log(gz)
    assert rows == T2_ROWS
    assert [r["step"] for r in rows] == [1, 50, 100]
    assert [r["mel_postnet"] for r in rows] == [1.25, 0.625, 0.375]
    assert rows[-1]["seconds"] == 40.5
    # the plain name finds the gzipped file when only that exists
    assert read_log(tmp_path / "tacotron2_log.csv") == T2_ROWS
    # and a plain file still reads as before, and wins over its .gz
    (tmp_path / "tacotron2_log.csv").write_text(_log_text(WG_ROWS), encoding="utf-8")
    assert read_log(tmp_path / "tacotron2_log.csv") == WG_ROWS
    assert read_log(gz) == T2_ROWS


def test_plot_losses_reads_gz(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    _write_gz(ck / "tacotron2_log.csv.gz", T2_ROWS)
    (ck / "waveglow_log.csv").write_text(_log_text(WG_ROWS), encoding="utf-8")  # plain beside gz
    out = tmp_path / "plots"
    written = plot_losses(ck, out)
    assert written == [out / "tacotron2_loss.png", out / "waveglow_loss.png"]
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert p.stat().st_size > 1000


def test_plot_losses_prefers_plain_and_plots_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tts.train.trainer as trainer

    ck = tmp_path / "ck"
    ck.mkdir()
    _write_gz(ck / "tacotron2_log.csv.gz", T2_ROWS)
    (ck / "tacotron2_log.csv").write_text(_log_text(T2_ROWS[:2]), encoding="utf-8")
    seen: list[tuple[str, list[dict]]] = []
    real = trainer.read_log

    def spy(path):
        rows = real(path)
        seen.append((Path(path).name, rows))
        return rows

    monkeypatch.setattr(trainer, "read_log", spy)
    written = plot_losses(ck, tmp_path / "plots")
    assert written == [tmp_path / "plots" / "tacotron2_loss.png"]
    assert seen == [("tacotron2_log.csv", T2_ROWS[:2])]


def test_plot_cli_on_gz(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    _write_gz(ck / "waveglow_log.csv.gz", WG_ROWS)
    r = subprocess.run([sys.executable, "-m", "tts.train", "plot", "--ckpt-dir", str(ck),
                        "--out", str(tmp_path / "plots")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    png = tmp_path / "plots" / "waveglow_loss.png"
    assert str(png) in r.stdout
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_recipe_logs_are_the_shipped_models_whole_training() -> None:
    """One gzipped log per shipped model, from its first step to (the last logged step before) the
    step its file records."""
    assert sorted(p.name for p in LOGS.iterdir()) == ["fastspeech_log.csv.gz", "tacotron2_log.csv.gz"]
    # heart's FastSpeech: 29 220 steps on the Festival corpus, then to 48 958 on hibari's
    for kind, last in (("fastspeech", 48950), ("tacotron2", 51950)):
        rows = read_log(LOGS / f"{kind}_log.csv.gz")
        steps = [r["step"] for r in rows]
        assert steps[0] == 1 and steps[-1] == last and steps == sorted(set(steps)), kind
        seconds = [r["seconds"] for r in rows]
        assert seconds == sorted(seconds), kind        # the machines' clocks are added up
        assert all("loss" in r for r in rows), kind
