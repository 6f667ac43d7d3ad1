"""Engine build vs load-from-cache at NGC sizes (fp16): run as `cache_bench.py cold|warm DIR` in fresh processes.

Times: engine construction (weights hash + prepare or load), the first call (Triton compile or
Triton-cache hit, CUDA-graph capture, run) and a steady call, for Tacotron2 (64 decoder steps)
and WaveGlow-256 (580 frames). Prints one JSON line.
"""
import copy, json, sys, time, torch
from tts.cli.bench import random_models
from tts.engines.cache import EngineCache
from tts.engines.tacotron2 import Tacotron2Engine
from tts.engines.waveglow import WaveGlowEngine

mode, root = sys.argv[1], sys.argv[2]
dev = torch.device("cuda")
t2, wg, _ = random_models("tacotron2", "ngc", 0)
t2 = t2.to(dev).eval(); wg = copy.deepcopy(wg).to(dev).half().eval()
torch.cuda.synchronize()
cache = EngineCache(root)
res = {"mode": mode}
def lap(t0):
    torch.cuda.synchronize(); return time.perf_counter() - t0
ids = torch.randint(1, 148, (1, 128), device=dev); lengths = torch.tensor([128], device=dev)
mel = torch.randn(1, 80, 580, device=dev).half()
t0 = time.perf_counter(); e = Tacotron2Engine(t2, device=dev, precision="fp16", cache=cache); res["t2_construct_s"] = lap(t0)
t0 = time.perf_counter(); w = WaveGlowEngine(wg, device=dev, precision="fp16", cache=cache); res["wg_construct_s"] = lap(t0)
run_t2 = lambda: e.infer(ids, lengths, max_decoder_steps=64, prenet_dropout=0.0, early_stopping=False)
run_wg = lambda: w.infer(mel, 0.6)
t0 = time.perf_counter(); run_t2(); res["t2_first_call_s"] = lap(t0)
t0 = time.perf_counter(); run_t2(); res["t2_steady_call_s"] = lap(t0)
t0 = time.perf_counter(); run_wg(); res["wg_first_call_s"] = lap(t0)
t0 = time.perf_counter(); run_wg(); res["wg_steady_call_s"] = lap(t0)
res.update(cache_hits=[e.cache_hit, w.cache_hit], stats=cache.stats, events=cache.events)
import os; res["triton_cache_dir"] = os.environ.get("TRITON_CACHE_DIR")
res["ready_s"] = res["t2_construct_s"] + res["wg_construct_s"] + res["t2_first_call_s"] + res["wg_first_call_s"]
print(json.dumps(res))
