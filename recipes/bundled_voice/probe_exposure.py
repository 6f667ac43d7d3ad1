"""Where a partial Tacotron2 loses intelligibility: its fit, or its own inputs (exposure bias).

    python3 recipes/bundled_voice/probe_exposure.py TACOTRON2.pt N MODE OUT.json

scores, like the quality gate (pocketsphinx on the first N sentences of val.txt, Griffin-Lim),
mels that the free-running gate never sees:

- ``fs``: the shipped FastSpeech's own mels (the distillation target; equals the gate's ``slt``);
- ``jK`` (K >= 1): the Tacotron2 run K times over all frames in parallel, pass 1 fed the
  FastSpeech's mels (teacher forcing, as in training), pass k fed pass k-1's outputs. ``j1`` is the
  teacher-forced fit; as K grows the passes converge to the free-running output (a Jacobi
  iteration of the autoregression), so the WER between ``j1`` and the gate's shows how much each
  further generation of self-dependence costs.

Prenet dropout is on in every pass, as at inference (torch seed 0). ``TEXTS=FILE`` replaces
``../shared/data/ljspeech/val.txt`` (the tests use ``tests/fixtures/ljspeech_val_100.txt``, its
first 100 lines). Run from the repository root with the package installed (``bash install.sh``);
100 sentences took 6 minutes for ``fs`` and ``j1`` and 14 for ``j5`` (three runs sharing 2 cores).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

USAGE = "usage: probe_exposure.py TACOTRON2.pt N MODE OUT.json   (MODE: fs, or jK with K >= 1)"


def _passes(mode: str) -> int:
    """0 for ``fs``, K for ``jK``; a clear error for anything else."""
    if mode == "fs":
        return 0
    if mode.startswith("j") and mode[1:].isdigit() and int(mode[1:]) >= 1:
        return int(mode[1:])
    raise SystemExit(f"probe_exposure.py: MODE must be fs or jK with K >= 1, not {mode!r}\n{USAGE}")


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        raise SystemExit(USAGE)
    t2file, n_arg, mode, out = argv
    passes = _passes(mode)
    if not n_arg.isdigit() or int(n_arg) < 1:
        raise SystemExit(f"probe_exposure.py: N must be a positive number of sentences, not {n_arg!r}")
    if not Path(t2file).is_file():
        raise SystemExit(f"probe_exposure.py: no Tacotron2 file {t2file}")
    import torch

    from tts.options import SynthesisOptions
    from tts.quality import Recognizer, evaluate, read_transcripts
    from tts.synthesizer import Synthesizer
    from tts.train.losses import teacher_forced_decode
    from tts.voice import load_voice

    work = Path(tempfile.mkdtemp(prefix="probe_exposure_"))
    try:
        for name in ("slt", "slt-tacotron2"):
            (work / name).mkdir()
        shutil.copy("tts/voices/slt/fastspeech.pt", work / "slt")
        shutil.copy(t2file, work / "slt-tacotron2" / "tacotron2.pt")
        subprocess.run([sys.executable, "-m", "tts.train", "manifests", "--out", str(work), "--name", "slt"],
                       check=True, stdout=subprocess.DEVNULL)
        fs = Synthesizer(load_voice(str(work / "slt")))
        t2 = Synthesizer(load_voice(str(work / "slt-tacotron2")))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    model, griffin_lim = t2.voice.acoustic, fs.voice.vocoder
    opts = SynthesisOptions(seed=0)
    torch.manual_seed(0)

    def speak(text: str):
        with torch.inference_mode():
            fs_pieces = fs.acoustic([text], opts)[0].pieces
            t2_pieces = t2._plan([text]).pieces
            if len(fs_pieces) != len(t2_pieces):
                raise RuntimeError(f"the two models split {text!r} differently")
            mels = []
            for piece, (fs_mel, _) in zip(t2_pieces, fs_pieces):
                ids, lengths = torch.tensor([piece.ids]), torch.tensor([len(piece.ids)])
                x = fs_mel[None].float()
                if passes:
                    memory = model.encode(ids, lengths)
                    for _ in range(passes):
                        x, _, _ = teacher_forced_decode(model.decoder, memory, lengths, x)
                    x = model.postnet_forward(x)
                mels.append(x[0])
            audio = griffin_lim.infer(torch.cat(mels, dim=-1)[None]).float().reshape(-1).numpy()
        return audio, 22050

    texts_file = os.environ.get("TEXTS", "../shared/data/ljspeech/val.txt")
    if not Path(texts_file).is_file():
        raise SystemExit(f"probe_exposure.py: no transcripts {texts_file} (set TEXTS=FILE)")
    texts = [t for _, t in read_transcripts(texts_file, int(n_arg))]
    res = evaluate(speak, texts, recognizer=Recognizer())
    Path(out).write_text(json.dumps({"mode": mode, "tacotron2": t2file, "wer": res.wer, **res.as_dict()},
                                    indent=1), encoding="utf-8")
    print(f"{mode}: WER {100 * res.wer:.1f} % on {len(texts)} sentences ({t2file})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
