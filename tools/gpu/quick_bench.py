"""Quick device check: decoder and WaveGlow engines vs eager at NGC sizes (fp16, fixed 580 steps)."""
import sys, time, json, os
import torch
from tts.models.tacotron2 import Tacotron2
from tts.models.waveglow import WaveGlow
from tts.engines.tacotron2 import Tacotron2Engine
from tts.engines.waveglow import WaveGlowEngine

dev = torch.device("cuda")
STEPS = 580
res = {}

def timeit(fn, n=5, warm=2):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); torch.cuda.synchronize(); ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]

torch.manual_seed(0)
t2 = Tacotron2().to(dev).eval()
for bs in (1, 8):
    ids = torch.randint(1, 148, (bs, 128), device=dev); lengths = torch.full((bs,), 128, device=dev)
    with torch.no_grad():
        enc32 = t2.encode(ids, lengths)
        ref = t2.decoder.infer(enc32, lengths, max_decoder_steps=STEPS, prenet_dropout=0.0, early_stopping=False)
    def eager():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
            t2.decoder.infer(enc32, lengths, max_decoder_steps=STEPS, prenet_dropout=0.5, early_stopping=False)
    te = timeit(eager, n=3, warm=1)
    res[f"dec_eager_b{bs}"] = te
    print(f"B={bs} eager decoder {te*1e3:.1f} ms ({te/STEPS*1e6:.0f} us/step)", flush=True)
    for backend in ("torch", "triton"):
        for k in (16, 32):
            for prec in ("fp16", "fp32"):
                if prec == "fp32" and k != 16: continue
                try:
                    eng = Tacotron2Engine(t2, device=dev, precision=prec, backend=backend, steps_per_replay=k)
                    enc = enc32.to(eng.dtype)
                    out = eng.decode(enc, lengths, max_decoder_steps=STEPS, prenet_dropout=0.0, early_stopping=False)
                    err = (out.mel - ref.mel).abs().max().item()
                    f = lambda: eng.decode(enc, lengths, max_decoder_steps=STEPS, prenet_dropout=0.5, early_stopping=False)
                    t = timeit(f)
                    res[f"dec_{backend}_k{k}_{prec}_b{bs}"] = (t, err)
                    print(f"B={bs} {backend} K={k} {prec}: {t*1e3:.2f} ms ({t/STEPS*1e6:.1f} us/step) x{te/t:.1f}  mel err {err:.2e}", flush=True)
                except Exception as exc:
                    import traceback; traceback.print_exc()
                    print(f"B={bs} {backend} K={k} {prec}: FAILED {exc!r}", flush=True)

wg = WaveGlow().to(dev).eval()
with torch.no_grad():
    for w in wg.WN: w.end.weight.normal_(0, 0.02); w.end.bias.normal_(0, 0.02)
wg.remove_weight_norm()
wgh = WaveGlow().to(dev).eval(); wgh.remove_weight_norm(); wgh.load_state_dict(wg.state_dict()); wgh = wgh.half()
for bs in (1, 8):
    mel = torch.randn(bs, 80, STEPS, device=dev) - 5
    with torch.no_grad():
        ref = wg.infer(mel, 0.0)
    te = timeit(lambda: wgh.infer(mel.half(), 0.6), n=3, warm=1)
    print(f"B={bs} WaveGlow eager fp16 {te*1e3:.2f} ms", flush=True)
    for fused in (False, True):
        eng = WaveGlowEngine(wg, device=dev, precision="fp16", fused=fused)
        out = eng.infer(mel, 0.0)
        snr = 10 * torch.log10(ref.pow(2).sum() / (out.float() - ref).pow(2).sum()).item()
        t = timeit(lambda: eng.infer(mel, 0.6))
        audio_s = bs * STEPS * 256 / 22050
        print(f"B={bs} WaveGlow engine fused={fused}: {t*1e3:.2f} ms x{te/t:.2f} SNR {snr:.1f} dB, aggregate RTF {audio_s/t:.0f}", flush=True)
