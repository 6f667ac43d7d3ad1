"""Benchmark records: raw outputs -> ``results.json`` -> the results table of ``README.md``.

    python3 benchmarks/collect.py RAW_DIR [RAW_DIR ...]  # add or replace these runs' records, re-render
    python3 benchmarks/collect.py --rebuild              # results.json afresh from every folder in raw/
    python3 benchmarks/collect.py --render               # only the README table, from results.json
    python3 benchmarks/collect.py --check                # exit 1 if results.json or the table is stale

A raw folder is named ``MACHINE-YYYY-MM-DD`` (``raw/h100-2026-11-22``) and holds what the
``tools/gpu`` scripts wrote on that machine that day:

- ``tts-bench --output`` JSON (environment and command inside): the end-to-end, decoder-step
  and WaveGlow figures of each (batch, input length) it ran; of a ``--walk`` only batch 1 and 8
  at 128 characters, and a dedicated run of the same shape in the same folder replaces those;
- ``tools/gpu/bench_server.py`` JSON (``kind: tts-server-load``), or the bare row list that
  ``tts-bench --server --json`` writes: requests per second, latency, time to first audio;
- ``tools/gpu/bench_engine_cache.py`` JSON (``kind: engine-cache``), or JSON lines of modes
  ``cold`` and ``warm`` in a ``.txt``: time until a server is ready, warm against cold cache;
- ``tools/gpu/bench_decoder_step.py`` JSON (``kind: decoder-step``);
- ``env.txt`` (GPU, driver, versions; first line ``nvidia-smi`` CSV, then ``python X torch Y
  cuda Z triton W``) for files that do not record their environment, and ``commands.txt``
  (``FILE: COMMAND`` lines) for files that do not record their command. Without ``env.txt`` the
  GPU and torch/CUDA versions come from the engine-cache lines of a ``tts-server`` log there.

A record is keyed by (figure, GPU, batch, precision, input, concurrency); collecting a folder
replaces the records with the same key. Every ratio is against a baseline measured in the same
run, or absent. A ``tts-bench`` record carries both of its baselines: ``baseline_torchscript``
(NVIDIA's ``inference.py`` as it runs, ``torch.jit.script`` of Tacotron2 and WaveGlow) and
``baseline_eager`` (the same models without TorchScript), each with its ratio; the headline
``baseline``/``ratio`` is TorchScript's where the run measured it (Tacotron2 runs since the
baseline exists), else eager's. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
README = HERE / "README.md"
RAW = HERE / "raw"
BEGIN = "<!-- results:begin (written by benchmarks/collect.py from results.json; do not edit by hand) -->"
END = "<!-- results:end -->"
#: The fields every record has (``None`` where a figure has no such thing, e.g. a server's batch).
REQUIRED = ("figure", "name", "value", "unit", "better", "gpu", "versions", "batch", "precision", "input",
            "concurrency", "command", "baseline", "baseline_value", "ratio", "baseline_torchscript",
            "ratio_torchscript", "baseline_eager", "ratio_eager", "date", "source")
#: Names of the two inference baselines in records and the table.
TORCHSCRIPT = "TorchScript (DLE inference.py)"
EAGER = "eager PyTorch"
VERSION_KEYS = ("python", "torch", "cuda", "triton", "driver")
#: Table order.
FIGURES = ("e2e_tacotron2", "decoder_step", "decoder_step_alone", "waveglow", "e2e_tacotron2_hifigan", "hifigan",
           "e2e_fastspeech",
           "server_unary_throughput", "server_unary_latency", "server_ttfa", "engine_cache_ready",
           "train_tacotron2", "train_waveglow")
#: The vocoders' names in records (``tts-bench`` JSON's ``vocoder``).
VOCODER_NAMES = {"waveglow": "WaveGlow", "hifigan": "HiFi-GAN", "griffinlim": "Griffin-Lim"}
#: The shapes a ``tts-bench --walk`` contributes.
WALK_BATCHES = (1, 8)
WALK_LENGTH = 128


class CollectError(Exception):
    pass


# ----------------------------------------------------------------------------- reading a folder

def sig(v: float | None, digits: int = 4) -> float | None:
    return None if v is None else float(f"{v:.{digits}g}")


def read_env_txt(folder: Path) -> dict:
    """``env.txt``: an ``nvidia-smi --format=csv`` line (name, driver, ...) and ``python X torch Y ...``."""
    p = folder / "env.txt"
    env: dict = {}
    if not p.exists():
        return env
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("name,"):
            continue
        if "," in line and "gpu" not in env:
            parts = [x.strip() for x in line.split(",")]
            env["gpu"], env["driver"] = parts[0], (parts[1] if len(parts) > 1 else None)
        else:
            words = line.split()
            env.update(dict(zip(words[::2], words[1::2])))
    return env


_CACHE_NAME = re.compile(r"(?:tacotron2|waveglow|fastspeech)-(?P<gpu>[A-Za-z0-9-]+?)-sm\d+-fp(?:16|32)-"
                         r"torch(?P<torch>[0-9.]+)-cu(?P<cu>\d+)-")


def env_from_server_log(folder: Path) -> dict:
    """GPU name and torch/CUDA versions from the engine-cache file names a ``tts-server`` log prints."""
    for log in sorted(folder.glob("*.log")):
        m = _CACHE_NAME.search(log.read_text(encoding="utf-8", errors="replace"))
        if m:
            cu = m["cu"]
            return {"gpu": m["gpu"].replace("-", " "), "torch": f"{m['torch']}+cu{cu}",
                    "cuda": f"{cu[:-1]}.{cu[-1]}"}
    return {}


def read_commands(folder: Path) -> dict[str, str]:
    p = folder / "commands.txt"
    out: dict[str, str] = {}
    if p.exists():
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                name, _, cmd = line.partition(":")
                out[name.strip()] = cmd.strip()
    return out


def normalize_command(cmd: str) -> str:
    """``/tmp/pp/tts/cli/bench.py ... --output /root/out/x.json`` -> ``tts-bench ... --output x.json``.

    Commands joined by ``; `` (a server, then the load on it) are normalised one by one.
    """
    parts = []
    for part in cmd.split("; "):
        words = shlex.split(part)
        if words and Path(words[0]).name in ("bench.py", "tts-bench"):
            words[0] = "tts-bench"
        for i, w in enumerate(words[:-1]):
            if w in ("--output", "--json", "--plot"):
                words[i + 1] = Path(words[i + 1]).name
        parts.append(shlex.join(words))
    return "; ".join(parts)


def option(cmd: str, name: str) -> str | None:
    """The value of ``name`` in a command line (last occurrence), or None."""
    words = shlex.split(cmd.replace(";", " "))
    found = None
    for i, w in enumerate(words):
        if w == name and i + 1 < len(words):
            found = words[i + 1]
        elif w.startswith(name + "="):
            found = w.split("=", 1)[1]
    return found


class Run:
    """One raw file and what is known of the run that wrote it."""

    def __init__(self, path: Path, doc, folder_env: dict, commands: dict[str, str], date: str, root: Path):
        self.path, self.doc, self.date = path, doc, date
        self.source = path.relative_to(root).as_posix()
        env = dict(folder_env)
        if isinstance(doc, dict):
            own = doc.get("environment") or {}
            if "device" in doc and "gpu" not in own and isinstance(doc.get("device"), str):
                own = {"gpu": doc["device"], "torch": doc.get("torch")}
            env.update({k: v for k, v in own.items() if v is not None})
        self.gpu = env.get("gpu")
        if not self.gpu:
            raise CollectError(f"{self.source}: no GPU recorded (no environment in the file, no env.txt)")
        self.versions = {k: (str(env[k]) if env.get(k) is not None else None) for k in VERSION_KEYS}
        cmd = doc.get("command") if isinstance(doc, dict) else None
        cmd = cmd or commands.get(path.name)
        if not cmd:
            raise CollectError(f"{self.source}: no command recorded (none in the file, none in commands.txt)")
        self.command = normalize_command(cmd)
        devices = option(self.command, "--devices")
        if devices and "," in devices:
            self.gpu = f"{len(devices.split(','))}x {self.gpu}"

    def record(self, figure: str, name: str, value: float, unit: str, better: str, *, batch: int | None,
               precision: str | None, input: str, baseline: str | None = None,
               baseline_value: float | None = None, concurrency: int | None = None, note: str = "",
               extra: dict | None = None, torchscript: float | None = None, eager: float | None = None) -> dict:
        """One record. ``torchscript``/``eager``: the inference baselines of the same run; the
        headline baseline is TorchScript's when given, else ``baseline`` (eager's when
        ``baseline`` is None and ``eager`` is given)."""
        value, baseline_value = sig(value), sig(baseline_value)
        torchscript, eager = sig(torchscript), sig(eager)

        def ratio_of(base: float | None) -> float | None:
            if base is None or not value:
                return None
            return sig(base / value if better == "lower" else value / base, 3)

        if torchscript is not None:
            baseline, baseline_value = TORCHSCRIPT, torchscript
        elif baseline_value is None and eager is not None:
            baseline, baseline_value = EAGER, eager
        rec = {"figure": figure, "name": name, "value": value, "unit": unit, "better": better,
               "gpu": self.gpu, "versions": self.versions, "batch": batch, "precision": precision,
               "input": input, "concurrency": concurrency, "command": self.command,
               "baseline": baseline if baseline_value is not None else None, "baseline_value": baseline_value,
               "ratio": ratio_of(baseline_value), "baseline_torchscript": torchscript,
               "ratio_torchscript": ratio_of(torchscript), "baseline_eager": eager, "ratio_eager": ratio_of(eager),
               "date": self.date, "source": self.source, "note": note}
        if extra:
            rec["extra"] = extra
        return rec


def load_raw(path: Path):
    """The parsed content of a raw file, or None for files that carry no figures."""
    if path.name in ("env.txt", "commands.txt") or path.suffix not in (".json", ".txt"):
        return None
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        doc = json.loads(text)
        # benchmarks/cpu_voices.py: CPU speeds of the bundled voices, told below the table, not in it
        return None if isinstance(doc, dict) and doc.get("kind") == "cpu-voices" else doc
    lines = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    modes = {x.get("mode") for x in lines}
    if lines and modes <= {"cold", "warm"} and all("ready_s" in x for x in lines):
        return {"kind": "engine-cache", "runs": lines, "legacy": True}
    return None


def records_of(run: Run) -> list[dict]:
    doc = run.doc
    if isinstance(doc, list) and doc and "audio_rtf" in doc[0]:
        mode = "streaming" if "streaming" in run.path.name else "unary"
        return from_server(run, {"mode": mode, "rows": doc})
    if not isinstance(doc, dict):
        raise CollectError(f"{run.source}: not a known benchmark output")
    kind = doc.get("kind")
    if kind == "tts-server-load":
        return from_server(run, doc)
    if kind == "engine-cache":
        return from_engine_cache(run, doc)
    if kind == "decoder-step":
        return from_decoder_step(run, doc)
    if "rows" in doc and "acoustic" in doc:
        return from_tts_bench(run, doc)
    if "summary" in doc and "utterances" in doc:
        return from_t2_train(run, doc)
    if "segment_length" in doc and "runs" in doc:
        return from_wg_train(run, doc)
    raise CollectError(f"{run.source}: not a known benchmark output")


# ----------------------------------------------------------------------------- one parser per kind

def from_tts_bench(run: Run, doc: dict) -> list[dict]:
    rows = {(r["component"], r["backend"], r["batch"], r["input_length"]): r for r in doc["rows"]}
    shapes = sorted({(b, n) for _, _, b, n in rows})
    if "--walk" in shlex.split(run.command):
        shapes = [(b, n) for b, n in shapes if b in WALK_BATCHES and n == WALK_LENGTH]
    prec, steps = doc["precision"], doc.get("num_frames")
    verify = [{k: sig(v[k]) if isinstance(v[k], float) else v[k]
               for k in ("engine_precision", "mel_max_abs_err", "audio_snr_db", "mel_ok", "audio_ok")}
              for v in doc.get("verify", [])]
    verify_baselines = [{k: sig(v[k]) if isinstance(v[k], float) else v[k]
                         for k in ("precision", "mel_max_abs_diff", "audio_max_abs_diff", "ok")}
                        for v in doc.get("verify_baselines", [])]
    vocoder = doc.get("vocoder", "waveglow")    # files older than the field ran WaveGlow
    if doc["acoustic"] == "tacotron2" and vocoder == "hifigan":   # the decoder's figure is the WaveGlow run's
        figures = [("e2e_tacotron2_hifigan", "Tacotron2 + HiFi-GAN + denoiser, end to end", "end to end", "avg_ms",
                    "ms"),
                   ("hifigan", "HiFi-GAN (DLE's default generator)", "hifigan", "avg_ms", "ms")]
    elif doc["acoustic"] == "tacotron2":
        figures = [("e2e_tacotron2", "Tacotron2 + WaveGlow + denoiser, end to end", "end to end", "avg_ms", "ms"),
                   ("decoder_step", "Tacotron2 decoder step", "decoder", "us_per_step", "us"),
                   ("waveglow", "WaveGlow-256", "waveglow", "avg_ms", "ms")]
    else:
        figures = [(f"e2e_fastspeech{'_' + vocoder if vocoder != 'waveglow' else ''}",
                    f"FastSpeech + {VOCODER_NAMES.get(vocoder, vocoder)} + denoiser, end to end", "end to end",
                    "avg_ms", "ms")]
    voice = option(run.command, "--voice")
    if voice and doc.get("random_weights") is False:    # a real voice, its own vocoder: the p50 is the figure
        figures = [("e2e_voice", f"voice {voice} ({doc['acoustic']} + its vocoder), end to end, p50",
                    "end to end", "p50_ms", "ms")]
    attention = doc.get("stop_rule") == "attention"      # the voices' stop rule: its own records
    if attention:                                       # (the vocoder does not depend on it)
        figures = [f for f in figures if f[0] not in ("waveglow", "hifigan")]
    out = []
    for b, n in shapes:
        for figure, name, comp, key, unit in figures:
            eng, eag = rows.get((comp, "engine", b, n)), rows.get((comp, "eager", b, n))
            # the TorchScript pipeline runs HiFi-GAN eager (DLE scripts only Tacotron2 and WaveGlow)
            ts = rows.get((comp, "torchscript", b, n)) if comp != "hifigan" else None
            if eng is None or eng.get(key) in (None, ""):
                continue
            frames = eng.get("avg_mel_frames")
            if figure in ("waveglow", "hifigan"):
                inp = f"{frames:.0f} mel frames"
            elif doc["acoustic"] == "tacotron2":
                inp = f"{n} characters, {steps} decoder steps" if steps else f"{n} characters"
            else:
                inp = f"{n} characters ({frames:.0f} mel frames)"
            if attention:
                inp += ", attention stop rule"
            note = ""
            if comp == "end to end":
                note = f"RTF {eng['rtf_aggregate']:.0f}"
            elif comp in ("waveglow", "hifigan") and b > 1:
                note = f"{eng['rtf_aggregate']:.0f}x real time"
            extra = {"p50": sig(eng["p50_ms"]), "p99": sig(eng["p99_ms"]), "std": sig(eng["std_ms"]),
                     "unit": "ms"}
            if comp == "end to end" and verify:
                extra["verify"] = verify
            if comp == "end to end" and verify_baselines:
                extra["verify_torchscript_vs_eager"] = verify_baselines
            if doc.get("baseline_fp16"):
                extra["baseline_fp16"] = doc["baseline_fp16"]
            out.append(run.record(figure, name, eng[key], unit, "lower", batch=b, precision=prec, input=inp,
                                  torchscript=ts.get(key) if ts else None, eager=eag.get(key) if eag else None,
                                  note=note, extra=extra))
    return out


def server_input(cmd: str) -> str:
    phrases = option(cmd, "--phrases")
    texts = f"lines of {Path(phrases).name}" if phrases else "tts-bench's 4 built-in sentences"
    steps = [o.split("=", 1)[1] for o in _options(cmd) if o.startswith("max_decoder_steps=")]
    return texts + (f", {steps[-1]} decoder steps each" if steps else "")


def _options(cmd: str) -> list[str]:
    words = shlex.split(cmd.replace(";", " "))
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--option"]


def from_server(run: Run, doc: dict) -> list[dict]:
    rows = sorted(doc["rows"], key=lambda r: r["concurrency"])
    if not rows:
        return []
    prec = doc.get("precision") or option(run.command, "--precision")
    inp = server_input(run.command)
    kw = dict(batch=None, precision=prec, input=inp)
    out = []
    if doc["mode"] == "unary":
        top = rows[-1]
        out.append(run.record(
            "server_unary_throughput", f"tts-server, unary, {top['concurrency']} clients: audio per second",
            top["audio_rtf"], "x real time", "higher", concurrency=top["concurrency"],
            note=f"p50 {top['p50_ms']:.0f} / p99 {top['p99_ms']:.0f} ms, {top['errors']} errors", **kw))
        one = rows[0]
        if one["concurrency"] == 1 and len(rows) > 1:
            out.append(run.record(
                "server_unary_latency", "tts-server, unary, 1 client: latency p50", one["p50_ms"], "ms",
                "lower", concurrency=1,
                note=f"p99 {one['p99_ms']:.0f} ms, {one['audio_rtf']:.0f}x real time", **kw))
    else:
        for row in rows:     # every level: the targets name time to first audio at 1 and at 16 clients
            n = row["concurrency"]
            out.append(run.record(
                "server_ttfa", f"tts-server, streaming, {n} client{'s' if n > 1 else ''}: time to first audio p50",
                row["ttfa_p50_ms"], "ms", "lower", concurrency=n, note=f"p99 {row['ttfa_p99_ms']:.1f} ms", **kw))
    return out


def from_engine_cache(run: Run, doc: dict) -> list[dict]:
    by_mode = {r["mode"]: r for r in doc["runs"]}
    if "warm" not in by_mode:
        return []
    warm, cold = by_mode["warm"], by_mode.get("cold")
    # The JSON-lines form records no shape: it was written for fp16, 128 characters, 64 steps, 580 frames.
    prec = doc.get("precision", "fp16")
    inp = doc.get("input", "Tacotron2 128 characters, 64 decoder steps; WaveGlow 580 mel frames")
    return [run.record("engine_cache_ready", "Engine cache: server ready (both engines + first calls)",
                       warm["ready_s"], "s", "lower", batch=1, precision=prec, input=inp,
                       baseline="empty cache (build)" if cold else None,
                       baseline_value=cold["ready_s"] if cold else None,
                       note=f"Tacotron2 first call {warm['t2_first_call_s']:.2f} s")]


def from_decoder_step(run: Run, doc: dict) -> list[dict]:
    return [run.record("decoder_step_alone", "Tacotron2 decoder step, decode alone", r["engine_us_per_step"], "us",
                       "lower", batch=r["batch"], precision=doc["precision"],
                       input=f"{doc['input_length']} characters, {doc['steps']} decoder steps",
                       eager=r.get("eager_us_per_step")) for r in doc["rows"]]


def from_t2_train(run: Run, doc: dict) -> list[dict]:
    out = []
    for batch, s in sorted(doc["summary"].items(), key=lambda kv: int(kv[0])):
        out.append(run.record(
            "train_tacotron2", "Tacotron2 training step, CUDA-graphed (--graph on)", s["graph_s"], "s", "lower",
            batch=int(batch), precision="fp32 (TF32)", input=f"synthetic corpus, {doc['utterances']} utterances",
            baseline="eager step", baseline_value=s["eager_s"],
            note=f"loss within {s['max_rel_loss_diff']:.0e} relative of the eager step's"))
    return out


def from_wg_train(run: Run, doc: dict) -> list[dict]:
    runs = {r["variant"]: r for r in doc["runs"]}
    picked = doc.get("picked") or {}
    name = "+".join(k for k in ("graph", "compile", "amp") if picked.get(k)) or "eager"
    if name not in runs:
        return []
    best, eager = runs[name], runs.get("eager")
    return [run.record(
        "train_waveglow", f"WaveGlow training step, the picked setting ({name})",
        best["s_per_step_median"] * 1000, "ms", "lower", batch=doc["batch"],
        precision="bf16 autocast" if picked.get("amp") else "fp32 (TF32)",
        input=f"{doc['segment_length']}-sample segments, the bundled voice's WaveGlow",
        baseline="eager fp32 (TF32) step" if eager else None,
        baseline_value=eager["s_per_step_median"] * 1000 if eager else None,
        note=f"loss after {best['steps']} steps {best['loss_last']:.4f}, eager {eager['loss_last']:.4f}"
        if eager else "")]


# ----------------------------------------------------------------------------- collecting

def key(rec: dict) -> tuple:
    return (rec["figure"], rec["gpu"], rec["batch"], rec["precision"], rec["input"], rec["concurrency"])


def collect_folder(folder: Path, root: Path = HERE) -> list[dict]:
    m = re.search(r"-(\d{4}-\d{2}-\d{2})$", folder.name)
    if not folder.resolve().is_relative_to(root.resolve()):
        raise CollectError(f"{folder}: copy it into {root / 'raw'} first (--rebuild reads only that)")
    if not m:
        raise CollectError(f"{folder}: a raw folder is named MACHINE-YYYY-MM-DD")
    env = read_env_txt(folder) or env_from_server_log(folder)
    commands = read_commands(folder)
    runs = []
    for path in sorted(folder.iterdir()):
        doc = load_raw(path)
        if doc is not None:
            runs.append(Run(path, doc, env, commands, m[1], root))
    runs.sort(key=lambda r: ("--walk" not in shlex.split(r.command), r.path.name))   # walks first
    out: dict[tuple, dict] = {}
    for run in runs:
        for rec in records_of(run):
            out[key(rec)] = rec
    return list(out.values())


def merge(records: list[dict], new: list[dict]) -> list[dict]:
    """``records`` with each record of ``new`` replacing the one of the same key (or appended)."""
    index = {key(r): i for i, r in enumerate(records)}
    out = list(records)
    for rec in new:
        if key(rec) in index:
            out[index[key(rec)]] = rec
        else:
            index[key(rec)] = len(out)
            out.append(rec)
    return out


def rebuild(raw: Path = RAW, root: Path = HERE) -> list[dict]:
    records: list[dict] = []
    for folder in sorted(p for p in raw.iterdir() if p.is_dir()):
        records = merge(records, collect_folder(folder, root))
    return sort_records(records)


def sort_records(records: list[dict]) -> list[dict]:
    def order(r):
        rank = FIGURES.index(r["figure"]) if r["figure"] in FIGURES else len(FIGURES)
        return (rank, r["gpu"].split("x ", 1)[-1], r["gpu"], r["batch"] or 0, r["concurrency"] or 0, r["input"])
    return sorted(records, key=order)


def load_results(path: Path = RESULTS) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["records"] if path.exists() else []


def dump_results(records: list[dict]) -> str:
    doc = {"about": "Headline benchmark figures, one record each; written by benchmarks/collect.py from the raw "
                    "files named in 'source'. Never edit by hand. 'ratio' is against 'baseline', measured in the "
                    "same run (>1: better than the baseline).",
           "records": records}
    return json.dumps(doc, indent=1) + "\n"


# ----------------------------------------------------------------------------- rendering

def fmt(v: float) -> str:
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def with_unit(v: float, unit: str) -> str:
    return f"{fmt(v)}{unit}" if unit.startswith("x ") else f"{fmt(v)} {unit}"


def versions_text(v: dict) -> str:
    parts = [f"{label} {v[k]}" for k, label in (("python", "Python"), ("torch", "torch"), ("cuda", "CUDA"),
                                                 ("triton", "Triton")) if v.get(k)]
    missing = [label for k, label in (("triton", "Triton"),) if not v.get(k)]
    text = ", ".join(parts)
    if v.get("driver"):
        text = f"driver {v['driver']}, " + text
    if missing:
        text += f" ({', '.join(missing)} not recorded)"
    return text


def _versus(ratio: float | None, base: float | None, unit: str, bold: bool) -> str:
    if not ratio or base is None:
        return "-"
    r = f"{ratio:.1f}x"
    return f"{'**' + r + '**' if bold else r} ({with_unit(base, unit)})"


def render(records: list[dict]) -> str:
    """The Markdown between the markers: the table (the headline ratio first: against TorchScript,
    NVIDIA's ``inference.py``, where the run measured it), then one line per run (versions,
    command, raw file)."""
    runs: dict[str, int] = {}
    lines = [BEGIN, "",
             "| Figure | GPU | Batch | Precision | Input | Result | vs TorchScript (same run) | vs eager (same run) "
             "| Other baseline (same run) | Run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sort_records(records):
        n = runs.setdefault(r["source"], len(runs) + 1)
        result = with_unit(r["value"], r["unit"]) + (f" ({r['note']})" if r.get("note") else "")
        ts = _versus(r["ratio_torchscript"], r["baseline_torchscript"], r["unit"], True)
        eager = _versus(r["ratio_eager"], r["baseline_eager"], r["unit"], r["baseline"] == EAGER)
        other = "-"
        if r["baseline_value"] and r["baseline"] not in (TORCHSCRIPT, EAGER):
            other = f"{r['baseline']}: {with_unit(r['baseline_value'], r['unit'])}, **{r['ratio']:.1f}x**"
        gpu = r["gpu"].replace("NVIDIA ", "")
        lines.append(f"| {r['name']} | {gpu} | {r['batch'] if r['batch'] is not None else '-'} | "
                     f"{r['precision'] or '-'} | {r['input']} | {result} | {ts} | {eager} | {other} | {n} |")
    lines += ["", "Runs (date, GPU, versions, exact command, raw file):", ""]
    by_source = {r["source"]: r for r in records}
    for source, n in runs.items():
        r = by_source[source]
        lines.append(f"{n}. {r['date']}, {r['gpu']}, {versions_text(r['versions'])}: `{r['command']}` "
                     f"([{source}]({source}))")
    lines += ["", END]
    return "\n".join(lines)


def current_table(readme: str) -> str:
    i, j = readme.find(BEGIN), readme.find(END)
    if i < 0 or j < i:
        raise CollectError("README.md has no results markers")
    return readme[i:j + len(END)]


def write_readme(records: list[dict], path: Path | None = None) -> None:
    path = README if path is None else path
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(current_table(text), render(records)), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="*", type=Path, help="raw folders (MACHINE-YYYY-MM-DD) to add")
    ap.add_argument("--rebuild", action="store_true", help="results.json afresh from every folder under raw/")
    ap.add_argument("--render", action="store_true", help="only rewrite the README table from results.json")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if results.json differs from --rebuild or the README table from it")
    args = ap.parse_args(argv)
    try:
        if args.check:
            ok = True
            if dump_results(rebuild()) != (RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""):
                print("results.json is not what --rebuild makes of raw/", file=sys.stderr)
                ok = False
            if current_table(README.read_text(encoding="utf-8")) != render(load_results()):
                print("the README table is not rendered from results.json (run --render)", file=sys.stderr)
                ok = False
            return 0 if ok else 1
        if args.rebuild:
            records = rebuild()
        elif args.folders:
            records = load_results()
            for folder in args.folders:
                records = merge(records, collect_folder(folder.resolve()))
            records = sort_records(records)
        elif args.render:
            records = load_results()
        else:
            ap.error("give raw folders, --rebuild, --render or --check")
        if not args.render:
            RESULTS.write_text(dump_results(records), encoding="utf-8")
            print(f"{RESULTS.name}: {len(records)} records")
        write_readme(records)
        return 0
    except CollectError as exc:
        print(f"collect.py: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
