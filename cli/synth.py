"""``tts-synth phrases.txt --out audio/``: one WAV per phrase line, with a timing report.

``tts-synth --text "Hello." --out hello.wav`` speaks one string; ``--list-voices`` names the
bundled voices. ``--out`` is read as ``tts-client`` reads it (``tts.cli.common.Output``).

Phrase file: UTF-8, one utterance per line. Blank lines are skipped; output
files are numbered by line number in the file (line 3 -> ``3.wav``), so a
file can always be traced back to its line. Characters the voice has no
symbol for are not spoken and are listed in the report. Every line is
checked before any audio is made: a file with an invalid line produces no
output at all. Files are written atomically (a file that exists is complete).
``--timings`` writes ``N.json`` beside ``N.wav``: when each word of the line is spoken.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import sys
from typing import Any

from tts.cli.common import (OUT_HELP, Output, add_lexicon_argument, add_option_arguments, add_threads_argument,
                            add_voice_arguments, apply_threads, engine_cache_from_args, lexicon_from_args,
                            new_parser, options_from_args, positive_int, read_phrases, run_main, voice_from_args)
from tts.errors import InvalidInputError, TTSError
from tts.options import DEFAULT_MAX_TEXT_CHARS

logger = logging.getLogger(__name__)

PROG = "tts-synth"
STAGES = ("text", "acoustic", "vocoder", "denoiser")
#: --format -> (tts.audio encoding, file suffix). mulaw/alaw: 8-bit G.711 samples in a WAV file.
FORMATS = {"wav": ("WAV", ".wav"), "wav-float": ("WAV_FLOAT32", ".wav"), "flac": ("FLAC", ".flac"),
           "mp3": ("MP3", ".mp3"), "mulaw": ("WAV_MULAW", ".wav"), "alaw": ("WAV_ALAW", ".wav")}
#: The --format an --out file's suffix implies.
FORMAT_OF_SUFFIX = {".wav": "wav", ".flac": "flac", ".mp3": "mp3"}


def build_parser() -> argparse.ArgumentParser:
    p = new_parser(
        PROG, "Render a phrase file (one utterance per line), or one --text, into WAV files.",
        epilog="Outputs: N.wav per phrase line N (16-bit PCM), N.mel.npy with --save-mel, and report.json "
               "(latency percentiles, RTF, versions) in the --out folder; with --out NAME.wav and one --text, "
               "that file alone. Exit status: 0 all written, 1 error, 2 usage.")
    p.add_argument("phrases", nargs="?", metavar="PHRASES|-",
                   help="UTF-8 text file, one utterance per line (blank lines are skipped); - reads standard input")
    p.add_argument("--text", help="speak this one text instead of a phrase file")
    p.add_argument("--out", metavar="FILE|DIR", help=OUT_HELP)
    p.add_argument("--list-voices", action="store_true", help="print the bundled voices and exit")
    add_voice_arguments(p)
    add_lexicon_argument(p)
    add_option_arguments(p)
    g = p.add_argument_group("run")
    g.add_argument("--batch", type=positive_int, default=1, metavar="N",
                   help="phrases per batch (default 1: each phrase alone, exactly as NVIDIA's reference "
                        "renders it; larger batches are faster on a GPU)")
    g.add_argument("--format", choices=sorted(FORMATS), default=None,
                   help="audio file format: wav (16-bit PCM), wav-float (32-bit float: the audio exactly), "
                        "flac (16-bit), mp3 (at the voice's rate when MP3 has it, else 48 kHz), mulaw or alaw "
                        "(8-bit G.711 in a .wav file) (default: from the --out NAME's suffix, else wav)")
    g.add_argument("--timings", action="store_true",
                   help="also write N.json beside N.wav: when each word is spoken (start and end seconds), "
                        "the sample rate and the duration")
    g.add_argument("--save-mel", action="store_true",
                   help="also write N.mel.npy: the post-net mel [n_mel, T] float32")
    g.add_argument("--max-chars", type=positive_int, default=DEFAULT_MAX_TEXT_CHARS, metavar="N",
                   help=f"longest phrase accepted, in characters (default {DEFAULT_MAX_TEXT_CHARS}); longer lines "
                        "are an error. "
                        "Long phrases are split at sentence/clause boundaries and rendered whole")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    g.add_argument("--quiet", action="store_true", help="print no table at the end")
    add_threads_argument(g)
    return p


def list_voices() -> int:
    """Prints the bundled voices (name, models, rate; the default first) from their manifests."""
    from tts.voice import BUNDLED_DIR, MANIFEST, bundled_voices
    names = bundled_voices()
    if not names:
        print("no bundled voices (give --voice DIR or checkpoint files)")
    for i, name in enumerate(names):
        m = json.loads((BUNDLED_DIR / name / MANIFEST).read_text(encoding="utf-8"))
        models = f"{m['acoustic']['kind']} + {m['vocoder']['kind']}"
        print(f"{name}\t{models}\t{m.get('sample_rate', '?')} Hz{'  (default)' if i == 0 else ''}")
    return 0


def output_format(args: argparse.Namespace, out: Output) -> tuple[str, str]:
    """(tts.audio encoding, suffix) from --format, else from the --out file's suffix."""
    fmt = args.format
    if out.is_file:
        suffix = out.path.suffix.lower()
        if fmt is None:
            fmt = FORMAT_OF_SUFFIX.get(suffix, "wav")
        if FORMATS[fmt][1] != suffix:
            raise InvalidInputError(f"--out {out.path}: --format {fmt} writes {FORMATS[fmt][1]} files", field="out")
    return FORMATS[fmt or "wav"]


def timings_json(result, sample_rate: int) -> bytes:
    """``N.json`` of ``--timings``: the text, the file's sample rate, the duration and the words' times."""
    doc = {"text": result.text, "sample_rate": sample_rate, "duration_s": result.audio_seconds,
           "words": [{"word": w.word, "start_s": w.start_s, "end_s": w.end_s,
                      "char_start": w.char_start, "char_end": w.char_end} for w in result.words]}
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.list_voices and (args.phrases is None) == (args.text is None):
        parser.error("give a phrase file or --text TEXT (one of them)")
    return run_main(PROG, lambda: _run(args, argv if argv is not None else sys.argv[1:]))


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    if args.list_voices:
        return list_voices()
    # The inputs are checked before torch is imported and any model loads.
    options = options_from_args(args)
    lexicon = lexicon_from_args(args)
    if args.text is not None:
        if not args.text.strip():
            raise InvalidInputError("--text is empty", field="text")
        phrases = [(1, args.text.strip())]
    else:
        phrases = read_phrases(args.phrases)
    out = Output.parse(args.out, one_text=args.text is not None, suffixes=tuple(FORMAT_OF_SUFFIX),
                       default_suffix=FORMATS[args.format or "wav"][1])
    encoding, suffix = output_format(args, out)
    apply_threads(args.threads)
    from tts.audio import MP3_RATES, encode, resample, write_atomic, write_npy
    from tts.report import LatencyStats, environment, format_table, rtf
    from tts.synthesizer import Synthesizer

    # This command reports dropped characters and max-decoder-step hits per phrase line itself.
    logging.getLogger("tts.models").setLevel(logging.ERROR)
    voice = voice_from_args(args)
    synth = Synthesizer(voice, device=args.device, precision=args.precision, max_batch=args.batch,
                        max_text_chars=args.max_chars, engine=args.engine,
                        engine_cache=engine_cache_from_args(args), lexicon=lexicon)
    plans = {}
    for n, text in phrases:     # every line planned (and checked) once, before any audio is made
        try:
            plans[n] = synth.plan(text, options)
        except InvalidInputError as exc:
            where = "--text" if args.text is not None else \
                f"{'<stdin>' if args.phrases == '-' else args.phrases}: line {n}"
            raise InvalidInputError(f"{where}: {exc}", field="phrases") from None

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
                results = synth.synthesize_batch([plans[n] for n, _ in group], options, word_timings=args.timings)
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
                path = out.file_for(n, suffix)
                audio, rate = r.audio, r.sample_rate
                if encoding == "MP3" and rate not in MP3_RATES:
                    audio, rate = resample(audio, rate, 48000), 48000
                write_atomic(path, encode(audio, rate, encoding))
                if args.timings:
                    write_atomic(path.with_suffix(".json"), timings_json(r, rate))
                wav = path.name
                entry = {"line": n, "file": wav, "chars": len(text), "normalized_text": r.normalized_text,
                         "audio_seconds": r.audio_seconds, "mel_frames": int(r.mel.shape[-1]),
                         "pieces": r.pieces, "latency_s": t.total}
                if r.dropped:
                    entry["dropped_chars"] = r.dropped
                    print(f"{PROG}: warning: line {n}: not spoken (no symbol): {r.dropped!r}", file=sys.stderr)
                if r.hit_max_steps:
                    entry["hit_max_decoder_steps"] = r.hit_max_steps
                    if resolved.stop_rule == "attention":
                        limit = (f"max decoder steps ({resolved.max_decoder_steps}) or its step budget "
                                 "(10 frames per symbol + 120) before the stop gate or the attention ended it")
                    else:
                        limit = f"max decoder steps ({resolved.max_decoder_steps}) before the stop gate"
                    print(f"{PROG}: warning: line {n}: reached {limit}: "
                          "the audio may be cut short, or run on past the text",
                          file=sys.stderr)
                if args.timings:
                    entry["timings_file"] = path.with_suffix(".json").name
                if args.save_mel:
                    entry["mel_file"] = f"{path.stem}.mel.npy"
                    write_npy(path.with_name(entry["mel_file"]), r.mel)
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
        if s == "total":        # audio per second only end to end: a stage alone makes no audio
            stages["end_to_end"] = {**st.as_ms(), "rtf": rtf(audio_s, st.total),
                                    "samples_per_second": audio_s * voice.sample_rate / st.total if st.total else 0.0}
        else:
            stages[s] = {**st.as_ms(), "share_of_total": st.total / compute_s if compute_s else 0.0}
    report = {
        "command": [PROG, *argv], "phrase_file": None if args.text is not None else str(args.phrases),
        "text": args.text, "out": str(out.path),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": not interrupted and not failures, "interrupted": interrupted,
        "phrases": len(phrases), "written": len(utterances), "failures": failures,
        "device": str(synth.device), "precision": args.precision, "batch": args.batch,
        "voice": voice.describe(), "options": resolved.as_dict(),
        "lexicon": {"file": str(args.lexicon), "words": len(lexicon)} if lexicon else None,
        "latency_unit": "ms per batch call (all phrases of a batch share its latency)",
        "stage_share_unit": "share_of_total: the stage's time / end-to-end time; RTF (audio seconds / "
                            "compute seconds) is end to end only",
        "stages": stages,
        "totals": {"audio_seconds": audio_s, "compute_seconds": compute_s, "rtf": rtf(audio_s, compute_s),
                   "samples_per_second": audio_s * voice.sample_rate / compute_s if compute_s else 0.0},
        "environment": environment(synth.device),
        "utterances": utterances,
    }
    report_file = None
    if not out.is_file:
        out.path.mkdir(parents=True, exist_ok=True)
        report_file = out.path / "report.json"
        write_atomic(report_file, (json.dumps(report, indent=2) + "\n").encode())
    if interrupted:
        raise KeyboardInterrupt
    if not args.quiet:
        rows = [{"stage": k, **v, "share": 100.0 * v["share_of_total"] if "share_of_total" in v else 100.0}
                for k, v in stages.items()]
        print(format_table(rows, [("stage", "stage"), ("mean", "mean ms"), ("p50", "p50 ms"),
                                  ("p90", "p90 ms"), ("p95", "p95 ms"), ("p99", "p99 ms"),
                                  ("share", "% of time"), ("rtf", "RTF"), ("samples_per_second", "samples/s")]))
        print(f"{len(utterances)} of {len(phrases)} phrases -> {out.path}  |  {audio_s:.2f} s of audio in "
              f"{compute_s:.2f} s of compute: RTF {rtf(audio_s, compute_s):.2f}  |  device {synth.device}, "
              f"{args.precision}, batch {args.batch}" + (f"  |  report: {report_file}" if report_file else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
