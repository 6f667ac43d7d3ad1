"""Word timings: the words of the input mapped onto symbol ids, token bounds from FastSpeech durations and
Tacotron2 attention, and SynthesisResult.words on the bundled voices (checked against the pauses of the audio)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from tts.options import SynthesisOptions
from tts.text import encode, sequence_to_text
from tts.text.words import map_words, split_words
from tts.timings import (WordTimer, WordTiming, attention_path, relocate, token_bounds_from_attention,
                         token_bounds_from_durations)

pytestmark = pytest.mark.timeout(600)

T2_DET = SynthesisOptions(prenet_dropout=0.0, seed=0)


def spoken(text: str, normalizer: str = "full") -> list[tuple[str, str]]:
    enc = encode(text, "tacotron2", normalizer)
    words, spans = map_words(text, enc.ids, "tacotron2", normalizer)
    assert all(text[w.start:w.end] == w.text for w in words)
    ends = [0] + [b for _, b in spans]
    assert all(a >= prev and b >= a for (a, b), prev in zip(spans, ends))     # in order, no overlap
    return [(w.text, sequence_to_text(enc.ids[a:b])) for w, (a, b) in zip(words, spans)]


# ------------------------------------------------------------------ words of the text

def test_words_are_the_input_words_without_punctuation():
    assert spoken('"Hello," she said -- (quietly)... OK?') == [
        ("Hello", "hello"), ("she", "she"), ("said", "said"), ("quietly", "quietly"), ("OK", "okay")]


def test_a_normalized_word_spans_everything_it_is_read_as():
    assert spoken("It costs $5.") == [("It", "it"), ("costs", "costs"), ("$5", "five dollars")]
    assert spoken("Add 5 kg, don't wait.") == [("Add", "add"), ("5", "five"), ("kg", "kilograms"),
                                               ("don't", "don't"), ("wait", "wait")]
    assert spoken("Born in 1984 in the U.S.") == [("Born", "born"), ("in", "in"), ("1984", "nineteen eighty-four"),
                                                 ("in", "in"), ("the", "the"), ("U.S.", "u s")]


def test_a_word_read_in_another_order_keeps_the_words_in_order():
    got = spoken("I paid $5 million today.")
    assert [w for w, _ in got] == ["I", "paid", "$5", "million", "today"]
    assert "".join(s for _, s in got).replace(" ", "") == "ipaidfivemilliondollarstoday"


def test_symbols_are_words_only_where_they_are_spoken():
    assert [w for w, _ in spoken("rock & roll", "full")] == ["rock", "&", "roll"]
    assert [w for w, _ in spoken("rock & roll", "dle")] == ["rock", "roll"]     # dle has no "&"
    assert spoken("Turn on {HH AW1 S} now.") == [("Turn", "turn"), ("on", "on"), ("{HH AW1 S}", "{HH AW1 S}"),
                                                 ("now", "now")]


def test_split_words_offsets_point_into_the_text():
    text = "  Well—yes. Dr. Who?  "
    words = split_words(text, "tacotron2", "full")
    assert [w.text for w in words] == ["Well—yes", "Dr", "Who"]
    assert all(text[w.start:w.end] == w.text for w in words)


# ------------------------------------------------------------------ bounds

def test_bounds_from_durations():
    np.testing.assert_array_equal(token_bounds_from_durations([3, 0, 2, 5]), [0, 3, 3, 5, 10])


def test_attention_path_ignores_a_stray_frame_and_is_monotonic():
    t_in, per = 6, 5
    a = np.full((t_in * per, t_in), 0.01)
    for t in range(t_in * per):
        a[t, t // per] = 1.0
    a[0] = 0.01
    a[0, t_in - 1] = 0.3            # the first frame looks at the end (as a real model's often does)
    a[17, 0] = 2.0                  # a frame that looks back
    path = attention_path(a)
    assert path[0] == 0 and path[-1] == t_in - 1
    assert np.all(np.diff(path) >= 0) and np.all(np.diff(path) <= 2)
    np.testing.assert_array_equal(path[1:], np.arange(1, t_in * per) // per)
    bounds = token_bounds_from_attention(path, t_in, t_in * per)
    np.testing.assert_array_equal(bounds, np.arange(t_in + 1) * per)
    # fewer frames spoken than decoded (the gate frame): bounds end at the spoken frames
    assert token_bounds_from_attention(path, t_in, 12)[-1] == 12


def test_spans_fit_the_sound():
    from tts.timings import fit_to_sound

    v = np.array([0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0], dtype=bool)
    # word 1 ends at 9 by the model's durations (a pause 7..11 it spends on word 2's start), word 2 holds
    # a 1-frame dip (no pause); word 3 has no loud frame and keeps its span
    spans = [(0, 9), (9, 19), (19, 20)]
    assert fit_to_sound(spans, v) == [(2, 7), (11, 19), (19, 20)]
    assert fit_to_sound(spans, None) == spans
    # a pause far from any boundary (inside a word) stays in the word; empty words are left alone
    assert fit_to_sound([(0, 20), (20, 20)], v) == [(2, 19), (20, 20)]


def test_word_timer_accumulates_pieces_and_finds_characters():
    text = "One two. Three four."
    timer = WordTimer(text, frontend="tacotron2", normalizer="full", sample_rate=1000, hop=10)
    ids1 = encode("One two.", "tacotron2", "full").ids           # "one two."
    w1 = timer.add("One two.", ids1, token_bounds_from_durations([2] * len(ids1)), 2 * 10 * len(ids1))
    assert [(w.word, w.start_s, w.end_s) for w in w1] == [("One", 0.0, 0.06), ("two", 0.08, 0.14)]
    ids2 = encode("Three four.", "tacotron2", "full").ids
    w2 = timer.add("Three four.", ids2, None, 1100)            # no bounds: letters share the audio evenly
    assert w2[0].start_s == pytest.approx(0.16) and w2[-1].end_s <= 0.16 + 1.1
    assert [(w.word, text[w.char_start:w.char_end]) for w in timer.words] == [
        ("One", "One"), ("two", "two"), ("Three", "Three"), ("four", "four")]
    shifted = relocate(text, timer.words, 1.0)
    assert [w.start_s - v.start_s for w, v in zip(shifted, timer.words)] == pytest.approx([1.0] * 4)


# ------------------------------------------------------------------ bundled voices

def check_words(r, text_words):
    assert [w.word for w in r.words] == text_words
    for w in r.words:
        assert 0.0 <= w.start_s <= w.end_s <= r.audio_seconds + 1e-9
        assert r.text[w.char_start:w.char_end] == w.word
    for a, b in zip(r.words, r.words[1:]):
        assert a.end_s <= b.start_s + 1e-9


def frame_rms(audio: np.ndarray, hop: int = 256) -> np.ndarray:
    n = len(audio) // hop
    return np.sqrt(np.mean(audio[:n * hop].reshape(n, hop) ** 2, axis=1))


def pauses(rms: np.ndarray, n: int) -> list[float]:
    """Centres (in frames) of the ``n`` longest quiet runs between the first and last voiced frame."""
    voiced = rms > 0.1 * rms.max()
    idx = np.flatnonzero(voiced)
    runs, start = [], None
    for t in range(idx[0], idx[-1] + 1):
        if not voiced[t] and start is None:
            start = t
        if voiced[t] and start is not None:
            runs.append((t - start, (start + t - 1) / 2))
            start = None
    return sorted(c for _, c in sorted(runs, reverse=True)[:n])


@pytest.fixture(scope="module")
def bundled():
    from tts.synthesizer import Synthesizer
    from tts.voice import load_voice

    return {name: Synthesizer(load_voice(name)) for name in ("heart", "slt-tacotron2")}


@pytest.mark.parametrize("name", ["heart", "slt-tacotron2"])
def test_bundled_voice_words_sit_over_speech_and_pauses_between_them(bundled, name):
    synth = bundled[name]
    r = synth.synthesize("One. Two. Three.", T2_DET if "tacotron2" in name else None, word_timings=True)
    check_words(r, ["One", "Two", "Three"])
    sec = 256 / r.sample_rate
    rms = frame_rms(r.audio)
    voiced = rms > 0.1 * rms.max()
    first, last = np.flatnonzero(voiced)[[0, -1]]
    assert r.words[0].start_s <= first * sec + 0.02          # the first word starts by the first sound
    assert r.words[-1].end_s >= (last + 1) * sec - 0.1        # the last one ends with the last sound
    speech = np.concatenate([rms[int(round(w.start_s / sec)):int(round(w.end_s / sec))] for w in r.words])
    for w in r.words:                                         # each word is sound
        span = voiced[int(round(w.start_s / sec)):int(round(w.end_s / sec))]
        assert len(span) >= 5 and span.mean() >= 0.75, (w, span)
    # the pause after each sentence lies between its word and the next (to a frame)
    for c, a, b in zip(pauses(rms, 2), r.words, r.words[1:]):
        assert a.end_s - sec <= c * sec <= b.start_s + sec, (c * sec, a, b)
        assert b.start_s - a.end_s >= 3 * sec
        gap = rms[int(round(a.end_s / sec)):int(round(b.start_s / sec))]
        assert gap.mean() < 0.25 * speech.mean(), (a, b, gap)
    assert r.words[-1].end_s - r.words[0].start_s > 0.5 * r.audio_seconds


def test_fastspeech_speaking_rate_scales_the_timings(bundled):
    synth = bundled["heart"]
    slow = synth.synthesize("Read this quickly.", word_timings=True)
    fast = synth.synthesize("Read this quickly.", SynthesisOptions(speed=2.0), word_timings=True)
    check_words(fast, ["Read", "this", "quickly"])
    # where the last word begins (its end is trimmed to its loud frames, and heart draws out a
    # final vowel's quiet tail: "quickly" 0.49-0.71 s at speed 1 in 1.25 s of audio)
    ratio = fast.words[-1].start_s / slow.words[-1].start_s
    assert 0.4 < ratio < 0.6
    assert fast.words[-1].end_s <= fast.audio_seconds


def test_pieces_accumulate_and_batching_does_not_change_the_timings(bundled):
    from tts.synthesizer import Synthesizer

    voice = bundled["heart"].voice
    text = "One. Two. Three. Four words here. Five."
    pieced = Synthesizer(voice, max_piece_chars=16)
    whole = pieced.synthesize(text, word_timings=True)
    assert whole.pieces >= 3
    check_words(whole, ["One", "Two", "Three", "Four", "words", "here", "Five"])
    # the words of each piece, shifted by the audio of the pieces before it
    plan = pieced.plan(text)
    parts = [pieced.synthesize(p, word_timings=True) for p in plan.split(1)]
    joined = type(whole).joined(plan, parts)
    assert [(w.word, w.char_start) for w in joined.words] == [(w.word, w.char_start) for w in whole.words]
    np.testing.assert_allclose([w.start_s for w in joined.words], [w.start_s for w in whole.words], atol=1e-9)
    np.testing.assert_allclose([w.end_s for w in joined.words], [w.end_s for w in whole.words], atol=1e-9)
    offset = parts[0].audio_seconds
    assert parts[1].words[0].start_s + offset == pytest.approx(whole.words[len(parts[0].words)].start_s)
    batch = pieced.synthesize_batch(["Short one.", text], word_timings=True)
    assert batch[1].words == whole.words


# ------------------------------------------------------------------ fixture voices (random weights)

@pytest.fixture(scope="module")
def fixture_t2():
    from pathlib import Path

    from tts.synthesizer import Synthesizer
    from tts.voice import Voice

    ref = Path(__file__).parent / "fixtures" / "reference"
    voice = Voice.from_checkpoints(tacotron2=ref / "tacotron2/checkpoint_Tacotron2_current_1gpu.pt",
                                   waveglow=ref / "waveglow/checkpoint_WaveGlow_ngc_style_ddp.pt", name="t2")
    return Synthesizer(voice, max_batch=4)


def test_tacotron2_fixture_voice_words_alone_and_batched(fixture_t2):
    opts = SynthesisOptions(prenet_dropout=0.0, sigma=0.0, max_decoder_steps=200)
    texts = ["Hello there, world.", "A second and longer text to share the batch."]
    alone = fixture_t2.synthesize(texts[0], opts, word_timings=True)
    check_words(alone, ["Hello", "there", "world"])
    batched = fixture_t2.synthesize_batch(texts, opts, word_timings=True)
    check_words(batched[1], ["A", "second", "and", "longer", "text", "to", "share", "the", "batch"])
    # batch invariance: the same words at the same frames (to a frame of float rounding)
    frame = 256 / alone.sample_rate
    for a, b in zip(alone.words, batched[0].words):
        assert a.word == b.word and abs(a.start_s - b.start_s) <= frame and abs(a.end_s - b.end_s) <= frame


def test_timings_of_the_acoustic_stage_equal_the_result(bundled):
    synth = bundled["heart"]
    r = synth.synthesize("Stream me, please.", word_timings=True)
    (ac,) = synth.acoustic(["Stream me, please."], word_timings=True)
    assert ac.words == r.words


def test_word_timing_is_a_plain_record():
    w = WordTiming("$5", 0.5, 1.25, 3, 5)
    assert json.loads(json.dumps(w.as_dict())) == {"word": "$5", "start_s": 0.5, "end_s": 1.25,
                                                    "char_start": 3, "char_end": 5}


# ------------------------------------------------------------------ tts-synth --timings and formats

def run_synth(args, capsys):
    from tts.cli.synth import main

    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_tts_synth_timings_writes_json_beside_each_file(tmp_path, capsys):
    phrases = tmp_path / "p.txt"
    phrases.write_text("One. Two. Three.\n\nIt costs $5.\n", encoding="utf-8")
    code, _, err = run_synth([str(phrases), "--out", str(tmp_path / "o"), "--timings", "--quiet"], capsys)
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == ["1.json", "1.wav", "3.json", "3.wav", "report.json"]
    doc = json.loads((tmp_path / "o" / "3.json").read_text(encoding="utf-8"))
    audio, rate = sf.read(tmp_path / "o" / "3.wav")
    assert doc["sample_rate"] == rate == 22050 and doc["duration_s"] == pytest.approx(len(audio) / rate)
    assert doc["text"] == "It costs $5."
    assert [w["word"] for w in doc["words"]] == ["It", "costs", "$5"]
    assert all(0 <= w["start_s"] <= w["end_s"] <= doc["duration_s"] for w in doc["words"])
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert [u.get("timings_file") for u in report["utterances"]] == ["1.json", "3.json"]


@pytest.mark.parametrize("fmt,subtype", [("mp3", None), ("mulaw", "ULAW"), ("alaw", "ALAW")])
def test_tts_synth_formats(tmp_path, capsys, fmt, subtype):
    out = tmp_path / "o"
    code, _, err = run_synth(["--text", "Format test.", "--out", str(out), "--format", fmt, "--quiet",
                              "--timings"], capsys)
    assert code == 0, err
    name = "1.mp3" if fmt == "mp3" else "1.wav"
    info = sf.info(out / name)
    assert info.samplerate == 22050 and info.channels == 1
    if subtype:
        assert info.subtype == subtype and info.format == "WAV"
    else:
        assert info.format == "MP3"
    audio, _ = sf.read(out / name, dtype="float32")
    ref, _ = sf.read(_wav(tmp_path, capsys), dtype="float32")
    assert abs(len(audio) - len(ref)) <= (2400 if fmt == "mp3" else 0)
    if subtype:                        # G.711: 8-bit log samples of the same audio
        assert np.abs(audio - ref).max() < 0.04
    doc = json.loads((out / "1.json").read_text())
    assert [w["word"] for w in doc["words"]] == ["Format", "test"]


def _wav(tmp_path, capsys):
    path = tmp_path / "ref.wav"
    if not path.exists():
        code, _, err = run_synth(["--text", "Format test.", "--out", str(path), "--quiet"], capsys)
        assert code == 0, err
    return path


def test_tts_synth_mp3_from_the_out_suffix_and_a_mismatch_is_a_clear_error(tmp_path, capsys):
    code, _, err = run_synth(["--text", "Hi there.", "--out", str(tmp_path / "a.mp3"), "--quiet"], capsys)
    assert code == 0, err and sf.info(tmp_path / "a.mp3").format == "MP3"
    code, _, err = run_synth(["--text", "Hi there.", "--out", str(tmp_path / "b.wav"), "--format", "mp3"], capsys)
    assert code != 0 and "--format mp3 writes .mp3 files" in err and "Traceback" not in err


# ------------------------------------------------------------------ engines (slot decoder on CPU; GPU paths)

def _t2_engine(device: str):
    import copy

    import torch

    from tts.engines.tacotron2 import Tacotron2Engine
    from tts.voice import load_voice

    model = load_voice("slt-tacotron2").acoustic
    dev = torch.device(device)
    return Tacotron2Engine(copy.deepcopy(model).to(dev).eval(), device=dev, precision="fp32",
                           backend="auto" if dev.type == "cuda" else "torch")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_slot_decoder_hands_out_each_steps_attention(device):
    import torch

    from tts.text import encode as enc

    eng = _t2_engine(device)
    ids = list(enc("One. Two. Three.", "tacotron2", "full").ids)
    t = torch.tensor([ids], device=eng.device)
    lengths = torch.tensor([len(ids)], device=eng.device)
    with torch.inference_mode():
        memory = eng.encode(t, lengths)
        ref = eng.decode(memory, lengths, max_decoder_steps=8, prenet_dropout=0.0, early_stopping=False)
        sd = eng.slots(2, len(ids), steps_per_replay=4)
        sd.join(1, memory, len(ids), align=True)
        outs = [sd.run(0.0), sd.run(0.0)]
    align = torch.cat([o.align[1] for o in outs], dim=0)            # [8, t_in] of slot 1
    assert align.shape == (8, sd.t_in) and align.device.type == "cpu"
    np.testing.assert_allclose(align[:, :len(ids)].sum(-1).numpy(), 1.0, atol=1e-5)
    assert float(align[:, len(ids):].abs().max()) == 0.0           # masked past the row's ids
    np.testing.assert_allclose(align[:, :len(ids)].numpy(), ref.alignments[0, :8, :len(ids)].float().cpu().numpy(),
                               atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["heart", "slt-tacotron2"])
def test_gpu_engines_give_the_cpu_word_timings(bundled, name):
    import torch

    from tts.synthesizer import Synthesizer

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    gpu = Synthesizer(bundled[name].voice, device="cuda", precision="fp32")
    assert gpu.engine == "fast"
    opts = T2_DET if "tacotron2" in name else None
    text = "One. Two. Three."
    cpu_r, gpu_r = (bundled[name].synthesize(text, opts, word_timings=True),
                    gpu.synthesize(text, opts, word_timings=True))
    check_words(gpu_r, ["One", "Two", "Three"])
    frame = 256 / gpu_r.sample_rate
    for a, b in zip(cpu_r.words, gpu_r.words):
        assert abs(a.start_s - b.start_s) <= 3 * frame and abs(a.end_s - b.end_s) <= 3 * frame, (a, b)


@pytest.mark.gpu
def test_gpu_server_slot_scheduler_words_equal_the_pipeline(bundled):
    import torch

    from tts.client import TTSClient
    from tts.server.app import ServerConfig, TTSServer
    from tts.server.testing import ServerThread
    from tts.synthesizer import Synthesizer

    torch.backends.cuda.matmul.allow_tf32 = False
    gpu = Synthesizer(bundled["slt-tacotron2"].voice, device="cuda", precision="fp32", max_piece_chars=16)
    text = "One. Two. Three. Four words here."
    want = gpu.synthesize(text, T2_DET, word_timings=True)
    st = ServerThread(TTSServer({"t2": [gpu]}, ServerConfig(host="127.0.0.1", port=0, metrics_port=None,
                                                            warmup=False)))
    st.start()
    try:
        assert st.server.engine.schedulers["t2"][0].use_slots          # CUDA: the slot decoder
        with TTSClient(f"127.0.0.1:{st.server.port}", timeout=120) as c:
            r = c.synthesize(text, encoding="FLOAT32", options={"prenet_dropout": 0.0, "seed": 0},
                             word_timings=True)
            chunks = list(c.stream(text, encoding="FLOAT32", options={"prenet_dropout": 0.0, "seed": 0},
                                   word_timings=True))
    finally:
        st.stop()
    frame = 256 / r.sample_rate_hz
    assert [w.word for w in r.words] == [w.word for w in want.words] == ["One", "Two", "Three", "Four", "words",
                                                                         "here"]
    for a, b in zip(r.words, want.words):
        assert abs(a.start_seconds - b.start_s) <= 3 * frame and abs(a.end_seconds - b.end_s) <= 3 * frame
    streamed = [w for ch in chunks for w in ch.words]
    assert [w.word for w in streamed] == [w.word for w in r.words]
