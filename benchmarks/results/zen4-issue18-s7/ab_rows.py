"""Side-by-side A/B of two kernel builds in one process (issue 18, session 7).

    python ab_rows.py OLD_SO SHAPES THREADS ROUNDS

OLD_SO: a _kernels_avx512 (or other variant) shared object of the old build,
loaded under another package name; the new build: the same variant of the ckbn
on sys.path.
SHAPES: comma-separated "32x28x28x256:NHWC" items; THREADS: "1,2".
Every round calls each contender once, in an order that alternates between
rounds; the table holds medians over ROUNDS rounds (µs) and medians of the
per-round ratios (each ratio of two calls of the same round).
Read and copy probes (the new build's, float32) are rounds' contenders too.
"""
import importlib.util
import os
import sys
import time

import numpy as np

import ckbn
from ckbn._dispatch import probes

old_so, shape_arg, thread_arg, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
variant = os.path.basename(old_so).split(".")[0]
spec = importlib.util.spec_from_file_location("k18old." + variant, old_so)
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
new = importlib.import_module("ckbn." + variant)   # the same variant, new build
pr = probes()
assert os.path.dirname(new.__file__) != os.path.dirname(old_so)

try:
    import torch
except ImportError:
    torch = None


def medians(fns):
    """Seconds of each of fns in every round (order alternating)."""
    times = [[] for _ in fns]
    for f in fns:
        f()
    idx = list(range(len(fns)))
    for i in range(rounds):
        order = idx if i % 2 == 0 else idx[::-1]
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return [np.array(t) for t in times]


print(f"# ckbn {ckbn.__file__}; old {old_so}; new variant {new.__name__}; "
      f"tuning {new.tuning()}")
print(f"# load average before: {os.getloadavg()}")
print("| shape | t | read µs | copy µs | stats old | stats new | new/old | new÷read "
      "| train old | train new | new/old | new÷roof | torch/new "
      "| bwd old | bwd new | new/old | new÷roof | torch/new | load |")
print("|" + "---|" * 19)
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
    y = np.empty_like(x)
    dx = np.empty_like(x)
    cp = np.empty_like(x)
    sc, of = np.ones(n), np.zeros(n)
    m, v, ds, do = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    new.bn_stats(x, P, G, R, C, m, v, 1)
    if torch is not None:
        tx = torch.from_numpy(x.reshape(shape))
        tg = torch.from_numpy(dy.reshape(shape))
        if fmt == "NHWC":
            tx, tg = tx.permute(0, 3, 1, 2), tg.permute(0, 3, 1, 2)
        c = tx.shape[1]
        tw, tb = torch.ones(c), torch.zeros(c)
        _, tsm, tsi = torch.ops.aten.native_batch_norm(tx, tw, tb, None, None, True, 0.1, 1e-3)
    for nt in [int(t) for t in thread_arg.split(",")]:
        fns = [
            lambda: pr.probe_read(x, nt),
            lambda: pr.probe_copy(x, cp, nt, False),
            lambda: old.bn_stats(x, P, G, R, C, m, v, nt),
            lambda: new.bn_stats(x, P, G, R, C, m, v, nt),
            lambda: old.bn_forward_train(x, P, G, R, C, sc, of, 1e-3, y, m, v, nt),
            lambda: new.bn_forward_train(x, P, G, R, C, sc, of, 1e-3, y, m, v, nt),
            lambda: old.bn_backward(dy, x, P, G, R, C, sc, m, v, 1e-3, True, dx, ds, do, nt),
            lambda: new.bn_backward(dy, x, P, G, R, C, sc, m, v, 1e-3, True, dx, ds, do, nt),
        ]
        if torch is not None:
            torch.set_num_threads(nt)
            with torch.no_grad():
                fns.append(lambda: torch.nn.functional.batch_norm(tx, None, None, tw, tb,
                                                                  training=True, eps=1e-3))
                fns.append(lambda: torch.ops.aten.native_batch_norm_backward(
                    tg, tx, tw, None, None, tsm, tsi, True, 1e-3, [True, True, True]))
                T = medians(fns)
        else:
            T = medians(fns) + [np.full(rounds, np.nan)] * 2
        t = [float(np.median(v_)) for v_ in T]

        def pr_(a, b):
            """Median over the rounds of the ratio T[a]/T[b] (same round)."""
            return float(np.median(T[a] / T[b]))

        roof_tr = T[0] + T[1]
        roof_bw = 3 * T[0] + T[1]
        us = [v_ * 1e6 for v_ in t]
        print(f"| {item} | {nt} | {us[0]:.0f} | {us[1]:.0f} | {us[2]:.0f} | {us[3]:.0f} "
              f"| {pr_(3, 2):.2f} | {pr_(3, 0):.2f} | {us[4]:.0f} | {us[5]:.0f} "
              f"| {pr_(5, 4):.2f} | {float(np.median(T[5] / roof_tr)):.2f} | {pr_(8, 5):.2f} "
              f"| {us[6]:.0f} | {us[7]:.0f} | {pr_(7, 6):.2f} "
              f"| {float(np.median(T[7] / roof_bw)):.2f} | {pr_(9, 7):.2f} "
              f"| {os.getloadavg()[0]:.2f} |", flush=True)
