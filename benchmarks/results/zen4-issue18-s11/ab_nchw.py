"""A/B of two kernel builds: statistics, training, backward on channels-first shapes.
python ab_nchw.py N_THREADS OLD_DIR ROUNDS 64x2048x7x7,8x1024x8x8-f64,..."""
import sys, time, importlib.util, glob
import numpy as np, ckbn
import ckbn._dispatch as D
new = D.kernels(); variant = D.kernel_name()
spec = importlib.util.spec_from_file_location(new.__name__, glob.glob(f"{sys.argv[2]}/_kernels_{variant}*.so")[0])
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
mods = {"old": old, "new": new}
def use(m): D._chosen = (variant, m)
nt = int(sys.argv[1]); rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 20
rng = np.random.default_rng(0)
shapes = [(tuple(int(v) for v in a.split("-")[0].split("x")), "NCHW" + ("-f64" if a.endswith("f64") else "")) for a in sys.argv[4].split(",")]
with ckbn.num_threads(nt):
  for shp, fmt in shapes:
    dt = "f8" if fmt.endswith("f64") else "f4"; fmt = fmt.split("-")[0]
    C = shp[1]; axes = (0,) + tuple(range(2, len(shp)))
    x = (rng.standard_normal(shp) * 2 + 3).astype(dt); dy = rng.standard_normal(shp).astype(dt)
    g = (rng.random(C) + 0.5).astype(dt); b = rng.standard_normal(C).astype(dt)
    y = np.empty_like(x)
    df = "NCHW"
    use(old); _, bm, bv = ckbn.nn.fused_batch_norm(x, g, b, data_format=df)
    calls = {"stats": lambda: ckbn.nn.moments(x, axes),
             "train": lambda: ckbn.nn.fused_batch_norm(x, g, b, data_format=df, out=y),
             "bwd": lambda: ckbn.nn.fused_batch_norm_grad(dy, x, g, bm, bv, data_format=df)}
    same = True
    outs = {}
    for n in mods:
        use(mods[n]); outs[n] = [calls["stats"](), calls["train"]()[1:], calls["bwd"]()]
    def flat(o): return [a for t in o for a in (t if isinstance(t, (tuple, list)) else (t,))]
    diff = max(float(np.max(np.abs(a.astype("f8") - c.astype("f8"))) / (np.max(np.abs(c.astype("f8"))) + 1e-30)) for a, c in zip(flat(outs["new"]), flat(outs["old"])))
    t = {(n, c): [] for n in mods for c in calls}
    for r in range(rounds):
        for c, f in calls.items():
            order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
            for n in order:
                use(mods[n]); t0 = time.perf_counter(); f(); t[(n, c)].append(time.perf_counter() - t0)
    line = " ".join(f"{c} {np.median(t[('new', c)])*1e6:.0f}/{np.median(t[('old', c)])*1e6:.0f}us={np.median(np.array(t[('new', c)]) / np.array(t[('old', c)])):.2f}" for c in calls)
    print(f"{'x'.join(map(str, shp))} {fmt} {dt} {new.reduction_path(shp[0], shp[1], int(np.prod(shp[2:])), 1)} nt={nt} maxreldiff {diff:.1e} | new/old {line}", flush=True)
