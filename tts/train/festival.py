"""The teacher voice: Festival with ``cmu_us_slt_arctic_hts``, run as a batch subprocess.

Festival is either the system one (``apt-get install festival festvox-us-slt-hts``)
or one unpacked from Debian ``.deb`` files with ``dpkg -x`` into a prefix (the
GPU machine has no apt): then the binary is ``PREFIX/usr/bin/festival``, its
shared libraries come from ``PREFIX/{usr/,}lib/x86_64-linux-gnu`` through
``LD_LIBRARY_PATH``, and ``--datadir PREFIX/usr/share/festival`` (Debian keeps
``init.scm``, lexicons and voices there) ``--libdir PREFIX/usr/lib/festival``.

One Festival process speaks a whole batch: a generated Scheme script
synthesizes each text, saves the wave (RIFF, 16-bit, the voice's 32 kHz) and
dumps every token's phones with start and end times (from the Token ->
Word -> SylStructure -> Segment relations) to a text file::

    T <token>
    P <phone> <start_s> <end_s>
    ...

Pauses (``pau``) belong to no word, so they appear as gaps between tokens.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

#: The teacher voice (Festival voice name, without the ``voice_`` prefix).
TEACHER_VOICE = "cmu_us_slt_arctic_hts"

_SCHEME_PRELUDE = r"""
(define (tts_dump_token fd tok)
  (format fd "T %s\n" (item.name tok))
  (mapcar
   (lambda (w)
     (let ((ws (item.relation w 'SylStructure)))
       (if ws
           (mapcar
            (lambda (syl)
              (mapcar
               (lambda (seg)
                 (format fd "P %s %f %f\n" (item.name seg)
                         (item.feat seg "segment_start") (item.feat seg "end")))
               (item.daughters syl)))
            (item.daughters ws)))))
   (item.daughters tok)))
(define (tts_dump_from fd tok)
  (if tok
      (begin (tts_dump_token fd tok) (tts_dump_from fd (item.next tok)))))
(define (tts_dump utt fname)
  (let ((fd (fopen fname "w")))
    (tts_dump_from fd (utt.relation.first utt 'Token))
    (fclose fd)))
(define (tts_do text wavfile segfile)
  (let ((utt (eval (list 'Utterance 'Text text))))
    (utt.synth utt)
    (utt.save.wave utt wavfile 'riff)
    (tts_dump utt segfile)))
"""


@dataclass(frozen=True)
class Phone:
    """One phone of a token: name and times in seconds from the start of the wave."""

    name: str
    start: float
    end: float


@dataclass
class Token:
    """One whitespace-delimited token as Festival saw it, with its phones (maybe none)."""

    name: str
    phones: list[Phone] = field(default_factory=list)


def parse_segments(text: str) -> list[Token]:
    """Parse a dump written by the generated Scheme (see the module docstring)."""
    tokens: list[Token] = []
    for line in text.splitlines():
        if line.startswith("T"):
            tokens.append(Token(line[2:] if len(line) > 2 else ""))
        elif line.startswith("P "):
            _, name, start, end = line.split()
            if not tokens:
                raise ValueError("phone before any token in a Festival dump")
            tokens[-1].phones.append(Phone(name, float(start), float(end)))
    return tokens


def _scheme_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Festival:
    """How to run Festival: the system install (``prefix=None``) or a ``dpkg -x`` prefix."""

    prefix: Path | None = None
    """Folder the ``.deb`` files were unpacked into, or None for the system Festival."""
    voice: str = TEACHER_VOICE
    """Festival voice name (``voice_<name>`` is called)."""

    @classmethod
    def from_env(cls, prefix: str | os.PathLike[str] | None = None) -> Festival:
        """``prefix`` if given, else ``$FESTIVAL_PREFIX`` if set, else the system Festival."""
        p = prefix if prefix is not None else os.environ.get("FESTIVAL_PREFIX") or None
        return cls(prefix=Path(p) if p else None)

    def command(self) -> list[str]:
        if self.prefix is None:
            return ["festival"]
        p = self.prefix
        return [str(p / "usr/bin/festival"), "--datadir", str(p / "usr/share/festival"),
                "--libdir", str(p / "usr/lib/festival")]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.prefix is not None:
            libs = [self.prefix / d for d in ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu",
                                              "usr/lib/x86_64-linux-gnu/pulseaudio")]
            old = env.get("LD_LIBRARY_PATH")
            env["LD_LIBRARY_PATH"] = ":".join([str(x) for x in libs] + ([old] if old else []))
        return env

    def available(self) -> bool:
        """Whether this Festival runs and has the voice (a tiny script is run)."""
        try:
            r = subprocess.run(self.command() + ["-b", f"(voice_{self.voice})"], env=self.env(),
                               capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return r.returncode == 0 and b"SIOD ERROR" not in (r.stdout + r.stderr)

    def synthesize(self, items: Sequence[tuple[str, str]], out_dir: str | os.PathLike[str],
                   *, timeout: float | None = None) -> None:
        """Speak each ``(uid, text)``: ``out_dir/uid.wav`` (32 kHz) and ``out_dir/uid.seg``.

        ``text`` must not contain a double quote (our symbol strings never do). Raises
        ``RuntimeError`` with Festival's output when it fails.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        lines = [_SCHEME_PRELUDE, f"(voice_{self.voice})"]
        for uid, text in items:
            if '"' in text or "\\" in text:
                raise ValueError(f"{uid}: text for Festival must not contain quotes or backslashes")
            lines.append(f"(tts_do {_scheme_string(text)} {_scheme_string(str(out / (uid + '.wav')))} "
                         f"{_scheme_string(str(out / (uid + '.seg')))})")
        script = out / "_batch.scm"
        script.write_text("\n".join(lines) + "\n", encoding="utf-8")
        r = subprocess.run(self.command() + ["-b", str(script)], env=self.env(), capture_output=True,
                           timeout=timeout, check=False)
        msg = (r.stdout + r.stderr).decode(errors="replace")
        if r.returncode != 0 or "SIOD ERROR" in msg:
            raise RuntimeError(f"festival failed (exit {r.returncode}): {msg[-2000:]}")
        missing = [uid for uid, _ in items if not (out / (uid + ".wav")).is_file()]
        if missing:
            raise RuntimeError(f"festival wrote no audio for {missing[:5]}: {msg[-2000:]}")
        script.unlink()
