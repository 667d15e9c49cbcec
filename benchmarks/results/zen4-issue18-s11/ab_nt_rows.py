"""A/B of two kernel builds: inference, training and backward on wide channels-last rows
(session 11: non-temporal stores for rows of up to 16 KiB, EW_NT_ROW_MAX, not kept).
python ab_infer.py N_THREADS OLD_DIR ROUNDS"""
import sys, time, importlib.util, glob
import numpy as np, ckbn
import ckbn._dispatch as D
new = D.kernels(); variant = D.kernel_name()
spec = importlib.util.spec_from_file_location(new.__name__, glob.glob(f"{sys.argv[2]}/_kernels_{variant}*.so")[0])
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
mods = {"old": old, "new": new}
def use(m): D._chosen = (variant, m)
nt = int(sys.argv[1]); rounds = int(sys.argv[3])
rng = np.random.default_rng(0)
with ckbn.num_threads(nt):
  for shp in [(64, 7, 7, 2048), (32, 7, 7, 2048), (64, 7, 7, 1280), (32, 14, 14, 1024), (256, 2048)]:
    C = shp[-1]
    x = rng.standard_normal(shp).astype('f4'); dy = rng.standard_normal(shp).astype('f4')
    g = (rng.random(C) + 0.5).astype('f4'); b = rng.standard_normal(C).astype('f4')
    y = np.empty_like(x)
    fmt = "NHWC" if len(shp) == 4 else "NC"
    use(old); _, m, v = ckbn.nn.fused_batch_norm(x, g, b, data_format=fmt)
    fs = {"infer": lambda: ckbn.nn.fused_batch_norm(x, g, b, m, v, is_training=False, out=y, data_format=fmt),
          "train": lambda: ckbn.nn.fused_batch_norm(x, g, b, out=y, data_format=fmt),
          "bwd": lambda: ckbn.nn.fused_batch_norm_grad(dy, x, g, m, v, data_format=fmt)}
    line = []
    for name, f in fs.items():
        outs = {}
        for n in mods:
            use(mods[n]); r = f(); outs[n] = [np.array(a, copy=True) for a in (r if isinstance(r, tuple) else (r,))]
        same = all(np.array_equal(a, c) for a, c in zip(outs["new"], outs["old"]))
        t = {n: [] for n in mods}
        for r in range(rounds):
            for n in (["old", "new"] if r % 2 == 0 else ["new", "old"]):
                use(mods[n]); t0 = time.perf_counter(); f(); t[n].append(time.perf_counter() - t0)
        line.append(f"{name} {np.median(t['new'])*1e6:.0f}/{np.median(t['old'])*1e6:.0f}us={np.median(np.array(t['new'])/np.array(t['old'])):.2f}{'' if same else ' DIFF'}")
    print("x".join(map(str, shp)), f"nt={nt}", " | ".join(line), flush=True)
