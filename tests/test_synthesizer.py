"""Options, audio encoding, voices and the Synthesizer API (CPU, fixture checkpoints)."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from conftest import FIXTURES, load_npz
from tts.audio import encode, resample, to_pcm16, write_atomic
from tts.errors import InvalidInputError, VoiceError
from tts.options import REFERENCE_DEFAULTS, SynthesisOptions, flag_name, option_fields

T2 = FIXTURES / "tacotron2" / "checkpoint_Tacotron2_current_1gpu.pt"
WG = FIXTURES / "waveglow" / "checkpoint_WaveGlow_ngc_style_ddp.pt"
FS = FIXTURES / "fastspeech" / "checkpoint_005000.pt"


# ------------------------------------------------------------------ options

def test_options_none_means_voice_default():
    merged = SynthesisOptions(sigma=0.3).merged_over(REFERENCE_DEFAULTS)
    assert merged.sigma == 0.3
    assert merged.denoiser_strength == REFERENCE_DEFAULTS.denoiser_strength == 0.01
    assert merged.prenet_dropout == 0.5          # NVIDIA's reference keeps dropout on at inference


@pytest.mark.parametrize("kw,field", [
    ({"sigma": -0.1}, "sigma"), ({"denoiser_strength": -1.0}, "denoiser_strength"), ({"speed": 0.0}, "speed"),
    ({"gate_threshold": 0.0}, "gate_threshold"), ({"gate_threshold": 1.0}, "gate_threshold"),
    ({"prenet_dropout": 1.0}, "prenet_dropout"), ({"max_decoder_steps": 0}, "max_decoder_steps"),
    ({"max_decoder_steps": 2.5}, "max_decoder_steps"), ({"seed": -1}, "seed"), ({"sigma": float("inf")}, "sigma"),
    ({"sigma": "0.5"}, "sigma"), ({"seed": True}, "seed"),
])
def test_options_out_of_range_name_the_field(kw, field):
    with pytest.raises(InvalidInputError) as e:
        SynthesisOptions(**kw)
    assert e.value.field == field and field in str(e.value)


def test_options_accept_edges_and_normalise_types():
    o = SynthesisOptions(sigma=0, prenet_dropout=0, max_decoder_steps=3.0, seed=0)
    assert o.sigma == 0.0 and isinstance(o.sigma, float) and o.max_decoder_steps == 3 and o.seed == 0


def test_every_option_has_help_and_a_flag():
    names = [f.name for f in option_fields()]
    assert names == ["sigma", "denoiser_strength", "speed", "max_decoder_steps", "gate_threshold",
                     "prenet_dropout", "stop_rule", "seed", "text_normalizer"]
    assert all(f.metadata["help"] for f in option_fields())
    assert flag_name("denoiser_strength") == "--denoiser-strength"


# ------------------------------------------------------------------ audio

def test_pcm16_clips_and_rounds():
    pcm = to_pcm16(np.array([0.0, 0.5, 1.0, 2.0, -2.0], dtype=np.float32))
    assert pcm.tolist() == [0, 16384, 32767, 32767, -32767]


@pytest.mark.parametrize("encoding", ["WAV", "FLAC"])
def test_container_round_trip(encoding):
    t = np.arange(22050, dtype=np.float32) / 22050
    audio = 0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    data, rate = sf.read(io.BytesIO(encode(audio, 22050, encoding)), dtype="float32")
    assert rate == 22050 and data.shape == audio.shape
    assert np.abs(data - audio).max() <= 1 / 32767


def test_raw_encodings():
    audio = np.array([0.25, -0.25], dtype=np.float32)
    assert np.frombuffer(encode(audio, 22050, "FLOAT32"), "<f4").tolist() == [0.25, -0.25]
    assert np.frombuffer(encode(audio, 22050, "LINEAR_PCM16"), "<i2").tolist() == [8192, -8192]


def test_opus_needs_an_opus_rate_and_round_trips():
    with pytest.raises(InvalidInputError) as e:
        encode(np.zeros(100, np.float32), 22050, "OGG_OPUS")
    assert e.value.field == "sample_rate_hz"
    t = np.arange(24000, dtype=np.float32) / 24000
    audio = 0.3 * np.sin(2 * np.pi * 300 * t).astype(np.float32)
    data, rate = sf.read(io.BytesIO(encode(audio, 24000, "OGG_OPUS")), dtype="float32")
    assert rate == 24000 and abs(len(data) - len(audio)) < 1000
    assert np.std(data) == pytest.approx(np.std(audio), rel=0.2)


def test_unknown_encoding():
    with pytest.raises(InvalidInputError) as e:
        encode(np.zeros(4, np.float32), 22050, "AAC")
    assert e.value.field == "encoding"


def test_mp3_round_trips_at_its_rates_only():
    with pytest.raises(InvalidInputError) as e:
        encode(np.zeros(100, np.float32), 96000, "MP3")
    assert e.value.field == "sample_rate_hz"
    t = np.arange(22050, dtype=np.float32) / 22050
    audio = 0.3 * np.sin(2 * np.pi * 300 * t).astype(np.float32)
    data, rate = sf.read(io.BytesIO(encode(audio, 22050, "MP3")), dtype="float32")
    assert rate == 22050 and abs(len(data) - len(audio)) < 2000
    assert np.std(data) == pytest.approx(np.std(audio), rel=0.1)
    spectrum = np.abs(np.fft.rfft(data))
    assert np.argmax(spectrum) * 22050 / len(data) == pytest.approx(300, abs=3)


@pytest.mark.parametrize("law", ["MULAW", "ALAW"])
def test_g711_is_one_byte_a_sample_and_concatenates(law):
    from tts.audio import g711_decode
    t = np.arange(8000, dtype=np.float32) / 8000
    audio = 0.5 * np.sin(2 * np.pi * 200 * t).astype(np.float32)
    whole = encode(audio, 8000, law)
    assert len(whole) == len(audio)
    assert encode(audio[:3000], 8000, law) + encode(audio[3000:], 8000, law) == whole
    assert np.abs(g711_decode(whole, law) - audio).max() < 0.02      # 8-bit companding: ~1/64 near full scale
    data, rate = sf.read(io.BytesIO(encode(audio, 8000, "WAV_" + law)), dtype="float32")
    assert rate == 8000 and np.array_equal(data, g711_decode(whole, law))


def test_resample_keeps_duration_and_pitch():
    t = np.arange(22050) / 22050
    audio = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    out = resample(audio, 22050, 16000)
    assert len(out) == 16000
    peak_hz = np.argmax(np.abs(np.fft.rfft(out))) * 16000 / len(out)
    assert abs(peak_hz - 440) <= 2


def test_write_atomic_leaves_nothing_on_failure(tmp_path):
    class Boom(bytes):
        pass

    target = tmp_path / "x.wav"
    with pytest.raises(TypeError):
        write_atomic(target, object())          # not bytes: the write fails half-way
    assert list(tmp_path.iterdir()) == []
    write_atomic(target, b"abc")
    assert target.read_bytes() == b"abc" and [p.name for p in tmp_path.iterdir()] == ["x.wav"]


# ------------------------------------------------------------------ voices

@pytest.fixture(scope="module")
def t2_voice():
    from tts.voice import Voice
    return Voice.from_checkpoints(tacotron2=T2, waveglow=WG)


def test_voice_from_checkpoints_takes_inference_settings_from_the_file(t2_voice):
    assert t2_voice.acoustic_kind == "tacotron2" and t2_voice.frontend == "tacotron2"
    assert t2_voice.sample_rate == 22050 and t2_voice.n_mel == 40
    assert t2_voice.defaults.max_decoder_steps == 80 and t2_voice.defaults.gate_threshold == 0.5
    assert t2_voice.describe()["acoustic"] == "tacotron2"


def test_voice_dir_manifest(tmp_path):
    from tts.voice import load_voice
    shutil.copy(FS, tmp_path / "fs.pt")
    shutil.copy(WG, tmp_path / "wg.pt")
    (tmp_path / "voice.json").write_text(json.dumps({
        "name": "test-fs", "sample_rate": 22050,
        "acoustic": {"kind": "fastspeech", "checkpoint": "fs.pt"},
        "vocoder": {"kind": "waveglow", "checkpoint": "wg.pt"},
        "defaults": {"sigma": 0.0, "speed": 1.25}}))
    v = load_voice(str(tmp_path))
    assert v.name == "test-fs" and v.acoustic_kind == "fastspeech" and v.frontend == "fastspeech"
    assert v.defaults.sigma == 0.0 and v.defaults.speed == 1.25 and v.defaults.denoiser_strength == 0.01


@pytest.mark.parametrize("manifest,needle", [
    ("not json", "cannot read the manifest"),
    ({"acoustic": {"kind": "tacotron2", "checkpoint": "t2.pt"}}, "missing 'vocoder'"),
    ({"acoustic": {"kind": "glowtts", "checkpoint": "t2.pt"}, "vocoder": {"kind": "waveglow", "checkpoint": "w"}},
     "acoustic.kind"),
    ({"acoustic": {"kind": "tacotron2", "checkpoint": "t2.pt"}, "vocoder": {"kind": "waveglow", "checkpoint": "w"},
      "defaults": {"sigma": -1}}, "sigma"),
    ({"acoustic": {"kind": "tacotron2", "checkpoint": "t2.pt"}, "vocoder": {"kind": "waveglow", "checkpoint": "w"},
      "defaults": {"loudness": 3}}, "bad 'defaults'"),
])
def test_bad_manifests(tmp_path, manifest, needle):
    from tts.voice import load_voice
    (tmp_path / "voice.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    with pytest.raises(VoiceError) as e:
        load_voice(str(tmp_path))
    assert needle in str(e.value)


def test_unknown_voice_name():
    from tts.voice import load_voice
    with pytest.raises(VoiceError) as e:
        load_voice("no-such-voice")
    assert "unknown voice 'no-such-voice'" in str(e.value)


def test_mismatched_models_are_refused(tmp_path):
    """A Tacotron2 of 40 mels with a WaveGlow of 80 mels cannot work together."""
    import torch

    from tts.models.waveglow import WaveGlow, WaveGlowConfig
    torch.manual_seed(0)
    cfg = WaveGlowConfig(n_mel_channels=80, n_flows=2, n_group=8, n_early_every=4, n_early_size=2,
                         WN_config={"n_layers": 1, "kernel_size": 3, "n_channels": 8})
    wg = WaveGlow(cfg)
    torch.save({"state_dict": wg.state_dict()}, tmp_path / "wg80.pt")
    from tts.voice import Voice
    with pytest.raises(VoiceError) as e:
        Voice.from_checkpoints(tacotron2=T2, waveglow=tmp_path / "wg80.pt")
    assert "40-channel" in str(e.value) and "80" in str(e.value)


# ------------------------------------------------------------------ synthesizer

@pytest.fixture(scope="module")
def synth(t2_voice):
    from tts.synthesizer import Synthesizer
    return Synthesizer(t2_voice, max_batch=4)


def test_check_text(synth):
    for bad, needle in (("", "empty"), ("   \n", "empty"), ("x" * 20_001, "maximum"), ("** \u2122\u266a", "nothing speakable"),
                        (None, "string")):
        with pytest.raises(InvalidInputError) as e:
            synth.check_text(bad)
        assert e.value.field == "text" and needle in str(e.value)


def test_single_equals_reference_and_batch_longest_equals_single(synth):
    ref = load_npz("e2e/ref_e2e.npz")
    opts = SynthesisOptions(sigma=0.0, prenet_dropout=0.0, text_normalizer="dle")   # parity: NVIDIA's cleaners
    texts = [str(ref[f"text_{i}"][0]) for i in range(6)]
    single = synth.synthesize(texts[5], opts)
    np.testing.assert_allclose(single.mel, ref["mel_5"][0], atol=1e-3)
    n = int(ref["mel_len_5"][0]) * 256
    np.testing.assert_allclose(single.audio, ref["denoised_5"][0, :n], atol=1e-5)
    assert single.sample_rate == 22050 and single.audio_seconds == pytest.approx(n / 22050)
    t = single.timings
    assert t.total >= t.text + t.acoustic + t.vocoder + t.denoiser - 1e-6 and t.acoustic > 0
    batch = synth.synthesize_batch(texts[:4], opts)
    assert [r.text for r in batch] == texts[:4]
    assert all(r.timings is batch[0].timings for r in batch)
    # The longest text of a batch is not padded, so its mel matches its single run up to its stop.
    from tts.text import encode
    longest = max(range(4), key=lambda i: len(encode(texts[i]).ids))
    np.testing.assert_allclose(batch[longest].mel[:, :-10], synth.synthesize(texts[longest], opts).mel[:, :-10],
                               atol=1e-4)


def test_batch_with_a_bad_text_fails_whole(synth):
    with pytest.raises(InvalidInputError):
        synth.synthesize_batch(["Hello.", ""])
    with pytest.raises(InvalidInputError):
        synth.synthesize_batch("Hello.")
    assert synth.synthesize_batch([]) == []


@pytest.mark.parametrize("kw,field", [({"precision": "fp8"}, "precision"), ({"precision": "fp16"}, "precision"),
                                      ({"device": "tpu"}, "device"), ({"max_batch": 0}, "max_batch"),
                                      ({"engine": "trt"}, "engine")])
def test_synthesizer_argument_errors(t2_voice, kw, field):
    from tts.synthesizer import Synthesizer
    with pytest.raises(InvalidInputError) as e:
        Synthesizer(t2_voice, **kw)
    assert e.value.field == field


def test_cuda_without_gpu_is_a_clear_error(t2_voice):
    import torch

    from tts.synthesizer import Synthesizer
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(InvalidInputError) as e:
        Synthesizer(t2_voice, device="cuda")
    assert "no CUDA GPU" in str(e.value)
