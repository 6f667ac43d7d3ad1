"""Word tables of the ``full`` text normalizer (units, currencies, abbreviations, acronyms).

Plain data, no logic: the normalizer (``tts.text.normalizer`` and
``tts.text._norm_numbers``) builds its regexes from these tables once, at import.
"""

from __future__ import annotations

MONTHS: dict[str, str] = {
    "jan": "january", "feb": "february", "mar": "march", "apr": "april", "may": "may", "jun": "june",
    "jul": "july", "aug": "august", "sep": "september", "sept": "september", "oct": "october",
    "nov": "november", "dec": "december",
}
MONTH_NAMES: tuple[str, ...] = ("january", "february", "march", "april", "may", "june", "july", "august",
                                "september", "october", "november", "december")

#: Currency symbol or code -> (singular, plural, subunit singular, subunit plural); no subunit: None.
CURRENCIES: dict[str, tuple[str, str, str | None, str | None]] = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "US$": ("dollar", "dollars", "cent", "cents"),
    "C$": ("canadian dollar", "canadian dollars", "cent", "cents"),
    "A$": ("australian dollar", "australian dollars", "cent", "cents"),
    "AU$": ("australian dollar", "australian dollars", "cent", "cents"),
    "NZ$": ("new zealand dollar", "new zealand dollars", "cent", "cents"),
    "HK$": ("hong kong dollar", "hong kong dollars", "cent", "cents"),
    "S$": ("singapore dollar", "singapore dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "¥": ("yen", "yen", None, None),
    "₹": ("rupee", "rupees", "paisa", "paise"),
    "₩": ("won", "won", None, None),
    "₽": ("ruble", "rubles", "kopek", "kopeks"),
    "USD": ("dollar", "dollars", "cent", "cents"),
    "EUR": ("euro", "euros", "cent", "cents"),
    "GBP": ("pound", "pounds", "penny", "pence"),
    "JPY": ("yen", "yen", None, None),
    "CAD": ("canadian dollar", "canadian dollars", "cent", "cents"),
    "AUD": ("australian dollar", "australian dollars", "cent", "cents"),
    "CHF": ("swiss franc", "swiss francs", "centime", "centimes"),
    "CNY": ("yuan", "yuan", None, None),
    "INR": ("rupee", "rupees", "paisa", "paise"),
}

#: Magnitude suffixes after an amount ($2.5M, 80k, $3bn).
SCALES: dict[str, str] = {
    "k": "thousand", "K": "thousand", "m": "million", "M": "million", "mn": "million", "mln": "million",
    "b": "billion", "B": "billion", "bn": "billion", "t": "trillion", "T": "trillion", "tn": "trillion",
    "thousand": "thousand", "million": "million", "billion": "billion", "trillion": "trillion",
}

#: Unit written after a number -> (singular, plural). Case matters (m = meter, M = million).
UNITS: dict[str, tuple[str, str]] = {
    "mm": ("millimeter", "millimeters"), "cm": ("centimeter", "centimeters"), "m": ("meter", "meters"),
    "km": ("kilometer", "kilometers"), "nm": ("nanometer", "nanometers"), "µm": ("micrometer", "micrometers"),
    "μm": ("micrometer", "micrometers"), "ft": ("foot", "feet"), "yd": ("yard", "yards"), "yds": ("yard", "yards"),
    "mi": ("mile", "miles"), "mg": ("milligram", "milligrams"), "g": ("gram", "grams"), "kg": ("kilogram", "kilograms"),
    "kgs": ("kilogram", "kilograms"), "lb": ("pound", "pounds"), "lbs": ("pound", "pounds"), "oz": ("ounce", "ounces"),
    "ml": ("milliliter", "milliliters"), "mL": ("milliliter", "milliliters"), "cl": ("centiliter", "centiliters"),
    "l": ("liter", "liters"), "L": ("liter", "liters"), "gal": ("gallon", "gallons"),
    "ms": ("millisecond", "milliseconds"), "sec": ("second", "seconds"), "secs": ("second", "seconds"),
    "min": ("minute", "minutes"), "mins": ("minute", "minutes"), "h": ("hour", "hours"), "hr": ("hour", "hours"),
    "hrs": ("hour", "hours"), "yr": ("year", "years"), "yrs": ("year", "years"), "wk": ("week", "weeks"),
    "wks": ("week", "weeks"),
    "mph": ("mile per hour", "miles per hour"), "km/h": ("kilometer per hour", "kilometers per hour"),
    "kmh": ("kilometer per hour", "kilometers per hour"), "kph": ("kilometer per hour", "kilometers per hour"),
    "m/s": ("meter per second", "meters per second"),
    "KB": ("kilobyte", "kilobytes"), "kB": ("kilobyte", "kilobytes"), "MB": ("megabyte", "megabytes"),
    "GB": ("gigabyte", "gigabytes"), "TB": ("terabyte", "terabytes"), "PB": ("petabyte", "petabytes"),
    "Kb": ("kilobit", "kilobits"), "kb": ("kilobit", "kilobits"), "Mb": ("megabit", "megabits"),
    "Gb": ("gigabit", "gigabits"), "kbps": ("kilobit per second", "kilobits per second"),
    "Mbps": ("megabit per second", "megabits per second"), "Gbps": ("gigabit per second", "gigabits per second"),
    "MB/s": ("megabyte per second", "megabytes per second"), "GB/s": ("gigabyte per second", "gigabytes per second"),
    "Hz": ("hertz", "hertz"), "kHz": ("kilohertz", "kilohertz"), "MHz": ("megahertz", "megahertz"),
    "GHz": ("gigahertz", "gigahertz"),
    "W": ("watt", "watts"), "kW": ("kilowatt", "kilowatts"), "MW": ("megawatt", "megawatts"),
    "GW": ("gigawatt", "gigawatts"), "kWh": ("kilowatt hour", "kilowatt hours"), "V": ("volt", "volts"),
    "kV": ("kilovolt", "kilovolts"), "mA": ("milliamp", "milliamps"), "mAh": ("milliamp hour", "milliamp hours"),
    "°F": ("degree fahrenheit", "degrees fahrenheit"), "°C": ("degree celsius", "degrees celsius"),
    "℉": ("degree fahrenheit", "degrees fahrenheit"), "℃": ("degree celsius", "degrees celsius"),
    "°": ("degree", "degrees"),
    "sq ft": ("square foot", "square feet"), "sq mi": ("square mile", "square miles"),
    "km²": ("square kilometer", "square kilometers"), "m²": ("square meter", "square meters"),
    "ft²": ("square foot", "square feet"), "m³": ("cubic meter", "cubic meters"), "cm³": ("cubic centimeter",
                                                                                          "cubic centimeters"),
    "cc": ("c c", "c c"), "ha": ("hectare", "hectares"), "dB": ("decibel", "decibels"),
    "px": ("pixel", "pixels"), "bpm": ("beat per minute", "beats per minute"), "rpm": ("r p m", "r p m"),
    "psi": ("p s i", "p s i"), "kcal": ("kilocalorie", "kilocalories"), "cal": ("calorie", "calories"),
    "ppm": ("part per million", "parts per million"), "mpg": ("mile per gallon", "miles per gallon"),
    "Nm": ("newton meter", "newton meters"), "tbsp": ("tablespoon", "tablespoons"),
    "Tbsp": ("tablespoon", "tablespoons"), "tsp": ("teaspoon", "teaspoons"),
}

#: Abbreviations that stand before a name and never end a sentence ("Mr." -> "mister").
TITLES: dict[str, str] = {
    "mr": "mister", "mrs": "missus", "ms": "miss", "messrs": "messieurs", "prof": "professor",
    "gen": "general", "lt": "lieutenant", "col": "colonel", "sgt": "sergeant", "capt": "captain",
    "maj": "major", "cpl": "corporal", "pvt": "private", "adm": "admiral", "cmdr": "commander",
    "rev": "reverend", "hon": "honorable", "gov": "governor", "sen": "senator", "rep": "representative",
    "pres": "president", "mt": "mount", "ft": "fort", "fr": "father", "drs": "doctors", "supt": "superintendent",
}
#: Abbreviations that may end a sentence (their period is kept when one seems to end there).
SUFFIXES: dict[str, str] = {
    "jr": "junior", "sr": "senior", "esq": "esquire", "co": "company", "corp": "corporation",
    "inc": "incorporated", "ltd": "limited", "bros": "brothers", "ave": "avenue", "blvd": "boulevard",
    "rd": "road", "ln": "lane", "hwy": "highway", "apt": "apartment", "dept": "department",
    "univ": "university", "est": "established", "etc": "et cetera", "vs": "versus", "approx": "approximately",
    "fig": "figure", "figs": "figures", "vol": "volume", "vols": "volumes", "ch": "chapter", "pp": "pages",
    "ext": "extension", "misc": "miscellaneous", "govt": "government", "intl": "international",
    "assn": "association", "cf": "compare", "ref": "reference", "incl": "including", "max": "maximum",
    "jan": "january", "feb": "february", "mar": "march", "apr": "april", "jun": "june", "jul": "july",
    "aug": "august", "sep": "september", "sept": "september", "oct": "october", "nov": "november",
    "dec": "december",
}
#: Dotted lower-case abbreviations read as words.
DOTTED_WORDS: dict[str, str] = {
    "e.g.": "for example", "i.e.": "that is", "a.k.a.": "also known as", "etc.": "et cetera",
    "vs.": "versus", "p.s.": "p s", "r.i.p.": "r i p",
}

#: All-capital words read as words, not letter by letter.
WORD_ACRONYMS = frozenset("""
NASA NATO UNESCO UNICEF FIFA NASDAQ OPEC LASER RADAR SCUBA AIDS COVID GIF JPEG PIN ASAP NAFTA OSHA FEMA
SWAT SARS MERS ISIS DARPA INTERPOL IKEA LEGO NIMBY YOLO FOMO WASP ZIP SIM RAM ROM CAPTCHA DOS UNIX
POTUS SCOTUS FLOTUS GIGO TESOL CERN ESA ICANN MENSA NAND QUANGO AWOL ANZAC EFTA ASEAN BAFTA SONAR
""".split())

#: Short English words that all-capital text uses for emphasis ("Do NOT touch").
COMMON_WORDS = frozenset("""
a i am an and are as at be been but by can cannot did do does done down each else even ever every
for free from get go going good got had has have he help her here him his how if in into is it its
just keep know last less like look made make many may me more most must my never new no nor not now
of off oh ok okay old on once one only or our out over own please read real really right said same
say see she should so some still stop such sure take than that the their them then there these they
thing this those time to too two under until up upon us very wait want was way we well were what
when where which while who why will with would yes yet you your all any both few hot big sale today
tonight warning danger caution notice important attention urgent news breaking update alert final
win won lose lost best love hate great huge awesome amazing omg lol wow hey hi hello thanks thank
ever again always back now live left right open close closed exit enter push pull off
""".split())

#: Mixed-case tokens read letter by letter (or partly).
MIXED_CASE: dict[str, str] = {
    "PhD": "p h d", "PhDs": "p h ds", "iOS": "i o s", "macOS": "mac o s", "IoT": "i o t", "GmbH": "g m b h",
    "TfL": "t f l", "DoD": "d o d", "DoE": "d o e", "PoC": "p o c", "MSc": "m s c", "BSc": "b s c",
    "BEng": "b eng", "MEng": "m eng", "LLC": "l l c", "pH": "p h", "mRNA": "m r n a", "eBay": "e bay",
    "iPhone": "i phone", "iPad": "i pad", "iPod": "i pod", "iMac": "i mac", "tvOS": "t v o s",
    "watchOS": "watch o s", "DevOps": "dev ops", "GitHub": "git hub", "YouTube": "you tube",
    "PayPal": "pay pal", "McD": "m c d", "IDs": "i ds", "CEOs": "c e os", "URLs": "u r ls",
}

#: Names after which a Roman numeral is a regnal number ("Elizabeth II" -> "elizabeth the second").
REGNAL_NAMES = frozenset("""
george henry edward elizabeth louis charles william james richard john paul benedict pius leo gregory
alexander peter catherine frederick philip napoleon ramesses rameses constantine mary victoria anne
david robert stephen harold alfonso ferdinand ivan nicholas innocent clement urban boniface
sixtus felix nicholas ludwig wilhelm gustav christian olaf haakon carl juan carlos felipe pedro manuel
ptolemy cleopatra thutmose amenhotep darius xerxes cyrus antiochus herod otto rudolf francis karl
sancho alfred canute edmund ethelred athelstan edgar harald magnus eric erik sigismund casimir
sobieski mehmed suleiman selim murad bayezid osman ahmed mahmud abdul hussein faisal abdullah
""".split())

#: Words after which a Roman numeral is a plain number ("World War II" -> "world war two").
ROMAN_CARDINAL_WORDS = frozenset("""
chapter chapters part parts volume vol book books act acts scene war phase episode section article
level stage round grade class type title appendix series mark mk bowl game season psalm canto
division tier category version vatican apollo gemini saturn rocky star schedule figure fig annex
unit plate
""".split())

#: Top-level domains read letter by letter (".io" -> "i o"); others are read as words (".com").
SPELLED_TLDS = frozenset("io ai uk us eu de fr nl au ca jp cn ru in tv me ly gg co".split())

#: Words that make a following 4-digit number a year.
YEAR_CONTEXT = frozenset("""
in since by from until till of year years circa around before after during early late mid spring
summer autumn fall winter the a an his her their its our my your class born died election season
""".split())

#: Words before a decimal number that make it a version ("Python 3.11" -> "three point eleven").
VERSION_CONTEXT = frozenset("version ver v python ios android windows macos linux kernel release firmware "
                            "update node java php perl ruby rust go gcc chrome firefox ubuntu debian "
                            "fedora api bluetooth usb wifi http html css".split())

#: Words after a 4-digit number that make it a count, not a year ("1999 people").
COUNT_NOUNS = frozenset("""
people persons men women children kids adults users customers employees workers staff students members
voters votes jobs homes houses cars units copies items pieces words pages points steps followers fans
views likes subscribers visitors tourists residents citizens troops soldiers deaths cases patients
calories miles kilometers meters feet yards pounds kilograms grams dollars euros tons times hours
minutes seconds days weeks months years rooms seats beds tickets runners players applicants
participants attendees guests books songs lines rows files emails messages posts tweets
""".split())

#: Words before a 3-digit number that make it a telephone number or extension (digit by digit).
PHONE_CONTEXT = frozenset("call phone tel telephone dial fax text mobile cell hotline ring ext extension".split())

#: Words after "/" that make it "per" ("$1,800/month").
PER_WORDS = frozenset("hour day week month year night person head unit item piece page kg lb mile km "
                      "gallon liter litre serving share".split())
