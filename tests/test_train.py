"""Training code of the bundled voice on a tiny synthetic corpus (no Festival needed)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tts.train.corpus import (Corpus, MelMaker, Utterance, boundaries_to_durations, symbol_boundaries,
                              symbol_text, trim_window, write_shard)
from tts.train.festival import Festival, Token, Phone, parse_segments
from tts.train.trainer import read_log, train

TEACHER = Path(__file__).parent / "fixtures" / "teacher"

TINY = {
    "fastspeech": dict(max_seq_len=400, d_model=64, phoneme_side_n_layer=1, phoneme_side_head=1,
                       phoneme_side_conv1d_filter_size=64, phoneme_side_output_size=64,
                       mel_side_n_layer=1, mel_side_head=1, mel_side_conv1d_filter_size=64,
                       mel_side_output_size=64, duration_predictor_filter_size=32),
    "tacotron2": dict(symbols_embedding_dim=32, encoder_embedding_dim=32, encoder_n_convolutions=1,
                      attention_rnn_dim=32, attention_dim=16, attention_location_n_filters=4,
                      attention_location_kernel_size=5, decoder_rnn_dim=32, prenet_dim=16,
                      postnet_embedding_dim=16, postnet_n_convolutions=2, max_decoder_steps=60),
    "waveglow": dict(n_flows=2, n_early_every=4, WN_config=dict(n_layers=2, n_channels=16)),
}
SETTINGS = {
    "fastspeech": dict(batch_size=4, lr=3e-3, warmup=0),
    "tacotron2": dict(batch_size=2, lr=3e-3, warmup=0, max_frames=400),
    "waveglow": dict(batch_size=2, lr=1e-3, warmup=0, segment_length=2048),
}


# -- alignment of teacher phones to our symbols --------------------------------------


def test_symbol_text_is_our_cleaned_symbols():
    assert symbol_text('He said "1835" -- Mr. Smith!') == "he said eighteen thirty-five -- mister smith!"


def test_durations_follow_phones_and_sum_to_frames():
    toks = [Token("hi", [Phone("hh", 0.10, 0.20), Phone("ay", 0.20, 0.40)]),
            Token("there", [Phone("dh", 0.60, 0.70), Phone("eh", 0.70, 0.90), Phone("r", 0.90, 1.00)])]
    text = "hi, there."
    b = symbol_boundaries(text, toks, total_s=1.2, offset_s=0.0)
    assert len(b) == len(text) + 1 and b[0] == 0 and b[-1] == 1.2
    assert np.all(np.diff(b) >= 0)
    d = dict(enumerate(np.diff(b)))
    assert d[0] == pytest.approx(0.2)  # "h": leading silence + first phone
    assert d[2] == pytest.approx(0.2) and d[3] == 0.0  # the pause goes to ",", the space gets none
    assert d[9] == pytest.approx(0.2)  # trailing silence to "."
    frames = boundaries_to_durations(b, n_frames=1 + int(1.2 * 22050) // 256)
    assert frames.sum() == 1 + int(1.2 * 22050) // 256 and (frames >= 0).all()


def test_alignment_of_real_festival_dump():
    texts = json.loads((TEACHER / "texts.json").read_text(encoding="utf-8"))
    for uid, text in texts.items():
        sym = symbol_text(text)
        toks = parse_segments((TEACHER / f"{uid}.seg").read_text(encoding="utf-8"))
        assert len(toks) == len(sym.split())
        t0, t1 = trim_window(toks, 10.0)
        b = symbol_boundaries(sym, toks, t1 - t0, offset_s=t0)
        n = 1 + int((t1 - t0) * 22050) // 256
        dur = boundaries_to_durations(b, n)
        assert dur.sum() == n and len(dur) == len(sym)
        letters = [d for c, d in zip(sym, dur) if c.isalpha()]
        assert min(letters) >= 1  # every letter of real speech gets at least a frame


def test_festival_prefix_command_and_env(tmp_path):
    f = Festival(prefix=tmp_path)
    cmd = f.command()
    assert cmd[0] == str(tmp_path / "usr/bin/festival")
    assert cmd[cmd.index("--datadir") + 1] == str(tmp_path / "usr/share/festival")
    assert str(tmp_path / "usr/lib/x86_64-linux-gnu") in f.env()["LD_LIBRARY_PATH"]
    assert Festival().command() == ["festival"]


# -- a synthetic corpus ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    """8 utterances: tones whose pitch follows the letters, durations 3-6 frames per symbol."""
    from tts.text.symbols import SYMBOL_TO_ID
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    mm = MelMaker()
    words = ["cat", "dog", "sun", "tree", "blue", "red", "go", "stop"]
    utts = []
    for k in range(8):
        sym = " ".join(rng.choice(words, size=3)) + "."
        dur = rng.integers(3, 7, size=len(sym))
        n_frames = int(dur.sum())
        n = (n_frames - 1) * 256 + 100
        t = np.arange(n) / 22050
        f = np.repeat([200 + 20 * (ord(c) % 26) for c in sym], dur * 256)[:n]
        f = np.pad(f, (0, n - len(f)), mode="edge")
        audio = (0.3 * np.sin(2 * np.pi * np.cumsum(f) / 22050) * 32767).astype(np.int16)
        mel = mm(audio)
        assert mel.shape[0] == n_frames
        utts.append(Utterance(uid=f"u{k}", text=sym, symbols=sym, ids=[SYMBOL_TO_ID[c] for c in sym],
                              durations=dur.tolist(), audio=audio, mel=mel.astype(np.float16)))
        del t
    write_shard(root / "shard_000", utts, {"utterances": 8})
    return root


@pytest.fixture(scope="module")
def fastspeech_file(corpus_dir, tmp_path_factory) -> str:
    """A tiny FastSpeech trained 3 steps on ``corpus_dir`` and exported (the ``gta`` tests' source)."""
    from tts.train.export import export_acoustic
    root = tmp_path_factory.mktemp("fs_export")
    train("fastspeech", corpus_dir, root / "ck", max_steps=3, settings=SETTINGS["fastspeech"],
          model_config=TINY["fastspeech"])
    export_acoustic("fastspeech", root / "ck", root / "x")
    return str(root / "x" / "fastspeech.pt")


def test_corpus_reads_back(corpus_dir):
    c = Corpus(corpus_dir)
    assert len(c) == 8
    for it in c.items:
        assert it.durations.sum() == it.mel.shape[0] and len(it.ids) == len(it.durations)


def _first_last(log: Path) -> tuple[float, float]:
    rows = read_log(log)
    return rows[0]["loss"], rows[-1]["loss"]


@pytest.mark.parametrize("kind,steps", [("fastspeech", 30), ("tacotron2", 12), ("waveglow", 30)])
def test_loss_decreases_and_resume_continues(kind, steps, corpus_dir, tmp_path):
    torch.set_num_threads(2)
    out = tmp_path / "ck"
    r1 = train(kind, corpus_dir, out, resume=True, max_steps=steps // 2, log_every=1,
               settings=SETTINGS[kind], model_config=TINY[kind])
    assert r1.step == steps // 2 and (out / f"{kind}_last.pt").is_file()
    r2 = train(kind, corpus_dir, out, resume=True, max_steps=steps, log_every=1,
               settings=SETTINGS[kind], model_config=TINY[kind])
    assert r2.start_step == steps // 2 and r2.step == steps
    rows = read_log(out / f"{kind}_log.csv")
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    first = np.mean([r["loss"] for r in rows[:3]])
    last = np.mean([r["loss"] for r in rows[-3:]])
    assert last < first, (kind, first, last)
    ck = torch.load(out / f"{kind}_last.pt", map_location="cpu", weights_only=True)
    assert ck["train"]["step"] == steps


def test_tacotron2_static_graph_step_trains_and_resumes(corpus_dir, tmp_path):
    """``--graph on`` on CPU: the static-shape step runs eagerly (tts/train/t2_static.py); the
    checkpoint has the eager layout and resumes in either mode."""
    torch.set_num_threads(2)
    kw = dict(settings=dict(SETTINGS["tacotron2"], graph_mel_multiple=16, graph_in_multiple=8),
              model_config=TINY["tacotron2"], log_every=1)
    r1 = train("tacotron2", corpus_dir, tmp_path, max_steps=6, graph="on", **kw)
    ck = torch.load(r1.checkpoint, map_location="cpu", weights_only=True)
    assert set(ck) == {"iteration", "config", "state_dict", "optimizer", "train"}
    assert isinstance(ck["optimizer"]["param_groups"][0]["lr"], float)
    r2 = train("tacotron2", corpus_dir, tmp_path, max_steps=12, graph="off", **kw)
    assert (r1.step, r2.start_step, r2.step) == (6, 6, 12)
    rows = read_log(tmp_path / "tacotron2_log.csv")
    assert [r["step"] for r in rows] == list(range(1, 13)) and all(np.isfinite(r["loss"]) for r in rows)
    assert np.mean([r["loss"] for r in rows[-3:]]) < np.mean([r["loss"] for r in rows[:3]])
    with pytest.raises(ValueError):
        train("fastspeech", corpus_dir, tmp_path / "fs", max_steps=1, graph="on",
              settings=SETTINGS["fastspeech"], model_config=TINY["fastspeech"])
    # "auto" (the CLI default): the graphed step for tacotron2 and waveglow on CUDA; fastspeech accepts it
    r3 = train("fastspeech", corpus_dir, tmp_path / "fs", max_steps=1, graph="auto",
               settings=SETTINGS["fastspeech"], model_config=TINY["fastspeech"])
    assert r3.step == 1


def test_waveglow_graph_step_equals_the_eager_step(corpus_dir, tmp_path):
    """``--graph on`` for waveglow (tts/train/wg_static.py; on CPU the step runs eagerly on its
    static buffer): the same batches, losses and weights as the eager trainer, step for step,
    and a checkpoint that resumes in either mode."""
    torch.set_num_threads(2)
    kw = dict(settings=SETTINGS["waveglow"], model_config=TINY["waveglow"], log_every=1)
    ra = train("waveglow", corpus_dir, tmp_path / "a", max_steps=6, graph="off", **kw)
    train("waveglow", corpus_dir, tmp_path / "b", max_steps=3, graph="on", **kw)
    rb = train("waveglow", corpus_dir, tmp_path / "b", max_steps=6, graph="off", **kw)
    la = [r["loss"] for r in read_log(tmp_path / "a" / "waveglow_log.csv")]
    lb = [r["loss"] for r in read_log(tmp_path / "b" / "waveglow_log.csv")]
    assert len(la) == 6 and la == pytest.approx(lb, rel=1e-5, abs=1e-6)
    assert la[-1] < la[0]
    ca = torch.load(ra.checkpoint, weights_only=True)
    cb = torch.load(rb.checkpoint, weights_only=True)
    for k, v in ca["state_dict"].items():
        torch.testing.assert_close(cb["state_dict"][k], v, rtol=1e-4, atol=1e-6)
    rc = train("waveglow", corpus_dir, tmp_path / "c", max_steps=6, graph="on", **kw)
    lc = [r["loss"] for r in read_log(tmp_path / "c" / "waveglow_log.csv")]
    assert rc.step == 6 and lc == pytest.approx(la, rel=1e-5, abs=1e-6)


def test_waveglow_graph_step_refuses_a_changed_batch_shape():
    from tts.train.wg_static import WaveGlowGraphStep
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.Adam(model.parameters())
    step = WaveGlowGraphStep(model, opt, torch.device("cpu"), lambda a: a,
                             lambda mel, a: ((model(a) ** 2).mean(), {"loss": torch.zeros(())}),
                             capture=False)
    step.step(torch.ones(2, 4), 1e-3)
    with pytest.raises(ValueError, match="batch shape"):
        step.step(torch.ones(3, 4), 1e-3)
    with pytest.raises(ValueError, match="CUDA"):
        WaveGlowGraphStep(model, opt, torch.device("cpu"), lambda a: a, lambda m, a: None, capture=True)


def test_resume_reproduces_uninterrupted_run(corpus_dir, tmp_path):
    kw = dict(settings=SETTINGS["fastspeech"], model_config=TINY["fastspeech"], log_every=1)
    train("fastspeech", corpus_dir, tmp_path / "a", max_steps=6, **kw)
    train("fastspeech", corpus_dir, tmp_path / "b", max_steps=3, **kw)
    train("fastspeech", corpus_dir, tmp_path / "b", max_steps=6, **kw)
    la = [r["loss"] for r in read_log(tmp_path / "a" / "fastspeech_log.csv")]
    lb = [r["loss"] for r in read_log(tmp_path / "b" / "fastspeech_log.csv")]
    assert la == pytest.approx(lb, rel=1e-5)


def test_max_minutes_stops_a_chunk(corpus_dir, tmp_path):
    r = train("fastspeech", corpus_dir, tmp_path, max_minutes=0.0, settings=SETTINGS["fastspeech"],
              model_config=TINY["fastspeech"])
    assert r.step == 0 and r.checkpoint.is_file()


def test_until_deadline_counts_the_set_up(corpus_dir, tmp_path):
    import time
    # A deadline already past: the set-up runs, no step does, the checkpoint is still written.
    r = train("fastspeech", corpus_dir, tmp_path, until=time.time(), settings=SETTINGS["fastspeech"],
              model_config=TINY["fastspeech"])
    assert r.step == 0 and r.checkpoint.is_file()
    # A deadline ahead of a step cap: the cap decides.
    r = train("fastspeech", corpus_dir, tmp_path, until=time.time() + 3600, max_steps=2,
              settings=SETTINGS["fastspeech"], model_config=TINY["fastspeech"])
    assert r.step == 2


def test_export_loads_as_voices_and_speaks(corpus_dir, tmp_path):
    from tts.quality import voice_speaker
    from tts.train.export import export_voices
    from tts.voice import Voice
    ck = tmp_path / "ck"
    for kind in ("fastspeech", "tacotron2", "waveglow"):
        train(kind, corpus_dir, ck, max_steps=2, settings=SETTINGS[kind], model_config=TINY[kind])
    res = export_voices(ck, tmp_path / "voices", name="tiny", max_mib=30)
    assert res["voices"] == ["tiny", "tiny-tacotron2", "tiny-waveglow", "tiny-tacotron2-waveglow"]
    assert res["total_mib"] < 30
    assert sorted(p.name for p in (tmp_path / "voices" / "tiny-tacotron2-waveglow").iterdir()) == ["voice.json"]
    fs = Voice.from_dir(tmp_path / "voices" / "tiny")
    assert fs.acoustic_kind == "fastspeech" and fs.frontend == "fastspeech"
    assert fs.vocoder_kind == "griffinlim" and fs.defaults.denoiser_strength == 0
    wgv = Voice.from_dir(tmp_path / "voices" / "tiny-waveglow")
    assert wgv.vocoder_kind == "waveglow" and wgv.sources["fastspeech"].endswith("tiny/fastspeech.pt")
    audio, rate = voice_speaker(wgv)("Go cat.")
    assert rate == 22050 and audio.size > 0 and np.isfinite(audio).all()
    sd = torch.load(tmp_path / "voices" / "tiny-waveglow" / "waveglow.pt", weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
    audio, rate = voice_speaker(fs)("Go cat.")
    assert rate == 22050 and audio.size > 0 and np.isfinite(audio).all()
    t2 = Voice.from_dir(tmp_path / "voices" / "tiny-tacotron2")
    audio, _ = voice_speaker(t2, max_decoder_steps=20)("Go.")
    assert audio.size > 0
    t2wg = Voice.from_dir(tmp_path / "voices" / "tiny-tacotron2-waveglow")
    assert t2wg.acoustic_kind == "tacotron2" and t2wg.vocoder_kind == "waveglow"
    assert t2wg.sources["waveglow"].endswith("tiny-waveglow/waveglow.pt")
    audio, _ = voice_speaker(t2wg, max_decoder_steps=20)("Go.")
    assert audio.size > 0 and np.isfinite(audio).all()


def test_export_refuses_too_large(corpus_dir, tmp_path):
    from tts.train.export import export_voices
    train("waveglow", corpus_dir, tmp_path, max_steps=1, settings=SETTINGS["waveglow"],
          model_config=TINY["waveglow"])
    with pytest.raises(ValueError, match="MiB"):
        export_voices(tmp_path, tmp_path / "v", max_mib=1.0)


@pytest.mark.parametrize("kind", ["tacotron2", "fastspeech"])
def test_init_from_exported_file_continues_at_its_step(kind, corpus_dir, tmp_path):
    """A run on a new machine starts from the exported fp16 file: same weights (to fp16), same step."""
    from tts.train.export import export_acoustic
    kw = dict(settings=SETTINGS[kind], model_config=TINY[kind], log_every=1)
    train(kind, corpus_dir, tmp_path / "a", max_steps=3, **kw)
    res = export_acoustic(kind, tmp_path / "a", tmp_path / "x")
    assert res["step"] == 3 and (tmp_path / "x" / f"{kind}.pt").is_file()
    r = train(kind, corpus_dir, tmp_path / "b", max_steps=3, init_from=tmp_path / "x" / f"{kind}.pt", **kw)
    assert r.start_step == 3 and r.step == 3       # nothing left to do: it starts where the file ends
    exported = torch.load(tmp_path / "x" / f"{kind}.pt", weights_only=True)
    sd_e = exported["state_dict" if kind == "tacotron2" else "model"]
    sd_b = torch.load(tmp_path / "b" / f"{kind}_last.pt", weights_only=True)
    sd_b = sd_b["state_dict" if kind == "tacotron2" else "model"]
    for k, v in sd_e.items():
        assert torch.equal(sd_b[k].to(v.dtype), v), k
    r = train(kind, corpus_dir, tmp_path / "c", max_steps=5, init_from=tmp_path / "x" / f"{kind}.pt", **kw)
    assert (r.start_step, r.step) == (3, 5)
    assert [row["step"] for row in read_log(tmp_path / "c" / f"{kind}_log.csv")] == [4, 5]


def test_init_from_warms_the_fresh_optimizer_up_again(corpus_dir, tmp_path):
    """A run started from an exported file has a fresh Adam: its learning rate warms up again from
    that file's step (and a resumed run goes on with that warm-up), where a run from scratch warms
    up from step 0."""
    from tts.train.export import export_acoustic
    kw = dict(settings=dict(SETTINGS["fastspeech"], warmup=10, lr=1e-3),
              model_config=TINY["fastspeech"], log_every=1)

    def last_lr(folder):
        ck = torch.load(folder / "fastspeech_last.pt", weights_only=True)
        return ck["optim"]["param_groups"][0]["lr"], ck["train"]["warmup_from"]

    train("fastspeech", corpus_dir, tmp_path / "a", max_steps=12, **kw)
    assert last_lr(tmp_path / "a") == (pytest.approx(1e-3), 0)     # step 12: warmed up
    export_acoustic("fastspeech", tmp_path / "a", tmp_path / "x")
    f = tmp_path / "x" / "fastspeech.pt"
    train("fastspeech", corpus_dir, tmp_path / "b", max_steps=15, init_from=f, **kw)
    assert last_lr(tmp_path / "b") == (pytest.approx(3e-4), 12)    # its 3rd step: 3/10 of the rate
    train("fastspeech", corpus_dir, tmp_path / "b", max_steps=17, **kw)   # resumed
    assert last_lr(tmp_path / "b") == (pytest.approx(5e-4), 12)


def test_init_from_refuses_missing_files(corpus_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        train("tacotron2", corpus_dir, tmp_path / "t", max_steps=1, settings=SETTINGS["tacotron2"],
              model_config=TINY["tacotron2"], init_from=tmp_path / "nope.pt")


def test_init_from_exported_waveglow_restores_the_folded_weights(corpus_dir, tmp_path):
    """Exported WaveGlow weights are folded; seeding a run re-parametrises them exactly."""
    from tts.models.waveglow import WaveGlow
    from tts.train.export import export_voices
    kw = dict(settings=SETTINGS["waveglow"], model_config=TINY["waveglow"], log_every=1)
    train("waveglow", corpus_dir, tmp_path / "a", max_steps=3, **kw)
    export_voices(tmp_path / "a", tmp_path / "v", name="t", max_mib=30)
    f = tmp_path / "v" / "t-waveglow" / "waveglow.pt"
    r = train("waveglow", corpus_dir, tmp_path / "b", max_steps=3, init_from=f, **kw)
    assert (r.start_step, r.step) == (3, 3)
    ck = torch.load(tmp_path / "b" / "waveglow_last.pt", weights_only=True)
    m = WaveGlow(ck["config"])
    m.load_state_dict(ck["state_dict"])
    m.remove_weight_norm()
    exported = torch.load(f, weights_only=True)["state_dict"]
    for k, v in exported.items():
        assert torch.allclose(m.state_dict()[k].half().float(), v.float(), atol=1e-3, rtol=1e-3), k
    r = train("waveglow", corpus_dir, tmp_path / "c", max_steps=5, init_from=f, **kw)
    assert (r.start_step, r.step) == (3, 5)


def test_training_goes_on_from_a_grown_waveglow(corpus_dir, tmp_path):
    """A grown export (``tts.train grow-waveglow``: new layers whose residual/skip convolutions
    are zero, a shorter upsampler) seeds a run in its own architecture, with no NaN from the
    weight norm of the zero rows; the first loss equals the export's own, and resuming keeps it."""
    from tts.models.waveglow import WaveGlow
    from tts.train.export import export_voices
    from tts.train.grow import grow_waveglow
    from tts.train.losses import waveglow_loss
    kw = dict(settings=SETTINGS["waveglow"], log_every=1)
    train("waveglow", corpus_dir, tmp_path / "a", max_steps=3, model_config=TINY["waveglow"], **kw)
    export_voices(tmp_path / "a", tmp_path / "v", name="t", max_mib=30)
    small = torch.load(tmp_path / "v" / "t-waveglow" / "waveglow.pt", weights_only=True)
    grown = grow_waveglow(small, n_layers=4, upsample_kernel=768)
    torch.save(grown, tmp_path / "g.pt")
    r = train("waveglow", corpus_dir, tmp_path / "b", max_steps=5, init_from=tmp_path / "g.pt", **kw)
    assert (r.start_step, r.step) == (3, 5)
    ck = torch.load(tmp_path / "b" / "waveglow_last.pt", weights_only=True)
    assert ck["config"]["WN_config"]["n_layers"] == 4 and ck["config"]["upsample_kernel"] == 768
    rows = read_log(tmp_path / "b" / "waveglow_log.csv")
    assert all(math.isfinite(row["loss"]) for row in rows)
    m = WaveGlow(ck["config"])
    m.load_state_dict(ck["state_dict"])
    assert all(torch.isfinite(p).all() for p in m.parameters())
    # the zero rows trained: a new layer's residual/skip convolution is no longer zero
    assert m.WN[0].res_skip_layers[3].weight.abs().sum() > 0
    # before any step, the seeded model is the grown export: same loss on the same batch
    seeded = WaveGlow(grown["config"])
    from tts.train.trainer import _unfold_weight_norm
    seeded.load_state_dict(_unfold_weight_norm(seeded, {k: v.float() for k, v in grown["state_dict"].items()},
                                               tmp_path / "g.pt"))
    plain = WaveGlow(grown["config"], weight_norm=False)
    plain.load_state_dict({k: v.float() for k, v in grown["state_dict"].items()})
    torch.manual_seed(0)
    audio = torch.randn(2, 2048) * 0.1
    mel = torch.randn(2, 80, 8) - 5
    l1, l2 = waveglow_loss(seeded, mel, audio, 1.0)[0], waveglow_loss(plain, mel, audio, 1.0)[0]
    assert math.isfinite(float(l1.detach())) and abs(float(l1.detach()) - float(l2.detach())) < 1e-4
    r = train("waveglow", corpus_dir, tmp_path / "b", max_steps=6, init_from=tmp_path / "g.pt", **kw)
    assert (r.start_step, r.step) == (5, 6)          # resumed from its own checkpoint, same shape


def test_waveglow_compile_setting_wraps_the_loss_once_and_keeps_it(corpus_dir, monkeypatch):
    """``compile``: the loss function goes through ``torch.compile`` (static shapes) once per
    model; ``amp`` is off on CPU (bf16 autocast is for CUDA), so the loss is float32's."""
    from tts.train.tasks import make_task

    calls = []

    def fake_compile(fn, **kw):
        calls.append(kw)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    c = Corpus(corpus_dir)
    losses = {}
    for comp in (False, True):
        task = make_task("waveglow", dict(SETTINGS["waveglow"], compile=comp, amp=True), TINY["waveglow"])
        torch.manual_seed(0)
        model = task.build_model().train()
        pool = task.usable(c)
        rng = np.random.default_rng(0)
        dev = torch.device("cpu")
        first = task.train_step_loss(model, c, pool, rng, dev, 0)[0]
        second = task.train_step_loss(model, c, pool, rng, dev, 1)[0]
        losses[comp] = (float(first.detach()), float(second.detach()))
    assert calls == [{"dynamic": False}]          # once, for the compiled task only
    assert losses[True] == losses[False]
    assert all(np.isfinite(v) for v in losses[True])


def test_train_cli_reports_user_mistakes_in_one_line(tmp_path, capsys):
    from tts.train.__main__ import main
    rc = main(["train", "waveglow", "--corpus", str(tmp_path / "none"), "--out", str(tmp_path / "ck"),
               "--max-steps", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("tts.train: error: ") and "none" in err and "Traceback" not in err
    rc = main(["train", "waveglow", "--corpus", str(tmp_path), "--out", str(tmp_path / "ck"),
               "--settings", "{not json"])
    assert rc == 2 and "settings" in capsys.readouterr().err.lower()
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")     # a slice past the end of train.txt
    rc = main(["corpus", "--texts", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2 and "empty.txt: no 'id|text' lines" in err and not (tmp_path / "c").exists()


# -- WaveGlow on ground-truth-aligned (GTA) FastSpeech mels -------------------------


def test_aligned_segments_line_up_with_the_windows_own_mel(corpus_dir):
    """A window that starts on a frame gets the utterance's mel frames from that frame on, and
    those are the window's own mel (its inner frames: the edge frames of the window's own mel
    see the STFT's reflect padding instead of the neighbouring audio)."""
    from tts.models.stft import MelSpectrogram
    from tts.train.data import SILENT_LOG_MEL, aligned_segments, frames_for
    c = Corpus(corpus_dir)
    items = [c[i] for i in range(len(c))]
    audio, mel = aligned_segments([it.audio for it in items], [it.mel for it in items], 2048,
                                  np.random.default_rng(3))
    assert audio.shape == (8, 2048) and mel.shape == (8, 80, frames_for(2048)) == (8, 80, 9)
    with torch.no_grad():
        own = MelSpectrogram().eval()(audio)
    assert own.shape == mel.shape
    inner = slice(2, 7)   # frames whose 1024-sample window lies inside the 2048 samples
    torch.testing.assert_close(mel[:, :, inner], own[:, :, inner], atol=0.02, rtol=0)
    assert (mel[:, :, inner] - own[:, :, inner]).abs().max() < 0.02
    # past the end of an utterance: zero audio, silent mel
    short = np.full(700, 1000, np.int16)
    a, m = aligned_segments([short], [np.zeros((3, 80), np.float16)], 2048, np.random.default_rng(0))
    assert torch.all(a[0, :700] == 1000 / 32768) and torch.all(a[0, 700:] == 0)
    assert torch.all(m[0, :, :3] == 0) and torch.allclose(m[0, :, 3:], torch.tensor(SILENT_LOG_MEL))


def test_waveglow_trains_on_fastspeech_gta_mels(corpus_dir, fastspeech_file, tmp_path):
    """The ``gta`` setting: the mels the vocoder trains on are the FastSpeech's, run with the
    corpus durations (so they have the real mel's frames), windowed with the audio they belong
    to; the graphed (static) step equals the eager one; the loss falls."""
    from tts.checkpoints.fastspeech import load_fastspeech
    from tts.train import losses
    from tts.train.data import aligned_segments
    from tts.train.tasks import make_task
    fs_file = fastspeech_file
    settings = dict(SETTINGS["waveglow"], gta=str(fs_file))
    task = make_task("waveglow", settings, TINY["waveglow"])
    c = Corpus(corpus_dir)
    pool = task.usable(c)
    with pytest.raises(RuntimeError, match="prepare"):
        task.sample_batch(c, pool, np.random.default_rng(0))
    task.prepare(c, pool, torch.device("cpu"))
    fs = load_fastspeech(fs_file)
    with torch.no_grad():
        for i in pool:
            it = c[i]
            ref = losses.fastspeech_forward(fs, torch.from_numpy(it.ids)[None],
                                            torch.from_numpy(it.durations)[None], it.mel.shape[0]).mel[0]
            got = task._gta_mels[0][i]
            assert got.shape == it.mel.shape and got.dtype == np.float16
            torch.testing.assert_close(torch.from_numpy(got).float(), ref, atol=0.02, rtol=0.005)
            assert np.abs(got.astype(np.float32) - it.mel.astype(np.float32)).mean() > 0.1
    # a batch: the FastSpeech mel at the frames of the audio window
    audio, mel = task.sample_batch(c, pool, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    idx = [pool[int(j)] for j in rng.integers(0, len(pool), size=2)]
    assert (rng.random(2) < 1.0).all()
    a2, m2 = aligned_segments([c[i].audio for i in idx], [task._gta_mels[0][i] for i in idx], 2048, rng)
    assert torch.equal(audio, a2) and torch.equal(mel, m2)
    # gta_fraction 0: the corpus's own mels
    real = make_task("waveglow", dict(settings, gta_fraction=0.0), TINY["waveglow"])
    real.prepare(c, pool, torch.device("cpu"))
    _, m0 = real.sample_batch(c, pool, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    idx = [pool[int(j)] for j in rng.integers(0, len(pool), size=2)]
    rng.random(2)
    _, m3 = aligned_segments([c[i].audio for i in idx], [c[i].mel for i in idx], 2048, rng)
    assert torch.equal(m0, m3)
    kw = dict(settings=settings, model_config=TINY["waveglow"], log_every=1)
    train("waveglow", corpus_dir, tmp_path / "a", max_steps=8, graph="off", **kw)
    train("waveglow", corpus_dir, tmp_path / "b", max_steps=8, graph="on", **kw)
    la = [r["loss"] for r in read_log(tmp_path / "a" / "waveglow_log.csv")]
    lb = [r["loss"] for r in read_log(tmp_path / "b" / "waveglow_log.csv")]
    assert len(la) == 8 and la == pytest.approx(lb, rel=1e-5, abs=1e-6)
    assert np.mean(la[-3:]) < np.mean(la[:3])


def test_waveglow_gta_names_a_missing_fastspeech(corpus_dir, tmp_path):
    from tts.errors import TTSError
    with pytest.raises(TTSError, match="nope.pt"):
        train("waveglow", corpus_dir, tmp_path, max_steps=1, model_config=TINY["waveglow"],
              settings=dict(SETTINGS["waveglow"], gta=str(tmp_path / "nope.pt")))
    assert not (tmp_path / "waveglow_last.pt").exists()


def test_tacotron2_learns_fastspeech_gta_mels(corpus_dir, fastspeech_file, tmp_path):
    """Tacotron2's ``gta`` setting (knowledge distillation): each batch item's mel, its decoder
    inputs and targets, is the FastSpeech's GTA mel (fraction 1) or the corpus's (fraction 0);
    ids, durations and lengths (so the gate targets) stay the corpus's; the graphed step equals
    both the eager and the graphed step learn from such batches; a bad fraction and a missing
    file are named."""
    from tts.errors import TTSError
    from tts.train.data import acoustic_batch, bucketed_indices
    from tts.train.tasks import gta_mels, make_task
    fs_file = fastspeech_file
    settings = dict(SETTINGS["tacotron2"], gta=fs_file)
    task = make_task("tacotron2", settings, TINY["tacotron2"])
    c = Corpus(corpus_dir)
    pool = task.usable(c)
    with pytest.raises(RuntimeError, match="prepare"):
        task.sample_batch(c, pool, np.random.default_rng(0))
    task.prepare(c, pool, torch.device("cpu"))
    ref = gta_mels(fs_file, c, pool, torch.device("cpu"))
    assert all(ref[i] is not None and np.array_equal(task._gta_mels[0][i], ref[i]) for i in pool)
    for seed in range(4):
        b = task.sample_batch(c, pool, np.random.default_rng(seed))
        idx = bucketed_indices(task.sorted_pool(c, pool), 2, np.random.default_rng(seed))
        real = acoustic_batch(c, idx)
        assert torch.equal(b.ids, real.ids) and torch.equal(b.durations, real.durations)
        assert torch.equal(b.mel_lengths, real.mel_lengths)
        for k, i in enumerate(idx):
            t = int(real.mel_lengths[k])
            want = torch.from_numpy(ref[i].astype(np.float32))
            assert torch.equal(b.mel[k, :t], want) and not torch.equal(b.mel[k, :t], real.mel[k, :t])
            assert torch.all(b.mel[k, t:] == 0)
    own = make_task("tacotron2", dict(settings, gta_fraction=0.0), TINY["tacotron2"])
    own.prepare(c, pool, torch.device("cpu"))
    b0 = own.sample_batch(c, pool, np.random.default_rng(1))
    rng = np.random.default_rng(1)
    plain = make_task("tacotron2", SETTINGS["tacotron2"], TINY["tacotron2"])
    idx = plain.sample_batch(c, pool, rng)
    assert torch.equal(b0.mel, idx.mel) and torch.equal(b0.ids, idx.ids)
    with pytest.raises(ValueError, match="replacement mels"):
        acoustic_batch(c, [0], [np.zeros((3, 80), np.float16)])
    with pytest.raises(ValueError, match="gta_fraction"):
        make_task("tacotron2", dict(gta=fs_file, gta_fraction=2.0))
    kw = dict(settings=dict(settings, self_feed=0.5, graph_mel_multiple=16, graph_in_multiple=8),
              model_config=TINY["tacotron2"], log_every=1)
    ra = train("tacotron2", corpus_dir, tmp_path / "a", max_steps=4, graph="off", **kw)
    rb = train("tacotron2", corpus_dir, tmp_path / "b", max_steps=4, graph="on", **kw)
    la = [r["loss"] for r in read_log(tmp_path / "a" / "tacotron2_log.csv")]
    lb = [r["loss"] for r in read_log(tmp_path / "b" / "tacotron2_log.csv")]
    # (the two steps draw different dropout masks and pad differently: both learn)
    assert ra.step == rb.step == 4 and all(np.isfinite(la + lb))
    assert la[-1] < la[0] and lb[-1] < lb[0]
    with pytest.raises(TTSError, match="nope.pt"):
        train("tacotron2", corpus_dir, tmp_path / "c", max_steps=1, model_config=TINY["tacotron2"],
              settings=dict(settings, gta=str(tmp_path / "nope.pt")))
    assert not (tmp_path / "c" / "tacotron2_last.pt").exists()


def test_gta_mels_of_a_tacotron2_and_of_several_files(corpus_dir, fastspeech_file, tmp_path):
    """``gta_mels`` of a Tacotron2: its teacher-forced postnet output on the real mels (prenet
    dropout on, seeded: the same twice, and the caller's RNG left as it was), frame for frame
    with the corpus; ``gta`` as a list: each item's mel from one of the files, both drawn; a
    WaveGlow file is refused by name."""
    from tts.checkpoints import load_tacotron2
    from tts.train import losses
    from tts.train.data import acoustic_batch, sort_by_length
    from tts.train.export import export_acoustic
    from tts.train.tasks import gta_mels, make_task
    for kind in ("tacotron2", "waveglow"):
        train(kind, corpus_dir, tmp_path / kind, max_steps=2, settings=SETTINGS[kind],
              model_config=TINY[kind])
    export_acoustic("tacotron2", tmp_path / "tacotron2", tmp_path / "x")
    fs_file, t2_file = fastspeech_file, str(tmp_path / "x" / "tacotron2.pt")
    c = Corpus(corpus_dir)
    pool = list(range(len(c)))
    cpu = torch.device("cpu")
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    got = gta_mels(t2_file, c, pool, cpu)
    assert torch.equal(torch.random.get_rng_state(), before)
    again = gta_mels(t2_file, c, pool, cpu)
    order = sort_by_length(np.array([c[i].mel.shape[0] for i in pool]), pool)   # one batch of 8
    b = acoustic_batch(c, order)
    t2 = load_tacotron2(t2_file).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        ref = losses.tacotron2_forward(t2, b.ids, b.input_lengths,
                                       b.mel.transpose(1, 2)).mel_postnet.transpose(1, 2)
    for j, i in enumerate(order):
        t = c[i].mel.shape[0]
        assert got[i].shape == c[i].mel.shape and got[i].dtype == np.float16
        assert np.array_equal(got[i], again[i])
        torch.testing.assert_close(torch.from_numpy(got[i]).float(), ref[j, :t], atol=0.02, rtol=0.005)
    # gta_generation 3: the third self-fed generation, still frame for frame with the corpus
    third = gta_mels(t2_file, c, pool, cpu, generation=3)
    torch.manual_seed(0)
    with torch.no_grad():
        ref3 = losses.tacotron2_forward(t2, b.ids, b.input_lengths, b.mel.transpose(1, 2), self_feed=1.0,
                                        self_feed_passes=2).mel_postnet.transpose(1, 2)
    for j, i in enumerate(order):
        t = c[i].mel.shape[0]
        assert third[i].shape == c[i].mel.shape
        torch.testing.assert_close(torch.from_numpy(third[i]).float(), ref3[j, :t], atol=0.02, rtol=0.005)
    assert max(float(np.abs(third[i].astype(np.float32) - got[i].astype(np.float32)).max()) for i in pool) > 0.05
    task3 = make_task("waveglow", dict(SETTINGS["waveglow"], gta=t2_file, gta_generation=3), TINY["waveglow"])
    task3.prepare(c, pool, cpu)
    for i in pool:
        assert np.array_equal(task3._gta_mels[0][i], third[i])
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="gta_generation must be a whole number >= 1"):
            make_task("waveglow", dict(gta=t2_file, gta_generation=bad))
    # a list of files: each item's mel is one source's, and both sources are drawn
    task = make_task("tacotron2", dict(SETTINGS["tacotron2"], gta=[fs_file, t2_file]),
                     TINY["tacotron2"])
    task.prepare(c, pool, cpu)
    fs_mels = gta_mels(fs_file, c, pool, cpu)
    seen = set()
    for seed in range(6):
        idx = [int(i) for i in np.random.default_rng(seed).permutation(pool)[:4]]
        mels = task.pick_mels(c, idx, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        assert (rng.random(4) < 1.0).all()
        src = rng.integers(0, 2, size=4)
        for i, m, k in zip(idx, mels, src):
            assert np.array_equal(m, (fs_mels, got)[int(k)][i])
            seen.add(int(k))
    assert seen == {0, 1}
    export_acoustic("waveglow", tmp_path / "waveglow", tmp_path / "x")
    with pytest.raises(ValueError, match="FastSpeech or Tacotron2"):
        gta_mels(str(tmp_path / "x" / "waveglow.pt"), c, pool, cpu)


def test_dtw_warp_matches_a_brute_force_path_and_undoes_a_stretch():
    """``dtw``: the batched wavefront's paths cost what a plain O(NM) loop's best path costs
    (padding of shorter items never enters), and warping a mel stretched two-fold (with
    repeats) back onto the original's frames recovers it."""
    from tts.train.dtw import backtrack, dtw_moves, warp_onto
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(int(rng.integers(3, 25)), 5)).astype(np.float32) for _ in range(4)]
    ys = [rng.normal(size=(int(rng.integers(3, 25)), 5)).astype(np.float32) for _ in range(4)]
    xb = torch.zeros(4, max(len(a) for a in xs), 5)
    yb = torch.zeros(4, max(len(a) for a in ys), 5)
    for k in range(4):
        xb[k, :len(xs[k])], yb[k, :len(ys[k])] = torch.from_numpy(xs[k]), torch.from_numpy(ys[k])
    moves = dtw_moves(xb, yb).numpy()
    for k in range(4):
        x, y = xs[k].astype(np.float64), ys[k].astype(np.float64)
        cost = np.linalg.norm(x[:, None] - y[None], axis=-1)
        acc = np.full((len(x) + 1, len(y) + 1), np.inf)
        acc[0, 0] = 0.0
        for i in range(1, len(x) + 1):
            for j in range(1, len(y) + 1):
                acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
        pi, pj = backtrack(moves[k], len(x), len(y))
        assert (pi[0], pj[0], pi[-1], pj[-1]) == (0, 0, len(x) - 1, len(y) - 1)
        assert set(np.diff(pi)) <= {0, 1} and set(np.diff(pj)) <= {0, 1}
        assert ((np.diff(pi) + np.diff(pj)) > 0).all()
        assert cost[pi, pj].sum() == pytest.approx(acc[-1, -1], rel=1e-5)
    x = rng.normal(size=(40, 80)).astype(np.float32)
    stretched = np.repeat(x, 2, axis=0) + 0.01 * rng.normal(size=(80, 80)).astype(np.float32)
    back, same = warp_onto([x, x], [stretched, x])
    assert back.shape == x.shape and same.shape == x.shape
    assert float(np.abs(back - x).max()) < 0.05 and np.array_equal(same, x)
    with pytest.raises(ValueError, match="2 targets but 1 mels"):
        warp_onto([x, x], [x])


def test_gta_generation_free_warps_the_free_running_mel_onto_the_audio(corpus_dir, tmp_path,
                                                                         monkeypatch):
    """``gta_generation`` "free": each item's mel is the Tacotron2's free-running postnet mel
    (inference: its own length) warped onto the audio's frames; items whose gate never fired,
    or whose free mel is under half or over twice the audio's length, get none (the WaveGlow
    then reads the real mel). A Tacotron2 task refuses the setting by name."""
    from tts.models.tacotron2 import Tacotron2
    from tts.train.export import export_acoustic
    from tts.train.tasks import gta_mels, make_task
    train("tacotron2", corpus_dir, tmp_path / "t2", max_steps=2, settings=SETTINGS["tacotron2"],
          model_config=TINY["tacotron2"])
    export_acoustic("tacotron2", tmp_path / "t2", tmp_path / "x")
    t2_file = str(tmp_path / "x" / "tacotron2.pt")
    c = Corpus(corpus_dir)
    pool = list(range(len(c)))
    cpu = torch.device("cpu")
    # the real model, two steps trained: its gate fires at once or never, so no item is kept
    real = gta_mels(t2_file, c, pool, cpu, generation="free")
    assert real == [None] * len(c)
    # a stand-in free run: item k's mel stretched 1.5x (or 3x, for one item: dropped), + noise
    by_ids = {tuple(c[i].ids): i for i in pool}
    far = pool[3]
    calls = []

    def fake_infer(self, ids, lengths, *, max_decoder_steps=None, generator=None, **kw):
        items = [by_ids[tuple(ids[k, :int(lengths[k])].tolist())] for k in range(ids.shape[0])]
        calls.append((items, max_decoder_steps))
        mels = []
        for i in items:
            m = np.asarray(c[i].mel, np.float32)
            f = 3.0 if i == far else 1.5
            t = np.minimum((np.arange(int(len(m) * f)) / f).astype(int), len(m) - 1)
            mels.append(m[t] + 0.01 * np.random.default_rng(i).normal(size=(len(t), m.shape[1])))
        n = max(len(m) for m in mels)
        post = torch.zeros(len(mels), m.shape[1], n)
        for k, m in enumerate(mels):
            post[k, :, :len(m)] = torch.from_numpy(m.T.astype(np.float32))
        return SimpleNamespace(mel_postnet=post, mel_lengths=torch.tensor([len(m) for m in mels]))

    monkeypatch.setattr(Tacotron2, "infer", fake_infer)
    got = gta_mels(t2_file, c, pool, cpu, generation="free", batch_size=4)
    assert [len(items) for items, _ in calls] == [4, 4]   # length-sorted batches of 4
    assert sorted(i for items, _ in calls for i in items) == pool
    for items, limit in calls:   # up to twice the batch's longest audio, plus 20 frames
        assert limit == 2 * max(c[i].mel.shape[0] for i in items) + 20
    for i in pool:
        if i == far:
            assert got[i] is None
            continue
        assert got[i].shape == c[i].mel.shape and got[i].dtype == np.float16
        assert float(np.abs(got[i].astype(np.float32) - c[i].mel).mean()) < 0.02
    task = make_task("waveglow", dict(SETTINGS["waveglow"], gta=t2_file, gta_generation="free"),
                     TINY["waveglow"])
    task.prepare(c, pool, cpu)
    for i in pool:
        assert (task._gta_mels[0][i] is None) == (i == far)
    with pytest.raises(ValueError, match='"free" is for a vocoder'):
        make_task("tacotron2", dict(gta=t2_file, gta_generation="free"))
    with pytest.raises(ValueError, match='whole number >= 1 or "free"'):
        make_task("waveglow", dict(gta=t2_file, gta_generation="frei"))


def test_waveglow_sample_is_inference_with_gradients():
    """``losses.waveglow_sample``: the training model's inverse pass draws what ``infer`` draws
    from the same noise, and a loss on it reaches every coupling layer."""
    from tts.train import losses
    from tts.train.tasks import make_task
    torch.manual_seed(0)
    model = make_task("waveglow", {}, TINY["waveglow"]).build_model()
    for p in model.parameters():     # no zero-initialised end layer: a coupling that does something
        p.data.add_(0.01 * torch.randn_like(p))
    mel = torch.randn(2, 80, 12) - 5
    torch.manual_seed(7)
    a = losses.waveglow_sample(model, mel, 12 * 256, 0.8)
    inf = copy.deepcopy(model).remove_weight_norm().prepare_inference()
    torch.manual_seed(7)
    b = inf.infer(mel, sigma=0.8)
    assert a.shape == b.shape == (2, 12 * 256)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    a.square().mean().backward()
    for k in range(model.n_flows):
        assert model.WN[k].end.weight.grad.abs().sum() > 0
        assert model.convinv[k].conv.weight.grad.abs().sum() > 0


def test_waveglow_spectral_term_in_the_graphed_and_eager_step(corpus_dir, tmp_path):
    """The ``spec_weight`` setting adds the spectral loss of a drawn sample: logged as ``spec``
    beside the likelihood ``ml``, ``loss = ml + spec_weight * spec``; the static (graphed) step
    equals the eager one."""
    settings = dict(SETTINGS["waveglow"], spec_weight=5.0, spec_sigma=0.9)
    kw = dict(settings=settings, model_config=TINY["waveglow"], log_every=1)
    train("waveglow", corpus_dir, tmp_path / "a", max_steps=6, graph="off", **kw)
    train("waveglow", corpus_dir, tmp_path / "b", max_steps=6, graph="on", **kw)
    ra, rb = read_log(tmp_path / "a" / "waveglow_log.csv"), read_log(tmp_path / "b" / "waveglow_log.csv")
    assert len(ra) == 6 and set(ra[0]) == {"step", "seconds", "loss", "ml", "spec"}
    for r in ra:
        assert r["loss"] == pytest.approx(r["ml"] + 5.0 * r["spec"], rel=1e-5)
        assert 0 < r["spec"] < 20
    assert [r["loss"] for r in ra] == pytest.approx([r["loss"] for r in rb], rel=1e-5, abs=1e-6)
