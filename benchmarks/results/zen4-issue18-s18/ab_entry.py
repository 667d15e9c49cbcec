"""(session 18: with "infer" among AB_KINDS) A/B of two builds' compiled entries (common_backward, common_forward) on
small inputs placed at chosen byte offsets past a 4 KiB page (one process,
builds alternating; each round times INNER calls): median of new/old per
case.  python ab_entry.py OLD_DIR NEW_DIR ROUNDS "fmt:NxCxHxW ..." [offsets]"""
import glob, importlib.util, os, sys, time
import numpy as np
import ckbn._dispatch as D

v = os.environ.get("CKBN_KERNELS") or D.kernel_name()


def load(path):
    spec = importlib.util.spec_from_file_location(
        f"ckbn._kernels_{v}", glob.glob(f"{path}/_kernels_{v}*.so")[0])
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def placed(a, off):
    buf = np.empty(a.nbytes + 8192, np.uint8)
    base = (-buf.ctypes.data) % 4096 + off
    out = buf[base:base + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


old, new = load(sys.argv[1]), load(sys.argv[2])
rounds = int(sys.argv[3])
offs = [int(o) for o in (sys.argv[5].split() if len(sys.argv) > 5 else "0 16 32 48".split())]
inner = int(os.environ.get("AB_INNER", "200"))
NT = int(os.environ.get("AB_THREADS", "1"))
COLD = os.environ.get("AB_COLD") == "1"     # evict the caches before each timed call (inner = 1)
_junk = np.ones(128 << 20, np.uint8) if COLD else None
kinds = os.environ.get("AB_KINDS", "bwd train").split()
rng = np.random.default_rng(0)
for case in sys.argv[4].split():
    fmt, s = case.split(":")
    shp = tuple(map(int, s.split("x")))
    c = shp[1] if fmt == "NCHW" else shp[-1]
    g = (rng.random(c) + 0.5).astype("f4")
    b = rng.standard_normal(c).astype("f4")
    for off in offs:
        x = placed(rng.standard_normal(shp).astype("f4"), off)
        dy = placed(rng.standard_normal(shp).astype("f4"), off)
        _, bm, bv = old.common_forward(x, g, b, None, None, 1e-3, fmt, True, None, None, 1)
        res = []
        for kind in kinds:
            if kind == "bwd":
                calls = {m: (lambda m=m: m.common_backward(dy, x, g, bm, bv, 1e-3, fmt, True,
                                                          None, None, NT)) for m in (old, new)}
            elif kind == "infer":
                calls = {m: (lambda m=m: m.common_forward(x, g, b, bm, bv, 1e-3, fmt, False,
                                                         None, None, NT)) for m in (old, new)}
            else:
                calls = {m: (lambda m=m: m.common_forward(x, g, b, None, None, 1e-3, fmt, True,
                                                         None, None, NT)) for m in (old, new)}
            r0, r1 = calls[old](), calls[new]()
            same = all(np.array_equal(p, q) for p, q in zip(r0, r1))
            t = {old: [], new: []}
            for r in range(rounds):
                for m in ((old, new) if r % 2 else (new, old)):
                    f = calls[m]
                    f()
                    if COLD:
                        _junk += 1
                        t0 = time.perf_counter()
                        f()
                        t[m].append(time.perf_counter() - t0)
                        continue
                    t0 = time.perf_counter()
                    for _ in range(inner):
                        f()
                    t[m].append((time.perf_counter() - t0) / inner)
            o, n = np.median(t[old]), np.median(t[new])
            res.append(f"{kind} {n / o:.3f} ({o * 1e6:.2f} -> {n * 1e6:.2f} us{'' if same else ', BITS DIFFER'})")
        print(f"{case} x,dy at +{off}: " + "; ".join(res), flush=True)
