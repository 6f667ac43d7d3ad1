"""Incremental encoders for responses that stream: float audio pieces in, bytes out as the codec makes them.

``open_encoder(fmt, rate)`` gives an object with ``push(audio) -> bytes`` and
``finish() -> bytes``; the concatenation of everything they return is one
file of that format (``tests/test_server_http.py`` decodes it whole):

- ``pcm``: headerless 16-bit little-endian samples (every piece at once).
- ``wav``: a 16-bit PCM WAV header whose RIFF and data sizes say "unknown"
  (0xFFFFFFFF, as streaming WAV writers do; libsndfile, ffmpeg and browsers
  read to the end of the stream), then the samples of every piece at once.
- ``mp3``: libsndfile's LAME encoder (constant bit rate) writing to a sink
  that hands out whatever bytes it has. A stream cannot carry LAME's
  Xing/Info tag: LAME writes an empty frame in its place first and fills it
  in at the end, after the start of the stream was sent, so the empty frame
  is left out. Without the tag a decoder cannot trim the codec's delay, so
  the decoded audio starts ``MP3_STREAM_DELAY`` samples late and ends with
  up to about a frame of padding (a whole MP3 file of ``tts.audio.encode``
  has the tag and decodes to exactly its samples).
- ``opus``: Ogg Opus through libsndfile; Ogg pages go out as they fill
  (about one a second of audio). Its pre-skip header trims the codec delay.
- ``flac``: sent whole at the end: its STREAMINFO (sample count, MD5) is
  written last, and readers such as libsndfile refuse a FLAC stream whose
  length is unknown.

Samples are float32 at the rate given; integer formats clip to [-1, 1].
"""

from __future__ import annotations

import io
import struct

import numpy as np

from tts import audio as _audio

#: response_format -> Content-Type.
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "mulaw": "audio/basic",          # headerless 8-bit G.711 mu-law (RFC 2046's audio/basic)
    "alaw": "audio/x-alaw-basic",    # headerless 8-bit G.711 A-law
}

#: Formats whose bytes go out while the audio is being made (flac waits for the whole audio).
STREAMED = ("mp3", "opus", "wav", "pcm", "mulaw", "alaw")

#: Samples of silence a decoder puts before a streamed MP3's audio (LAME's encoder delay of 576 plus
#: the decoder's 529): the Xing/Info tag that tells decoders to drop them cannot be streamed.
MP3_STREAM_DELAY = 1105

#: libsndfile compression level of streamed MP3 (constant bit rate: 80 kbit/s at 22.05 kHz, 160 at 44.1 kHz).
#: Constant, so a decoder that estimates the length from the first frame (libsndfile does) gets it right.
MP3_COMPRESSION_LEVEL = 0.5


def format_rate(fmt: str, voice_rate: int) -> int:
    """The sample rate a format is sent at: the voice's own where the codec takes it; Opus at 48 kHz
    when the voice's rate is not an Opus rate (as ``tts.server.audio.output_rate``); MP3 at the
    nearest higher MPEG rate."""
    if fmt == "opus" and voice_rate not in _audio.OPUS_RATES:
        return 48000
    if fmt == "mp3" and voice_rate not in _audio.MP3_RATES:
        return next((r for r in _audio.MP3_RATES if r > voice_rate), 48000)
    return voice_rate


class _Sink:
    """A write-only, seekable file for libsndfile whose bytes are handed out by ``take``.

    Bytes already handed out are gone: a later write over them (a header fixed
    up at close) is dropped, and a format's stream must not need it.
    """

    def __init__(self) -> None:
        self._pos = 0           # libsndfile's position
        self._end = 0           # size of the file so far
        self._base = 0          # offset of the first byte not yet handed out
        self._pending = bytearray()
        #: Size of the first write at offset 0 (a header or placeholder frame).
        self.first_write: int | None = None

    def write(self, data) -> int:
        data = bytes(data)
        start, end = self._pos, self._pos + len(data)
        if self.first_write is None and start == 0:
            self.first_write = len(data)
        if end > self._base:
            lo = max(start, self._base)
            off = lo - self._base
            chunk = data[lo - start:]
            if off + len(chunk) > len(self._pending):
                self._pending.extend(bytes(off + len(chunk) - len(self._pending)))
            self._pending[off:off + len(chunk)] = chunk
        self._pos = end
        self._end = max(self._end, end)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._end}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:      # libsndfile may probe; a sink has nothing to read
        return b""

    def take(self) -> bytes:
        """The bytes written since the last ``take`` (up to the end of the file so far)."""
        data = bytes(self._pending[:self._end - self._base])
        self._base += len(data)
        del self._pending[:len(data)]
        return data


class _Raw:
    """``pcm``: 16-bit little-endian samples, no header."""

    def __init__(self, rate: int) -> None:
        self.rate = rate

    def push(self, audio: np.ndarray) -> bytes:
        return _audio.to_pcm16(audio).tobytes()

    def finish(self) -> bytes:
        return b""


class _G711(_Raw):
    """``mulaw``/``alaw``: headerless 8-bit G.711 samples at the voice's rate (one byte each)."""

    def __init__(self, rate: int, law: str) -> None:
        super().__init__(rate)
        self.law = law

    def push(self, audio: np.ndarray) -> bytes:
        return _audio.g711_encode(audio, self.law)


def wav_stream_header(rate: int) -> bytes:
    """A 44-byte 16-bit mono PCM WAV header with RIFF and data sizes 0xFFFFFFFF (length unknown)."""
    unknown = 0xFFFFFFFF
    return (b"RIFF" + struct.pack("<I", unknown) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16)
            + b"data" + struct.pack("<I", unknown))


class _Wav(_Raw):
    """``wav``: the header with unknown sizes before the first samples."""

    def __init__(self, rate: int) -> None:
        super().__init__(rate)
        self._header = wav_stream_header(rate)

    def push(self, audio: np.ndarray) -> bytes:
        head, self._header = self._header, b""
        return head + super().push(audio)

    def finish(self) -> bytes:
        head, self._header = self._header, b""
        return head


class _SoundFileStream:
    """``mp3`` and ``opus``: a libsndfile encoder writing into a ``_Sink``."""

    def __init__(self, fmt: str, rate: int) -> None:
        import soundfile as sf

        self.fmt = fmt
        self.rate = rate
        self._sink = _Sink()
        if fmt == "mp3":
            self._file = sf.SoundFile(self._sink, "w", samplerate=rate, channels=1, format="MP3",
                                      subtype="MPEG_LAYER_III", bitrate_mode="CONSTANT",
                                      compression_level=MP3_COMPRESSION_LEVEL)
        else:
            self._file = sf.SoundFile(self._sink, "w", samplerate=rate, channels=1, format="OGG", subtype="OPUS")
        self._checked_tag = fmt != "mp3"

    def _out(self) -> bytes:
        data = self._sink.take()
        if not self._checked_tag and self._sink.first_write is not None and data:
            # LAME's placeholder for the Xing/Info tag: one frame, sync word then zeros. It is filled
            # in at close, after the stream's start is gone, so it is left out (see the module doc).
            n = self._sink.first_write
            self._checked_tag = True
            head = data[:n]
            if len(head) == n and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and not any(head[4:]):
                data = data[n:]
        return data

    def push(self, audio: np.ndarray) -> bytes:
        samples = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
        if len(samples):
            self._file.write(samples)
        return self._out()

    def finish(self) -> bytes:
        self._file.close()
        return self._out()


class _Whole:
    """``flac``: the audio is kept and encoded whole by ``tts.audio.encode`` at the end."""

    def __init__(self, fmt: str, rate: int) -> None:
        self.fmt, self.rate = fmt, rate
        self._pieces: list[np.ndarray] = []

    def push(self, audio: np.ndarray) -> bytes:
        self._pieces.append(np.asarray(audio, dtype=np.float32).reshape(-1))
        return b""

    def finish(self) -> bytes:
        whole = np.concatenate(self._pieces) if self._pieces else np.zeros(0, np.float32)
        return _audio.encode(whole, self.rate, self.fmt.upper())


def open_encoder(fmt: str, rate: int):
    """An incremental encoder of ``fmt`` (a key of ``CONTENT_TYPES``) at ``rate`` Hz."""
    if fmt == "pcm":
        return _Raw(rate)
    if fmt == "wav":
        return _Wav(rate)
    if fmt in ("mulaw", "alaw"):
        return _G711(rate, fmt.upper())
    if fmt in ("mp3", "opus"):
        return _SoundFileStream(fmt, rate)
    if fmt == "flac":
        return _Whole(fmt, rate)
    raise ValueError(f"no stream encoder for {fmt!r}")
