"""A/B of two builds' backward sums (bn_grad_sums, channels-last PxC float32,
1 thread), x and dy at chosen offsets into a 64-byte line (dy a further 1 KiB
on), one process, builds alternating: median new/old.
python ab_sums_pair.py OLD_DIR NEW_DIR ROUNDS "PxC ..." ["XOFF:DYOFF ..."]"""
import glob, importlib.util, os, sys, time, numpy as np, ckbn._dispatch as D
v = os.environ.get("CKBN_KERNELS") or D.kernel_name()
def load(path):
    spec = importlib.util.spec_from_file_location(f"ckbn._kernels_{v}", glob.glob(f"{path}/_kernels_{v}*.so")[0])
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
def placed(a, off):
    buf = np.empty(a.nbytes + 8192, np.uint8); base = (-buf.ctypes.data) % 4096 + off
    out = buf[base:base + a.nbytes].view(a.dtype); out[...] = a; return out
old, new = load(sys.argv[1]), load(sys.argv[2]); rounds = int(sys.argv[3])
pairs = [tuple(map(int, p.split(":"))) for p in (sys.argv[5] if len(sys.argv) > 5 else "0:0 0:16 0:32 0:48 16:0 48:32").split()]
rng = np.random.default_rng(0)
for s in sys.argv[4].split():
    P, C = map(int, s.split("x"))
    a = (rng.standard_normal(P * C) * 2 + 3).astype("f4"); d0 = rng.standard_normal(P * C).astype("f4")
    out = []
    for xo, do in pairs:
        x = placed(a, xo); dy = placed(d0, 1024 + do)
        mu = np.zeros(C); r = {m: (np.zeros(C), np.zeros(C)) for m in (old, new)}
        t = {old: [], new: []}
        for i in range(rounds):
            for m in ((old, new) if i % 2 else (new, old)):
                f = lambda: m.bn_grad_sums(dy, x, 1, 1, P, C, mu, r[m][0], r[m][1], 1)
                f(); t0 = time.perf_counter(); f(); t[m].append(time.perf_counter() - t0)
        same = all(np.array_equal(p, q) for p, q in zip(r[old], r[new]))
        out.append(f"x+{xo},dy+{do} {np.median(t[new]) / np.median(t[old]):.3f}{'' if same else ' BITS DIFFER'}")
    print(s, f"(old {np.median(t[old]) * 1e6:.1f} us at the last pair)", "; ".join(out), flush=True)
