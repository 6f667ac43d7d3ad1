"""The static-shape Tacotron2 training step (tts/train/t2_static.py): padding to a bucket changes
neither the loss nor the gradients; the graph-step object's eager fallback trains like the eager
step. (The CUDA-graph capture itself runs on a GPU.)"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tts.models.tacotron2 import Tacotron2, Tacotron2Config
from tts.train import losses
from tts.train.data import AcousticBatch
from tts.train.t2_static import (Tacotron2GraphStep, bilstm_unpacked, make_optimizer, pad_batch,
                                 round_up, static_loss)
from tts.train.tasks import MODEL_CONFIGS, make_task

TINY = dict(symbols_embedding_dim=32, encoder_embedding_dim=32, encoder_n_convolutions=2,
            attention_rnn_dim=32, attention_dim=16, attention_location_n_filters=4,
            attention_location_kernel_size=5, decoder_rnn_dim=32, prenet_dim=16,
            postnet_embedding_dim=16, postnet_n_convolutions=3, max_decoder_steps=60)


def _model(seed: int = 0) -> Tacotron2:
    torch.manual_seed(seed)
    cfg = dict(MODEL_CONFIGS["tacotron2"], **TINY)
    m = Tacotron2(Tacotron2Config.from_dict(cfg))
    with torch.no_grad():  # non-trivial BatchNorm state, so that the statistics matter
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return m.train()


def _batch(lengths: list[tuple[int, int]], seed: int = 0) -> AcousticBatch:
    """Padded to its own longest item; ``lengths``: (symbols, frames) per item."""
    g = torch.Generator().manual_seed(seed)
    b, t_in, t = len(lengths), max(li for li, _ in lengths), max(lm for _, lm in lengths)
    ids = torch.zeros(b, t_in, dtype=torch.int64)
    dur = torch.zeros(b, t_in, dtype=torch.int64)
    mel = torch.zeros(b, t, 80)
    for k, (li, lm) in enumerate(lengths):
        ids[k, :li] = torch.randint(1, 148, (li,), generator=g)
        d = torch.full((li,), lm // li, dtype=torch.int64)
        d[: lm - int(d.sum())] += 1
        dur[k, :li] = d
        mel[k, :lm] = torch.randn(lm, 80, generator=g) - 5.0
    return AcousticBatch(ids, torch.tensor([li for li, _ in lengths]), dur, mel,
                         torch.tensor([lm for _, lm in lengths]))


@pytest.fixture
def no_dropout(monkeypatch):
    monkeypatch.setattr(F, "dropout", lambda x, p=0.5, training=True, inplace=False: x)


def _eager_loss(model, b, gw):
    mel = b.mel.transpose(1, 2)
    out = losses.tacotron2_forward(model, b.ids, b.input_lengths, mel)
    prior = losses.duration_prior(b.durations, b.input_lengths, mel.shape[2])
    return losses.tacotron2_loss(out, mel, b.mel_lengths, prior, b.input_lengths, gw)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("lstm_impl", ["cudnn", "loop"])
def test_padded_batch_has_the_eager_loss_gradients_and_bn_stats(no_dropout, lstm_impl):
    torch.set_num_threads(2)
    b = _batch([(7, 23), (11, 30), (4, 12)])
    m_eager, m_static = _model(), _model()
    loss_e, logs_e = _eager_loss(m_eager, b, 0.7)
    loss_e.backward()
    padded = pad_batch(b, 32, 64)
    assert padded.ids.shape == (3, 32) and padded.mel.shape == (3, 64, 80)
    loss_s, logs_s = static_loss(m_static, padded, torch.tensor(0.7), lstm_impl)
    loss_s.backward()
    assert float(loss_s.detach()) == pytest.approx(float(loss_e.detach()), rel=1e-5)
    for k in logs_e:
        assert float(logs_s[k]) == pytest.approx(float(logs_e[k]), rel=1e-5, abs=1e-7), k
    ge, gs = _grads(m_eager), _grads(m_static)
    for n in ge:
        torch.testing.assert_close(gs[n], ge[n], rtol=1e-4, atol=1e-6, msg=n)
    se, ss = m_eager.state_dict(), m_static.state_dict()
    for n in se:  # BatchNorm running statistics too
        torch.testing.assert_close(ss[n], se[n], rtol=1e-5, atol=1e-7, msg=n)


def test_more_padding_changes_nothing(no_dropout):
    b = _batch([(9, 40), (5, 17)], seed=3)
    res = []
    for t_in, t in ((9, 40), (32, 64), (64, 128)):
        m = _model(1)
        loss, _ = static_loss(m, pad_batch(b, t_in, t), 1.0)
        loss.backward()
        res.append((float(loss.detach()), _grads(m)))
    for loss, g in res[1:]:
        assert loss == pytest.approx(res[0][0], rel=1e-5)
        for n in g:
            torch.testing.assert_close(g[n], res[0][1][n], rtol=1e-4, atol=1e-6, msg=n)


def test_unpacked_bilstm_equals_the_packed_one():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(6, 5, 1, batch_first=True, bidirectional=True)
    x = torch.randn(3, 9, 6)
    lengths = torch.tensor([9, 4, 1])
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    ref, _ = torch.nn.utils.rnn.pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=9)
    for impl in ("cudnn", "loop"):
        torch.testing.assert_close(bilstm_unpacked(lstm, x, lengths, impl), ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        bilstm_unpacked(lstm, x, lengths, "nope")


def test_bucket_table_and_padding_limits():
    mel = np.array([10, 60, 64, 65, 130, 900])
    ids = np.array([3, 40, 20, 33, 50, 70])
    table = Tacotron2GraphStep.t_in_for_buckets(mel, ids, 64, 32)
    assert table == {64: 64, 128: 64, 192: 64, 960: 96}
    assert round_up(65, 64) == 128 and round_up(64, 64) == 64
    with pytest.raises(ValueError):
        pad_batch(_batch([(9, 40)]), 8, 64)


def test_graph_step_eager_fallback_trains_like_the_eager_step(no_dropout):
    """capture=False: the same static buffers and step function as the CUDA graph; five steps
    over batches of changing shapes match the eager trainer's arithmetic."""
    task = make_task("tacotron2", dict(lr=3e-3, warmup=0), TINY)
    m_e, m_s = _model(2), _model(2)
    for m in (m_e, m_s):
        # a convolution bias before BatchNorm has rounding noise for gradient, which Adam scales
        # up to full-size steps that differ between any two summation orders: frozen here
        for n, p in m.named_parameters():
            if n.endswith(".0.conv.bias"):
                p.requires_grad_(False)
    opt_e = torch.optim.Adam(m_e.parameters(), lr=3e-3, weight_decay=1e-6)
    opt_s = make_optimizer(m_s, task.settings, torch.device("cpu"), capturable=False)
    st = Tacotron2GraphStep(m_s, opt_s, torch.device("cpu"), grad_clip=1.0, use_guide=True,
                            capture=False, mel_multiple=16, in_multiple=8)
    batches = [_batch([(5, 20), (8, 31)], s) for s in range(3)] + [_batch([(3, 9), (4, 14)], 9)] * 2
    for i, b in enumerate(batches):
        loss, logs = _eager_loss(m_e, b, 0.5)
        opt_e.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(m_e.parameters(), 1.0)
        opt_e.step()
        out = st.step(b, 3e-3, 0.5)
        assert float(out["loss"]) == pytest.approx(float(loss.detach()), rel=1e-4), i
        assert float(out["grad_norm"]) == pytest.approx(float(gn), rel=1e-4), i
    assert set(st.buffers) == {(8, 32), (8, 16)} and st.n_eager == 5 and not st.graphs
    for n, p in m_e.state_dict().items():
        torch.testing.assert_close(m_s.state_dict()[n], p, rtol=1e-3, atol=1e-5, msg=n)


def test_capture_needs_cuda():
    m = _model()
    opt = torch.optim.Adam(m.parameters())
    with pytest.raises(ValueError):
        Tacotron2GraphStep(m, opt, torch.device("cpu"), grad_clip=1.0, use_guide=True, capture=True)


def test_optimizer_state_saved_portable():
    from tts.train.t2_static import portable_optimizer_state
    m = _model()
    opt = torch.optim.Adam(m.parameters(), lr=torch.tensor(1e-3))
    sd = portable_optimizer_state(opt.state_dict())
    assert isinstance(sd["param_groups"][0]["lr"], float)


def test_restore_capturable_after_loading_an_eager_state():
    from tts.train.t2_static import restore_capturable
    m = _model()
    eager = torch.optim.Adam(m.parameters(), lr=1e-3)
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    eager.step()
    opt = torch.optim.Adam(m.parameters(), lr=torch.tensor(1e-3), foreach=False)
    lr = opt.param_groups[0]["lr"]
    opt.load_state_dict(eager.state_dict())
    restore_capturable(opt, lr)
    g = opt.param_groups[0]
    assert g["lr"] is lr and g["capturable"] is True
    assert all(opt.state[p]["step"].dtype == torch.float32 for p in g["params"])


def test_self_feed_one_feeds_the_first_pass_predictions(no_dropout):
    """self_feed=1: every input frame is the gradient-free teacher-forced pass's prediction."""
    b = _batch([(7, 23), (11, 30)], seed=5)
    m = _model(3)
    mel = b.mel.transpose(1, 2)
    memory = m.encode(b.ids, b.input_lengths)
    first, _, _ = losses.teacher_forced_decode(m.decoder, memory, b.input_lengths, mel)
    want = losses.teacher_forced_decode(m.decoder, memory, b.input_lengths, first.detach())
    got = losses.teacher_forced_decode(m.decoder, memory, b.input_lengths, mel, self_feed=1.0)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w)
    plain = losses.teacher_forced_decode(m.decoder, memory, b.input_lengths, mel, self_feed=0.0)
    assert not torch.allclose(plain[0], got[0])  # the inputs did change
    got[0].sum().backward()  # gradients flow through the second pass only
    assert m.decoder.linear_projection.linear_layer.weight.grad is not None


def test_self_feed_half_replaces_about_half_of_the_frames(monkeypatch):
    seen = []
    real_where = torch.where
    monkeypatch.setattr(torch, "where", lambda c, *a: seen.append(c) or real_where(c, *a))
    b = _batch([(20, 400), (20, 400)], seed=6)
    m = _model(4)
    torch.manual_seed(0)
    with torch.no_grad():
        losses.tacotron2_forward(m, b.ids, b.input_lengths, b.mel.transpose(1, 2), self_feed=0.5)
    masks = [c for c in seen if c.shape == (2, 1, 400)]
    assert len(masks) == 1 and 0.4 < float(masks[0].float().mean()) < 0.6


def test_self_feed_static_step_equals_the_eager_one(no_dropout):
    b = _batch([(7, 23), (11, 30), (4, 12)], seed=7)
    m_eager, m_static = _model(5), _model(5)
    mel = b.mel.transpose(1, 2)
    out = losses.tacotron2_forward(m_eager, b.ids, b.input_lengths, mel, self_feed=1.0)
    prior = losses.duration_prior(b.durations, b.input_lengths, mel.shape[2])
    loss_e, _ = losses.tacotron2_loss(out, mel, b.mel_lengths, prior, b.input_lengths, 0.7)
    loss_e.backward()
    loss_s, _ = static_loss(m_static, pad_batch(b, 32, 64), torch.tensor(0.7), "cudnn", self_feed=1.0)
    loss_s.backward()
    assert float(loss_s.detach()) == pytest.approx(float(loss_e.detach()), rel=1e-5)
    ge, gs = _grads(m_eager), _grads(m_static)
    for n in ge:
        torch.testing.assert_close(gs[n], ge[n], rtol=1e-4, atol=1e-6, msg=n)


def test_self_feed_setting_is_checked_and_reaches_the_graph_step():
    with pytest.raises(ValueError, match="self_feed"):
        make_task("tacotron2", dict(self_feed=1.5), TINY)
    task = make_task("tacotron2", dict(self_feed=0.25), TINY)
    m = _model(0)
    opt = make_optimizer(m, task.settings, torch.device("cpu"), capturable=False)
    item = SimpleNamespace(mel=np.zeros((40, 80), np.float32), ids=np.ones(9, np.int64))
    corpus = SimpleNamespace(items=[item, item])
    st = task.make_graph_step(m, opt, corpus, [0, 1], torch.device("cpu"), capture=False)
    assert st.self_feed == 0.25


def test_self_feed_passes_feed_the_kth_pass_predictions(no_dropout):
    """self_feed_passes=2: the inputs are the predictions of a pass that was fed the first's."""
    b = _batch([(7, 23), (11, 30)], seed=8)
    m = _model(6)
    mel = b.mel.transpose(1, 2)
    memory = m.encode(b.ids, b.input_lengths)
    with torch.no_grad():
        first, _, _ = losses.teacher_forced_decode(m.decoder, memory, b.input_lengths, mel)
        second, _, _ = losses.teacher_forced_decode(m.decoder, memory, b.input_lengths, first)
    want = losses.teacher_forced_decode(m.decoder, memory, b.input_lengths, second)
    got = losses.teacher_forced_decode(m.decoder, memory, b.input_lengths, mel, self_feed=1.0,
                                       self_feed_passes=2)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w)
    one = losses.teacher_forced_decode(m.decoder, memory, b.input_lengths, mel, self_feed=1.0)
    assert not torch.allclose(one[0], got[0])  # a second generation of inputs is a different one
    with pytest.raises(ValueError, match="self_feed_passes"):
        losses.teacher_forced_decode(m.decoder, memory, b.input_lengths, mel, 1.0, 0)


def test_self_feed_passes_static_step_equals_the_eager_one(no_dropout):
    b = _batch([(7, 23), (11, 30), (4, 12)], seed=9)
    m_eager, m_static = _model(7), _model(7)
    mel = b.mel.transpose(1, 2)
    out = losses.tacotron2_forward(m_eager, b.ids, b.input_lengths, mel, self_feed=1.0, self_feed_passes=3)
    prior = losses.duration_prior(b.durations, b.input_lengths, mel.shape[2])
    loss_e, _ = losses.tacotron2_loss(out, mel, b.mel_lengths, prior, b.input_lengths, 0.7)
    loss_e.backward()
    loss_s, _ = static_loss(m_static, pad_batch(b, 32, 64), torch.tensor(0.7), "cudnn", self_feed=1.0,
                            self_feed_passes=3)
    loss_s.backward()
    assert float(loss_s.detach()) == pytest.approx(float(loss_e.detach()), rel=1e-5)
    ge, gs = _grads(m_eager), _grads(m_static)
    for n in ge:  # float32 round-off through four decoder loops: a few 1e-6 on gradients near 1
        torch.testing.assert_close(gs[n], ge[n], rtol=1e-4, atol=1e-5, msg=n)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_self_feed_passes_setting_is_checked(bad):
    with pytest.raises(ValueError, match="self_feed_passes"):
        make_task("tacotron2", dict(self_feed=0.5, self_feed_passes=bad), TINY)


def test_self_feed_passes_reach_the_graph_step_and_default_to_one():
    m = _model(0)
    item = SimpleNamespace(mel=np.zeros((40, 80), np.float32), ids=np.ones(9, np.int64))
    corpus = SimpleNamespace(items=[item, item])
    for overrides, want in ((dict(self_feed=0.5), 1), (dict(self_feed=0.5, self_feed_passes=2), 2)):
        task = make_task("tacotron2", overrides, TINY)
        opt = make_optimizer(m, task.settings, torch.device("cpu"), capturable=False)
        st = task.make_graph_step(m, opt, corpus, [0, 1], torch.device("cpu"), capture=False)
        assert st.self_feed_passes == want
