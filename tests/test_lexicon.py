"""Pronunciation lexicons (``tts.text.lexicon``, ``--lexicon``) and what a response says was spoken.

Parsing (CMUdict files, Riva ``custom_dictionary`` strings, clear errors naming file and line),
the effect on the symbol ids and the audio, the ``tts-synth`` and ``tts-server`` flags, and
``normalized_text`` / ``dropped`` (what was spoken / what was not).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES
from tts.errors import InvalidInputError
from tts.text import encode
from tts.text.lexicon import Lexicon, as_lexicon, load_lexicon, parse_custom_dictionary, parse_lexicon
from tts.text.symbols import SYMBOL_TO_ID

pytestmark = pytest.mark.timeout(300)

FS = FIXTURES / "fastspeech" / "checkpoint_005000.pt"
WG = FIXTURES / "waveglow" / "checkpoint_WaveGlow_ngc_style_ddp.pt"

CMUDICT_STYLE = """\
;;; a comment, as CMUdict starts
# another comment
READ  R EH1 D
READ(2)  R IY1 D
tomato  t ah0 m aa1 t ow2
Don't  D OW1 N T
!EXCLAMATION-POINT  EH2 K S K L AH0 M EY1 SH AH0 N P OY2 N T
A.  EY1
SECOND(1)  S EH1 K AH0 N D
"""


def ids_of(*phonemes: str) -> list[int]:
    return [SYMBOL_TO_ID["@" + p] for p in phonemes]


def contains(seq, sub) -> bool:
    seq, sub = list(seq), list(sub)
    return any(seq[i:i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


# ----------------------------------------------------------------------------- parsing

def test_cmudict_lines_comments_case_and_variants():
    lex = parse_lexicon(CMUDICT_STYLE, source="my.dict")
    assert dict(lex) == {
        "read": ("R", "EH1", "D"),                 # READ(2) comes later: the first pronunciation wins
        "tomato": ("T", "AH0", "M", "AA1", "T", "OW2"),       # phonemes upper-cased
        "don't": ("D", "OW1", "N", "T"),
        "second": ("S", "EH1", "K", "AH0", "N", "D"),         # a variant with no plain entry is taken
    }                                               # punctuation names and "A." never appear in cleaned text
    assert lex.source == "my.dict"


def test_a_line_without_phonemes_names_file_and_line(tmp_path):
    path = tmp_path / "bad.dict"
    path.write_text("READ  R EH1 D\n\nTOMATO\n", encoding="utf-8")
    with pytest.raises(InvalidInputError) as info:
        load_lexicon(path)
    assert str(info.value).startswith(f"{path}: line 3: 'TOMATO' has a word but no phonemes")
    assert info.value.field == "lexicon"


def test_unknown_arpabet_symbols_are_named(tmp_path):
    path = tmp_path / "ipa.dict"
    path.write_text("# ok\nREAD  R EH1 D\nTOMATO  T AH0 M XX1 T Q\n", encoding="utf-8")
    with pytest.raises(InvalidInputError) as info:
        load_lexicon(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line 3: unknown ARPAbet symbols 'XX1', 'Q'")


def test_missing_empty_and_latin1_files(tmp_path):
    with pytest.raises(InvalidInputError, match=r"lexicon .*nope\.dict: cannot read it"):
        load_lexicon(tmp_path / "nope.dict")
    empty = tmp_path / "empty.dict"
    empty.write_text(";;; nothing\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="no entries"):
        load_lexicon(empty)
    latin = tmp_path / "latin.dict"
    latin.write_bytes("CAFE  K AH0 F EY1\n;;; caf\xe9\n".encode("latin-1"))      # older CMUdict releases
    assert dict(load_lexicon(latin)) == {"cafe": ("K", "AH0", "F", "EY1")}


def test_riva_custom_dictionary_strings():
    lex = parse_custom_dictionary("tomato  T AH0 M AA1 T OW2,NVIDIA  EH0 N V IH1 D IY0 AH0, read  R IY1 D")
    assert dict(lex) == {"tomato": ("T", "AH0", "M", "AA1", "T", "OW2"),
                         "nvidia": ("EH0", "N", "V", "IH1", "D", "IY0", "AH0"), "read": ("R", "IY1", "D")}
    assert parse_custom_dictionary("") is None and parse_custom_dictionary(" , ") is None
    with pytest.raises(InvalidInputError, match=r"custom_dictionary: entry 2 'tomato T AH0': expected 'word  "):
        parse_custom_dictionary("read  R IY1 D,tomato T AH0")
    with pytest.raises(InvalidInputError, match=r"custom_dictionary: entry 1 .*unknown ARPAbet symbol 'ZZ'"):
        parse_custom_dictionary("read  R ZZ D")
    with pytest.raises(InvalidInputError, match="is not a word"):
        parse_custom_dictionary("r2d2  AA1")


def test_merged_lexicons_prefer_the_later_one():
    base = parse_lexicon("READ  R EH1 D\nIT  IH1 T\n")
    call = parse_custom_dictionary("read  R IY1 D")
    merged = base.merged(call)
    assert merged["read"] == ("R", "IY1", "D") and merged["it"] == ("IH1", "T")
    assert base["read"] == ("R", "EH1", "D")                      # unchanged
    assert base.merged(None) is base and Lexicon().merged(call) is call
    assert dict(as_lexicon({"Read": "r iy1 d"})) == {"read": ("R", "IY1", "D")}


# ----------------------------------------------------------------------------- the symbol sequence

def test_lexicon_words_become_their_phonemes():
    lex = parse_lexicon(CMUDICT_STYLE)
    plain = encode("I READ it, Don't you?")
    enc = encode("I READ it, Don't you?", lexicon=lex)
    assert enc.spoken == "i {R EH1 D} it, {D OW1 N T} you?"
    assert contains(enc.ids, ids_of("R", "EH1", "D")) and contains(enc.ids, ids_of("D", "OW1", "N", "T"))
    assert not contains(plain.ids, ids_of("R", "EH1", "D"))
    assert enc.cleaned == plain.cleaned == "i read it, don't you?"     # cleaning itself is unchanged
    # Parts of other words and explicit {...} groups are not looked up.
    assert encode("Reading {R IY1 D}", lexicon=lex).spoken == "reading {R IY1 D}"


def test_the_lexicon_sees_the_normalized_words():
    lex = parse_lexicon("SECOND  S EH1 K AH0 N D\nDOCTOR  D AA1 K\nPERCENT  P ER0 S EH1 N T\n")
    enc = encode("The 2nd visit of Dr. Smith is 5% off", normalizer="full", lexicon=lex)
    assert "{S EH1 K AH0 N D}" in enc.spoken and "{D AA1 K}" in enc.spoken and "{P ER0 S EH1 N T}" in enc.spoken
    # With NVIDIA's cleaners "Dr." is still "doctor" (their abbreviations), and "%" stays unspoken.
    enc = encode("Dr. Smith is 5% off", normalizer="dle", lexicon=lex)
    assert enc.spoken == "{D AA1 K} smith is five off" and enc.dropped == "%"


def test_lexicon_words_in_capitals_are_not_spelled_first():
    """The full normalizer spells "SQL" and "GPU" letter by letter; a lexicon that has them keeps them
    words (and the rest of the sentence reads as before: "THE BOOK" in a shouted line stays words)."""
    lex = parse_lexicon("SQL  S IY1 K W AH0 L\nGPU  JH IY1 P IY1 Y UW1\nREAD  R EH1 D\n")
    assert encode("We use SQL on a GPU.", normalizer="full").spoken == "we use s q l on a g p u."
    assert encode("We use SQL on a GPU.", normalizer="full", lexicon=lex).spoken == \
        "we use {S IY1 K W AH0 L} on a {JH IY1 P IY1 Y UW1}."
    assert encode("I READ THE BOOK", normalizer="full", lexicon=lex).spoken == "i {R EH1 D} the book"
    assert encode("On May 5 we met", normalizer="full", lexicon=parse_lexicon("MAY  M EY1\n")).spoken == \
        "on {M EY1} fifth we met"                    # the normalizer still reads the date in context


# ----------------------------------------------------------------------------- what is spoken / dropped

@pytest.mark.parametrize("text, normalizer, spoken, dropped", [
    ("100% sure", "dle", "one hundred sure", "%"),
    ("100% sure", "full", "one hundred percent sure", ""),
    ('He said "hi" & left', "dle", "he said hi left", '""&'),
    ("a \u2665 b", "dle", "a b", "\u2665"),
    ("say {HH XX AH0} now", "dle", "say {HH AH0} now", "XX"),
])
def test_spoken_text_leaves_out_what_is_dropped(text, normalizer, spoken, dropped):
    enc = encode(text, normalizer=normalizer)
    assert enc.spoken == spoken and enc.dropped == dropped


@pytest.fixture(scope="module")
def fs_voice():
    from tts.options import SynthesisOptions
    from tts.voice import Voice

    voice = Voice.from_checkpoints(fastspeech=FS, waveglow=WG, name="fs")
    voice.defaults = SynthesisOptions(sigma=0.0).merged_over(voice.defaults)
    return voice


def test_synthesizer_lexicon_changes_ids_and_audio(fs_voice):
    from tts.synthesizer import Synthesizer

    lex = parse_lexicon("TOMATO  T AH0 M AA1 T OW2\n")
    plain, custom = Synthesizer(fs_voice), Synthesizer(fs_voice, lexicon=lex)
    text = "Say tomato, 100% sure."
    p0, p1 = plain.plan(text), custom.plan(text)
    assert not contains(p0.pieces[0][1], ids_of("T", "AH0", "M", "AA1", "T", "OW2"))
    assert contains(p1.pieces[0][1], ids_of("T", "AH0", "M", "AA1", "T", "OW2"))
    assert p1.normalized_text == "say {T AH0 M AA1 T OW2}, one hundred percent sure."
    r0, r1 = plain.synthesize(text), custom.synthesize(text)
    assert r1.normalized_text == p1.normalized_text
    assert len(r0.audio) != len(r1.audio) or np.abs(r0.audio - r1.audio).max() > 1e-3
    # A call's lexicon goes on top of the synthesizer's; the plan is the same as a written group.
    p2 = custom.plan(text, lexicon=parse_custom_dictionary("tomato  T AH0 M EY1 T OW2"))
    written = plain.plan("Say {T AH0 M EY1 T OW2}, 100% sure.")
    assert [ids for _, ids in p2.pieces] == [ids for _, ids in written.pieces]
    # The voice's lexicon is the synthesizer's default.
    fs_voice.lexicon = lex
    try:
        assert Synthesizer(fs_voice).plan(text).pieces == p1.pieces     # same texts and ids
    finally:
        fs_voice.lexicon = None


def test_load_voice_takes_a_lexicon(tmp_path):
    from tts.voice import bundled_voices, load_voice

    if not bundled_voices():
        pytest.skip("no bundled voice")
    path = tmp_path / "l.dict"
    path.write_text("READ  R EH1 D\n", encoding="utf-8")
    assert dict(load_voice(bundled_voices()[0], lexicon=path).lexicon) == {"read": ("R", "EH1", "D")}


# ----------------------------------------------------------------------------- the flags

def run_synth(args, capsys):
    from tts.cli.synth import main

    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_tts_synth_lexicon_flag(tmp_path, capsys):
    lex = tmp_path / "names.dict"
    lex.write_text("TOMATO  T AH0 M AA1 T OW2\n", encoding="utf-8")
    phrases = tmp_path / "p.txt"
    phrases.write_text("Say tomato, 100% sure.\n", encoding="utf-8")
    common = [str(phrases), "--fastspeech", str(FS), "--waveglow", str(WG), "--sigma", "0", "--quiet"]
    assert run_synth(common + ["--out", str(tmp_path / "plain")], capsys)[0] == 0
    code, _, err = run_synth(common + ["--out", str(tmp_path / "lex"), "--lexicon", str(lex)], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "lex" / "report.json").read_text())
    assert report["utterances"][0]["normalized_text"] == "say {T AH0 M AA1 T OW2}, one hundred percent sure."
    assert report["lexicon"] == {"file": str(lex), "words": 1}
    import soundfile as sf
    a, _ = sf.read(tmp_path / "plain" / "1.wav")
    b, _ = sf.read(tmp_path / "lex" / "1.wav")
    assert len(a) != len(b) or np.abs(a - b).max() > 1e-3


def test_tts_synth_reports_dropped_characters(tmp_path, capsys):
    phrases = tmp_path / "p.txt"
    phrases.write_text("I am 100% sure.\n", encoding="utf-8")
    code, _, err = run_synth([str(phrases), "--fastspeech", str(FS), "--waveglow", str(WG), "--sigma", "0",
                              "--text-normalizer", "dle", "--quiet", "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    entry = json.loads((tmp_path / "o" / "report.json").read_text())["utterances"][0]
    assert entry["normalized_text"] == "i am one hundred sure." and entry["dropped_chars"] == "%"
    assert "not spoken (no symbol): '%'" in err


@pytest.mark.parametrize("content, words", [
    ("READ  R EH1 D\nTOMATO\n", ["line 2", "no phonemes"]),
    ("READ  R EH1 D\nTOMATO  T AH0 M EY1 T OW9\n", ["line 2", "'OW9'"]),
])
def test_bad_lexicon_file_is_one_line_before_models_load(tmp_path, capsys, content, words):
    lex = tmp_path / "bad.dict"
    lex.write_text(content, encoding="utf-8")
    code, _, err = run_synth(["--text", "Hello", "--lexicon", str(lex), "--fastspeech", str(tmp_path / "none.pt"),
                              "--waveglow", str(WG), "--out", str(tmp_path / "o.wav")], capsys)
    assert code == 1
    assert err.startswith(f"tts-synth: error: {lex}: ") and all(w in err for w in words), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, _, err = run_synth(["--text", "Hello", "--lexicon", str(tmp_path / "missing.dict"),
                              "--out", str(tmp_path / "o.wav")], capsys)
    assert code == 1 and "missing.dict: cannot read it" in err and "Traceback" not in err


def test_tts_server_lexicon_flag(tmp_path, capsys):
    from tts.cli.server import build_parser, build_server, main

    lex = tmp_path / "names.dict"
    lex.write_text("TOMATO  T AH0 M AA1 T OW2\n", encoding="utf-8")
    args = build_parser().parse_args(["--fastspeech", str(FS), "--waveglow", str(WG), "--lexicon", str(lex),
                                      "--port", "0", "--metrics-port", "-1", "--no-warmup"])
    server = build_server(args)
    synth = next(iter(server.engine.synthesizers.values()))[0]
    assert dict(synth.lexicon) == {"tomato": ("T", "AH0", "M", "AA1", "T", "OW2")}
    assert synth.plan("A tomato.").normalized_text == "a {T AH0 M AA1 T OW2}."
    bad = tmp_path / "bad.dict"
    bad.write_text("TOMATO  T AH0 M EY1 T OW9\n", encoding="utf-8")
    code = main(["--fastspeech", str(FS), "--waveglow", str(WG), "--lexicon", str(bad), "--port", "0",
                 "--metrics-port", "-1", "--no-warmup"])
    err = capsys.readouterr().err
    assert code == 1 and f"tts-server: error: {bad}: line 1: unknown ARPAbet symbol 'OW9'" in err
    assert "Traceback" not in err
