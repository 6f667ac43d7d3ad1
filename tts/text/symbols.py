"""The symbol table shared by DLE Tacotron2 and FastSpeech: 148 symbols, id = index.

Order (as DLE's ``symbols.py``): 0 ``_`` padding, 1 ``-``, 2-11 ``!'(),.:;?`` and
space, 12-37 ``A``-``Z``, 38-63 ``a``-``z``, 64-147 the ARPAbet phonemes written
``@AA`` ... ``@ZH`` (the ``@`` keeps them apart from the capital letters).
"""

from __future__ import annotations

#: CMUdict's ARPAbet phonemes with stress digits, in DLE's order.
ARPABET: tuple[str, ...] = (
    "AA", "AA0", "AA1", "AA2", "AE", "AE0", "AE1", "AE2", "AH", "AH0", "AH1", "AH2",
    "AO", "AO0", "AO1", "AO2", "AW", "AW0", "AW1", "AW2", "AY", "AY0", "AY1", "AY2",
    "B", "CH", "D", "DH", "EH", "EH0", "EH1", "EH2", "ER", "ER0", "ER1", "ER2", "EY",
    "EY0", "EY1", "EY2", "F", "G", "HH", "IH", "IH0", "IH1", "IH2", "IY", "IY0", "IY1",
    "IY2", "JH", "K", "L", "M", "N", "NG", "OW", "OW0", "OW1", "OW2", "OY", "OY0",
    "OY1", "OY2", "P", "R", "S", "SH", "T", "TH", "UH", "UH0", "UH1", "UH2", "UW",
    "UW0", "UW1", "UW2", "V", "W", "Y", "Z", "ZH",
)

PAD = "_"
PAD_ID = 0

SYMBOLS: tuple[str, ...] = (
    (PAD, "-")
    + tuple("!'(),.:;? ")
    + tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    + tuple("@" + p for p in ARPABET)
)

#: Symbol -> id for every symbol that ``text_to_sequence`` may emit (padding never is).
SYMBOL_TO_ID: dict[str, int] = {s: i for i, s in enumerate(SYMBOLS) if s != PAD}
