"""Side-by-side A/B of the reduction primitives of two builds (issue 18, s7).

    python ab_prims.py OLD_SO SHAPES THREADS ROUNDS

Contenders per round (order alternating): the read probe, bn_stats and
bn_grad_sums of the old and the new build.  Also checks that old and new
give the same bits.
"""
import importlib.util
import os
import sys
import time

import numpy as np

from ckbn._dispatch import probes

old_so, shape_arg, thread_arg, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
variant = os.path.basename(old_so).split(".")[0]
spec = importlib.util.spec_from_file_location("k18old." + variant, old_so)
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
new = importlib.import_module("ckbn." + variant)   # the same variant, new build
pr = probes()


def medians(fns):
    times = [[] for _ in fns]
    for f in fns:
        f()
    idx = list(range(len(fns)))
    for i in range(rounds):
        for k in (idx if i % 2 == 0 else idx[::-1]):
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


print(f"# load average before: {os.getloadavg()}")
print("| shape | t | read µs | stats old | stats new | new/old | new÷read | sums old | sums new "
      "| new/old | new÷2 reads | same bits | load |")
print("|" + "---|" * 13)
rng = np.random.default_rng(0)
for item in shape_arg.split(","):
    sh, fmt = item.split(":")
    shape = tuple(int(v) for v in sh.split("x"))
    if fmt == "NCHW":
        P, G, R, C = shape[0], shape[1], int(np.prod(shape[2:])), 1
    else:
        P, G, R, C = 1, 1, int(np.prod(shape[:-1])), shape[-1]
    n = G * C
    x = (rng.standard_normal(int(np.prod(shape))) + 3).astype(np.float32)
    dy = rng.standard_normal(x.size).astype(np.float32)
    m1, v1, m2, v2 = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    e1, f1, e2, f2 = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    for nt in [int(t) for t in thread_arg.split(",")]:
        old.bn_stats(x, P, G, R, C, m1, v1, nt)
        new.bn_stats(x, P, G, R, C, m2, v2, nt)
        old.bn_grad_sums(dy, x, P, G, R, C, m1, e1, f1, nt)
        new.bn_grad_sums(dy, x, P, G, R, C, m1, e2, f2, nt)
        same = all(np.array_equal(a, b) for a, b in ((m1, m2), (v1, v2), (e1, e2), (f1, f2)))
        t = medians([
            lambda: pr.probe_read(x, nt),
            lambda: old.bn_stats(x, P, G, R, C, m1, v1, nt),
            lambda: new.bn_stats(x, P, G, R, C, m2, v2, nt),
            lambda: old.bn_grad_sums(dy, x, P, G, R, C, m1, e1, f1, nt),
            lambda: new.bn_grad_sums(dy, x, P, G, R, C, m1, e2, f2, nt),
        ])
        us = [v * 1e6 for v in t]
        print(f"| {item} | {nt} | {us[0]:.0f} | {us[1]:.0f} | {us[2]:.0f} | {t[2] / t[1]:.2f} "
              f"| {t[2] / t[0]:.2f} | {us[3]:.0f} | {us[4]:.0f} | {t[4] / t[3]:.2f} "
              f"| {t[4] / (2 * t[0]):.2f} | {same} | {os.getloadavg()[0]:.2f} |", flush=True)
