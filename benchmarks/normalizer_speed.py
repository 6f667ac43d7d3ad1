"""Text front end time per sentence: the ``full`` normalizer against ``dle`` (NVIDIA's cleaners only).

    python benchmarks/normalizer_speed.py TRANSCRIPTS.txt [...] [--frontend tacotron2] [--repeats 5]

Transcript lines are ``id|text`` (LJSpeech's ``metadata`` layout; a line with
no ``|`` is all text). Each repeat runs the whole file through
``tts.text.encode`` once with ``dle`` and once with ``full`` (interleaved, in
the same process), timing every sentence; the figures are the median over
repeats of the mean per sentence, and the 99th percentile over all sentences.
``normalize`` alone (the ``full`` normalizer without the cleaners) is timed
the same way. ``--check`` exits 1 unless ``full`` takes at most 0.5 ms per
sentence and at most 10 times as long as ``dle``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

MAX_MEAN_MS = 0.5
MAX_RATIO = 10.0


def read_sentences(paths: list[str]) -> list[str]:
    sentences = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                text = line.rstrip("\n").split("|", 1)[-1]
                if text.strip():
                    sentences.append(text)
    return sentences


def time_pass(fn, sentences: list[str]) -> list[float]:
    """Seconds per sentence of one pass over ``sentences``."""
    clock = time.perf_counter
    out = []
    for text in sentences:
        t0 = clock()
        fn(text)
        out.append(clock() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("transcripts", nargs="+", help="transcript files (id|text lines)")
    p.add_argument("--frontend", default="tacotron2", choices=["tacotron2", "fastspeech"])
    p.add_argument("--repeats", type=int, default=5, help="passes over the file per mode (default 5)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--check", action="store_true",
                   help=f"exit 1 unless full <= {MAX_MEAN_MS} ms per sentence and <= {MAX_RATIO:g}x dle")
    args = p.parse_args(argv)

    from tts.text import encode, normalize
    sentences = read_sentences(args.transcripts)
    if not sentences:
        print("no sentences in the given files", file=sys.stderr)
        return 1
    runs = {
        "dle": lambda t: encode(t, args.frontend, "dle"),
        "full": lambda t: encode(t, args.frontend, "full"),
        "normalize_only": normalize,
    }
    for fn in runs.values():                      # warm-up: imports, regex caches
        time_pass(fn, sentences[:200])
    means: dict[str, list[float]] = {k: [] for k in runs}
    every: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(max(1, args.repeats)):
        for name, fn in runs.items():
            times = time_pass(fn, sentences)
            means[name].append(sum(times) / len(times))
            every[name].extend(times)
    result = {
        "sentences": len(sentences), "chars_mean": sum(map(len, sentences)) / len(sentences),
        "frontend": args.frontend, "repeats": max(1, args.repeats),
        "python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor(),
    }
    for name in runs:
        result[f"{name}_mean_ms"] = statistics.median(means[name]) * 1e3
        result[f"{name}_p99_ms"] = statistics.quantiles(every[name], n=100)[98] * 1e3 if len(every[name]) > 1 \
            else every[name][0] * 1e3
    result["full_over_dle"] = result["full_mean_ms"] / result["dle_mean_ms"]
    ok = result["full_mean_ms"] <= MAX_MEAN_MS and result["full_over_dle"] <= MAX_RATIO
    result["within_limits"] = ok
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['sentences']} sentences ({result['chars_mean']:.0f} characters on average), "
              f"front end {args.frontend}, median of {result['repeats']} passes")
        print(f"{'':<16}{'mean ms':>9}{'p99 ms':>9}")
        for name in runs:
            print(f"{name:<16}{result[name + '_mean_ms']:>9.4f}{result[name + '_p99_ms']:>9.4f}")
        print(f"full / dle: {result['full_over_dle']:.2f}x  (limits: full <= {MAX_MEAN_MS} ms, "
              f"<= {MAX_RATIO:g}x dle: {'met' if ok else 'NOT met'})")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
