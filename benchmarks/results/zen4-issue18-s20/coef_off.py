"""Element-wise passes of wide rows with the per-channel coefficient rows at
chosen offsets from x's page offset (dy, x and the output 16 bytes past a
page): bn_grad_dx and bn_affine, float32, 1 thread, one build; median time
÷ the time with the coefficients half a page away."""
import sys, time, importlib, numpy as np, ckbn._dispatch as D
v = D.kernel_name(); m = importlib.import_module(f"ckbn._kernels_{v}")
def placed(a, off):
    buf = np.empty(a.nbytes + 8192, np.uint8)
    base = (-buf.ctypes.data) % 4096 + off
    o = buf[base:base + a.nbytes].view(a.dtype); o[...] = a; return o
rng = np.random.default_rng(0)
offs = (2048, 16, 80, 1040, 3088)
for s in sys.argv[2].split():
    N, C = map(int, s.split("x"))
    x = placed(rng.standard_normal(N * C).astype("f4"), 16); dy = placed(rng.standard_normal(N * C).astype("f4"), 16)
    o = placed(np.zeros(N * C, "f4"), 16)
    ks = {off: [placed(np.full(C, 1.5, "f4"), (16 + off) % 4096) for _ in range(3)] for off in offs}
    for kind in ("dx", "affine"):
        t = {off: [] for off in offs}
        for r in range(int(sys.argv[1])):
            for off in offs[r % len(offs):] + offs[:r % len(offs)]:
                k = ks[off]
                f = (lambda: m.bn_grad_dx(dy, x, N, 1, 1, C, k[0], k[1], k[2], o, 1)) if kind == "dx" else (lambda: m.bn_affine(x, N, 1, 1, C, k[0], k[1], o, 1))
                f(); t0 = time.perf_counter(); f(); t[off].append(time.perf_counter() - t0)
        b = np.median(t[2048])
        print(f"{s} {kind} [{v}]: " + " ".join(f"+{off}: {np.median(t[off]) / b:.2f}" for off in offs), flush=True)
