"""One training task per model: the bundled voice's sizes, batches, loss, checkpoint layout.

Checkpoints are written in the layouts our loaders read (and NVIDIA's
training scripts write), with the training state beside the weights:

- Tacotron2 / WaveGlow: DLE ``train.py``: ``{"iteration", "config", "state_dict", "optimizer"}``
  (WaveGlow keeps weight norm, as DLE trains it);
- FastSpeech: the CUDA-Optimized FastSpeech trainer: ``{"step", "model"`` (keys ``module.``-
  prefixed) ``, "optim"}``;
- plus ``"train"``: step, elapsed seconds, RNG states (JSON text and tensors), task settings.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tts.models.fastspeech import FastSpeech, FastSpeechConfig
from tts.models.stft import MelSpectrogram
from tts.models.tacotron2 import Tacotron2, Tacotron2Config
from tts.models.waveglow import WaveGlow, WaveGlowConfig
from tts.train import losses
from tts.train.corpus import Corpus
from tts.train.data import (acoustic_batch, aligned_segments, audio_segments, bucketed_indices,
                             sort_by_length)

logger = logging.getLogger(__name__)

#: Architecture of the bundled voice's models (sized for <= 30 MiB of fp16 weights in all,
#: WaveGlow shared by both voices, and for faster-than-real-time synthesis on 2 CPU cores).
MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "fastspeech": dict(max_seq_len=1200, d_model=128, phoneme_side_n_layer=4, phoneme_side_head=2,
                       phoneme_side_conv1d_filter_size=256, phoneme_side_output_size=128,
                       mel_side_n_layer=4, mel_side_head=2, mel_side_conv1d_filter_size=256,
                       mel_side_output_size=128, fft_conv1d_kernel=3, fft_conv1d_padding=1,
                       duration_predictor_filter_size=128, duration_predictor_kernel_size=3,
                       dropout=0.1, n_mels=80, n_phns=148),
    "tacotron2": dict(mask_padding=True, n_mel_channels=80, n_symbols=148, symbols_embedding_dim=192,
                      encoder_kernel_size=5, encoder_n_convolutions=3, encoder_embedding_dim=192,
                      attention_rnn_dim=256, attention_dim=128, attention_location_n_filters=32,
                      attention_location_kernel_size=31, n_frames_per_step=1, decoder_rnn_dim=256,
                      prenet_dim=128, max_decoder_steps=1500, gate_threshold=0.5,
                      p_attention_dropout=0.1, p_decoder_dropout=0.1, postnet_embedding_dim=128,
                      postnet_kernel_size=5, postnet_n_convolutions=5),
    "waveglow": dict(n_mel_channels=80, n_flows=8, n_group=8, n_early_every=4, n_early_size=2,
                     WN_config=dict(n_layers=4, kernel_size=3, n_channels=64)),
    # HiFi-GAN "V2" (Kong et al. 2020, config_v2.json): 0.93 M parameters, 1.8 MiB in fp16
    "hifigan": dict(upsample_rates=[8, 8, 2, 2], upsample_kernel_sizes=[16, 16, 4, 4],
                    upsample_initial_channel=128, resblock="1", resblock_kernel_sizes=[3, 7, 11],
                    resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], n_mel_channels=80),
}

#: Training settings per task (CLI flags override).
TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "fastspeech": dict(batch_size=32, lr=1e-3, warmup=1000, grad_clip=1.0, weight_decay=0.0,
                       amp=True),
    "tacotron2": dict(batch_size=64, lr=1e-3, warmup=500, grad_clip=1.0, weight_decay=1e-6,
                      amp=False, guide_weight=1.0, guide_decay_steps=6000, max_frames=900,
                      self_feed=0.0, self_feed_passes=1, gta=None, gta_fraction=1.0, gta_generation=1),
    "waveglow": dict(batch_size=24, lr=2e-4, warmup=200, grad_clip=0.0, weight_decay=0.0, amp=False,
                     segment_length=16000, sigma=1.0, compile=False, gta=None, gta_fraction=1.0,
                     gta_generation=1,
                     spec_weight=0.0, spec_sigma=1.0),
    # DLE's HiFi-GAN recipe: AdamW (its default weight decay 0.01) at 2e-4, betas (0.8, 0.99),
    # exponential decay (the original's 0.999 per epoch; an LJSpeech epoch is ~820 steps at 16),
    # 8192-sample windows, loss weights mel 45, feature matching 2, mel loss up to Nyquist
    "hifigan": dict(batch_size=16, lr=2e-4, betas=(0.8, 0.99), weight_decay=0.01, lr_decay=0.999,
                    lr_decay_every=1000, warmup=0, d_warmup=0, grad_clip=0.0, amp=False, compile=False,
                    segment_length=8192, mel_weight=45.0, fm_weight=2.0, loss_fmax=None,
                    mpd_periods=(2, 3, 5, 7, 11), disc_width_div=1, cudnn_benchmark=True,
                    gta=None, gta_fraction=1.0, gta_generation=1),
}


@dataclass
class Task:
    """Base: a model kind's construction, batches, loss and checkpoint layout."""

    kind: str
    settings: dict[str, Any]
    model_config: dict[str, Any] = field(default_factory=dict)

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def train_step_loss(self, model: nn.Module, corpus: Corpus, pool: list[int],
                        rng: np.random.Generator, device: torch.device, step: int
                        ) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def sorted_pool(self, corpus: Corpus, pool: list[int]) -> list[int]:
        """``pool`` sorted by mel length (computed once per pool)."""
        cache = self.__dict__.setdefault("_sorted", {})
        key = (id(corpus), len(pool))
        if key not in cache:
            lengths = np.array([it.mel.shape[0] for it in corpus.items])
            cache[key] = sort_by_length(lengths, pool)
        return cache[key]

    def usable(self, corpus: Corpus) -> list[int]:
        """Indices of utterances this task can train on."""
        return list(range(len(corpus)))

    #: True where the task takes its steps itself (``step``): a GAN's two optimizers.
    own_step = False

    def make_optimizer(self, model: nn.Module, device: torch.device):
        """The eager step's optimizer (Adam at ``lr``, ``weight_decay``)."""
        return torch.optim.Adam(model.parameters(), lr=self.settings["lr"],
                                weight_decay=self.settings["weight_decay"])

    def optimizer_state(self, ckpt: dict[str, Any]) -> Any:
        """The optimizer's state in a checkpoint (``None``: none saved)."""
        return ckpt.get("optimizer", ckpt.get("optim"))

    def step(self, model: nn.Module, optimizer: Any, corpus: Corpus, pool: list[int],
             rng: np.random.Generator, device: torch.device, step: int, warmup_from: int
             ) -> dict[str, Tensor]:
        """One whole training step, for the tasks with ``own_step``; returns the logged values."""
        raise NotImplementedError

    def payload(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> dict[str, Any]:
        raise NotImplementedError

    def load_payload(self, model: nn.Module, ckpt: dict[str, Any]) -> None:
        raise NotImplementedError

    def init_from_corpus(self, model: nn.Module, corpus: Corpus, pool: list[int]) -> None:
        """Data-dependent initialisation of a fresh model (overwritten by a resumed checkpoint)."""

    def after_load(self, model: nn.Module) -> None:
        """Hook for tasks that attach training-only behaviour (dropout hooks)."""

    def prepare(self, corpus: Corpus, pool: list[int], device: torch.device) -> None:
        """Work done once before the first step (WaveGlow: its ground-truth-aligned mels)."""

    def gta_files(self) -> list[str]:
        """The setting ``gta``: one exported acoustic file, or a list of them (none: [])."""
        g = self.settings.get("gta")
        if not g:
            return []
        return [str(g)] if isinstance(g, (str, os.PathLike)) else [str(f) for f in g]

    def prepare_gta(self, corpus: Corpus, pool: list[int], device: torch.device) -> None:
        """Every ``gta`` file's GTA mels (``gta_mels``), kept for ``pick_mels``."""
        files = self.gta_files()
        if files:
            gen = self.settings.get("gta_generation", 1)
            gen = gen if gen == "free" else int(gen)
            # a Tacotron2's decoder loop costs about the same per step at batch 16 or 64: fewer
            # batches on a GPU (3 self-fed passes over 1 500 utterances: by estimate 4 minutes at 16)
            bs = 64 if device.type == "cuda" else 16
            self._gta_mels = [gta_mels(f, corpus, pool, device, batch_size=bs, generation=gen)
                              for f in files]
            self._gta_corpus = id(corpus)

    def pick_mels(self, corpus: Corpus, idx: list[int], rng: np.random.Generator) -> list[np.ndarray]:
        """The mels of the items ``idx``: with probability ``gta_fraction`` a GTA one (of a
        ``gta`` file drawn uniformly when there are several), else the corpus's own (also where
        that file has none for the item)."""
        if getattr(self, "_gta_corpus", None) != id(corpus):
            raise RuntimeError(f"{type(self).__name__}.prepare must run before GTA batches are drawn")
        use = rng.random(len(idx)) < float(self.settings.get("gta_fraction", 1.0))
        n = len(self._gta_mels)
        src = rng.integers(0, n, size=len(idx)) if n > 1 else np.zeros(len(idx), np.int64)
        out = []
        for i, u, k in zip(idx, use, src):
            m = self._gta_mels[int(k)][i] if u else None
            out.append(corpus[i].mel if m is None else m)
        return out

    def guide_weight(self, step: int) -> float:
        """Weight of the attention guide at ``step`` (Tacotron2 only)."""
        return 0.0

    def make_graph_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, corpus: Corpus,
                        pool: list[int], device: torch.device, capture: bool):
        """The static-shape (CUDA-graphed) step, for the kinds that have one."""
        raise ValueError(f"--graph is implemented for tacotron2 and waveglow, not {self.kind}")


def mean_mel(corpus: Corpus, pool: list[int], n: int = 200) -> Tensor:
    """Per-band mean of the log-mel over (up to ``n`` of) the usable utterances: ``[n_mel]``."""
    frames = [np.asarray(corpus[i].mel, dtype=np.float32) for i in pool[:n]]
    return torch.from_numpy(np.concatenate(frames).mean(axis=0))


def gta_mels(acoustic_file: str, corpus: Corpus, pool: list[int], device: torch.device,
             batch_size: int = 16, seed: int = 0, generation: int | str = 1
             ) -> list[np.ndarray | None]:
    """Ground-truth-aligned (GTA) mels of an exported acoustic model, frame for frame with the
    real audio and mel; float16 ``[T, n_mel]``, ``None`` outside ``pool`` (and, for a
    FastSpeech, for utterances longer than its ``max_seq_len``).

    - FastSpeech: run on each utterance with the corpus durations (eval mode, float32), one at a
      time (padding would change the last frames).
    - Tacotron2: teacher-forced on the real mels (the Tacotron2 paper's GTA mels for its
      vocoder), eval mode with the prenet's dropout on as at inference (torch seed ``seed``), the
      postnet's output; in length-sorted batches of ``batch_size``, padded as in training (the
      decoder is causal; only the postnet's last two frames see the padding).
      ``generation`` K > 1 (setting ``gta_generation``): the K-th generation instead, each pass
      teacher-forced on the last one's decoder frames (``teacher_forced_decode`` with
      ``self_feed`` 1.0 and K - 1 passes): still frame for frame with the audio, but as the
      Tacotron2's own inputs make it at inference. ``generation`` "free": the Tacotron2 run
      free, as at inference (its own stop gate, up to twice the audio's frames plus 20; prenet
      dropout on, torch seed ``seed``), its postnet mel warped onto the audio's frames
      (``dtw.warp_onto``, against the real mel); ``None`` where the gate never fired or the
      free mel is under half or over twice the audio's length. A FastSpeech has one generation
      only (with the corpus durations its free mel is its GTA one).
    """
    from tts.checkpoints import detect_kind, load_fastspeech, load_tacotron2
    kind = detect_kind(acoustic_file)
    mels: list[np.ndarray | None] = [None] * len(corpus)
    if kind == "tacotron2" and generation == "free":
        return _free_warped_mels(acoustic_file, corpus, pool, device, batch_size, seed)
    if kind == "tacotron2":
        order = sort_by_length(np.array([it.mel.shape[0] for it in corpus.items]), pool)
        gen = torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else [])
        with torch.no_grad(), gen:   # building the model draws numbers too
            t2 = load_tacotron2(acoustic_file).to(device).eval()
            torch.manual_seed(seed)
            for k in range(0, len(order), batch_size):
                idx = order[k:k + batch_size]
                b = acoustic_batch(corpus, idx).to(device)
                out = losses.tacotron2_forward(t2, b.ids, b.input_lengths, b.mel.transpose(1, 2),
                                               self_feed=1.0 if generation > 1 else 0.0,
                                               self_feed_passes=max(1, generation - 1))
                post = out.mel_postnet.float().transpose(1, 2).cpu().numpy()
                for j, i in enumerate(idx):
                    mels[i] = post[j, :corpus.items[i].mel.shape[0]].astype(np.float16)
        return mels
    if kind != "fastspeech":
        raise ValueError(f"{acoustic_file}: gta needs a FastSpeech or Tacotron2 file, not a {kind}")
    fs = load_fastspeech(acoustic_file).to(device).eval()
    limit = int(fs.config.max_seq_len)
    with torch.no_grad():   # one utterance at a time: padding would change the last frames
        for i in pool:
            it = corpus.items[i]
            if it.mel.shape[0] > limit or len(it.ids) > limit:
                continue
            ids = torch.from_numpy(np.asarray(it.ids))[None].to(device)
            dur = torch.from_numpy(np.asarray(it.durations))[None].to(device)
            out = losses.fastspeech_forward(fs, ids, dur, it.mel.shape[0]).mel[0]
            mels[i] = out.float().cpu().numpy().astype(np.float16)
    return mels


def _free_warped_mels(acoustic_file: str, corpus: Corpus, pool: list[int], device: torch.device,
                      batch_size: int, seed: int) -> list[np.ndarray | None]:
    """``gta_mels`` with ``generation`` "free" (see there), in length-sorted batches."""
    from tts.checkpoints import load_tacotron2
    from tts.train.dtw import warp_onto
    mels: list[np.ndarray | None] = [None] * len(corpus)
    order = sort_by_length(np.array([it.mel.shape[0] for it in corpus.items]), pool)
    devices = [torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        t2 = load_tacotron2(acoustic_file).to(device).eval()
        gen = torch.Generator(device=device).manual_seed(seed)
        for k in range(0, len(order), batch_size):
            idx = order[k:k + batch_size]
            b = acoustic_batch(corpus, idx).to(device)
            limit = 2 * int(b.mel_lengths.max()) + 20
            out = t2.infer(b.ids, b.input_lengths, max_decoder_steps=limit, generator=gen)
            post = out.mel_postnet.float().transpose(1, 2).cpu().numpy()
            lengths = out.mel_lengths.cpu().numpy()
            keep = [(j, i) for j, i in enumerate(idx)
                    if 0 < lengths[j] < limit
                    and 0.5 <= lengths[j] / corpus.items[i].mel.shape[0] <= 2.0]
            warped = warp_onto([np.asarray(corpus.items[i].mel, np.float32) for _, i in keep],
                               [post[j, :lengths[j]] for j, _ in keep], device)
            for (_, i), w in zip(keep, warped):
                mels[i] = w.astype(np.float16)
    logger.info("%s: free-running mels of %d of %d utterances warped onto the audio (the rest: "
                "gate never fired, or length off by over 2x)", acoustic_file,
                sum(m is not None for m in mels), len(pool))
    return mels


class FastSpeechTask(Task):
    def init_from_corpus(self, model, corpus, pool):
        with torch.no_grad():
            model.mel_linear.bias.copy_(mean_mel(corpus, pool))

    def build_model(self) -> nn.Module:
        model = FastSpeech(FastSpeechConfig.from_dict(self.model_config))
        self.after_load(model)
        return model

    def after_load(self, model: nn.Module) -> None:
        if not getattr(model, "_train_dropout", False):
            losses.add_fastspeech_dropout(model, float(self.model_config.get("dropout", 0.1)))
            model._train_dropout = True

    def usable(self, corpus: Corpus) -> list[int]:
        limit = int(self.model_config["max_seq_len"])
        return [i for i, it in enumerate(corpus.items)
                if it.mel.shape[0] <= limit and len(it.ids) <= limit]

    def train_step_loss(self, model, corpus, pool, rng, device, step):
        idx = bucketed_indices(self.sorted_pool(corpus, pool), self.settings["batch_size"], rng)
        b = acoustic_batch(corpus, idx).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16,
                            enabled=bool(self.settings["amp"]) and device.type == "cuda"):
            out = losses.fastspeech_forward(model, b.ids, b.durations, b.mel.shape[1])
        out = losses.FastSpeechTrainOutput(out.mel.float(), out.log_duration.float())
        return losses.fastspeech_loss(out, b.mel, b.mel_lengths, b.durations, b.input_lengths)

    def payload(self, model, optimizer, step):
        return {"step": step, "model": {"module." + k: v for k, v in model.state_dict().items()},
                "optim": optimizer.state_dict(), "hparams": dict(self.model_config)}

    def load_payload(self, model, ckpt):
        sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in ckpt["model"].items()}
        model.load_state_dict(sd)


class Tacotron2Task(Task):
    def init_from_corpus(self, model, corpus, pool):
        with torch.no_grad():
            model.decoder.linear_projection.linear_layer.bias.copy_(mean_mel(corpus, pool))

    def build_model(self) -> nn.Module:
        return Tacotron2(Tacotron2Config.from_dict(self.model_config))

    def usable(self, corpus: Corpus) -> list[int]:
        limit = int(self.settings["max_frames"])
        return [i for i, it in enumerate(corpus.items) if it.mel.shape[0] <= limit]

    def guide_weight(self, step: int) -> float:
        w = float(self.settings["guide_weight"])
        decay = int(self.settings["guide_decay_steps"])
        return w * max(0.05, 1.0 - step / decay) if decay > 0 else w

    def prepare(self, corpus: Corpus, pool: list[int], device: torch.device) -> None:
        """With the setting ``gta`` (an exported FastSpeech file), the Tacotron2 learns that
        FastSpeech's ground-truth-aligned mels (``gta_mels``) instead of the audio's own, for
        a fraction ``gta_fraction`` of the utterances of each batch: sequence-level knowledge
        distillation (Kim & Rush, 2016), the FastSpeech paper's own recipe turned round. The
        FastSpeech's mels are the conditional mean the teacher's frames scatter around; an
        autoregressive decoder that reads its own outputs back drifts less on such targets.
        Lengths, durations and gate targets stay the corpus's."""
        self.prepare_gta(corpus, pool, device)

    def sample_batch(self, corpus: Corpus, pool: list[int], rng: np.random.Generator):
        """The next batch (CPU), drawn as both the eager and the graphed step draw it; with the
        setting ``gta``, each item's mel is a GTA one with probability ``gta_fraction``."""
        idx = bucketed_indices(self.sorted_pool(corpus, pool), self.settings["batch_size"], rng)
        if not self.gta_files():
            return acoustic_batch(corpus, idx)
        return acoustic_batch(corpus, idx, self.pick_mels(corpus, idx, rng))

    def make_graph_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, corpus: Corpus,
                        pool: list[int], device: torch.device, capture: bool):
        """The static-shape step (``tts.train.t2_static``); settings ``graph_mel_multiple`` (64),
        ``graph_in_multiple`` (32), ``graph_warmup`` (2), ``graph_warmup_per_bucket`` (0),
        ``graph_lstm`` ("cudnn" | "loop")."""
        from tts.train.t2_static import Tacotron2GraphStep
        s = self.settings
        mm, im = int(s.get("graph_mel_multiple", 64)), int(s.get("graph_in_multiple", 32))
        mel_len = np.array([corpus.items[i].mel.shape[0] for i in pool])
        in_len = np.array([len(corpus.items[i].ids) for i in pool])
        return Tacotron2GraphStep(
            model, optimizer, device, grad_clip=float(s.get("grad_clip", 0.0)),
            use_guide=float(s["guide_weight"]) > 0, capture=capture,
            t_in_table=Tacotron2GraphStep.t_in_for_buckets(mel_len, in_len, mm, im),
            mel_multiple=mm, in_multiple=im, warmup=int(s.get("graph_warmup", 2)),
            warmup_per_bucket=int(s.get("graph_warmup_per_bucket", 0)),
            lstm_impl=str(s.get("graph_lstm", "cudnn")), self_feed=float(s.get("self_feed", 0.0)),
            self_feed_passes=int(s.get("self_feed_passes", 1)))

    def train_step_loss(self, model, corpus, pool, rng, device, step):
        b = self.sample_batch(corpus, pool, rng).to(device)
        mel = b.mel.transpose(1, 2)  # [B, n_mel, T]
        out = losses.tacotron2_forward(model, b.ids, b.input_lengths, mel,
                                       float(self.settings.get("self_feed", 0.0)),
                                       int(self.settings.get("self_feed_passes", 1)))
        gw = self.guide_weight(step)
        prior = losses.duration_prior(b.durations, b.input_lengths, mel.shape[2]) if gw > 0 else None
        return losses.tacotron2_loss(out, mel, b.mel_lengths, prior, b.input_lengths, gw)

    def payload(self, model, optimizer, step):
        return {"iteration": step, "config": model.config.to_dict(), "state_dict": model.state_dict(),
                "optimizer": optimizer.state_dict()}

    def load_payload(self, model, ckpt):
        model.load_state_dict(ckpt["state_dict"])


class WaveGlowTask(Task):
    _mel: MelSpectrogram | None = None

    def build_model(self) -> nn.Module:
        return WaveGlow(WaveGlowConfig.from_dict(copy.deepcopy(self.model_config)))

    def usable(self, corpus: Corpus) -> list[int]:
        return [i for i, it in enumerate(corpus.items) if len(it.audio) >= 4096]

    def mel_fn(self, device: torch.device) -> MelSpectrogram:
        if self._mel is None:
            self._mel = MelSpectrogram().to(device).eval()
        return self._mel

    def loss_fn(self, model: nn.Module, device: torch.device):
        """``(mel, audio) -> (loss, logs)``: DLE's loss, under bf16 autocast on CUDA when the
        setting ``amp`` is on (the loss itself is summed in float32), compiled with
        ``torch.compile`` when ``compile`` is on (static shapes: one graph for the run).
        With ``spec_weight > 0``, plus that times ``losses.waveglow_spectral_loss`` of a sample
        drawn at ``spec_sigma`` (logged as ``spec``; the likelihood term as ``ml``)."""
        cache = self.__dict__.setdefault("_loss_fns", {})
        key = (id(model), device.type)
        if key in cache:
            return cache[key]
        sigma = float(self.settings["sigma"])
        amp = bool(self.settings["amp"]) and device.type == "cuda"
        spec_weight = float(self.settings.get("spec_weight", 0.0))
        spec_sigma = float(self.settings.get("spec_sigma", 1.0))
        mel_fn = self.mel_fn(device)

        def fn(mel: Tensor, audio: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss, logs = losses.waveglow_loss(model, mel, audio, sigma)
            if spec_weight > 0:
                # The sample in float32: bf16's rounding through eight inverse flows would
                # be louder than the spectral valleys this term is about.
                spec = losses.waveglow_spectral_loss(model, mel.float(), audio, mel_fn, spec_sigma)
                logs = {"loss": (loss + spec_weight * spec).detach(), "ml": logs["loss"],
                        "spec": spec.detach()}
                loss = loss + spec_weight * spec
            return loss, logs

        if self.settings.get("compile"):
            fn = torch.compile(fn, dynamic=False)
        cache[key] = fn
        return fn

    def prepare(self, corpus: Corpus, pool: list[int], device: torch.device) -> None:
        """With the setting ``gta`` (an exported FastSpeech or Tacotron2 file, or a list of
        them), the vocoder trains on those models' mels instead of the audio's own: ground-truth-
        aligned (GTA) mels (``gta_mels``), so their frames line up with the real audio. A vocoder
        fine-tuned on them learns the acoustic models' smoothed mels (the Tacotron2 paper trained
        its WaveNet so). A list serves a vocoder shared by several acoustic models."""
        self.prepare_gta(corpus, pool, device)

    def sample_batch(self, corpus: Corpus, pool: list[int], rng: np.random.Generator
                     ) -> Tensor | tuple[Tensor, Tensor]:
        """``[batch_size, segment_length]`` audio (CPU), drawn as both steps draw it; with the
        setting ``gta``, ``(audio, mel)``: frame-aligned windows (``data.aligned_segments``),
        each item's mel a GTA one with probability ``gta_fraction``, else the corpus's own."""
        idx = [pool[int(j)] for j in rng.integers(0, len(pool), size=self.settings["batch_size"])]
        seg = int(self.settings["segment_length"])
        if not self.gta_files():
            return audio_segments(corpus, idx, seg, rng)
        mels = self.pick_mels(corpus, idx, rng)
        return aligned_segments([corpus[i].audio for i in idx], mels, seg, rng)

    def train_step_loss(self, model, corpus, pool, rng, device, step):
        batch = self.sample_batch(corpus, pool, rng)
        audio, mel = batch if isinstance(batch, tuple) else (batch, None)
        cuda = device.type == "cuda"
        audio = (audio.pin_memory() if cuda else audio).to(device, non_blocking=cuda)
        if mel is None:
            with torch.no_grad():
                mel = self.mel_fn(device)(audio)
        else:
            mel = (mel.pin_memory() if cuda else mel).to(device, non_blocking=cuda)
        return self.loss_fn(model, device)(mel, audio)

    def make_graph_step(self, model, optimizer, corpus, pool, device, capture):
        """The whole step as one CUDA graph (``tts.train.wg_static``); setting ``graph_warmup`` (2)."""
        from tts.train.wg_static import WaveGlowGraphStep
        return WaveGlowGraphStep(model, optimizer, device, self.mel_fn(device), self.loss_fn(model, device),
                                 capture=capture, warmup=int(self.settings.get("graph_warmup", 2)),
                                 grad_clip=float(self.settings.get("grad_clip", 0.0)))

    def payload(self, model, optimizer, step):
        return {"iteration": step, "config": model.config.to_dict(), "state_dict": model.state_dict(),
                "optimizer": optimizer.state_dict()}

    def load_payload(self, model, ckpt):
        model.load_state_dict(ckpt["state_dict"])


class HiFiGANTask(Task):
    """HiFi-GAN (``tts.models.hifigan.HiFiGAN``, weight norm on) against the multi-period and
    multi-scale discriminators (``tts.train.hifigan_gan``), DLE's training step:

    1. the generator makes audio from each window's mel (bf16/fp16 autocast on CUDA with the
       setting ``amp``: ``true`` or ``"bf16"``, or ``"fp16"`` with gradient scaling);
    2. discriminator step: least-squares loss of both discriminators on the real and the
       (detached) generated windows, one AdamW step;
    3. generator step, the discriminators frozen: least-squares adversarial loss +
       ``fm_weight`` x feature matching + ``mel_weight`` x the L1 distance between the log-mels of
       the real and generated windows (NVIDIA's mel, ``tts.models.stft.MelSpectrogram``, with
       ``fmax`` = ``loss_fmax``; ``None`` is Nyquist, 11 025 Hz, as DLE's ``--mel_fmax_loss``),
       one AdamW step.

    The input mels are the corpus's own (utterance-level NVIDIA mels, 0-8 kHz, as inference
    gets them), in frame-aligned windows (``data.aligned_segments``): ``segment_length / 256``
    frames make ``segment_length`` samples. With the setting ``gta`` (an exported FastSpeech or
    Tacotron2, or a list), ``gta_fraction`` of the items get that model's aligned mels instead,
    as ``WaveGlowTask`` does.

    Both learning rates are ``lr * lr_decay ** (step / lr_decay_every)`` (counted from step 0, so
    a resumed or re-initialised run goes on along the same curve). ``d_warmup`` N: the first N
    steps of fresh optimizers train only the discriminators (the generator's losses are still
    logged): for a run that starts from an exported generator (``--init-from``), whose
    discriminators start again from scratch. ``warmup`` M: the generator's rate then rises
    linearly over its first M steps (after the ``d_warmup`` ones). No step reads a value back from the GPU: the logged values are
    device tensors (the trainer reads them at its logging interval only).

    ``disc_width_div`` k divides the discriminators' channels by k (tests and smoke runs only).
    ``compile``: ``torch.compile`` the generator, both discriminators and the mel loss.
    """

    own_step = True

    def build_model(self) -> nn.Module:
        from tts.models.hifigan import HiFiGAN, HiFiGANConfig
        from tts.train.hifigan_gan import HiFiGANTrainModel, dle_init_generator
        gen = HiFiGAN(HiFiGANConfig.from_dict(copy.deepcopy(self.model_config)), weight_norm=True)
        dle_init_generator(gen)
        return HiFiGANTrainModel(gen, tuple(self.settings["mpd_periods"]),
                                 int(self.settings["disc_width_div"]))

    def usable(self, corpus: Corpus) -> list[int]:
        half = int(self.settings["segment_length"]) // 2
        return [i for i, it in enumerate(corpus.items) if len(it.audio) >= half]

    def amp_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype (``None``: float32), from the setting ``amp`` (CUDA only)."""
        amp = self.settings.get("amp")
        if device.type != "cuda" or not amp:
            return None
        if amp is True or amp == "bf16":
            return torch.bfloat16
        if amp == "fp16":
            return torch.float16
        raise ValueError(f'amp must be true, false, "bf16" or "fp16", got {amp!r}')

    def make_optimizer(self, model: nn.Module, device: torch.device):
        from tts.train.hifigan_gan import GANOptimizers
        s = self.settings
        kw = dict(lr=float(s["lr"]), betas=tuple(float(b) for b in s["betas"]),
                  weight_decay=float(s["weight_decay"]))
        if device.type == "cuda":
            kw["fused"] = True   # one kernel per step, no host synchronisation
        opt_g = torch.optim.AdamW(model.generator.parameters(), **kw)
        opt_d = torch.optim.AdamW([p for d in model.discriminators() for p in d.parameters()], **kw)
        scalers = (None, None)
        if self.amp_dtype(device) == torch.float16:
            scalers = (torch.amp.GradScaler("cuda"), torch.amp.GradScaler("cuda"))
        return GANOptimizers(opt_g, opt_d, *scalers)

    def optimizer_state(self, ckpt: dict[str, Any]) -> Any:
        if "optim_g" not in ckpt:
            return None
        return {k: ckpt[k] for k in ("optim_g", "optim_d", "scaler_g", "scaler_d") if k in ckpt}

    def prepare(self, corpus: Corpus, pool: list[int], device: torch.device) -> None:
        if device.type == "cuda":   # one batch shape for the whole run: let cuDNN pick its kernels
            torch.backends.cudnn.benchmark = bool(self.settings.get("cudnn_benchmark", True))
        self.prepare_gta(corpus, pool, device)

    def loss_mel(self, device: torch.device) -> MelSpectrogram:
        """NVIDIA's mel front end with ``fmax`` = the setting ``loss_fmax`` (the mel L1 term's)."""
        key = ("_loss_mel", device.type)
        if key not in self.__dict__:
            fmax = self.settings.get("loss_fmax")
            self.__dict__[key] = MelSpectrogram(mel_fmax=None if fmax is None else float(fmax)).to(device).eval()
        return self.__dict__[key]

    def sample_batch(self, corpus: Corpus, pool: list[int], rng: np.random.Generator
                     ) -> tuple[Tensor, Tensor]:
        """``(audio [B, L], mel [B, n_mel, L / 256])`` (CPU): a frame-aligned window of each of
        ``batch_size`` items drawn with replacement; each item's mel the corpus's own, or with the
        setting ``gta`` a GTA one with probability ``gta_fraction``."""
        idx = [pool[int(j)] for j in rng.integers(0, len(pool), size=int(self.settings["batch_size"]))]
        seg = int(self.settings["segment_length"])
        mels = self.pick_mels(corpus, idx, rng) if self.gta_files() else [corpus[i].mel for i in idx]
        audio, mel = aligned_segments([corpus[i].audio for i in idx], mels, seg, rng)
        return audio, mel[:, :, :seg // 256].contiguous()

    def _fns(self, model: nn.Module, device: torch.device):
        """``(generator, discriminate, mel_l1)``, compiled with the setting ``compile``."""
        cache = self.__dict__.setdefault("_fn_cache", {})
        key = (id(model), device.type)
        if key in cache:
            return cache[key]
        from tts.train.losses import _log_mel
        mel_fn = self.loss_mel(device)

        def mel_l1(y: Tensor, y_hat: Tensor) -> Tensor:
            with torch.no_grad():
                target = mel_fn(y)
            return torch.mean(torch.abs(target - _log_mel(mel_fn, y_hat)))

        gen, disc = model.generator, model.discriminate
        if self.settings.get("compile"):
            gen = torch.compile(gen, dynamic=False)
            disc = torch.compile(disc, dynamic=False)
            mel_l1 = torch.compile(mel_l1, dynamic=False)
        cache[key] = (gen, disc, mel_l1)
        return cache[key]

    def learning_rates(self, step: int, warmup_from: int) -> tuple[float, float]:
        """``(generator, discriminators)`` learning rates at ``step``."""
        s = self.settings
        lr = float(s["lr"]) * float(s["lr_decay"]) ** (step / float(s["lr_decay_every"]))
        warm = int(s.get("warmup", 0))
        k = step - warmup_from - int(s.get("d_warmup", 0))   # the generator's own steps so far
        g = lr * min(1.0, max(0, k + 1) / warm) if warm > 0 else lr
        return g, lr

    def step(self, model, optimizer, corpus, pool, rng, device, step, warmup_from):
        from tts.train.hifigan_gan import discriminator_loss, feature_loss, generator_loss
        s = self.settings
        cuda = device.type == "cuda"
        audio, mel = self.sample_batch(corpus, pool, rng)
        audio = (audio.pin_memory() if cuda else audio).to(device, non_blocking=cuda)
        mel = (mel.pin_memory() if cuda else mel).to(device, non_blocking=cuda)
        gen, disc, mel_l1 = self._fns(model, device)
        lr_g, lr_d = self.learning_rates(step, warmup_from)
        for g in optimizer.g.param_groups:
            g["lr"] = lr_g
        for g in optimizer.d.param_groups:
            g["lr"] = lr_d
        dtype = self.amp_dtype(device)
        d_params = [p for p in optimizer.d.param_groups[0]["params"]]
        d_only = step - warmup_from < int(s.get("d_warmup", 0))
        clip = float(s.get("grad_clip", 0.0))
        y = audio.unsqueeze(1)

        def autocast():
            return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

        def backward_and_step(loss: Tensor, opt: torch.optim.Optimizer, scaler, params) -> None:
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                if clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
                opt.step()
            else:
                scaler.scale(loss).backward()
                if clip > 0:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
                scaler.step(opt)
                scaler.update()

        with torch.set_grad_enabled(not d_only), autocast():
            y_hat = gen(mel)                                          # [B, 1, L]
        # the discriminators' step, on the real and the (detached) generated windows
        for p in d_params:
            p.requires_grad_(True)
        with autocast():
            outs, _ = disc(torch.cat([y, y_hat.detach().to(y.dtype)]))
        loss_d = discriminator_loss(outs)
        backward_and_step(loss_d, optimizer.d, optimizer.scaler_d, d_params)
        # the generator's step, the discriminators frozen (DLE's freeze)
        for p in d_params:
            p.requires_grad_(False)
        with torch.set_grad_enabled(not d_only):
            with autocast():
                outs, fmaps = disc(torch.cat([y, y_hat.to(y.dtype)]))
            adv = generator_loss(outs)
            fm = feature_loss(fmaps)
            mel_loss = mel_l1(audio, y_hat.squeeze(1).float())
            loss_g = adv + float(s["fm_weight"]) * fm + float(s["mel_weight"]) * mel_loss
        if not d_only:
            backward_and_step(loss_g, optimizer.g, optimizer.scaler_g, list(model.generator.parameters()))
        return {"loss": loss_g.detach(), "mel": mel_loss.detach(), "gen": adv.detach(), "fm": fm.detach(),
                "disc": loss_d.detach()}

    def payload(self, model, optimizer, step):
        """One dict with the entries of DLE's two files (``hifigan_gen_checkpoint_*.pt``:
        ``generator``, ``gen_ema``, ``config``, ``train_state``; ``hifigan_discrim_checkpoint_*.pt``:
        ``mpd``, ``msd``, ``optim_g``, ``optim_d``), so ``load_hifigan`` reads it as it is."""
        return {"generator": model.generator.state_dict(), "gen_ema": None,
                "config": model.generator.config.to_dict(), "train_state": {"iters_all": step},
                "mpd": model.mpd.state_dict(), "msd": model.msd.state_dict(), **optimizer.state_dict()}

    def load_payload(self, model, ckpt):
        """The generator (a training checkpoint or an exported file, weight norm on), and the
        discriminators where the checkpoint has them."""
        model.generator.load_state_dict(ckpt["generator"])
        if "mpd" in ckpt:
            model.mpd.load_state_dict(ckpt["mpd"])
            model.msd.load_state_dict(ckpt["msd"])


TASKS = {"fastspeech": FastSpeechTask, "tacotron2": Tacotron2Task, "waveglow": WaveGlowTask,
         "hifigan": HiFiGANTask}


def make_task(kind: str, overrides: dict[str, Any] | None = None,
              model_overrides: dict[str, Any] | None = None) -> Task:
    """The task for ``kind`` with the default settings and architecture, overridden where given."""
    if kind not in TASKS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(TASKS)}")
    settings = dict(TRAIN_DEFAULTS[kind])
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for key in ("self_feed", "gta_fraction"):
        if key in settings and not 0.0 <= float(settings[key]) <= 1.0:
            raise ValueError(f"{key} must be in [0, 1], got {settings[key]!r}")
    for key in ("self_feed_passes", "gta_generation"):
        v = settings.get(key, 1)
        if key == "gta_generation" and v == "free":
            if kind not in ("waveglow", "hifigan"):
                raise ValueError(f'gta_generation "free" is for a vocoder (waveglow, hifigan), not a {kind}')
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            extra = ' or "free"' if key == "gta_generation" else ""
            raise ValueError(f"{key} must be a whole number >= 1{extra}, got {v!r}")
    if kind == "hifigan" and int(settings["segment_length"]) % 256:
        raise ValueError(f"segment_length must be a multiple of the hop (256), got {settings['segment_length']!r}")
    cfg = copy.deepcopy(MODEL_CONFIGS[kind])
    for k, v in (model_overrides or {}).items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    return TASKS[kind](kind=kind, settings=settings, model_config=cfg)
