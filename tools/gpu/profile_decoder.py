"""Per-kernel time of one decoder step (each kernel replayed 200x in a CUDA graph), LSTM tile sweep."""
import os, time, torch
from tts.models.tacotron2 import Tacotron2
from tts.engines.tacotron2 import Tacotron2Engine
from tts.plugins import decoder as K
from graphtime import graph_time as _graph_time

dev = torch.device("cuda")
torch.manual_seed(0)
t2 = Tacotron2().to(dev).eval()

def graph_time(fn, n=200):
    return _graph_time(fn, n)

for bs in (1, 8):
    eng = Tacotron2Engine(t2, device=dev, precision="fp16", backend="triton")
    ids = torch.randint(1, 148, (bs, 128), device=dev); lengths = torch.full((bs,), 128, device=dev)
    enc = eng.encode(ids, lengths)
    eng.decode(enc, lengths, max_decoder_steps=32, prenet_dropout=0.0, early_stopping=False)
    b = next(iter(eng._buckets.values())); w = eng.w
    rows = {
        "prenet1": lambda: K.linear_act(b.frame, w.pre_w1, b.pre1, relu=True, p=0.5, seed=b.seed, step=b.step),
        "prenet2": lambda: K.linear_act(b.pre1, w.pre_w2, b.pre2, relu=True, p=0.5, seed=b.seed, step=b.step),
        "att_lstm": lambda: K.lstm_cell((b.pre2, b.ctx, b.ah[0]), w.att_w, w.att_b, b.ac, b.ah[1]),
        "query": lambda: K.linear_act(b.ah[1], w.q_w, b.pq),
        "energy": lambda: K.location_energy(b.pq, w.loc_w, b.att_w, b.att_cum, b.pm, w.v, b.lengths, b.energy),
        "context": lambda: K.attention_context(b.energy, b.memory, b.att_w, b.att_cum, b.ctx, b.align, b.step, 0),
        "dec_lstm": lambda: K.lstm_cell((b.ah[1], b.ctx, b.dh[0]), w.dec_w, w.dec_b, b.dc, b.dh[1]),
        "projection": lambda: K.projection((b.dh[1], b.ctx), w.proj_w, w.proj_b, b.frame, b.mel, b.gate,
                                           b.not_finished, b.mel_lengths, 0.5, b.step, 0),
        "cublas_att_gemv": lambda: torch.mm(b.ah[0].half().repeat(1, 2)[:, :1792], w.att_w.t()),
    }
    tot = 0.0
    for name, fn in rows.items():
        t = graph_time(fn)
        if not name.startswith("cublas"): tot += t
        print(f"B={bs} {name:16s} {t:7.2f} us", flush=True)
    print(f"B={bs} sum of step kernels {tot:.1f} us", flush=True)
    for bh in ((2, 4, 8, 16) if os.environ.get('SWEEP') else ()):
        for bk in (64, 128, 256):
            for nw in (2, 4, 8):
                try:
                    t = graph_time(lambda: K.lstm_cell((b.ah[1], b.ctx, b.dh[0]), w.dec_w, w.dec_b, b.dc, b.dh[1], bh=bh, bk=bk, num_warps=nw), n=100)
                    print(f"B={bs} dec_lstm bh={bh} bk={bk} warps={nw}: {t:.2f} us", flush=True)
                except Exception as exc:
                    print(f"B={bs} dec_lstm bh={bh} bk={bk} warps={nw}: failed {exc!r}"[:200], flush=True)
