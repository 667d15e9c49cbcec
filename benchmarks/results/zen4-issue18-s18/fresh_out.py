"""Inference of a large float32 batch through two builds' compiled entry,
into a new output every call (NumPy's: past 32 MiB a fresh mmap each time) and
into one reused output (out=), one process, builds alternating: whether
non-temporal stores pay depends on which.
python fresh_out.py OLD_DIR NEW_DIR ROUNDS "fmt:NxCxHxW ..." """
import glob, importlib.util, os, sys, time
import numpy as np
import ckbn._dispatch as D
v = os.environ.get("CKBN_KERNELS") or D.kernel_name()
def load(path):
    spec = importlib.util.spec_from_file_location(f"ckbn._kernels_{v}", glob.glob(f"{path}/_kernels_{v}*.so")[0])
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
old, new = load(sys.argv[1]), load(sys.argv[2]); rounds = int(sys.argv[3])
rng = np.random.default_rng(0)
for case in sys.argv[4].split():
    fmt, s = case.split(":"); shp = tuple(map(int, s.split("x")))
    c = shp[1] if fmt == "NCHW" else shp[-1]
    x = rng.standard_normal(shp, dtype=np.float32)
    g, b = (rng.random(c, dtype=np.float32) + .5), rng.standard_normal(c).astype("f4")
    m_, v_ = rng.standard_normal(c).astype("f4"), (rng.random(c, dtype=np.float32) + .5)
    out = np.empty_like(x)
    res = []
    for mode in ("new output", "out="):
        o = None if mode == "new output" else out
        t = {old: [], new: []}
        for r in range(rounds):
            for m in ((old, new) if r % 2 else (new, old)):
                f = lambda: m.common_forward(x, g, b, m_, v_, 1e-3, fmt, False, o, None, 1)
                f(); t0 = time.perf_counter(); f(); f(); t[m].append((time.perf_counter() - t0) / 2)
        res.append(f"{mode}: {np.median(t[new]) / np.median(t[old]):.3f} ({np.median(t[old]) * 1e6:.0f} -> {np.median(t[new]) * 1e6:.0f} us)")
    print(case, "; ".join(res), flush=True)
