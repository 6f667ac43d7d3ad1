"""``SlotDecoder`` (``Tacotron2Engine.slots``): rows join and leave static decoder slots between replays.

CPU: the PyTorch twin, no graphs, fp32. A row that joins while another row is
decoding gets the frames of ``Tacotron2.infer`` of its text alone (prenet
dropout 0), stated tolerance 1e-5 absolute on frames and gate logits (measured
~1e-6: folded weights round differently). GPU (``-m gpu``): the Triton kernels
and CUDA graphs, fp32 against the eager model (1e-3) and fp16 (0.05, the
``tts-bench --verify`` limit, with identical stop steps).
"""

from __future__ import annotations

import pytest
import torch

from tts.engines.tacotron2 import SlotDecoder, Tacotron2Engine, slot_buckets

TOL = 1e-5


def _model(fire_bias: float | None = None):
    from tts.cli.bench import random_models

    t2, _, _ = random_models("tacotron2", "tiny", 0)
    if fire_bias is not None:
        with torch.no_grad():
            t2.decoder.gate_layer.linear_layer.bias.fill_(fire_bias)
    return t2


def _ids(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 148, (1, n), generator=g)


def _alone(t2, ids: torch.Tensor, steps: int):
    """Frames [steps, n_mel] and gate logits [steps] of ``Tacotron2.infer`` on ``ids`` alone."""
    out = t2.infer(ids, torch.tensor([ids.shape[1]]), max_decoder_steps=steps, prenet_dropout=0.0,
                   early_stopping=False)
    return out.mel[0].t(), out.gate[0]


class Recorder:
    """Drives a SlotDecoder and keeps each row's frames and gates by step."""

    def __init__(self, sd: SlotDecoder):
        self.sd = sd
        self.frames: dict[str, list[torch.Tensor]] = {}
        self.gates: dict[str, list[torch.Tensor]] = {}
        self.slot: dict[str, int] = {}

    def join(self, t2, name: str, ids: torch.Tensor, slot: int | None = None) -> None:
        mem = t2.encode(ids, torch.tensor([ids.shape[1]]))
        slot = self.sd.free_slots()[0] if slot is None else slot
        self.sd.join(slot, mem, ids.shape[1])
        self.slot[name] = slot
        self.frames[name], self.gates[name] = [], []

    def run(self) -> None:
        out = self.sd.run(0.0)
        for name, s in self.slot.items():
            if s is not None:
                self.frames[name].append(out.frames[s])
                self.gates[name].append(out.gate[s])

    def leave(self, name: str) -> None:
        self.sd.leave(self.slot[name])
        self.slot[name] = None

    def result(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat(self.frames[name]), torch.cat(self.gates[name])


def _engine(t2) -> Tacotron2Engine:
    return Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch", steps_per_replay=2)


def test_slot_buckets_are_pure_powers_of_two():
    assert slot_buckets(1, 1) == (1, 32)
    assert slot_buckets(5, 33) == (8, 64)
    assert slot_buckets(64, 128) == (64, 128)
    assert slot_buckets(65, 129) == (128, 256)
    with pytest.raises(ValueError):
        slot_buckets(0, 10)


def test_row_joined_at_step_7_equals_infer_alone():
    """Row B joins after 7 steps of row A (K = 7, odd: the ping-pong parity alternates); both equal
    their texts decoded alone, also after A leaves and C takes A's slot."""
    t2 = _model()
    eng = _engine(t2)
    sd = eng.slots(4, 40, steps_per_replay=7)
    assert (sd.rows, sd.t_in, sd.steps_per_replay) == (4, 64, 7)
    a, b, c = _ids(23, 1), _ids(40, 2), _ids(9, 3)
    rec = Recorder(sd)
    rec.join(t2, "a", a)
    rec.run()                              # A: steps 0..6
    rec.join(t2, "b", b)                   # B joins at A's step 7
    for _ in range(3):
        rec.run()                          # A: 28 steps, B: 21
    rec.leave("a")
    rec.join(t2, "c", c)                   # C reuses A's slot
    assert rec.slot["c"] == 0
    for _ in range(2):
        rec.run()
    for name, ids in (("a", a), ("b", b), ("c", c)):
        got_f, got_g = rec.result(name)
        want_f, want_g = _alone(t2, ids, got_f.shape[0])
        assert got_f.shape == want_f.shape
        assert float((got_f - want_f).abs().max()) < TOL, name
        assert float((got_g - want_g).abs().max()) < TOL, name
    assert sd.steps[rec.slot["b"]] == 35 and sd.steps[rec.slot["c"]] == 14


def test_resize_moves_live_rows_between_buckets_unchanged():
    """Grow (rows and input length), then shrink and compact: the rows' frames are unchanged."""
    t2 = _model()
    eng = _engine(t2)
    sd = eng.slots(1, 20, steps_per_replay=4)
    a, b, c = _ids(20, 4), _ids(70, 5), _ids(12, 6)
    rec = Recorder(sd)
    rec.join(t2, "a", a)
    rec.run()
    # B needs 70 inputs and a second slot: move A into a (2, 128) decoder
    sd2 = sd.resized(2, 70, keep=[0])
    assert (sd2.rows, sd2.t_in) == (2, 128) and sd2 is not sd and sd2.active == [True, False]
    rec.sd = sd2
    rec.join(t2, "b", b)
    rec.run()
    sd3 = sd2.resized(4, 70, keep=[1, 0])          # reorder: B to slot 0, A to slot 1
    rec.sd, rec.slot["a"], rec.slot["b"] = sd3, 1, 0
    rec.join(t2, "c", c)
    rec.run()
    rec.leave("b")                                   # the long row leaves: shrink to (2, 32)
    sd4 = sd3.resized(2, 20, keep=[1, 2])
    assert (sd4.rows, sd4.t_in) == (2, 32)
    rec.sd, rec.slot["a"], rec.slot["c"] = sd4, 0, 1
    rec.run()
    rec.run()
    for name, ids in (("a", a), ("b", b), ("c", c)):
        got_f, got_g = rec.result(name)
        want_f, want_g = _alone(t2, ids, got_f.shape[0])
        assert float((got_f - want_f).abs().max()) < TOL, name
        assert float((got_g - want_g).abs().max()) < TOL, name
    with pytest.raises(ValueError):
        sd4.resized(1, 20, keep=[0, 1])             # two rows do not fit one slot
    with pytest.raises(ValueError):
        sd4.resized(2, 5, keep=[0])                  # A has 20 inputs


def test_pipelined_row_decoder_gives_every_row_its_frames_alone_through_joins_and_resizes():
    """``SlotRowDecoder`` with ``pipeline``: each ``step`` queues the next replay before reading the
    last, so a row's frames arrive one call later and a row that joins between calls first appears
    in the call after next. Through joins that grow the bucket (rows and input length), leaves that
    shrink it, and a slot taken by a new row while the replay ahead still decodes its old row, every
    row's frames and stop steps equal its text decoded alone, and no frame is read twice or lost."""
    from tts.server.rows import RowStart, SlotRowDecoder

    t2 = _model()
    eng = _engine(t2)
    texts = {"a": _ids(20, 11), "b": _ids(50, 12), "c": _ids(9, 13), "d": _ids(30, 14), "e": _ids(15, 15)}
    got: dict[str, list[torch.Tensor]] = {k: [] for k in texts}
    rd = SlotRowDecoder(eng, t2, "cpu", 2, pipeline=True)
    calls: list[set[str]] = []

    def join(*names):
        rd.join([RowStart(n, texts[n][0].tolist(), 1.0) for n in names])   # threshold 1.0: the gate never ends a row

    def step():
        out = rd.step(0.0)
        calls.append(set(out))
        for k, rf in out.items():
            assert rf.stop is None and rf.frames.shape == (t2.config.n_mel_channels, 2)
            got[k].append(rf.frames)

    join("a")
    for _ in range(3):
        step()
    join("b")                                   # (1, 32) -> (2, 64)
    step()
    step()
    join("c", "d")                              # -> (4, 64)
    for _ in range(3):
        step()
    rd.leave(["a"])
    join("e")                                   # e takes a's slot while the replay ahead still decodes a
    step()
    step()
    rd.leave(["b", "c"])                        # -> (2, 32)
    for _ in range(2):
        step()
    assert calls[3] == {"a"} and calls[4] == {"a", "b"}      # b's first frames: the second call after its join
    assert calls[8] == {"a", "b", "c", "d"} and calls[9] == {"b", "c", "d", "e"}
    for name, ids in texts.items():
        frames = torch.cat(got[name], dim=1).t()
        want_f, _ = _alone(t2, ids, frames.shape[0])
        assert frames.shape[0] >= 4, name
        assert float((frames - want_f).abs().max()) < TOL, name
    assert [frames.shape[0] for frames in (torch.cat(got[n], dim=1).t() for n in "abcde")] == [18, 14, 10, 12, 6]


def test_stop_reports_the_first_fired_step_per_slot_threshold():
    t2 = _model()
    eng = _engine(t2)
    sd = eng.slots(2, 16, steps_per_replay=4)
    ids = _ids(10, 7)
    mem = t2.encode(ids, torch.tensor([10]))
    sd.join(0, mem, 10, gate_threshold=1.0)          # sigmoid never exceeds 1: never fires
    sd.join(1, mem, 10, gate_threshold=0.0)          # fires at once
    out = sd.run()
    assert out.stop == [None, 0]
    assert out.frames.shape == (2, 4, t2.config.n_mel_channels) and out.gate.shape == (2, 4)
    assert torch.equal(out.frames[0], out.frames[1])  # same input, same frames, whatever the threshold
    sd.leave(1)
    assert sd.run().stop == [None, None]
    with pytest.raises(ValueError):
        sd.join(0, mem, 10)                          # in use
    with pytest.raises(ValueError):
        sd.join(1, mem, 40)                          # longer than the memory / bucket


def test_slots_are_reused_per_bucket_and_come_back_free():
    t2 = _model()
    eng = _engine(t2)
    sd = eng.slots(3, 30)
    sd.join(0, t2.encode(_ids(5, 8), torch.tensor([5])), 5)
    again = eng.slots(4, 32)
    assert again is sd and again.active == [False] * 4


def test_dropout_draws_fresh_masks_each_replay():
    t2 = _model()
    eng = _engine(t2)
    sd = eng.slots(2, 16, steps_per_replay=2)
    mem = t2.encode(_ids(10, 9), torch.tensor([10]))
    sd.join(0, mem, 10)
    sd.join(1, mem, 10)
    out = sd.run(0.5)
    assert not torch.equal(out.frames[0], out.frames[1])


# ----------------------------------------------------------------------------- GPU

def _gpu_case(precision: str, backend: str, k: int = 16):
    t2 = _model().cuda()
    eng = Tacotron2Engine(t2, device="cuda", precision=precision, backend=backend, steps_per_replay=k)
    assert eng.use_graphs
    sd = eng.slots(8, 64)
    texts = [_ids(n, 10 + n) for n in (17, 64, 5, 33)]
    rec = Recorder(sd)
    rec.join(t2, "t0", texts[0].cuda())
    rec.run()
    rec.join(t2, "t1", texts[1].cuda())
    rec.join(t2, "t2", texts[2].cuda())
    rec.run()
    rec.leave("t2")
    rec.join(t2, "t3", texts[3].cuda())
    for _ in range(3):
        rec.run()
    errs = {}
    for i, ids in enumerate(texts):
        got_f, got_g = rec.result(f"t{i}")
        want_f, want_g = _alone(t2, ids.cuda(), got_f.shape[0])
        errs[f"t{i}"] = max(float((got_f - want_f.cpu()).abs().max()), float((got_g - want_g.cpu()).abs().max()))
    return errs


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_gpu_slots_fp32_equal_eager_alone(backend):
    torch.backends.cuda.matmul.allow_tf32 = False
    errs = _gpu_case("fp32", backend)
    print(f"\nslot decoder fp32 {backend} vs eager alone: {errs}")
    assert max(errs.values()) < 1e-3, errs


@pytest.mark.gpu
def test_gpu_slots_fp16_close_to_eager_alone():
    torch.backends.cuda.matmul.allow_tf32 = False
    errs = _gpu_case("fp16", "triton")
    print(f"\nslot decoder fp16 triton vs eager alone: {errs}")
    assert max(errs.values()) < 0.05, errs


@pytest.mark.gpu
def test_gpu_slots_graph_per_bucket_and_capture_keeps_live_rows():
    """Capturing a new graph (new dropout p) while rows are live leaves their states untouched."""
    t2 = _model().cuda()
    eng = Tacotron2Engine(t2, device="cuda", precision="fp32", backend="triton", steps_per_replay=4)
    sd = eng.slots(2, 32)
    ids = _ids(20, 11).cuda()
    rec = Recorder(sd)
    rec.join(t2, "a", ids)
    rec.run()
    sd.capture(0.5)                                  # warm-up steps run on the live slot, then restored
    assert (0.5, 0) in sd._graphs and (0.0, 0) in sd._graphs
    rec.run()
    got_f, _ = rec.result("a")
    want_f, _ = _alone(t2, ids, got_f.shape[0])
    assert float((got_f - want_f.cpu()).abs().max()) < 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("pipeline", [None, False], ids=["pipelined", "plain"])
def test_gpu_scheduler_runs_the_slot_decoder_on_the_fast_engine(pipeline):
    """The scheduler on the fp16 CUDA engine: slots by default, replays pipelined by default, graphs
    warmed, concurrent rows share replays; each result has the synthesizer's length and >= 30 dB SNR
    against it (fp16 limit), with the replays pipelined and without."""
    import asyncio

    import numpy as np

    from conftest import FIXTURES
    from tts.options import SynthesisOptions
    from tts.server.scheduler import TacotronScheduler
    from tts.synthesizer import Synthesizer
    from tts.voice import Voice

    voice = Voice.from_checkpoints(tacotron2=FIXTURES / "tacotron2/checkpoint_Tacotron2_current_1gpu.pt",
                                   waveglow=FIXTURES / "waveglow/checkpoint_WaveGlow_ngc_style_ddp.pt", name="t2")
    synth = Synthesizer(voice, device="cuda", precision="fp16", max_batch=8)
    sched = TacotronScheduler(synth, pipeline=pipeline)
    assert sched.use_slots and sched.decoder.pipeline == (pipeline is None)
    texts = ["Hello there.", "A much longer sentence that should take the decoder many more steps.",
             "Testing, one two three.", "Hello there."]
    det = SynthesisOptions(prenet_dropout=0.0, sigma=0.0)
    sched.start()
    try:
        sched.warmup()

        async def main():
            return await asyncio.gather(*(sched.synthesize(t, det) for t in texts))

        outs = asyncio.run(main())
    finally:
        sched.close()
    assert max(sched.step_sizes) > 1
    for t, o in zip(texts, outs):
        want = synth.synthesize(t, det).audio
        got = o.result.audio
        assert len(got) == len(want) > 0
        snr = 10 * np.log10(np.sum(want ** 2) / max(np.sum((got - want) ** 2), 1e-30))
        print(f"\nscheduler slots fp16 vs synthesizer, {t!r}: SNR {snr:.1f} dB")
        assert snr >= 30.0
