"""The hibari teacher (``tts.train.hibari``) and the corpus builder's teacher choice and resumption.

The hibari tests need the ``hibari-tts`` wheel (with onnxruntime and onnx, the ``train`` extra) and
are skipped without it; the resumption test uses a stand-in teacher and runs everywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tts.train.corpus import (HOP, SAMPLE_RATE, AlignmentError, Corpus, build_shard, symbol_text)
from tts.train.festival import Phone, Token

VAL = Path(__file__).resolve().parent / "fixtures" / "ljspeech_val_100.txt"


@pytest.fixture(scope="module")
def hibari():
    for mod in ("hibari", "onnxruntime", "onnx"):
        pytest.importorskip(mod, reason=f"the hibari teacher needs {mod} (the [train] extra)")
    from tts.train.hibari import HibariTeacher
    return HibariTeacher()


def test_hibari_gives_every_word_its_phones_in_order_within_the_audio(hibari):
    from tts.train.hibari import HIBARI_RATE, UNIT_SAMPLES
    sym = symbol_text("If somebody did that to me, a lousy trick like that, I would be mad as hell, too.")
    sp = hibari.speak(sym, seed=0)
    words = sym.split()
    assert [t.name for t in sp.tokens] == words
    assert len(sp.audio) % UNIT_SAMPLES == 0 and sp.audio.dtype == np.float32
    total = len(sp.audio) / HIBARI_RATE
    phones = [p for t in sp.tokens for p in t.phones]
    assert all(t.phones for t in sp.tokens)
    starts = np.array([p.start for p in phones])
    ends = np.array([p.end for p in phones])
    assert np.all(ends >= starts) and np.all(starts[1:] >= ends[:-1] - 1e-9) and ends[-1] <= total
    assert starts[0] > 0.1          # the leading pad is silence the corpus trims
    assert "," not in "".join(p.name for p in phones)      # pauses are not phones of a word
    assert sp.phonemes[0].startswith("ɪf sˈʌmbədi")


def test_hibari_noise_follows_the_seed(hibari):
    a = hibari.speak("a quiet day.", seed=3).audio
    b = hibari.speak("a quiet day.", seed=3).audio
    c = hibari.speak("a quiet day.", seed=4).audio
    assert np.array_equal(a, b) and a.shape == c.shape and not np.array_equal(a, c)


def test_hibari_sentences_are_spoken_separately_and_joined_in_time(hibari):
    one = hibari.speak("the first sentence.", seed=0)
    two = hibari.speak("the first sentence. and a second one.", seed=0)
    assert len(two.phonemes) == 2 and two.phonemes[0] == one.phonemes[0]
    assert len(two.audio) > len(one.audio)
    first_of_second = two.tokens[3].phones[0].start
    assert first_of_second >= len(one.audio) / 24000 - 1e-9


def test_hibari_speaker_is_22050_hz(hibari):
    from tts.train.hibari import HIBARI_RATE
    speak = hibari.speaker(seed=0)
    audio, rate = speak("Hello there.")
    raw = hibari.speak(symbol_text("Hello there."), seed=0).audio
    assert rate == SAMPLE_RATE == 22050
    assert len(audio) == pytest.approx(len(raw) * SAMPLE_RATE / HIBARI_RATE, abs=1)
    assert audio.dtype == np.float32 and 0.05 < np.abs(audio).max() <= 1.0


def test_hibari_corpus_shard_has_nvidia_mels_and_durations_that_fill_them(hibari, tmp_path):
    from tts.quality import read_transcripts
    from tts.train.hibari import HibariConfig
    items = read_transcripts(VAL, 3)   # evaluation lines, used here only to test the builder
    stats = build_shard(items, tmp_path / "shard_000", HibariConfig())
    assert stats["teacher"] == "hibari" and stats["utterances"] == 3 and stats["skipped"] == []
    assert not (tmp_path / "shard_000.partial").exists()
    c = Corpus(tmp_path)
    meta = [json.loads(x) for x in (tmp_path / "shard_000" / "meta.jsonl").read_text().splitlines()]
    for it, m in zip(c.items, meta):
        assert it.mel.shape == (1 + len(it.audio) // HOP, 80) and it.mel.dtype == np.float16
        assert int(it.durations.sum()) == it.mel.shape[0] and len(it.durations) == len(it.ids)
        letters = [d for ch, d in zip(m["symbols"], it.durations) if ch.isalpha()]
        assert min(letters) >= 1
        # trimmed to LEAD_S (0.1 s) before the first phone; hibari's onset comes 0.02-0.06 s
        # before the first phone's predicted start, so the first 0.03 s stay quiet
        lead = np.abs(it.audio[:int(0.03 * SAMPLE_RATE)].astype(np.float32)).max() / 32768
        assert lead < 0.02
        assert np.abs(it.audio.astype(np.float32)).max() / 32768 > 0.2
        assert -11.6 < float(it.mel.astype(np.float32).min()) and float(it.mel.astype(np.float32).max()) < 3


# -- resumption (a stand-in teacher) ------------------------------------------------------------


class _Interrupted(RuntimeError):
    pass


@dataclass
class _FakeTeacher:
    """Speaks each letter as 50 ms of a tone (one phone per letter) at 24 kHz; logs what it spoke;
    raises after ``fail_after`` utterances (an interrupted build)."""

    log: list
    fail_after: int | None = None

    def speak(self, text: str, seed: int = 0):
        if self.fail_after is not None and len(self.log) >= self.fail_after:
            raise _Interrupted
        self.log.append(text)
        t, tokens = 0.1, []
        for w in text.split():
            letters = [c for c in w if c.isalnum()]
            tokens.append(Token(w, [Phone(c, t + 0.05 * i, t + 0.05 * (i + 1)) for i, c in enumerate(letters)]))
            t += 0.05 * len(letters) + 0.05
        n = int((t + 0.1) * 24000)
        audio = (0.3 * np.sin(2 * np.pi * 200 * np.arange(n) / 24000)).astype(np.float32)
        return type("Spoken", (), {"audio": audio, "rate": 24000, "tokens": tokens})


@dataclass(frozen=True)
class _FakeConfig:
    log: list
    fail_after: int | None = None
    name: str = "fake"

    def load(self):
        return _FakeTeacher(self.log, self.fail_after)


def test_an_interrupted_shard_resumes_without_speaking_finished_utterances_again(tmp_path):
    items = [(f"u{k}", text) for k, text in enumerate(["One cat.", "---", "Two dogs ran.", "Red sun.", "Go."])]
    first: list = []
    with pytest.raises(_Interrupted):
        build_shard(items, tmp_path / "shard_000", _FakeConfig(first, fail_after=2))
    partial = tmp_path / "shard_000.partial"
    assert sorted(p.name for p in partial.iterdir()) == ["u0.npz", "u1.skip"]   # "---" has no phones
    assert not (tmp_path / "shard_000" / "DONE").exists()
    second: list = []
    stats = build_shard(items, tmp_path / "shard_000", _FakeConfig(second))
    assert first == ["one cat.", symbol_text("---")] and second == ["two dogs ran.", "red sun.", "go."]
    assert stats["utterances"] == 4 and stats["skipped"] == ["u1"] and stats["resumed_utterances"] == 2
    assert [it.uid for it in Corpus(tmp_path).items] == ["u0", "u2", "u3", "u4"]
    assert not partial.exists()
    third: list = []
    assert build_shard(items, tmp_path / "shard_000", _FakeConfig(third)) == stats and third == []


def test_an_utterance_that_does_not_align_is_skipped_and_logged(tmp_path):
    class Bad(_FakeTeacher):
        def speak(self, text, seed=0):
            raise AlignmentError("no phones")

    @dataclass(frozen=True)
    class BadConfig:
        name: str = "bad"

        def load(self):
            return Bad([])

    stats = build_shard([("a", "Hello."), ("b", "World.")], tmp_path / "shard_000", BadConfig())
    assert stats["utterances"] == 0 and stats["skipped"] == ["a", "b"]


def test_corpus_cli_refuses_an_unknown_teacher(capsys):
    from tts.train.__main__ import main
    with pytest.raises(SystemExit) as e:
        main(["corpus", "--texts", str(VAL), "--out", "x", "--teacher", "espeak"])
    assert e.value.code == 2 and "invalid choice: 'espeak'" in capsys.readouterr().err


def test_corpus_cli_builds_with_hibari_and_leaves_out_held_out_ids(hibari, tmp_path, capsys):
    from tts.train.__main__ import main
    texts = tmp_path / "texts.txt"
    texts.write_text("a1|One cat sat.\nv1|A held out line.\na2|Two dogs ran.\n", encoding="utf-8")
    held = tmp_path / "val.txt"
    held.write_text("v1|A held out line.\n", encoding="utf-8")
    out = tmp_path / "corpus"
    args = ["corpus", "--teacher", "hibari", "--texts", str(texts), "--out", str(out), "--shards", "2",
            "--jobs", "1", "--exclude", str(held)]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["teacher"] == "hibari" and summary["utterances"] == 2 and summary["excluded"] == 1
    assert sorted(it.uid for it in Corpus(out).items) == ["a1", "a2"]
    assert main(args) == 0     # a finished corpus is kept as it is
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["utterances"] == 2


@pytest.mark.slow
def test_gate_scores_the_hibari_teacher(hibari):
    """The gate's ``teacher --teacher hibari`` on the first 3 val sentences: WER 8.1 % and predicted
    MOS 4.75 when written (14.7 % and 4.66 over 100, ``recipes/bundled_voice/results/mos_gate.json``)."""
    import importlib.util
    for mod in ("pocketsphinx", "jiwer", "distillmos"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} is a dependency of the quality gate")
    from tts.train.gate import run_gate
    res = run_gate("teacher", str(VAL), n=3, teacher="hibari")
    assert res["teacher"] == "hibari" and res["seed"] == 0 and res["n"] == 3
    assert res["wer"] <= 0.2 and res["mos"] >= 4.3, (res["wer"], res["mos"])
    with pytest.raises(ValueError, match="unknown teacher"):
        run_gate("teacher", str(VAL), n=1, teacher="espeak")


def test_a_g2p_table_made_ahead_gives_the_same_speech_and_corpus(hibari, tmp_path):
    """``G2PTable`` (``hibari-pack``): the phoneme ids of each text made ahead speak exactly as
    hibari's own G2P does (what lets the GPU machine build a corpus without the G2P), a text that is
    not in the table is an error, and a table of another hibari version is refused."""
    from tts.quality import read_transcripts
    from tts.train.hibari import G2PTable, HibariConfig, HibariTeacher, HibariUnavailable
    items = read_transcripts(VAL, 4)
    items.append(("two", "It rained. Then it stopped, and we went out."))
    texts = [symbol_text(t) for _, t in items]
    G2PTable.build(hibari, texts).save(tmp_path / "g2p.npz")
    ahead = HibariTeacher(g2p=tmp_path / "g2p.npz")
    assert not hasattr(ahead, "_g2p")
    for text in texts:
        a, b = hibari.speak(text, seed=7), ahead.speak(text, seed=7)
        assert np.array_equal(a.audio, b.audio) and a.tokens == b.tokens
        assert [p.replace(" ", "") for p in a.phonemes] == [p.replace(" ", "") for p in b.phonemes]
    assert len(hibari.plan(texts[-1])) == 2
    with pytest.raises(KeyError, match="other texts"):
        ahead.speak("not in the table.")
    one = build_shard(items[:2], tmp_path / "own" / "shard_000", HibariConfig())
    two = build_shard(items[:2], tmp_path / "ahead" / "shard_000", HibariConfig(g2p=str(tmp_path / "g2p.npz")))
    assert one["utterances"] == two["utterances"] == 2
    for name in ("audio.npy", "mel.npy", "meta.jsonl"):
        assert (tmp_path / "own" / "shard_000" / name).read_bytes() == \
            (tmp_path / "ahead" / "shard_000" / name).read_bytes()
    table = G2PTable.load(tmp_path / "g2p.npz")
    table.meta["hibari"] = "0.0.1"
    table.save(tmp_path / "old.npz")
    with pytest.raises(HibariUnavailable, match="0.0.1"):
        HibariTeacher(g2p=tmp_path / "old.npz")


def test_hibari_pack_writes_the_runtime_and_the_g2p(hibari, tmp_path, capsys):
    from tts.train.__main__ import main
    texts = tmp_path / "texts.txt"
    texts.write_text("a1|One cat sat.\na2|Two dogs ran.\n", encoding="utf-8")
    assert main(["hibari-pack", "--texts", str(texts), "--out", str(tmp_path / "pack")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["texts"] == 2 and res["alignment_errors"] == 0
    names = set(res["files"])
    assert {"g2p.npz", "LICENSE", "NOTICE", "hibari/assets/hibari.onnx", "hibari/dsp.py"} <= names
    assert not any("g2p/" in n or "lexicon" in n or "oov" in n for n in names)   # no G2P travels
    assert res["bytes"] < 8.5e6
