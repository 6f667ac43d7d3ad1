"""Splitting long text into pieces that a model can speak one at a time.

Cuts are tried in this order, each only where a piece is still too long:
sentence ends (``.`` ``!`` ``?`` followed by whitespace, not after abbreviations
such as "Mr." or "e.g." or single initials; also line breaks), clause ends
(``;`` ``:`` ``,`` followed by whitespace, dashes ``—`` ``–`` ``--``), whitespace
between words, and finally a hard cut inside a word. Neighbouring sentences (or
clauses, or words) are packed together while they fit. No character is dropped or
changed: pieces are only stripped of surrounding whitespace, and ``{...}`` ARPAbet
groups are never cut when they fit in one piece.
"""

from __future__ import annotations

import bisect
import re

from tts.errors import InvalidInputError

# Words that end with a period without ending a sentence (lower case, period removed).
_ABBREVIATIONS = frozenset(
    "mr mrs ms mx dr drs st co jr sr maj gen rev lt hon sgt capt esq ltd col ft prof "
    "messrs mme mlle vs etc inc corp no nos vol ch pp fig figs approx dept est mt ave "
    "blvd rd gov sen rep pres cpl pvt adm cmdr jan feb mar apr jun jul aug sep sept oct "
    "nov dec".split()
)
_DOTTED_RE = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")  # e.g, i.e, U.S.A
_OPENERS = "\"'“‘([«"

_SENTENCE_END_RE = re.compile(r"[.!?]+[\"'”’)\]»]*\s+|\n\s*")
_CLAUSE_END_RE = re.compile(r"[;:,]\s+|(?:—|–|--)\s*")
_WORD_END_RE = re.compile(r"\s+")
_LEVELS = (_SENTENCE_END_RE, _CLAUSE_END_RE, _WORD_END_RE)

_GROUP_RE = re.compile(r"\{[^{}]*\}")


class _Splitter:
    """One split_text call: the text, the limit, the groups not to cut, the output."""

    def __init__(self, text: str, max_chars: int) -> None:
        self.text = text
        self.max_chars = max_chars
        groups = [m.span() for m in _GROUP_RE.finditer(text) if m.end() - m.start() <= max_chars]
        self.group_starts = [g[0] for g in groups]
        self.group_ends = [g[1] for g in groups]
        self.pieces: list[str] = []

    def _group_around(self, pos: int) -> int | None:
        """Start of the protected group that ``pos`` lies strictly inside, if any."""
        i = bisect.bisect_left(self.group_starts, pos) - 1
        if i >= 0 and pos < self.group_ends[i]:
            return self.group_starts[i]
        return None

    def _size(self, start: int, end: int) -> int:
        return len(self.text[start:end].strip())

    def _emit(self, start: int, end: int) -> None:
        piece = self.text[start:end].strip()
        if piece:
            self.pieces.append(piece)

    def _is_abbreviation(self, punct_start: int, punct: str) -> bool:
        if punct != ".":
            return False
        before = self.text[max(0, punct_start - 40):punct_start]
        word = before.split()[-1] if before and not before[-1].isspace() else ""
        word = word.lstrip(_OPENERS)
        if not word:
            return False
        return (word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())
                or _DOTTED_RE.fullmatch(word) is not None)

    def _cuts(self, start: int, end: int, level: int) -> list[int]:
        cuts = []
        for m in _LEVELS[level].finditer(self.text, start, end):
            cut = m.end()
            if not start < cut < end or self._group_around(cut) is not None:
                continue
            if level == 0 and m.group()[0] == ".":
                punct = m.group().rstrip().rstrip("\"'”’)]»")
                if self._is_abbreviation(m.start(), punct):
                    continue
            cuts.append(cut)
        return cuts

    def split(self, start: int, end: int, level: int = 0) -> None:
        """Append the pieces of ``text[start:end]``, cutting at ``level`` or finer."""
        if level == len(_LEVELS):
            self._hard_cut(start, end)
            return
        bounds = [start, *self._cuts(start, end, level), end]
        piece_start: int | None = None
        for seg_start, seg_end in zip(bounds, bounds[1:]):
            if self._size(seg_start, seg_end) > self.max_chars:
                if piece_start is not None:
                    self._emit(piece_start, seg_start)
                    piece_start = None
                self.split(seg_start, seg_end, level + 1)
            elif piece_start is None:
                piece_start = seg_start
            elif self._size(piece_start, seg_end) > self.max_chars:
                self._emit(piece_start, seg_start)
                piece_start = seg_start
        if piece_start is not None:
            self._emit(piece_start, end)

    def _hard_cut(self, start: int, end: int) -> None:
        text = self.text
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        while start < end:
            cut = min(start + self.max_chars, end)
            if cut < end:
                group_start = self._group_around(cut)
                if group_start is not None and group_start > start:
                    cut = group_start
            self._emit(start, cut)
            start = cut
            while start < end and text[start].isspace():
                start += 1


def split_text(text: str, max_chars: int) -> list[str]:
    """Split ``text`` into stripped, non-empty pieces of at most ``max_chars`` characters.

    Text that fits is returned as one stripped piece; blank text gives ``[]``.
    Concatenated, the pieces hold every non-whitespace character of ``text`` in
    order. Raises ``InvalidInputError`` (field ``max_chars``) if ``max_chars < 1``.
    """
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise InvalidInputError(f"max_chars must be a positive integer, got {max_chars!r}",
                                field="max_chars")
    stripped = text.strip()
    if len(stripped) <= max_chars:
        return [stripped] if stripped else []
    splitter = _Splitter(text, max_chars)
    splitter.split(0, len(text))
    return splitter.pieces
