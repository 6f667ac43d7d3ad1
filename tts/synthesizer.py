"""Text in, audio out, for one or many utterances.

The one pipeline of the project: ``tts-synth``, the server (its dynamic
batcher and, through the stage functions, its Tacotron2 scheduler) and
``tts-bench`` all run text through it. It plans text once (split, clean,
encode: ``plan``), batches pieces, and times every stage. Data flow::

    texts -> plan (pieces of ids) -> acoustic model -> mel [B, n_mel, T]
          -> vocoder -> audio [B, 256*T] -> denoiser -> float32 audio per text

Batching never changes a piece's audio: a piece gives the same result alone
and in any batch (to float rounding). So Tacotron2 encodes each piece alone
(its encoder's convolutions would see another piece's padding) and runs its
postnet on each piece's own frames; FastSpeech (whose reference layers do not
mask padding, and a batched row rounds differently from a single one) runs one
piece at a time; the vocoder and denoiser batch
only pieces of equal length, since padding would change the audio near the end;
Griffin-Lim works row by row (its iterations amplify the rounding differences of
batched FFTs).

Timings of a call are wall-clock seconds per stage with the device
synchronised at each stage boundary; every result of one call carries that
call's timings (the latency of its batch).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tts.errors import InvalidInputError
from tts.models.tacotron2 import step_limit
from tts.options import DEFAULT_MAX_TEXT_CHARS, REFERENCE_DEFAULTS, SynthesisOptions
from tts.text.lexicon import Lexicon, as_lexicon
from tts.timings import (WordTimer, WordTiming, attention_path, relocate, token_bounds_from_attention,
                         token_bounds_from_durations, voiced_frames)
from tts.voice import Voice

logger = logging.getLogger(__name__)

__all__ = ["SynthesisOptions", "StageTimings", "SynthesisResult", "AcousticResult", "TextPlan", "Synthesizer",
           "WordTiming", "PRECISIONS", "REFERENCE_DEFAULTS", "DEFAULT_MAX_TEXT_CHARS"]

PRECISIONS = ("fp32", "tf32", "fp16")

#: "auto": the fast engines of ``tts.engines`` on CUDA; on CPU the WaveGlow engine and eager modules
#: for the rest; "eager": always eager.
ENGINES = ("auto", "eager")

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
    #: The cleaned text actually spoken (pieces joined by a space): characters with no symbol left
    #: out, lexicon words as ``{...}`` phoneme groups.
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
    #: Pieces that hit max_decoder_steps (or the ``attention`` stop rule's step budget) before they stopped.
    hit_max_steps: int = 0
    #: The words of ``text`` with their start and end in ``audio`` (``tts.timings``), in order; empty
    #: unless the call asked for them (``word_timings=True``).
    words: list[WordTiming] = field(default_factory=list)

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / float(self.sample_rate)

    @classmethod
    def joined(cls, plan: TextPlan, parts: Sequence[SynthesisResult]) -> SynthesisResult:
        """The result of ``plan`` from the results of its ``TextPlan.split`` parts, in order; stage
        timings are the parts' summed."""
        total = StageTimings()
        words: list[WordTiming] = []
        offset = 0.0
        for r in parts:                          # each part's times shifted by the audio before it
            words.extend(relocate(r.text, r.words, offset))
            offset += r.audio_seconds
        for r in parts:
            for k, v in r.timings.as_dict().items():
                setattr(total, k, getattr(total, k) + v)
        return cls(text=plan.text, normalized_text=plan.normalized_text,
                   audio=np.concatenate([r.audio for r in parts]), sample_rate=parts[0].sample_rate,
                   mel=np.concatenate([r.mel for r in parts], axis=-1), timings=total, dropped=plan.dropped,
                   pieces=sum(r.pieces for r in parts), hit_max_steps=sum(r.hit_max_steps for r in parts),
                   words=relocate(plan.text, words))


@dataclass
class AcousticResult:
    """The acoustic stage's output for one text: its pieces' mels, before the vocoder."""

    #: Per piece, in order: (mel float32 [n_mel, T] on the synthesizer's device, audio samples it yields).
    pieces: list[tuple[torch.Tensor, int]]
    #: The cleaned text spoken (pieces joined by a space).
    normalized_text: str
    #: Characters of the input that have no symbol and were not spoken.
    dropped: str = ""
    #: The words of the text with their times in the audio the pieces yield (``SynthesisResult.words``;
    #: empty unless asked for).
    words: list[WordTiming] = field(default_factory=list)


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
    text_normalizer: str = "dle"         # the plan's, for re-encoding halves of the piece
    lexicon: Lexicon | None = None       # the plan's, likewise
    timed: bool = False                  # its text asked for word timings
    bounds: np.ndarray | None = None     # [len(ids) + 1] the frame each id starts on (word timings)
    voiced: np.ndarray | None = None     # [frames] bool: the loud frames of its acoustic output (word timings)


@dataclass(frozen=True)
class TextPlan:
    """One text, planned: what each piece will speak. Made once per request (``Synthesizer.plan``)."""

    #: The input text.
    text: str
    #: Per speakable piece, in order: (piece text, symbol ids).
    pieces: tuple[tuple[str, tuple[int, ...]], ...]
    #: Per speakable piece: the cleaned text it speaks (``EncodedText.spoken``).
    cleaned: tuple[str, ...]
    #: Characters of the input that have no symbol and are not spoken.
    dropped: str = ""
    #: The text normalizer it was read with (``full`` or ``dle``, see ``tts.text.NORMALIZERS``).
    text_normalizer: str = "dle"
    #: The lexicon it was read with (the synthesizer's and the call's), or None.
    lexicon: Lexicon | None = field(default=None, compare=False, repr=False)

    @property
    def normalized_text(self) -> str:
        return " ".join(self.cleaned)

    def split(self, size: int) -> list[TextPlan]:
        """This plan in parts of at most ``size`` pieces (for a server to interleave a long text's
        pieces with other calls). Each part speaks exactly what its pieces speak in the whole plan
        (batching never changes a piece's audio), unless the call draws noise from a ``seed``."""
        return [TextPlan(" ".join(t for t, _ in self.pieces[i:i + size]), self.pieces[i:i + size],
                         self.cleaned[i:i + size], "", self.text_normalizer, self.lexicon)
                for i in range(0, len(self.pieces), size)]


@dataclass
class _Plan:
    texts: list[str]
    pieces: list[_Piece] = field(default_factory=list)
    cleaned: list[list[str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


class Synthesizer:
    """Runs a Voice on a device.

    ``device``: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. ``precision``: ``fp32`` (IEEE float32:
    on CUDA, TF32 off; ``tts.engines.precision``), ``tf32`` (CUDA only: float32 with TF32
    tensor cores allowed), or ``fp16`` (CUDA only: WaveGlow in half, acoustic model under autocast,
    denoiser in float32 as NVIDIA's inference.py does). ``max_batch``: most
    text pieces per acoustic/vocoder batch. ``max_text_chars``: longest text
    accepted. ``max_piece_chars``: longer text is split into pieces of at most
    this many characters at sentence, then clause, then word boundaries.
    ``lexicon``: pronunciations (``tts.text.lexicon``: a ``Lexicon``, a file path, or a
    mapping word -> "PH ON EMES"); default: the voice's ``lexicon``.
    """

    def __init__(self, voice: Voice, *, device: str = "cpu", precision: str = "fp32",
                 max_batch: int = 8, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS, max_piece_chars: int = 256,
                 engine: str = "auto", engine_cache: Any = "auto", lexicon: Any = None) -> None:
        if engine not in ENGINES:
            raise InvalidInputError(f"engine must be one of {list(ENGINES)}, got {engine!r}", field="engine")
        if precision not in PRECISIONS:
            raise InvalidInputError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}",
                                    field="precision")
        self.device = _resolve_device(device)
        if precision in ("fp16", "tf32") and self.device.type != "cuda":
            raise InvalidInputError(f"precision {precision} needs a CUDA device (use --device cuda or fp32)",
                                    field="precision")
        from tts.engines.precision import set_float32_math
        set_float32_math(precision, self.device)     # the eager parts on CUDA too: fp32 is IEEE fp32
        for name, value, lo in (("max_batch", max_batch, 1), ("max_text_chars", max_text_chars, 1),
                                ("max_piece_chars", max_piece_chars, 16)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise InvalidInputError(f"{name} must be an integer >= {lo}, got {value!r}", field=name)
        self.voice = voice
        #: Pronunciations every text of this synthesizer is read with (None: none).
        self.lexicon: Lexicon | None = (as_lexicon(lexicon) if lexicon is not None
                                        else getattr(voice, "lexicon", None))
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
            if voice.vocoder_kind in ("waveglow", "hifigan"):     # Griffin-Lim has no engine
                self._vocoder = make_engine(voice.vocoder_kind, self._vocoder, **kw)
            self._denoiser = make_engine("denoiser", self._denoiser, **kw)
        elif engine == "auto" and voice.vocoder_kind == "waveglow":     # Griffin-Lim has no engine
            # CPU: the vocoder is most of the time; its engine (channels-last GEMMs, composed
            # conditioning, folded weights) is the eager maths within 1e-5, drawing the same noise.
            from tts.engines.waveglow import WaveGlowEngine
            self._vocoder = WaveGlowEngine(self._vocoder, device=self.device, precision=precision)

    # ------------------------------------------------------------------ public

    def check_text(self, text: object, options: SynthesisOptions | None = None, *,
                   lexicon: Lexicon | None = None) -> TextPlan:
        """Raise InvalidInputError(field="text") for text this synthesizer will not speak; else its plan."""
        return self.plan(text, options, lexicon=lexicon)

    def plan(self, text: object, options: SynthesisOptions | None = None, *,
             lexicon: Lexicon | None = None) -> TextPlan:
        """Validates and plans one text (split into pieces, normalized, cleaned, encoded): the only text
        work of a request. ``options``: the call's options, of which planning reads ``text_normalizer``
        (None: the voice's default). ``lexicon``: the call's own pronunciations, on top of the
        synthesizer's. Raises InvalidInputError(field="text") for text this synthesizer will not speak."""
        self._check_shape(text)
        merged = self.lexicon.merged(lexicon) if self.lexicon is not None else lexicon
        return self._plan_one(text, self._text_normalizer(options), merged or None)

    def _text_normalizer(self, options: SynthesisOptions | None) -> str:
        chosen = options.text_normalizer if options is not None else None
        return chosen or self.voice.defaults.text_normalizer or REFERENCE_DEFAULTS.text_normalizer

    def _check_shape(self, text: object) -> None:
        if not isinstance(text, str):
            raise InvalidInputError(f"text must be a string, got {type(text).__name__}", field="text")
        if not text.strip():
            raise InvalidInputError("text is empty", field="text")
        if len(text) > self.max_text_chars:
            raise InvalidInputError(f"text is {len(text)} characters long; the maximum is "
                                    f"{self.max_text_chars}", field="text")

    def synthesize(self, text: str | TextPlan, options: SynthesisOptions | None = None, *,
                   word_timings: bool = False) -> SynthesisResult:
        """One text -> one result (with ``SynthesisResult.words`` when ``word_timings``)."""
        return self.synthesize_batch([text], options, word_timings=word_timings)[0]

    def synthesize_batch(self, texts: Sequence[str | TextPlan], options: SynthesisOptions | None = None, *,
                         word_timings: bool | Sequence[bool] = False) -> list[SynthesisResult]:
        """Several texts (or their plans) with the same options -> one result each, in order.

        Every text is validated before any work is done, so a bad text fails
        the call without partial results. Each result equals that text's result alone.
        ``word_timings``: whether the results carry their words' times (``SynthesisResult.words``),
        for every text or per text; the audio is the same either way. Off, nothing of the
        timings is computed: no attention is read back from the device, no alignment is searched.
        """
        if isinstance(texts, str):
            raise InvalidInputError("texts must be a list of strings, not one string", field="text")
        if not texts:
            return []
        opts = (options or SynthesisOptions()).merged_over(self.voice.defaults)
        timings = StageTimings()
        start = time.perf_counter()
        plans = [t if isinstance(t, TextPlan) else self.plan(t, opts) for t in texts]
        timed = _per_text(word_timings, len(plans))
        with torch.inference_mode():
            plan = self._pieces(plans, timed)
            t1 = self._now()
            timings.text = t1 - start
            generator = self._generators(opts.seed, len(plans))
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

    def acoustic(self, texts: Sequence[str | TextPlan], options: SynthesisOptions | None = None, *,
                 word_timings: bool | Sequence[bool] = False) -> list[AcousticResult]:
        """Only the text and acoustic stages (for callers that vocode themselves, e.g. streaming).

        The mels are exactly those ``synthesize_batch`` vocodes for the same texts and options;
        ``word_timings`` as there.
        """
        opts = (options or SynthesisOptions()).merged_over(self.voice.defaults)
        plans = [t if isinstance(t, TextPlan) else self.plan(t, opts) for t in texts]
        timed = _per_text(word_timings, len(plans))
        with torch.inference_mode():
            plan = self._pieces(plans, timed)
            plan.pieces = self._run_acoustic(plan.pieces, opts, self._generators(opts.seed, len(plans)))
        per_utt: list[list[tuple[torch.Tensor, int]]] = [[] for _ in texts]
        timers = [self.word_timer(p.text, p.text_normalizer) if t else None for p, t in zip(plans, timed)]
        for p in sorted(plan.pieces, key=lambda p: p.key):
            per_utt[p.utt].append((p.mel, p.audio_len))
            if timers[p.utt] is not None:
                timers[p.utt].add(p.text, p.ids, p.bounds, p.audio_len, p.voiced)
        return [AcousticResult(pieces, " ".join(plan.cleaned[i]), plan.dropped[i],
                               timers[i].words if timers[i] is not None else [])
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

    def _encode(self, piece: str, text_normalizer: str, lexicon: Lexicon | None) -> tuple[list[int], str, str]:
        from tts.text import encode
        enc = encode(piece, self.voice.frontend, text_normalizer, lexicon)
        return list(enc.ids), enc.spoken, enc.dropped

    def _plan_one(self, text: str, text_normalizer: str, lexicon: Lexicon | None = None) -> TextPlan:
        pieces, cleaned, dropped = [], [], []
        for piece in self._split(text):
            ids, clean, drop = self._encode(piece, text_normalizer, lexicon)
            dropped.append(drop)
            if _speakable(ids):
                pieces.append((piece, tuple(ids)))
                cleaned.append(clean.strip())
        if not pieces:
            raise InvalidInputError("text has nothing speakable: none of its characters is in the voice's "
                                    "symbol set", field="text")
        plan = TextPlan(text, tuple(pieces), tuple(cleaned), "".join(dropped), text_normalizer, lexicon)
        if plan.dropped:   # reported to the caller in SynthesisResult.dropped
            logger.debug("characters with no symbol were not spoken: %r", plan.dropped)
        return plan

    def _pieces(self, plans: list[TextPlan], timed: list[bool]) -> _Plan:
        plan = _Plan([p.text for p in plans])
        for i, tp in enumerate(plans):
            plan.pieces.extend(_Piece(i, (k,), text, list(ids), text_normalizer=tp.text_normalizer,
                                      lexicon=tp.lexicon, timed=timed[i])
                               for k, (text, ids) in enumerate(tp.pieces))
            plan.cleaned.append(list(tp.cleaned))
            plan.dropped.append(tp.dropped)
        return plan

    def _batches(self, pieces: list[_Piece], size=lambda p: len(p.ids), *, equal: bool = False,
                 by_text: bool = False) -> list[list[_Piece]]:
        """Batches of at most ``max_batch`` pieces, longest first (least padding). With ``equal`` only
        pieces of equal ``size`` share a batch (no padding at all); with ``by_text`` only pieces of
        one text (seeded calls: each text draws its noise from its own generator)."""
        groups: dict[tuple, list[_Piece]] = {}
        for p in sorted(pieces, key=lambda p: -size(p)):
            groups.setdefault((size(p) if equal else None, p.utt if by_text else None), []).append(p)
        return [g[i:i + self.max_batch] for g in groups.values() for i in range(0, len(g), self.max_batch)]

    def _autocast(self):
        if self.precision == "fp16":
            return torch.autocast(self.device.type, dtype=torch.float16)
        return nullcontext()

    def _run_acoustic(self, pieces: list[_Piece], opts: SynthesisOptions,
                      generators: list[torch.Generator] | None) -> list[_Piece]:
        """Make every piece's mel; returns the pieces (FastSpeech may split some further)."""
        if self.voice.acoustic_kind == "fastspeech":
            return self._fastspeech_all(pieces, opts)
        for batch in self._batches(pieces, by_text=generators is not None and opts.prenet_dropout > 0):
            ids, lengths = _pad_ids([p.ids for p in batch], self.device)
            with self._autocast():
                self._tacotron2(batch, ids, lengths, opts, generators and generators[batch[0].utt])
        return pieces

    def _tacotron2(self, batch: list[_Piece], ids: torch.Tensor, lengths: torch.Tensor,
                   opts: SynthesisOptions, generator: torch.Generator | None) -> None:
        """Each piece encoded alone (``[1, T_in, E]``), the memories decoded together (attention masks
        the padding), and the postnet run on each piece's own frames: the result of a piece does not
        depend on the others in its batch."""
        acoustic = self._acoustic
        if len(batch) == 1:
            memory = acoustic.encode(ids, lengths)
        else:
            rows = [acoustic.encode(ids[b:b + 1, :len(p.ids)], lengths[b:b + 1])[0]
                    for b, p in enumerate(batch)]
            memory = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)     # [B, T_in, E], 0-padded
        decode = acoustic.decode if hasattr(acoustic, "decode") else acoustic.decoder.infer
        out = decode(memory, lengths, max_decoder_steps=opts.max_decoder_steps, gate_threshold=opts.gate_threshold,
                     prenet_dropout=opts.prenet_dropout, generator=generator, stop_rule=opts.stop_rule)
        t_out = out.mel.shape[-1]
        dtype = next(iter(acoustic.parameters())).dtype if isinstance(acoustic, torch.nn.Module) else None
        for b, piece in enumerate(batch):
            n = int(out.mel_lengths[b])
            limit = step_limit(opts.stop_rule, len(piece.ids), opts.max_decoder_steps)   # the piece's own budget
            piece.hit_max = n >= limit
            keep = min(n + 1, t_out, limit)     # the frame on which the gate fired is kept, as DLE does
            mel = out.mel[b:b + 1, :, :keep]
            piece.mel = acoustic.postnet_forward(mel if dtype is None else mel.to(dtype))[0].float()
            piece.audio_len = HOP * n
            if piece.timed:          # the attention leaves the device only for word timings
                piece.bounds = token_bounds_from_attention(
                    attention_path(out.alignments[b, :n, :len(piece.ids)]), len(piece.ids), n)
                piece.voiced = voiced_frames(out.mel[b, :, :n])

    def _fastspeech_all(self, pieces: list[_Piece], opts: SynthesisOptions) -> list[_Piece]:
        """FastSpeech makes at most max_seq_len frames; a piece that needs more is split in two at
        a word boundary and both halves are synthesized, so no speech is lost and none is cut."""
        max_len = int(self._acoustic.config.max_seq_len) if hasattr(self._acoustic, "config") else None
        todo, done = list(pieces), []
        while todo:
            fits = [p for p in todo if max_len is None or len(p.ids) <= max_len]
            todo = [q for p in todo if p not in fits for q in self._halve(p)]
            # One piece at a time: the reference does not mask padding, and even unpadded rows of a
            # batch round differently from a single row (which Griffin-Lim then amplifies).
            groups = [[p] for p in fits]
            while groups:
                batch = groups.pop()
                ids, _ = _pad_ids([p.ids for p in batch], self.device)
                try:
                    with self._autocast():       # refused rather than cut: the piece is split instead
                        out = self._acoustic.infer(ids, alpha=1.0 / opts.speed, allow_truncation=False)
                except InvalidInputError:
                    if len(batch) == 1:
                        todo.extend(self._halve(batch[0]))
                    else:                       # which piece is too long: each alone
                        groups.extend([p] for p in batch)
                    continue
                for b, piece in enumerate(batch):
                    n = int(out.mel_lengths[b])
                    piece.mel = out.mel[b, :n, :].transpose(0, 1).float()
                    piece.audio_len = HOP * n
                    if piece.timed:
                        piece.bounds = token_bounds_from_durations(out.repeats[b, :len(piece.ids)].cpu().numpy())
                        piece.voiced = voiced_frames(piece.mel)
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
            ids, _, _ = self._encode(h, piece.text_normalizer, piece.lexicon)
            if _speakable(ids):
                out.append(_Piece(piece.utt, (*piece.key, j), h, ids, text_normalizer=piece.text_normalizer,
                                  lexicon=piece.lexicon, timed=piece.timed))
        return out

    def _run_vocoder(self, pieces: list[_Piece], opts: SynthesisOptions,
                     generators: list[torch.Generator] | None) -> None:
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        for batch in self._batches(pieces, lambda p: p.mel.shape[-1], equal=True, by_text=generators is not None):
            generator = generators and generators[batch[0].utt]
            mel = torch.stack([p.mel for p in batch]).to(dtype)          # equal lengths: no padding
            audio = self._vocoder.infer(mel, sigma=opts.sigma, generator=generator).float()
            for b, p in enumerate(batch):
                p.audio = audio[b, :HOP * mel.shape[-1]]

    def _run_denoiser(self, pieces: list[_Piece], opts: SynthesisOptions) -> None:
        if opts.denoiser_strength == 0:
            return
        for batch in self._batches(pieces, lambda p: p.audio.shape[-1], equal=True):
            audio = torch.stack([p.audio for p in batch])                 # equal lengths: no padding
            out = self._denoiser(audio, strength=opts.denoiser_strength).reshape(len(batch), -1)
            for b, p in enumerate(batch):
                p.audio = out[b, :audio.shape[-1]]

    def _collect(self, plan: _Plan, timings: StageTimings) -> list[SynthesisResult]:
        per_utt: list[list[_Piece]] = [[] for _ in plan.texts]
        for p in sorted(plan.pieces, key=lambda p: p.key):
            per_utt[p.utt].append(p)
        results = []
        for i, text in enumerate(plan.texts):
            ps = per_utt[i]
            words: list[WordTiming] = []
            if ps[0].timed:
                timer = self.word_timer(text, ps[0].text_normalizer)
                for p in ps:
                    timer.add(p.text, p.ids, p.bounds, p.audio_len, p.voiced)
                words = timer.words
            audio = torch.cat([p.audio[:p.audio_len] for p in ps]).cpu().numpy().astype(np.float32, copy=False)
            mel = torch.cat([p.mel for p in ps], dim=-1).cpu().numpy().astype(np.float32, copy=False)
            results.append(SynthesisResult(
                text=text, normalized_text=" ".join(plan.cleaned[i]), audio=audio,
                sample_rate=self.sample_rate, mel=mel, timings=timings, dropped=plan.dropped[i],
                pieces=len(ps), hit_max_steps=sum(p.hit_max for p in ps), words=words))
        return results

    def word_timer(self, text: str, text_normalizer: str) -> WordTimer:
        """The word timings of ``text`` (read with ``text_normalizer``), to be fed piece by piece."""
        return WordTimer(text, frontend=self.voice.frontend, normalizer=text_normalizer,
                         sample_rate=self.sample_rate, hop=HOP)

    # ---------------------------------------------------------------- helpers

    def _placed(self, module: torch.nn.Module) -> torch.nn.Module:
        if self.device.type == "cpu":
            return module.eval()
        return copy.deepcopy(module).to(self.device).eval()

    def _generators(self, seed: int | None, n: int) -> list[torch.Generator] | None:
        """One generator per text, each seeded with ``seed``: a text draws the same noise alone or in a batch."""
        if seed is None:
            return None
        return [torch.Generator(device=self.device).manual_seed(seed) for _ in range(n)]

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


_SPEAKABLE: frozenset[int] | None = None


def _per_text(word_timings: bool | Sequence[bool], n: int) -> list[bool]:
    """``word_timings`` (one flag, or one per text) as one flag per text."""
    if isinstance(word_timings, (bool, int)):
        return [bool(word_timings)] * n
    flags = [bool(w) for w in word_timings]
    if len(flags) != n:
        raise ValueError(f"word_timings has {len(flags)} flags for {n} texts")
    return flags


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
