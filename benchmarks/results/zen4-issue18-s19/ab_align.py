"""A/B of two builds' statistics and backward sums of channels-last rows with x
(and dy) placed at chosen byte offsets past a 4 KiB page, each ÷ one read of x
(probe_read) in the same rounds; medians.
    python ab_align.py OLD NEW ROUNDS "ROWSxC ..." "offsets" """
import glob, importlib, importlib.util, os, sys, time
import numpy as np
import ckbn._dispatch as D
v = os.environ.get("CKBN_KERNELS") or D.kernel_name()
def load(path):
    spec = importlib.util.spec_from_file_location(f"ckbn._kernels_{v}", glob.glob(f"{path}/_kernels_{v}*.so")[0])
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
def placed(a, off):
    buf = np.empty(a.nbytes + 8192, np.uint8)
    base = (-buf.ctypes.data) % 4096 + off
    out = buf[base:base + a.nbytes].view(a.dtype)
    out[...] = a
    return out
old, new = load(sys.argv[1]), load(sys.argv[2]); rounds = int(sys.argv[3])
Pr = importlib.import_module(f"ckbn._probes_{v}")
offs = [int(o) for o in sys.argv[5].split()]
rng = np.random.default_rng(0)
for case in sys.argv[4].split():
    rows, C = map(int, case.split("x"))
    x0 = (rng.standard_normal(rows * C) * 2 + 3).astype("f4")
    mean, var = np.zeros(C), np.zeros(C)
    out = []
    for off in offs:
        x = placed(x0, off)
        t = {"old": [], "new": [], "read": []}
        for r in range(rounds):
            for name, m in ((("old", old), ("new", new)) if r % 2 else (("new", new), ("old", old))):
                m.bn_stats(x, rows, 1, 1, C, mean, var, 1)
                t0 = time.perf_counter(); m.bn_stats(x, rows, 1, 1, C, mean, var, 1); t[name].append(time.perf_counter() - t0)
            Pr.probe_read(x, 1); t0 = time.perf_counter(); Pr.probe_read(x, 1); t["read"].append(time.perf_counter() - t0)
        mo, mn, rd = (np.median(t[k]) for k in ("old", "new", "read"))
        out.append(f"+{off}: {mn / mo:.2f} ({mo / rd:.2f} -> {mn / rd:.2f}x read)")
    print(f"{case} [{v}] stats warm new/old: " + ", ".join(out), flush=True)
