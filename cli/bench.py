"""tts-bench: latency percentiles and RTF per component and end to end, engines vs baselines.

Every figure of an engine is given with the baselines measured in the same run:

``torchscript``
    NVIDIA DeepLearningExamples' ``inference.py`` as it runs: Tacotron2 and WaveGlow compiled by
    ``torch.jit.script`` (``forward = infer``; ``tts.models.scripted``, which states the facts),
    the denoiser eager, fp16 by ``.half()`` of the models. Tacotron2 voices only: DLE's
    FastSpeech has no TorchScript path. ``speedup_torchscript``, the headline ratio.
``eager``
    The same models and casts without TorchScript (``speedup``).

``--baseline`` picks them (default ``both``, on CPU too). Without checkpoints the models are
random weights of NVIDIA's real sizes (``--size ngc``) or tiny ones (``--size tiny``, for CI), with
WaveGlow or (``--vocoder hifigan``) the HiFi-GAN generator of DLE's default configuration as the
vocoder. Each stage is a component of the results, the vocoder's named by its kind (``waveglow``,
``hifigan``, ``griffinlim``).
``--server HOST:PORT`` measures a running server instead (``tts.cli.bench_server``).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tts.cli.common import add_threads_argument, add_voice_arguments, apply_threads, new_parser, positive_int, run_main

logger = logging.getLogger(__name__)

PROG = "tts-bench"
WALK_BATCHES = (1, 2, 4, 8, 16)
WALK_LENGTHS = (64, 128, 256)
HOP = 256
SIGMA = 0.6
DENOISER_STRENGTH = 0.01
#: A long English text the benchmark input is cut from (whole words, then padded with it again).
TEXT = ("The quick brown fox jumps over the lazy dog while the orchestra tunes its instruments, "
        "and a voice from the back of the hall reads the evening's programme aloud to everyone. ")

#: (key, header) of the printed table, in the column order of NVIDIA's Tacotron2 README.
COLUMNS = [
    ("component", "Component"), ("backend", "Backend"), ("batch", "Batch size"),
    ("input_length", "Input length"), ("precision", "Precision"), ("avg_ms", "Avg latency (ms)"),
    ("std_ms", "Latency std (ms)"), ("p50_ms", "p50 (ms)"), ("p90_ms", "p90 (ms)"), ("p95_ms", "p95 (ms)"),
    ("p99_ms", "p99 (ms)"), ("samples_per_s", "Throughput (samples/s)"),
    ("speedup_torchscript", "Speed-up vs TorchScript"), ("speedup", "Speed-up vs eager"),
    ("avg_mel_frames", "Avg mel-spec length"), ("avg_audio_s", "Avg audio length (s)"),
    ("rtf_stream", "RTF/stream"), ("rtf_aggregate", "RTF aggregate"), ("us_per_step", "us/decoder step"),
]


def build_parser() -> argparse.ArgumentParser:
    p = new_parser(
        PROG, "Benchmark the TTS pipeline per component and end to end: "
        "fast engines against the eager PyTorch baseline, measured in the same run.")
    add_voice_arguments(p)
    p.set_defaults(device=None, precision=None)
    g = p.add_argument_group("benchmark")
    g.add_argument("--batch", type=positive_int, default=1, help="utterances per batch (default: 1)")
    g.add_argument("--input-length", type=positive_int, default=128, help="characters per utterance (default: 128)")
    g.add_argument("--acoustic", choices=["tacotron2", "fastspeech"], default=None,
                   help="acoustic model of the random-weight models (default: tacotron2, or the voice's)")
    g.add_argument("--num-frames", type=positive_int, default=None,
                   help="decode exactly this many Tacotron2 steps (default: 580 for random weights; "
                        "with checkpoints the stop gate decides)")
    g.add_argument("--stop-rule", choices=["gate", "attention"], default="gate",
                   help="Tacotron2 stop rule of the engine and eager runs (default: gate, NVIDIA's, as the "
                        "TorchScript baseline runs; attention: the voices' default, its per-step work included)")
    g.add_argument("--warmup", type=int, default=2, help="unmeasured runs first (default: 2)")
    g.add_argument("--repeats", type=positive_int, default=10, help="measured runs (default: 10)")
    g.add_argument("--walk", action="store_true",
                   help=f"sweep batch {','.join(map(str, WALK_BATCHES))} x input length "
                        f"{','.join(map(str, WALK_LENGTHS))}")
    g.add_argument("--output", metavar="FILE", help="write results as JSON to FILE and as CSV beside it")
    g.add_argument("--verify", action="store_true",
                   help="max abs error of every engine against the fp32 eager reference (dropout 0, sigma 0)")
    g.add_argument("--plot", metavar="FILE.png", help="latency distribution per backend (needs matplotlib)")
    g.add_argument("--vocoder", choices=["waveglow", "hifigan"], default=None,
                   help="vocoder of the random-weight models (default: waveglow); with checkpoints, "
                        "--waveglow or --hifigan picks it")
    g.add_argument("--size", choices=["ngc", "bundled", "tiny"], default="ngc",
                   help="size of the random-weight models: ngc (NVIDIA's published sizes, the default), "
                        "bundled (the bundled voice's sizes, tts.train.tasks.MODEL_CONFIGS) or tiny (CI)")
    g.add_argument("--backend", choices=["auto", "triton", "torch"], default="auto",
                   help="Tacotron2 decoder step: fused Triton kernels or PyTorch ops (default: auto)")
    g.add_argument("--steps-per-replay", type=positive_int, default=16,
                   help="Tacotron2 decoder steps per CUDA-graph replay (even; default: 16)")
    g.add_argument("--baseline", choices=["both", "torchscript", "eager", "none"], default="both",
                   help="baselines measured beside the engines: torchscript (DLE inference.py: torch.jit.script "
                        "of Tacotron2 and WaveGlow), eager, both (default) or none; FastSpeech has no "
                        "TorchScript baseline (DLE's does not script it)")
    g.add_argument("--eager-fp16", choices=["half", "autocast"], default="half",
                   help="how the baselines run fp16 Tacotron2/FastSpeech: half (model.half(), as DLE's "
                        "inference.py; default) or autocast (fp32 weights under torch.autocast)")
    g.add_argument("--no-eager", action="store_true", help="skip the eager baseline (same as --baseline torchscript)")
    g.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
    g.add_argument("--server", metavar="HOST:PORT",
                   help="benchmark a running tts-server instead (see tts-bench --server X --help)")
    add_threads_argument(g)
    return p


# ----------------------------------------------------------------------------- models

@dataclass
class Models:
    kind: str
    acoustic: Any
    vocoder: Any
    denoiser: Any
    frontend: str
    sample_rate: int
    random: bool
    engines: dict[str, Any] = field(default_factory=dict)


def tiny_configs():
    from tts.models.fastspeech import FastSpeechConfig
    from tts.models.tacotron2 import Tacotron2Config
    from tts.models.waveglow import WaveGlowConfig
    t2 = Tacotron2Config(symbols_embedding_dim=32, encoder_embedding_dim=32, attention_rnn_dim=48,
                         attention_dim=16, attention_location_n_filters=4, decoder_rnn_dim=48,
                         prenet_dim=32, postnet_embedding_dim=32, postnet_n_convolutions=3)
    wg = WaveGlowConfig(n_flows=4, n_early_every=2, WN_config={"n_layers": 2, "n_channels": 16})
    fs = FastSpeechConfig(max_seq_len=2048, d_model=64, phoneme_side_n_layer=1, phoneme_side_head=1,
                          phoneme_side_conv1d_filter_size=64, phoneme_side_output_size=64, mel_side_n_layer=1,
                          mel_side_head=1, mel_side_conv1d_filter_size=64, mel_side_output_size=64,
                          duration_predictor_filter_size=32)
    return t2, wg, fs


def bundled_configs():
    """The bundled voice's architecture (what ``recipes/bundled_voice`` trains)."""
    import copy as _copy

    from tts.models.fastspeech import FastSpeechConfig
    from tts.models.tacotron2 import Tacotron2Config
    from tts.models.waveglow import WaveGlowConfig
    from tts.train.tasks import MODEL_CONFIGS
    c = _copy.deepcopy(MODEL_CONFIGS)
    return (Tacotron2Config(**c["tacotron2"]), WaveGlowConfig.from_dict(c["waveglow"]),
            FastSpeechConfig(**c["fastspeech"]))


def random_models(kind: str, size: str, seed: int, vocoder: str = "waveglow"):
    """Random-weight models: NVIDIA's sizes (NGC Tacotron2, waveglow256 or DLE's default HiFi-GAN,
    FastSpeech base), bundled or tiny. Returns (acoustic, vocoder, denoiser)."""
    import torch

    from tts.models.denoiser import Denoiser
    from tts.models.fastspeech import FastSpeech, FastSpeechConfig
    from tts.models.hifigan import HiFiGAN, HiFiGANConfig, HiFiGANDenoiser
    from tts.models.tacotron2 import Tacotron2, Tacotron2Config
    from tts.models.waveglow import WaveGlow, WaveGlowConfig
    torch.manual_seed(seed)
    if size == "tiny":
        t2c, wgc, fsc = tiny_configs()
    elif size == "bundled":
        t2c, wgc, fsc = bundled_configs()
    else:
        t2c, wgc, fsc = Tacotron2Config(), WaveGlowConfig(), FastSpeechConfig()
    acoustic = (Tacotron2(t2c) if kind == "tacotron2" else FastSpeech(fsc)).eval()
    if kind == "fastspeech":
        with torch.no_grad():   # durations of a few frames per symbol, as a trained model predicts
            lin = acoustic.length_regulator.duration_predictor.linear_layer
            lin.weight.mul_(0.01)
            lin.bias.fill_(1.5)
    if vocoder == "hifigan":
        hgc = (HiFiGANConfig(upsample_initial_channel=32, resblock_kernel_sizes=(3, 5),
                             resblock_dilation_sizes=((1, 3, 5), (1, 3, 5))) if size == "tiny" else HiFiGANConfig())
        hg = HiFiGAN(hgc).remove_weight_norm().eval()
        return acoustic, hg, HiFiGANDenoiser(hg).eval()
    wg = WaveGlow(wgc).eval()
    with torch.no_grad():       # DLE zeroes `end` (identity couplings): make them do something
        for wn in wg.WN:
            wn.end.weight.normal_(0.0, 0.02)
            wn.end.bias.normal_(0.0, 0.02)
    wg.remove_weight_norm()
    return acoustic, wg, Denoiser(wg).eval()


def load_models(args) -> Models:
    from tts.cli.common import voice_from_args
    from tts.errors import InvalidInputError
    if args.tacotron2 or args.fastspeech or args.voice or args.waveglow or getattr(args, "hifigan", None):
        if args.vocoder:
            raise InvalidInputError("--vocoder picks the random-weight models' vocoder; with checkpoints, "
                                    "--waveglow or --hifigan does", field="vocoder")
        v = voice_from_args(args)
        return Models(v.acoustic_kind, v.acoustic, v.vocoder, v.denoiser, v.frontend, v.sample_rate, False)
    kind = args.acoustic or "tacotron2"
    acoustic, voc, den = random_models(kind, args.size, args.seed, args.vocoder or "waveglow")
    return Models(kind, acoustic, voc, den, kind, 22050, True)


# ----------------------------------------------------------------------------- pipelines

#: The baselines of ``--baseline``, in measuring order.
BASELINES = {"both": ("eager", "torchscript"), "eager": ("eager",), "torchscript": ("torchscript",), "none": ()}


class Pipeline:
    """One backend's executors of every stage, on one device and precision.

    ``eager``: this package's modules as they are; ``torchscript``: the same modules (copies) in
    the TorchScript wrappers of ``tts.models.scripted``, compiled by ``torch.jit.script`` as DLE's
    ``inference.py`` does; ``engine``: the engines of ``tts.engines``. At fp16 both baselines cast
    Tacotron2/FastSpeech and WaveGlow with ``.half()`` (``eager_fp16="half"``, DLE's way; or keep
    fp32 weights under autocast) and run the denoiser in float32 on ``audio.float()``.
    """

    def __init__(self, name: str, models: Models, device, precision: str, args) -> None:
        import torch

        from tts.voice import vocoder_kind
        self.name, self.device, self.precision = name, device, precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.kind = models.kind
        self.frontend = models.frontend
        self.scripted_vocoder = False
        self.vocoder_stage = vocoder_kind(models.vocoder)      # the vocoder's component name
        self.stop_rule = getattr(args, "stop_rule", "gate")
        acoustic = copy.deepcopy(models.acoustic).to(device).eval()
        vocoder = copy.deepcopy(models.vocoder).to(device).eval()
        if name in ("eager", "torchscript"):
            half = precision == "fp16" and getattr(args, "eager_fp16", "half") == "half"
            self.acoustic = acoustic.to(self.dtype) if half else acoustic
            self.autocast = precision == "fp16" and not half
            self.vocoder = vocoder.to(self.dtype)
            self.denoiser = copy.deepcopy(models.denoiser).to(device).float().eval()
            if name == "torchscript":
                self._script(models)
        else:
            from tts.engines.waveglow import DenoiserEngine, WaveGlowEngine
            if self.kind == "tacotron2":
                from tts.engines.tacotron2 import Tacotron2Engine
                self.acoustic = Tacotron2Engine(acoustic, device=device, precision=precision,
                                                backend=args.backend, steps_per_replay=args.steps_per_replay)
            else:
                from tts.engines.fastspeech import FastSpeechEngine
                self.acoustic = FastSpeechEngine(acoustic, device=device, precision=precision)
            from tts.models.griffinlim import GriffinLim
            from tts.models.hifigan import HiFiGAN
            if isinstance(vocoder, GriffinLim):      # FFTs: no engine, the same module on both sides
                self.vocoder = vocoder
                self.denoiser = copy.deepcopy(models.denoiser).to(device).eval()
            elif isinstance(vocoder, HiFiGAN):
                from tts.engines.hifigan import HiFiGANEngine
                self.vocoder = HiFiGANEngine(vocoder, device=device, precision=precision)
                self.denoiser = DenoiserEngine(copy.deepcopy(models.denoiser), device=device)
            else:
                self.vocoder = WaveGlowEngine(vocoder, device=device, precision=precision)
                self.denoiser = DenoiserEngine(copy.deepcopy(models.denoiser), device=device)
            self.autocast = False

    def _script(self, models: Models) -> None:
        """Tacotron2 and WaveGlow through ``torch.jit.script`` (DLE Tacotron2's ``inference.py``); other
        vocoders stay eager: HiFi-GAN as DLE HiFiGAN's ``inference.py`` runs it by default (without
        ``--torchscript``), Griffin-Lim has no TorchScript path. ``collect.py`` gives the HiFi-GAN
        figure the eager baseline only."""
        from tts.errors import InvalidInputError
        from tts.models.scripted import script_tacotron2, script_waveglow
        from tts.models.waveglow import WaveGlow
        if self.kind != "tacotron2":
            raise InvalidInputError("the torchscript baseline is Tacotron2's (DLE's FastSpeech has no TorchScript "
                                    "path; its baseline is eager): use --baseline eager", field="baseline")
        cfg = self.acoustic.config
        self.t2_defaults = (cfg.max_decoder_steps, not cfg.decoder_no_early_stopping)
        self.acoustic = script_tacotron2(self.acoustic)
        if isinstance(self.vocoder, WaveGlow):
            if self.vocoder.has_weight_norm:
                self.vocoder.remove_weight_norm()
            self.vocoder = script_waveglow(self.vocoder)
            self.scripted_vocoder = True

    def sync(self) -> None:
        import torch
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def ctx(self):
        import contextlib

        import torch
        if self.autocast:
            return torch.autocast(self.device.type, dtype=torch.float16)
        return contextlib.nullcontext()

    def grad_ctx(self):
        """``torch.no_grad()`` for TorchScript (as DLE calls it), else ``torch.inference_mode()``."""
        import torch
        return torch.no_grad() if self.name == "torchscript" else torch.inference_mode()

    def vocode(self, mel, sigma: float):
        if self.scripted_vocoder:
            return self.vocoder(mel, float(sigma))
        return self.vocoder.infer(mel, sigma=sigma)

    def run(self, texts: list[str], num_frames: int | None, *, dropout: float = 0.5, sigma: float = SIGMA,
            strength: float = DENOISER_STRENGTH) -> tuple[dict[str, float], dict[str, Any]]:
        """One pass over the stages; each stage timed with the device synchronised at its ends."""
        import torch

        from tts.text import encode
        t: dict[str, float] = {}
        out: dict[str, Any] = {}
        with self.grad_ctx():
            self.sync()
            t0 = time.perf_counter()
            seqs = [list(encode(x, self.frontend).ids) for x in texts]
            longest = max(len(s) for s in seqs)
            ids = torch.zeros(len(seqs), longest, dtype=torch.long)
            for i, s in enumerate(seqs):
                ids[i, :len(s)] = torch.tensor(s)
            lengths = torch.tensor([len(s) for s in seqs])
            ids, lengths = ids.to(self.device), lengths.to(self.device)
            t["text"] = self._lap(t0)
            with self.ctx():
                if self.kind == "tacotron2":
                    mel, frames = self._tacotron2(ids, lengths, num_frames, dropout, t, out)
                else:
                    t0 = time.perf_counter()
                    fs = self.acoustic.infer(ids, alpha=1.0)
                    mel = fs.mel.transpose(1, 2)
                    frames = fs.mel_lengths.float()
                    t["fastspeech"] = self._lap(t0)
            t0 = time.perf_counter()
            audio = self.vocode(mel.to(self.dtype), sigma)
            t[self.vocoder_stage] = self._lap(t0)
            t0 = time.perf_counter()
            den = self.denoiser(audio.float(), strength=strength)
            t["denoiser"] = self._lap(t0)
        t["end to end"] = sum(t.values())
        out.update(mel=mel, audio=den.reshape(den.shape[0], -1), frames=frames)
        return t, out

    def _tacotron2(self, ids, lengths, num_frames, dropout, t, out):
        forced = num_frames is not None
        a = self.acoustic
        if self.name == "torchscript":   # the scripted model's settings, as DLE's config sets them
            a.max_decoder_steps = int(num_frames) if forced else int(self.t2_defaults[0])
            a.early_stopping = False if forced else bool(self.t2_defaults[1])
            a.prenet_dropout = float(dropout)
        t0 = time.perf_counter()
        enc = a.encode(ids, lengths)
        t["encoder"] = self._lap(t0)
        t0 = time.perf_counter()
        kw = dict(max_decoder_steps=num_frames, prenet_dropout=dropout,
                  early_stopping=False if forced else None, stop_rule=self.stop_rule)
        if self.name == "torchscript":
            dec_mel, _, _, dec_lengths = a.decode(enc, lengths)
        else:
            dec = a.decoder.infer(enc, lengths, **kw) if self.name == "eager" else a.decode(enc, lengths, **kw)
            dec_mel, dec_lengths = dec.mel, dec.mel_lengths
        t["decoder"] = self._lap(t0)
        out["steps"] = dec_mel.shape[-1]
        t0 = time.perf_counter()
        if self.name == "torchscript":
            mel = a.postnet(dec_mel)
        else:
            mel = a.postnet_forward(dec_mel.to(enc.dtype))
        t["postnet"] = self._lap(t0)
        return mel, (dec_lengths.float() if not forced else dec_lengths.float() * 0 + dec_mel.shape[-1])

    def _lap(self, t0: float) -> float:
        self.sync()
        return time.perf_counter() - t0


def make_texts(n: int, length: int) -> list[str]:
    base = (TEXT * (length // len(TEXT) + 2))
    text = base[:length]
    return [text.rstrip() or "a" for _ in range(n)]


# ----------------------------------------------------------------------------- measuring

def measure(pipes: dict[str, Pipeline], args, batch: int, length: int, num_frames: int | None,
            sample_rate: int) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    from tts.report import LatencyStats
    texts = make_texts(batch, length)
    raw: dict[str, dict[str, list[float]]] = {}
    info: dict[str, dict[str, float]] = {}
    for name, pipe in pipes.items():
        times: dict[str, list[float]] = {}
        frames = steps = 0.0
        for r in range(args.warmup + args.repeats):
            t, out = pipe.run(texts, num_frames)
            if r < args.warmup:
                continue
            for k, v in t.items():
                times.setdefault(k, []).append(v)
            frames += float(out["frames"].mean())
            steps += float(out.get("steps", 0))
        raw[name] = times
        info[name] = {"frames": frames / args.repeats, "steps": steps / args.repeats}
    rows = []
    for name, times in raw.items():
        frames = info[name]["frames"]
        audio_s = frames * HOP / sample_rate
        for comp, ts in times.items():
            st = LatencyStats.of(ts)
            ms = st.as_ms()
            row = {"component": comp, "backend": name, "batch": batch, "input_length": length,
                   "precision": pipes[name].precision, "avg_ms": ms["mean"], "std_ms": ms["std"],
                   "p50_ms": ms["p50"], "p90_ms": ms["p90"], "p95_ms": ms["p95"], "p99_ms": ms["p99"],
                   "samples_per_s": batch * frames * HOP / st.mean if st.mean else 0.0,
                   "avg_mel_frames": frames, "avg_audio_s": audio_s,
                   "rtf_stream": audio_s / st.mean if st.mean else 0.0,
                   "rtf_aggregate": batch * audio_s / st.mean if st.mean else 0.0, "speedup": "",
                   "speedup_torchscript": ""}
            if comp == "decoder" and info[name]["steps"]:
                row["us_per_step"] = st.mean / info[name]["steps"] * 1e6
            for base_name, key in (("eager", "speedup"), ("torchscript", "speedup_torchscript")):
                if base_name in raw and name not in ("eager", base_name) and comp in raw[base_name]:
                    base = LatencyStats.of(raw[base_name][comp]).mean
                    row[key] = base / st.mean if st.mean else 0.0
            rows.append(row)
    e2e = {name: times["end to end"] for name, times in raw.items()}
    return rows, e2e


def verify(models: Models, args, device, num_frames: int | None) -> list[dict[str, Any]]:
    """Engines at fp32 and at the chosen precision against the fp32 eager reference."""
    import torch

    from tts.engines.precision import set_float32_math
    set_float32_math("fp32", device)
    texts = make_texts(args.batch, args.input_length)
    frames = num_frames or 200
    ref = Pipeline("eager", models, device, "fp32", args)
    _, r = ref.run(texts, frames, dropout=0.0, sigma=0.0)
    _, rv = ref.run(texts, frames, dropout=0.0, sigma=0.0)   # the reference run twice: its own spread
    precisions = ["fp32"] + (["fp16"] if device.type == "cuda" else [])
    rows = []
    for prec in precisions:
        eng = Pipeline("engine", models, device, prec, args)
        _, o = eng.run(texts, frames, dropout=0.0, sigma=0.0)
        nt = min(o["mel"].shape[-1], r["mel"].shape[-1])   # FastSpeech: durations may round apart
        mel_err = float((o["mel"][..., :nt].float() - r["mel"][..., :nt].float()).abs().max())
        n = min(o["audio"].shape[-1], r["audio"].shape[-1])
        a, ra = o["audio"][:, :n].float(), r["audio"][:, :n].float()
        snr = 10 * torch.log10(ra.pow(2).sum() / (a - ra).pow(2).sum().clamp_min(1e-30))
        voc = eng.vocoder.infer(r["mel"].to(eng.dtype), sigma=0.0).float()
        rvoc = ref.vocoder.infer(r["mel"].float(), sigma=0.0).float()
        vsnr = 10 * torch.log10(rvoc.pow(2).sum() / (voc - rvoc).pow(2).sum().clamp_min(1e-30))
        limit = 1e-3 if prec == "fp32" else 0.05
        rows.append({"engine_precision": prec, "acoustic": models.kind, "mel_max_abs_err": mel_err,
                     "mel_limit": limit, "audio_snr_db": float(snr), "vocoder_only_snr_db": float(vsnr),
                     "mel_frames": [int(o["mel"].shape[-1]), int(r["mel"].shape[-1])],
                     "mel_ok": mel_err <= limit, "audio_ok": float(snr) >= 30.0,
                     "reference_self_err": float((rv["mel"] - r["mel"]).abs().max())})
    return rows


def verify_baselines(models: Models, args, device, num_frames: int | None) -> list[dict[str, Any]]:
    """The TorchScript baseline against the eager one: same models, same seed before each run
    (prenet dropout 0.5 and WaveGlow noise at sigma 0.6 drawn in the same order), at fp32 (and at
    fp16 on CUDA). Max abs differences of the mel and of the denoised audio."""
    import torch
    texts = make_texts(args.batch, args.input_length)
    frames = num_frames or 200
    rows = []
    for prec in ["fp32"] + (["fp16"] if device.type == "cuda" else []):
        outs = []
        for name in ("eager", "torchscript"):
            pipe = Pipeline(name, models, device, prec, args)
            for _ in range(3):   # TorchScript profiles, then optimises: compare an optimised run
                torch.manual_seed(args.seed)
                _, o = pipe.run(texts, frames)
            outs.append(o)
        e, s = outs
        limit = 1e-5 if device.type == "cpu" and prec == "fp32" else (1e-3 if prec == "fp32" else 0.05)
        mel = float((s["mel"].float() - e["mel"].float()).abs().max())
        audio = float((s["audio"].float() - e["audio"].float()).abs().max())
        rows.append({"precision": prec, "mel_max_abs_diff": mel, "audio_max_abs_diff": audio, "limit": limit,
                     "ok": mel <= limit, "audio_max_abs": float(e["audio"].float().abs().max())})
    return rows


# ----------------------------------------------------------------------------- output

def format_rows(rows: list[dict[str, Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)
    body = [[cell(r.get(k, "")) for k, _ in COLUMNS] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, (_, h) in enumerate(COLUMNS)]
    lines = ["  ".join(h.ljust(w) for (_, h), w in zip(COLUMNS, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def speedup_lines(rows: list[dict[str, Any]]) -> str:
    """One line per shape: the engines' end-to-end time against each baseline of the run."""
    by = {(r["backend"], r["batch"], r["input_length"]): r for r in rows if r["component"] == "end to end"}
    lines = []
    for (backend, b, n), r in by.items():
        if backend != "engine":
            continue
        parts = [f"end to end, batch {b}, {n} characters: engines {r['avg_ms']:.3g} ms"]
        for base, key in (("torchscript", "speedup_torchscript"), ("eager", "speedup")):
            if (base, b, n) in by and isinstance(r.get(key), float):
                parts.append(f"{r[key]:.3g}x vs {'TorchScript' if base == 'torchscript' else 'eager'} "
                             f"({by[(base, b, n)]['avg_ms']:.3g} ms)")
        lines.append(", ".join(parts))
    return "\n".join(lines)


def write_outputs(path: str, result: dict[str, Any]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    with open(p.with_suffix(".csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=[k for k, _ in COLUMNS], extrasaction="ignore")
        w.writeheader()
        w.writerows(result["rows"])


def plot(path: str, latencies: dict[str, list[float]], title: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from tts.errors import TTSError
        raise TTSError("--plot needs matplotlib (pip install matplotlib)") from None
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, ts in latencies.items():
        ax.hist([t * 1000 for t in ts], bins=30, alpha=0.6, label=name)
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_ylabel("runs")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


# ----------------------------------------------------------------------------- main

def _server(argv: list[str]) -> int:
    try:
        from tts.cli import bench_server
    except ImportError as exc:
        print(f"{PROG}: error: --server needs tts.cli.bench_server, which is not available ({exc})",
              file=sys.stderr)
        return 1
    from tts.cli.common import new_parser
    p = new_parser(f"{PROG} --server", bench_server.__doc__.split("\n\n")[0])
    bench_server.add_arguments(p)
    args = p.parse_args(argv)
    return run_main(PROG, lambda: bench_server.run(args))


def _body(args) -> int:
    apply_threads(args.threads)       # before torch is imported
    import torch

    from tts.errors import InvalidInputError
    from tts.report import environment
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("--device cuda was asked for, but no CUDA GPU is available here", field="device")
    precision = args.precision or ("fp16" if device.type == "cuda" else "fp32")
    if precision in ("fp16", "tf32") and device.type != "cuda":
        raise InvalidInputError(f"--precision {precision} needs a CUDA device", field="precision")
    if args.steps_per_replay % 2:
        raise InvalidInputError("--steps-per-replay must be even", field="steps_per_replay")
    if args.warmup < 0:
        raise InvalidInputError("--warmup must be >= 0", field="warmup")
    models = load_models(args)
    num_frames = args.num_frames if args.num_frames is not None else (580 if models.random else None)
    if num_frames is not None:   # forced length: "the gate never fired" is expected, not news
        logging.getLogger("tts.models.tacotron2").setLevel(logging.ERROR)
    if models.kind == "tacotron2" and models.random and args.size == "tiny" and args.num_frames is None:
        num_frames = 40
    from tts.engines.precision import set_float32_math
    math_mode = set_float32_math(precision, device)   # fp32: IEEE everywhere; the baselines share it
    baselines = [b for b in BASELINES[args.baseline] if not (b == "eager" and args.no_eager)]
    if models.kind != "tacotron2" and "torchscript" in baselines:
        baselines.remove("torchscript")
        print(f"{PROG}: no TorchScript baseline for {models.kind} (DLE does not script it): eager only",
              file=sys.stderr)
    pipes: dict[str, Pipeline] = {}
    for name in baselines:
        pipes[name] = Pipeline(name, models, device, precision, args)
    pipes["engine"] = Pipeline("engine", models, device, precision, args)
    grid = [(b, n) for b in WALK_BATCHES for n in WALK_LENGTHS] if args.walk else [(args.batch, args.input_length)]
    rows: list[dict[str, Any]] = []
    latencies: dict[str, list[float]] = {}
    for b, n in grid:
        r, e2e = measure(pipes, args, b, n, num_frames, models.sample_rate)
        rows += r
        for k, v in e2e.items():
            latencies.setdefault(f"{k} b{b} n{n}", []).extend(v)
        if args.walk:
            print(f"{PROG}: batch {b} input {n}: " + ", ".join(
                f"{x['backend']} {x['avg_ms']:.1f} ms" for x in r if x["component"] == "end to end"),
                file=sys.stderr, flush=True)
    shown = [r for r in rows if r["component"] == "end to end"] if args.walk else rows
    print(format_rows(shown))
    print(speedup_lines(rows))
    result: dict[str, Any] = {"environment": environment(device), "command": " ".join(sys.argv),
                              "acoustic": models.kind, "vocoder": pipes["engine"].vocoder_stage,
                              "random_weights": models.random, "size": args.size,
                              "num_frames": num_frames, "precision": precision, "baselines": baselines,
                              "baseline_fp16": args.eager_fp16 if precision == "fp16" else None,
                              "float32_math": math_mode,
                              "stop_rule": args.stop_rule if models.kind == "tacotron2" else None, "rows": rows}
    if args.verify:
        result["verify"] = verify(models, args, device, num_frames)
        print()
        for v in result["verify"]:
            print(f"verify {v['engine_precision']} engine vs fp32 eager: mel max abs err {v['mel_max_abs_err']:.3g} "
                  f"(limit {v['mel_limit']:g}: {'ok' if v['mel_ok'] else 'FAIL'}), audio SNR "
                  f"{v['audio_snr_db']:.1f} dB ({'ok' if v['audio_ok'] else 'FAIL'}), vocoder alone "
                  f"{v['vocoder_only_snr_db']:.1f} dB")
        if "torchscript" in baselines:
            result["verify_baselines"] = verify_baselines(models, args, device, num_frames)
            for v in result["verify_baselines"]:
                print(f"verify {v['precision']} torchscript vs eager (same seed): mel max abs diff "
                      f"{v['mel_max_abs_diff']:.3g} (limit {v['limit']:g}: {'ok' if v['ok'] else 'FAIL'}), audio "
                      f"{v['audio_max_abs_diff']:.3g}")
    if args.output:
        write_outputs(args.output, result)
    if args.plot:
        plot(args.plot, latencies, f"{models.kind}, {precision}, {device}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a == "--server" or a.startswith("--server=") for a in argv):
        return _server(argv)
    args = build_parser().parse_args(argv)
    return run_main(PROG, lambda: _body(args))


if __name__ == "__main__":
    sys.exit(main())
