"""The ``full`` text normalizer: its test set (the score is printed), ``dle`` left exact, the option's path.

``tests/data/normalize_cases.tsv`` holds real-style inputs (news, manuals, chat)
with the readings a person would accept. A case passes when the cleaned text
that the model will spell equals one of them, compared without case, hyphens
and punctuation.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import FIXTURES
from tts.errors import InvalidInputError, VoiceError
from tts.options import SynthesisOptions
from tts.text import encode, normalize

CASES = Path(__file__).parent / "data" / "normalize_cases.tsv"
REPO = Path(__file__).resolve().parents[1]
T2 = FIXTURES / "tacotron2" / "checkpoint_Tacotron2_current_1gpu.pt"
WG = FIXTURES / "waveglow" / "checkpoint_WaveGlow_ngc_style_ddp.pt"
#: The share of cases that must read acceptably.
MIN_SCORE = 0.95
#: Every semiotic class the set must cover.
CLASSES = {"money", "percent", "decimal", "cardinal", "ordinal", "fraction", "range", "score", "negative", "time",
           "date", "year", "measure", "phone", "roman", "acronym", "abbreviation", "web", "handle", "symbol",
           "unicode", "plain", "chat", "manual", "news"}

_CANON_RE = re.compile(r"[^a-z ]+")
_CHOICE_RE = re.compile(r"\{([^{}]*)\}")


def canonical(text: str) -> str:
    """Lower case, hyphens as spaces, only letters and single spaces."""
    return " ".join(_CANON_RE.sub("", text.lower().replace("-", " ")).split())


def readings(field: str) -> set[str]:
    """Every accepted reading of a case: " || " separates readings, {a|b} picks one, {a|} is optional."""
    out, todo = set(), field.split(" || ")
    while todo:
        reading = todo.pop()
        m = _CHOICE_RE.search(reading)
        if m is None:
            out.add(canonical(reading))
        else:
            todo.extend(reading[:m.start()] + choice + reading[m.end():] for choice in m.group(1).split("|"))
    return out


def load_cases(path: Path = CASES) -> list[tuple[str, str, set[str]]]:
    cases = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            cls, text, accepted = line.split("\t")
            cases.append((cls, text, readings(accepted)))
    return cases


def score(read, cases) -> tuple[float, dict[str, tuple[int, int]], list[tuple[str, str]]]:
    """(share passed, per class (passed, total), failures (input, output)) of ``read`` on ``cases``."""
    per: dict[str, list[int]] = {}
    failures = []
    for cls, text, accepted in cases:
        out = read(text)
        ok = canonical(out) in accepted
        per.setdefault(cls, [0, 0])[0] += ok
        per[cls][1] += 1
        if not ok:
            failures.append((text, out))
    total = sum(p for p, _ in per.values()) / len(cases)
    return total, {c: (p, n) for c, (p, n) in per.items()}, failures


def test_the_case_set_is_large_and_covers_every_class():
    cases = load_cases()
    assert len(cases) >= 300
    counts = Counter(cls for cls, _, _ in cases)
    assert set(counts) == CLASSES
    assert min(counts.values()) >= 5
    assert len({text for _, text, _ in cases}) == len(cases)


def test_full_normalizer_score():
    cases = load_cases()
    total, per, failures = score(lambda t: encode(t, "tacotron2", "full").cleaned, cases)
    print(f"\ntext normalization (full): {total:.1%} of {len(cases)} cases read acceptably")
    for cls, (passed, n) in sorted(per.items()):
        print(f"  {cls:<13} {passed:>3}/{n}")
    for text, out in failures:
        print(f"  not accepted: {text!r} -> {out!r}")
    assert total >= MIN_SCORE


def test_readings_expand_choices():
    assert readings("a {b|c} d || e{ f|}") == {"a b d", "a c d", "e f", "e"}
    assert canonical("Twenty-one o'clock, p.m.!") == "twenty one oclock pm"


# ----------------------------------------------------------------- dle stays NVIDIA's

def test_dle_is_the_default_of_encode_and_exact(sentences):
    for s in sentences:
        for frontend, key in (("tacotron2", ""), ("fastspeech", "_fastspeech")):
            enc = encode(s["text"], frontend, "dle")
            assert enc.cleaned == s["cleaned" + key] and list(enc.ids) == s["ids" + key]
            assert enc == encode(s["text"], frontend)


def _fixture_lines(tmp_path: Path, key: str) -> tuple[Path, str]:
    rows = [json.loads(line) for line in (FIXTURES / "text" / "sentences.jsonl").read_text("utf-8").splitlines()]
    rows = [r for r in rows if "\n" not in r["text"] and "\r" not in r["text"]]
    assert len(rows) == 59          # all but the one sentence with a line break
    path = tmp_path / "sentences.txt"
    path.write_text("".join(r["text"] + "\n" for r in rows), encoding="utf-8")
    return path, "".join(r[key] + "\n" for r in rows)


@pytest.mark.parametrize("frontend,key", [("tacotron2", "cleaned"), ("fastspeech", "cleaned_fastspeech")])
def test_tts_normalize_dle_prints_the_reference_cleaned_text(tmp_path, capsys, frontend, key):
    from tts.cli.normalize import main
    path, expected = _fixture_lines(tmp_path, key)
    assert main([str(path), "--text-normalizer", "dle", "--frontend", frontend]) == 0
    out, err = capsys.readouterr()
    assert out == expected
    assert "line 6: not spoken (no symbol)" in err or frontend == "fastspeech"


def test_tts_normalize_console_script_reads_stdin():
    proc = subprocess.run([sys.executable, "-m", "tts.cli.normalize", "-"], input="It's 5:30 PM & 45% off.\n\nA 😀\n",
                          capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["it's five thirty p m and forty-five percent off.", "", "a "]
    assert "line 3: not spoken (no symbol): '😀'" in proc.stderr
    assert "tts-normalize" in (REPO / "pyproject.toml").read_text()


def test_tts_normalize_errors_are_one_line(tmp_path, capsys):
    from tts.cli.normalize import main
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\n")
    assert main([str(bad)]) == 1
    assert "line 2 is not valid UTF-8" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.txt")]) == 1
    assert main(["-", "--voice", "no-such-voice"]) == 1
    assert "unknown voice" in capsys.readouterr().err


# ----------------------------------------------------------------- full: what it keeps and reports

def test_full_reports_what_it_cannot_read():
    enc = encode("Emoji 😀 and *stars* and ™ here.", "tacotron2", "full")
    assert enc.dropped == "😀**™"
    assert "and" in enc.cleaned
    for text in ("50% & more @ #1 + 2 = 3", "Tom & Jerry", "72°F"):
        assert encode(text, "tacotron2", "full").dropped == "", text
        assert encode(text, "tacotron2", "dle").dropped != "", text


def test_full_keeps_arpabet_groups_and_outer_whitespace():
    enc = encode("  Turn at {HH AW1 S S T AH0 N} Main St. at 5pm. ", "tacotron2", "full")
    assert enc.cleaned == " turn at {HH AW1 S S T AH0 N} main street at five p m. "
    assert normalize("\tDr. Smith\n") == "\tdoctor Smith\n" and normalize("   ") == "   "


def test_full_never_raises_on_odd_text():
    alphabet = "0123456789" * 4 + "aAbBmMkKsStT xX$€£¥%:/.,-–+@#&'\"()°½IVXLCD" + " " * 6
    rnd = random.Random(7)
    for _ in range(3000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 40)))
        encode(text, "fastspeech", "full")


def test_unknown_normalizer_is_a_clear_error():
    with pytest.raises(InvalidInputError) as e:
        encode("hi", "tacotron2", "nemo")
    assert e.value.field == "text_normalizer"
    with pytest.raises(InvalidInputError) as e:
        SynthesisOptions(text_normalizer="nemo")
    assert e.value.field == "text_normalizer" and "full, dle" in str(e.value)


# ----------------------------------------------------------------- the option, from voice to request

@pytest.fixture(scope="module")
def t2_voice():
    from tts.voice import Voice
    return Voice.from_checkpoints(tacotron2=T2, waveglow=WG, name="t2")


def test_checkpoint_voices_read_full_and_a_call_can_choose_nvidias_cleaners(t2_voice):
    from tts.synthesizer import Synthesizer
    synth = Synthesizer(t2_voice)
    assert t2_voice.defaults.text_normalizer == "full"
    plan = synth.plan("Is it 50% off?")
    assert plan.normalized_text == "is it fifty percent off?" and plan.dropped == "" and plan.text_normalizer == "full"
    assert list(plan.pieces[0][1]) == list(encode("Is it 50% off?", "tacotron2", "full").ids)
    plan = synth.plan("Is it 50% off?", SynthesisOptions(text_normalizer="dle"))
    # normalized_text is what is spoken: the "%" that has no symbol is in dropped, not in the text
    assert plan.normalized_text == "is it fifty off?" and plan.dropped == "%" and plan.text_normalizer == "dle"


def _manifest(folder: Path, defaults: dict) -> Path:
    folder.mkdir()
    (folder / "voice.json").write_text(json.dumps({
        "name": folder.name, "acoustic": {"kind": "tacotron2", "checkpoint": str(T2)},
        "vocoder": {"kind": "waveglow", "checkpoint": str(WG)}, "defaults": defaults}), encoding="utf-8")
    return folder


def test_voice_folders_default_to_full_and_may_say_dle(tmp_path):
    from tts.voice import Voice, voice_text_settings
    full = _manifest(tmp_path / "full", {"sigma": 0.5})
    dle = _manifest(tmp_path / "dle", {"text_normalizer": "dle"})
    assert Voice.from_dir(full).defaults.text_normalizer == "full"
    assert Voice.from_dir(dle).defaults.text_normalizer == "dle"
    assert voice_text_settings(str(full)) == ("tacotron2", "full")
    assert voice_text_settings(str(dle)) == ("tacotron2", "dle")
    bad = _manifest(tmp_path / "bad", {"text_normalizer": "nemo"})
    with pytest.raises(VoiceError):
        Voice.from_dir(bad)
    with pytest.raises(VoiceError):
        voice_text_settings(str(bad))


def test_tts_synth_flag_reaches_the_plan_and_the_report(tmp_path, capsys):
    from tts.cli.synth import main
    phrases = tmp_path / "p.txt"
    phrases.write_text("Is it 50% off?\n", encoding="utf-8")
    common = [str(phrases), "--tacotron2", str(T2), "--waveglow", str(WG), "--prenet-dropout", "0", "--sigma", "0",
              "--quiet"]
    assert main([*common, "--out", str(tmp_path / "dle"), "--text-normalizer", "dle"]) == 0
    assert "not spoken (no symbol): '%'" in capsys.readouterr().err
    report = json.loads((tmp_path / "dle" / "report.json").read_text())
    assert report["options"]["text_normalizer"] == "dle" and report["utterances"][0]["dropped_chars"] == "%"
    assert main([*common, "--out", str(tmp_path / "full")]) == 0        # the default
    assert "not spoken" not in capsys.readouterr().err
    report = json.loads((tmp_path / "full" / "report.json").read_text())
    assert report["options"]["text_normalizer"] == "full" and "dropped_chars" not in report["utterances"][0]
    assert report["utterances"][0]["normalized_text"] == "is it fifty percent off?"


def test_proto_option_is_validated_at_the_edge():
    from tts.server.proto_gen import tts_pb2
    from tts.server.validation import options_from_proto
    assert options_from_proto(tts_pb2.SynthesisOptions(text_normalizer="full")).text_normalizer == "full"
    assert options_from_proto(tts_pb2.SynthesisOptions()).text_normalizer is None
    with pytest.raises(InvalidInputError) as e:
        options_from_proto(tts_pb2.SynthesisOptions(text_normalizer="nemo"))
    assert e.value.field == "options.text_normalizer"


def test_tts_server_flag_sets_every_voice_default(tmp_path):
    from tts.cli.server import build_parser, build_server
    args = build_parser().parse_args(["--tacotron2", str(T2), "--waveglow", str(WG), "--port", "0",
                                      "--metrics-port", "-1", "--no-warmup", "--text-normalizer", "full",
                                      "--extra-voice", str(_manifest(tmp_path / "other", {"text_normalizer": "dle"}))])
    server = build_server(args)
    voices = {name: synths[0].voice for name, synths in server.engine.synthesizers.items()}
    assert {v.defaults.text_normalizer for v in voices.values()} == {"full"}
    assert len(voices) == 2


def test_server_reads_with_the_request_option_and_reports_dropped(t2_voice):
    import grpc

    from tts.server.app import ServerConfig, TTSServer
    from tts.server.proto_gen import tts_pb2, tts_pb2_grpc
    from tts.server.testing import ServerThread
    from tts.synthesizer import Synthesizer
    srv = TTSServer({"t2": [Synthesizer(t2_voice)]}, ServerConfig(host="127.0.0.1", port=0, metrics_port=None,
                                                                  warmup=False), default_voice="t2")
    st = ServerThread(srv)
    st.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            stub = tts_pb2_grpc.TextToSpeechStub(channel)
            det = dict(sigma=0.0, prenet_dropout=0.0, max_decoder_steps=20)
            ask = tts_pb2.SynthesizeRequest(text="Is it 50% off?", options=tts_pb2.SynthesisOptions(**det))
            reply = stub.Synthesize(ask, timeout=120)                 # the voice's default: full
            assert reply.normalized_text == "is it fifty percent off?" and reply.dropped_chars == ""
            ask.options.text_normalizer = "dle"
            reply = stub.Synthesize(ask, timeout=120)
            assert reply.normalized_text == "is it fifty off?" and reply.dropped_chars == "%"
            chunks = list(stub.StreamingSynthesize(ask, timeout=120))
            assert chunks[-1].last and chunks[-1].dropped_chars == "%"
            assert chunks[-1].normalized_text == "is it fifty off?"
            assert all(c.dropped_chars == "" for c in chunks[:-1])
    finally:
        st.stop()


def test_speed_benchmark_runs(tmp_path):
    data = tmp_path / "metadata.txt"
    data.write_text("LJ001-0001|Printing, in the only sense with which we are at present concerned.\n"
                    "LJ001-0002|It costs $5 at 3:30 PM on Jan. 5.\nno id on this line\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "normalizer_speed.py"), str(data),
                           "--repeats", "1", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["sentences"] == 3 and result["full_mean_ms"] > 0 and result["full_over_dle"] > 0
