"""The Tacotron2 stop rules (``stop_rule``: ``gate``, NVIDIA's; ``attention``, ``tts.models.tacotron2.StopRule``).

CPU: the eager decoder, the engine's decoder (``Tacotron2Engine.decode``, PyTorch twin, no graphs),
the slot decoder and the server's row decoders all end an item on the same step; an item ends on
its own step in any batch; the shipped ``slt-tacotron2`` no longer runs on where its gate stays
closed (line 7 of ``phrases/phrase_8_128.txt``, seed 1: 2 000 steps with the gate rule) and keeps
the very same frames where the gate fires. GPU versions are in ``tests/test_engines_gpu.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import tts.models.tacotron2 as t2mod
from tts.engines.tacotron2 import Tacotron2Engine
from tts.errors import InvalidInputError
from tts.models.tacotron2 import ATTENTION_STOP, STOP_RULES, StopRule, step_limit
from tts.options import REFERENCE_DEFAULTS, SynthesisOptions

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "reference"
PHRASES = ROOT / "phrases" / "phrase_8_128.txt"
STOP_RULE_SCRIPT = ROOT / "recipes" / "bundled_voice" / "stop_rule.py"
DET = dict(prenet_dropout=0.0, sigma=0.0)
#: A gate threshold no random-weight gate reaches: the attention rule (or the budget) ends items.
NEVER = 0.9999999


def _tiny():
    from tts.cli.bench import random_models

    t2, _, _ = random_models("tacotron2", "tiny", 0)
    return t2


def _ids(n: int, seed: int) -> torch.Tensor:
    return torch.randint(1, 148, (1, n), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- constants, options

def test_constants_and_step_budget():
    assert STOP_RULES == ("gate", "attention")
    r = ATTENTION_STOP
    assert (r.end_mass, r.end_frames, r.min_steps, r.steps_per_symbol, r.margin) == (1.0, 50, 120, 10.0, 120)
    assert r.limit(128, 2000) == 1400 and r.limit(1, 2000) == 130 and r.limit(500, 2000) == 2000
    assert r.limits(torch.tensor([128, 1, 500]), 2000).tolist() == [1400, 130, 2000]
    assert step_limit("gate", 128, 2000) == 2000 and step_limit("attention", 128, 2000) == 1400
    assert step_limit("attention", 128, 80) == 80


def test_option_plumbing():
    import tts.options as options
    from tts.cli.common import options_from_args
    from tts.cli.synth import build_parser
    from tts.voice import load_voice

    assert options.STOP_RULES == STOP_RULES
    assert REFERENCE_DEFAULTS.stop_rule == "attention"
    assert SynthesisOptions(stop_rule="gate").stop_rule == "gate"
    with pytest.raises(InvalidInputError) as e:
        SynthesisOptions(stop_rule="never")
    assert e.value.field == "stop_rule"
    assert load_voice("slt-tacotron2").defaults.stop_rule == "attention"
    args = build_parser().parse_args(["x.txt", "--out", "o", "--stop-rule", "gate"])
    assert options_from_args(args).stop_rule == "gate"
    with pytest.raises(InvalidInputError, match="--stop-rule"):
        options_from_args(build_parser().parse_args(["x.txt", "--out", "o", "--stop-rule", "sometimes"]))
    assert "--stop-rule gate|attention" in build_parser().format_help()
    t2 = _tiny()
    with pytest.raises(InvalidInputError) as e:
        t2.infer(_ids(5, 0), torch.tensor([5]), stop_rule="sometimes")
    assert e.value.field == "stop_rule"


# ----------------------------------------------------------------------------- eager and engine decoders

def test_gate_rule_is_the_default_of_the_model_and_unchanged():
    t2 = _tiny()
    ids = _ids(12, 1)
    a = t2.infer(ids, torch.tensor([12]), prenet_dropout=0.0, max_decoder_steps=300, gate_threshold=NEVER)
    b = t2.infer(ids, torch.tensor([12]), prenet_dropout=0.0, max_decoder_steps=300, gate_threshold=NEVER,
                 stop_rule="gate")
    assert int(a.mel_lengths[0]) == int(b.mel_lengths[0]) == 300 and torch.equal(a.mel, b.mel)


def test_attention_rule_ends_where_the_count_reaches_end_frames_and_keeps_the_gate_frames():
    """The random model never fires its gate (threshold NEVER): the attention rule ends each item
    on the step where its last symbol's cumulative attention has been >= 1 for 50 steps (not before
    step 120); the frames up to there are the gate rule's."""
    t2 = _tiny()
    for n in (30, 100, 170):
        ids = _ids(n, n)
        g = t2.infer(ids, torch.tensor([n]), prenet_dropout=0.0, max_decoder_steps=600, gate_threshold=NEVER)
        a = t2.infer(ids, torch.tensor([n]), prenet_dropout=0.0, max_decoder_steps=600, gate_threshold=NEVER,
                     stop_rule="attention")
        cum = g.alignments[0, :, n - 1].cumsum(0)
        first = int((cum >= 1.0).nonzero()[0])
        want = max(first + ATTENTION_STOP.end_frames - 1, ATTENTION_STOP.min_steps - 1)
        assert int(g.mel_lengths[0]) == 600
        assert int(a.mel_lengths[0]) == want < ATTENTION_STOP.limit(n, 600), n
        assert torch.equal(a.mel, g.mel[..., :want + 1])


def _memory(t2, rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row encoded alone, 0-padded (as the synthesizer batches pieces), and the lengths."""
    mem = [t2.encode(r, torch.tensor([r.shape[1]]))[0] for r in rows]
    return torch.nn.utils.rnn.pad_sequence(mem, batch_first=True), torch.tensor([r.shape[1] for r in rows])


def test_items_end_alone_as_in_a_batch_and_the_engine_ends_them_on_the_same_steps():
    t2 = _tiny()
    rows = [_ids(30, 1), _ids(100, 2), _ids(170, 3)]
    memory, lengths = _memory(t2, rows)
    kw = dict(prenet_dropout=0.0, max_decoder_steps=600, gate_threshold=NEVER, stop_rule="attention")
    with torch.no_grad():
        batch = t2.decoder.infer(memory, lengths, **kw)
        alone = [t2.decoder.infer(memory[b:b + 1, :n], lengths[b:b + 1], **kw) for b, n in enumerate(lengths)]
    assert batch.mel_lengths.tolist() == [int(o.mel_lengths[0]) for o in alone]
    assert len(set(batch.mel_lengths.tolist())) == 3               # three different steps
    for b, o in enumerate(alone):
        n = int(o.mel_lengths[0]) + 1
        assert float((batch.mel[b, :, :n] - o.mel[0, :, :n]).abs().max()) < 1e-5
    eng = Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch", steps_per_replay=4)
    e = eng.decode(memory, lengths, **kw)
    assert e.mel_lengths.tolist() == batch.mel_lengths.tolist() and e.mel.shape == batch.mel.shape
    assert float((e.mel - batch.mel).abs().max()) < 1e-4


def attention_never_ends(monkeypatch) -> None:
    """``end_mass`` out of reach, in every module that holds the rule (the eager decoder's, the
    engines' kernels' and the slot decoder's)."""
    from tts.engines import slot_decoder, tacotron2_step
    rule = dataclasses.replace(ATTENTION_STOP, end_mass=1e9)
    for mod in (t2mod, tacotron2_step, slot_decoder):
        monkeypatch.setattr(mod, "ATTENTION_STOP", rule)


def test_step_budget_ends_items_whose_attention_never_ends(monkeypatch):
    """With an attention that never counts (end_mass out of reach), items end at their budget
    (ceil(10 n) + 120), alone or batched, eager or engine; the batch is as long as its longest budget."""
    t2 = _tiny()
    attention_never_ends(monkeypatch)
    rows = [_ids(3, 1), _ids(9, 2)]
    memory, lengths = _memory(t2, rows)
    kw = dict(prenet_dropout=0.0, max_decoder_steps=600, gate_threshold=NEVER, stop_rule="attention")
    with torch.no_grad():
        batch = t2.decoder.infer(memory, lengths, **kw)
        alone = t2.decoder.infer(memory[:1, :3], lengths[:1], **kw)
    assert batch.mel_lengths.tolist() == [150, 210] and batch.mel.shape[-1] == 210
    assert alone.mel_lengths.tolist() == [150] and alone.mel.shape[-1] == 150
    eng = Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch", steps_per_replay=4)
    e = eng.decode(memory, lengths, **kw)
    assert e.mel_lengths.tolist() == [150, 210] and e.mel.shape[-1] == 210
    assert eng.decode(memory[:1, :3], lengths[:1], **kw).mel.shape[-1] == 150


def test_the_gate_still_ends_items_first():
    t2 = _tiny()
    with torch.no_grad():
        t2.decoder.gate_layer.linear_layer.bias.fill_(50.0)        # fires on the first step
    a = t2.infer(_ids(40, 5), torch.tensor([40]), prenet_dropout=0.0, stop_rule="attention")
    assert a.mel_lengths.tolist() == [0] and a.mel.shape[-1] == 1


# ----------------------------------------------------------------------------- slot decoder, server rows

def test_slot_decoder_stops_rows_on_the_eager_step():
    """Rows of stop rule ``attention`` report ``stop`` on the step at which the eager decoder ends
    them alone, whenever they joined (counts are per slot); a row of stop rule ``gate`` beside them
    never stops (its gate never fires)."""
    t2 = _tiny()
    eng = Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch", steps_per_replay=2)
    sd = eng.slots(4, 100, steps_per_replay=7)
    texts = {"a": _ids(30, 1), "b": _ids(100, 2), "g": _ids(30, 1)}
    want = {k: int(t2.infer(v, torch.tensor([v.shape[1]]), prenet_dropout=0.0, max_decoder_steps=600,
                            gate_threshold=NEVER, stop_rule="attention").mel_lengths[0]) for k, v in texts.items()}
    slot, got = {}, {}
    for name, ids in texts.items():
        s = sd.free_slots()[0]
        sd.join(s, t2.encode(ids, torch.tensor([ids.shape[1]])), ids.shape[1], gate_threshold=NEVER,
                stop_rule="gate" if name == "g" else "attention")
        slot[name] = s
        if name == "a":                       # b and g join 7 steps after a
            sd.run(0.0)
    for _ in range(60):
        before = list(sd.steps)
        out = sd.run(0.0)
        for name, s in slot.items():
            if name not in got and out.stop[s] is not None:
                got[name] = before[s] + out.stop[s]          # steps before the stop step: mel_lengths
    assert sd.steps[slot["a"]] == sd.steps[slot["b"]] + 7
    assert "g" not in got
    assert got == {"a": want["a"], "b": want["b"]} and want["a"] != want["b"]


@pytest.fixture(scope="module")
def synth():
    from tts.synthesizer import Synthesizer
    from tts.voice import Voice

    voice = Voice.from_checkpoints(tacotron2=FIXTURES / "tacotron2/checkpoint_Tacotron2_current_1gpu.pt",
                                   waveglow=FIXTURES / "waveglow/checkpoint_WaveGlow_ngc_style_ddp.pt", name="t2")
    return Synthesizer(voice, max_batch=16)


@pytest.mark.parametrize("decoder", [{"decoder": "eager"}, {"decoder": "slots", "steps_per_replay": 4}])
def test_server_rows_end_where_the_synthesizer_ends_them(synth, decoder):
    """The reference fixture model with its gate held closed: the attention rule ends the piece
    before its 400-step limit, on the same step in the scheduler (eager rows, slot rows) as in
    the synthesizer; with the gate rule it runs to the limit."""
    from tts.server.scheduler import TacotronScheduler

    text = "A much longer sentence that should take the decoder many more steps to finish speaking."
    opts = SynthesisOptions(gate_threshold=NEVER, max_decoder_steps=400, stop_rule="attention", **DET)
    want = synth.synthesize(text, opts)
    assert want.hit_max_steps == 0 and 256 * 120 <= len(want.audio) < 256 * 400
    gate = synth.synthesize(text, dataclasses.replace(opts, stop_rule="gate"))
    assert gate.hit_max_steps == 1 and len(gate.audio) == 256 * 400
    sched = TacotronScheduler(synth, max_rows=4, **decoder)
    sched.start()
    try:
        got = asyncio.run(sched.synthesize(text, opts))
    finally:
        sched.close()
    assert len(got.result.audio) == len(want.audio)
    assert np.abs(got.result.audio - want.audio).max() < 1e-4


# ----------------------------------------------------------------------------- the shipped voice

@pytest.fixture(scope="module")
def shipped():
    from tts.synthesizer import Synthesizer
    from tts.voice import load_voice

    return Synthesizer(load_voice("slt-tacotron2"), device="cpu")


def _frames(synth, text: str, **kw) -> torch.Tensor:
    (res,) = synth.acoustic([text], SynthesisOptions(**kw))
    ((mel, _),) = res.pieces
    return mel


def test_shipped_voice_run_on_is_cut_after_the_text(shipped):
    """Line 7 of phrase_8_128.txt at seed 1: the gate never fires (2 000 steps, 23 s); the
    attention rule ends it within 6 steps per symbol (the corpus: 4.5-7.5; its other seeds stop
    at 612-654 of its 128 symbols)."""
    line = PHRASES.read_text().splitlines()[6]
    n = len(shipped.plan(line).pieces[0][1])
    assert n == 128
    gate = _frames(shipped, line, seed=1, stop_rule="gate")
    assert gate.shape[-1] == 2000
    att = _frames(shipped, line, seed=1)                          # the voice's default: attention
    assert att.shape[-1] <= 6 * n and att.shape[-1] < 700
    assert torch.equal(att, _frames(shipped, line, seed=1, stop_rule="attention"))


@pytest.mark.parametrize("line,seed", [(1, 0), (7, 0), (8, 3)])
def test_shipped_voice_normal_lines_keep_their_frames(shipped, line, seed):
    text = PHRASES.read_text().splitlines()[line - 1]
    gate = _frames(shipped, text, seed=seed, stop_rule="gate")
    att = _frames(shipped, text, seed=seed, stop_rule="attention")
    assert gate.shape[-1] < 800 and torch.equal(gate, att)


# ----------------------------------------------------------------------------- GPU (-m gpu)

def _cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return torch.device("cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_gpu_graph_engine_ends_items_on_the_eager_steps(backend, monkeypatch):
    """``Tacotron2Engine.decode`` on CUDA (graphs, fp32) ends every item on the step the CPU eager
    decoder ends it under the attention rule: by attention (three lengths), then by budget."""
    dev = _cuda()
    t2 = _tiny()
    rows = [_ids(30, 1), _ids(100, 2), _ids(170, 3)]
    memory, lengths = _memory(t2, rows)
    kw = dict(prenet_dropout=0.0, max_decoder_steps=600, gate_threshold=NEVER, stop_rule="attention")
    with torch.no_grad():
        want = t2.decoder.infer(memory, lengths, **kw)
    eng = Tacotron2Engine(t2, device=dev, precision="fp32", backend=backend)
    got = eng.decode(memory.to(dev), lengths.to(dev), **kw)
    assert got.mel_lengths.cpu().tolist() == want.mel_lengths.tolist()
    assert got.mel.shape == want.mel.shape
    assert float((got.mel.cpu() - want.mel).abs().max()) < 1e-3
    attention_never_ends(monkeypatch)
    eng = Tacotron2Engine(t2, device=dev, precision="fp32", backend=backend)     # graphs captured anew
    got = eng.decode(memory[:2, :100].to(dev), lengths[:2].to(dev), **kw)
    assert got.mel_lengths.cpu().tolist() == [420, 600] and got.mel.shape[-1] == 600


@pytest.mark.gpu
def test_gpu_slot_decoder_stops_rows_on_the_eager_step():
    dev = _cuda()
    t2 = _tiny()
    eng = Tacotron2Engine(t2, device=dev, precision="fp32", backend="triton")
    sd = eng.slots(4, 100, steps_per_replay=16)
    texts = {"a": _ids(30, 1), "b": _ids(100, 2)}
    kw = dict(prenet_dropout=0.0, max_decoder_steps=600, gate_threshold=NEVER, stop_rule="attention")
    want = {k: int(t2.infer(v, torch.tensor([v.shape[1]]), **kw).mel_lengths[0]) for k, v in texts.items()}
    slot, got = {}, {}
    for name, ids in texts.items():
        s = sd.free_slots()[0]
        sd.join(s, t2.encode(ids, torch.tensor([ids.shape[1]])), ids.shape[1], gate_threshold=NEVER,
                stop_rule="attention")
        slot[name] = s
        if name == "a":
            sd.run(0.0)
    for _ in range(30):
        before = list(sd.steps)
        out = sd.run(0.0)
        for name, s in slot.items():
            if name not in got and out.stop[s] is not None:
                got[name] = before[s] + out.stop[s]
    assert got == want


@pytest.mark.gpu
def test_gpu_shipped_voice_run_on_is_cut_and_normal_lines_keep_their_length():
    """On the GPU engines (fp32) line 7 of phrase_8_128.txt ran on at seed 0 (the gate rule's
    2 000 steps); the attention rule ends every line within 6 steps per symbol, and lines whose
    gate fires keep their length (and frames, to float rounding)."""
    from tts.synthesizer import Synthesizer
    from tts.voice import load_voice

    _cuda()
    synth = Synthesizer(load_voice("slt-tacotron2"), device="cuda", precision="fp32")
    lines = PHRASES.read_text().splitlines()
    report = {}
    for i, text in enumerate(lines, 1):
        gate = _frames(synth, text, seed=0, stop_rule="gate")
        att = _frames(synth, text, seed=0, stop_rule="attention")
        report[i] = (gate.shape[-1], att.shape[-1])
        assert att.shape[-1] <= 6 * 128, (i, report[i])
        if gate.shape[-1] < 2000:
            assert att.shape[-1] == gate.shape[-1] and float((att - gate).abs().max()) < 1e-3, (i, report[i])
    print("\nframes (gate, attention) per line at seed 0:", report)


@pytest.mark.gpu
def test_gpu_server_slot_rows_end_where_the_synthesizer_ends_them():
    from tts.server.scheduler import TacotronScheduler
    from tts.synthesizer import Synthesizer
    from tts.voice import Voice

    _cuda()
    voice = Voice.from_checkpoints(tacotron2=FIXTURES / "tacotron2/checkpoint_Tacotron2_current_1gpu.pt",
                                   waveglow=FIXTURES / "waveglow/checkpoint_WaveGlow_ngc_style_ddp.pt", name="t2")
    synth = Synthesizer(voice, device="cuda", precision="fp32")
    text = "A much longer sentence that should take the decoder many more steps to finish speaking."
    opts = SynthesisOptions(gate_threshold=NEVER, max_decoder_steps=400, stop_rule="attention", **DET)
    want = synth.synthesize(text, opts)
    assert want.hit_max_steps == 0 and len(want.audio) < 256 * 400
    sched = TacotronScheduler(synth, max_rows=4)            # auto: slots with CUDA graphs
    sched.start()
    try:
        got = asyncio.run(sched.synthesize(text, opts))
    finally:
        sched.close()
    assert len(got.result.audio) == len(want.audio)


# ----------------------------------------------------------------------------- fused into the Triton step

_FUSED_STEP = """
import dataclasses, sys, torch
import tts.engines.tacotron2_step as S
import tts.models.tacotron2 as M
from tts.cli.bench import random_models
from tts.engines.tacotron2 import Tacotron2Engine
dev = sys.argv[1]
rule = dataclasses.replace(M.ATTENTION_STOP, end_mass=0.25, end_frames=1, min_steps=3)
M.ATTENTION_STOP = S.ATTENTION_STOP = rule
t2, _, _ = random_models("tacotron2", "tiny", 0)
names = ("not_finished", "mel_lengths", "end_count", "end_rec", "mel", "gate", "att_cum")
fired = set()
for bsz, prec in ((2, "fp32"), (3, "fp16")):
    eng = Tacotron2Engine(t2, device=dev, precision=prec, backend="triton", steps_per_replay=2)
    g = torch.Generator().manual_seed(bsz)
    lens = torch.tensor([2, 3, 9][:bsz], dtype=torch.int32)
    ids = torch.randint(1, 148, (bsz, 9), generator=g)
    enc = eng.encode(ids, lens).to(eng.device, eng.dtype)
    limits = torch.tensor([12, 2, 12][:bsz], dtype=torch.int32, device=eng.device)  # row 1: its budget ends it
    for mode in ("stop", "count"):
        out = []
        for fused in (True, False):
            buf = eng._bucket(bsz, 9, 16, 0.0, 0.9999999, "attention")
            buf.reset(enc, torch.nn.functional.linear(enc, eng.w.m_w), lens.to(eng.device),
                      torch.tensor([7], device=eng.device), limits)
            for i in range(5):
                S.triton_step(eng.w, buf, i, 0.0, 0.9999999, dtype=eng.dtype, pdl=eng.pdl, hmax=64,
                              attention=mode if fused else None)
                if not fused:
                    S.attention_stop_step(buf, i, stop=mode == "stop")
            out.append({n: getattr(buf, n).clone() for n in names})
        for n in names:
            assert torch.equal(out[0][n], out[1][n]), (bsz, prec, mode, n, out[0][n], out[1][n])
        nf, ln, cnt = out[0]["not_finished"], out[0]["mel_lengths"], out[0]["end_count"]
        if mode == "stop":
            fired |= {"attention" for r in range(bsz) if nf[r] == 0 and ln[r] < limits[r]}
            fired |= {"budget" for r in range(bsz) if nf[r] == 0 and ln[r] == limits[r]}
        fired |= {"counted"} if int(cnt.max()) > 0 else set()
assert fired == {"attention", "budget", "counted"}, fired
print("ok")
"""


def test_fused_rule_kernels_equal_the_rule_ops_under_interpreter():
    """The Triton step runs the attention rule inside its kernels: ``attention_context(count=...)``
    adds the count (``count_end_frames``) and records it, ``projection(stop=...)`` ends rows after the
    gate as ``attention_stop_step(stop=True)`` does; each kernel equals the kernel without it
    followed by the rule's tensor ops, bit for bit, on cases where counts, ends by attention, ends
    by budget and rows at min_steps all occur (CPU, ``TRITON_INTERPRET=1``). The whole step: the
    GPU test below."""
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import torch
        from tts.plugins import decoder as K
        import tts.models.tacotron2 as M
        import dataclasses
        torch.manual_seed(0)
        B, T, E, steps, nf = 4, 7, 32, 6, 20
        seen = set()
        for trial in range(4):
            energy = torch.randn(B, T) * 3
            lengths = torch.tensor([1, 3, 7, 5], dtype=torch.int32)
            energy[torch.arange(T)[None, :] >= lengths[:, None]] = float("-inf")
            memory = torch.randn(B, T, E).half()
            cum0 = torch.rand(B, T) * 0.9
            cnt0 = torch.tensor([0, 2, 5, 1], dtype=torch.int32)
            step = torch.tensor([2], dtype=torch.int64)
            res = []
            for fused in (True, False):
                aw, ac, ctx = torch.zeros(B, T), cum0.clone(), torch.zeros(B, E)
                cnt, rec = cnt0.clone(), torch.zeros(B, steps, dtype=torch.int32)
                K.attention_context(energy, memory, aw, ac, ctx, None, step, 1, be=16, bt=4,
                                    count=(lengths, cnt, rec, 1.0) if fused else None)
                if not fused:
                    last = (lengths - 1).clamp(min=0).long()
                    cnt.add_((ac.gather(1, last[:, None])[:, 0] >= 1.0).int())
                    rec[:, 3] = cnt
                res.append((aw, ac, ctx, cnt, rec))
            for a, b in zip(*res):
                assert torch.equal(a, b), (trial, a, b)
            seen.update((res[0][3] - cnt0).tolist())
        assert seen == {0, 1}, seen                   # rows counted and rows not
        # projection: the gate, then the rule (end_frames 3, min_steps 4: step 2 + i 1 + 1 = 4)
        xs = (torch.randn(B, 16), torch.randn(B, 8))
        w, bias = torch.randn(nf + 1, 24).half(), torch.randn(nf + 1)
        for trial, thr in enumerate((0.5, 0.9999999)):
            nf0 = torch.tensor([1, 1, 1, 0], dtype=torch.int32)
            len0 = torch.tensor([3, 3, 1, 3], dtype=torch.int32)
            cnt = torch.tensor([3, 1, 0, 9], dtype=torch.int32)
            lim = torch.tensor([99, 99, 2, 99], dtype=torch.int32)
            res = []
            for fused in (True, False):
                frame, mel, gate = torch.zeros(B, nf), torch.zeros(B, steps, nf), torch.zeros(B, steps)
                nfl, ln = nf0.clone(), len0.clone()
                K.projection(xs, w, bias, frame, mel, gate, nfl, ln, thr, torch.tensor([2]), 1, bn=8, bk=8,
                             stop=(cnt, lim, 3, 4) if fused else None)
                if not fused:
                    ended = (cnt >= 3) & (torch.tensor(4) >= 4)
                    drop = nfl * ended.int()
                    nfl.sub_(drop); ln.sub_(drop)
                    nfl.mul_((ln < lim).int())
                res.append((frame, mel, gate, nfl, ln))
            for a, b in zip(*res):
                assert torch.equal(a, b), (trial, a, b)
            if trial == 1:                   # gate never fires: row 0 by attention, row 2 by budget
                assert res[0][3].tolist() == [0, 1, 0, 0] and res[0][4].tolist() == [3, 4, 2, 3], res[0][3:]
        print("ok")
    """)
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:] + r.stdout[-2000:]


@pytest.mark.gpu
def test_gpu_triton_step_fuses_the_rule_bit_for_bit():
    """The whole Triton step with the rule fused (``attention="stop"`` / ``"count"``) equals the step
    without it followed by ``attention_stop_step(stop=True / False)``, bit for bit (counts, their
    record, stop flags, lengths, frames), with a loosened rule so that counts, ends by attention and
    ends by budget occur in 5 steps; tiny model, fp32 batch 2 and fp16 batch 3 (the default tiles)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    r = subprocess.run([sys.executable, "-c", _FUSED_STEP, "cuda"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:] + r.stdout[-2000:]


def test_measurement_script_shards_and_merges(tmp_path):
    """``recipes/bundled_voice/stop_rule.py --shard K/N`` takes every N-th text from the K-th, and
    ``--summarize`` merges the shards into the counts one run would have made."""
    script = STOP_RULE_SCRIPT
    outs = []
    for k in (0, 1):
        out = tmp_path / f"shard_{k}.json"
        subprocess.run([sys.executable, str(script), "--sets", "short", "--short-seeds", "0", "--shard", f"{k}/6",
                        "--out", str(out)], check=True, capture_output=True, timeout=300)
        outs.append(out)
    lines = [[r["line"] for r in json.loads(o.read_text())["records"]] for o in outs]
    assert lines == [[0, 6, 12], [1, 7, 13]]
    merged = tmp_path / "merged.json"
    subprocess.run([sys.executable, str(script), "--summarize", *map(str, outs), "--out", str(merged)],
                   check=True, capture_output=True, timeout=120)
    summary = json.loads(merged.read_text())["summary"]["short"]
    assert summary["draws"] == 6 and summary["runons_attention"] == 0
    bad = subprocess.run([sys.executable, str(script), "--shard", "3/2"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--shard must be K/N" in bad.stderr


def test_measurement_script_reads_gzipped_transcripts_from_data(tmp_path):
    """``--data DIR``: the train lines come from ``DIR/train.txt`` or, as on the GPU machine,
    ``DIR/train.txt.gz``."""
    script = STOP_RULE_SCRIPT
    (tmp_path / "train.txt.gz").write_bytes(gzip.compress(b"LJ001-0001|Hello there.\nLJ001-0002|Go home.\n"))
    out = tmp_path / "out.json"
    voice = ROOT / "tts" / "voices" / "slt-tacotron2"     # --voice: a folder as well as a name
    subprocess.run([sys.executable, str(script), "--sets", "train", "--train-lines", "1", "--seeds", "0",
                    "--verify", "0", "--data", str(tmp_path), "--voice", str(voice), "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    assert json.loads(out.read_text())["voice"] == str(voice)
    records = json.loads(out.read_text())["records"]
    assert [(r["set"], r["line"], r["seed"]) for r in records] == [("train", 0, 0)]
    assert records[0]["symbols"] >= len("Hello there")    # the first line's text, not the second's
    bad = subprocess.run([sys.executable, str(script), "--voice", "no-such-voice"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "--voice: unknown voice 'no-such-voice'" in bad.stderr
    assert "Traceback" not in bad.stderr
    fs = subprocess.run([sys.executable, str(script), "--voice", "heart"], capture_output=True, text=True,
                        timeout=120)
    assert fs.returncode == 2 and "--voice: 'heart' is a fastspeech voice" in fs.stderr
    assert "Traceback" not in fs.stderr
