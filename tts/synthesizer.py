"""Text in, audio out, for one or many utterances.

The synthesizer owns batching for the CLI (the server's scheduler reuses it),
splits long text into pieces the acoustic model handles, and times every
stage. Data flow of one call::

    texts -> tts.text ids (pieces) -> acoustic model -> mel [B, n_mel, T]
          -> WaveGlow -> audio [B, 256*T] -> denoiser -> float32 audio per text

Timings of a call are wall-clock seconds per stage with the device
synchronised at each stage boundary; every result of one call carries that
call's timings (the latency of its batch).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tts.errors import InvalidInputError
from tts.options import REFERENCE_DEFAULTS, SynthesisOptions
from tts.voice import Voice

logger = logging.getLogger(__name__)

__all__ = ["SynthesisOptions", "StageTimings", "SynthesisResult", "AcousticResult", "Synthesizer", "PRECISIONS",
           "REFERENCE_DEFAULTS"]

PRECISIONS = ("fp32", "fp16")

#: "auto": the fast engines of ``tts.engines`` on CUDA; on CPU the WaveGlow engine and eager modules
#: for the rest; "eager": always eager.
ENGINES = ("auto", "eager")

#: log(1e-5): the mel value of silence, used to pad mels of different lengths in one vocoder batch.
MEL_SILENCE = math.log(1e-5)

HOP = 256


@dataclass
class StageTimings:
    """Seconds spent per stage (for one call; shared by the results of a batch)."""

    text: float = 0.0
    acoustic: float = 0.0
    vocoder: float = 0.0
    denoiser: float = 0.0
    total: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"text": self.text, "acoustic": self.acoustic, "vocoder": self.vocoder,
                "denoiser": self.denoiser, "total": self.total}


@dataclass
class SynthesisResult:
    """One utterance's audio and what was spoken."""

    #: The input text.
    text: str
    #: The cleaned text actually spoken (pieces joined by a space).
    normalized_text: str
    #: float32 [N] audio, not normalised.
    audio: np.ndarray
    sample_rate: int
    #: float32 [n_mel, T] post-net mel of all pieces, concatenated in time.
    mel: np.ndarray
    timings: StageTimings
    #: Characters of the input that have no symbol and were not spoken.
    dropped: str = ""
    #: Number of pieces the text was split into.
    pieces: int = 1
    #: Pieces that hit max_decoder_steps before the stop gate fired.
    hit_max_steps: int = 0

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / float(self.sample_rate)


@dataclass
class AcousticResult:
    """The acoustic stage's output for one text: its pieces' mels, before the vocoder."""

    #: Per piece, in order: (mel float32 [n_mel, T] on the synthesizer's device, audio samples it yields).
    pieces: list[tuple[torch.Tensor, int]]
    #: The cleaned text spoken (pieces joined by a space).
    normalized_text: str
    #: Characters of the input that have no symbol and were not spoken.
    dropped: str = ""


@dataclass
class _Piece:
    utt: int
    key: tuple[int, ...]                 # order of the piece within its utterance
    text: str
    ids: list[int]
    mel: torch.Tensor | None = None      # [n_mel, T_keep] on device
    audio_len: int = 0
    audio: torch.Tensor | None = None    # [N] float32
    hit_max: bool = False


@dataclass
class _Plan:
    texts: list[str]
    pieces: list[_Piece] = field(default_factory=list)
    cleaned: list[list[str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


class Synthesizer:
    """Runs a Voice on a device.

    ``device``: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. ``precision``: ``fp32``,
    or ``fp16`` (CUDA only: WaveGlow in half, acoustic model under autocast,
    denoiser in float32 as NVIDIA's inference.py does). ``max_batch``: most
    text pieces per acoustic/vocoder batch. ``max_text_chars``: longest text
    accepted. ``max_piece_chars``: longer text is split into pieces of at most
    this many characters at sentence, then clause, then word boundaries.
    """

    def __init__(self, voice: Voice, *, device: str = "cpu", precision: str = "fp32",
                 max_batch: int = 8, max_text_chars: int = 20_000, max_piece_chars: int = 256,
                 engine: str = "auto", engine_cache: Any = "auto") -> None:
        if engine not in ENGINES:
            raise InvalidInputError(f"engine must be one of {list(ENGINES)}, got {engine!r}", field="engine")
        if precision not in PRECISIONS:
            raise InvalidInputError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}",
                                    field="precision")
        self.device = _resolve_device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise InvalidInputError("precision fp16 needs a CUDA device (use --device cuda or fp32)",
                                    field="precision")
        for name, value, lo in (("max_batch", max_batch, 1), ("max_text_chars", max_text_chars, 1),
                                ("max_piece_chars", max_piece_chars, 16)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise InvalidInputError(f"{name} must be an integer >= {lo}, got {value!r}", field=name)
        self.voice = voice
        self.precision = precision
        self.max_batch = max_batch
        self.max_text_chars = max_text_chars
        self.max_piece_chars = max_piece_chars
        self.sample_rate = voice.sample_rate
        # The voice's modules stay on the CPU in float32; this synthesizer works on its own copies
        # where it needs another device or dtype (several synthesizers may share one voice).
        self._acoustic = self._placed(voice.acoustic)
        self._denoiser = self._placed(voice.denoiser)        # built from the fp32 vocoder
        vocoder = self._placed(voice.vocoder)
        self._vocoder = vocoder.half() if precision == "fp16" else vocoder
        self.engine = "eager" if engine == "eager" or self.device.type == "cpu" else "fast"
        if self.engine == "fast":
            from tts.engines import make_engine
            kw = {"device": self.device, "precision": precision, "cache": engine_cache}
            self._acoustic = make_engine(voice.acoustic_kind, self._acoustic, **kw)
            self._vocoder = make_engine("waveglow", self._vocoder, **kw)
            self._denoiser = make_engine("denoiser", self._denoiser, **kw)
        elif engine == "auto" and voice.vocoder_kind == "waveglow":     # Griffin-Lim has no engine
            # CPU: the vocoder is most of the time; its engine (channels-last GEMMs, composed
            # conditioning, folded weights) is the eager maths within 1e-5, drawing the same noise.
            from tts.engines.waveglow import WaveGlowEngine
            self._vocoder = WaveGlowEngine(self._vocoder, device=self.device, precision=precision)

    # ------------------------------------------------------------------ public

    def check_text(self, text: object) -> None:
        """Raise InvalidInputError(field="text") for text this synthesizer will not speak."""
        self._check_shape(text)
        self._plan([text])

    def _check_shape(self, text: object) -> None:
        if not isinstance(text, str):
            raise InvalidInputError(f"text must be a string, got {type(text).__name__}", field="text")
        if not text.strip():
            raise InvalidInputError("text is empty", field="text")
        if len(text) > self.max_text_chars:
            raise InvalidInputError(f"text is {len(text)} characters long; the maximum is "
                                    f"{self.max_text_chars}", field="text")

    def synthesize(self, text: str, options: SynthesisOptions | None = None) -> SynthesisResult:
        """One text -> one result."""
        return self.synthesize_batch([text], options)[0]

    def synthesize_batch(self, texts: Sequence[str], options: SynthesisOptions | None = None
                         ) -> list[SynthesisResult]:
        """Several texts with the same options -> one result each, in order.

        Every text is validated before any work is done, so a bad text fails
        the call without partial results.
        """
        if isinstance(texts, str):
            raise InvalidInputError("texts must be a list of strings, not one string", field="text")
        if not texts:
            return []
        opts = (options or SynthesisOptions()).merged_over(self.voice.defaults)
        for t in texts:
            self._check_shape(t)
        timings = StageTimings()
        start = time.perf_counter()
        with torch.inference_mode():
            plan = self._plan(list(texts))
            t1 = self._now()
            timings.text = t1 - start
            generator = self._generator(opts.seed)
            plan.pieces = self._run_acoustic(plan.pieces, opts, generator)
            t2 = self._now()
            timings.acoustic = t2 - t1
            self._run_vocoder(plan.pieces, opts, generator)
            t3 = self._now()
            timings.vocoder = t3 - t2
            self._run_denoiser(plan.pieces, opts)
            results = self._collect(plan, timings)
            t4 = self._now()
            timings.denoiser = t4 - t3
            timings.total = t4 - start
        return results

    def acoustic(self, texts: Sequence[str], options: SynthesisOptions | None = None) -> list[AcousticResult]:
        """Only the text and acoustic stages (for callers that vocode themselves, e.g. streaming).

        The mels are exactly those ``synthesize_batch`` vocodes for the same texts and options.
        """
        opts = (options or SynthesisOptions()).merged_over(self.voice.defaults)
        for t in texts:
            self._check_shape(t)
        with torch.inference_mode():
            plan = self._plan(list(texts))
            plan.pieces = self._run_acoustic(plan.pieces, opts, self._generator(opts.seed))
        per_utt: list[list[tuple[torch.Tensor, int]]] = [[] for _ in texts]
        for p in sorted(plan.pieces, key=lambda p: p.key):
            per_utt[p.utt].append((p.mel, p.audio_len))
        return [AcousticResult(pieces, " ".join(plan.cleaned[i]), plan.dropped[i])
                for i, pieces in enumerate(per_utt)]

    @property
    def acoustic_module(self):
        """The acoustic executor on this synthesizer's device (an engine on CUDA, else the eager module)."""
        return self._acoustic

    @property
    def vocoder_module(self):
        """The WaveGlow executor on this synthesizer's device: ``infer(mel, sigma, generator=)``."""
        return self._vocoder

    @property
    def denoiser_module(self):
        """The denoiser executor on this synthesizer's device: ``(audio [B, N], strength) -> [B, 1, N]``."""
        return self._denoiser

    @property
    def vocoder_dtype(self) -> torch.dtype:
        """The dtype the vocoder takes its mel in."""
        return torch.float16 if self.precision == "fp16" else torch.float32

    # ---------------------------------------------------------------- stages

    def _split(self, text: str) -> list[str]:
        if len(text) <= self.max_piece_chars:
            return [text.strip()]
        from tts.text import split_text
        return split_text(text, self.max_piece_chars)

    def _encode(self, piece: str) -> tuple[list[int], str, str]:
        from tts.text import encode
        enc = encode(piece, self.voice.frontend)
        return list(enc.ids), enc.cleaned, enc.dropped

    def _plan(self, texts: list[str]) -> _Plan:
        plan = _Plan(texts)
        for i, text in enumerate(texts):
            cleaned, dropped = [], []
            for k, piece in enumerate(self._split(text)):
                ids, clean, drop = self._encode(piece)
                dropped.append(drop)
                if _speakable(ids):
                    plan.pieces.append(_Piece(i, (k,), piece, ids))
                    cleaned.append(clean.strip())
            if not cleaned:
                raise InvalidInputError(
                    "text has nothing speakable: none of its characters is in the voice's symbol set"
                    + (f" (text {i + 1} of {len(texts)})" if len(texts) > 1 else ""), field="text")
            plan.cleaned.append(cleaned)
            plan.dropped.append("".join(dropped))
            if plan.dropped[-1]:   # reported to the caller in SynthesisResult.dropped
                logger.debug("text %d: characters with no symbol were not spoken: %r", i,
                               plan.dropped[-1])
        return plan

    def _batches(self, pieces: list[_Piece]) -> list[list[_Piece]]:
        # Longest first, so each batch holds pieces of similar length (least padding).
        order = sorted(pieces, key=lambda p: -len(p.ids))
        return [order[i:i + self.max_batch] for i in range(0, len(order), self.max_batch)]

    def _autocast(self):
        if self.precision == "fp16":
            return torch.autocast(self.device.type, dtype=torch.float16)
        return nullcontext()

    def _run_acoustic(self, pieces: list[_Piece], opts: SynthesisOptions,
                      generator: torch.Generator | None) -> list[_Piece]:
        """Make every piece's mel; returns the pieces (FastSpeech may split some further)."""
        if self.voice.acoustic_kind == "fastspeech":
            return self._fastspeech_all(pieces, opts)
        for batch in self._batches(pieces):
            ids, lengths = _pad_ids([p.ids for p in batch], self.device)
            with self._autocast():
                self._tacotron2(batch, ids, lengths, opts, generator)
        return pieces

    def _tacotron2(self, batch: list[_Piece], ids: torch.Tensor, lengths: torch.Tensor,
                   opts: SynthesisOptions, generator: torch.Generator | None) -> None:
        out = self._acoustic.infer(ids, lengths, max_decoder_steps=opts.max_decoder_steps,
                                   gate_threshold=opts.gate_threshold,
                                   prenet_dropout=opts.prenet_dropout, generator=generator)
        t_out = out.mel_postnet.shape[-1]
        for b, piece in enumerate(batch):
            n = int(out.mel_lengths[b])
            piece.hit_max = n >= opts.max_decoder_steps
            keep = min(n + 1, t_out)            # the frame on which the gate fired is kept, as DLE does
            piece.mel = out.mel_postnet[b, :, :keep].float()
            piece.audio_len = HOP * n

    def _fastspeech_all(self, pieces: list[_Piece], opts: SynthesisOptions) -> list[_Piece]:
        """FastSpeech cuts its output at max_seq_len frames; a piece that would be cut is split
        in two at a word boundary and both halves are synthesized, so no speech is lost."""
        max_len = int(self._acoustic.config.max_seq_len) if hasattr(self._acoustic, "config") else None
        todo, done = list(pieces), []
        while todo:
            fits = [p for p in todo if max_len is None or len(p.ids) <= max_len]
            todo = [q for p in todo if p not in fits for q in self._halve(p)]
            for batch in self._batches(fits):
                ids, _ = _pad_ids([p.ids for p in batch], self.device)
                with self._autocast():
                    out = self._acoustic.infer(ids, alpha=1.0 / opts.speed)
                truncated = getattr(out, "truncated", torch.zeros(len(batch), dtype=torch.bool))
                for b, piece in enumerate(batch):
                    if bool(truncated[b]):
                        todo.extend(self._halve(piece))
                        continue
                    n = int(out.mel_lengths[b])
                    piece.mel = out.mel[b, :n, :].transpose(0, 1).float()
                    piece.audio_len = HOP * n
                    done.append(piece)
        return done

    def _halve(self, piece: _Piece) -> list[_Piece]:
        words = piece.text.split()
        if len(words) < 2:
            raise InvalidInputError(f"a single word is too long for the FastSpeech model: {piece.text[:40]!r}",
                                    field="text")
        halves = [" ".join(words[:len(words) // 2]), " ".join(words[len(words) // 2:])]
        out = []
        for j, h in enumerate(halves):
            ids, _, _ = self._encode(h)
            if _speakable(ids):
                out.append(_Piece(piece.utt, (*piece.key, j), h, ids))
        return out

    def _run_vocoder(self, pieces: list[_Piece], opts: SynthesisOptions,
                     generator: torch.Generator | None) -> None:
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        for batch in self._batches(pieces):
            frames = [p.mel.shape[-1] for p in batch]
            longest = max(frames)
            mel = torch.full((len(batch), batch[0].mel.shape[0], longest), MEL_SILENCE,
                             device=self.device, dtype=dtype)
            for b, p in enumerate(batch):
                mel[b, :, :frames[b]] = p.mel
            audio = self._vocoder.infer(mel, sigma=opts.sigma, generator=generator).float()
            for b, p in enumerate(batch):
                p.audio = audio[b, :HOP * frames[b]]

    def _run_denoiser(self, pieces: list[_Piece], opts: SynthesisOptions) -> None:
        if opts.denoiser_strength == 0:
            return
        for batch in self._batches(pieces):
            longest = max(p.audio.shape[-1] for p in batch)
            audio = torch.zeros(len(batch), longest, device=self.device, dtype=torch.float32)
            for b, p in enumerate(batch):
                audio[b, :p.audio.shape[-1]] = p.audio
            out = self._denoiser(audio, strength=opts.denoiser_strength).reshape(len(batch), -1)
            for b, p in enumerate(batch):
                p.audio = out[b, :p.audio.shape[-1]]

    def _collect(self, plan: _Plan, timings: StageTimings) -> list[SynthesisResult]:
        per_utt: list[list[_Piece]] = [[] for _ in plan.texts]
        for p in sorted(plan.pieces, key=lambda p: p.key):
            per_utt[p.utt].append(p)
        results = []
        for i, text in enumerate(plan.texts):
            ps = per_utt[i]
            audio = torch.cat([p.audio[:p.audio_len] for p in ps]).cpu().numpy().astype(np.float32)
            mel = torch.cat([p.mel for p in ps], dim=-1).cpu().numpy().astype(np.float32)
            results.append(SynthesisResult(
                text=text, normalized_text=" ".join(plan.cleaned[i]), audio=audio,
                sample_rate=self.sample_rate, mel=mel, timings=timings, dropped=plan.dropped[i],
                pieces=len(ps), hit_max_steps=sum(p.hit_max for p in ps)))
        return results

    # ---------------------------------------------------------------- helpers

    def _placed(self, module: torch.nn.Module) -> torch.nn.Module:
        if self.device.type == "cpu":
            return module.eval()
        return copy.deepcopy(module).to(self.device).eval()

    def _generator(self, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        return torch.Generator(device=self.device).manual_seed(seed)

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


_SPEAKABLE: frozenset[int] | None = None


def _speakable(ids: list[int]) -> bool:
    """True when ids hold a letter or an ARPAbet phone (not only spaces and punctuation)."""
    global _SPEAKABLE
    if _SPEAKABLE is None:
        from tts.text import SYMBOLS
        _SPEAKABLE = frozenset(i for i, s in enumerate(SYMBOLS) if s.isalpha() or s.startswith("@"))
    return any(i in _SPEAKABLE for i in ids)


def _pad_ids(seqs: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ids: [B, T_in] int64 padded with 0; lengths: [B] int64."""
    longest = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), longest, dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = torch.tensor(s, dtype=torch.long)
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    return ids.to(device), lengths.to(device)


def _resolve_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}",
                                field="device") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError("--device cuda was asked for, but no CUDA GPU is available here",
                                    field="device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidInputError(f"CUDA device {dev.index} does not exist "
                                    f"({torch.cuda.device_count()} present)", field="device")
    elif dev.type != "cpu":
        raise InvalidInputError(f"device must be 'cpu' or 'cuda', got {device!r}", field="device")
    return dev
