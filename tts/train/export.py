"""Export trained checkpoints as the bundled voices (fp16) and plot the loss curves.

Voices share files: a vocoder vocodes both the FastSpeech and the Tacotron2 voice of its
teacher (``write_manifests`` gives each teacher's layout). Weights are stored as float16 in the
layouts the loaders read; WaveGlow's and HiFi-GAN's weight norm is folded.
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

#: Synthesis defaults of the WaveGlow voices' manifests: sigma 1.0 (the training sigma) and no
#: denoiser, tuned on train.txt lines that no corpus used (recipes/bundled_voice/RESULTS.md,
#: "What did not help"). Tacotron2 + WaveGlow: the same, with the prenet dropout of inference.
FASTSPEECH_DEFAULTS = {"sigma": 1.0, "denoiser_strength": 0.0}
TACOTRON2_WG_DEFAULTS = {"sigma": 1.0, "denoiser_strength": 0.0, "prenet_dropout": 0.5}


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
    elif kind == "hifigan":
        # DLE's generator file (``hifigan_gen_checkpoint_*.pt``) as ``load_hifigan`` reads it:
        # ``generator`` (weight norm folded), ``config``, ``train_state``; no discriminators
        from tts.models.hifigan import HiFiGAN, HiFiGANConfig
        gen = HiFiGAN(HiFiGANConfig.from_dict(ck["config"]), weight_norm=True)
        gen.load_state_dict(ck["generator"])
        gen.remove_weight_norm()
        obj = {"generator": _half(gen.state_dict()), "config": ck["config"],
               "train_state": {"iters_all": step}}
    else:
        obj = {"step": step, "model": _half(ck["model"])}
    size = _save(obj, Path(out_dir) / f"{kind}.pt")
    return {"file": str(Path(out_dir) / f"{kind}.pt"), "mib": round(size / MIB, 2), "step": step}


#: The Griffin-Lim settings of the bundled voices (see ``tts.models.griffinlim``): the magnitudes
#: sharpened by power 1.3, a phase-gradient (PGHI) start and 2 iterations of fast Griffin-Lim (more
#: iterations fit the magnitudes better but sound less natural; the sweep and the gates are in
#: recipes/bundled_voice/RESULTS.md).
GRIFFINLIM = {"kind": "griffinlim", "n_iter": 2, "power": 1.3, "momentum": 0.99, "init": "pghi"}
#: The hibari Tacotron2's Griffin-Lim: its mels are smoother than the FastSpeech's, and sharpen best
#: at 1.5 (recipes/bundled_voice/RESULTS.md, "heart-tacotron2").
GRIFFINLIM_HIBARI_T2 = dict(GRIFFINLIM, power=1.5)
GL_DEFAULTS = {"sigma": 0.0, "denoiser_strength": 0.0}
ABOUT = ("trained on Festival cmu_us_slt_arctic_hts speaking LJSpeech transcripts; "
         "see recipes/bundled_voice/README.md")
#: The attribution a model trained on a hibari corpus carries (recipes/bundled_voice/TEACHER.md).
HIBARI_NOTICE = (
    "The models of this voice were trained on speech synthesized by hibari (hibari-tts 0.2.1, "
    "https://github.com/MMWilliams/hibari), Copyright 2026 Maureese Williams, licensed under the "
    "Apache License, Version 2.0; hibari's acoustic model was distilled from Kokoro-82M "
    "(https://huggingface.co/hexgrad/Kokoro-82M) by hexgrad, Apache License 2.0, voice af_heart. "
    "The transcripts are LJSpeech's (public domain). No hibari or Kokoro code or weights are included.")
#: Synthesis defaults of the HiFi-GAN voices: no denoiser (DLE's inference default); sigma unused.
HIFIGAN_VOICE_DEFAULTS = {"sigma": 0.0, "denoiser_strength": 0.0}


#: The teachers a corpus can come from (``python3 -m tts.train corpus --teacher``).
TEACHERS = ("festival", "hibari")
#: What the ``about`` of a hibari-trained voice says of its models.
HIBARI_ABOUT = ("trained on hibari (a student of Kokoro-82M's af_heart) speaking LJSpeech transcripts; "
                "see recipes/bundled_voice/README.md")


def write_manifests(out_dir: str | os.PathLike[str], name: str = "slt", teacher: str = "festival"
                    ) -> list[Path]:
    """Write ``voice.json`` for every bundled voice whose files exist under ``out_dir``.

    Models trained on a Festival corpus (``teacher="festival"``):

    - ``<name>/``: FastSpeech (``fastspeech.pt``) + Griffin-Lim, the default voice;
    - ``<name>-tacotron2/``: Tacotron2 (``tacotron2.pt``) + Griffin-Lim;
    - ``<name>-waveglow/``: the same FastSpeech + the trained WaveGlow (``waveglow.pt``);
    - ``<name>-tacotron2-waveglow/``: that Tacotron2 + that WaveGlow (no files of its own);
    - ``<name>-hifigan/``: the FastSpeech + a trained HiFi-GAN (``hifigan.pt``);
    - ``<name>-tacotron2-hifigan/``: the Tacotron2 + that HiFi-GAN (no files of its own).

    Models trained on a hibari corpus (``teacher="hibari"``), each folder with a ``NOTICE`` carrying
    the attribution hibari's licence asks for:

    - ``<name>/``: FastSpeech (``fastspeech.pt``) + HiFi-GAN (``hifigan.pt``), the default voice
      (Griffin-Lim while there is no ``hifigan.pt``);
    - ``<name>-tacotron2/``: Tacotron2 (``tacotron2.pt``) + that HiFi-GAN (or Griffin-Lim).

    Returns the voice folders written.
    """
    if teacher not in TEACHERS:
        raise ValueError(f"teacher must be one of {TEACHERS}, got {teacher!r}")
    out = Path(out_dir)
    specs = _hibari_specs(out, name) if teacher == "hibari" else _festival_specs(out, name)
    written = []
    for folder, spec in specs:
        folder.mkdir(exist_ok=True)
        if teacher == "hibari":
            (folder / "NOTICE").write_text(HIBARI_NOTICE + "\n", encoding="utf-8")
        manifest = {"name": folder.name, "sample_rate": 22050, "frontend": "fastspeech", **spec}
        (folder / "voice.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        written.append(folder)
    return written


def _festival_specs(out: Path, name: str) -> list[tuple[Path, dict[str, Any]]]:
    fs, t2, wg = out / name / "fastspeech.pt", out / f"{name}-tacotron2" / "tacotron2.pt", \
        out / f"{name}-waveglow" / "waveglow.pt"
    hg = out / f"{name}-hifigan" / "hifigan.pt"
    specs = []
    if fs.is_file():
        specs.append((out / name, {"acoustic": {"kind": "fastspeech", "checkpoint": "fastspeech.pt"},
                                   "vocoder": GRIFFINLIM, "defaults": GL_DEFAULTS,
                                   "about": "FastSpeech + Griffin-Lim, " + ABOUT}))
    if t2.is_file():
        specs.append((t2.parent, {"acoustic": {"kind": "tacotron2", "checkpoint": "tacotron2.pt"},
                                  "vocoder": GRIFFINLIM, "defaults": dict(GL_DEFAULTS, prenet_dropout=0.5),
                                  "about": "Tacotron2 + Griffin-Lim, " + ABOUT}))
    for voc, path, fs_defaults, t2_defaults in (
            ("waveglow", wg, FASTSPEECH_DEFAULTS, TACOTRON2_WG_DEFAULTS),
            ("hifigan", hg, HIFIGAN_VOICE_DEFAULTS, dict(HIFIGAN_VOICE_DEFAULTS, prenet_dropout=0.5))):
        label = {"waveglow": "WaveGlow", "hifigan": "HiFi-GAN"}[voc]
        if fs.is_file() and path.is_file():
            specs.append((path.parent, {"acoustic": {"kind": "fastspeech", "checkpoint": f"../{name}/fastspeech.pt"},
                                        "vocoder": {"kind": voc, "checkpoint": f"{voc}.pt"},
                                        "defaults": fs_defaults, "about": f"FastSpeech + {label}, " + ABOUT}))
        if t2.is_file() and path.is_file():
            specs.append((out / f"{name}-tacotron2-{voc}",
                          {"acoustic": {"kind": "tacotron2", "checkpoint": f"../{name}-tacotron2/tacotron2.pt"},
                           "vocoder": {"kind": voc, "checkpoint": f"../{path.parent.name}/{voc}.pt"},
                           "defaults": t2_defaults, "about": f"Tacotron2 + {label}, " + ABOUT}))
    return specs


def _hibari_specs(out: Path, name: str) -> list[tuple[Path, dict[str, Any]]]:
    fs, hg, t2 = out / name / "fastspeech.pt", out / name / "hifigan.pt", out / f"{name}-tacotron2" / "tacotron2.pt"
    if hg.is_file():
        label, defaults = "HiFi-GAN", HIFIGAN_VOICE_DEFAULTS
        fs_voc = {"kind": "hifigan", "checkpoint": "hifigan.pt"}
        t2_voc = {"kind": "hifigan", "checkpoint": f"../{name}/hifigan.pt"}
    else:
        label, defaults, fs_voc, t2_voc = "Griffin-Lim", GL_DEFAULTS, GRIFFINLIM, GRIFFINLIM_HIBARI_T2
    specs = []
    if fs.is_file():
        specs.append((fs.parent, {"acoustic": {"kind": "fastspeech", "checkpoint": "fastspeech.pt"},
                                  "vocoder": fs_voc, "defaults": defaults,
                                  "about": f"FastSpeech + {label}, " + HIBARI_ABOUT}))
    if t2.is_file():
        specs.append((t2.parent, {"acoustic": {"kind": "tacotron2", "checkpoint": "tacotron2.pt"},
                                  "vocoder": t2_voc, "defaults": dict(defaults, prenet_dropout=0.5),
                                  "about": f"Tacotron2 + {label}, " + HIBARI_ABOUT}))
    return specs


def export_voices(ckpt_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                  name: str = "slt", max_mib: float = 30.0, teacher: str = "festival") -> dict[str, Any]:
    """Write the fp16 files of every checkpoint in ``ckpt_dir`` and the voices of ``write_manifests``.

    Raises ``ValueError`` when the files together exceed ``max_mib``; loads every written voice
    with ``Voice.from_dir`` before returning its summary.
    """
    from tts.voice import Voice

    ck = Path(ckpt_dir)
    out = Path(out_dir)
    fs_path, t2_path, wg_path, hg_path = (ck / f"{k}_last.pt"
                                          for k in ("fastspeech", "tacotron2", "waveglow", "hifigan"))
    if not any(p.is_file() for p in (fs_path, t2_path, wg_path, hg_path)):
        raise FileNotFoundError(f"{ck}: no checkpoint to export")
    sizes: dict[str, int] = {}
    steps: dict[str, int] = {}
    for kind, path, folder in (("fastspeech", fs_path, name), ("tacotron2", t2_path, f"{name}-tacotron2"),
                               ("waveglow", wg_path, f"{name}-waveglow"),
                               ("hifigan", hg_path, name if teacher == "hibari" else f"{name}-hifigan")):
        if path.is_file():
            r = export_acoustic(kind, ck, out / folder)
            steps[kind] = r["step"]
            sizes[f"{folder}/{kind}.pt"] = (out / folder / f"{kind}.pt").stat().st_size
    total = sum(sizes.values())
    if total > max_mib * MIB:
        raise ValueError(f"exported weights take {total / MIB:.1f} MiB, more than {max_mib} MiB")
    voices = write_manifests(out, name, teacher)
    for v in voices:
        Voice.from_dir(v)  # must load
    return {"voices": [v.name for v in voices], "sizes_mib": {k: round(s / MIB, 2) for k, s in sizes.items()},
            "total_mib": round(total / MIB, 2), "steps": steps}


def plot_losses(ckpt_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[Path]:
    """One PNG per ``<kind>_log.csv`` in ``ckpt_dir`` (every logged loss term vs step).

    A gzipped ``<kind>_log.csv.gz`` is read too; where a kind has both, the plain file is
    plotted (once)."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("plotting needs matplotlib: pip install 'tts[train]' (or matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tts.train.trainer import read_log

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    logs: dict[str, Path] = {}
    for log in Path(ckpt_dir).glob("*_log.csv.gz"):
        logs[log.name[:-len("_log.csv.gz")]] = log
    for log in Path(ckpt_dir).glob("*_log.csv"):
        logs[log.name[:-len("_log.csv")]] = log  # the plain file wins over a gzipped one
    for kind, log in sorted(logs.items()):
        rows = read_log(log)
        if not rows:
            continue
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
