"""Issue 5 server benchmark on the GPU: NGC-size random Tacotron2 (gate never fires) + WaveGlow-256.

`server_bench.py make DIR` saves the checkpoints; `server_bench.py load HOST:PORT LEVELS SECONDS OUT.json`
drives the running server (unary, then streaming) with options.max_decoder_steps=580 (6.73 s of audio a call)
through tts.server.loadgen, printing one table per mode.
"""
import asyncio, json, sys, torch

if sys.argv[1] == "make":
    from pathlib import Path
    from tts.models.tacotron2 import Tacotron2
    from tts.models.waveglow import WaveGlow, WaveGlowConfig
    d = Path(sys.argv[2]); d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    t2 = Tacotron2().eval()
    with torch.no_grad():
        t2.decoder.gate_layer.linear_layer.bias.fill_(-1e4)       # the stop gate never fires
    torch.save({"state_dict": t2.state_dict()}, d / "t2.pt")
    wg = WaveGlow(WaveGlowConfig()).eval()
    with torch.no_grad():
        for wn in wg.WN:
            wn.end.weight.normal_(0.0, 0.02); wn.end.bias.normal_(0.0, 0.02)
    torch.save({"state_dict": wg.state_dict()}, d / "wg.pt")
    print("saved", sorted(p.name for p in d.iterdir()))
else:
    from tts.server.loadgen import LoadConfig, format_table, parse_range, run_levels
    target, levels, secs, out = sys.argv[2], parse_range(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    texts = ("The quick brown fox jumps over the lazy dog.", "Speech synthesis turns written text into spoken audio.")
    res = {}
    for streaming in (False, True):
        cfg = LoadConfig(target=target, texts=texts, streaming=streaming, requests=100000, duration_s=secs,
                         warmup=2, timeout_s=120, options=(("max_decoder_steps", 580),))
        r = asyncio.run(run_levels(cfg, levels))
        mode = "streaming" if streaming else "unary"
        print(f"{mode}, max_decoder_steps=580 (6.73 s audio per call), {secs:.0f} s per level")
        print(format_table(r), flush=True)
        res[mode] = [x.row() | {"errors_by_code": x.errors} for x in r]
    json.dump(res, open(out, "w"), indent=1)
