"""Median time of one call of ``fn`` (microseconds), replayed ``n`` times inside a CUDA graph.

Shared by the device scripts in this folder (they run by path, so this folder is on sys.path).
"""
import statistics

import torch


def graph_time(fn, n=100, reps=5):
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn(); fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n):
            fn()
    g.replay(); torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record(); g.replay(); e1.record(); e1.synchronize(); ts.append(e0.elapsed_time(e1) / n * 1000)
    return statistics.median(ts)
