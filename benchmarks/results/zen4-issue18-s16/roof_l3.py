"""How much of one 25.7 MB array (32x56x56x64 float32) a 32 MiB L3 keeps
between repeated reads: the best time of reading one array over and over
(the suite's roofline unit), against reading two such arrays in turn (as the
backward's passes do) and against a read after 64 MB of other reads (cold).
python roof_l3.py"""
import importlib, time
import numpy as np
import ckbn._dispatch as D

Pr = importlib.import_module(f"ckbn._probes_{D.kernel_name()}")
n = 32 * 56 * 56 * 64
a = np.random.default_rng(0).random(n, dtype=np.float32)
b = np.random.default_rng(1).random(n, dtype=np.float32)
junk = np.ones(16 << 20, np.float32)
t = {"one array, repeated": [], "two arrays in turn": [], "cold": []}
for r in range(41):
    Pr.probe_read(a, 1)
    t0 = time.perf_counter(); Pr.probe_read(a, 1); t["one array, repeated"].append(time.perf_counter() - t0)
    Pr.probe_read(b, 1)
    t0 = time.perf_counter(); Pr.probe_read(a, 1); t["two arrays in turn"].append(time.perf_counter() - t0)
    junk.sum()
    t0 = time.perf_counter(); Pr.probe_read(a, 1); t["cold"].append(time.perf_counter() - t0)
for k, v in t.items():
    print(f"{k}: best {min(v) * 1e3:.3f} ms, median {np.median(v) * 1e3:.3f} ms")
