"""Server load figures of benchmarks/README.md: ``tts-server`` driven by ``tts-bench --server``.

On the GPU machine, from the repo root (``source tools/gpu/env.sh`` first unless the package is
installed; the server's wheels the image lacks are made here by ``bash
recipes/bundled_voice/fetch_deps.sh server`` into ``.whl``, carried, and installed there with ``pip
install --no-index --no-deps --target /tmp/site .whl/*.whl``, ``/tmp/site`` on ``PYTHONPATH``)::

    python3 tools/gpu/bench_server.py [--out DIR]              # one GPU
    python3 tools/gpu/bench_server.py --devices 0,1 [--out DIR] # one worker per GPU

Saves a voice of random weights at NVIDIA's sizes (NGC Tacotron2 with a stop gate that never
fires, WaveGlow-256), starts ``tts-server`` on loopback with it (default engines, ``--precision
fp16 --max-batch-size 64``), then runs ``tts-bench --server`` with ``--option
max_decoder_steps=STEPS --option stop_rule=gate`` on every call (the gate never fires, so every call
decodes STEPS steps; 580: 6.73 s of audio. The default ``attention`` rule would end a random
model's rows early): unary at ``--unary``
concurrency levels, streaming (time to first audio) at ``--streaming`` levels. Writes
``DIR/server_unary.json`` and ``DIR/server_streaming.json`` (the rows of ``tts-bench --server
--json`` with the environment and both command lines; ``benchmarks/collect.py`` reads them) and
``DIR/server.log``. ``--size tiny --device cpu --steps 20`` runs the same on a CPU in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_voice(d: Path, size: str) -> tuple[Path, Path]:
    import torch

    from tts.models.tacotron2 import Tacotron2, Tacotron2Config
    from tts.models.waveglow import WaveGlow, WaveGlowConfig
    torch.manual_seed(0)
    if size == "tiny":
        from tts.cli.bench import tiny_configs
        t2c, wgc, _ = tiny_configs()
    else:
        t2c, wgc = Tacotron2Config(), WaveGlowConfig()
    t2 = Tacotron2(t2c).eval()
    with torch.no_grad():
        t2.decoder.gate_layer.linear_layer.bias.fill_(-1e4)      # the stop gate never fires
    wg = WaveGlow(wgc).eval()
    with torch.no_grad():                                        # zero `end` would make identity couplings
        for wn in wg.WN:
            wn.end.weight.normal_(0.0, 0.02)
            wn.end.bias.normal_(0.0, 0.02)
    torch.save({"state_dict": t2.state_dict()}, d / "t2.pt")
    torch.save({"state_dict": wg.state_dict()}, d / "wg.pt")
    return d / "t2.pt", d / "wg.pt"


def environment(device: str) -> dict:
    from tts.report import environment as env
    out = env(device)
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        if q.returncode == 0 and q.stdout.strip():
            out["driver"] = q.stdout.split()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return out


def shown(argv: list[str], prog: str) -> str:
    """The command as a user types it: program name for ``python -m ...``, file names without folders."""
    words = [prog] + argv[3:]
    for i, w in enumerate(words[:-1]):
        if w in ("--tacotron2", "--waveglow", "--json", "--output"):
            words[i + 1] = Path(words[i + 1]).name
    return shlex.join(words)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench-out")))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--devices", default=None, help="one worker per GPU, e.g. 0,1 (instead of --device)")
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--size", choices=["ngc", "tiny"], default="ngc")
    ap.add_argument("--steps", type=int, default=580, help="max_decoder_steps of every call")
    ap.add_argument("--unary", default="1,8,16,32,64", help="concurrency levels of the unary run")
    ap.add_argument("--streaming", default="1,4", help="concurrency levels of the streaming run ('' = none)")
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per level")
    ap.add_argument("--max-batch-size", type=int, default=64)
    ap.add_argument("--port", type=int, default=50077)
    ap.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for the server")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench_server_"))   # the subprocesses run here: no checkout on sys.path
    t2, wg = make_voice(work, args.size)
    port = args.port
    where = ["--devices", args.devices] if args.devices else ["--device", args.device]
    server = [sys.executable, "-m", "tts.cli.server", "--tacotron2", str(t2), "--waveglow", str(wg), *where,
              "--precision", args.precision, "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "-1",
              "--max-batch-size", str(args.max_batch_size), "--max-queue-size", "1024"]
    log_path = args.out / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(server, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    try:
        t0 = time.monotonic()
        while "serving on" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() - t0 > args.start_timeout:
                print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
                print("bench_server: the server did not start", file=sys.stderr)
                return 1
            time.sleep(1)
        print(f"server ready in {time.monotonic() - t0:.1f} s", flush=True)
        env = environment(f"cuda:{args.devices.split(',')[0]}" if args.devices else args.device)
        failed = False
        for mode, levels in (("unary", args.unary), ("streaming", args.streaming)):
            if not levels:
                continue
            raw = work / f"server_{mode}.json"
            bench = [sys.executable, "-m", "tts.cli.bench", "--server", f"127.0.0.1:{port}",
                     "--option", f"max_decoder_steps={args.steps}", "--option", "stop_rule=gate", "--requests", "100000", "--timeout", "120",
                     *(["--stream"] if mode == "streaming" else []), "--concurrency", levels,
                     "--duration", f"{args.duration:g}", "--warmup", "8", "--output", str(raw)]
            rc = subprocess.run(bench, cwd=work).returncode
            failed |= rc != 0
            if not raw.exists():
                print(f"bench_server: {mode}: no results (exit {rc})", file=sys.stderr)
                continue
            doc = {"kind": "tts-server-load", "mode": mode, "precision": args.precision,
                   "command": f"{shown(server, 'tts-server')}; {shown(bench, 'tts-bench')}",
                   "environment": env, "rows": json.loads(raw.read_text())}
            (args.out / f"server_{mode}.json").write_text(json.dumps(doc, indent=1) + "\n")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    tracebacks = log_path.read_text(errors="replace").count("Traceback")
    print(f"server tracebacks: {tracebacks}")
    return 1 if failed or tracebacks else 0


if __name__ == "__main__":
    sys.exit(main())
