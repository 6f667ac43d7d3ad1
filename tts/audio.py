"""Audio encoding, resampling and atomic file writing.

``audio`` arrays here are float32 [N] mono in roughly [-1, 1]; integer
formats clip to that range.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from math import gcd
from pathlib import Path

import numpy as np

from tts.errors import InvalidInputError

logger = logging.getLogger(__name__)

#: Encodings offered by the CLI and the gRPC API (names of the proto enum).
ENCODINGS = ("WAV", "WAV_FLOAT32", "LINEAR_PCM16", "FLOAT32", "FLAC", "OGG_OPUS", "MP3", "MULAW", "ALAW",
             "WAV_MULAW", "WAV_ALAW")

#: Headerless encodings: their bytes concatenate, so streamed chunks join into one valid stream.
RAW_ENCODINGS = ("LINEAR_PCM16", "FLOAT32", "MULAW", "ALAW")

#: Sample rates MP3 (MPEG-1/2/2.5 Layer III) accepts.
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

#: Sample rates the Opus codec accepts.
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float [N] -> int16 [N], clipped to [-1, 1] and rounded."""
    a = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    return np.round(a * 32767.0).astype("<i2")


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling (scipy ``resample_poly``, Kaiser window) -> float32 [M]."""
    if rate_out <= 0:
        raise InvalidInputError(f"sample rate must be positive, got {rate_out}", field="sample_rate_hz")
    if rate_in == rate_out:
        return np.asarray(audio, dtype=np.float32)
    from scipy.signal import resample_poly
    g = gcd(rate_in, rate_out)
    return resample_poly(np.asarray(audio, dtype=np.float64), rate_out // g, rate_in // g).astype(np.float32)


def encode(audio: np.ndarray, sample_rate: int, encoding: str = "WAV") -> bytes:
    """Encode mono float audio as ``encoding`` (one of ``ENCODINGS``).

    ``LINEAR_PCM16`` and ``FLOAT32`` are headerless little-endian samples; WAV
    is 16-bit PCM, WAV_FLOAT32 32-bit float (the audio exactly); FLAC is 16-bit; OGG_OPUS needs a rate in ``OPUS_RATES``
    and MP3 one in ``MP3_RATES`` (resample first). MULAW and ALAW are headerless 8-bit G.711 samples (as
    telephony and Riva send them); WAV_MULAW and WAV_ALAW are the same samples in a WAV file.
    """
    if encoding == "LINEAR_PCM16":
        return to_pcm16(audio).tobytes()
    if encoding == "FLOAT32":
        return np.asarray(audio, dtype="<f4").tobytes()
    if encoding in ("MULAW", "ALAW"):
        return g711_encode(audio, encoding)
    import soundfile as sf
    buf = io.BytesIO()
    if encoding == "WAV":
        sf.write(buf, to_pcm16(audio), sample_rate, format="WAV", subtype="PCM_16")
    elif encoding == "WAV_FLOAT32":
        sf.write(buf, np.asarray(audio, dtype=np.float32), sample_rate, format="WAV", subtype="FLOAT")
    elif encoding == "FLAC":
        sf.write(buf, to_pcm16(audio), sample_rate, format="FLAC", subtype="PCM_16")
    elif encoding == "OGG_OPUS":
        if sample_rate not in OPUS_RATES:
            raise InvalidInputError(f"OGG_OPUS needs a sample rate in {list(OPUS_RATES)}, got {sample_rate}",
                                    field="sample_rate_hz")
        sf.write(buf, np.clip(np.asarray(audio, dtype=np.float32), -1, 1), sample_rate,
                 format="OGG", subtype="OPUS")
    elif encoding == "MP3":
        if sample_rate not in MP3_RATES:
            raise InvalidInputError(f"MP3 needs a sample rate in {list(MP3_RATES)}, got {sample_rate}",
                                    field="sample_rate_hz")
        sf.write(buf, np.clip(np.asarray(audio, dtype=np.float32), -1, 1), sample_rate,
                 format="MP3", subtype="MPEG_LAYER_III")
    elif encoding in ("WAV_MULAW", "WAV_ALAW"):
        subtype = "ULAW" if encoding == "WAV_MULAW" else "ALAW"
        sf.write(buf, np.clip(np.asarray(audio, dtype=np.float32), -1, 1), sample_rate,
                 format="WAV", subtype=subtype)
    else:
        raise InvalidInputError(f"encoding must be one of {list(ENCODINGS)}, got {encoding!r}",
                                field="encoding")
    return buf.getvalue()


def g711_encode(audio: np.ndarray, law: str) -> bytes:
    """float [N] -> headerless 8-bit G.711 bytes (``law`` "MULAW" or "ALAW"), as libsndfile encodes them."""
    import soundfile as sf
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(audio, dtype=np.float32), -1, 1), 8000, format="RAW",
             subtype="ULAW" if law == "MULAW" else "ALAW")
    return buf.getvalue()


def g711_decode(data: bytes, law: str) -> np.ndarray:
    """Inverse of ``g711_encode``: headerless G.711 bytes -> float32 [N]."""
    import soundfile as sf
    samples, _ = sf.read(io.BytesIO(data), dtype="float32", format="RAW", samplerate=8000, channels=1,
                         subtype="ULAW" if law == "MULAW" else "ALAW")
    return samples.reshape(-1)


def _umask() -> int:
    """The process's file-creation mask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that the file, once it exists, is complete.

    The bytes go to a temporary file in the same folder, are flushed to disk,
    and the temporary file is renamed over ``path``. The file gets the mode a
    plain ``open()`` would give it (0666 less the umask).
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_wav(path: str | os.PathLike[str], audio: np.ndarray, sample_rate: int) -> None:
    """Atomically write a 16-bit PCM mono WAV file."""
    write_atomic(path, encode(audio, sample_rate, "WAV"))


def write_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Atomically write a ``.npy`` file."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    write_atomic(path, buf.getvalue())
