"""Is it the vocoder or its input? A WaveGlow voice vocoding the teacher's own mels against the
mels of the voice's FastSpeech, on the first N sentences of val.txt.

    python3 recipes/bundled_voice/probe_mels.py VOICE_DIR N SIGMA[,SIGMA...] OUT.json
        [--texts ../shared/data/ljspeech/val.txt]

Teacher mels: Festival (as ``tts.train gate teacher`` runs it) → 22050 Hz → our mel. FastSpeech
mels: ``Synthesizer.acoustic``. Both go through the voice's WaveGlow (CPU, one noise stream,
seed 0, no denoiser); pocketsphinx + jiwer score each set. Result of 2026-11-22:
``results/probe_teacher_vs_fs_mels_wg108367_20.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from tts.models.stft import MelSpectrogram
from tts.quality import Recognizer, normalize_for_wer, read_transcripts, word_error_rate
from tts.synthesizer import Synthesizer
from tts.train.corpus import resample_to
from tts.train.gate import teacher_speaker
from tts.voice import load_voice

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("voice")
    ap.add_argument("n", type=int)
    ap.add_argument("sigmas")
    ap.add_argument("out")
    ap.add_argument("--texts", default=str(ROOT.parent / "shared" / "data" / "ljspeech" / "val.txt"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    texts = [t for _, t in read_transcripts(args.texts, args.n)]
    refs = [normalize_for_wer(t) for t in texts]
    rec = Recognizer()
    synth = Synthesizer(load_voice(args.voice))
    mel_fn = MelSpectrogram().eval()
    teacher = teacher_speaker()
    with torch.no_grad():
        teacher_mels = []
        for t in texts:
            audio, rate = teacher(t)
            audio = resample_to(audio, rate).astype(np.float32)
            teacher_mels.append(mel_fn(torch.from_numpy(audio)[None])[0])
        fs_mels = [torch.cat([m for m, _ in r.pieces], dim=-1).float() for r in synth.acoustic(texts)]
    vocoder = synth.vocoder_module
    gen = torch.Generator().manual_seed(0)
    res = {}
    for sigma in (float(s) for s in args.sigmas.split(",")):
        for name, mels in (("teacher_mel", teacher_mels), ("fs_mel", fs_mels)):
            with torch.no_grad():
                audios = [vocoder.infer(m[None], sigma=sigma, generator=gen)[0].numpy() for m in mels]
            wer = word_error_rate(refs, [rec.recognize(a, 22050) for a in audios])
            res[f"{name}_wg_s{sigma}"] = wer
            print(f"{name} sigma {sigma}: WER {100 * wer:.1f} %", flush=True)
    Path(args.out).write_text(json.dumps(res, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
