"""A/B of two kernel builds on ckbn.nn calls with and without an activation.

    python ab_act.py N_THREADS OLD_DIR   (OLD_DIR: another build's _kernels_*.so;
    run from the repository root with the repository on PYTHONPATH)
"""
import sys, time, importlib.util
import numpy as np, ckbn
import ckbn._dispatch as D
new = D.kernels()
variant = D.kernel_name()
spec = importlib.util.spec_from_file_location(new.__name__, [p for p in __import__("glob").glob(f"{sys.argv[2]}/_kernels_{variant}*.so")][0])
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
mods = {"old": old, "new": new}
def use(m): D._chosen = (variant, m)
nt = int(sys.argv[1]) if len(sys.argv) > 1 else 1
rng = np.random.default_rng(0)
shapes = [(16, 8, 8, 192), (16, 16, 16, 96), (16, 32, 32, 32), (64, 7, 7, 2048), (16, 192, 8, 8)]
acts = [("relu", 0.2), ("relu6", 0.2), ("leaky_relu", 0.1), (None, 0.2)]
with ckbn.num_threads(nt):
  for shp in shapes:
    fmt = "NCHW" if shp[1] == 192 else "NHWC"
    C = shp[1] if fmt == "NCHW" else shp[-1]
    x = (rng.standard_normal(shp) * 2).astype('f4'); dy = rng.standard_normal(shp).astype('f4')
    g = (rng.random(C) + 0.5).astype('f4'); b = (rng.standard_normal(C) * 0.5).astype('f4')
    m = np.zeros(C, 'f4'); v = np.ones(C, 'f4'); out = np.empty_like(x)
    for act, sl in acts:
        kw = dict(activation=act, negative_slope=sl) if act else {}
        calls = {
          "infer": lambda: ckbn.nn.fused_batch_norm(x, g, b, m, v, is_training=False, out=out, data_format=fmt, **kw),
          "train": lambda: ckbn.nn.fused_batch_norm(x, g, b, data_format=fmt, **kw),
          "bwd": lambda: ckbn.nn.fused_batch_norm_grad(dy, x, g, bm, bv, data_format=fmt, offset=b if act else None, **kw),
        }
        use(old); _, bm, bv = ckbn.nn.fused_batch_norm(x, g, b, data_format=fmt, **kw)
        # bits
        res = {}
        for name in ("old", "new"):
            use(mods[name])
            r1 = ckbn.nn.fused_batch_norm(x, g, b, m, v, is_training=False, data_format=fmt, **kw)[0]
            r2 = ckbn.nn.fused_batch_norm(x, g, b, data_format=fmt, **kw)
            r3 = ckbn.nn.fused_batch_norm_grad(dy, x, g, bm, bv, data_format=fmt, offset=b if act else None, **kw)
            res[name] = [r1, *r2, *r3]
        same = all(np.array_equal(a, c) for a, c in zip(res["old"], res["new"]))
        line = []
        for op, f in calls.items():
            T = {"old": [], "new": []}
            for r in range(21):
                for name in (("old", "new") if r % 2 else ("new", "old")):
                    use(mods[name]); f()
                    n = 20 if x.size < 1e6 else 3
                    t0 = time.perf_counter()
                    for _ in range(n): f()
                    T[name].append((time.perf_counter() - t0) / n)
            o, nw = np.median(T["old"]) * 1e6, np.median(T["new"]) * 1e6
            line.append(f"{op} {o:8.1f} -> {nw:8.1f} ({nw/o:.2f})")
        print(f"{'x'.join(map(str,shp))} {fmt} {str(act):10s} bits {'same' if same else 'DIFFER'} | " + " | ".join(line), flush=True)
