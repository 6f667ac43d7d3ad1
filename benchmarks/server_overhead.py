"""The server's own cost per request: the same request in process and through a real ``tts-server``.

    python benchmarks/server_overhead.py --voice fixture-t2                  # CPU, Tacotron2 + WaveGlow fixtures
    python benchmarks/server_overhead.py --voice fixture-fs --http --stream  # FastSpeech fixture, every door
    python benchmarks/server_overhead.py --voice DIR --device cuda --precision fp16 \
        --stream --concurrency 1,16,64
    python benchmarks/server_overhead.py --voice fixture-t2 --profile /tmp/server.svg   # py-spy the server

Runs one text, with the same options, (a) in process through ``Synthesizer.synthesize`` and
(b) through a ``tts-server`` started here on loopback (its own process, as deployed): one
gRPC client sending unary calls, then (``--stream``) streaming calls (time to first audio),
then (``--http``) ``POST /v1/audio/speech`` on the HTTP door, each call followed by an
in-process one, so that both see the same machine (other programs' load changes slowly);
then (``--concurrency``) C closed-loop unary clients. It prints the p50 of every path, the gap
(the median of the per-pair differences: what the server adds, gRPC, validation, the batcher
or scheduler, encoding, thread hops), the stage times the server put in its replies, and
writes them all as JSON with ``--json``.

Voices: ``fixture-t2`` / ``fixture-fs`` are the test fixtures (Tacotron2 or FastSpeech with
the fixture WaveGlow; deterministic options, Tacotron2 cut at 80 frames: fast on a CPU),
written to a temporary voice folder so that the server and the in-process run read the very
same voice and defaults; any other value is a bundled voice name or a voice folder.
``--tacotron2 CKPT --waveglow CKPT --defaults JSON`` makes such a folder of checkpoints, e.g. the
random NGC-size voice of ``tools/gpu/bench_server.py`` with ``{"max_decoder_steps": 580}``.

``--profile FILE`` records the server process with ``py-spy`` (``pip install py-spy``; every
thread, idle ones left out) while the single-client unary calls run: a flame graph (``.svg``)
or, with ``.txt``, py-spy's collapsed stacks (``--format raw``); ``--profile-load FILE`` the same
while the ``--concurrency`` levels run.

``--threads N`` sets torch's threads in both the in-process run and the server (``--threads``
of tts-server). Nothing is measured on wall-clock budgets; the numbers are for a reader.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "reference"
TEXT = "Hello there, how are you today?"

#: Deterministic options of the fixture voices (the fixture Tacotron2 never stops on its own).
FIXTURE_DEFAULTS = {"sigma": 0.0, "denoiser_strength": 0.0, "prenet_dropout": 0.0, "max_decoder_steps": 80,
                    "seed": 0}


def fixture_voice(kind: str, folder: Path, defaults: dict | None = None) -> Path:
    """A voice folder for a fixture voice (``fixture-t2``, ``fixture-fs``), written into ``folder``."""
    wg = FIXTURES / "waveglow" / "checkpoint_WaveGlow_ngc_style_ddp.pt"
    if kind == "fixture-t2":
        acoustic = {"kind": "tacotron2", "checkpoint": str(FIXTURES / "tacotron2" / "checkpoint_Tacotron2_current_1gpu.pt")}
        own = dict(FIXTURE_DEFAULTS)
    elif kind == "fixture-fs":
        acoustic = {"kind": "fastspeech", "checkpoint": str(FIXTURES / "fastspeech" / "checkpoint_005000.pt")}
        own = {k: v for k, v in FIXTURE_DEFAULTS.items() if k not in ("max_decoder_steps", "prenet_dropout")}
    else:
        raise ValueError(kind)
    return voice_folder(folder / kind, kind, acoustic, wg, {**own, "text_normalizer": "dle", **(defaults or {})})


def voice_folder(d: Path, name: str, acoustic: dict, waveglow: Path, defaults: dict) -> Path:
    """A voice folder ``d`` (``voice.json``) of an acoustic model and a WaveGlow, with ``defaults``."""
    spec = {"name": name, "sample_rate": 22050, "acoustic": acoustic,
            "vocoder": {"kind": "waveglow", "checkpoint": str(Path(waveglow).resolve())}, "defaults": defaults}
    d.mkdir(parents=True, exist_ok=True)
    (d / "voice.json").write_text(json.dumps(spec, indent=2))
    return d


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def summary(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": 1e3 * pct(values, 50), "p90_ms": 1e3 * pct(values, 90),
            "p99_ms": 1e3 * pct(values, 99), "mean_ms": 1e3 * statistics.fmean(values) if values else float("nan")}


# --------------------------------------------------------------------------- in process

class InProcess:
    """The same voice through ``Synthesizer.synthesize`` in this process."""

    def __init__(self, voice: str, device: str, precision: str, text: str, word_timings: bool) -> None:
        from tts.synthesizer import Synthesizer
        from tts.voice import load_voice

        self.synth = Synthesizer(load_voice(voice), device=device, precision=precision)
        self.text = text
        import inspect

        # asked explicitly where the pipeline takes the flag (older trees always made word timings)
        takes = "word_timings" in inspect.signature(self.synth.synthesize).parameters
        self.kw = {"word_timings": word_timings} if takes else {}
        self.audio_seconds = 0.0

    def __call__(self) -> float:
        t0 = time.perf_counter()
        r = self.synth.synthesize(self.text, **self.kw)
        self.audio_seconds = r.audio_seconds
        return time.perf_counter() - t0


def paired(name: str, path, base: InProcess, requests: int, warmup: int) -> dict:
    """``path()`` (seconds, or a dict of measures with ``total``) and an in-process call, alternately:
    both see the same machine (other programs' load changes slowly), and the gap is the median of
    the per-pair differences."""
    for _ in range(warmup):
        path()
        base()
    measures: dict[str, list[float]] = {}
    own, diffs = [], []
    for _ in range(requests):
        m = path()
        m = m if isinstance(m, dict) else {"total": m}
        b = base()
        for k, v in m.items():
            measures.setdefault(k, []).append(v)
        own.append(b)
        diffs.append(m["total"] - b)
    out = {k: summary(v) for k, v in measures.items()}
    out["in_process"] = summary(own)
    out["gap_p50_ms"] = 1e3 * pct(diffs, 50)
    return out


# --------------------------------------------------------------------------- the server

class Server:
    """A ``tts-server`` subprocess on loopback (free ports), serving one voice."""

    def __init__(self, voice: str, device: str, precision: str, threads: int | None, extra: list[str]) -> None:
        cmd = [sys.executable, "-m", "tts.cli.server", "--voice", voice, "--device", device, "--precision", precision,
               "--host", "127.0.0.1",
               "--port", "0", "--metrics-port", "0", "--http-port", "0", "--log-level", "ERROR", *extra]
        if threads:
            cmd += ["--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=tempfile.gettempdir())   # not the checkout: its tts/ would shadow the one on the path
        self.port = self.http_port = None
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if "serving on" in line:
                addr = line.split("serving on", 1)[1].split(",")[0].strip()
                self.port = int(addr.rsplit(":", 1)[1])
                if "HTTP" in line:
                    self.http_port = int(line.rsplit("port", 1)[1].strip())
                break
        if self.port is None:
            raise RuntimeError("tts-server did not start:\n" + "".join(self.lines))
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stdout:          # keep the pipe empty; show warnings
            self.lines.append(line)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


#: The stages a unary reply times (``tts.v1.Timings``), as the server measured them.
STAGES = ("queue", "text", "acoustic", "vocoder", "denoiser", "encode", "total")


class GrpcCalls:
    """One blocking gRPC channel to the server; each method is one call, timed."""

    def __init__(self, port: int, voice: str, text: str, word_timings: bool) -> None:
        from tts.client import build_request, make_channel
        from tts.server.proto_gen import tts_pb2_grpc

        self.channel = make_channel(f"127.0.0.1:{port}")
        self.stub = tts_pb2_grpc.TextToSpeechStub(self.channel)
        self.unary_req = build_request(text, voice=voice, encoding="LINEAR_PCM16", word_timings=word_timings)
        self.words = 0

    def unary(self) -> dict:
        t0 = time.perf_counter()
        r = self.stub.Synthesize(self.unary_req, timeout=300)
        out = {"total": time.perf_counter() - t0}
        out.update({"server_" + k: getattr(r.timings, k + "_seconds") for k in STAGES})
        self.words = len(r.words)
        return out

    def stream(self) -> dict:
        t0 = time.perf_counter()
        first = None
        for chunk in self.stub.StreamingSynthesize(self.unary_req, timeout=300):
            if first is None and len(chunk.audio):
                first = time.perf_counter() - t0
        return {"total": time.perf_counter() - t0, "first_audio": first}

    def close(self) -> None:
        self.channel.close()


class HttpCalls:
    """One keep-alive HTTP connection; ``speech`` is one ``POST /v1/audio/speech`` (pcm), timed."""

    def __init__(self, port: int, voice: str, text: str) -> None:
        import http.client

        self.body = json.dumps({"model": "tts-1", "voice": voice, "input": text, "response_format": "pcm"})
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def speech(self) -> dict:
        t0 = time.perf_counter()
        self.conn.request("POST", "/v1/audio/speech", body=self.body, headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
        resp.read1(1 << 16)
        first = time.perf_counter() - t0
        resp.read()
        return {"total": time.perf_counter() - t0, "first_audio": first}

    def close(self) -> None:
        self.conn.close()


def concurrent_unary(port: int, voice: str, text: str, clients: int, seconds: float, warmup_s: float) -> dict:
    """``clients`` closed-loop unary clients on one channel for ``seconds`` (after ``warmup_s``)."""
    from tts.client import build_request, make_channel
    from tts.server.proto_gen import tts_pb2_grpc

    req = build_request(text, voice=voice, encoding="LINEAR_PCM16")

    async def run() -> dict:
        async with make_channel(f"127.0.0.1:{port}", aio=True) as ch:
            stub = tts_pb2_grpc.TextToSpeechStub(ch)
            lat, audio = [], []
            t_start = time.perf_counter()
            t_meas, t_end = t_start + warmup_s, t_start + warmup_s + seconds
            errors = 0

            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < t_end:
                    t0 = time.perf_counter()
                    try:
                        r = await stub.Synthesize(req, timeout=300)
                    except Exception:       # noqa: BLE001 - counted
                        errors += 1
                        continue
                    t1 = time.perf_counter()
                    if t0 >= t_meas and t1 <= t_end:
                        lat.append(t1 - t0)
                        audio.append(r.duration_seconds)

            await asyncio.gather(*(worker() for _ in range(clients)))
        out = summary(lat)
        out.update(clients=clients, errors=errors, x_real_time=sum(audio) / seconds, calls_per_s=len(lat) / seconds)
        return out

    return asyncio.run(run())


# --------------------------------------------------------------------------- main

def spy(server: Server, path: str | None) -> subprocess.Popen | None:
    """py-spy recording the server process into ``path`` (collapsed stacks for ``.txt``) until ``unspy``."""
    if not path:
        return None
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    fmt = ["--format", "raw"] if path.endswith(".txt") else []
    prof = subprocess.Popen([exe, "record", "--pid", str(server.proc.pid), "--output", path, "--rate", "200", *fmt],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    time.sleep(1.0)
    return prof


def unspy(prof: subprocess.Popen | None) -> None:
    if prof is not None:
        prof.send_signal(2)
        prof.wait(60)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--voice", default="fixture-t2", help="fixture-t2, fixture-fs, a bundled voice or a voice folder")
    p.add_argument("--tacotron2", metavar="CKPT", help="a Tacotron2 checkpoint (with --waveglow) instead of --voice")
    p.add_argument("--fastspeech", metavar="CKPT", help="a FastSpeech checkpoint (with --waveglow) instead of --voice")
    p.add_argument("--waveglow", metavar="CKPT", help="the WaveGlow checkpoint of --tacotron2/--fastspeech")
    p.add_argument("--defaults", metavar="JSON", help='the voice\'s default options for both runs, e.g. '
                   '\'{"max_decoder_steps": 580, "sigma": 0.6}\' (checkpoints and fixture voices)')
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "fp16"], help="in process and the server")
    p.add_argument("--text", default=TEXT)
    p.add_argument("--requests", type=int, default=40, help="measured calls per path")
    p.add_argument("--warmup", type=int, default=5, help="calls before measuring, per path")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads, in process and in the server (default: 1 on a CPU, where several threads "
                        "slow the decoder's small operators in a server's worker threads; else torch's own)")
    p.add_argument("--word-timings", action="store_true", help="ask for word timings (gRPC and in process)")
    p.add_argument("--stream", action="store_true", help="also streaming calls (time to first audio)")
    p.add_argument("--http", action="store_true", help="also POST /v1/audio/speech (pcm)")
    p.add_argument("--concurrency", default="", metavar="1,16,64", help="also C closed-loop unary clients")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per concurrency level")
    p.add_argument("--profile", metavar="FILE", help="py-spy the server during the single-client unary calls")
    p.add_argument("--profile-load", metavar="FILE", help="py-spy the server during the --concurrency levels")
    p.add_argument("--server-arg", action="append", default=[], help="an extra tts-server flag (repeatable)")
    p.add_argument("--json", metavar="FILE", help="write the results here")
    args = p.parse_args(argv)
    if bool(args.tacotron2 or args.fastspeech) != bool(args.waveglow):
        p.error("--tacotron2 or --fastspeech goes with --waveglow")
    if args.threads is None and args.device == "cpu":
        args.threads = 1

    if args.threads:
        from tts.cli.common import apply_threads
        apply_threads(args.threads)

    import logging
    logging.getLogger("tts").setLevel(logging.ERROR)      # the fixture Tacotron2 warns at its step budget
    tmp = tempfile.TemporaryDirectory(prefix="server-overhead-")
    defaults = json.loads(args.defaults) if args.defaults else {}
    if args.tacotron2 or args.fastspeech:
        kind = "tacotron2" if args.tacotron2 else "fastspeech"
        acoustic = {"kind": kind, "checkpoint": str(Path(args.tacotron2 or args.fastspeech).resolve())}
        voice = str(voice_folder(Path(tmp.name) / "checkpoints", "checkpoints", acoustic, args.waveglow, defaults))
    elif args.voice.startswith("fixture-"):
        voice = str(fixture_voice(args.voice, Path(tmp.name), defaults))
    else:
        voice = str(Path(args.voice).resolve()) if Path(args.voice).exists() else args.voice   # the server runs elsewhere
    from tts.voice import load_voice
    name = load_voice(voice).name
    results: dict = {"voice": args.voice, "device": args.device, "precision": args.precision, "text": args.text,
                     "word_timings": args.word_timings, "threads": args.threads}

    base = InProcess(voice, args.device, args.precision, args.text, args.word_timings)
    server = Server(voice, args.device, args.precision, args.threads, args.server_arg)
    grpc_calls = GrpcCalls(server.port, name, args.text, args.word_timings)
    http_calls = HttpCalls(server.http_port, name, args.text) if args.http else None
    try:
        prof = spy(server, args.profile)
        results["grpc_unary"] = g = paired("grpc_unary", grpc_calls.unary, base, args.requests, args.warmup)
        unspy(prof)
        ip = g["in_process"]
        print(f"in process              p50 {ip['p50_ms']:8.2f} ms  ({base.audio_seconds:.2f} s of audio)")
        print(f"gRPC unary, 1 client    p50 {g['total']['p50_ms']:8.2f} ms  gap {g['gap_p50_ms']:+.2f} ms "
              f"(median of paired differences; {grpc_calls.words} words)")
        print("  as the server timed it, p50 ms: " + ", ".join(
            f"{k} {g['server_' + k]['p50_ms']:.2f}" for k in STAGES), flush=True)
        if args.stream:
            results["grpc_stream"] = st = paired("grpc_stream", grpc_calls.stream, base, args.requests, args.warmup)
            print(f"gRPC streaming          first audio p50 {st['first_audio']['p50_ms']:8.2f} ms, whole p50 "
                  f"{st['total']['p50_ms']:.2f} ms  gap {st['gap_p50_ms']:+.2f} ms", flush=True)
        if http_calls is not None:
            results["http"] = h = paired("http", http_calls.speech, base, args.requests, args.warmup)
            print(f"HTTP speech (pcm)       first bytes p50 {h['first_audio']['p50_ms']:8.2f} ms, whole p50 "
                  f"{h['total']['p50_ms']:.2f} ms  gap {h['gap_p50_ms']:+.2f} ms", flush=True)
        levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
        results["concurrency"] = []
        prof = spy(server, args.profile_load) if levels else None
        for c in levels:
            r = concurrent_unary(server.port, name, args.text, c, args.seconds, warmup_s=min(5.0, args.seconds / 4))
            results["concurrency"].append(r)
            print(f"{c:3d} unary clients   {r['x_real_time']:8.1f}x real time, {r['calls_per_s']:.1f} calls/s, "
                  f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, {r['errors']} errors", flush=True)
        unspy(prof)
    finally:
        grpc_calls.close()
        if http_calls is not None:
            http_calls.close()
        server.stop()
        tmp.cleanup()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
