"""Where a server's Tacotron2 decode time goes: the slot decoder against the engine's ``decode``, and
the scheduler with its replays pipelined or not.

On the GPU machine, from the repo root (``source tools/gpu/env.sh`` first unless the package is
installed)::

    python3 tools/gpu/bench_slot_decoder.py [--out DIR]

Random NGC-size weights (``tools/gpu/bench_server.py``'s voice: a stop gate that never fires), one
116-character text, ``--steps`` (580) decoder steps, fp16. Times (median of ``--repeats``, wall clock
with the device synchronized):

- ``decode``: ``Tacotron2Engine.decode`` of the text, the in-process path of ``tts-bench``;
- per (K, rows): ``SlotDecoder.run`` called until ``--steps`` steps (what the server's decode thread
  waits for: replay, copies to the host, synchronize, stop tests) against the same replays queued
  back to back and synchronized once (the device's own time);
- per ``pipeline`` (off, on): ``TacotronScheduler`` in process (no gRPC), one call at a time (p50)
  and a burst of ``--burst`` calls at once (wall time), after checking that both settings give the
  same audio (prenet dropout 0, sigma 0).

Writes ``DIR/slot_decoder.json``. ``--device cpu --precision fp32 --size tiny --steps 32`` runs on a CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune "
        "must be in want of a wife.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench-out")))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", choices=["fp16", "fp32"], default="fp16")
    ap.add_argument("--size", choices=["ngc", "tiny"], default="ngc")
    ap.add_argument("--steps", type=int, default=580)
    ap.add_argument("--replays", default="16", help="K values (steps per replay), comma-separated")
    ap.add_argument("--rows", default="1,16,64", help="slot counts, comma-separated")
    ap.add_argument("--burst", type=int, default=64, help="calls sent at once to the scheduler")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    import logging

    import numpy as np
    import torch

    logging.getLogger("tts").setLevel(logging.ERROR)      # the random model's rows all reach their step limit

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_server import environment, make_voice

    from tts.options import SynthesisOptions
    from tts.server.scheduler import TacotronScheduler
    from tts.synthesizer import Synthesizer
    from tts.voice import Voice

    dev = torch.device(args.device)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def median_ms(fn, repeats: int = args.repeats, warmup: int = 1) -> float:
        for _ in range(warmup):
            fn()
        sync()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts) * 1e3

    args.out.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.TemporaryDirectory(prefix="bench_slot_decoder_")   # the voice's checkpoints: not in --out
    t2p, wgp = make_voice(Path(tmp.name), args.size)
    synth = Synthesizer(Voice.from_checkpoints(tacotron2=t2p, waveglow=wgp, name="bench"), device=args.device,
                        precision=args.precision, max_batch=max(64, args.burst))
    from tts.engines.tacotron2 import Tacotron2Engine
    eng = synth.acoustic_module          # the engine on CUDA; on the CPU its PyTorch twin, as the server makes it
    if not isinstance(eng, Tacotron2Engine):
        eng = Tacotron2Engine(eng, device=dev, precision="fp32", backend="torch")
    out: dict = {"kind": "slot-decoder", "environment": environment(args.device), "size": args.size,
                 "precision": args.precision, "steps": args.steps, "text_chars": len(TEXT),
                 "command": shlex.join(["python3", "tools/gpu/bench_slot_decoder.py"] + (argv or sys.argv[1:])),
                 "slots": [], "scheduler": []}
    ids = torch.tensor([synth.plan(TEXT).pieces[0][1]], device=dev)
    lengths = torch.tensor([ids.shape[1]], device=dev)
    with torch.inference_mode():
        memory = eng.encode(ids, lengths)
        out["decode_ms"] = median_ms(lambda: eng.decode(memory, lengths, max_decoder_steps=args.steps,
                                                        early_stopping=False, prenet_dropout=0.5))
        for k in (int(x) for x in args.replays.split(",")):
            for rows in (int(x) for x in args.rows.split(",")):
                sd = eng.slots(rows, ids.shape[1], steps_per_replay=k)
                for s in range(sd.rows):
                    sd.join(s, memory, ids.shape[1], stop_rule="gate")
                sd.capture(0.5)
                n = -(-args.steps // k)

                def run_loop(sd=sd, n=n) -> None:
                    for _ in range(n):
                        sd.run(0.5)

                def queued(sd=sd, n=n) -> None:
                    for _ in range(n):
                        sd.launch(0.5)

                rec = {"steps_per_replay": k, "rows": sd.rows, "input_bucket": sd.t_in, "replays": n,
                       "run_ms": median_ms(run_loop), "queued_ms": median_ms(queued)}
                rec["host_ms_per_replay"] = (rec["run_ms"] - rec["queued_ms"]) / n
                out["slots"].append(rec)
                sd.reset()

    opts = SynthesisOptions(max_decoder_steps=args.steps, stop_rule="gate")
    same = SynthesisOptions(max_decoder_steps=args.steps, stop_rule="gate", prenet_dropout=0.0, sigma=0.0,
                            denoiser_strength=0.0)
    audio = {}
    for pipeline in (False, True):
        sched = TacotronScheduler(synth, max_rows=max(64, args.burst), decoder="slots", pipeline=pipeline)
        sched.start()
        try:
            sched.warmup()

            async def timed(o=opts, sched=sched) -> tuple[float, object]:
                t0 = time.perf_counter()
                res = await sched.synthesize(TEXT, o)
                return time.perf_counter() - t0, res

            async def session(sched=sched) -> tuple[list[float], float, np.ndarray]:
                lone = (await timed(same))[1].result.audio
                for _ in range(2):
                    await timed()
                lat = [(await timed())[0] for _ in range(max(10, 4 * args.repeats))]
                t0 = time.perf_counter()
                await asyncio.gather(*(timed() for _ in range(args.burst)))
                return lat, time.perf_counter() - t0, lone

            lat, wall, audio[pipeline] = asyncio.run(session())
        finally:
            sched.close()
        out["scheduler"].append({"pipeline": pipeline, "one_call_p50_ms": statistics.median(lat) * 1e3,
                                 "burst": args.burst, "burst_wall_ms": wall * 1e3})
    out["pipeline_same_audio_max_abs_diff"] = float(np.abs(audio[True] - audio[False]).max())
    (args.out / "slot_decoder.json").write_text(json.dumps(out, indent=1))
    print(f"decode {out['decode_ms']:.2f} ms")
    for r in out["slots"]:
        print(f"slots K={r['steps_per_replay']} rows={r['rows']}: run {r['run_ms']:.2f} ms, queued "
              f"{r['queued_ms']:.2f} ms, host {r['host_ms_per_replay'] * 1e3:.0f} us per replay")
    for r in out["scheduler"]:
        print(f"scheduler pipeline={r['pipeline']}: one call p50 {r['one_call_p50_ms']:.2f} ms, "
              f"{r['burst']} at once {r['burst_wall_ms']:.1f} ms")
    print(f"pipelined audio vs not: max abs diff {out['pipeline_same_audio_max_abs_diff']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
