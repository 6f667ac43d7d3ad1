"""Streaming vocoding: mel frames in as they are decoded, audio chunks out as soon as they are final.

How a chunk is made (``MelStreamer``):

1. Postnet (Tacotron2 only). The postnet is five convolutions of kernel 5,
   so a post-net frame depends on the decoder frames within
   ``postnet_context`` = 10 frames on each side. A range of post-net frames is
   computed from the decoder frames widened by that context and the context
   is thrown away: the result is the same as the whole-utterance postnet
   (up to float rounding), because zero padding only ever happens at the
   true ends of the utterance, as in the unary path.
2. WaveGlow on overlapping mel windows. The window of chunk ``[a, b)`` is
   ``[a - overlap, b + overlap)`` frames (clipped to the utterance); the
   vocoder runs on the window and the audio of ``[a, b)`` is cut out
   (exact-overlap trimming, no crossfade). WaveGlow's upsampler makes frame
   t's audio from mel frames t-3..t, and its WaveNet layers look a few
   hundred samples both ways, so with sigma 0 and ``overlap`` >= 4 the cut
   audio matches the unary audio to float rounding for the small reference
   model; a full-size WaveGlow (12 flows, 8 layers) has a wider reach and
   the difference is small but not zero: ``tests/test_streaming.py`` measures it.
3. The denoiser (STFT, 1024-sample window) runs on the window's audio too,
   before trimming, so it also sees both sides.
4. Griffin-Lim with a PGHI start (the bundled voices) finds each window's
   phase by integrating along time from the window's first frame, so windows
   vocoded apart would each start from their own phase and the chunks would
   not join. Each window therefore starts from the phase that the stream's
   previous window found for its first frame (``GriffinLim.infer_window``;
   the overlap makes that frame one of the previous window's inner frames),
   and the PGHI phases of every frame are those of one pass over the whole
   utterance. The iterations' reach from a window's edges stays inside the
   overlap; what differs from the unary audio is float rounding (FFTs of other
   lengths) that the iterations amplify, 2-4e-5 at most for ``heart``.

The first chunk is ``first_chunk_frames`` long (small, for a short time to
first audio); later ones are ``chunk_frames``. The concatenated chunks have
exactly the unary audio's length. With sigma > 0 the noise of each window is
drawn separately, so streamed and unary audio are different draws.

A chunk is planned (``Window``: which frames go through the postnet and
the vocoder), vocoded, then committed (its audio cut out, the stream
advanced). ``push``/``finish`` do the three at once, one window per
vocoder call; the Tacotron2 scheduler's vocoder stage plans the windows of
many streams and vocodes those of equal shape together (``tts.server.vocoding``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

HOP = 256
#: Frames each side a Tacotron2 postnet (5 convolutions of kernel 5) looks at.
POSTNET_CONTEXT = 10


@dataclass(frozen=True)
class StreamConfig:
    """Chunking of a stream."""

    #: Frames per chunk after the first (>= 1).
    chunk_frames: int = 32
    #: Frames of the first chunk (>= 1); small = low time to first audio.
    first_chunk_frames: int = 8
    #: Mel frames of context on each side of a vocoder window (>= 0).
    overlap_frames: int = 8

    def __post_init__(self) -> None:
        if self.chunk_frames < 1 or self.first_chunk_frames < 1 or self.overlap_frames < 0:
            raise ValueError("chunk_frames and first_chunk_frames must be >= 1, overlap_frames >= 0")


@dataclass(frozen=True)
class Window:
    """One planned audio chunk of a ``MelStreamer``: the mel to vocode and the part of its audio to keep.

    Frame ranges are in decoder frames: the chunk is ``[start, end)``, the vocoder's window
    ``[lo, hi)``, the postnet's input ``[plo, phi)`` (= ``[lo, hi)`` without a postnet).
    """

    start: int
    end: int
    lo: int
    hi: int
    plo: int
    phi: int
    #: ``[n_mel, phi - plo]``: the postnet's input (Tacotron2), else the vocoder's window (final mels).
    mel: torch.Tensor
    #: The ``MelStreamer`` that planned it (its phase state, for Griffin-Lim).
    stream: Any = field(default=None, compare=False, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """(postnet input frames, vocoder window frames): windows of equal shape stack into one batch."""
        return self.phi - self.plo, self.hi - self.lo


class MelStreamer:
    """Turns a growing mel ``[n_mel, T]`` into audio chunks.

    ``push``/``finish`` vocode each chunk as it becomes final, one window per call. The same
    work in two steps, for a caller that vocodes the windows of many streams together:
    ``plan_push``/``plan_finish`` return the ``Window``s that became final (planned in order,
    nothing vocoded), ``vocode_windows`` vocodes windows of one ``Window.shape`` in one postnet
    and one vocoder call, and ``commit`` turns each window's audio into its chunk, in plan order.

    Args:
        vocode: ``mel [B, n_mel, T] -> audio [B, 256*T]`` (WaveGlow ``infer`` with the call's sigma),
            then the denoiser if any; tensors on the model's device.
        postnet: ``mel [B, n_mel, T] -> mel + postnet(mel)`` for Tacotron2, None when frames are final mels.
        config: chunk sizes.
    """

    def __init__(self, vocode: Callable[[torch.Tensor], torch.Tensor],
                 postnet: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 config: StreamConfig = StreamConfig()) -> None:
        self.vocode = vocode
        self.postnet = postnet
        self.config = config
        self._frames: list[torch.Tensor] = []   # decoder frames, each [n_mel, k]
        self._mel: torch.Tensor | None = None   # [n_mel, T] joined lazily
        self._n = 0                             # frames pushed
        self._planned = 0                       # frames whose chunk is planned
        self._planned_chunks = 0
        self._done = 0                          # frames whose audio has been emitted
        self._finished = False
        self.chunks_out = 0
        #: (first frame, PGHI phase [n_bins, k]) of the last window vocoded by ``vocode.window``
        self._phase: tuple[int, torch.Tensor] | None = None

    @property
    def n_frames(self) -> int:
        """Frames pushed so far."""
        return self._n

    def _all(self) -> torch.Tensor:
        if self._frames:
            parts = ([self._mel] if self._mel is not None else []) + self._frames
            self._mel = torch.cat(parts, dim=-1)
            self._frames = []
        assert self._mel is not None
        return self._mel

    def _next_size(self) -> int:
        return self.config.first_chunk_frames if self._planned_chunks == 0 else self.config.chunk_frames

    def push(self, frames: torch.Tensor) -> list[np.ndarray]:
        """Adds decoder frames ``[n_mel, k]``; returns the audio chunks that became final (maybe none)."""
        return self._run(self.plan_push(frames))

    def finish(self, audio_frames: int | None = None) -> list[np.ndarray]:
        """Ends the utterance; returns the remaining chunks.

        ``audio_frames``: frames of audio the utterance has (Tacotron2 drops
        the last, gate frame's audio); default: every frame.
        """
        return self._run(self.plan_finish(audio_frames))

    def plan_push(self, frames: torch.Tensor) -> list[Window]:
        """Adds decoder frames ``[n_mel, k]``; returns the windows of the chunks that became final."""
        self._frames.append(frames)
        self._n += frames.shape[-1]
        out = []
        right = self.config.overlap_frames + (POSTNET_CONTEXT if self.postnet is not None else 0)
        while self.n_frames >= self._planned + self._next_size() + right:
            out.append(self._plan(self._planned + self._next_size()))
        return out

    def plan_finish(self, audio_frames: int | None = None) -> list[Window]:
        """Ends the utterance (``audio_frames`` as in ``finish``); returns the remaining chunks' windows."""
        if self._finished:
            return []
        self._finished = True
        if self.n_frames == 0:
            return []
        total = self.n_frames if audio_frames is None else min(audio_frames, self.n_frames)
        out = []
        while self._planned < total:
            out.append(self._plan(min(self._planned + self._next_size(), total)))
        return out

    def _plan(self, end: int) -> Window:
        mel = self._all()
        t_all = mel.shape[-1]
        start = self._planned
        ov = self.config.overlap_frames
        lo, hi = max(0, start - ov), min(t_all, end + ov)
        ctx = POSTNET_CONTEXT if self.postnet is not None else 0
        plo, phi = max(0, lo - ctx), min(t_all, hi + ctx)
        self._planned = end
        self._planned_chunks += 1
        return Window(start, end, lo, hi, plo, phi, mel[:, plo:phi], stream=self)

    def _phase_at(self, frame: int) -> torch.Tensor | None:
        """The PGHI phase the last window found for ``frame``, if it was one of its inner frames
        (the last frame and the one after it use one-sided differences)."""
        if self._phase is None:
            return None
        lo, phase = self._phase
        return phase[:, frame - lo] if 0 <= frame - lo < phase.shape[1] - 2 else None

    def vocode_windows(self, windows: list[Window]) -> torch.Tensor:
        """Audio ``[B, 256 * (hi - lo)]`` of windows of one ``Window.shape`` (of this or of streams
        with the same postnet and vocode): one postnet call over their stacked mels, one vocode call."""
        mel = torch.stack([w.mel for w in windows])
        if self.postnet is not None:
            post = self.postnet(mel)
            mel = torch.stack([post[i, :, w.lo - w.plo:w.hi - w.plo] for i, w in enumerate(windows)])
        by_window = getattr(self.vocode, "window", None)
        if by_window is None:
            return self.vocode(mel).reshape(len(windows), -1)
        out = []
        for i, w in enumerate(windows):        # in plan order: a stream's window follows its previous one
            st = w.stream if w.stream is not None else self
            audio, phase = by_window(mel[i:i + 1], st._phase_at(w.lo) if w.lo else None)
            st._phase = (w.lo, phase)
            out.append(audio.reshape(-1))
        return torch.stack(out)

    def commit(self, window: Window, audio: torch.Tensor) -> np.ndarray:
        """The chunk of ``window`` (the next planned one) from its window's audio ``[256 * (hi - lo)]``."""
        if window.start != self._done:
            raise ValueError(f"windows are committed in plan order: expected a chunk from frame {self._done}, "
                             f"got {window.start}")
        chunk = audio[(window.start - window.lo) * HOP:(window.end - window.lo) * HOP]
        self._done = window.end
        self.chunks_out += 1
        return chunk.float().cpu().numpy().astype(np.float32, copy=False)

    def _run(self, windows: list[Window]) -> list[np.ndarray]:
        return [self.commit(w, self.vocode_windows([w])[0]) for w in windows]


def continues_phase(vocoder: object) -> bool:
    """Whether ``vocoder`` carries a stream's phase from window to window (Griffin-Lim with a PGHI
    start, ``GriffinLim.infer_window``): then its windows join as the unary audio does."""
    return getattr(vocoder, "init", None) == "pghi" and hasattr(vocoder, "infer_window")


def make_vocode(vocoder: torch.nn.Module, denoiser: torch.nn.Module | None, *, sigma: float,
                denoiser_strength: float, generator: torch.Generator | None = None,
                dtype: torch.dtype | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``mel [B, n_mel, T] -> audio [B, 256*T] float32``: WaveGlow, then the denoiser unless strength is 0.

    For Griffin-Lim with a PGHI start the function also has ``window(mel [1, n_mel, T], start_phase)
    -> (audio [1, 256*T], phase)`` (``GriffinLim.infer_window``, then the denoiser), which
    ``MelStreamer`` uses to continue each stream's phase from window to window."""

    def denoise(audio: torch.Tensor) -> torch.Tensor:
        if denoiser is not None and denoiser_strength:
            n = audio.shape[-1]
            audio = denoiser(audio, strength=denoiser_strength).reshape(audio.shape[0], -1)[:, :n]
        return audio

    def vocode(mel: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            m = mel.to(dtype) if dtype is not None else mel
            return denoise(vocoder.infer(m, sigma=sigma, generator=generator).float())

    if continues_phase(vocoder):
        def window(mel: torch.Tensor, start_phase: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.inference_mode():
                audio, phase = vocoder.infer_window(mel.float(), start_phase)
                return denoise(audio.float()), phase

        vocode.window = window          # type: ignore[attr-defined]
    return vocode


def synthesizer_modules(synth) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module, torch.dtype]:
    """(acoustic, vocoder, denoiser, vocoder dtype) as placed on the synthesizer's device."""
    return synth.acoustic_module, synth.vocoder_module, synth.denoiser_module, synth.vocoder_dtype


def stream_vocode_mel(synth, mel: torch.Tensor | np.ndarray, options, *, config: StreamConfig = StreamConfig(),
                      audio_frames: int | None = None) -> Iterator[np.ndarray]:
    """Vocodes a whole final mel ``[n_mel, T]`` chunk by chunk (FastSpeech streaming)."""
    opts = options.merged_over(synth.voice.defaults)
    _, vocoder, denoiser, dtype = synthesizer_modules(synth)
    gen = None if opts.seed is None else torch.Generator(device=synth.device).manual_seed(opts.seed)
    streamer = MelStreamer(make_vocode(vocoder, denoiser, sigma=opts.sigma, denoiser_strength=opts.denoiser_strength,
                                       generator=gen, dtype=dtype), None, config)
    mel_t = torch.as_tensor(mel, device=synth.device, dtype=torch.float32)
    step = config.chunk_frames
    for i in range(0, mel_t.shape[-1], step):
        yield from streamer.push(mel_t[:, i:i + step])
    yield from streamer.finish(audio_frames)
