"""Response audio: the proto's encoding numbers on top of ``tts.audio`` (in memory, never a file)."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from tts import audio as _audio

logger = logging.getLogger(__name__)

#: Allowed range of a requested output rate (0 = the voice's own rate).
MIN_RATE_HZ = 8000
MAX_RATE_HZ = 96000


class Encoding(IntEnum):
    """Mirror of the proto's ``AudioEncoding`` (same numbers, same names)."""

    UNSPECIFIED = 0
    LINEAR_PCM16 = 1
    FLOAT32 = 2
    WAV = 3
    FLAC = 4
    OGG_OPUS = 5
    MP3 = 6
    MULAW = 7
    ALAW = 8


#: Encodings a stream can carry (raw samples, so chunks concatenate).
STREAMABLE = (Encoding.LINEAR_PCM16, Encoding.FLOAT32, Encoding.MULAW, Encoding.ALAW)


@dataclass(frozen=True)
class EncodedAudio:
    """Encoded bytes and their sample rate."""

    data: bytes
    sample_rate: int
    encoding: Encoding
    #: Number of samples encoded (after resampling).
    num_samples: int

    @property
    def seconds(self) -> float:
        return self.num_samples / float(self.sample_rate)


def output_rate(voice_rate: int, requested: int, encoding: Encoding) -> int:
    """The rate audio is sent at: the requested one (0 = voice's), 48 kHz for Opus or MP3 at a rate
    the codec lacks."""
    rate = requested or voice_rate
    if encoding == Encoding.OGG_OPUS and rate not in _audio.OPUS_RATES:
        rate = 48000
    if encoding == Encoding.MP3 and rate not in _audio.MP3_RATES:
        rate = 48000
    return rate


def raw_bytes(audio: np.ndarray, encoding: Encoding) -> bytes:
    """Raw samples for LINEAR_PCM16 / FLOAT32 (little-endian) / MULAW / ALAW (8-bit G.711), no header."""
    if encoding not in STREAMABLE:
        raise ValueError(f"{Encoding(encoding).name} is not a raw sample encoding")
    return _audio.encode(audio, 0, Encoding(encoding).name)


#: Encodings that are a copy and a cast of the samples (no codec), and the most samples encoded on the
#: event loop rather than in a worker thread (``inline``): about 0.3 ms of numpy, less than a thread hop.
CHEAP = (Encoding.LINEAR_PCM16, Encoding.FLOAT32, Encoding.WAV)
INLINE_MAX_SAMPLES = 1 << 19


def inline(n_samples: int, sample_rate: int, encoding: Encoding, out_rate: int = 0) -> bool:
    """Whether ``encode`` of ``n_samples`` is cheaper than handing it to a thread: a raw or WAV encoding
    at the voice's rate (no resampling) of at most ``INLINE_MAX_SAMPLES`` samples."""
    enc = Encoding.WAV if encoding == Encoding.UNSPECIFIED else Encoding(encoding)
    return (enc in CHEAP and output_rate(sample_rate, out_rate, enc) == sample_rate
            and n_samples <= INLINE_MAX_SAMPLES)


def encode(audio: np.ndarray, sample_rate: int, encoding: Encoding, out_rate: int = 0) -> EncodedAudio:
    """float32 [N] at ``sample_rate`` -> bytes in ``encoding`` at ``out_rate`` (0 = unchanged).

    UNSPECIFIED means WAV. Resampling is polyphase (``scipy.signal.resample_poly``).
    """
    enc = Encoding(encoding)
    if enc == Encoding.UNSPECIFIED:
        enc = Encoding.WAV
    rate = output_rate(sample_rate, out_rate, enc)
    samples = _audio.resample(np.asarray(audio, dtype=np.float32).reshape(-1), sample_rate, rate)
    return EncodedAudio(_audio.encode(samples, rate, enc.name), rate, enc, len(samples))


def decode(data: bytes, encoding: Encoding) -> np.ndarray:
    """Inverse of ``encode`` (for clients and tests): bytes -> float32 [N]."""
    enc = Encoding(encoding)
    if enc == Encoding.LINEAR_PCM16:
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0
    if enc == Encoding.FLOAT32:
        return np.frombuffer(data, dtype="<f4").astype(np.float32)
    if enc in (Encoding.MULAW, Encoding.ALAW):
        return _audio.g711_decode(data, enc.name)
    import soundfile as sf

    samples, _ = sf.read(io.BytesIO(data), dtype="float32")
    return samples.reshape(-1)
