"""``python -m tts.train``: corpus building, training chunks, export, plots, quality gate.

Subcommands (each ``--help``):

- ``corpus``   build corpus shards from an ``id|text`` file with a teacher (Festival or hibari);
- ``hibari-pack``  what a machine without hibari's G2P needs to build a hibari corpus: the model, its
  signal processing and the G2P of the texts, done here (``tts.train.hibari.pack_runtime``);
- ``train``    train one model for a chunk (``--resume``; ``--steps``, ``--max-steps``, ``--max-minutes``, ``--until``);
- ``export``   write fp16 weights + ``voice.json`` manifests into a voices folder;
- ``grow-waveglow``  more WN layers / a shorter upsampler for an exported WaveGlow (``tts.train.grow``);
- ``plot``     loss curves (PNG) from the training logs;
- ``gate``     the quality gate (WER, predicted MOS) for a voice or a teacher.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tts.errors import TTSError


def _json_object(flag: str, text: str | None) -> dict | None:
    """The JSON object given to ``flag``; a ``ValueError`` naming the flag if it is not one."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag} is not valid JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object, got {text!r}")
    return value


def _corpus(args: argparse.Namespace) -> int:
    from tts.quality import read_transcripts
    from tts.train.corpus import build_shard
    from tts.train.festival import Festival

    items = read_transcripts(args.texts, args.limit)
    if not items:    # e.g. a slice that starts past the end of train.txt
        raise ValueError(f"{args.texts}: no 'id|text' lines to build a corpus from")
    excluded = 0
    for path in args.exclude or []:    # held-out lines (val.txt) never enter a corpus
        held = {uid for uid, _ in read_transcripts(path)}
        excluded += sum(uid in held for uid, _ in items)
        items = [(uid, text) for uid, text in items if uid not in held]
    if args.teacher == "hibari":
        from tts.train.hibari import HibariConfig, HibariUnavailable
        teacher = HibariConfig(threads=1, g2p=args.hibari_g2p)
        try:
            teacher.load()
        except HibariUnavailable as e:
            print(f"the hibari teacher does not load: {e}", file=sys.stderr)
            return 1
    else:
        teacher = Festival.from_env(args.festival_prefix)
        if not teacher.available():
            print(f"festival with voice {teacher.voice} does not run (prefix {teacher.prefix})", file=sys.stderr)
            return 1
    n = max(1, args.shards)
    shards = [items[i::n] for i in range(n)]
    out = Path(args.out)
    t0 = time.time()
    todo = [k for k in range(n) if args.shard is None or k in args.shard]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futs = {k: pool.submit(build_shard, shards[k], out / f"shard_{k:03d}", teacher) for k in todo}
        stats = {k: f.result() for k, f in futs.items()}
    total = sum(s["audio_seconds"] for s in stats.values())
    kept = sum(s["utterances"] for s in stats.values())
    skipped = sum(len(s["skipped"]) for s in stats.values())
    summary = {"teacher": args.teacher, "utterances": kept, "skipped": skipped, "excluded": excluded,
               "audio_hours": total / 3600,
               "wall_seconds": time.time() - t0, "shards": len(todo), "jobs": args.jobs}
    print(json.dumps(summary))
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return 0


def _hibari_pack(args: argparse.Namespace) -> int:
    from tts.quality import read_transcripts
    from tts.train.corpus import symbol_text
    from tts.train.hibari import HibariUnavailable, pack_runtime

    texts = []
    for path in args.texts:
        texts.extend(symbol_text(text) for _, text in read_transcripts(path))
    try:
        res = pack_runtime(texts, args.out)
    except HibariUnavailable as e:
        print(f"the hibari teacher does not load: {e}", file=sys.stderr)
        return 1
    print(json.dumps(res, indent=1))
    return 0


def _train(args: argparse.Namespace) -> int:
    import torch

    from tts.train.trainer import train

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = _json_object("--settings", args.settings) or {}
    if args.batch_size:
        settings["batch_size"] = args.batch_size
    model_cfg = _json_object("--model-config", args.model_config)
    r = train(args.model, args.corpus, args.out, resume=args.resume, max_steps=args.max_steps,
              max_minutes=args.max_minutes, device=args.device, seed=args.seed,
              log_every=args.log_every, save_minutes=args.save_minutes, settings=settings,
              model_config=model_cfg, init_from=args.init_from, graph=args.graph,
              until=args.until, steps=args.steps)
    print(json.dumps({"model": r.kind, "graph": r.graph, "from_step": r.start_step, "step": r.step,
                      "seconds": round(r.seconds, 1), "losses": r.last_losses}))
    return 0


def _manifests(args: argparse.Namespace) -> int:
    from tts.train.export import write_manifests
    from tts.voice import Voice

    for folder in write_manifests(args.out, args.name, args.teacher):
        Voice.from_dir(folder)
        print(folder)
    return 0


def _export(args: argparse.Namespace) -> int:
    from tts.train.export import export_voices

    if args.only:
        from tts.train.export import export_acoustic
        res = export_acoustic(args.only, args.ckpt_dir, args.out)
    else:
        res = export_voices(args.ckpt_dir, args.out, name=args.name, max_mib=args.max_mib, teacher=args.teacher)
    print(json.dumps(res, indent=1))
    return 0


def _grow(args: argparse.Namespace) -> int:
    import torch

    from tts.train.export import _save
    from tts.train.grow import grow_waveglow, upsampler_error

    src, dst = Path(args.src), Path(args.dst)
    if not src.is_file():
        raise ValueError(f"{src}: no such file")
    try:
        ckpt = torch.load(src, map_location="cpu", weights_only=True)
        ok = isinstance(ckpt, dict) and "config" in ckpt and "upsample.weight" in ckpt.get("state_dict", {})
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input error
        raise ValueError(f"{src}: not a readable checkpoint ({e})") from None
    if not ok:
        raise ValueError(f"{src}: not an exported WaveGlow (tts.train export writes them)")
    mels = fit = test = None
    if args.mel_texts:
        from tts.quality import read_transcripts
        from tts.synthesizer import Synthesizer
        from tts.voice import load_voice

        texts = [t for _, t in read_transcripts(args.mel_texts, args.n)]
        synth = Synthesizer(load_voice(args.voice))
        with torch.no_grad():
            mels = [torch.cat([m for m, _ in r.pieces], dim=-1).float() for r in synth.acoustic(texts)]
            mels = [m.reshape(-1, m.shape[-1]) for m in mels]      # [n_mel, T]
        cut = max(1, len(mels) * 3 // 4)
        fit, test = mels[:cut], mels[cut:] or mels
    grown = grow_waveglow(ckpt, n_layers=args.n_layers, upsample_kernel=args.upsample_kernel, mels=fit)
    sd, gsd = ckpt["state_dict"], grown["state_dict"]
    info = {"from": str(src), "to": str(dst), "config": grown["config"],
            "parameters": sum(v.numel() for v in gsd.values()),
            "parameters_before": sum(v.numel() for v in sd.values()),
            "mib": round(sum(v.numel() * v.element_size() for v in gsd.values()) / 2**20, 2)}
    if test is not None:
        old = (sd["upsample.weight"], sd["upsample.bias"])
        info["upsampler_error"] = round(upsampler_error(old, (gsd["upsample.weight"], gsd["upsample.bias"]), test), 4)
    _save(grown, dst)
    print(json.dumps(info, indent=1))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from tts.train.export import plot_losses

    for p in plot_losses(args.ckpt_dir, args.out):
        print(p)
    return 0


def _gate(args: argparse.Namespace) -> int:
    from tts.train.gate import run_gate

    res = run_gate(args.voice, args.texts, n=args.n, out=args.out, festival_prefix=args.festival_prefix,
                   seed=args.seed, teacher=args.teacher, mos=args.mos)
    print(json.dumps({k: v for k, v in res.items() if k != "sentences"}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tts.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("corpus", help="build corpus shards with a teacher (Festival or hibari)")
    c.add_argument("--texts", required=True, help="id|text file (LJSpeech train.txt)")
    c.add_argument("--out", required=True, help="corpus folder (shard_NNN/ inside)")
    c.add_argument("--limit", type=int, default=None, help="first N lines only")
    c.add_argument("--exclude", action="append", metavar="FILE",
                   help="id|text file whose ids are left out (repeatable), e.g. val.txt")
    c.add_argument("--shards", type=int, default=16)
    c.add_argument("--shard", type=int, action="append", help="build only this shard (repeatable)")
    c.add_argument("--jobs", type=int, default=2, help="parallel processes")
    c.add_argument("--festival-prefix", default=None, help="dpkg -x prefix (default: system festival)")
    c.add_argument("--teacher", choices=["festival", "hibari"], default="festival",
                   help="festival: cmu_us_slt_arctic_hts (default); hibari: hibari-tts (Kokoro-82M af_heart "
                        "distilled, recipes/bundled_voice/TEACHER.md), one thread per job")
    c.add_argument("--hibari-g2p", default=None, metavar="FILE",
                   help="hibari: the G2P of the texts made ahead (g2p.npz of hibari-pack); hibari's own "
                        "G2P is then not needed")
    c.set_defaults(fn=_corpus)

    hp = sub.add_parser("hibari-pack", help="the part of hibari that speaks from phoneme ids, and the "
                                            "G2P of the texts, into a folder (a machine without hibari)")
    hp.add_argument("--texts", required=True, action="append",
                    help="id|text file whose lines will be spoken (repeatable)")
    hp.add_argument("--out", required=True, help="folder: hibari/ (put OUT on PYTHONPATH), g2p.npz, LICENSE, NOTICE")
    hp.set_defaults(fn=_hibari_pack)

    t = sub.add_parser("train", help="train one model for a chunk")
    t.add_argument("model", choices=["fastspeech", "tacotron2", "waveglow", "hifigan"])
    t.add_argument("--corpus", required=True)
    t.add_argument("--out", required=True, help="checkpoint/log folder")
    t.add_argument("--resume", action="store_true", help="continue from OUT/<model>_last.pt if present")
    t.add_argument("--steps", type=int, default=None,
                   help="take at most this many steps in this chunk (from where it starts)")
    t.add_argument("--max-steps", type=int, default=None, help="stop at this total step")
    t.add_argument("--max-minutes", type=float, default=None, help="stop after this many minutes")
    t.add_argument("--until", type=float, default=None,
                   help="start no step after this wall-clock time (Unix seconds; counts the set-up "
                        "that --max-minutes does not)")
    t.add_argument("--save-minutes", type=float, default=3.0)
    t.add_argument("--device", default="cpu")
    t.add_argument("--seed", type=int, default=1234)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--log-every", type=int, default=50)
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    t.add_argument("--settings", default=None,
                   help='JSON object overriding training settings (tts/train/tasks.py TRAIN_DEFAULTS), '
                        'e.g. \'{"lr": 1e-4}\'; waveglow also takes "amp" (bf16 autocast on CUDA), '
                        '"compile" (torch.compile), "spec_weight"/"spec_sigma" (spectral loss of a drawn '
                        'sample) and "gta"/"gta_fraction" (train on the aligned mels of an exported '
                        'FastSpeech or Tacotron2, or of a list of them; "gta_generation" K: a Tacotron2\'s K-th '
                        'self-fed generation instead of its teacher-forced one, "free": its free-running mel '
                        'warped onto the audio\'s frames by dynamic time warping); tacotron2 "self_feed" (the '
                        'fraction of input frames replaced by its own predictions: parallel scheduled '
                        'sampling; "self_feed_passes" K: predictions of the K-th gradient-free pass, '
                        'each fed the one before) and "gta"/"gta_fraction" (learn an exported FastSpeech\'s aligned '
                        'mels: knowledge distillation); hifigan "amp" (true/"bf16" or "fp16"), "compile", '
                        '"gta"/"gta_fraction", "lr_decay"/"lr_decay_every", "warmup" (the generator\'s), '
                        '"d_warmup" (discriminator-only steps after --init-from), "loss_fmax", '
                        '"mel_weight", "fm_weight", "segment_length" (tts/train/tasks.py HiFiGANTask)')
    t.add_argument("--model-config", default=None, help="JSON overriding the architecture")
    t.add_argument("--init-from", default=None,
                   help="exported voice file to start from when there is no checkpoint to resume")
    t.add_argument("--graph", choices=["auto", "off", "on", "static"], default="auto",
                   help="tacotron2: 'on' pads batches to static shape buckets and CUDA-graphs the "
                        "whole step per bucket (CUDA; on CPU it runs the static step eagerly); "
                        "waveglow: 'on' CUDA-graphs its one-shape step; "
                        "'static' the static step without capture, 'off' the eager step; 'auto' "
                        "(default): 'on' for tacotron2 and waveglow on CUDA (same losses, faster "
                        "steps), else 'off'")
    t.set_defaults(fn=_train)

    e = sub.add_parser("export", help="fp16 weights + voice.json into a voices folder")
    e.add_argument("--ckpt-dir", required=True)
    e.add_argument("--out", required=True, help="voices folder, e.g. tts/voices")
    e.add_argument("--name", default="slt")
    e.add_argument("--teacher", choices=["festival", "hibari"], default="festival",
                   help="the corpus's teacher: it decides the voices' layout and attribution (default festival)")
    e.add_argument("--max-mib", type=float, default=30.0)
    e.add_argument("--only", choices=["fastspeech", "tacotron2", "waveglow", "hifigan"], default=None,
                   help="write just this model's fp16 file into OUT (a run that trained only it)")
    e.set_defaults(fn=_export)

    gr = sub.add_parser("grow-waveglow", help="more WN layers / a shorter upsampler, from an "
                                              "exported WaveGlow (tts/train/grow.py)")
    gr.add_argument("src", help="an exported WaveGlow (.pt), e.g. one `export --only waveglow` wrote")
    gr.add_argument("dst", help="where to write the grown one (an --init-from file)")
    gr.add_argument("--n-layers", type=int, default=None, help="WN layers per flow (>= the current)")
    gr.add_argument("--upsample-kernel", type=int, default=None,
                    help="upsampler kernel, a multiple of 256 below the current (DLE: 1024)")
    gr.add_argument("--mel-texts", default=None,
                    help="id|text file whose mels (from --voice's acoustic model) fit the shorter "
                         "upsampler; without it the oldest taps are cut")
    gr.add_argument("--n", type=int, default=160, help="lines of --mel-texts to use")
    gr.add_argument("--voice", default="heart", help="voice whose acoustic model makes the mels")
    gr.set_defaults(fn=_grow)

    mf = sub.add_parser("manifests", help="(re)write voice.json of the bundled voices whose files exist")
    mf.add_argument("--out", required=True, help="voices folder, e.g. tts/voices")
    mf.add_argument("--name", default="slt")
    mf.add_argument("--teacher", choices=["festival", "hibari"], default="festival",
                    help="the corpus's teacher: it decides the voices' layout and attribution (default festival)")
    mf.set_defaults(fn=_manifests)

    p = sub.add_parser("plot", help="loss curves as PNG")
    p.add_argument("--ckpt-dir", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=_plot)

    g = sub.add_parser("gate", help="quality gate: WER (pocketsphinx + jiwer) and predicted MOS (Distill-MOS)")
    g.add_argument("voice", help="voice NAME|DIR, or 'teacher' for the teacher's own audio (--teacher)")
    g.add_argument("--texts", required=True, help="id|text file (LJSpeech val.txt)")
    g.add_argument("--n", type=int, default=100)
    g.add_argument("--out", default=None, help="write the full result JSON here")
    g.add_argument("--festival-prefix", default=None)
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the voice's random draws (Tacotron2 prenet dropout, WaveGlow noise); "
                        "recorded in the result (default 0); hibari: its noise component")
    g.add_argument("--teacher", choices=["festival", "hibari"], default="festival",
                   help="which teacher 'teacher' means (default festival)")
    g.add_argument("--no-mos", dest="mos", action="store_false",
                   help="skip the predicted MOS (Distill-MOS, the distillmos package)")
    g.set_defaults(fn=_gate)

    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return int(args.fn(args))
    except (TTSError, ValueError, OSError, RuntimeError, FloatingPointError) as e:
        # User mistakes (a missing corpus or checkpoint, a bad setting, no matplotlib) and a
        # diverged run: one line naming what is wrong, no traceback (-v logs still show context).
        if args.verbose:
            logging.exception("tts.train %s failed", args.cmd)
        print(f"tts.train: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
