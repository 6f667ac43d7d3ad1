"""``tts-synth phrases.txt --out audio/``: one WAV per phrase line, with a timing report.

Phrase file: UTF-8, one utterance per line. Blank lines are skipped; output
files are numbered by line number in the file (line 3 -> ``3.wav``), so a
file can always be traced back to its line. Characters the voice has no
symbol for are not spoken and are listed in the report. Every line is
checked before any audio is made: a file with an invalid line produces no
output at all. Files are written atomically (a file that exists is complete).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import sys
from pathlib import Path
from typing import Any

from tts.cli.common import (add_option_arguments, add_voice_arguments, engine_cache_from_args,
                            options_from_args, positive_int, run_main, voice_from_args)
from tts.errors import InvalidInputError, TTSError
from tts.options import DEFAULT_MAX_TEXT_CHARS

logger = logging.getLogger(__name__)

PROG = "tts-synth"
STAGES = ("text", "acoustic", "vocoder", "denoiser")
#: --format -> (tts.audio encoding, file suffix).
FORMATS = {"wav": ("WAV", ".wav"), "wav-float": ("WAV_FLOAT32", ".wav"), "flac": ("FLAC", ".flac")}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Render a phrase file (one utterance per line) into WAV files.",
        epilog="Outputs: N.wav per phrase line N (16-bit PCM), N.mel.npy with --save-mel, and report.json "
               "(latency percentiles, RTF, versions). Exit status: 0 all written, 1 error, 2 usage.")
    p.add_argument("phrases", help="UTF-8 text file, one utterance per line (blank lines are skipped)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    add_voice_arguments(p)
    add_option_arguments(p)
    g = p.add_argument_group("run")
    g.add_argument("--batch", type=positive_int, default=1, metavar="N",
                   help="phrases per batch (default 1: each phrase alone, exactly as NVIDIA's reference "
                        "renders it; larger batches are faster on a GPU)")
    g.add_argument("--format", choices=sorted(FORMATS), default="wav",
                   help="audio file format: wav (16-bit PCM), wav-float (32-bit float: the audio exactly) "
                        "or flac (16-bit)")
    g.add_argument("--save-mel", action="store_true",
                   help="also write N.mel.npy: the post-net mel [n_mel, T] float32")
    g.add_argument("--max-chars", type=positive_int, default=DEFAULT_MAX_TEXT_CHARS, metavar="N",
                   help=f"longest phrase accepted, in characters (default {DEFAULT_MAX_TEXT_CHARS}); longer lines "
                        "are an error. "
                        "Long phrases are split at sentence/clause boundaries and rendered whole")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    g.add_argument("--quiet", action="store_true", help="print no table at the end")
    return p


def read_phrases(path: str) -> list[tuple[int, str]]:
    """(line number, text) of every non-blank line; errors name the file and line."""
    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"{path}: phrase file not found", field="phrases")
    if p.is_dir():
        raise InvalidInputError(f"{path}: is a directory, not a phrase file", field="phrases")
    data = p.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    phrases = []
    for n, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(
                f"{path}: line {n} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                "save the file as UTF-8", field="phrases") from None
        line = line.rstrip("\r")
        if line.strip():
            phrases.append((n, line.strip()))
    if not phrases:
        raise InvalidInputError(f"{path}: no phrases (the file is empty or has only blank lines)",
                                field="phrases")
    return phrases


def prepare_out(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {path}: exists and is not a folder", field="out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".tts-synth-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InvalidInputError(f"--out {path}: cannot write there ({exc.strerror or exc})", field="out") from None
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(PROG, lambda: _run(args, argv if argv is not None else sys.argv[1:]))


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    from tts.audio import encode, write_atomic, write_npy
    from tts.report import LatencyStats, environment, format_table, rtf
    from tts.synthesizer import Synthesizer

    # This command reports dropped characters and max-decoder-step hits per phrase line itself.
    logging.getLogger("tts.models").setLevel(logging.ERROR)
    options = options_from_args(args)
    phrases = read_phrases(args.phrases)
    out = prepare_out(args.out)
    voice = voice_from_args(args)
    synth = Synthesizer(voice, device=args.device, precision=args.precision, max_batch=args.batch,
                        max_text_chars=args.max_chars, engine=args.engine,
                        engine_cache=engine_cache_from_args(args))
    plans = {}
    for n, text in phrases:     # every line planned (and checked) once, before any audio is made
        try:
            plans[n] = synth.plan(text, options)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{args.phrases}: line {n}: {exc}", field="phrases") from None
    encoding, suffix = FORMATS[args.format]

    resolved = options.merged_over(voice.defaults)
    utterances: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    stage_times: dict[str, list[float]] = {s: [] for s in (*STAGES, "total")}
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    from tqdm import tqdm
    bar = tqdm(total=len(phrases), file=sys.stderr, disable=not show, unit="phrase", desc=PROG)
    interrupted = False
    try:
        for i in range(0, len(phrases), args.batch):
            group = phrases[i:i + args.batch]
            try:
                results = synth.synthesize_batch([plans[n] for n, _ in group], options)
            except TTSError as exc:
                for n, _ in group:
                    failures.append({"line": n, "error": str(exc)})
                print(f"{PROG}: error: lines {', '.join(str(n) for n, _ in group)}: {exc}", file=sys.stderr)
                bar.update(len(group))
                continue
            t = results[0].timings
            for s in (*STAGES, "total"):
                stage_times[s].append(getattr(t, s))
            for (n, text), r in zip(group, results):
                wav = f"{n}{suffix}"
                write_atomic(out / wav, encode(r.audio, r.sample_rate, encoding))
                entry = {"line": n, "file": wav, "chars": len(text), "normalized_text": r.normalized_text,
                         "audio_seconds": r.audio_seconds, "mel_frames": int(r.mel.shape[-1]),
                         "pieces": r.pieces, "latency_s": t.total}
                if r.dropped:
                    entry["dropped_chars"] = r.dropped
                    print(f"{PROG}: warning: line {n}: not spoken (no symbol): {r.dropped!r}", file=sys.stderr)
                if r.hit_max_steps:
                    entry["hit_max_decoder_steps"] = r.hit_max_steps
                    print(f"{PROG}: warning: line {n}: reached max decoder steps "
                          f"({resolved.max_decoder_steps}) before the stop gate: the audio may be cut short, "
                          "or run on past the text",
                          file=sys.stderr)
                if args.save_mel:
                    entry["mel_file"] = f"{n}.mel.npy"
                    write_npy(out / entry["mel_file"], r.mel)
                utterances.append(entry)
            bar.update(len(group))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()

    audio_s = sum(u["audio_seconds"] for u in utterances)
    compute_s = sum(stage_times["total"])
    stages = {}
    for s in (*STAGES, "total"):
        st = LatencyStats.of(stage_times[s])
        name = "end_to_end" if s == "total" else s
        stages[name] = {**st.as_ms(), "rtf": rtf(audio_s, st.total),
                        "samples_per_second": audio_s * voice.sample_rate / st.total if st.total else 0.0}
    report = {
        "command": [PROG, *argv], "phrase_file": str(args.phrases), "out": str(out),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": not interrupted and not failures, "interrupted": interrupted,
        "phrases": len(phrases), "written": len(utterances), "failures": failures,
        "device": str(synth.device), "precision": args.precision, "batch": args.batch,
        "voice": voice.describe(), "options": resolved.as_dict(),
        "latency_unit": "ms per batch call (all phrases of a batch share its latency)",
        "stages": stages,
        "totals": {"audio_seconds": audio_s, "compute_seconds": compute_s, "rtf": rtf(audio_s, compute_s),
                   "samples_per_second": audio_s * voice.sample_rate / compute_s if compute_s else 0.0},
        "environment": environment(synth.device),
        "utterances": utterances,
    }
    write_atomic(out / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    if interrupted:
        raise KeyboardInterrupt
    if not args.quiet:
        rows = [{"stage": k, **v} for k, v in stages.items()]
        print(format_table(rows, [("stage", "stage"), ("mean", "mean ms"), ("p50", "p50 ms"),
                                  ("p90", "p90 ms"), ("p95", "p95 ms"), ("p99", "p99 ms"),
                                  ("rtf", "RTF"), ("samples_per_second", "samples/s")]))
        print(f"{len(utterances)} of {len(phrases)} phrases -> {out}  |  {audio_s:.2f} s of audio in "
              f"{compute_s:.2f} s of compute: RTF {rtf(audio_s, compute_s):.2f}  |  device {synth.device}, "
              f"{args.precision}, batch {args.batch}  |  report: {out / 'report.json'}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
