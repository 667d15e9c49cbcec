"""Interleaved A/B of two builds' reductions (float32, 1 thread): statistics and
backward sums of (P, G, R) channels-first data (the planes path), or of
(P, G, R, C) data given as PxGxRxC (1x1x3136x2048: 64x7x7x2048 NHWC), warm (the same call just before)
and after a read of the inputs; medians of new/old and of each ÷ one read of x
(probe_read, timed in the same rounds).

    python ab_pl_read.py OLD_SO_DIR NEW_SO_DIR ROUNDS "PxGxR[xC] ..."
"""
import glob
import importlib
import importlib.util
import os
import sys
import time

import numpy as np

import ckbn._dispatch as D

v = os.environ.get("CKBN_KERNELS") or D.kernel_name()


def load(path):
    spec = importlib.util.spec_from_file_location(
        f"ckbn._kernels_{v}", glob.glob(f"{path}/_kernels_{v}*.so")[0])
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


old, new = load(sys.argv[1]), load(sys.argv[2])
rounds = int(sys.argv[3])
Pr = importlib.import_module(f"ckbn._probes_{v}")
rng = np.random.default_rng(0)
for s in sys.argv[4].split():
    P, G, R, C = (list(map(int, s.split("x"))) + [1])[:4]
    n = G * C if C > 1 else G
    x = (rng.standard_normal(P * G * R * C) * 2 + 3).astype("f4")
    dy = rng.standard_normal(P * G * R * C).astype("f4")
    mean, var = np.zeros(n), np.zeros(n)
    mu, s1, s2 = np.zeros(n), np.zeros(n), np.zeros(n)
    out = []
    for what in ("stats", "sums"):
        for cond in ("warm", "read"):
            t = {"old": [], "new": [], "read": []}
            for r in range(rounds):
                order = (("old", old), ("new", new)) if r % 2 else (("new", new), ("old", old))
                for name, m in order:
                    if what == "stats":
                        def f():
                            m.bn_stats(x, P, G, R, C, mean, var, 1)
                    else:
                        def f():
                            m.bn_grad_sums(dy, x, P, G, R, C, mu, s1, s2, 1)
                    if cond == "warm":
                        f()
                    else:
                        Pr.probe_read(x, 1)
                        if what == "sums":
                            Pr.probe_read(dy, 1)
                    t0 = time.perf_counter()
                    f()
                    t[name].append(time.perf_counter() - t0)
                Pr.probe_read(x, 1)
                t0 = time.perf_counter()
                Pr.probe_read(x, 1)
                t["read"].append(time.perf_counter() - t0)
            mo, mn, rd = (np.median(t[k]) for k in ("old", "new", "read"))
            k = 2 if what == "sums" else 1
            out.append(f"{what} {cond} new/old {mn / mo:.2f} "
                       f"(÷read old {mo / rd / k:.2f}, new {mn / rd / k:.2f})")
    print(f"{s} [{v}]: " + "; ".join(out), flush=True)
