"""Interleaved A/B (old main build vs this branch), 1 thread: medians of N alternating calls."""
import importlib.util, sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
from ckbn._dispatch import kernels, probes
new = kernels(); pr = probes()
spec = importlib.util.spec_from_file_location("oldk._kernels_avx2", sys.argv[1]); old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
N = int(sys.argv[3]) if len(sys.argv) > 3 else 24
def run(label, f_old, f_new, f_roof=None):
    to, tn, tr = [], [], []
    for i in range(N):
        seq = [(f_old, to), (f_new, tn)] + ([(f_roof, tr)] if f_roof else [])
        if i % 2: seq = seq[::-1]
        for f, acc in seq:
            t0 = time.perf_counter(); f(); acc.append(time.perf_counter() - t0)
    mo, mn = np.median(to), np.median(tn)
    s = f"| {label} | {mo*1e6:.0f} | {mn*1e6:.0f} | {mn/mo:.2f} |"
    if f_roof:
        r = np.median(tr); s += f" {mo/r:.2f} | {mn/r:.2f} |"
    print(s, flush=True)
rng = np.random.default_rng(0)
print("| shape, op | old µs (median) | new µs | new÷old | old ÷ one read | new ÷ one read |")
print("|---|---|---|---|---|---|")
for spec_ in sys.argv[4].split(","):
    sh, fmt = spec_.split(":")
    shape = tuple(int(v) for v in sh.split("x"))
    P, G, R, C = (shape[0], shape[1], int(np.prod(shape[2:])), 1) if fmt == "NCHW" else (1, 1, int(np.prod(shape[:-1])), shape[-1])
    n = G * C
    x = rng.standard_normal(int(np.prod(shape))).astype(np.float32) + 3
    dy = rng.standard_normal(x.size).astype(np.float32)
    y = np.empty_like(x); dx = np.empty_like(x)
    sc, of, m, v, ds, do = np.ones(n), np.zeros(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    read = lambda: pr.probe_read(x, 1)
    run(f"{spec_} stats", lambda: old.bn_stats(x, P, G, R, C, m, v, 1), lambda: new.bn_stats(x, P, G, R, C, m, v, 1), read)
    run(f"{spec_} train", lambda: old.bn_forward_train(x, P, G, R, C, sc, of, 1e-3, y, m, v, 1), lambda: new.bn_forward_train(x, P, G, R, C, sc, of, 1e-3, y, m, v, 1))
    run(f"{spec_} infer", lambda: old.bn_forward_infer(x, P, G, R, C, sc, of, m, v, 1e-3, y, 1), lambda: new.bn_forward_infer(x, P, G, R, C, sc, of, m, v, 1e-3, y, 1))
    run(f"{spec_} bwd", lambda: old.bn_backward(dy, x, P, G, R, C, sc, m, v, 1e-3, True, dx, ds, do, 1), lambda: new.bn_backward(dy, x, P, G, R, C, sc, m, v, 1e-3, True, dx, ds, do, 1))
