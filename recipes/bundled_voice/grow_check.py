"""How close a grown WaveGlow stays to the one it was grown from (recipe README, "seventh part").

    python3 recipes/bundled_voice/grow_check.py OLD.pt GROWN.pt TEXTS N

The first N lines of TEXTS (``id|text``) go through the bundled voice's FastSpeech, split as
``tts.train grow-waveglow`` splits them (the first 3/4 fit the upsampler, the rest measure).
Prints, on the measuring mels: the relative error of the grown upsampler, of one cut to the
same kernel without a fit, and of one refit to 256 taps; and the relative difference of the
two models' audio for the first measuring mel, with the same noise (sigma 1).
"""

from __future__ import annotations

import argparse
import json

import torch

from tts.models.waveglow import WaveGlow
from tts.quality import read_transcripts
from tts.synthesizer import Synthesizer
from tts.train.grow import refit_upsampler, upsampler_error
from tts.voice import load_voice


def _model(ck: dict) -> WaveGlow:
    m = WaveGlow(ck["config"], weight_norm=False)
    m.load_state_dict({k: v.float() for k, v in ck["state_dict"].items()})
    return m.eval()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("grown")
    ap.add_argument("texts")
    ap.add_argument("n", type=int)
    args = ap.parse_args()
    old, grown = (torch.load(p, map_location="cpu", weights_only=True) for p in (args.old, args.grown))
    texts = [t for _, t in read_transcripts(args.texts, args.n)]
    synth = Synthesizer(load_voice("slt"))
    with torch.no_grad():
        mels = [torch.cat([m for m, _ in r.pieces], dim=-1).float() for r in synth.acoustic(texts)]
    mels = [m.reshape(-1, m.shape[-1]) for m in mels]
    cut = max(1, len(mels) * 3 // 4)
    fit, test = mels[:cut], mels[cut:] or mels
    up = (old["state_dict"]["upsample.weight"].float(), old["state_dict"]["upsample.bias"].float())
    new = (grown["state_dict"]["upsample.weight"].float(), grown["state_dict"]["upsample.bias"].float())
    kernel = new[0].shape[2]
    res = {"grown": upsampler_error(up, new, test),
           f"cut_to_{kernel}": upsampler_error(up, refit_upsampler(*up, kernel, None), test),
           "refit_to_256": upsampler_error(up, refit_upsampler(*up, 256, fit), test)}
    a, b = _model(old), _model(grown)
    mel = test[0][None]
    z = torch.randn(1, a.n_group, mel.shape[2] * 256 // a.n_group, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ya, yb = a.infer(mel, sigma=1.0, z=z), b.infer(mel, sigma=1.0, z=z)
    res["audio"] = float((ya - yb).norm() / ya.norm())
    print(json.dumps({k: round(v, 4) for k, v in res.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
