"""A/B of two kernel builds, same process, alternating order each round:
statistics, training forward, inference, backward (and the backward through
ReLU) on the given shapes; every output compared bit for bit.
python ab.py N_THREADS OLD_DIR [rounds] [set]"""
import sys, time, importlib.util, glob
import numpy as np, ckbn
import ckbn._dispatch as D
new = D.kernels(); variant = D.kernel_name()
spec = importlib.util.spec_from_file_location(new.__name__, glob.glob(f"{sys.argv[2]}/_kernels_{variant}*.so")[0])
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
mods = {"old": old, "new": new}
def use(m): D._chosen = (variant, m)
nt = int(sys.argv[1]); rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 20
which = sys.argv[4] if len(sys.argv) > 4 else "wide"
rng = np.random.default_rng(0)
SETS = {
    "wide": [((64, 7, 7, 2048), "NHWC"), ((32, 7, 7, 1280), "NHWC"), ((32, 14, 14, 1024), "NHWC"),
             ((256, 1024), "NC"), ((16, 4, 4, 1152), "NHWC"), ((64, 7, 7, 2048), "NHWC-f64")],
    "other": [((32, 56, 56, 64), "NHWC"), ((32, 28, 28, 256), "NHWC"), ((64, 2048, 7, 7), "NCHW"),
              ((32, 256, 7, 7), "NCHW"), ((16, 32, 8, 8), "NCHW"), ((16, 8, 8, 32), "NHWC"),
              ((32, 64, 56, 56), "NCHW"), ((8, 96, 14, 14), "NCHW")],
}
with ckbn.num_threads(nt):
  for shp, fmt in SETS[which]:
    dt = "f8" if fmt.endswith("f64") else "f4"; fmt = fmt.split("-")[0]
    C = shp[1] if fmt == "NCHW" else shp[-1]
    axes = (0, 2, 3) if fmt == "NCHW" else tuple(range(len(shp) - 1))
    x = (rng.standard_normal(shp) * 2 + 3).astype(dt); dy = rng.standard_normal(shp).astype(dt)
    g = (rng.random(C) + 0.5).astype(dt); b = rng.standard_normal(C).astype(dt)
    y = np.empty_like(x)
    df = fmt
    use(old); _, bm, bv = ckbn.nn.fused_batch_norm(x, g, b, data_format=df)
    calls = {"stats": lambda: ckbn.nn.moments(x, axes),
             "train": lambda: ckbn.nn.fused_batch_norm(x, g, b, data_format=df, out=y),
             "infer": lambda: ckbn.nn.fused_batch_norm(x, g, b, bm, bv, data_format=df, is_training=False, out=y),
             "bwd": lambda: ckbn.nn.fused_batch_norm_grad(dy, x, g, bm, bv, data_format=df),
             "bwd_relu": lambda: ckbn.nn.fused_batch_norm_grad(dy, x, g, bm, bv, data_format=df, offset=b, activation="relu")}
    outs = {}
    for n in mods:
        use(mods[n]); outs[n] = [np.copy(a) for f in calls.values() for r in [f()] for a in (r if isinstance(r, (tuple, list)) else (r,))]
    same = all(np.array_equal(a, c) for a, c in zip(outs["new"], outs["old"]))
    t = {(n, c): [] for n in mods for c in calls}
    for r in range(rounds):
        for c, f in calls.items():
            order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
            for n in order:
                use(mods[n]); t0 = time.perf_counter(); f(); t[(n, c)].append(time.perf_counter() - t0)
    line = " ".join(f"{c} {np.median(t[('new', c)])*1e6:.0f}/{np.median(t[('old', c)])*1e6:.0f}={np.median(np.array(t[('new', c)]) / np.array(t[('old', c)])):.2f}" for c in calls)
    print(f"{'x'.join(map(str, shp))} {fmt} {dt} nt={nt} same_bits={same} | new/old us {line}", flush=True)
