"""DLE's ``english_cleaners`` and the two transliterations that feed it.

``english_cleaners`` = transliterate to ASCII, lowercase, expand numbers, expand
abbreviations, collapse every run of whitespace to one space (nothing is stripped).
The two front ends differ only in the transliteration:

- ``tacotron2``: DLE Tacotron2's own table (``_dle_translit``); characters below
  U+007F pass through, characters it has no entry for are deleted;
- ``fastspeech``: the ``unidecode`` package, as DLE's CUDA-Optimized FastSpeech uses.
"""

from __future__ import annotations

import functools
import re

from unidecode import unidecode

from tts.errors import InvalidInputError
from tts.text._dle_translit import TABLE as _DLE_TABLE
from tts.text.numbers import normalize_numbers

FRONTENDS: tuple[str, ...] = ("tacotron2", "fastspeech")

_WHITESPACE_RE = re.compile(r"\s+")

# DLE's abbreviations, applied one after another in this order (the order matters:
# "lt.col." becomes "lieutenantcol." because the first replacement eats the period
# that made the boundary before "col").
_ABBREVIATIONS: tuple[tuple[re.Pattern, str], ...] = tuple(
    (re.compile(rf"\b{abbr}\.", re.IGNORECASE), word)
    for abbr, word in (
        ("mrs", "misess"), ("mr", "mister"), ("dr", "doctor"), ("st", "saint"),
        ("co", "company"), ("jr", "junior"), ("maj", "major"), ("gen", "general"),
        ("drs", "doctors"), ("rev", "reverend"), ("lt", "lieutenant"), ("hon", "honorable"),
        ("sgt", "sergeant"), ("capt", "captain"), ("esq", "esquire"), ("ltd", "limited"),
        ("col", "colonel"), ("ft", "fort"),
    )
)

# Characters of transliterated text that cleaning keeps but no symbol stands for, so
# that the id mapping drops them: all but letters, the symbol punctuation, digits
# (spelled out), whitespace (collapsed to a space) and a "$" that starts an amount.
_UNSPOKEN_RE = re.compile(r"\$(?![0-9.,]*[0-9])|[^\sA-Za-z0-9!'(),.:;?$-]")


def _translit_tacotron2(char: str) -> str | None:
    return char if ord(char) < 127 else _DLE_TABLE.get(char)


@functools.lru_cache(maxsize=8192)
def _translit_fastspeech(char: str) -> str | None:
    if 0xD800 <= ord(char) <= 0xDFFF:  # lone surrogate: unidecode would warn, then drop it
        return None
    return unidecode(char) or None


def check_frontend(frontend: str) -> None:
    """Raise ``InvalidInputError`` (field ``frontend``) unless ``frontend`` is in FRONTENDS."""
    if frontend not in FRONTENDS:
        raise InvalidInputError(
            f"unknown text frontend {frontend!r}; expected one of {', '.join(FRONTENDS)}",
            field="frontend",
        )


def to_ascii(text: str, frontend: str) -> tuple[str, str]:
    """Transliterate ``text`` to ASCII with the front end's table.

    Returns ``(ascii_text, dropped)``: ``dropped`` holds, in order of appearance, the
    input characters that have no transliteration (deleted here) and the characters
    of the result that will have no symbol after cleaning (``%``, ``"``, ``&``, a
    stray ``{`` ...), which the id mapping deletes later.
    """
    if frontend == "tacotron2":
        translit = _translit_tacotron2
        plain = text.isascii() and "\x7f" not in text
    else:
        translit = _translit_fastspeech
        plain = text.isascii()
    if plain:
        out = text
        missing: list[tuple[int, str]] = []
    else:
        parts: list[str] = []
        missing = []
        size = 0
        for char in text:
            ascii_char = translit(char)
            if ascii_char is None:
                missing.append((size, char))
            else:
                parts.append(ascii_char)
                size += len(ascii_char)
        out = "".join(parts)
    unspoken = [(m.start(), m.group()) for m in _UNSPOKEN_RE.finditer(out)]
    if not missing:
        return out, "".join(c for _, c in unspoken)
    # Merge by position in the output; a deleted input character comes before the
    # output character at the same position (it preceded it in the input).
    events = [(pos, 0, c) for pos, c in missing] + [(pos, 1, c) for pos, c in unspoken]
    events.sort(key=lambda e: e[:2])  # stable: equal keys keep their input order
    return out, "".join(c for _, _, c in events)


def expand_abbreviations(text: str) -> str:
    """DLE's abbreviation expansion ("mr." -> "mister", "st." -> "saint", ...)."""
    if "." not in text:
        return text
    for regex, word in _ABBREVIATIONS:
        text = regex.sub(word, text)
    return text


def english_cleaners_ascii(text: str) -> str:
    """DLE's ``english_cleaners`` after its first step, on already transliterated text."""
    text = normalize_numbers(text.lower())
    text = expand_abbreviations(text)
    return _WHITESPACE_RE.sub(" ", text)
