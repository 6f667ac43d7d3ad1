"""Pronunciation lexicons: words spoken with given ARPAbet phonemes.

A lexicon maps words to phoneme sequences. ``tts.text.sequence.encode`` looks up
every word of the *cleaned* text (after the normalizer and ``english_cleaners``,
so it sees what is spoken: lower-case words, numbers and abbreviations already
read out) and speaks a word it finds with its phonemes, as if it had been
written as an ARPAbet ``{...}`` group. Explicit ``{...}`` groups of the text are
never looked up. The ``full`` normalizer reads a lexicon word written in capitals
("SQL") as a word instead of spelling it, so that the lookup finds it.

Two sources:

- a lexicon file (``--lexicon FILE``): CMUdict lines ``WORD  AH0 B AW1 T``;
  comments start with ``;;;`` or ``#``; words are case-insensitive; variants
  ``WORD(2)`` are ignored when the word already has a pronunciation (the first
  one wins); words that cannot appear in cleaned text (``!EXCLAMATION-POINT``,
  ``A.``, digits) are skipped.
- a Riva request's ``custom_dictionary``: ``word  PHONEMES`` entries (word and
  phonemes separated by two spaces) separated by commas.

Phonemes are the 84 ARPAbet symbols of the voices (``tts.text.symbols.ARPABET``,
stress digits included); any other symbol is an error that names it.
"""

from __future__ import annotations

import logging
import os
import re
from collections import ChainMap
from collections.abc import Iterator, Mapping
from pathlib import Path

from tts.errors import InvalidInputError
from tts.text.symbols import ARPABET

logger = logging.getLogger(__name__)

_ARPABET = frozenset(ARPABET)

#: A word of cleaned text: letters, with inner apostrophes ("don't").
WORD_RE = re.compile(r"[a-z]+(?:'[a-z]+)*")
_VARIANT_RE = re.compile(r"^(.+)\((\d+)\)$")


class Lexicon(Mapping[str, tuple[str, ...]]):
    """Word (lower case) -> ARPAbet phonemes. Immutable; ``merged`` makes a new one (in layers, so a
    call's few entries on top of a server's large lexicon copy nothing)."""

    def __init__(self, entries: Mapping[str, tuple[str, ...]] | None = None, *, source: str = "") -> None:
        self._entries: Mapping[str, tuple[str, ...]] = dict(entries or {})
        #: Where the entries came from (file names), for messages.
        self.source = source

    def __getitem__(self, word: str) -> tuple[str, ...]:
        return self._entries[word]

    def __contains__(self, word: object) -> bool:
        return word in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Lexicon({len(self)} words{', from ' + self.source if self.source else ''})"

    def merged(self, other: Lexicon | None) -> Lexicon:
        """This lexicon with ``other``'s entries on top (``other`` wins where both have a word)."""
        if not other:
            return self
        if not self:
            return other
        out = Lexicon(source=" + ".join(s for s in (self.source, other.source) if s))
        out._entries = ChainMap(other._entries, self._entries)     # type: ignore[arg-type]
        return out


def _phonemes(symbols: list[str], where: str) -> tuple[str, ...]:
    upper = [s.upper() for s in symbols]
    unknown = [s for s, u in zip(symbols, upper) if u not in _ARPABET]
    if unknown:
        raise InvalidInputError(
            f"{where}: unknown ARPAbet symbol{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(s) for s in dict.fromkeys(unknown))} (phonemes are CMUdict's ARPAbet with stress "
            f"digits, e.g. AH0 B AW1 T)", field="lexicon")
    return tuple(upper)


def parse_lexicon(text: str, source: str = "<lexicon>") -> Lexicon:
    """A lexicon from CMUdict-style lines (see the module doc). Raises InvalidInputError
    (field ``lexicon``) naming ``source`` and the line of the first bad entry."""
    entries: dict[str, tuple[str, ...]] = {}
    skipped = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith((";;;", "#")):
            continue
        parts = line.split()
        where = f"{source}: line {n}"
        if len(parts) < 2:
            raise InvalidInputError(f"{where}: {line[:60]!r} has a word but no phonemes (expected "
                                    "'WORD  PH ON EMES', e.g. 'ABOUT  AH0 B AW1 T')", field="lexicon")
        word = parts[0].lower()
        variant = _VARIANT_RE.match(word)
        if variant:
            word = variant.group(1)
        phonemes = _phonemes(parts[1:], where)
        if not WORD_RE.fullmatch(word):
            skipped += 1          # punctuation names, abbreviations with dots, digits: never in cleaned text
            continue
        entries.setdefault(word, phonemes)
    if skipped:
        logger.info("%s: %d entries skipped (words with characters other than letters and apostrophes)",
                    source, skipped)
    return Lexicon(entries, source=source)


def load_lexicon(path: str | os.PathLike[str]) -> Lexicon:
    """Reads a lexicon file (UTF-8, or Latin-1 as older CMUdict releases are). Raises
    InvalidInputError naming the file for a missing or unreadable file and bad lines."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"lexicon {p}: cannot read it ({exc.strerror or exc})", field="lexicon") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    lexicon = parse_lexicon(text, source=str(p))
    if not lexicon:
        raise InvalidInputError(f"lexicon {p}: no entries (expected lines 'WORD  PH ON EMES')", field="lexicon")
    return lexicon


def as_lexicon(value: Lexicon | str | os.PathLike[str] | Mapping[str, str] | None) -> Lexicon | None:
    """A Lexicon from a Lexicon, a file path, or a mapping word -> "PH ON EMES" (None stays None)."""
    if value is None or isinstance(value, Lexicon):
        return value
    if isinstance(value, (str, os.PathLike)):
        return load_lexicon(value)
    entries = {}
    for word, pron in value.items():
        key = str(word).strip().lower()
        if not WORD_RE.fullmatch(key):
            raise InvalidInputError(f"lexicon: {word!r} is not a word (letters and apostrophes)", field="lexicon")
        entries[key] = _phonemes(str(pron).split(), f"lexicon: {word!r}")
    return Lexicon(entries, source="<mapping>")


def parse_custom_dictionary(value: str, field: str = "custom_dictionary") -> Lexicon | None:
    """Riva's ``custom_dictionary``: ``word  PHONEMES`` entries separated by commas, the word and its
    phonemes separated by two spaces (e.g. ``"tomato  T AH0 M EY1 T OW2,NVIDIA  EH0 N V IH1 D IY0 AH0"``).
    Empty -> None. Raises InvalidInputError (``field``) naming the bad entry."""
    if not value.strip():
        return None
    entries: dict[str, tuple[str, ...]] = {}
    for i, entry in enumerate(value.split(","), 1):
        if not entry.strip():
            continue
        word, sep, pron = entry.strip().partition("  ")
        where = f"{field}: entry {i} {entry.strip()[:40]!r}"
        if not sep or not pron.strip():
            raise InvalidInputError(f"{where}: expected 'word  PHONEMES' (two spaces between the word and its "
                                    "ARPAbet phonemes)", field=field)
        key = word.strip().lower()
        if not WORD_RE.fullmatch(key):
            raise InvalidInputError(f"{where}: {word.strip()!r} is not a word (letters and apostrophes)",
                                    field=field)
        try:
            entries[key] = _phonemes(pron.split(), where)
        except InvalidInputError as exc:
            raise InvalidInputError(str(exc), field=field) from None
    return Lexicon(entries, source=field) if entries else None
