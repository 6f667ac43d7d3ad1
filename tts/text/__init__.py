"""Text frontend: a normalizer, DLE's ``english_cleaners``, ARPAbet input, symbol ids, splitting.

With the ``dle`` normalizer (the default of ``encode``) it gives exactly the symbol
ids of NVIDIA DeepLearningExamples' ``text_to_sequence(text, ["english_cleaners"])``
for Tacotron2 (front end ``tacotron2``: DLE's own transliteration table) and
CUDA-Optimized FastSpeech (front end ``fastspeech``: the ``unidecode`` package).
Both use the same 148 symbols; id 0 is padding. The ``full`` normalizer
(``tts.text.normalizer``) first reads written forms (money, dates, units, ...) as words.
"""

from __future__ import annotations

from tts.text.cleaners import FRONTENDS
from tts.text.normalizer import NORMALIZERS, check_normalizer, normalize
from tts.text.sequence import (
    EncodedText,
    clean_text,
    encode,
    sequence_to_text,
    text_to_sequence,
)
from tts.text.split import split_text
from tts.text.symbols import PAD_ID, SYMBOLS

__all__ = [
    "FRONTENDS",
    "NORMALIZERS",
    "PAD_ID",
    "SYMBOLS",
    "EncodedText",
    "check_normalizer",
    "clean_text",
    "encode",
    "normalize",
    "sequence_to_text",
    "split_text",
    "text_to_sequence",
]
