"""The words of a text as written, and which symbol ids speak each of them.

Word timings (``tts.timings``) report the words the user wrote, not the
normalized text: ``"$5"`` is one word even though it is spoken as "five
dollars". This module finds them and maps them onto the symbol ids that
``tts.text.encode`` makes for the whole text.

- **Words**: whitespace-separated tokens of the text (an ARPAbet group
  ``{HH AH0 L OW1}`` is one token), with the punctuation around them stripped
  (``"Hello,"`` -> ``Hello``; dotted initials keep their last period:
  ``U.S.``). A token is a word when it is spoken on its own: its own encoding
  holds a letter or a phoneme. So punctuation (``--``, ``...``) is no word,
  and neither is a symbol the normalizer does not read (``&`` is a word with
  the ``full`` normalizer, "and", and none with ``dle``).
- **Mapping**: each word is encoded alone (same front end and normalizer),
  and the letters and phonemes of the words, in order, are aligned with those
  of the whole text (longest matching blocks, ``difflib``). Letters of the whole
  text that match no word's letters (the normalizer read them differently in
  context: "$5 million" -> "five million dollars") go to the words around them
  in proportion; letters before the first match go to the first word. Spaces
  and punctuation belong to no word, except inside one (the apostrophe of
  "don't", the hyphen of "forty-five"). The mapping is monotonic: every word's
  ids come after the previous word's, and a word that got no letter (read
  together with a neighbour) is an empty span at its place.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from tts.text.sequence import encode
from tts.text.symbols import SYMBOLS

__all__ = ["Word", "split_words", "map_words"]

_TOKEN_RE = re.compile(r"\{[^{}]*\}|\S+")
_STRIP = "\"'“”‘’«»()[]<>,;:!?.…—–*"
_INITIALS_RE = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")
_SPEAKABLE = frozenset(i for i, s in enumerate(SYMBOLS) if s.isalpha() or s.startswith("@"))


@dataclass(frozen=True)
class Word:
    """One word of a text: as written, and where it is (``text[start:end] == word``)."""

    text: str
    start: int
    end: int


def _core(token: str, start: int) -> tuple[str, int, int]:
    """The token without the punctuation around it, with its offsets (may be empty)."""
    if token.startswith("{") and token.endswith("}"):
        return token, start, start + len(token)
    left = len(token) - len(token.lstrip(_STRIP))
    core = token.strip(_STRIP)
    if core and token[left + len(core):].startswith(".") and _INITIALS_RE.fullmatch(core):
        core += "."                                      # U.S. keeps its last period
    return core, start + left, start + left + len(core)


def _spoken(ids: tuple[int, ...]) -> list[int]:
    return [i for i in ids if i in _SPEAKABLE]


def split_words(text: str, frontend: str = "tacotron2", normalizer: str = "dle") -> list[Word]:
    """The words of ``text`` (see module doc), in order."""
    return [w for w, _ in _words_with_ids(text, frontend, normalizer)]


def _words_with_ids(text: str, frontend: str, normalizer: str) -> list[tuple[Word, list[int]]]:
    out = []
    for m in _TOKEN_RE.finditer(text):
        core, start, end = _core(m.group(), m.start())
        if not core:
            continue
        spoken = _spoken(encode(core, frontend, normalizer).ids)
        if spoken:
            out.append((Word(core, start, end), spoken))
    return out


def map_words(text: str, ids: tuple[int, ...] | list[int], frontend: str = "tacotron2",
              normalizer: str = "dle") -> tuple[list[Word], list[tuple[int, int]]]:
    """The words of ``text`` and, per word, the half-open range ``[a, b)`` of positions in ``ids`` (the
    ids ``encode(text, frontend, normalizer)`` gives) that speak it. Ranges are in order and do not
    overlap; an empty range (``a == b``) is a word spoken together with a neighbour."""
    pairs = _words_with_ids(text, frontend, normalizer)
    words = [w for w, _ in pairs]
    if not words:
        return [], []
    word_ids: list[int] = []
    word_owner: list[int] = []
    for k, (_, spoken) in enumerate(pairs):
        word_ids.extend(spoken)
        word_owner.extend([k] * len(spoken))
    positions = [p for p, i in enumerate(ids) if i in _SPEAKABLE]
    full = [ids[p] for p in positions]
    owner = [-1] * len(full)
    blocks = difflib.SequenceMatcher(None, full, word_ids, autojunk=False).get_matching_blocks()
    fa = wa = 0                      # ends of the previous block in full / word_ids
    prev = None                      # owner of the last matched letter
    for a, b, size in blocks:        # the last block is (len(full), len(word_ids), 0)
        gap_f, gap_w = range(fa, a), word_owner[wa:b]
        for j, p in enumerate(gap_f):
            if gap_w:
                owner[p] = gap_w[j * len(gap_w) // len(gap_f)]
            else:
                owner[p] = prev if prev is not None else (word_owner[b] if b < len(word_owner) else len(words) - 1)
        for j in range(size):
            owner[a + j] = word_owner[b + j]
        if size:
            prev = word_owner[b + size - 1]
        elif gap_f:
            prev = owner[a - 1]
        fa, wa = a + size, b + size
    for j in range(1, len(owner)):   # monotonic (the proportional fill already is; kept as a guard)
        owner[j] = max(owner[j], owner[j - 1])
    spans: list[tuple[int, int]] = []
    lo = 0
    for k in range(len(words)):
        mine = [positions[j] for j, o in enumerate(owner) if o == k]
        if mine:
            a, b = mine[0], mine[-1] + 1
            a = max(a, lo)
            spans.append((a, b))
            lo = b
        else:
            spans.append((lo, lo))
    return words, spans
