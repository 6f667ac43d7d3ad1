"""WaveGlow's two fused kernels per coupling layer: their tiles, and the form of ``wn_in_gate``'s
reduction loop, timed in the whole engine.

On the GPU machine, from the repo root (``source tools/gpu/env.sh`` first unless the package is
installed)::

    python3 tools/gpu/bench_wn_tiles.py [--out DIR] [--batch 8] [--frames 580]

WaveGlow-256 of random weights (NVIDIA's sizes), fp16, the ``fused`` layout, CUDA graphs: the figure
of ``tts-bench``'s WaveGlow batch-8 record. Each candidate is a fresh engine with
``tts.plugins.waveglow.WN_TILES`` / ``WN_IN_FLAT`` set before its graph is captured:

1. ``wn_in_gate``: each tile of ``IN_TILES`` with the per-tap loop and with the flat loop, while
   ``wn_res_end`` keeps the shipped tile;
2. ``wn_res_end``: each tile of ``RS_TILES`` behind the fastest ``wn_in_gate`` of step 1.

A candidate is timed as the median of ``--repeats`` calls (wall clock, device synchronized) and its
audio is compared with the shipped settings' audio on the same mel and noise (``max_abs_diff``; a
different tile sums in a different order, so fp16 audio may move by a few units in the last place).
A tile that does not compile or run is recorded with its error. Writes ``DIR/wn_tiles.json``: every
candidate, the best, and its speed-up over the shipped settings (the settings to put in
``plugins/waveglow.py``).

``--device cpu --size tiny --batch 1 --frames 4 --repeats 1`` runs the same on a CPU under Triton's
interpreter (``TRITON_INTERPRET=1`` is set for it): the plumbing, not the speed, and slowly (about a
minute a candidate on two cores: give it one or two tiles with ``--in-tiles`` / ``--rs-tiles``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

#: ``(BM, BN, BK, num_warps, num_stages)`` candidates; the first of each list is the shipped tile.
IN_TILES = [(128, 64, 64, 8, 3), (128, 64, 64, 8, 4), (128, 64, 32, 8, 4), (128, 64, 128, 8, 2),
            (128, 64, 64, 4, 3), (64, 64, 64, 4, 4), (64, 128, 64, 4, 3), (128, 128, 64, 8, 3),
            (256, 64, 64, 8, 3), (128, 32, 64, 4, 4)]
RS_TILES = [(128, 128, 64, 8, 3), (128, 128, 64, 8, 4), (128, 128, 128, 8, 2), (128, 64, 64, 4, 3),
            (64, 128, 64, 4, 3), (128, 256, 64, 8, 3), (256, 128, 64, 8, 3), (128, 128, 32, 8, 4)]
SAMPLE_RATE = 22050
HOP = 256


def tiles_arg(text: str) -> list[tuple]:
    """``"128,64,64,8,3;64,64,64,4,4"`` -> ``[(128, 64, 64, 8, 3), (64, 64, 64, 4, 4)]``."""
    try:
        tiles = [tuple(int(v) for v in part.split(",")) for part in text.split(";") if part.strip()]
    except ValueError:
        tiles = []
    if not tiles or any(len(t) != 5 or min(t) < 1 for t in tiles):
        raise argparse.ArgumentTypeError(f"{text!r}: tiles are BM,BN,BK,num_warps,num_stages (positive), ';' between")
    return tiles


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench-out")))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", choices=["ngc", "tiny"], default="ngc")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=580)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--in-tiles", type=tiles_arg, default=IN_TILES, metavar="BM,BN,BK,W,S;...",
                    help="wn_in_gate's candidates (default: IN_TILES)")
    ap.add_argument("--rs-tiles", type=tiles_arg, default=RS_TILES, metavar="BM,BN,BK,W,S;...",
                    help="wn_res_end's candidates (default: RS_TILES)")
    args = ap.parse_args(argv)
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"      # before Triton is imported

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_server import environment

    from tts.cli.bench import random_models
    from tts.engines.waveglow import WaveGlowEngine
    from tts.plugins import waveglow as wk

    dev = torch.device(args.device)
    precision = "fp16" if dev.type == "cuda" else "fp32"
    _, wg, _ = random_models("tacotron2", args.size, 0)
    wg = wg.to(dev).eval()
    g = torch.Generator().manual_seed(0)
    mel = (torch.randn(args.batch, wg.n_mel_channels, args.frames, generator=g) - 5.0).to(dev)
    z = torch.randn(args.batch, wg.n_group, HOP * args.frames // wg.n_group, generator=g).to(dev)
    shipped = {"in": tuple(wk.WN_TILES["in"]), "rs": tuple(wk.WN_TILES["rs"]), "flat": bool(wk.WN_IN_FLAT)}
    audio_seconds = args.batch * args.frames * HOP / SAMPLE_RATE

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def run(tin: tuple, trs: tuple, flat: bool):
        """(median ms, audio) of a fresh engine with these settings; the module's are restored after."""
        saved = dict(wk.WN_TILES), wk.WN_IN_FLAT
        wk.WN_TILES.update({"in": tin, "rs": trs})
        wk.WN_IN_FLAT = flat
        try:
            eng = WaveGlowEngine(wg, device=dev, precision=precision, fused=True, layout="fused",
                                 use_graphs=dev.type == "cuda")
            audio = eng.infer(mel, sigma=0.6, z=z)          # captures the graph (and compiles) first
            sync()
            ts = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                eng.infer(mel, sigma=0.6, z=z)
                sync()
                ts.append(time.perf_counter() - t0)
            return 1e3 * statistics.median(ts), audio.float()
        finally:
            wk.WN_TILES.clear()
            wk.WN_TILES.update(saved[0])
            wk.WN_IN_FLAT = saved[1]

    base_ms, base_audio = run(shipped["in"], shipped["rs"], shipped["flat"])
    rows: list[dict] = []

    def candidate(kernel: str, tin: tuple, trs: tuple, flat: bool) -> dict:
        row = {"kernel": kernel, "in": list(tin), "rs": list(trs), "flat": flat}
        try:
            ms, audio = run(tin, trs, flat)
        except Exception as e:  # noqa: BLE001 - a tile that does not fit is a result, not a failure
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        else:
            row.update(ms=ms, x_real_time=audio_seconds / (ms / 1e3),
                       max_abs_diff=float((audio - base_audio).abs().max()))
        rows.append(row)
        shown = (f"{row['ms']:8.2f} ms {row['x_real_time']:7.0f}x  diff {row['max_abs_diff']:.1e}"
                 if "ms" in row else row["error"])
        print(f"{kernel:3s} in {tin} rs {trs} {'flat' if flat else 'per-tap'}: {shown}", flush=True)
        return row

    for flat in (False, True):
        for tin in args.in_tiles:
            candidate("in", tin, shipped["rs"], flat)
    ok = [r for r in rows if "ms" in r]
    best_in = min(ok, key=lambda r: r["ms"]) if ok else {"in": list(shipped["in"]), "flat": shipped["flat"]}
    for trs in args.rs_tiles:
        candidate("rs", tuple(best_in["in"]), trs, best_in["flat"])
    ok = [r for r in rows if "ms" in r]
    best = min(ok, key=lambda r: r["ms"]) if ok else None
    shipped_row = {"in": list(shipped["in"]), "rs": list(shipped["rs"]), "flat": shipped["flat"], "ms": base_ms,
                   "x_real_time": audio_seconds / (base_ms / 1e3),
                   "audio_max_abs": float(base_audio.abs().max())}       # the scale of max_abs_diff
    out = {
        "kind": "waveglow-tiles",
        "environment": environment(args.device),
        "size": args.size, "precision": precision, "batch": args.batch, "frames": args.frames,
        "audio_seconds": audio_seconds, "repeats": args.repeats,
        "command": shlex.join(["python3", "tools/gpu/bench_wn_tiles.py"] + (argv if argv is not None else sys.argv[1:])),
        "shipped": shipped_row,
        "candidates": rows,
        "best": best,
        "speedup_over_shipped": (base_ms / best["ms"]) if best else None,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "wn_tiles.json").write_text(json.dumps(out, indent=1))
    print(f"shipped: {base_ms:.2f} ms ({shipped_row['x_real_time']:.0f}x)")
    if best:
        print(f"best: in {tuple(best['in'])} rs {tuple(best['rs'])} {'flat' if best['flat'] else 'per-tap'}: "
              f"{best['ms']:.2f} ms ({best['x_real_time']:.0f}x), {out['speedup_over_shipped']:.3f}x the shipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
