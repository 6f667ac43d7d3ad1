"""The training loop: resumable chunks (a step or a time budget) with atomic checkpoints and a loss log.

``train(kind, corpus_dir, out_dir, ...)`` trains one model. With
``resume=True`` it continues from ``out_dir/<kind>_last.pt`` (weights,
optimizer, step, and the RNG states, so the continued run draws the same
batches as an uninterrupted one would). It stops after ``steps`` steps in this
chunk, at ``max_steps`` total steps, after ``max_minutes`` of wall time in this
chunk or at the wall-clock deadline ``until``, whichever comes first, and
always leaves a checkpoint. Losses go to ``out_dir/<kind>_log.csv``
(appended, one line per ``log_every`` steps).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tts.train.corpus import Corpus
from tts.train.tasks import Task, make_task

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What one chunk did."""

    kind: str
    start_step: int
    step: int
    seconds: float
    last_losses: dict[str, float]
    checkpoint: Path
    graph: str = "off"   # the --graph mode with "auto" resolved ("on" runs eagerly on a CPU)


def checkpoint_path(out_dir: str | os.PathLike[str], kind: str) -> Path:
    return Path(out_dir) / f"{kind}_last.pt"


def _rng_blob(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)


def _set_rng(rng: np.random.Generator, blob: str) -> None:
    rng.bit_generator.state = json.loads(blob)


def _unfold_weight_norm(model: torch.nn.Module, sd: dict[str, torch.Tensor], path: Path,
                        name: str = "WaveGlow") -> dict[str, torch.Tensor]:
    """An exported WaveGlow (or HiFi-GAN generator) has its weight norm folded (``.weight``); the
    training model has
    ``weight_g``/``weight_v``. ``v = W``, ``g = ||W||`` gives back exactly ``W``. An all-zero
    row (output channel), as ``tts.train.grow`` leaves in new layers, gets ``g = 0`` and a fixed
    random unit ``v`` (``v = 0`` would make ``g * v / ||v||`` NaN): still exactly zero, and
    trainable."""
    want = model.state_dict()
    out = {}
    gen = torch.Generator().manual_seed(0)
    for k in want:
        if k.endswith(".weight_v"):
            base = k[: -len("_v")]
            if base not in sd:
                raise ValueError(f"{path}: not an exported {name} of this size (no {base})")
            w = sd[base].float()
            g = torch.linalg.vector_norm(w, dim=(1, 2), keepdim=True)
            zero = g.flatten() == 0
            v = w.clone()
            if zero.any():
                r = torch.randn((int(zero.sum()),) + tuple(w.shape[1:]), generator=gen)
                v[zero] = r / torch.linalg.vector_norm(r, dim=(1, 2), keepdim=True)
            out[k] = v
            out[base + "_g"] = g
        elif k.endswith(".weight_g"):
            continue
        elif k in sd:
            out[k] = sd[k]
    return out


def _stored_config(path: Path) -> dict[str, Any] | None:
    """The ``config`` dict a checkpoint or export records, if any."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:   # unreadable: the load that follows names the problem
        return None
    cfg = ckpt.get("config") if isinstance(ckpt, dict) else None
    return dict(cfg) if isinstance(cfg, dict) else None


def _init_from_export(task: Task, model: torch.nn.Module, kind: str, path: Path) -> int:
    """Load an exported (fp16) voice file into ``model``; return the step it records."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file to initialise {kind} from")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if kind == "waveglow":
        ckpt = dict(ckpt, state_dict=_unfold_weight_norm(model, ckpt.get("state_dict", {}), path))
    elif kind == "hifigan":   # the generator only: the discriminators are never exported
        ckpt = {"generator": _unfold_weight_norm(model.generator, ckpt.get("generator", {}), path,
                                                 "HiFi-GAN"), "train_state": ckpt.get("train_state", {})}
    try:
        task.load_payload(model, ckpt)
    except (KeyError, RuntimeError) as e:
        raise ValueError(f"{path}: not an exported {kind} file ({e})") from None
    task.after_load(model)
    train_state = ckpt.get("train_state")
    step = train_state.get("iters_all", 0) if isinstance(train_state, dict) else 0
    return int(ckpt.get("iteration", ckpt.get("step", step)))


def lr_at(step: int, base: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then constant (Adam; DLE trains at a constant rate)."""
    if warmup <= 0:
        return base
    return base * min(1.0, (step + 1) / warmup)


def train(kind: str, corpus_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
          resume: bool = True, max_steps: int | None = None, max_minutes: float | None = None,
          device: str = "cpu", seed: int = 1234, log_every: int = 10, save_minutes: float = 3.0,
          settings: dict[str, Any] | None = None, model_config: dict[str, Any] | None = None,
          corpus: Corpus | None = None, init_from: str | os.PathLike[str] | None = None,
          graph: str = "off", until: float | None = None, steps: int | None = None) -> TrainResult:
    """Train ``kind`` (fastspeech | tacotron2 | waveglow | hifigan) for one chunk; see the module
    docstring.

    ``steps``: at most this many steps in this chunk, counted from where it starts (a resumed
    checkpoint's step, an ``init_from`` file's, or 0); ``max_steps`` is a total step instead.

    ``until``: a wall-clock deadline (Unix seconds, ``time.time()``): no step starts after it.
    Unlike ``max_minutes``, whose clock starts at the first step, it also counts the set-up
    (loading, GTA mels, graph capture and compilation), so a device call can be planned to the
    second.

    ``init_from``: when there is no checkpoint to resume, start from the weights of an exported
    voice file (``tts.train export``'s fp16 ``tacotron2.pt``, ``fastspeech.pt``, ``waveglow.pt`` or
    ``hifigan.pt``, whose folded weights are re-parametrised with weight norm; a HiFi-GAN's
    discriminators, never exported, start afresh) at the step it
    records, with a fresh optimizer (whose learning-rate warm-up starts again there) and the
    RNGs seeded from ``(seed, step)``. This is how a
    run continues on a new machine, where the full checkpoint could not travel; it is not
    bit-identical to an uninterrupted run.

    ``graph`` (Tacotron2 and WaveGlow): ``"auto"``: ``"on"`` on a CUDA device, else ``"off"``;
    ``"off"`` the eager step; ``"on"`` the static-shape step of ``tts.train.t2_static`` (Tacotron2,
    CUDA-graphed per shape bucket) or ``tts.train.wg_static`` (WaveGlow, one graph) on a CUDA
    device (on CPU the same static step runs eagerly);
    ``"static"`` the static step without capture on any device.
    Checkpoints are the same in every mode.
    """
    if graph not in ("auto", "off", "on", "static"):
        raise ValueError(f"graph must be auto, off, on or static, got {graph!r}")
    if steps is not None and steps < 0:
        raise ValueError(f"steps must be at least 0, got {steps}")
    if graph == "auto":     # the CUDA-graphed step where it exists (measured: benchmarks/README.md)
        graph = "on" if kind in ("tacotron2", "waveglow") and torch.device(device).type == "cuda" else "off"
    if graph != "off" and kind not in ("tacotron2", "waveglow"):
        raise ValueError(f"--graph {graph} is implemented for tacotron2 and waveglow, not {kind}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = False
    task: Task = make_task(kind, settings, model_config)
    corpus = corpus if corpus is not None else Corpus(corpus_dir)
    pool = task.usable(corpus)
    if not pool:
        raise ValueError(f"{kind}: no usable utterance in the corpus")

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ckpt_file = checkpoint_path(out, kind)
    if kind in ("waveglow", "hifigan") and not model_config:
        # The architecture of the weights to be loaded: it may have been grown
        # (``tts.train.grow``) past the default one, or set with --model-config.
        src = ckpt_file if resume and ckpt_file.is_file() else init_from
        stored = _stored_config(Path(src)) if src is not None and Path(src).is_file() else None
        if stored is not None:
            task.model_config = stored
    model = task.build_model()
    task.init_from_corpus(model, corpus, pool)
    model = model.to(dev)
    model.train()
    capture = graph == "on" and dev.type == "cuda"
    if graph != "off":
        from tts.train import t2_static
    if capture:
        opt = t2_static.make_optimizer(model, task.settings, dev, capturable=True)
    else:
        opt = task.make_optimizer(model, dev)
    lr_tensor = opt.param_groups[0]["lr"]
    step = 0
    warmup_from = 0   # the step the learning-rate warm-up counts from: where the optimizer began
    elapsed_before = 0.0
    if resume and ckpt_file.is_file():
        ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=True)
        task.load_payload(model, ckpt)
        task.after_load(model)
        opt_state = task.optimizer_state(ckpt)
        if opt_state is not None:
            opt.load_state_dict(opt_state)
            if capture:
                t2_static.restore_capturable(opt, lr_tensor)
        tr = ckpt["train"]
        step = int(tr["step"])
        warmup_from = int(tr.get("warmup_from", 0))
        elapsed_before = float(tr.get("elapsed", 0.0))
        _set_rng(rng, tr["numpy_rng"])
        torch.set_rng_state(tr["torch_rng"])
        if dev.type == "cuda" and tr.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(tr["cuda_rng"], dev)
        logger.info("%s: resumed from %s at step %d", kind, ckpt_file, step)
    elif init_from is not None:
        step = _init_from_export(task, model, kind, Path(init_from))
        # A fresh Adam's first steps move every weight by about the learning rate whatever its
        # gradient: warm up again, or a trained model is knocked off (a WaveGlow's loss went
        # from -6.1 to +2.8 in one full-rate step).
        warmup_from = step
        rng = np.random.default_rng([seed, step])
        torch.manual_seed(seed + step)
        logger.info("%s: initialised from %s at step %d", kind, init_from, step)
    start_step = step
    if steps is not None:
        max_steps = start_step + steps if max_steps is None else min(max_steps, start_step + steps)
    task.prepare(corpus, pool, dev)
    stepper = task.make_graph_step(model, opt, corpus, pool, dev, capture) if graph != "off" else None
    t0 = time.monotonic()
    last_save = t0
    log_file = out / f"{kind}_log.csv"
    new_log = not log_file.is_file()
    logs: dict[str, float] = {}

    def save() -> None:
        payload = task.payload(model, opt, step)
        if capture:
            for key in ("optimizer", "optim"):
                if key in payload:
                    payload[key] = t2_static.portable_optimizer_state(payload[key])
        payload["train"] = {
            "step": step, "elapsed": elapsed_before + time.monotonic() - t0, "kind": kind,
            "numpy_rng": _rng_blob(rng), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
            "settings": json.dumps(task.settings), "seed": seed, "warmup_from": warmup_from,
        }
        tmp = ckpt_file.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, ckpt_file)

    with open(log_file, "a", encoding="utf-8") as log:
        header_written = not new_log
        while True:
            if max_steps is not None and step >= max_steps:
                break
            if max_minutes is not None and time.monotonic() - t0 >= max_minutes * 60.0:
                break
            if until is not None and time.time() >= until:
                break
            tlogs = train_step(task, model, opt, stepper, corpus, pool, rng, dev, step, warmup_from)
            step += 1
            if step % log_every == 0 or step == start_step + 1:
                # Reading the values synchronises a GPU: only on logging steps.
                logs = {k: float(v) for k, v in tlogs.items()}
                if not math.isfinite(logs["loss"]):
                    raise FloatingPointError(f"{kind}: loss is {logs['loss']} at step {step}")
                row = {"step": step, "seconds": round(elapsed_before + time.monotonic() - t0, 2), **logs}
                if not header_written:
                    log.write("# " + json.dumps(list(row)) + "\n")
                    header_written = True
                log.write(json.dumps(row) + "\n")
                log.flush()
            if time.monotonic() - last_save >= save_minutes * 60.0:
                save()
                last_save = time.monotonic()
    save()
    if step > start_step and not logs:
        logs = {k: float(v) for k, v in tlogs.items()}
    seconds = time.monotonic() - t0
    logger.info("%s: steps %d -> %d in %.1f s (graph %s); last %s", kind, start_step, step, seconds,
                graph, logs)
    return TrainResult(kind, start_step, step, seconds, logs, ckpt_file, graph)


def train_step(task: Task, model: torch.nn.Module, opt: torch.optim.Optimizer, stepper: Any,
               corpus: Corpus, pool: list[int], rng: np.random.Generator, dev: torch.device,
               step: int, warmup_from: int = 0) -> dict[str, torch.Tensor]:
    """One training step at ``step`` (its learning rate from the warm-up schedule, counted from
    ``warmup_from``, the step the optimizer began at): through the
    graphed/static ``stepper`` where there is one, else eagerly (clipping as the task says).
    Returns the logged values as tensors (reading them synchronises a GPU). A task with its own
    step (``Task.own_step``: HiFi-GAN's two optimizers) takes it whole."""
    if task.own_step:
        return task.step(model, opt, corpus, pool, rng, dev, step, warmup_from)
    lr = lr_at(step - warmup_from, task.settings["lr"], int(task.settings["warmup"]))
    if stepper is not None:
        return stepper.step(task.sample_batch(corpus, pool, rng), lr, task.guide_weight(step))
    for g in opt.param_groups:
        g["lr"] = lr
    loss, logs = task.train_step_loss(model, corpus, pool, rng, dev, step)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if task.settings.get("grad_clip", 0) > 0:
        logs["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                           task.settings["grad_clip"]).detach()
    opt.step()
    return logs


def read_log(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """The rows of a ``<kind>_log.csv`` (JSON lines; ``#`` lines are headers).

    The file may be gzipped (``<kind>_log.csv.gz``, as the logs kept in the recipes are): it is
    recognised by its content, whatever its name. A plain path that does not exist is read from
    ``path + ".gz"`` where that exists."""
    p = Path(path)
    if not p.exists() and p.suffix != ".gz" and p.with_name(p.name + ".gz").is_file():
        p = p.with_name(p.name + ".gz")
    with open(p, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    if gzipped:
        with gzip.open(p, "rt", encoding="utf-8") as f:
            text = f.read()
    else:
        text = p.read_text(encoding="utf-8")
    rows = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            rows.append(json.loads(line))
    return rows


__all__ = ["train", "train_step", "TrainResult", "checkpoint_path", "read_log", "lr_at"]
