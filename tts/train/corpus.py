"""The synthetic training corpus: teacher audio, mels and per-symbol durations.

Two teachers: Festival's ``cmu_us_slt_arctic_hts`` (``tts.train.festival``, a
subprocess per batch, 32 kHz) and hibari (``tts.train.hibari``, Kokoro-82M's
``af_heart`` distilled, in process, 24 kHz); ``build_shard`` takes either.

For each transcript the text goes through OUR frontend (``english_cleaners``,
the ``fastspeech`` transliteration); the resulting symbol string (exactly the
characters that have ids) is what the teacher speaks, so that every teacher
token is one whitespace-delimited chunk of our symbols. The teacher's phone
times are then mapped onto our symbols (``symbol_boundaries``):

- the letters of a token share its phones monotonically: letter ``j`` of
  ``m`` covers phone positions ``[j n / m, (j+1) n / m)`` of the token's ``n``
  phones, and phone positions become time through each phone's own start and
  end, so long phones give their letters more frames;
- the time between two tokens (a pause, or nothing) goes to one symbol of the
  gap: its first punctuation mark if it has one, else its space;
- leading and trailing silence (trimmed to ``LEAD_S``/``TAIL_S``) go to the
  leading/trailing punctuation, else to the first/last letter;
- times become frame boundaries by rounding ``t * sr / hop``, so the
  durations are non-negative integers whose sum is exactly the mel length
  ``1 + n_samples // hop``.

Audio is resampled from the teacher's rate (Festival 32 kHz, hibari 24 kHz) to
22050 Hz (polyphase, ``tts.audio.resample``); mels are NVIDIA's
(``tts.models.stft.MelSpectrogram``: 80 bands, n_fft 1024, hop 256, win
1024, fmin 0, fmax 8000, natural log).

On disk a corpus is a folder of shards; each shard folder holds
``meta.jsonl`` (one JSON object per utterance: ``uid``, ``text``,
``symbols``, ``ids``, ``durations``, ``n_samples``, ``n_frames``,
``audio_offset``, ``mel_offset``), ``audio.npy`` (int16, all utterances
concatenated), ``mel.npy`` (float16 ``[sum n_frames, 80]``) and ``DONE``
once complete. While a shard is being built every finished utterance is kept in
``shard_NNN.partial/`` (``UID.npz``, or ``UID.skip`` for one that could not be
aligned), so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from tts.train.festival import Festival, Token, parse_segments



class SpokenText(Protocol):
    """What an in-process teacher returns for one text."""

    audio: np.ndarray   # mono float, at ``rate``
    rate: int
    tokens: list[Token]   # one per whitespace-delimited chunk of the text, phone times in seconds


class InProcessTeacher(Protocol):
    def speak(self, text: str, seed: int = 0) -> SpokenText: ...


class TeacherConfig(Protocol):
    """A picklable recipe for an in-process teacher (``tts.train.hibari.HibariConfig``), loaded once
    per worker process."""

    name: str

    def load(self) -> InProcessTeacher: ...

logger = logging.getLogger(__name__)

SAMPLE_RATE = 22050
HOP = 256
N_MELS = 80
#: Seconds of silence kept before the first phone and after the last.
LEAD_S = 0.10
TAIL_S = 0.15
#: Utterances per Festival process (one process start per batch).
FESTIVAL_BATCH = 40

_CHUNK_RE = re.compile(r"\S+")


def symbol_text(text: str, frontend: str = "fastspeech") -> str:
    """The symbols our frontend makes of ``text``, as a string (one character per id)."""
    from tts.text import SYMBOLS, encode

    ids = encode(text, frontend).ids
    if any(len(SYMBOLS[i]) != 1 for i in ids):
        raise ValueError("ARPAbet input is not supported in the training corpus")
    return "".join(SYMBOLS[i] for i in ids)


class AlignmentError(ValueError):
    """Festival's tokens do not match our symbol string."""


def symbol_boundaries(symbols: str, tokens: Sequence[Token], total_s: float,
                      offset_s: float = 0.0) -> np.ndarray:
    """Time boundaries ``[len(symbols) + 1]`` (seconds from ``offset_s``), non-decreasing,
    first 0 and last ``total_s``; symbol ``i`` spans ``[b[i], b[i+1]]``."""
    chunks = [(m.start(), m.end()) for m in _CHUNK_RE.finditer(symbols)]
    if len(chunks) != len(tokens):
        raise AlignmentError(f"{len(chunks)} chunks of text but Festival made {len(tokens)} tokens")
    n = len(symbols)
    b = np.full(n + 1, np.nan)
    cores: list[tuple[int, int]] = []  # char spans that carry phones, in order
    for (a, e), tok in zip(chunks, tokens):
        phones = tok.phones
        chunk = symbols[a:e]
        alnum = [i for i, c in enumerate(chunk) if c.isalnum()]
        if not phones or not alnum:
            continue
        c0, c1 = a + alnum[0], a + alnum[-1] + 1
        m, k = c1 - c0, len(phones)
        starts = np.array([p.start for p in phones]) - offset_s
        ends = np.array([p.end for p in phones]) - offset_s
        for j in range(m + 1):
            x = j * k / m
            i = int(math.floor(x))
            if i >= k:
                t = ends[-1]
            else:
                t = starts[i] + (x - i) * (ends[i] - starts[i])
            b[c0 + j] = t
        cores.append((c0, c1))
    if not cores:
        raise AlignmentError("Festival produced no phones for this text")
    # Gaps: before the first core, between cores, after the last.
    edges = [(0, cores[0][0], 0.0, b[cores[0][0]])]
    for (p0, p1), (q0, q1) in zip(cores, cores[1:]):
        edges.append((p1, q0, b[p1], b[q0]))
    edges.append((cores[-1][1], n, b[cores[-1][1]], total_s))
    for g0, g1, t0, t1 in edges:
        t0, t1 = float(t0), float(t1)
        if g1 == g0:  # no symbol in the gap: the neighbouring letter absorbs it (b[0], b[n] below)
            continue
        gap = symbols[g0:g1]
        punct = [i for i, c in enumerate(gap) if not c.isalnum() and c != " "]
        spaces = [i for i, c in enumerate(gap) if c == " "]
        r = g0 + (punct[0] if punct else (spaces[0] if spaces else 0))
        b[g0:r + 1] = t0
        b[r + 1:g1 + 1] = t1
    b[0] = 0.0
    b[n] = total_s
    if np.isnan(b).any():
        raise AlignmentError("internal: unset symbol boundary")
    return np.maximum.accumulate(np.clip(b, 0.0, total_s))


def boundaries_to_durations(b: np.ndarray, n_frames: int, sr: int = SAMPLE_RATE,
                            hop: int = HOP) -> np.ndarray:
    """Seconds -> frame boundaries (rounded) -> int durations ``[len(b) - 1]`` summing to ``n_frames``."""
    f = np.rint(np.asarray(b) * sr / hop).astype(np.int64)
    f = np.clip(f, 0, n_frames)
    f[0] = 0
    f[-1] = n_frames
    f = np.maximum.accumulate(f)
    return np.diff(f)


def trim_window(tokens: Sequence[Token], duration_s: float) -> tuple[float, float]:
    """Seconds ``(start, end)`` of the teacher wave to keep: the phones plus LEAD_S/TAIL_S."""
    phones = [p for t in tokens for p in t.phones]
    if not phones:
        return 0.0, duration_s
    return max(0.0, phones[0].start - LEAD_S), min(duration_s, phones[-1].end + TAIL_S)


def resample_to(audio: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling (``tts.audio.resample``) -> float64."""
    from tts.audio import resample

    return resample(np.asarray(audio, dtype=np.float64), int(rate), int(target)).astype(np.float64)


@dataclass
class Utterance:
    """One processed utterance (before it is written into a shard)."""

    uid: str
    text: str
    symbols: str
    ids: list[int]
    durations: list[int]
    audio: np.ndarray  # int16 [n_samples] at 22050 Hz
    mel: np.ndarray  # float16 [n_frames, 80]


class MelMaker:
    """NVIDIA's mel front end on CPU (one per process)."""

    def __init__(self) -> None:
        import torch

        from tts.models.stft import MelSpectrogram
        self._torch = torch
        self.mel = MelSpectrogram(1024, HOP, 1024, N_MELS, SAMPLE_RATE, 0.0, 8000.0).eval()

    def __call__(self, audio_int16: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.no_grad():
            x = torch.from_numpy(audio_int16.astype(np.float32) / 32768.0).unsqueeze(0)
            return self.mel(x)[0].T.contiguous().numpy()  # [T, 80] float32


def process_teacher_output(uid: str, text: str, symbols: str, wav_path: Path, seg_path: Path,
                           mel_maker: MelMaker) -> Utterance:
    """Festival's wave + segment dump -> trimmed 22050 Hz audio, mel, symbol durations."""
    import soundfile as sf

    tokens = parse_segments(seg_path.read_text(encoding="utf-8"))
    audio, rate = sf.read(str(wav_path), dtype="float64", always_2d=False)
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    return process_teacher_audio(uid, text, symbols, audio, rate, tokens, mel_maker)


def process_teacher_audio(uid: str, text: str, symbols: str, audio: np.ndarray, rate: int,
                          tokens: Sequence[Token], mel_maker: MelMaker) -> Utterance:
    """A teacher's mono audio at ``rate`` and its tokens (one per whitespace chunk of
    ``symbols``, phone times in seconds) -> trimmed 22050 Hz audio, mel, symbol durations."""
    from tts.text.symbols import SYMBOL_TO_ID

    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    t0, t1 = trim_window(tokens, len(audio) / rate)
    seg = audio[int(round(t0 * rate)):int(round(t1 * rate))]
    y = resample_to(seg, rate)
    pcm = np.clip(np.rint(y * 32768.0), -32768, 32767).astype(np.int16)
    n_frames = 1 + len(pcm) // HOP
    b = symbol_boundaries(symbols, tokens, len(pcm) / SAMPLE_RATE, offset_s=t0)
    durations = boundaries_to_durations(b, n_frames)
    mel = mel_maker(pcm)
    if mel.shape[0] != n_frames or int(durations.sum()) != n_frames:
        raise AlignmentError(f"{uid}: frame count mismatch ({mel.shape[0]}, {durations.sum()}, {n_frames})")
    return Utterance(uid=uid, text=text, symbols=symbols, ids=[SYMBOL_TO_ID[c] for c in symbols],
                     durations=[int(d) for d in durations], audio=pcm, mel=mel.astype(np.float16))


def write_shard(folder: Path, utts: Sequence[Utterance], stats: dict) -> None:
    """Write a shard folder atomically enough: files first, ``DONE`` last."""
    folder.mkdir(parents=True, exist_ok=True)
    audio_off = mel_off = 0
    with open(folder / "meta.jsonl", "w", encoding="utf-8") as f:
        for u in utts:
            f.write(json.dumps({"uid": u.uid, "text": u.text, "symbols": u.symbols, "ids": u.ids,
                                "durations": u.durations, "n_samples": int(len(u.audio)),
                                "n_frames": int(u.mel.shape[0]), "audio_offset": audio_off,
                                "mel_offset": mel_off}) + "\n")
            audio_off += len(u.audio)
            mel_off += u.mel.shape[0]
    np.save(folder / "audio.npy", np.concatenate([u.audio for u in utts]) if utts
            else np.zeros(0, np.int16))
    np.save(folder / "mel.npy", np.concatenate([u.mel for u in utts]) if utts
            else np.zeros((0, N_MELS), np.float16))
    (folder / "stats.json").write_text(json.dumps(stats, indent=1), encoding="utf-8")
    (folder / "DONE").write_text("ok\n", encoding="utf-8")


def write_tone_corpus(root: str | os.PathLike[str], n: int = 4, seconds: float = 1.0,
                      seed: int = 0) -> Path:
    """A one-shard corpus of ``n`` harmonic tones with a little noise, ``seconds`` long each,
    without Festival: for smoke runs and speed measurements of the trainers (the recipe's
    ``gpu.sh`` included). Each utterance's text is ``"a tone."``, its frames shared evenly among
    the symbols; its mel is the real mel of its audio. Returns ``root``; a finished shard already
    there is kept."""
    from tts.text.symbols import SYMBOL_TO_ID

    root = Path(root)
    if not (root / "shard_000" / "DONE").is_file():
        rng = np.random.default_rng(seed)
        mm = MelMaker()
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        text = "a tone."
        utts = []
        for k in range(n):
            f0 = rng.uniform(120, 260)
            wave = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 12))
            wave = 0.2 * wave / np.abs(wave).max() + 0.01 * rng.standard_normal(t.size)
            audio = (wave * 32767).astype(np.int16)
            n_frames = 1 + len(audio) // HOP
            durations = np.diff(np.linspace(0, n_frames, len(text) + 1).round().astype(int))
            utts.append(Utterance(uid=f"tone{k}", text=text, symbols=text,
                                  ids=[SYMBOL_TO_ID[c] for c in text],
                                  durations=[int(d) for d in durations], audio=audio,
                                  mel=mm(audio).astype(np.float16)))
        write_shard(root / "shard_000", utts, {"utterances": n})
    return root


def _save_partial(partial: Path, u: Utterance) -> None:
    tmp = partial / f"{u.uid}.tmp.npz"
    np.savez(tmp, audio=u.audio, mel=u.mel, durations=np.asarray(u.durations, np.int32),
             ids=np.asarray(u.ids, np.int32),
             meta=np.frombuffer(json.dumps({"text": u.text, "symbols": u.symbols}).encode(), np.uint8))
    os.replace(tmp, partial / f"{u.uid}.npz")


def _load_partial(path: Path) -> Utterance:
    with np.load(path) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        return Utterance(uid=path.stem, text=meta["text"], symbols=meta["symbols"],
                         ids=[int(i) for i in z["ids"]], durations=[int(d) for d in z["durations"]],
                         audio=z["audio"].copy(), mel=z["mel"].copy())


def utterance_seed(uid: str) -> int:
    """The seed of an utterance's random draws (hibari's noise): reproducible, one per utterance."""
    return zlib.crc32(uid.encode("utf-8"))


def build_shard(items: Sequence[tuple[str, str]], folder: str | os.PathLike[str],
                teacher: Festival | TeacherConfig, *, batch: int = FESTIVAL_BATCH) -> dict:
    """Speak ``(uid, text)`` items with the teacher (``Festival`` or ``tts.train.hibari.HibariConfig``)
    and write one shard; skips a finished shard, and resumes an interrupted one from its
    ``.partial`` folder (utterances already made are not made again).

    Returns the shard's stats (utterances kept/skipped, audio seconds, wall seconds).
    """
    import torch

    folder = Path(folder)
    if (folder / "DONE").is_file():
        return json.loads((folder / "stats.json").read_text(encoding="utf-8"))
    torch.set_num_threads(1)
    mel_maker = MelMaker()
    partial = folder.parent / (folder.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    done = {p.stem for p in partial.glob("*.npz") if not p.name.endswith(".tmp.npz")}
    skipped_before = {p.stem for p in partial.glob("*.skip")}
    start = time.time()
    teacher_s = 0.0
    resumed = len(done) + len(skipped_before)

    def skip(uid: str, why: str) -> None:
        (partial / f"{uid}.skip").write_text(why + "\n", encoding="utf-8")

    todo = []
    for uid, text in items:
        if uid in done or uid in skipped_before:
            continue
        sym = symbol_text(text)
        if not sym.strip(" "):
            skip(uid, "empty symbol text")
            continue
        todo.append((uid, text, sym))
    if isinstance(teacher, Festival):
        tmp = Path(tempfile.mkdtemp(prefix="teacher_", dir=folder.parent))
        try:
            for i in range(0, len(todo), batch):
                chunk = todo[i:i + batch]
                t = time.time()
                teacher.synthesize([(u, s) for u, _, s in chunk], tmp)
                teacher_s += time.time() - t
                for uid, text, sym in chunk:
                    try:
                        _save_partial(partial, process_teacher_output(uid, text, sym, tmp / f"{uid}.wav",
                                                                      tmp / f"{uid}.seg", mel_maker))
                    except AlignmentError as exc:
                        logger.warning("%s skipped: %s", uid, exc)
                        skip(uid, str(exc))
                    (tmp / f"{uid}.wav").unlink(missing_ok=True)
                    (tmp / f"{uid}.seg").unlink(missing_ok=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        hib = teacher.load()
        for uid, text, sym in todo:
            try:
                t = time.time()
                spoken = hib.speak(sym, seed=utterance_seed(uid))
                teacher_s += time.time() - t
                _save_partial(partial, process_teacher_audio(uid, text, sym, spoken.audio, spoken.rate,
                                                             spoken.tokens, mel_maker))
            except AlignmentError as exc:
                logger.warning("%s skipped: %s", uid, exc)
                skip(uid, str(exc))
    utts: list[Utterance] = []
    skipped: list[str] = []
    for uid, _ in items:
        if (partial / f"{uid}.npz").is_file():
            utts.append(_load_partial(partial / f"{uid}.npz"))
        else:
            skipped.append(uid)
    stats = {"teacher": "festival" if isinstance(teacher, Festival) else teacher.name, "utterances": len(utts), "skipped": skipped,
             "audio_seconds": sum(len(u.audio) for u in utts) / SAMPLE_RATE,
             "wall_seconds": time.time() - start, "teacher_seconds": teacher_s,
             "resumed_utterances": resumed}
    write_shard(folder, utts, stats)
    shutil.rmtree(partial, ignore_errors=True)
    return stats


# -- reading ------------------------------------------------------------------


@dataclass
class Item:
    """One utterance of a loaded corpus (arrays are views into the shard's files)."""

    uid: str
    ids: np.ndarray  # int64 [T_in]
    durations: np.ndarray  # int64 [T_in]
    mel: np.ndarray  # float16 [T, 80]
    audio: np.ndarray  # int16 [N]


class Corpus:
    """All finished shards of a corpus folder, memory-mapped."""

    def __init__(self, root: str | os.PathLike[str], *, mmap: bool = True) -> None:
        self.root = Path(root)
        shards = sorted(p for p in self.root.iterdir() if (p / "DONE").is_file()) \
            if self.root.is_dir() else []
        if not shards:
            raise FileNotFoundError(f"{self.root}: no finished corpus shards (run build_corpus first)")
        self.items: list[Item] = []
        mode = "r" if mmap else None
        for shard in shards:
            audio = np.load(shard / "audio.npy", mmap_mode=mode)
            mel = np.load(shard / "mel.npy", mmap_mode=mode)
            for line in (shard / "meta.jsonl").read_text(encoding="utf-8").splitlines():
                m = json.loads(line)
                a, t = m["audio_offset"], m["mel_offset"]
                self.items.append(Item(
                    uid=m["uid"], ids=np.asarray(m["ids"], dtype=np.int64),
                    durations=np.asarray(m["durations"], dtype=np.int64),
                    mel=mel[t:t + m["n_frames"]], audio=audio[a:a + m["n_samples"]]))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Item:
        return self.items[i]

    @property
    def audio_seconds(self) -> float:
        return sum(len(it.audio) for it in self.items) / SAMPLE_RATE
