"""A/B of two kernel builds: NCHW training, inference and backward with swish.
python ab_swish_nchw.py N_THREADS OLD_DIR ROUNDS"""
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
  for shp in [(32, 256, 14, 14), (8, 1024, 8, 8), (32, 128, 28, 28), (64, 2048, 7, 7), (16, 96, 16, 16)]:
    C = shp[1]
    x = rng.standard_normal(shp).astype('f4'); dy = rng.standard_normal(shp).astype('f4')
    g = (rng.random(C) + 0.5).astype('f4'); b = rng.standard_normal(C).astype('f4')
    use(old); _, m, v = ckbn.nn.fused_batch_norm(x, g, b, data_format="NCHW")
    line = []
    for act, f in (("swish bwd", lambda: ckbn.nn.fused_batch_norm_grad(dy, x, g, m, v, data_format="NCHW", offset=b, activation="swish")),
                   ("swish train", lambda: ckbn.nn.fused_batch_norm(x, g, b, data_format="NCHW", activation="swish")),
                   ("swish infer", lambda: ckbn.nn.fused_batch_norm(x, g, b, m, v, is_training=False, data_format="NCHW", activation="swish"))):
        outs = {}
        for n in mods:
            use(mods[n]); outs[n] = f()
        diff = max(float(np.max(np.abs(a.astype('f8') - c.astype('f8'))) / (np.max(np.abs(c.astype('f8'))) + 1e-30)) for a, c in zip(outs["new"], outs["old"]))
        t = {n: [] for n in mods}
        for r in range(rounds):
            for n in (["old", "new"] if r % 2 == 0 else ["new", "old"]):
                use(mods[n]); t0 = time.perf_counter(); f(); t[n].append(time.perf_counter() - t0)
        line.append(f"{act or 'none'} {np.median(t['new'])*1e6:.0f}/{np.median(t['old'])*1e6:.0f}us={np.median(np.array(t['new'])/np.array(t['old'])):.2f} (diff {diff:.0e})")
    print("x".join(map(str, shp)), f"nt={nt}", " | ".join(line), flush=True)
