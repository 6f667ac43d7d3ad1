"""Numbers in words for the ``full`` normalizer, and its numeric pass.

The word functions are exact for any size (no inflect: they are called for
every number and must be fast). ``expand_numeric`` rewrites every written
form that holds a digit (money, percent, measures, dates, times, phone
numbers, ranges, fractions, ordinals, decades, years, plain numbers) as the
words a reader says; it runs on raw text, before the cleaners.
"""

from __future__ import annotations

import re

from tts.text._norm_tables import (COUNT_NOUNS, CURRENCIES, MONTH_NAMES, MONTHS, PHONE_CONTEXT, SCALES, UNITS,
                                   VERSION_CONTEXT, YEAR_CONTEXT)

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALE_WORDS = ("", "thousand", "million", "billion", "trillion", "quadrillion", "quintillion", "sextillion",
                "septillion", "octillion", "nonillion", "decillion")
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}


def _below_thousand(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    words = [_ONES[hundreds], "hundred"] if hundreds else []
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens] + ("-" + _ONES[ones] if ones else ""))
    elif rest:
        words.append(_ONES[rest])
    return " ".join(words)


def digits(text: str) -> str:
    """Each digit of ``text`` as a word: ``"042"`` -> "zero four two"."""
    return " ".join(_ONES[ord(c) - 48] for c in text if "0" <= c <= "9")


def cardinal(n: int) -> str:
    """``1234`` -> "one thousand two hundred thirty-four" (no "and", no commas); negative: "minus ..."."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n < 20:
        return _ONES[n]
    if n < 1000:
        return _below_thousand(n)
    if n >= 10 ** 36:
        return digits(str(n))
    parts = []
    scale = 0
    while n:
        n, group = divmod(n, 1000)
        if group:
            parts.append(_below_thousand(group) + (" " + _SCALE_WORDS[scale] if scale else ""))
        scale += 1
    return " ".join(reversed(parts))


def ordinal_of(words: str) -> str:
    """The ordinal of a cardinal in words: "twenty-one" -> "twenty-first"."""
    head, sep, last = words.rpartition(" ")
    pre, dash, last = last.rpartition("-")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return head + sep + pre + dash + last


def ordinal(n: int) -> str:
    """``21`` -> "twenty-first"."""
    return ordinal_of(cardinal(n))


def plural_of(words: str) -> str:
    """Plural of the last word of a number: "nineteen ninety" -> "nineteen nineties"."""
    if words.endswith("y"):
        return words[:-1] + "ies"
    if words.endswith("x"):
        return words + "es"
    return words + "s"


def year(n: int) -> str:
    """A year as read aloud: 1999 -> "nineteen ninety-nine", 1905 -> "nineteen oh five", 2005 -> "two
    thousand five", 2024 -> "twenty twenty-four", 1900 -> "nineteen hundred"."""
    if not 1000 <= n <= 9999:
        return cardinal(n)
    hi, lo = divmod(n, 100)
    if hi % 10 == 0 and lo < 10:            # 2000, 2005, 1000, 3007
        return cardinal(n)
    if lo == 0:
        return cardinal(hi) + " hundred"
    if lo < 10:
        return cardinal(hi) + " oh " + _ONES[lo]
    return cardinal(hi) + " " + cardinal(lo)


def number(text: str) -> str:
    """An unsigned number as written (digits with optional grouping commas and a decimal part)."""
    whole, _, frac = text.replace(",", "").partition(".")
    if "." in text:
        head = cardinal(int(whole)) if whole else ""
        return (head + " point " + digits(frac)).strip()
    if len(whole) > 1 and whole[0] == "0":
        return digits(whole)
    if len(whole) > 15:
        return digits(whole)
    return cardinal(int(whole))


def _is_one(text: str) -> bool:
    return text.replace(",", "") == "1"


def _fraction(num: int, den: int) -> str:
    if den == 2:
        unit = "half" if num == 1 else "halves"
    elif den == 4:
        unit = "quarter" if num == 1 else "quarters"
    else:
        unit = ordinal(den) + ("" if num == 1 else "s")
    return cardinal(num) + " " + unit


_INT = r"\d{1,3}(?:,\d{3})+(?![\d])|\d+"
_NUM = rf"(?:{_INT})(?:\.\d+)?|\.\d+"
_SIGN = r"(?:(?<![\w.,)\]-])[-−])"
_UNIT_ALT = "|".join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True))
_CUR_SYM = r"US\$|C\$|A\$|AU\$|NZ\$|HK\$|S\$|[$€£¥₹₩₽]"
_CUR_CODE = "|".join(c for c in CURRENCIES if c.isalpha())
_SCALE_ALT = r"(?:\s?(?:thousand|million|billion|trillion)\b|(?:mn|mln|bn|tn|[kKmMbBtT])\b)"
_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
          r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?(?![\d:%])"
_AMPM = r"[AaPp]\.[Mm]\.?|[AaPp][Mm]\b"
_RANGE_SEP = r"\s?[-–]\s?"

_NUMERIC_RE = re.compile(rf"""
 (?P<phone>(?<![\w+$.,-])(?:\+?1[-.\s]?)?(?:\(\d{{3}}\)\s?|\d{{3}}[-.\s])\d{{3}}[-.\s]\d{{4}}(?![\w-])
   |(?<![\w+])\+\d{{1,3}}(?:[-.\s]\(?\d{{1,4}}\)?){{2,5}}(?![\w-])
   |(?<![\w+$.,-])0\d{{1,4}}(?:[ -]\d{{3,4}}){{1,3}}(?![\w-]))
|(?P<card>(?<![\w-])\d{{4}}(?:[ -]\d{{4}}){{2,3}}(?![\w-]))
|(?P<isodate>(?<![\w-])(?P<iy>\d{{4}})-(?P<im>0[1-9]|1[0-2])-(?P<id>[0-2]\d|3[01])(?![\w-]))
|(?P<sdate>(?<![\w/.-])(?P<sa>\d{{1,2}})(?:(?P<ss>[/-])(?P<sb>\d{{1,2}})(?P=ss)(?P<sy>\d{{4}}|\d{{2}})
   |\.(?P<sb2>\d{{1,2}})\.(?P<sy2>\d{{4}}))(?![\w/-]|\.\d)
   |(?<![\w/.-])(?P<mym>0?[1-9]|1[0-2])/(?P<myy>(?:19|20)\d\d)(?![\w/-]|\.\d))
|(?P<time>(?<![\w:.])(?P<th>[01]?\d|2[0-4]):(?P<tm>[0-5]\d)(?::(?P<ts>[0-5]\d))?(?![\d:])
   (?:\s?(?P<tap>{_AMPM}))?)
|(?P<hour>(?<![\w.,:])(?P<hh>1[0-2]|0?[1-9])\s?(?P<hap>{_AMPM}))
|(?P<money>(?P<msign>{_SIGN})?(?P<msym>{_CUR_SYM})\s?(?P<mnum>{_NUM})(?P<mscale1>{_SCALE_ALT})?
   (?:{_RANGE_SEP}(?:{_CUR_SYM})?(?P<mnum2>{_NUM}))?(?P<mscale>{_SCALE_ALT})?(?![\w.]?\d|,\d))
|(?P<cmoney>(?<![\w])(?P<ccode>{_CUR_CODE})\s?(?P<cnum>{_NUM})(?P<cscale>{_SCALE_ALT})?(?![\w]))
|(?P<moneyc>(?<![\w.])(?P<ksign>{_SIGN})?(?P<knum>{_NUM})(?P<kscale>{_SCALE_ALT})?\s?
   (?P<kcode>{_CUR_CODE}|¢)(?![\w]))
|(?P<mdate>(?<![\w])(?P<dm>{_MONTH})\.?\s
   (?:(?P<dd>{_DAY})(?:,?\s(?P<dy>\d{{4}})(?!\d))?|(?P<dy2>\d{{4}})(?![\d,]))(?![\w]))
|(?P<dmdate>(?<![\w])(?P<ed>{_DAY})\s(?P<eof>of\s)?(?P<em>{_MONTH})\b
   (?:\.?,?\s(?P<ey>\d{{4}})(?!\d)|\.(?=\s+[a-z]))?)
|(?P<percent>(?P<psign>{_SIGN})?(?P<pnum>{_NUM})(?:{_RANGE_SEP}(?P<pnum2>{_NUM})\s?%?)?\s?%)
|(?P<measure>(?P<usign>{_SIGN})?(?P<unum>{_NUM})(?:{_RANGE_SEP}(?P<unum2>{_NUM}))?(?P<usep>\s?|-)
   (?P<unit>{_UNIT_ALT})(?P<udot>\.(?=\s+[a-z]))?(?![\w²³/]))
|(?P<feet>(?<![\w.])(?P<ft>[1-9])['’](?P<inch>1[01]|[0-9])(?:"|”|'')(?!\w))
|(?P<decade>(?<![\w.])(?:(?P<cent>1\d|20)|['’])?(?P<dec>\d0)['’]?s\b)
|(?P<ordinal>(?<![\w.])(?P<onum>\d{{1,3}}(?:,\d{{3}})+|\d+)(?P<osuf>st|nd|rd|th|ST|ND|RD|TH)\b)
|(?P<frac>(?<![\w/.])(?:(?P<fwhole>\d+)\s)?(?P<fnum>\d{{1,3}})/(?P<fden>\d{{1,3}})(?![\w/]|\.\d)
   (?:\s?(?P<funit>{_UNIT_ALT})(?![\w²³/]))?)
|(?P<times>(?<![\w.])(?:{_NUM})(?:\s?[x×X]\s?(?:{_NUM}))+(?![\w.]\d)(?:\s?(?P<xunit>{_UNIT_ALT})(?![\w²³/]))?)
|(?P<range>(?P<rsign>{_SIGN})?(?P<ra>{_NUM})\s?(?P<rsep>[-–])\s?(?P<rb>{_NUM})(?![\w]|[-–.]\d))
|(?P<ratio>(?<![\w:])(?P<qa>\d+):(?P<qb>\d+)(?![\d:]))
|(?P<numsign>(?<![\w])(?:(?P<nosym>\#)|(?P<noword>[Nn]o|NO|[Nn]os)\.\s?)(?P<nonum>\d+)(?![\w.]\d))
|(?P<nx>(?<![\w.])(?P<nxnum>{_NUM})\s?[x×](?![\w]))
|(?P<scaled>(?<![\w.])(?P<snum>{_NUM})(?P<sscale>[kKMBT]|bn|mn)(?![\w]))
|(?P<alnum>(?<![\w.-])(?=[A-Za-z]*\d)(?=\d*[A-Za-z])[A-Za-z0-9]+(?![\w]))
|(?P<version>(?<![\w.])\d+(?:\.\d+){{2,}}(?![\w]|\.\d))
|(?P<number>(?P<nsign>{_SIGN})?(?P<nnum>{_NUM}))
""", re.VERBOSE)

_WORD_BEFORE_RE = re.compile(r"([A-Za-z]+)[^\w]{0,3}$")
_WORD_AFTER_RE = re.compile(r"\s*([A-Za-z]+)")
_ALNUM_SPLIT_RE = re.compile(r"[A-Za-z]+|\d+")
_TIMES_SPLIT_RE = re.compile(r"\s?[x×X]\s?")
_END_RE = re.compile(r"\s*(?:$|[\"'”’)\]]*\s+[A-Z])")


def _word_before(s: str, pos: int) -> str:
    m = _WORD_BEFORE_RE.search(s, max(0, pos - 30), pos)
    return m.group(1).lower() if m else ""


def _word_after(s: str, pos: int) -> str:
    m = _WORD_AFTER_RE.match(s, pos)
    return m.group(1) if m else ""


def _sentence_end(s: str, pos: int) -> bool:
    """True when a period just before ``pos`` seems to end a sentence."""
    return _END_RE.match(s, pos) is not None


def _signed(sign: str | None, words: str) -> str:
    return "minus " + words if sign else words


def _amount(num: str, scale: str | None) -> str:
    words = number(num)
    if scale:
        words += " " + SCALES[scale.strip()]
    return words


def _money(sym: str, sign: str | None, num: str, num2: str | None, scale: str | None,
           scale1: str | None = None, adjective: bool = False) -> str:
    one, many, sub_one, sub_many = CURRENCIES[sym]
    if adjective:                                     # "a $5 bill": "a five dollar bill"
        many = one
    if num2 is not None:
        return _signed(sign, f"{_amount(num, scale1)} to {_amount(num2, scale)} {many}")
    if scale or scale1:
        return _signed(sign, f"{_amount(num, scale or scale1)} {many}")
    whole, _, frac = num.replace(",", "").partition(".")
    if "." in num and (len(frac) != 2 or sub_one is None):
        return _signed(sign, f"{number(num)} {many}")
    units = int(whole or "0")
    cents = int(frac) if frac else 0
    parts = []
    if units or not cents:
        parts.append(f"{cardinal(units)} {one if units == 1 or adjective else many}")
    if cents:
        parts.append(f"{cardinal(cents)} {sub_one if cents == 1 else sub_many}")
    return _signed(sign, " and ".join(parts))


def _adjective(s: str, start: int, end: int) -> bool:
    """An amount between "a"/"an" and a word ("a $5 bill", "a 30 cm ruler"): its unit is singular."""
    return _word_before(s, start) in ("a", "an") and s[start - 1:start].isspace() and \
        _WORD_AFTER_RE.match(s, end) is not None and s[end:end + 1].isspace()


def _measure(m: re.Match) -> str:
    unit = m.group("unit")
    one, many = UNITS[unit]
    num, num2 = m.group("unum"), m.group("unum2")
    if m.group("usep") == "-" and num2 is None or _adjective(m.string, m.start(), m.end()):
        return _signed(m.group("usign"), number(num) + " " + one)     # "a 5-km run": singular
    if num2 is not None:
        words = f"{number(num)} to {number(num2)} {many}"
    else:
        words = f"{number(num)} {one if _is_one(num) else many}"
    return _signed(m.group("usign"), words)


def _date(month: int, day: int | None, yr: str | None) -> str:
    words = MONTH_NAMES[month - 1]
    if day is not None:
        words += " " + ordinal(day)
    if yr is not None:
        words += (", " if day is not None else " ") + (year(int(yr)) if len(yr) == 4 else number(yr))
    return words


def _time(hours: str, minutes: str, seconds: str | None, ampm: str | None) -> str:
    h, mins = int(hours), int(minutes)
    words = cardinal(h)
    if mins == 0:
        if h == 0 and ampm is None:
            return "midnight" if seconds is None else "zero hundred"
        if ampm is None:
            words += " hundred" if h > 12 else " o'clock"
    elif mins < 10:
        words += " oh " + _ONES[mins]
    else:
        words += " " + cardinal(mins)
    if seconds is not None:
        words += " and " + cardinal(int(seconds)) + (" second" if int(seconds) == 1 else " seconds")
    if ampm:
        words += " " + ampm[0].lower() + " m"
    return words


def _phone(text: str) -> str:
    groups = re.findall(r"\d+", text)
    words = []
    for i, g in enumerate(groups):
        if i == 1 and groups[0] == "1" and g in ("800", "888", "877", "866", "855", "844", "833"):
            words.append(cardinal(int(g)))          # 1-800: "one eight hundred"
        else:
            words.append(digits(g))
    lead = "plus " if text.lstrip().startswith("+") else ""
    return lead + ", ".join(words)


def _plain_number(m: re.Match, s: str) -> str:
    num = m.group("nnum")
    sign = m.group("nsign")
    if "," not in num and "." not in num and len(num) == 4 and not sign:
        n = int(num)
        if 1000 <= n <= 2099 and _reads_as_year(s, m.start(), m.end(), n):
            return year(n)
    before = _word_before(s, m.start())
    if len(num) == 3 and before in PHONE_CONTEXT:
        return digits(num)                            # call 911, ext. 204
    if "." in num and num[0] != "." and before in VERSION_CONTEXT:
        whole, _, frac = num.partition(".")
        return _signed(sign, cardinal(int(whole)) + " point " + (number(frac) if frac[0] != "0" else digits(frac)))
    return _signed(sign, number(num))


def _reads_as_year(s: str, start: int, end: int, n: int) -> bool:
    before = _word_before(s, start)
    if before in YEAR_CONTEXT or before in MONTHS or before in MONTH_NAMES:
        return True
    if s[end:end + 1].isspace() and _word_after(s, end).lower() in COUNT_NOUNS:
        return False                                  # "1999 people": a count
    return 1100 <= n


def _score_or_range(m: re.Match, s: str) -> str:
    a, b = m.group("ra"), m.group("rb")
    plain = "." not in a + b and "," not in a + b
    if plain and m.group("rsep") == "-" and len(a) == 3 and len(b) == 4 and a[0] not in "01" and (
            _word_before(s, m.start()) in PHONE_CONTEXT or not (a.endswith("0") and b.endswith("00"))):
        return digits(a) + ", " + digits(b)         # a local phone number: 555-1234
    if plain and len(a) == 4 and 1000 <= int(a) <= 2099 and len(b) in (2, 4):
        # 1939-45, 1990-1995: years
        first = year(int(a))
        second = year(int(b)) if len(b) == 4 else (cardinal(int(b)) if b[0] != "0" else "oh " + _ONES[int(b)])
        return f"{first} to {second}"
    return _signed(m.group("rsign"), number(a) + " to " + number(b))


def _alnum(token: str) -> str:
    low = token.lower()
    if low.endswith(("st", "nd", "rd", "th")) and token[:-2].isdigit():
        return ordinal(int(token[:-2]))
    # Digit runs in words; letter runs kept for the word pass (acronyms, mixed case).
    return " ".join(run if run[0].isalpha() else (number(run) if len(run) < 5 else digits(run))
                    for run in _ALNUM_SPLIT_RE.findall(token))


def _expand(m: re.Match) -> str:
    kind = m.lastgroup
    s = m.string
    g = m.group
    if kind == "number":
        return _plain_number(m, s)
    if kind == "phone":
        return _phone(g())
    if kind == "card":
        return ", ".join(digits(part) for part in re.findall(r"\d+", g()))
    if kind == "isodate":
        return _date(int(g("im")), int(g("id")), g("iy"))
    if kind == "sdate":
        if g("mym") is not None:                     # 03/2025: month and year
            return _date(int(g("mym")), None, g("myy"))
        if g("ss") is None:                          # 15.03.2024: day first
            day, month, yr = int(g("sa")), int(g("sb2")), g("sy2")
        else:
            a, b, yr = int(g("sa")), int(g("sb")), g("sy")
            month, day = (b, a) if a > 12 else (a, b)
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return " ".join(number(p) for p in re.findall(r"\d+", g()))
        return _date(month, day, yr)
    if kind == "time":
        words = _time(g("th"), g("tm"), g("ts"), g("tap"))
        tap = g("tap")
        return words + "." if tap and tap.endswith(".") and _sentence_end(s, m.end()) else words
    if kind == "hour":
        hap = g("hap")
        words = cardinal(int(g("hh"))) + " " + hap[0].lower() + " m"
        return words + "." if hap.endswith(".") and _sentence_end(s, m.end()) else words
    if kind == "money":
        return _money(g("msym"), g("msign"), g("mnum"), g("mnum2"), g("mscale"), g("mscale1"),
                      _adjective(s, m.start(), m.end()))
    if kind == "cmoney":
        return _money(g("ccode"), None, g("cnum"), None, g("cscale"))
    if kind == "moneyc":
        code = g("kcode")
        if code == "¢":
            return _signed(g("ksign"), number(g("knum")) + (" cent" if _is_one(g("knum")) else " cents"))
        return _money(code, g("ksign"), g("knum"), None, g("kscale"))
    if kind == "mdate":
        month = MONTH_NAMES.index(MONTHS[g("dm")[:3].lower()])
        if g("dd") is not None:
            return _date(month + 1, int(g("dd").rstrip("stndrh")), g("dy"))
        return _date(month + 1, None, g("dy2"))
    if kind == "dmdate":
        month = MONTH_NAMES.index(MONTHS[g("em")[:3].lower()])
        day = ordinal(int(g("ed").rstrip("stndrh")))
        the = "" if _word_before(s, m.start()) == "the" else "the "
        words = f"{the}{day} of {MONTH_NAMES[month]}"
        if g("ey"):
            words += " " + year(int(g("ey")))
        return words
    if kind == "percent":
        if g("pnum2") is not None:
            return _signed(g("psign"), f"{number(g('pnum'))} to {number(g('pnum2'))} percent")
        return _signed(g("psign"), number(g("pnum")) + " percent")
    if kind == "measure":
        unit = g("unit")
        if unit in ("W", "V", "L", "m", "g", "h") and _word_after(s, m.end())[:1].isupper():
            return _signed(g("usign"), number(g("unum"))) + g("usep") + unit     # "100 W Main St": a direction
        return _measure(m)
    if kind == "feet":
        inch = int(g("inch"))
        return f"{cardinal(int(g('ft')))} feet" + (f" {cardinal(inch)} inch{'' if inch == 1 else 'es'}" if inch else "")
    if kind == "decade":
        words = cardinal(int(g("dec")))
        if g("cent"):
            words = year(int(g("cent") + g("dec")))
        return plural_of(words)
    if kind == "ordinal":
        return ordinal(int(g("onum").replace(",", "")))
    if kind == "frac":
        num, den = int(g("fnum")), int(g("fden"))
        whole = g("fwhole")
        unit = g("funit")
        unit = "" if unit is None else " " + UNITS[unit][1]
        text = f"{num}/{den}"
        if den == 0 or den == 1 or (not whole and (num >= den or text in ("24/7", "9/11", "50/50"))):
            return (f"{cardinal(num)} {cardinal(den)}" if text != "24/7" else "twenty-four seven") + unit
        if not whole and den in (10, 100) and _word_after(s, m.end()) != "of":
            return f"{cardinal(num)} out of {cardinal(den)}" + unit
        if not whole and den > 16 and den not in (20, 32, 64, 100):
            return f"{cardinal(num)} slash {cardinal(den)}" + unit       # 50/60 Hz: not a fraction
        words = _fraction(num, den)
        if whole:
            if num == 1 and den in (2, 4):
                words = "a half" if den == 2 else "a quarter"
            words = f"{cardinal(int(whole))} and {words}"
        return words + unit
    if kind == "times":
        word = " times " if "=" in s else " by "
        unit = g("xunit")
        factors = g() if unit is None else s[m.start():m.start("xunit")].rstrip()
        words = word.join(number(n) for n in _TIMES_SPLIT_RE.split(factors))
        return words + ("" if unit is None else " " + UNITS[unit][1])
    if kind == "range":
        return _score_or_range(m, s)
    if kind == "ratio":
        return number(g("qa")) + " to " + number(g("qb"))
    if kind == "numsign":
        word = "numbers " if (g("noword") or "").lower() == "nos" else "number "
        return word + number(g("nonum"))
    if kind == "nx":
        return number(g("nxnum")) + " times"
    if kind == "scaled":
        num, scale = g("snum"), g("sscale")
        if scale in "MBT" and len(num) == 1:
            return number(num) + " " + scale          # Apt. 4B: a code, not "four billion"
        if scale == "k" and num == "401":
            return "four oh one k"
        if scale == "K" and len(num) <= 2 and "." not in num:
            return number(num) + " k"             # 4K, 10K run
        return number(num) + " " + SCALES[scale]
    if kind == "alnum":
        return _alnum(g())
    if kind == "version":
        parts = g().split(".")
        if len(parts) == 4 and all(len(p) <= 3 and int(p) <= 255 for p in parts):
            return " dot ".join(number(p) for p in parts)           # an IP address
        return " point ".join(number(p) for p in parts)
    raise AssertionError(kind)


_LETTER_DIGIT_HYPHEN_RE = re.compile(r"(?<=[A-Za-z])-(?=\d)")
_TIME_RANGE_RE = re.compile(r"(?<=[Mm\d])\s?[-–]\s?(?=(?:1[0-2]|0?[1-9])\s?[AaPp]\.?[Mm]\b|\d{1,2}:\d\d)")
_DEGREE_SPACE_RE = re.compile(r"°\s+(?=[FC]\b)")


def expand_numeric(text: str) -> str:
    """Every written form in ``text`` that holds a digit, in words (other text unchanged)."""
    if "-" in text or "–" in text:
        text = _TIME_RANGE_RE.sub(" to ", text)            # 9am-5pm, 9:00-17:00
        text = _LETTER_DIGIT_HYPHEN_RE.sub(" ", text)      # COVID-19, F-16: letters, then the number
    if "°" in text:
        text = _DEGREE_SPACE_RE.sub("°", text)
    return _NUMERIC_RE.sub(_expand, text)
