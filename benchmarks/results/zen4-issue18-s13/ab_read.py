"""A/B of two kernel builds against the in-process read probe: per round,
one read of x, then each build's call (order alternating), so every call
follows the same kind of traffic.  python ab_read.py OLD_DIR [rounds]"""
import sys, time, importlib.util, glob
import numpy as np, ckbn
import ckbn._dispatch as D
new = D.kernels(); variant = D.kernel_name()
spec = importlib.util.spec_from_file_location(new.__name__, glob.glob(f"{sys.argv[1]}/_kernels_{variant}*.so")[0])
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
import importlib
Pr = importlib.import_module(f"ckbn._probes_{variant}")
mods = {"old": old, "new": new}
def use(m): D._chosen = (variant, m)
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
rng = np.random.default_rng(0)
import os
shapes = [((64, 7, 7, 2048), "NHWC"), ((32, 14, 14, 1024), "NHWC"), ((32, 7, 7, 1280), "NHWC"),
          ((16, 4, 4, 1152), "NHWC"), ((256, 1024), "NC")]
if os.environ.get("AB_SHAPES") == "other":
    shapes = [((32, 28, 28, 256), "NHWC"), ((32, 56, 56, 64), "NHWC"), ((8, 112, 112, 64), "NHWC"),
              ((16, 14, 14, 96), "NHWC"), ((16, 16, 16, 144), "NHWC")]
ckbn.set_num_threads(1)
for shp, fmt in shapes:
    C = shp[-1]; axes = tuple(range(len(shp) - 1))
    x = (rng.standard_normal(shp) * 2 + 3).astype("f4"); dy = rng.standard_normal(shp).astype("f4")
    g = (rng.random(C) + 0.5).astype("f4"); b = rng.standard_normal(C).astype("f4")
    y = np.empty_like(x); src = np.empty_like(x).reshape(-1); dst = np.empty_like(src)
    use(old); _, bm, bv = ckbn.nn.fused_batch_norm(x, g, b, data_format=fmt)
    calls = {"stats": lambda: ckbn.nn.moments(x, axes),
             "train": lambda: ckbn.nn.fused_batch_norm(x, g, b, data_format=fmt, out=y),
             "infer": lambda: ckbn.nn.fused_batch_norm(x, g, b, bm, bv, data_format=fmt, is_training=False, out=y),
             "infer_relu": lambda: ckbn.nn.fused_batch_norm(x, g, b, bm, bv, data_format=fmt, is_training=False,
                                                            out=y, activation="relu"),
             "bwd": lambda: ckbn.nn.fused_batch_norm_grad(dy, x, g, bm, bv, data_format=fmt),
             "bwd_relu": lambda: ckbn.nn.fused_batch_norm_grad(dy, x, g, bm, bv, data_format=fmt,
                                                               offset=b, activation="relu")}
    res = []
    for c, f in calls.items():
        t = {"old": [], "new": [], "probe": []}
        for r in range(rounds):
            t0 = time.perf_counter()
            if c == "stats": Pr.probe_read(x.reshape(-1), 1)
            else: Pr.probe_copy(x.reshape(-1), dst, 1)
            t["probe"].append(time.perf_counter() - t0)
            for n in (["old", "new"] if r % 2 == 0 else ["new", "old"]):
                use(mods[n]); t0 = time.perf_counter(); f(); t[n].append(time.perf_counter() - t0)
        m = {k: np.median(v) for k, v in t.items()}
        res.append(f"{c} new/old {m['new']/m['old']:.2f} (x{'read' if c == 'stats' else 'copy'} {m['old']/m['probe']:.2f}->{m['new']/m['probe']:.2f})")
    print(f"{'x'.join(map(str, shp))} {fmt}: " + "; ".join(res), flush=True)
