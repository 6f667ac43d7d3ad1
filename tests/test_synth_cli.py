"""``tts-synth`` end to end: outputs equal the e2e references; every bad input is one clear line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import FIXTURES, load_npz
from tts.cli.synth import main

T2 = str(FIXTURES / "tacotron2" / "checkpoint_Tacotron2_current_1gpu.pt")
WG = str(FIXTURES / "waveglow" / "checkpoint_WaveGlow_ngc_style_ddp.pt")
FS = str(FIXTURES / "fastspeech" / "checkpoint_005000.pt")
FS_YAML = str(FIXTURES / "fastspeech" / "hparams.yaml")
DET = ["--device", "cpu", "--prenet-dropout", "0", "--sigma", "0", "--text-normalizer", "dle"]   # parity: NVIDIA's cleaners


def e2e_texts() -> list[str]:
    spec = json.loads((FIXTURES / "e2e" / "sentences.json").read_text(encoding="utf-8"))
    ref = load_npz("e2e/ref_e2e.npz")
    texts = [str(ref[f"text_{i}"][0]) for i in range(len(ref["text_index"]))]
    assert len(texts) == 6 and spec  # the manifest and the archive describe the same sentences
    return texts


def write_phrases(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    data, rate = sf.read(path, dtype="float32")
    return data, rate


REPO = Path(__file__).resolve().parents[1]
E2E_PHRASES = REPO / "phrases" / "reference_e2e.txt"


def test_reference_phrase_file_holds_the_e2e_sentences():
    assert E2E_PHRASES.read_text(encoding="utf-8").splitlines() == e2e_texts()


def test_tacotron2_e2e_equals_reference(tmp_path, capsys):
    phrases = E2E_PHRASES
    out = tmp_path / "out"
    code, stdout, err = run_cli([str(phrases), "--out", str(out), "--tacotron2", T2, "--waveglow", WG,
                                 *DET, "--save-mel"], capsys)
    assert code == 0, err
    ref = load_npz("e2e/ref_e2e.npz")
    for i in range(6):
        mel = np.load(out / f"{i + 1}.mel.npy")
        assert mel.dtype == np.float32 and mel.shape == ref[f"mel_{i}"][0].shape
        np.testing.assert_allclose(mel, ref[f"mel_{i}"][0], atol=1e-3)
        audio, rate = read_wav(out / f"{i + 1}.wav")
        assert rate == 22050
        n = int(ref[f"mel_len_{i}"][0]) * 256
        expected = ref[f"denoised_{i}"][0, :n]
        assert audio.shape == expected.shape
        # PCM16 quantisation: half a step of 1/32767, plus the float tolerance.
        np.testing.assert_allclose(audio, expected, atol=1 / 32767 + 1e-5)
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] and report["written"] == 6 and report["phrases"] == 6
    assert report["device"] == "cpu" and report["precision"] == "fp32" and report["batch"] == 1
    assert report["options"]["sigma"] == 0.0 and report["options"]["prenet_dropout"] == 0.0
    for stage in ("text", "acoustic", "vocoder", "denoiser", "end_to_end"):
        s = report["stages"][stage]
        assert s["count"] == 6
        assert 0 <= s["p50"] <= s["p90"] <= s["p95"] <= s["p99"]
    e2e = report["stages"]["end_to_end"]
    audio_s = sum(u["audio_seconds"] for u in report["utterances"])
    assert report["totals"]["audio_seconds"] == pytest.approx(audio_s)
    assert report["totals"]["rtf"] == pytest.approx(audio_s / e2e["total"])
    assert report["environment"]["torch"]
    assert [u["file"] for u in report["utterances"]] == [f"{i}.wav" for i in range(1, 7)]
    assert "RTF" in stdout and "end_to_end" in stdout
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_fastspeech_e2e_equals_reference(tmp_path, capsys):
    phrases = E2E_PHRASES
    out = tmp_path / "out"
    code, _, err = run_cli([str(phrases), "--out", str(out), "--fastspeech", FS, "--fastspeech-config", FS_YAML,
                            "--waveglow", WG, *DET, "--denoiser-strength", "0", "--save-mel"], capsys)
    assert code == 0, err
    ref = load_npz("e2e/ref_e2e_fastspeech.npz")
    for i in range(6):
        mel = np.load(out / f"{i + 1}.mel.npy")
        np.testing.assert_allclose(mel, ref[f"mel_{i}"][0], atol=1e-4)
        audio, _ = read_wav(out / f"{i + 1}.wav")
        np.testing.assert_allclose(audio, ref[f"audio_{i}"][0], atol=1 / 32767 + 1e-5)


def test_blank_lines_are_skipped_and_files_numbered_by_line(tmp_path, capsys):
    phrases = tmp_path / "p.txt"
    phrases.write_text("Hello there.\n\n   \nThe end.\r\n", encoding="utf-8")
    out = tmp_path / "out"
    code, _, err = run_cli([str(phrases), "--out", str(out), "--tacotron2", T2, "--waveglow", WG, *DET], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.wav")) == ["1.wav", "4.wav"]
    report = json.loads((out / "report.json").read_text())
    assert [u["line"] for u in report["utterances"]] == [1, 4]


def test_batch_of_eight_writes_every_phrase(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli([str(REPO / "phrases" / "phrase_8_short.txt"), "--out", str(out),
                            "--tacotron2", T2, "--waveglow", WG, *DET, "--batch", "8"], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["batch"] == 8 and report["written"] == 8
    assert report["stages"]["end_to_end"]["count"] == 1          # one batch call
    for i in range(1, 9):
        audio, _ = read_wav(out / f"{i}.wav")
        assert audio.size > 0 and np.isfinite(audio).all()


def test_seed_makes_dropout_reproducible(tmp_path, capsys):
    phrases = write_phrases(tmp_path / "p.txt", ["Go to St. Louis on St. Patrick's day."])
    outs = []
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        out = tmp_path / name
        code, _, err = run_cli([str(phrases), "--out", str(out), "--tacotron2", T2, "--waveglow", WG,
                                "--seed", seed, "--save-mel"], capsys)
        assert code == 0, err
        outs.append(np.load(out / "1.mel.npy"))
    assert outs[0].shape == outs[1].shape and np.array_equal(outs[0], outs[1])
    assert outs[0].shape != outs[2].shape or not np.array_equal(outs[0], outs[2])


def test_long_line_is_split_and_spoken_whole(tmp_path, capsys):
    words = ("the quick brown fox jumps over the lazy dog and runs far away. " * 200)[:10_000]
    phrases = write_phrases(tmp_path / "p.txt", [words])
    out = tmp_path / "out"
    code, _, err = run_cli([str(phrases), "--out", str(out), "--tacotron2", T2, "--waveglow", WG, *DET,
                            "--denoiser-strength", "0"], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    u = report["utterances"][0]
    assert u["chars"] == 10_000
    assert u["pieces"] >= 10_000 // 256
    # Every word of the text was spoken: the normalized text holds them all, in order.
    assert u["normalized_text"].split() == words.split()
    audio, rate = read_wav(out / "1.wav")
    assert audio.size % 256 == 0 and audio.size / rate == pytest.approx(u["audio_seconds"])
    # Each piece contributes its frames up to its stop (at most all of its mel frames).
    assert u["pieces"] * 256 <= audio.size <= u["mel_frames"] * 256


def test_unknown_characters_are_dropped_with_a_warning(tmp_path, capsys):
    phrases = write_phrases(tmp_path / "p.txt", ["Hello * world # again"])
    out = tmp_path / "out"
    code, _, err = run_cli([str(phrases), "--out", str(out), "--tacotron2", T2, "--waveglow", WG, *DET], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["utterances"][0]["dropped_chars"] == "*#"
    assert "line 1: not spoken (no symbol): '*#'" in err


def test_a_decoder_that_does_not_stop_is_reported_per_line(tmp_path, capsys):
    # the bundled Tacotron2 with a decoder limit far below the 20-odd frames it needs: the line is
    # still written, and both stderr and the report say that it ran to the limit
    phrases = write_phrases(tmp_path / "p.txt", ["Hello there.", "Good morning to you all."])
    out = tmp_path / "out"
    code, _, err = run_cli([str(phrases), "--out", str(out), "--voice", "slt-tacotron2",
                            "--max-decoder-steps", "12"], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] and report["written"] == 2
    assert [u["mel_frames"] for u in report["utterances"]] == [12, 12]
    assert [u["hit_max_decoder_steps"] for u in report["utterances"]] == [1, 1]
    for n in (1, 2):
        assert (f"line {n}: reached max decoder steps (12) or its step budget (10 frames per symbol + 120) "
                "before the stop gate or the attention ended it: the audio may be cut short, or run on past "
                "the text") in err
        assert read_wav(out / f"{n}.wav")[0].size == 12 * 256


# ---------------------------------------------------------------- bad input


def assert_one_line_error(code, err, *needles):
    assert code == 1, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("tts-synth: error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


def test_empty_phrase_file(tmp_path, capsys):
    (tmp_path / "e.txt").write_text("\n \n", encoding="utf-8")
    code, _, err = run_cli([str(tmp_path / "e.txt"), "--out", str(tmp_path / "o"), "--tacotron2", T2,
                            "--waveglow", WG], capsys)
    assert_one_line_error(code, err, "e.txt", "no phrases")
    assert not list((tmp_path / "o").glob("*.wav")) if (tmp_path / "o").exists() else True


def test_missing_phrase_file(tmp_path, capsys):
    code, _, err = run_cli([str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o"), "--tacotron2", T2,
                            "--waveglow", WG], capsys)
    assert_one_line_error(code, err, "nope.txt", "not found")


def test_invalid_utf8_names_the_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "bad.txt").write_bytes(b"Hello there.\nbad \xff byte\n")
    out = tmp_path / "o"
    code, _, err = run_cli([str(tmp_path / "bad.txt"), "--out", str(out), "--tacotron2", T2, "--waveglow", WG],
                           capsys)
    assert_one_line_error(code, err, "line 2", "UTF-8", "0xff")
    assert not out.exists() or not list(out.iterdir())


def test_line_over_the_maximum_is_refused_before_any_output(tmp_path, capsys):
    phrases = write_phrases(tmp_path / "p.txt", ["Fine.", "x" * 300])
    out = tmp_path / "o"
    code, _, err = run_cli([str(phrases), "--out", str(out), "--tacotron2", T2, "--waveglow", WG,
                            "--max-chars", "200"], capsys)
    assert_one_line_error(code, err, "line 2", "300 characters", "200")
    assert not list(out.glob("*.wav"))


def test_line_with_nothing_speakable(tmp_path, capsys):
    phrases = write_phrases(tmp_path / "p.txt", ["Fine.", "*** \u2122 \u266a\u266a"])
    code, _, err = run_cli([str(phrases), "--out", str(tmp_path / "o"), "--tacotron2", T2, "--waveglow", WG],
                           capsys)
    assert_one_line_error(code, err, "line 2", "nothing speakable")


@pytest.mark.parametrize("which,ckpt,needles", [
    ("--tacotron2", "missing.pt", ["missing.pt", "not found"]),
    ("--tacotron2", "garbage", ["garbage", "not a PyTorch checkpoint"]),
    ("--tacotron2", WG, ["WaveGlow checkpoint, not a Tacotron2"]),
    ("--waveglow", T2, ["Tacotron2 checkpoint, not a WaveGlow"]),
])
def test_bad_checkpoints(tmp_path, capsys, which, ckpt, needles):
    if ckpt == "garbage":
        ckpt = str(tmp_path / "garbage.pt")
        Path(ckpt).write_bytes(os.urandom(4096))
    elif ckpt == "missing.pt":
        ckpt = str(tmp_path / "missing.pt")
    args = {"--tacotron2": T2, "--waveglow": WG}
    args[which] = ckpt
    phrases = write_phrases(tmp_path / "p.txt", ["Hello."])
    code, _, err = run_cli([str(phrases), "--out", str(tmp_path / "o"), "--tacotron2", args["--tacotron2"],
                            "--waveglow", args["--waveglow"]], capsys)
    assert_one_line_error(code, err, *needles)


def test_truncated_checkpoint(tmp_path, capsys):
    data = Path(T2).read_bytes()
    bad = tmp_path / "half.pt"
    bad.write_bytes(data[: len(data) // 2])
    phrases = write_phrases(tmp_path / "p.txt", ["Hello."])
    code, _, err = run_cli([str(phrases), "--out", str(tmp_path / "o"), "--tacotron2", str(bad),
                            "--waveglow", WG], capsys)
    assert_one_line_error(code, err, "half.pt")


def test_no_voice_uses_the_bundled_one(tmp_path, capsys):
    phrases = write_phrases(tmp_path / "p.txt", ["Hello there."])
    code, _, err = run_cli([str(phrases), "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert "heart" in json.dumps(report) and (tmp_path / "o" / "1.wav").is_file()


def test_no_voice_and_none_bundled_says_how_to_give_one(tmp_path, capsys, monkeypatch):
    import tts.voice
    monkeypatch.setattr(tts.voice, "BUNDLED_DIR", tmp_path / "no_voices")
    phrases = write_phrases(tmp_path / "p.txt", ["Hello."])
    code, _, err = run_cli([str(phrases), "--out", str(tmp_path / "o")], capsys)
    assert code == 1
    assert "no voice given" in err and "--tacotron2" in err and "--waveglow" in err and "--voice" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("flag,value,needle", [
    ("--batch", "0", "--batch"),
    ("--batch", "two", "--batch"),
    ("--sigma", "abc", "--sigma"),
])
def test_usage_errors(tmp_path, capsys, flag, value, needle):
    phrases = write_phrases(tmp_path / "p.txt", ["Hello."])
    code, _, err = run_cli([str(phrases), "--out", str(tmp_path / "o"), "--tacotron2", T2, "--waveglow", WG,
                            flag, value], capsys)
    assert code == 2 and needle in err and "Traceback" not in err


@pytest.mark.parametrize("flag,value,needle", [
    ("--sigma", "-0.5", "--sigma"),
    ("--denoiser-strength", "-1", "--denoiser-strength"),
    ("--gate-threshold", "1.5", "--gate-threshold"),
    ("--prenet-dropout", "1", "--prenet-dropout"),
    ("--speed", "0", "--speed"),
    ("--max-decoder-steps", "0", "--max-decoder-steps"),
    ("--sigma", "nan", "--sigma"),
])
def test_out_of_range_options(tmp_path, capsys, flag, value, needle):
    phrases = write_phrases(tmp_path / "p.txt", ["Hello."])
    code, _, err = run_cli([str(phrases), "--out", str(tmp_path / "o"), "--tacotron2", T2, "--waveglow", WG,
                            flag, value], capsys)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "o").exists()


def test_unwritable_out(tmp_path, capsys):
    phrases = write_phrases(tmp_path / "p.txt", ["Hello."])
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (afile, afile / "sub"):
        code, _, err = run_cli([str(phrases), "--out", str(out), "--tacotron2", T2, "--waveglow", WG], capsys)
        assert_one_line_error(code, err, "--out")


def test_fp16_on_cpu_is_refused(tmp_path, capsys):
    phrases = write_phrases(tmp_path / "p.txt", ["Hello."])
    code, _, err = run_cli([str(phrases), "--out", str(tmp_path / "o"), "--tacotron2", T2, "--waveglow", WG,
                            "--precision", "fp16"], capsys)
    assert_one_line_error(code, err, "fp16", "CUDA")


def test_console_script_runs_as_a_user_would(tmp_path):
    exe = shutil.which("tts-synth")
    cmd = [exe] if exe else [sys.executable, "-m", "tts.cli.synth"]
    phrases = write_phrases(tmp_path / "p.txt", ["The end."])
    out = tmp_path / "out"
    r = subprocess.run([*cmd, str(phrases), "--out", str(out), "--tacotron2", T2, "--waveglow", WG, *DET,
                        "--progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (out / "1.wav").is_file() and (out / "report.json").is_file()
    assert "100%" in r.stderr            # the progress bar, on stderr
    r = subprocess.run([*cmd, str(phrases), "--out", str(tmp_path / "out2")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and (tmp_path / "out2" / "1.wav").is_file() and "Traceback" not in r.stderr


def test_engine_cache_flag(tmp_path, capsys):
    """--engine-cache DIR|off: parsed the same by every CLI; on CPU the eager path ignores it."""
    import argparse

    from tts.cli.common import add_voice_arguments, engine_cache_from_args
    from tts.engines.cache import EngineCache
    p = argparse.ArgumentParser()
    add_voice_arguments(p)
    assert engine_cache_from_args(p.parse_args([])) == "auto"
    assert engine_cache_from_args(p.parse_args(["--engine-cache", "off"])) is None
    cache = engine_cache_from_args(p.parse_args(["--engine-cache", str(tmp_path / "c")]))
    assert isinstance(cache, EngineCache) and str(tmp_path / "c") in str(cache.root)
    phrases = write_phrases(tmp_path / "p.txt", ["The end."])
    code, _, err = run_cli([str(phrases), "--out", str(tmp_path / "o"), "--tacotron2", T2, "--waveglow", WG, *DET,
                            "--engine-cache", "off"], capsys)
    assert code == 0, err
    assert (tmp_path / "o" / "1.wav").is_file()


def test_voice_dir(tmp_path, capsys):
    voice = tmp_path / "v"
    voice.mkdir()
    shutil.copy(T2, voice / "t2.pt")
    shutil.copy(WG, voice / "wg.pt")
    (voice / "voice.json").write_text(json.dumps({
        "name": "fixture", "acoustic": {"kind": "tacotron2", "checkpoint": "t2.pt"},
        "vocoder": {"kind": "waveglow", "checkpoint": "wg.pt"},
        "defaults": {"sigma": 0.0, "prenet_dropout": 0.0}}))
    out = tmp_path / "o"
    code, _, err = run_cli([str(E2E_PHRASES), "--out", str(out), "--voice", str(voice), "--save-mel"], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["voice"]["name"] == "fixture" and report["options"]["sigma"] == 0.0
    np.testing.assert_allclose(np.load(out / "1.mel.npy"), load_npz("e2e/ref_e2e.npz")["mel_0"][0], atol=1e-3)


@pytest.mark.parametrize("args,needle", [
    (["--voice", "somewhere", "--tacotron2", T2], "either --voice or checkpoint files"),
    (["--waveglow", WG], "--waveglow needs an acoustic model"),
    (["--tacotron2", T2], "--tacotron2 needs a vocoder"),
    (["--tacotron2", T2, "--fastspeech", FS, "--waveglow", WG], "not both"),
    (["--tacotron2", T2, "--fastspeech-config", FS_YAML, "--waveglow", WG], "--fastspeech-config is only used"),
    (["--voice", "no-such-voice"], "unknown voice 'no-such-voice'"),
])
def test_voice_flag_mistakes(tmp_path, capsys, args, needle):
    phrases = write_phrases(tmp_path / "p.txt", ["Hello."])
    code, _, err = run_cli([str(phrases), "--out", str(tmp_path / "o"), *args], capsys)
    assert_one_line_error(code, err, needle)
