"""Number expansion of DLE's ``english_cleaners`` (digits -> English words, via inflect).

The rules run in DLE's order on lower-cased ASCII text:

1. commas inside digit runs are removed (``1,250`` -> ``1250``);
2. ``$D.C`` -> "D dollars, C cents" (singular for 1; "zero dollars" for ``$0``; a
   third dot part leaves the amount as it is, followed by "dollars"; a stray comma
   at the edge of a part, on which DLE raises, is ignored);
3. ``D.D`` -> "D point D";
4. ordinals ``1st`` ``22nd`` ... -> inflect's words ("one hundred and first");
5. every remaining digit run: numbers strictly between 1000 and 3000 are read
   like years ("nineteen ninety-nine", "two thousand five", "twelve hundred",
   "twenty ten"), all others as cardinals without "and".

DLE also has a ``£N`` -> "N pounds" rule, but it runs after transliteration,
which has already removed or replaced every ``£``, so it never fires; it is left out.

Where DLE would crash (a number of more than 36 digits, beyond inflect's
"decillion"), the digits are read one by one instead ("one two three ...").
"""

from __future__ import annotations

import functools
import re

import inflect

_inflect = inflect.engine()

_COMMA_NUMBER_RE = re.compile(r"([0-9][0-9,]+[0-9])")
_DOLLARS_RE = re.compile(r"\$([0-9.,]*[0-9]+)")
# The look-behinds change no match (a match never starts inside a digit run, and
# never ends inside one), they only spare the regex engine quadratic work on long runs.
_DECIMAL_RE = re.compile(r"(?<![0-9])([0-9]+\.[0-9]+)")
_ORDINAL_RE = re.compile(r"(?<![0-9])([0-9]+)(st|nd|rd|th)")
_NUMBER_RE = re.compile(r"[0-9]+")

_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# inflect names numbers up to 36 digits and raises NumOutOfRangeError beyond.
_MAX_INFLECT_DIGITS = 36


def _digit_by_digit(digits: str) -> str:
    return " ".join(_DIGIT_WORDS[int(d)] for d in digits)


def _strip_zeros(digits: str) -> str:
    """``str(int(digits))`` without int(): exact for any length."""
    return digits.lstrip("0") or "0"


def _expand_dollars(m: re.Match) -> str:
    amount = m.group(1)
    parts = amount.split(".")
    if len(parts) > 2:
        return amount + " dollars"  # unexpected format: DLE leaves it as it is
    # A comma left at an edge ("$,5", "$5,.25") makes DLE's int() raise; it is ignored here.
    dollars = _strip_zeros(parts[0].replace(",", ""))
    cents = _strip_zeros(parts[1].replace(",", "")) if len(parts) > 1 else "0"
    dollar_unit = "dollar" if dollars == "1" else "dollars"
    cent_unit = "cent" if cents == "1" else "cents"
    if dollars != "0" and cents != "0":
        return f"{dollars} {dollar_unit}, {cents} {cent_unit}"
    if dollars != "0":
        return f"{dollars} {dollar_unit}"
    if cents != "0":
        return f"{cents} {cent_unit}"
    return "zero dollars"


def _expand_decimal_point(m: re.Match) -> str:
    return m.group(1).replace(".", " point ")


def _ordinal_words(digits: str, suffix: str) -> str:
    digits = _strip_zeros(digits)  # inflect reads "007th" as "seventh" too
    if len(digits) <= _MAX_INFLECT_DIGITS:
        return _inflect_ordinal(digits, suffix)
    return _inflect.ordinal(_digit_by_digit(digits))


def cardinal_words(digits: str) -> str:
    """Words for one run of ASCII digits, as DLE's ``_expand_number`` reads it."""
    digits = _strip_zeros(digits)  # DLE reads int(digits)
    if len(digits) <= _MAX_INFLECT_DIGITS:
        return _inflect_cardinal(digits)
    return _digit_by_digit(digits)


# inflect takes ~50 us a call; numbers repeat. Only short keys reach these caches.
@functools.lru_cache(maxsize=4096)
def _inflect_ordinal(digits: str, suffix: str) -> str:
    return _inflect.number_to_words(digits + suffix)


@functools.lru_cache(maxsize=4096)
def _inflect_cardinal(digits: str) -> str:
    num = int(digits)
    if 1000 < num < 3000:
        if num == 2000:
            return "two thousand"
        if 2000 < num < 2010:
            return "two thousand " + _inflect.number_to_words(num % 100)
        if num % 100 == 0:
            return _inflect.number_to_words(num // 100) + " hundred"
        words = _inflect.number_to_words(num, andword="", zero="oh", group=2)
        return words.replace(", ", " ")
    return _inflect.number_to_words(num, andword="")


def normalize_numbers(text: str) -> str:
    """Replace every ASCII digit in ``text`` by words, exactly as DLE's ``normalize_numbers``."""
    if not any(c in text for c in "0123456789"):
        return text
    text = _COMMA_NUMBER_RE.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _DOLLARS_RE.sub(_expand_dollars, text)
    text = _DECIMAL_RE.sub(_expand_decimal_point, text)
    text = _ORDINAL_RE.sub(lambda m: _ordinal_words(m.group(1), m.group(2)), text)
    return _NUMBER_RE.sub(lambda m: cardinal_words(m.group(0)), text)
