"""CPU speed of every bundled voice, idle and under a competing load, at several thread settings.

    python3 benchmarks/cpu_voices.py                        # all voices, threads 1,2,2:spin, load 0 and 2
    python3 benchmarks/cpu_voices.py --voices heart --threads 1,2 --load 0 --sentences 2

Each (load, threads, voice) runs in a fresh process, as ``tts-synth --threads N`` would:
``N`` is applied by ``tts.cli.common.apply_threads`` before torch is imported (threads that
wait sleep: ``OMP_WAIT_POLICY=PASSIVE``); ``N:spin`` leaves OpenMP's default wait policy
(waiting threads spin), for comparison. The process loads the voice, speaks one short warm-up
sentence, then the first ``--sentences`` lines of ``phrases/phrase_8_128.txt`` one at a time
(seed 0), and reports audio seconds, wall seconds and CPU seconds of each.

The competing load is ``--load`` busy processes (one pure-Python loop each), started before
the voices run and stopped after. Other programs on the machine are not controlled: the
1-minute load average before each run is recorded so that a reader can see how busy it was.

Writes ``raw/cpu-YYYY-MM-DD/cpu_voices.json`` (or ``--out FILE``) and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PHRASES = ROOT / "phrases" / "phrase_8_128.txt"
#: The bundled voices (tts.voice.bundled_voices, read here without importing torch: each child
#: sets its threads before it imports torch)
VOICES = tuple(sorted(p.name for p in (ROOT / "tts" / "voices").iterdir() if (p / "voice.json").is_file()))
WARMUP_TEXT = "Hello there."


def child(voice: str, threads: str, sentences: int) -> None:
    """Runs in its own process: one JSON line per sentence on stdout."""
    n, _, mode = threads.partition(":")
    if mode == "spin":
        os.environ.pop("OMP_WAIT_POLICY", None)
        import torch
        torch.set_num_threads(int(n))
    else:
        from tts.cli.common import apply_threads
        apply_threads(int(n))
        import torch
    from tts.options import SynthesisOptions
    from tts.synthesizer import Synthesizer
    from tts.voice import load_voice

    t0 = time.perf_counter()
    synth = Synthesizer(load_voice(voice), device="cpu")
    opts = SynthesisOptions(seed=0)
    synth.synthesize(WARMUP_TEXT, opts)
    print(json.dumps({"load_s": time.perf_counter() - t0, "torch_threads": torch.get_num_threads(),
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}), flush=True)
    texts = [t for t in PHRASES.read_text(encoding="utf-8").splitlines() if t.strip()][:sentences]
    for i, text in enumerate(texts):
        w0, c0 = time.perf_counter(), time.process_time()
        r = synth.synthesize(text, opts)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        print(json.dumps({"sentence": i + 1, "chars": len(text), "audio_s": r.audio_seconds, "wall_s": wall,
                          "cpu_s": cpu, "hit_max_decoder_steps": r.hit_max_steps}), flush=True)


def busy() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run_one(voice: str, threads: str, sentences: int, limit_s: float) -> dict:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("OMP_NUM_THREADS", None)
    load_before = os.getloadavg()[0]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", voice, "--threads", threads,
           "--sentences", str(sentences)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=limit_s, cwd=ROOT)
        out, err, timed_out = proc.stdout, proc.stderr, False
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err, timed_out = "", True
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    head = lines[0] if lines and "load_s" in lines[0] else {}
    rows = [x for x in lines if "sentence" in x]
    audio = sum(x["audio_s"] for x in rows)
    wall = sum(x["wall_s"] for x in rows)
    cpu = sum(x["cpu_s"] for x in rows)
    return {"voice": voice, "threads": threads, "sentences": rows, "timed_out": timed_out,
            "error": None if rows or timed_out else err.strip().splitlines()[-1:],
            "process_s": time.perf_counter() - t0, "load_avg_1min_before": load_before,
            "load_avg_1min_after": os.getloadavg()[0], **head,
            "audio_s": audio, "wall_s": wall, "cpu_s": cpu,
            "rtf": audio / wall if wall else None, "rtf_per_cpu_s": audio / cpu if cpu else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--voices", default=",".join(VOICES), help="comma-separated bundled voice names")
    p.add_argument("--threads", default="1,2,2:spin", help="thread settings: N (sleeping waiters) or N:spin")
    p.add_argument("--load", default="0,2", help="competing busy processes, one run per value")
    p.add_argument("--sentences", type=int, default=2, help="sentences of phrases/phrase_8_128.txt per run")
    p.add_argument("--limit", type=float, default=420.0, help="seconds one run may take before it is stopped")
    p.add_argument("--out", metavar="FILE", help="JSON output (default: raw/cpu-DATE/cpu_voices.json)")
    p.add_argument("--child", metavar="VOICE", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.threads, args.sentences)
        return 0
    date = _dt.date.today().isoformat()
    out = Path(args.out) if args.out else HERE / "raw" / f"cpu-{date}" / "cpu_voices.json"
    runs = []
    for load in (int(x) for x in args.load.split(",")):
        procs = [busy() for _ in range(load)]
        try:
            time.sleep(1.0 if load else 0.0)
            for voice in args.voices.split(","):
                for threads in args.threads.split(","):
                    r = run_one(voice, threads, args.sentences, args.limit)
                    r["competing_processes"] = load
                    runs.append(r)
                    rtf = f"{r['rtf']:.2f}x" if r["rtf"] else "-"
                    print(f"load {load}  {voice:24s} threads {threads:7s} RTF {rtf:>7s}  "
                          f"audio {r['audio_s']:.1f} s  wall {r['wall_s']:.1f} s  cpu {r['cpu_s']:.1f} s  "
                          f"load avg before {r['load_avg_1min_before']:.2f}"
                          + ("  TIMED OUT" if r["timed_out"] else "") + (f"  {r['error']}" if r["error"] else ""),
                          flush=True)
        finally:
            for b in procs:
                b.kill()
                b.wait()
    import torch
    doc = {"kind": "cpu-voices", "date": date, "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
           "about": "RTF = seconds of audio / wall seconds of synthesis (after load and warm-up); "
                    "rtf_per_cpu_s = seconds of audio / CPU seconds of the process",
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                       "torch": torch.__version__, "processor": platform.processor() or platform.machine()},
           "phrases": str(PHRASES.relative_to(ROOT)), "runs": runs}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
