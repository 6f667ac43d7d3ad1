"""Text frontend: DLE's ``english_cleaners``, ARPAbet input, symbol ids, splitting.

Gives exactly the symbol ids of NVIDIA DeepLearningExamples' ``text_to_sequence(text,
["english_cleaners"])`` for Tacotron2 (front end ``tacotron2``: DLE's own
transliteration table) and CUDA-Optimized FastSpeech (front end ``fastspeech``: the
``unidecode`` package). Both use the same 148 symbols; id 0 is padding.
"""

from __future__ import annotations

from tts.text.cleaners import FRONTENDS
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
    "PAD_ID",
    "SYMBOLS",
    "EncodedText",
    "clean_text",
    "encode",
    "sequence_to_text",
    "split_text",
    "text_to_sequence",
]
