"""A/B of two kernel builds on channels-first reductions and ckbn.nn calls, alternating, medians
(AB_THREADS threads, default 1).
python ab_red.py OLD_DIR "PxGxHxW ..." [rounds]"""
import sys, time, glob, importlib.util
import numpy as np, ckbn
import ckbn._dispatch as D
new = D.kernels(); variant = D.kernel_name()
spec = importlib.util.spec_from_file_location(new.__name__, glob.glob(f"{sys.argv[1]}/_kernels_{variant}*.so")[0])
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 30
rng = np.random.default_rng(0)
import os
ckbn.set_num_threads(int(os.environ.get("AB_THREADS", "1")))
for s in sys.argv[2].split():
    P, G, H, W = map(int, s.split("x")); R = H * W
    x = (rng.standard_normal((P, G, H, W)) * 2 + 3).astype("f4"); dy = rng.standard_normal(x.shape).astype("f4")
    sc = np.ones(G, "f4"); of = np.zeros(G, "f4"); y = np.empty_like(x)
    _, m, v = ckbn.nn.fused_batch_norm(x, sc, of, data_format="NCHW")
    calls = {"train": lambda: ckbn.nn.fused_batch_norm(x, sc, of, data_format="NCHW", out=y),
             "bwd": lambda: ckbn.nn.fused_batch_norm_grad(dy, x, sc, m, v, data_format="NCHW")}
    res = {"old": {}, "new": {}}
    for r in range(rounds):
        for name, mod in ((("old", old), ("new", new)) if r % 2 == 0 else (("new", new), ("old", old))):
            D._chosen = (variant, mod)
            for k, f in calls.items():
                f(); t0 = time.perf_counter(); f(); res[name].setdefault(k, []).append(time.perf_counter() - t0)
    D._chosen = (variant, new)
    o = {k: np.median(v) * 1e6 for k, v in res["old"].items()}; n = {k: np.median(v) * 1e6 for k, v in res["new"].items()}
    print(f"{s} [{variant}]: old train {o['train']:.1f} bwd {o['bwd']:.1f} | new train {n['train']:.1f} bwd {n['bwd']:.1f} | new/old {n['train']/o['train']:.2f} {n['bwd']/o['bwd']:.2f}", flush=True)
