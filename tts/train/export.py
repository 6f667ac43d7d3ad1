"""Export trained checkpoints as the bundled voices (fp16) and plot the loss curves.

Two voices share one WaveGlow file: ``<name>/`` (FastSpeech + WaveGlow, the
default: it sorts first) and ``<name>-tacotron2/`` (Tacotron2 + the same
WaveGlow, referenced as ``../<name>/waveglow.pt``). Weights are stored as
float16 in the layouts the loaders read; WaveGlow's weight norm is folded.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from tts.models.waveglow import WaveGlow, WaveGlowConfig

logger = logging.getLogger(__name__)

MIB = 1024 * 1024

#: Synthesis defaults written into the manifests (tuned by the quality gate).
FASTSPEECH_DEFAULTS = {"sigma": 0.6, "denoiser_strength": 0.01}
TACOTRON2_DEFAULTS = {"sigma": 0.6, "denoiser_strength": 0.01}


def _half(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _save(obj: Any, path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path.stat().st_size


def export_acoustic(kind: str, ckpt_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]
                    ) -> dict[str, Any]:
    """Write ``out_dir/<kind>.pt`` alone, in the layout ``export_voices`` gives it (for a run that
    trained only this model; ``finish.sh`` puts it into the voice)."""
    src = Path(ckpt_dir) / f"{kind}_last.pt"
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no {kind} checkpoint to export")
    ck = _load(src)
    step = int(ck["train"]["step"])
    if kind == "tacotron2":
        obj = {"iteration": step, "config": ck["config"], "state_dict": _half(ck["state_dict"])}
    elif kind == "waveglow":
        model = WaveGlow(WaveGlowConfig.from_dict(copy.deepcopy(ck["config"])))
        model.load_state_dict(ck["state_dict"])
        model.remove_weight_norm()
        obj = {"iteration": step, "config": ck["config"], "state_dict": _half(model.state_dict())}
    else:
        obj = {"step": step, "model": _half(ck["model"])}
    size = _save(obj, Path(out_dir) / f"{kind}.pt")
    return {"file": str(Path(out_dir) / f"{kind}.pt"), "mib": round(size / MIB, 2), "step": step}


def export_voices(ckpt_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                  name: str = "slt", max_mib: float = 30.0) -> dict[str, Any]:
    """Write ``out_dir/<name>/`` and (when a Tacotron2 checkpoint exists) ``out_dir/<name>-tacotron2/``.

    Raises ``ValueError`` when the files together exceed ``max_mib``; loads every written voice
    with ``Voice.from_dir`` before returning its summary.
    """
    from tts.voice import Voice

    ck = Path(ckpt_dir)
    out = Path(out_dir)
    fs_path, t2_path, wg_path = (ck / f"{k}_last.pt" for k in ("fastspeech", "tacotron2", "waveglow"))
    if not wg_path.is_file():
        raise FileNotFoundError(f"{wg_path}: no WaveGlow checkpoint to export")
    sizes: dict[str, int] = {}
    steps: dict[str, int] = {}

    wg = _load(wg_path)
    model = WaveGlow(WaveGlowConfig.from_dict(copy.deepcopy(wg["config"])))
    model.load_state_dict(wg["state_dict"])
    model.remove_weight_norm()
    steps["waveglow"] = int(wg["train"]["step"])
    main = out / name
    sizes[f"{name}/waveglow.pt"] = _save({"iteration": steps["waveglow"], "config": wg["config"],
                                          "state_dict": _half(model.state_dict())},
                                         main / "waveglow.pt")
    voices = []
    if fs_path.is_file():
        fs = _load(fs_path)
        steps["fastspeech"] = int(fs["train"]["step"])
        sizes[f"{name}/fastspeech.pt"] = _save({"step": steps["fastspeech"], "model": _half(fs["model"])},
                                               main / "fastspeech.pt")
        manifest = {"name": name, "sample_rate": 22050, "frontend": "fastspeech",
                    "acoustic": {"kind": "fastspeech", "checkpoint": "fastspeech.pt"},
                    "vocoder": {"kind": "waveglow", "checkpoint": "waveglow.pt"},
                    "defaults": FASTSPEECH_DEFAULTS,
                    "about": "FastSpeech + WaveGlow trained on Festival cmu_us_slt_arctic_hts speaking "
                             "LJSpeech transcripts; see recipes/bundled_voice/README.md"}
        (main / "voice.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        voices.append(main)
    if t2_path.is_file():
        t2 = _load(t2_path)
        steps["tacotron2"] = int(t2["train"]["step"])
        d = out / f"{name}-tacotron2"
        sizes[f"{name}-tacotron2/tacotron2.pt"] = _save(
            {"iteration": steps["tacotron2"], "config": t2["config"],
             "state_dict": _half(t2["state_dict"])}, d / "tacotron2.pt")
        manifest = {"name": f"{name}-tacotron2", "sample_rate": 22050, "frontend": "fastspeech",
                    "acoustic": {"kind": "tacotron2", "checkpoint": "tacotron2.pt"},
                    "vocoder": {"kind": "waveglow", "checkpoint": f"../{name}/waveglow.pt"},
                    "defaults": TACOTRON2_DEFAULTS,
                    "about": "Tacotron2 + WaveGlow trained on Festival cmu_us_slt_arctic_hts speaking "
                             "LJSpeech transcripts; see recipes/bundled_voice/README.md"}
        (d / "voice.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        voices.append(d)
    total = sum(sizes.values())
    if total > max_mib * MIB:
        raise ValueError(f"exported weights take {total / MIB:.1f} MiB, more than {max_mib} MiB")
    for v in voices:
        Voice.from_dir(v)  # must load
    return {"voices": [v.name for v in voices], "sizes_mib": {k: round(s / MIB, 2) for k, s in sizes.items()},
            "total_mib": round(total / MIB, 2), "steps": steps}


def plot_losses(ckpt_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[Path]:
    """One PNG per ``<kind>_log.csv`` in ``ckpt_dir`` (every logged loss term vs step)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tts.train.trainer import read_log

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for log in sorted(Path(ckpt_dir).glob("*_log.csv")):
        rows = read_log(log)
        if not rows:
            continue
        kind = log.name[:-len("_log.csv")]
        keys = [k for k in rows[-1] if k not in ("step", "seconds", "grad_norm")]
        fig, ax = plt.subplots(figsize=(7, 4))
        for k in keys:
            xs = [r["step"] for r in rows if k in r]
            ys = [r[k] for r in rows if k in r]
            ax.plot(xs, ys, label=k)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        if kind != "waveglow":
            ax.set_yscale("log")
        ax.set_title(f"{kind}: {rows[-1]['step']} steps, {rows[-1]['seconds'] / 60:.1f} min")
        ax.legend()
        ax.grid(alpha=0.3)
        p = out / f"{kind}_loss.png"
        fig.tight_layout()
        fig.savefig(p, dpi=90)
        plt.close(fig)
        written.append(p)
    return written
