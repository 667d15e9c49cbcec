"""A/B of two builds' kernel functions on (N, C) rows, float32, 1 thread, one
process, builds alternating: median new/old per function.
python ab_fn.py OLD NEW ROUNDS "NxC ..." [kinds]"""
import sys, time, importlib, glob, importlib.util, os
import numpy as np
import ckbn._dispatch as D
v = os.environ.get("CKBN_KERNELS") or D.kernel_name()
def load(path):
    spec = importlib.util.spec_from_file_location(f"ckbn._kernels_{v}", glob.glob(f"{path}/_kernels_{v}*.so")[0])
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
old, new = load(sys.argv[1]), load(sys.argv[2]); rounds = int(sys.argv[3]); NT = int(os.environ.get("AB_THREADS", "1"))
kinds = (sys.argv[5] if len(sys.argv) > 5 else "stats affine train sums dx").split()
rng = np.random.default_rng(0)
for s in sys.argv[4].split():
    N, C = map(int, s.split("x"))
    x = (rng.standard_normal(N * C) * 2 + 3).astype("f4"); dy = rng.standard_normal(N * C).astype("f4")
    OFF = os.environ.get("AB_OFF")
    if OFF is not None:
        def placed(a, off):
            buf = np.empty(a.nbytes + 8192, np.uint8)
            base = (-buf.ctypes.data) % 4096 + off
            o = buf[base:base + a.nbytes].view(a.dtype); o[...] = a; return o
        x = placed(x, int(OFF)); dy = placed(dy, int(OFF))
    print("x at page +", x.ctypes.data % 4096, "dy at", dy.ctypes.data % 4096)
    y = np.zeros_like(x); dx = np.zeros_like(x)
    sc = np.ones(C); of = np.zeros(C); mean = np.zeros(C); var = np.zeros(C)
    a = np.ones(C, "f4"); b = np.zeros(C, "f4"); mu = np.zeros(C); s1 = np.zeros(C); s2 = np.zeros(C)
    def mk(m, k):
        return {"stats": lambda: m.bn_stats(x, N, 1, 1, C, mean, var, NT),
                "affine": lambda: m.bn_affine(x, N, 1, 1, C, a, b, y, NT),
                "train": lambda: m.bn_forward_train(x, N, 1, 1, C, sc, of, 1e-3, y, mean, var, NT),
                "sums": lambda: m.bn_grad_sums(dy, x, N, 1, 1, C, mu, s1, s2, NT),
                "dx": lambda: m.bn_grad_dx(dy, x, N, 1, 1, C, a, a, b, dx, NT),
                "entry": lambda: m.common_forward(x.reshape(1, N, 1, C), a, b, None, None, 1e-3, "NHWC", True, None, None, NT),
                "entry_bwd": lambda: m.common_backward(dy.reshape(1, N, 1, C), x.reshape(1, N, 1, C), a, a, a, 1e-3, "NHWC", True, None, None, NT)}[k]
    out = []
    for k in kinds:
        t = {0: [], 1: []}
        fs = {0: mk(old, k), 1: mk(new, k)}
        for r in range(rounds):
            for i in ((0, 1) if r % 2 else (1, 0)):
                fs[i](); t0 = time.perf_counter(); fs[i](); t[i].append(time.perf_counter() - t0)
        out.append(f"{k} {np.median(t[1]) / np.median(t[0]):.3f}")
    print(f"{s} [{v}]: " + " ".join(out), flush=True)
