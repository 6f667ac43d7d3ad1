"""Decoder step with and without programmatic dependent launch (PDL) on the GPU.

    source tools/gpu/env.sh; python3 tools/gpu/decoder_pdl.py

Random-weight NGC-size Tacotron2, fp16, CUDA graphs of 16 steps, 580 forced steps (the gate of
random weights never fires; early_stopping=False). For batch 1 and 8 and each variant:

- ``decode_us``: ``engine.decode`` (dropout 0.5) per step, CUDA events, median of 12 after warm-up;
- ``replay_us``: the captured graph alone, 37 replays (592 steps) per step, median of 12;
- ``mel_err``: mel max abs difference vs PDL off, dropout 0, 580 steps (should be 0: bit-equal).

Variants: ``off`` (pdl=0), ``pdl1`` (wait, then trigger the next kernel), ``pdl2`` (trigger
at the start, then wait), ``pdl1_pre2`` / ``pdl2_pre2`` (each LSTM program loads two weight
chunks before its wait instead of one). A failing variant prints its traceback; the rest go on.
Results as JSON to $OUT/decoder_pdl.json when $OUT is set. Takes ~2 minutes (most of it
Triton compiles); variants are skipped once 140 s have passed (PDL_BUDGET_S).
"""
import json
import os
import sys
import time
import traceback

import torch

from tts.engines import tacotron2 as E
from tts.models.tacotron2 import Tacotron2

T_START = time.time()
BUDGET_S = float(os.environ.get("PDL_BUDGET_S", "140"))
STEPS = 580
REPS = 12
VARIANTS = {                      # name: (pdl mode, TTS_DECODER_TILES override or None)
    "off": (0, None),
    "pdl1": (1, None),
    "pdl2": (2, None),
    "pdl1_pre2": (1, {"pdl_pre": 2}),
    "pdl2_pre2": (2, {"pdl_pre": 2}),
}

dev = torch.device("cuda")
torch.backends.cuda.matmul.allow_tf32 = False
torch.manual_seed(0)
t2 = Tacotron2().to(dev).eval()
cap = torch.cuda.get_device_capability()
results = {"device": torch.cuda.get_device_name(), "capability": list(cap), "torch": torch.__version__,
           "steps": STEPS, "batches": {}}
try:
    import triton
    results["triton"] = triton.__version__
except Exception:  # noqa: BLE001
    pass
print(f"{results['device']} sm_{cap[0]}{cap[1]}, torch {torch.__version__}, triton {results.get('triton')}",
      flush=True)


def events_ms(fn):
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    fn()
    e1.record()
    e1.synchronize()
    return e0.elapsed_time(e1)


def median(xs):
    return sorted(xs)[len(xs) // 2]


def run_variant(name, bs, enc_in, ref_mel):
    mode, tiles = VARIANTS[name]
    os.environ.pop("TTS_DECODER_TILES", None)
    if tiles:
        d = E.decoder_tiles(bs, torch.float16)
        d.update(tiles)
        os.environ["TTS_DECODER_TILES"] = json.dumps(d)
    try:
        eng = E.Tacotron2Engine(t2, device=dev, precision="fp16", backend="triton", pdl=mode)
        ids, lengths = enc_in
        enc = eng.encode(ids, lengths)
        out = {"pdl": eng.pdl}
        # exactness at dropout 0 (first decode captures the graph, the second replays it)
        eng.decode(enc, lengths, max_decoder_steps=STEPS, prenet_dropout=0.0, early_stopping=False)
        mel = eng.decode(enc, lengths, max_decoder_steps=STEPS, prenet_dropout=0.0, early_stopping=False).mel
        out["finite"] = bool(torch.isfinite(mel).all())
        if ref_mel is not None:
            out["mel_err"] = float((mel - ref_mel).abs().max())
        # decode per step, dropout 0.5 (as tts-bench)
        f = lambda: eng.decode(enc, lengths, max_decoder_steps=STEPS, prenet_dropout=0.5, early_stopping=False)
        f(); f(); torch.cuda.synchronize()
        out["decode_us"] = median([events_ms(f) for _ in range(REPS)]) / STEPS * 1e3
        # the graph alone: 37 replays of 16 steps from step 0 (within the bucket's capacity)
        buf = next(b for k, b in eng._buckets.items() if k[2] == 0.5)
        n_rep = -(-STEPS // eng.steps_per_replay)

        @torch.inference_mode()
        def replays():
            buf.step.zero_()
            for _ in range(n_rep):
                buf.graph.replay()
        replays(); torch.cuda.synchronize()
        out["replay_us"] = median([events_ms(replays) for _ in range(REPS)]) / (n_rep * eng.steps_per_replay) * 1e3
        return out, mel
    finally:
        os.environ.pop("TTS_DECODER_TILES", None)


inputs, refs = {}, {}
for bs in (1, 8):
    g = torch.Generator().manual_seed(1)
    inputs[bs] = (torch.randint(1, 148, (bs, 128), generator=g).to(dev), torch.full((bs,), 128, device=dev))
    results["batches"][str(bs)] = {}
# variant-major order, so that the time budget cuts the least important variants at both batches
for name in VARIANTS:
    for bs in (1, 8):
        res = results["batches"][str(bs)]
        if time.time() - T_START > BUDGET_S:
            print(f"  batch {bs} {name}: skipped (time budget {BUDGET_S:.0f} s reached)", flush=True)
            res[name] = {"skipped": "time budget"}
            continue
        t0 = time.time()
        try:
            out, mel = run_variant(name, bs, inputs[bs], refs.get(bs))
            if name == "off":
                refs[bs] = mel
                out["mel_err"] = 0.0
            res[name] = out
            base = res.get("off", {}).get("decode_us")
            gain = f" ({out['decode_us'] - base:+.1f} us vs off)" if base and name != "off" else ""
            print(f"  batch {bs} {name:10s} pdl={out['pdl']} decode {out['decode_us']:6.1f} us/step{gain}, graph "
                  f"replay {out['replay_us']:6.1f} us/step; mel vs off (dropout 0) {out.get('mel_err', float('nan')):.3g}"
                  f"{'' if out['finite'] else ' NON-FINITE'}  ({time.time() - t0:.0f} s)", flush=True)
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            res[name] = {"error": repr(exc)[:500]}
            print(f"  batch {bs} {name}: FAILED {exc!r}"[:300], flush=True)

results["wall_s"] = time.time() - T_START
print(f"total {results['wall_s']:.0f} s", flush=True)
print("SUMMARY " + json.dumps({b: {n: {k: v for k, v in r.items() if k in ('pdl', 'decode_us', 'replay_us', 'mel_err', 'error', 'skipped')}
                                   for n, r in rs.items()} for b, rs in results["batches"].items()}), flush=True)
out_dir = os.environ.get("OUT")
if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "decoder_pdl.json"), "w") as fh:
        json.dump(results, fh, indent=1)
sys.exit(0)
