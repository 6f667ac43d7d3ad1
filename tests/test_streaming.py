"""Chunked streaming vocoder: streamed audio vs whole-utterance audio, with the reference WaveGlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tts.streaming import HOP, MelStreamer, StreamConfig, make_vocode

pytestmark = pytest.mark.timeout(120)
FIXTURES = Path(__file__).parent / "fixtures" / "reference"


@pytest.fixture(scope="module")
def voice():
    from tts.voice import Voice

    return Voice.from_checkpoints(tacotron2=FIXTURES / "tacotron2/checkpoint_Tacotron2_current_1gpu.pt",
                                  waveglow=FIXTURES / "waveglow/checkpoint_WaveGlow_ngc_style_ddp.pt")


@pytest.fixture(scope="module")
def decoder_mel(voice):
    """A decoder (pre-postnet) mel [n_mel, T] (T <= 80) from the reference Tacotron2."""
    with torch.inference_mode():
        ids = torch.randint(1, 60, (1, 40), generator=torch.Generator().manual_seed(0))
        out = voice.acoustic.infer(ids, torch.tensor([40]), prenet_dropout=0.0, max_decoder_steps=80)
    assert out.mel.shape[-1] >= 40
    return out.mel[0]


def whole(voice, mel, strength):
    """The unary path: postnet, WaveGlow (sigma 0), denoiser over the whole utterance."""
    with torch.inference_mode():
        post = voice.acoustic.postnet_forward(mel.unsqueeze(0))
        audio = voice.vocoder.infer(post, sigma=0.0)
        if strength:
            audio = voice.denoiser(audio, strength=strength).reshape(1, -1)
    return audio[0].numpy()


def streamed(voice, mel, strength, cfg, push_every=3):
    vocode = make_vocode(voice.vocoder, voice.denoiser, sigma=0.0, denoiser_strength=strength)
    st = MelStreamer(vocode, lambda m: voice.acoustic.postnet_forward(m), cfg)
    chunks = []
    for i in range(0, mel.shape[-1], push_every):
        chunks += st.push(mel[:, i:i + push_every])
    chunks += st.finish()
    return chunks


@pytest.mark.parametrize("strength", [0.0, 0.01])
def test_streamed_equals_whole_with_overlap(voice, decoder_mel, strength):
    want = whole(voice, decoder_mel, strength)
    chunks = streamed(voice, decoder_mel, strength, StreamConfig(chunk_frames=16, first_chunk_frames=4,
                                                                  overlap_frames=8))
    got = np.concatenate(chunks)
    assert [len(c) for c in chunks[:2]] == [4 * HOP, 16 * HOP]     # small first chunk, then full ones
    assert len(got) == len(want) == HOP * decoder_mel.shape[-1]
    # Stated tolerance for the reference model: 1e-5 absolute (it is float rounding, ~1e-7 here).
    assert np.abs(got - want).max() < 1e-5


def test_chunks_come_before_the_utterance_ends(voice, decoder_mel):
    vocode = make_vocode(voice.vocoder, None, sigma=0.0, denoiser_strength=0.0)
    st = MelStreamer(vocode, lambda m: voice.acoustic.postnet_forward(m),
                     StreamConfig(chunk_frames=16, first_chunk_frames=4, overlap_frames=8))
    first_at = None
    for t in range(decoder_mel.shape[-1]):
        if st.push(decoder_mel[:, t:t + 1]) and first_at is None:
            first_at = t + 1
    # First chunk = 4 frames + 8 overlap + 10 postnet context: ready after 22 decoder frames.
    assert first_at == 4 + 8 + 10


def test_overlap_matters(voice, decoder_mel):
    """Without context the joins differ from the whole-utterance audio; the error falls with overlap."""
    want = whole(voice, decoder_mel, 0.0)
    errs = {}
    for ov in (0, 2, 8):
        got = np.concatenate(streamed(voice, decoder_mel, 0.0, StreamConfig(chunk_frames=8, first_chunk_frames=8,
                                                                            overlap_frames=ov)))
        errs[ov] = float(np.abs(got - want).max())
    assert errs[0] > 1e-4                        # audible-scale error at the joins without overlap
    assert errs[8] < 1e-5
    assert errs[0] >= errs[2] >= errs[8]


def test_finish_trims_to_audio_frames(voice, decoder_mel):
    vocode = make_vocode(voice.vocoder, None, sigma=0.0, denoiser_strength=0.0)
    st = MelStreamer(vocode, None, StreamConfig(chunk_frames=16, first_chunk_frames=16, overlap_frames=4))
    n = decoder_mel.shape[-1]
    out = st.push(decoder_mel) + st.finish(audio_frames=n - 1)   # Tacotron2 drops the gate frame's audio
    assert sum(len(c) for c in out) == (n - 1) * HOP
    assert st.finish() == []


def test_fastspeech_streaming_equals_synthesizer():
    from tts.options import SynthesisOptions
    from tts.server.acoustic import acoustic_mels
    from tts.streaming import stream_vocode_mel
    from tts.synthesizer import Synthesizer
    from tts.voice import Voice

    v = Voice.from_checkpoints(fastspeech=FIXTURES / "fastspeech/checkpoint_005000.pt",
                               waveglow=FIXTURES / "waveglow/checkpoint_WaveGlow_ngc_style_ddp.pt")
    s = Synthesizer(v)
    opts = SynthesisOptions(sigma=0.0)
    text = "Streaming the fast speech model, one chunk after another."
    want = s.synthesize(text, opts).audio
    (mels,) = acoustic_mels(s, [text], opts)
    got = np.concatenate([c for mel, n in mels.pieces for c in stream_vocode_mel(
        s, mel, opts, config=StreamConfig(chunk_frames=16, first_chunk_frames=4, overlap_frames=8), audio_frames=n)])
    assert len(got) == len(want)
    assert np.abs(got - want).max() < 1e-5


def test_windows_of_many_streams_vocoded_together_equal_push(voice, decoder_mel):
    """Planned windows of four streams (mels of different lengths), vocoded shape by shape in one postnet
    and one vocoder call each (the server's CPU modules), then committed, give each stream's
    ``push``/``finish`` chunks; a window committed out of plan order is refused."""
    from tts.streaming import synthesizer_modules
    from tts.synthesizer import Synthesizer

    acoustic, vocoder, denoiser, dtype = synthesizer_modules(Synthesizer(voice))
    vocode = make_vocode(vocoder, denoiser, sigma=0.0, denoiser_strength=0.01, dtype=dtype)
    cfg = StreamConfig(chunk_frames=16, first_chunk_frames=4, overlap_frames=8)

    def streamer():
        return MelStreamer(vocode, acoustic.postnet_forward, cfg)

    mels = [decoder_mel[:, :n] for n in (decoder_mel.shape[-1], 40, 40, 37)]
    want = []
    for mel in mels:
        st = streamer()
        want.append(st.push(mel[:, :30]) + st.push(mel[:, 30:]) + st.finish())
    sts = [streamer() for _ in mels]
    plans = [st.plan_push(mel[:, :30]) + st.plan_push(mel[:, 30:]) + st.plan_finish() for st, mel in zip(sts, mels)]
    audio: dict[tuple[int, int], torch.Tensor] = {}
    shapes = {w.shape for p in plans for w in p}
    for shape in shapes:
        batch = [(s, i) for s, p in enumerate(plans) for i, w in enumerate(p) if w.shape == shape]
        out = sts[0].vocode_windows([plans[s][i] for s, i in batch])
        audio.update(zip(batch, out))
    assert max(sum(w.shape == sh for p in plans for w in p) for sh in shapes) >= 4
    for s, (st, plan) in enumerate(zip(sts, plans)):
        got = [st.commit(w, audio[s, i]) for i, w in enumerate(plan)]
        assert [len(c) for c in got] == [len(c) for c in want[s]]
        # Stated tolerance: fp32 rounding of batched convolutions (postnet, STFT), ~3e-8 here.
        assert np.abs(np.concatenate(got) - np.concatenate(want[s])).max() < 1e-6
    st = streamer()
    w1, w2 = st.plan_push(decoder_mel[:, :40])[:2]
    with pytest.raises(ValueError, match="plan order"):
        st.commit(w2, st.vocode_windows([w2])[0])


def test_bundled_griffinlim_voice_streams_its_unary_audio():
    """``heart`` (Griffin-Lim with a PGHI start): each window starts from the phase its stream's
    previous window found, so the streamed audio is the unary audio (about 85 dB apart); windows
    vocoded apart, each from its own phase, join badly (about 0 dB, predicted MOS 4.3 -> 3.0)."""
    from tts.options import SynthesisOptions
    from tts.streaming import stream_vocode_mel
    from tts.synthesizer import Synthesizer
    from tts.voice import load_voice

    s = Synthesizer(load_voice("heart"))
    opts = SynthesisOptions()
    r = s.synthesize("Streaming the default voice, one chunk after another, as a server would.", opts)
    mel = torch.as_tensor(r.mel)

    def snr(got):
        assert len(got) == len(r.audio)
        return 10 * np.log10((r.audio ** 2).sum() / ((got - r.audio) ** 2).sum())
    assert snr(np.concatenate(list(stream_vocode_mel(s, mel, opts)))) > 60
    o = opts.merged_over(s.voice.defaults)
    vocode = make_vocode(s.vocoder_module, s.denoiser_module, sigma=o.sigma, denoiser_strength=o.denoiser_strength)
    assert vocode.window is not None

    def apart(m):
        return vocode(m)
    st = MelStreamer(apart, None, StreamConfig())
    assert snr(np.concatenate(st.push(mel) + st.finish())) < 10


@pytest.mark.gpu
def test_bundled_griffinlim_voice_streams_its_unary_audio_on_cuda():
    """As on the CPU: on CUDA ``heart``'s windows continue their stream's phase (``infer_window``
    with ``start_phase`` on the device), so the streamed audio is the unary audio."""
    from tts.options import SynthesisOptions
    from tts.streaming import stream_vocode_mel
    from tts.synthesizer import Synthesizer
    from tts.voice import load_voice

    s = Synthesizer(load_voice("heart"), device="cuda", precision="fp16")
    opts = SynthesisOptions()
    r = s.synthesize("Streaming the default voice on the GPU, one chunk after another.", opts)
    got = np.concatenate(list(stream_vocode_mel(s, torch.as_tensor(r.mel, device="cuda"), opts)))
    assert len(got) == len(r.audio)
    assert 10 * np.log10((r.audio ** 2).sum() / ((got - r.audio) ** 2).sum()) > 60


def test_server_streams_griffinlim_window_by_window_only_with_a_pghi_start(tmp_path):
    """The serving engine streams a Griffin-Lim voice chunk by chunk when its windows can continue
    their phase (``init: "pghi"``, the bundled voices); from random phases it makes the whole audio
    first, as a window alone would not join its neighbours."""
    import json
    import shutil

    from tts.server.batcher import BatcherConfig
    from tts.server.engine import ServingEngine
    from tts.synthesizer import Synthesizer
    from tts.voice import BUNDLED_DIR, load_voice

    src = BUNDLED_DIR / "heart"
    spec = json.loads((src / "voice.json").read_text())
    assert spec["vocoder"]["init"] == "pghi"
    spec["vocoder"].update(init="random", n_iter=4)
    d = tmp_path / "heart-random"
    d.mkdir()
    shutil.copy(src / "fastspeech.pt", d / "fastspeech.pt")
    (d / "voice.json").write_text(json.dumps(spec))
    eng = ServingEngine({"heart": [Synthesizer(load_voice("heart"))], "rnd": [Synthesizer(load_voice(str(d)))]},
                        batcher=BatcherConfig(max_batch_size=1, max_queue_delay_s=0.0))
    assert eng._vocodes_in_chunks("heart") and not eng._vocodes_in_chunks("rnd")
