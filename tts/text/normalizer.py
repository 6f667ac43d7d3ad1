"""Text normalization: written forms -> the words a reader says, before the cleaners.

Two normalizers (``NORMALIZERS``):

- ``dle``: none. The text goes to NVIDIA DeepLearningExamples' ``english_cleaners``
  as it is, so ids are bit-exact with NVIDIA's reference (``45%`` -> "forty-five%").
- ``full``: ``normalize`` first, then the same cleaners. It reads money (``$2.5M``,
  ``€20``, ``USD 20``, ``80k``), percent, decimals (digits one by one after the
  point), fractions, ranges and scores, negative numbers, ordinals, times, dates,
  decades, years vs counts, measures with units, phone numbers, URLs, emails,
  hashtags and handles, ``& + = x``, Roman numerals in context (regnal names,
  chapters, wars), acronyms letter by letter, and abbreviations in context
  (``St.`` street or saint, ``Dr.`` drive or doctor).

``normalize`` never drops a character silently: what it cannot read stays in
the text, and the cleaners' id mapping reports it (``EncodedText.dropped``).
Everything is precompiled regular expressions over the raw text, in three
passes that each run only when the text can hold what they look for: web
forms (URLs, emails, handles, hashtags), then everything with a digit
(``tts.text._norm_numbers``), then words (abbreviations, acronyms, Roman
numerals, symbols).
"""

from __future__ import annotations

import re
from collections.abc import Container

from unidecode import unidecode

from tts.errors import InvalidInputError
from tts.text._dle_translit import TABLE as _DLE_TABLE
from tts.text._norm_numbers import cardinal, digits, expand_numeric, number, ordinal
from tts.text._norm_tables import (COMMON_WORDS, DOTTED_WORDS, MIXED_CASE, PER_WORDS, REGNAL_NAMES,
                                   ROMAN_CARDINAL_WORDS, SPELLED_TLDS, SUFFIXES, TITLES, WORD_ACRONYMS)

#: The text normalizers: ``full`` (the default of voice folders) and ``dle`` (NVIDIA's cleaners only).
NORMALIZERS: tuple[str, ...] = ("full", "dle")


def check_normalizer(name: str) -> None:
    """Raise ``InvalidInputError`` (field ``text_normalizer``) unless ``name`` is in NORMALIZERS."""
    if name not in NORMALIZERS:
        raise InvalidInputError(f"unknown text normalizer {name!r}; expected one of {', '.join(NORMALIZERS)}",
                                field="text_normalizer")


# ---------------------------------------------------------------- non-ASCII

_UNICODE = {
    "½": " 1/2", "¼": " 1/4", "¾": " 3/4", "⅓": " 1/3", "⅔": " 2/3", "⅛": " 1/8", "⅜": " 3/8", "⅝": " 5/8",
    "⅞": " 7/8", "−": "-", "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u2007": " ", "′": "'", "″": '"',
    "…": "...", "‐": "-", "‑": "-",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))


def _unicode_forms(text: str) -> str:
    """Vulgar fractions, odd spaces and dashes to plain forms; letters that DLE's table lacks
    (``œ``) through ``unidecode``, so they are spoken rather than deleted."""
    text = _UNICODE_RE.sub(lambda m: _UNICODE[m.group()], text)
    for char in {c for c in text if ord(c) > 127}:
        if char.isalpha() and char not in _DLE_TABLE:
            ascii_char = unidecode(char)
            if ascii_char.isalpha():
                text = text.replace(char, ascii_char)
    return text


# ---------------------------------------------------------------- web forms

_TLDS = ("com|org|net|edu|gov|mil|int|io|ai|co|uk|de|fr|us|ca|dev|app|info|biz|me|tv|ly|gg|xyz|jp|eu|nl|au"
         "|in|news|blog|shop|online|site|tech")
_URL_RE = re.compile(
    rf"(?<![\w@/])(?:(?:https?|ftp)://|www\.)[^\s<>\"“”]+"
    rf"|(?<![\w@/.-])[A-Za-z0-9][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*\.(?:{_TLDS})(?![\w-])(?:/[^\s<>\"“”]*)?")
_EMAIL_RE = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
                       r"(?![\w@])")
_HANDLE_RE = re.compile(r"(?<![\w@.])@([A-Za-z_][A-Za-z0-9_]*)")
_HASHTAG_RE = re.compile(r"(?<![\w#&])#([A-Za-z][A-Za-z0-9_]*)")
_WEB_PIECE_RE = re.compile(r"[A-Za-z]+|\d+|[^A-Za-z\d]")
_CAMEL_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_WEB_SYMBOLS = {
    ".": "dot", "/": "slash", ":": "colon", "-": "dash", "_": "underscore", "?": "question mark",
    "=": "equals", "&": "and", "#": "hash", "%": "percent", "+": "plus", "~": "tilde", "@": "at",
}
_VOWELS = frozenset("aeiouy")
_TRAILING = ".,;:!?)]}'\"’”"


def _web_word(word: str) -> str:
    low = word.lower()
    if low in SPELLED_TLDS or len(low) <= 2 or not _VOWELS.intersection(low) or low == "www":
        return " ".join(low)
    return low


def _read_web(text: str) -> str:
    """A URL, email or domain, piece by piece: "example dot com slash docs"."""
    words = []
    scheme, sep, rest = text.partition("://")
    if sep:
        words.append(" ".join(scheme.lower()) + " colon slash slash")
        text = rest
    for piece in _WEB_PIECE_RE.findall(text):
        if piece[0].isalpha():
            words.append(_web_word(piece))
        elif piece[0].isdigit():
            words.append(number(piece) if len(piece) <= 2 else digits(piece))
        else:
            words.append(_WEB_SYMBOLS.get(piece, piece))
    return " ".join(words)


def _url(m: re.Match) -> str:
    url = m.group()
    stripped = url.rstrip(_TRAILING)
    if "(" in stripped and stripped.count("(") == url.count(")") and url.endswith(")"):
        stripped = url.rstrip(_TRAILING.replace(")", ""))      # a URL with (balanced) parentheses
    return " " + _read_web(stripped) + " " + url[len(stripped):]


def _split_words(name: str) -> str:
    """CamelCase, digits and underscores to words: "BlackLivesMatter" -> "Black Lives Matter"."""
    parts = []
    for piece in name.split("_"):
        parts.extend(number(p) if p[0].isdigit() else p for p in _CAMEL_RE.findall(piece))
        parts.append("underscore")
    return " ".join(parts[:-1])


def _web_forms(text: str) -> str:
    if "@" in text:
        text = _EMAIL_RE.sub(lambda m: " " + _read_web(m.group()) + " ", text)
        text = _HANDLE_RE.sub(lambda m: " at " + _split_words(m.group(1)) + " ", text)
    if "." in text:
        text = _URL_RE.sub(_url, text)
    if "#" in text:
        text = _HASHTAG_RE.sub(lambda m: " hashtag " + _split_words(m.group(1)) + " ", text)
    return text


# ---------------------------------------------------------------- words

_ABBREVIATIONS = {**TITLES, **SUFFIXES, "st": "saint", "dr": "doctor"}
_ABBR_ALT = "|".join(sorted(_ABBREVIATIONS, key=len, reverse=True))
_ROMAN = r"(?=[IVXLCDM])M{0,3}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})"
_MIXED_ALT = "|".join(sorted(MIXED_CASE, key=len, reverse=True))
_DOTTED_WORD_ALT = "|".join(re.escape(w) for w in sorted(DOTTED_WORDS, key=len, reverse=True))

_WORDS_RE = re.compile(rf"""
 (?<!\w)(?=\w)   # a word starts here: one check, then the word forms
 (?:(?P<dword>(?<![.])(?i:{_DOTTED_WORD_ALT}|ph\.d\.)(?!\w))
  |(?P<dotted>(?<![.])(?:[A-Za-z]\.){{2,}}(?!\w)|(?<![.])(?:[A-Z]\.)+[A-Z](?![\w.]))
  |(?P<abbr>(?<![.'’])(?i:{_ABBR_ALT})\.)
  |(?P<mixed>(?:{_MIXED_ALT})(?![\w]))
  |(?P<roman>(?<!['’-]){_ROMAN}(?:['’]s)?(?![\w'’]))
  |(?P<caps>(?<!['’-])[A-Z][A-Z&]*[A-Z](?:['’]?s)?(?![\w'’]))
  |(?P<wslash>(?<!/)[Ww]/[Oo]?(?![\w/]))
  |(?P<slash>(?<!/)(?P<sa>[a-z]+)/(?P<sb>[a-z]+)(?![\w/]))
  |(?P<vs>(?<![.])(?:vs|etc)(?![\w.])))
|(?P<dash>\s?(?:—|–)\s?)
|(?P<cmp>(?:(?<=\s)|^)(?:<=|>=|<|>)(?=\s?\w))
|(?P<sym>[&+=@#%~±§×°_/\[\]…])
""", re.VERBOSE)

_SYMBOL_WORDS = {
    "&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "#": " hash ", "%": " percent ", "~": " about ",
    "±": " plus or minus ", "§": " section ", "×": " times ", "°": " degrees ", "_": " underscore ",
    "/": " slash ", "[": "(", "]": ")", "…": "...", "<": " less than ", ">": " greater than ",
    "<=": " less than or equal to ", ">=": " greater than or equal to ",
}
_PREV_WORD_RE = re.compile(r"(\S+)(\s+)$")
_NEXT_RE = re.compile(r"\s*(?:$|[\"'”’)\]]*\s+([A-Za-z]+))")
_CAPS_WORD_RE = re.compile(r"\b[A-Z]{2,}\b")
_WORD_RE = re.compile(r"[A-Za-z]{2,}")
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
_STREET_WORDS = {"st": "street", "dr": "drive"}
_ORDINALS = frozenset(ordinal(n) for n in range(1, 200))


def _spell(token: str) -> str:
    return " ".join(token.lower())


def _prev_word(s: str, pos: int) -> tuple[str, int]:
    """The word just before ``pos`` (separated by whitespace only) and where it starts; ("", -1) if none."""
    m = _PREV_WORD_RE.search(s, max(0, pos - 40), pos)
    if m is None:
        return "", -1
    return m.group(1), m.start(1)


def _next_word(s: str, pos: int) -> str | None:
    """The next word after ``pos`` ("" at the end of the text); None if other punctuation follows."""
    m = _NEXT_RE.match(s, pos)
    if m is None:
        return None
    return m.group(1) or ""


def _ends_sentence(s: str, pos: int) -> bool:
    """A period just before ``pos`` ends the sentence: the text ends or a capitalized word follows."""
    nxt = _next_word(s, pos)
    return nxt == "" or (nxt is not None and nxt[:1].isupper() and nxt.lower() not in _ABBREVIATIONS)


def _street(s: str, start: int, end: int) -> bool:
    """``St.``/``Dr.`` name a street after a number, or after a capitalized word when no capitalized
    name follows ("Main St. is closed", not "Bury St. Edmunds")."""
    prev, at = _prev_word(s, start)
    if not prev:
        return False
    if prev[0].isdigit() or prev in _ORDINALS:
        return True
    if not (prev.isalpha() and prev[0].isupper()):
        return False
    nxt = _next_word(s, end)
    return nxt is None or not nxt[:1].isupper()


def _abbreviation(m: re.Match, s: str) -> str:
    key = m.group()[:-1].lower()
    end = m.end()
    glue = " " if s[end:end + 1].isalpha() else ""          # "Mr.Smith"
    if key in _STREET_WORDS and _street(s, m.start(), end):
        return _STREET_WORDS[key] + ("." if _ends_sentence(s, end) else glue)
    if key in SUFFIXES and _ends_sentence(s, end):
        return SUFFIXES[key] + "."
    return _ABBREVIATIONS[key] + glue


def _roman_value(token: str) -> int:
    total = 0
    for a, b in zip(token, token[1:] + " "):
        v = _ROMAN_VALUES[a]
        total += -v if b != " " and _ROMAN_VALUES[b] > v else v
    return total


def _roman(m: re.Match, s: str, shout: bool) -> str:
    token = m.group()
    suffix = ""
    if token[-2:] in ("'s", "’s"):
        token, suffix = token[:-2], "'s"
    prev, _ = _prev_word(s, m.start())
    low = prev.lower()
    if len(token) == 1:
        # One letter is a numeral only as I, V or X, never as an initial before a name ("Richard M.
        # Nixon", "Robert I Bouck"), and "I" only after a capitalized keyword ("the volume I read").
        nxt = _next_word(s, m.end() + 1 if s.startswith(".", m.end()) else m.end())
        if token not in "IVX" or (nxt and nxt[0].isupper()) or (token == "I" and not prev[:1].isupper()):
            return m.group()
    if low in ROMAN_CARDINAL_WORDS:
        return cardinal(_roman_value(token)) + suffix
    if prev.isalpha() and prev[0].isupper() and not shout and (
            low in REGNAL_NAMES or (len(token) > 1 and set(token) <= {"I", "V", "X"})):
        return "the " + ordinal(_roman_value(token)) + suffix
    return _caps(m, s, shout) if len(token) > 1 else m.group()


def _caps(m: re.Match, s: str, shout: bool) -> str:
    token = m.group()
    suffix = ""
    if token[-2:] in ("'s", "’s"):
        token, suffix = token[:-2], "'s"
    elif token[-1] == "s" and len(token) > 2:
        token, suffix = token[:-1], "s"
    if "&" in token:
        return " and ".join(_spell(p) for p in token.split("&") if p) + suffix
    low = token.lower()
    if token in WORD_ACRONYMS:
        return low + suffix
    if token == "OK":
        return "okay"
    vowels = _VOWELS.intersection(low)
    if shout or (low in COMMON_WORDS and _prev_word(s, m.start())[0].lower() != "the" and token != "US"):
        if vowels and (low in COMMON_WORDS or len(token) >= 4):
            return low + suffix
    elif len(token) >= 6 and vowels:
        return low + suffix                           # IMPORTANT, WARNING: a word in capitals
    return _spell(token) + (suffix if suffix != "s" else "'s")


def _is_shouting(text: str) -> bool:
    """Most words in capitals: capitals are emphasis, not acronyms."""
    caps = len(_CAPS_WORD_RE.findall(text))
    return caps >= 3 and caps >= 0.6 * len(_WORD_RE.findall(text))


def _word(m: re.Match, shout: bool, keep: Container[str] = ()) -> str:
    kind = m.lastgroup
    s = m.string
    g = m.group()
    if keep and kind in ("caps", "roman") and g.lower().replace("’", "'") in keep:
        return g.lower().replace("’", "'")       # a lexicon word ("SQL"): read as a word, never spelled
    if kind == "caps":
        return _caps(m, s, shout)
    if kind == "abbr":
        return _abbreviation(m, s)
    if kind == "roman":
        return _roman(m, s, shout)
    if kind == "sym":
        return _SYMBOL_WORDS[g]
    if kind == "dotted":
        letters = _spell(g.replace(".", ""))
        return letters + "." if g.endswith(".") and _ends_sentence(s, m.end()) else letters
    if kind == "dword":
        low = g.lower()
        words = DOTTED_WORDS.get(low, "p h d")
        return words + "." if low in ("etc.", "ph.d.") and _ends_sentence(s, m.end()) else words
    if kind == "mixed":
        return MIXED_CASE[g]
    if kind == "slash":
        a, b = m.group("sa"), m.group("sb")
        if b in PER_WORDS:
            return f"{a} per {b}"
        return f"{a} or {b}" if a != "and" else "and or"
    if kind == "vs":
        return "versus" if g == "vs" else "et cetera"
    if kind == "wslash":
        return "without" if len(g) == 3 else "with"
    if kind == "dash":
        return " -- "
    if kind == "cmp":
        return _SYMBOL_WORDS[g]
    raise AssertionError(kind)


# ---------------------------------------------------------------- entry

_DIGIT_RE = re.compile(r"\d")
_WEB_HINT_RE = re.compile(r"[@#]|://|www\.|\.(?:" + _TLDS + r")\b")
_SPACES_RE = re.compile(r"[ \t]{2,}")
_SPACE_PUNCT_RE = re.compile(r" +(?=[,.;:!?](?:\s|$))")


def normalize(text: str, keep: Container[str] = ()) -> str:
    """``text`` with its written forms in words (the ``full`` normalizer), ready for the cleaners.

    Leading and trailing whitespace is kept as it is; what cannot be read is left in place.
    ``keep``: lower-case words (a pronunciation lexicon's) that are read as words when written in
    capitals, rather than spelled letter by letter or read as Roman numerals.
    """
    core = text.strip()
    if not core:
        return text
    lead = text[:len(text) - len(text.lstrip())]
    trail = text[len(text.rstrip()):]
    if not core.isascii():
        core = _unicode_forms(core)
    if _WEB_HINT_RE.search(core):
        core = _web_forms(core)
    if _DIGIT_RE.search(core):
        core = expand_numeric(core)
    shout = _is_shouting(core)
    core = _WORDS_RE.sub(lambda m: _word(m, shout, keep), core)
    core = _SPACE_PUNCT_RE.sub("", _SPACES_RE.sub(" ", core)).strip()
    return lead + core + trail
