"""Text -> symbol ids and back, as DLE's ``text_to_sequence`` / ``sequence_to_text``.

Input may embed ARPAbet in curly braces: ``Turn left on {HH AW1 S S T AH0 N} Street.``
The first ``{`` that has a ``}`` at least two characters further on opens a group
that ends at the first such ``}``; the group's words become ``@``-phoneme ids with
no cleaning, and the text around it is cleaned piece by piece. A ``{`` with no
closing ``}`` after it is ordinary text (and, having no symbol, is dropped).

One deliberate difference from DLE: DLE finds groups with a regex whose ``.`` does
not match a newline, so there a newline in a text with a group makes it ignore the
group (braces spoken as letters) or lose everything after the newline. Here a
newline is like any other character (it ends up as a space after cleaning).

With a ``lexicon`` (``tts.text.lexicon``), every word of the cleaned text that the
lexicon has is spoken with its phonemes, exactly as if it had been written as a
``{...}`` group (and the ``full`` normalizer reads its words written in capitals as
words, so "SQL" in the lexicon is not spelled "s q l" first).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from tts.text.cleaners import check_frontend, english_cleaners_ascii, to_ascii
from tts.text.lexicon import WORD_RE, Lexicon
from tts.text.normalizer import check_normalizer, normalize
from tts.text.symbols import SYMBOL_TO_ID, SYMBOLS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedText:
    """One text through a front end."""

    #: The input, as given.
    text: str
    #: After ``english_cleaners``, with ``{...}`` groups copied verbatim.
    cleaned: str
    #: Symbol ids, exactly as DLE's ``text_to_sequence`` gives them (never the pad id).
    ids: tuple[int, ...]
    #: Characters that no id stands for, in order (may repeat): input characters with
    #: no transliteration, characters of ``cleaned`` with no symbol (``%``, ``"``, ...),
    #: and the letters of words in ``{...}`` groups that are no ARPAbet phoneme.
    dropped: str
    #: What the ids speak: ``cleaned`` without the characters and group words that have no
    #: symbol (runs of spaces left by them collapsed), lexicon words as ``{...}`` groups.
    spoken: str = ""


def _arpabet_pieces(text: str) -> Iterator[tuple[str, bool]]:
    """Split ``text`` into ``(piece, is_arpabet_group)`` pairs, in order; pieces may be empty."""
    last_close = text.rfind("}")
    pos = 0
    while pos < len(text):
        start = text.find("{", pos)
        if start < 0 or last_close < start + 2:
            yield text[pos:], False
            return
        end = text.find("}", start + 2)
        yield text[pos:start], False
        yield text[start + 1:end], True
        pos = end + 1


def encode(text: str, frontend: str = "tacotron2", normalizer: str = "dle",
           lexicon: Lexicon | None = None) -> EncodedText:
    """Clean ``text`` and map it to symbol ids with the named front end (see ``FRONTENDS``).

    ``normalizer`` (see ``NORMALIZERS``): ``dle`` cleans the text as NVIDIA's
    reference does (bit-exact ids); ``full`` first reads money, dates, units, ...
    as words (``tts.text.normalizer``), outside ``{...}`` groups. ``lexicon``: words
    of the cleaned text to speak with the lexicon's phonemes (outside ``{...}`` groups).

    Never raises for odd characters: what has no symbol is left out of ``ids`` and
    reported in ``dropped``. Empty or blank text gives what DLE gives (no ids, or
    the id of one space). Raises ``InvalidInputError`` (field ``frontend`` or
    ``text_normalizer``) for an unknown front end or normalizer.
    """
    check_frontend(frontend)
    check_normalizer(normalizer)
    full = normalizer == "full"
    cleaned: list[str] = []
    spoken: list[str] = []
    ids: list[int] = []
    dropped: list[str] = []
    for piece, is_group in _arpabet_pieces(text):
        if is_group:
            cleaned.append("{" + piece + "}")
            _group(piece.split(), ids, spoken, dropped)
        elif piece:
            ascii_text, missing = to_ascii(normalize(piece, lexicon or ()) if full else piece, frontend)
            clean = english_cleaners_ascii(ascii_text)
            cleaned.append(clean)
            if lexicon:
                _with_lexicon(clean, lexicon, ids, spoken)
            else:
                _plain(clean, ids, spoken)
            dropped.append(missing)
    result = EncodedText(text, "".join(cleaned), tuple(ids), "".join(dropped),
                         _SPACES_RE.sub(" ", "".join(spoken)))
    if result.dropped:
        logger.debug("characters with no symbol were dropped: %r", result.dropped)
    return result


_SPACES_RE = re.compile(r" {2,}")


def _plain(clean: str, ids: list[int], spoken: list[str]) -> None:
    kept = [c for c in clean if c in SYMBOL_TO_ID]
    ids.extend(SYMBOL_TO_ID[c] for c in kept)
    spoken.append("".join(kept))


def _group(phonemes: list[str], ids: list[int], spoken: list[str], dropped: list[str] | None) -> None:
    said = []
    for phoneme in phonemes:
        symbol_id = SYMBOL_TO_ID.get("@" + phoneme)
        if symbol_id is None:
            if dropped is not None:
                dropped.append(phoneme)
        else:
            ids.append(symbol_id)
            said.append(phoneme)
    if said:
        spoken.append("{" + " ".join(said) + "}")


def _with_lexicon(clean: str, lexicon: Lexicon, ids: list[int], spoken: list[str]) -> None:
    pos = 0
    for m in WORD_RE.finditer(clean):
        phonemes = lexicon.get(m.group())
        if phonemes is None:
            continue
        _plain(clean[pos:m.start()], ids, spoken)
        _group(list(phonemes), ids, spoken, None)      # lexicon phonemes are checked when it is read
        pos = m.end()
    _plain(clean[pos:], ids, spoken)


def clean_text(text: str, frontend: str = "tacotron2", normalizer: str = "dle") -> str:
    """``text`` after the normalizer and ``english_cleaners`` (``{...}`` groups kept verbatim)."""
    return encode(text, frontend, normalizer).cleaned


def text_to_sequence(text: str, frontend: str = "tacotron2") -> list[int]:
    """Symbol ids of ``text``, exactly as DLE's ``text_to_sequence(text, ["english_cleaners"])``."""
    return list(encode(text, frontend).ids)


def sequence_to_text(ids: Iterable[int]) -> str:
    """DLE's ``sequence_to_text``: ids back to a string, phonemes as ``{AA B ...}`` groups.

    Ids outside the table are skipped; the pad id renders as ``_`` (as in DLE).
    """
    out: list[str] = []
    for symbol_id in ids:
        symbol_id = int(symbol_id)
        if 0 <= symbol_id < len(SYMBOLS):
            symbol = SYMBOLS[symbol_id]
            out.append("{" + symbol[1:] + "}" if len(symbol) > 1 else symbol)
    return "".join(out).replace("}{", " ")
