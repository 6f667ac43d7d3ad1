"""Measures the Tacotron2 stop rules on a Tacotron2 voice (``--voice``; default the bundled
``slt-tacotron2``): run-ons, frames against text length.

Every (text, seed) is decoded on the CPU as ``tts-synth --voice VOICE --seed N`` decodes a
one-piece line (one generator per text, seeded with N, drawing the prenet dropout masks), with
``stop_rule="gate"`` (NVIDIA's reference: the stop gate, or ``max_decoder_steps``). One text decoded
alone follows the same steps whatever the rule until it stops, so the step at which
``stop_rule="attention"`` (``tts.models.tacotron2.StopRule``) ends it follows from that run's gate
logits and alignments (``attention_stop``). The first ``--verify`` lines of every seed of the
``val`` set are also decoded with ``stop_rule="attention"`` for real, and their frames compared bit
for bit with the gate run's (``identical``: the whole output where both runs end on the same step,
else the decoder frames both made, before the postnet) and their step counts with the replayed
rule's.

From the gate run it also records the step on which the last symbol's cumulative attention first
reached ``end_mass`` and the gate's distance from it (the numbers the rule's constants come from).

A run-on is a piece that hit its step limit (``max_decoder_steps``, or the attention rule's budget),
or made as many steps as that budget (10 per symbol + 120) whatever its rule, or, for texts of 20
symbols or more, more than ``RUNON_STEPS_PER_SYMBOL`` steps per symbol (the corpus makes 4.5 to
7.5). A "normal" draw is one whose gate fired under the gate rule without a run-on; the attention
rule must end it on the same step.

``--summarize A.json B.json ...`` merges earlier outputs (e.g. a ``val`` and a ``train`` run) and
summarizes them again, without decoding.

Usage (from the repository root)::

    python recipes/bundled_voice/stop_rule.py --out build/stop_rule/stop_rule.json
    python recipes/bundled_voice/stop_rule.py --voice DIR/heart-tacotron2 --out build/stop_rule/heart.json

Sets: ``val`` (the 100 held-out lines of ``../shared/data/ljspeech/val.txt``), ``train`` (the first
``--train-lines`` of ``train.txt``), ``phrases`` (``phrases/phrase_8_128.txt``, seeds 0-9 whatever
``--seeds`` says), ``short`` (very short texts, ``--short-seeds``: the hardest case for an
attention rule, where the attention sits on the last symbol from the start).
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from tts.models.tacotron2 import ATTENTION_STOP
from tts.synthesizer import Synthesizer
from tts.voice import VoiceError, load_voice

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "ljspeech"
if not DATA.is_dir():
    DATA = Path("/work/shared/data/ljspeech")
#: Steps per symbol above which a piece of 20 or more symbols counts as a run-on.
RUNON_STEPS_PER_SYMBOL = 9.0
SHORT = ["Hi.", "Yes.", "No", "Okay.", "Thank you.", "Hello world.", "Wait!", "Why?", "Go", "A", "Stop.",
         "It is done.", "Really?", "No.", "Good morning, everyone."]
MAX_STEPS = 2000
#: The voice measured unless ``--voice`` names another (a bundled name or a voice folder).
VOICE = "slt-tacotron2"


def _read(data: Path, name: str) -> list[str]:
    """``data/name``, or its gzip beside it (``.recipe_data/train.txt.gz`` on the device machine)."""
    path = data / name
    if not path.is_file() and path.with_suffix(path.suffix + ".gz").is_file():
        return gzip.decompress(path.with_suffix(path.suffix + ".gz").read_bytes()).decode().splitlines()
    return path.read_text().splitlines()


def _texts(sets: list[str], train_lines: int, data: Path = DATA) -> list[tuple[str, int, str]]:
    out = []
    if "val" in sets:
        out += [("val", i, ln.split("|", 1)[1]) for i, ln in enumerate(_read(data, "val.txt"))]
    if "train" in sets:
        lines = _read(data, "train.txt")[:train_lines]
        out += [("train", i, ln.split("|", 1)[1]) for i, ln in enumerate(lines)]
    if "phrases" in sets:
        lines = (ROOT / "phrases" / "phrase_8_128.txt").read_text().splitlines()
        out += [("phrases", i + 1, t) for i, t in enumerate(lines)]
    if "short" in sets:
        out += [("short", i, t) for i, t in enumerate(SHORT)]
    return out


def _decode(model, ids: list[int], seed: int, rule: str):
    g = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        return model.infer(torch.tensor([ids]), torch.tensor([len(ids)]), generator=g, stop_rule=rule,
                           max_decoder_steps=MAX_STEPS, gate_threshold=0.5, prenet_dropout=0.5)


def _runon(steps: int, limit: int, n: int) -> bool:
    """Hit its own limit, or ran past the attention rule's budget (10 steps per symbol + 120: twice
    the corpus rate and more), or, from 20 symbols, past ``RUNON_STEPS_PER_SYMBOL``."""
    return (steps >= limit or steps >= ATTENTION_STOP.limit(n, MAX_STEPS)
            or (n >= 20 and steps / n > RUNON_STEPS_PER_SYMBOL))


def attention_stop(gate_logits: torch.Tensor, alignments: torch.Tensor, n: int, threshold: float = 0.5,
                   max_steps: int = MAX_STEPS) -> int:
    """``mel_lengths`` of ``stop_rule="attention"`` replayed on one item's gate run: ``gate_logits
    [steps]``, ``alignments [steps, T_in]`` (the run must reach the rule's stop or ``max_steps``)."""
    rule = ATTENTION_STOP
    limit = rule.limit(n, max_steps)
    cum, count = 0.0, 0
    cums = alignments[:, n - 1].cumsum(0)          # float32, summed in step order as the decoder sums
    for t in range(len(gate_logits)):
        cum = float(cums[t])
        count += cum >= rule.end_mass
        if float(torch.sigmoid(gate_logits[t])) > threshold or (count >= rule.end_frames
                                                                 and t + 1 >= rule.min_steps):
            return t
        if t + 1 >= limit:
            return t + 1
    return len(gate_logits)


def measure(sets: list[str], seeds: list[int], train_lines: int, verify: int, short_seeds: list[int],
            shard: tuple[int, int] = (0, 1), data: Path = DATA, voice_name: str = VOICE) -> dict:
    voice = load_voice(voice_name)
    if voice.acoustic_kind != "tacotron2":
        raise VoiceError(f"{voice_name!r} is a {voice.acoustic_kind} voice; the stop rule is Tacotron2's")
    synth = Synthesizer(voice, device="cpu")
    model = voice.acoustic
    records, skipped = [], 0
    for kind, line, text in _texts(sets, train_lines, data)[shard[0]::shard[1]]:
        plan = synth.plan(text)
        if len(plan.pieces) != 1:
            skipped += 1
            continue
        ids = list(plan.pieces[0][1])
        n = len(ids)
        draws = range(10) if kind == "phrases" else short_seeds if kind == "short" else seeds
        for seed in draws:
            gate = _decode(model, ids, seed, "gate")
            ng = int(gate.mel_lengths[0])
            limit_a = ATTENTION_STOP.limit(n, MAX_STEPS)
            na = attention_stop(gate.gate[0], gate.alignments[0], n)
            fired = ng < MAX_STEPS
            cum = gate.alignments[0, :, n - 1].cumsum(0)
            reached = (cum >= ATTENTION_STOP.end_mass).nonzero()
            end_step = int(reached[0]) if len(reached) else None
            rec = dict(set=kind, line=line, seed=seed, symbols=n, gate_steps=ng, gate_fired=fired,
                       attention_steps=na, attention_limit=limit_a, end_step=end_step,
                       gate_after_end=(ng - end_step) if fired and end_step is not None else None,
                       runon_gate=_runon(ng, MAX_STEPS, n), runon_attention=_runon(na, limit_a, n))
            if kind == "val" and line < verify:
                att = _decode(model, ids, seed, "attention")
                got = int(att.mel_lengths[0])
                keep_g, keep_a = min(ng + 1, MAX_STEPS), min(got + 1, limit_a)
                rec["attention_steps_decoded"] = got
                # the same end: the same output; cut earlier: the decoder frames both made (the
                # postnet's convolutions see where each piece ends)
                out, k = ("mel_postnet", keep_g) if keep_a == keep_g else ("mel", min(keep_a, keep_g))
                same = torch.equal(getattr(gate, out)[..., :k], getattr(att, out)[..., :k])
                rec["identical"] = bool(got == na and (not fired or same))
            records.append(rec)
            print(f"{kind} {line} seed {seed}: {n} symbols, gate {ng}{'' if fired else ' (run-on)'}, "
                  f"attention {na}", file=sys.stderr, flush=True)
    return dict(records=records, skipped_multi_piece=skipped, summary=summarize(records))


def _stats(values: list[float]) -> dict:
    if not values:
        return {}
    v = sorted(values)
    return dict(n=len(v), min=v[0], mean=round(statistics.fmean(v), 3), sd=round(statistics.pstdev(v), 3),
                p99=v[min(len(v) - 1, int(0.99 * len(v)))], max=v[-1])


def summarize(records: list[dict]) -> dict:
    out = {}
    for kind in sorted({r["set"] for r in records}):
        rs = [r for r in records if r["set"] == kind]
        normal = [r for r in rs if r["gate_fired"] and not r["runon_gate"]]
        verified = [r for r in rs if "identical" in r]
        out[kind] = dict(
            draws=len(rs),
            runons_gate=sum(r["runon_gate"] for r in rs),
            runons_attention=sum(r["runon_attention"] for r in rs),
            runons=[dict(line=r["line"], seed=r["seed"], symbols=r["symbols"], gate_steps=r["gate_steps"],
                         attention_steps=r["attention_steps"]) for r in rs if r["runon_gate"] or r["runon_attention"]],
            normal=len(normal),
            normal_changed=[(r["line"], r["seed"], r["gate_steps"], r["attention_steps"])
                            for r in normal if r["attention_steps"] != r["gate_steps"]],
            verified=len(verified), verified_identical=sum(r["identical"] for r in verified),
            gate_after_end=_stats([r["gate_after_end"] for r in normal if r["gate_after_end"] is not None]),
            steps_per_symbol=_stats([round((r["gate_steps"] + 1) / r["symbols"], 3) for r in normal]),
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="val,phrases,short")
    p.add_argument("--seeds", default="0,1", help="seeds of the val and train sets")
    p.add_argument("--train-lines", type=int, default=100)
    p.add_argument("--verify", type=int, default=50, help="val lines (per seed) also decoded with the attention rule")
    p.add_argument("--short-seeds", default="0,1,2,3")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="build/stop_rule/stop_rule.json")
    p.add_argument("--shard", default="0/1", metavar="K/N",
                   help="only every N-th text from the K-th (one process per core; merge with --summarize)")
    p.add_argument("--data", type=Path, default=None, help="folder of val.txt and train.txt (or train.txt.gz); "
                   "default ../shared/data/ljspeech")
    p.add_argument("--voice", default=VOICE, help="a Tacotron2 voice: bundled name or folder")
    p.add_argument("--summarize", nargs="+", metavar="JSON", help="merge and summarize earlier outputs instead")
    a = p.parse_args(argv)
    k, _, n = a.shard.partition("/")
    if not (k.isdigit() and n.isdigit() and int(k) < int(n)):
        p.error(f"--shard must be K/N with 0 <= K < N, got {a.shard!r}")
    k, n = int(k), int(n)
    if a.summarize:
        records = [r for f in a.summarize for r in json.loads(Path(f).read_text())["records"]]
        for r in records:
            r["runon_gate"] = _runon(r["gate_steps"], MAX_STEPS, r["symbols"])
            r["runon_attention"] = _runon(r["attention_steps"], r["attention_limit"], r["symbols"])
        result = dict(records=records, summary=summarize(records), merged=a.summarize)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1))
        print(json.dumps(result["summary"], indent=1))
        return 0
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    try:
        result = measure(a.sets.split(","), [int(s) for s in a.seeds.split(",")], a.train_lines, a.verify,
                         [int(s) for s in a.short_seeds.split(",")], shard=(k, n), data=a.data or DATA,
                         voice_name=a.voice)
    except VoiceError as e:              # measure() loads the voice before it decodes anything
        p.error(f"--voice: {e}")
    result["shard"] = a.shard
    result["voice"] = a.voice
    result["constants"] = dict(end_mass=ATTENTION_STOP.end_mass, end_frames=ATTENTION_STOP.end_frames,
                               min_steps=ATTENTION_STOP.min_steps, steps_per_symbol=ATTENTION_STOP.steps_per_symbol,
                               margin=ATTENTION_STOP.margin, max_decoder_steps=MAX_STEPS)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(dict(summary=result["summary"], seconds=result["seconds"]), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
