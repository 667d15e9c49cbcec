"""The planes path split by channels (_pl_chans): statistics and backward sums
(plain and through ReLU) of the new build with 1, 2 and 3 threads against the
old build's with 1, bit for bit.  python bits_threads.py OLD_DIR [variant]"""
import sys, glob, importlib.util
import numpy as np
import ckbn, ckbn._dispatch as D
variant = sys.argv[2] if len(sys.argv) > 2 else D.kernel_name()
spec = importlib.util.spec_from_file_location(f"ckbn._kernels_{variant}", glob.glob(f"{sys.argv[1]}/_kernels_{variant}*.so")[0])
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
new = D._load(variant)
rng = np.random.default_rng(9)
bad = n = 0
for dt in ("f4", "f8"):
    for (P, G, H, W) in [(1, 4096, 7, 7), (2, 2048, 7, 7), (3, 1500, 6, 6), (5, 777, 7, 7), (2, 300, 8, 8), (1, 64, 32, 32), (4, 1024, 14, 14)]:
        x = (rng.standard_normal((P, G, H, W)) * 3 + 7).astype(dt); dy = rng.standard_normal(x.shape).astype(dt)
        sc = rng.uniform(0.5, 2, G).astype(dt); of = rng.uniform(-1, 1, G).astype(dt)
        outs = []
        for K, nts in ((old, (1,)), (new, (1, 2, 3))):
            for nt in nts:
                D._chosen = (variant, K)
                with ckbn.num_threads(nt):
                    y, m, v = ckbn.nn.fused_batch_norm(x, sc, of, data_format="NCHW")
                    g1 = ckbn.nn.fused_batch_norm_grad(dy, x, sc, m, v, data_format="NCHW")
                    g2 = ckbn.nn.fused_batch_norm_grad(dy, x, sc, m, v, data_format="NCHW", offset=of, activation="relu")
                outs.append(b"".join(a.tobytes() for a in (y, m, v) + tuple(g1) + tuple(g2)))
        n += 1
        ok = all(o == outs[0] for o in outs[1:])
        bad += not ok
        print(dt, (P, G, H, W), new.reduction_path(P, G, H * W, 1), "same" if ok else "DIFF")
print(f"{n - bad}/{n} identical (old 1 thread, new 1, 2, 3 threads)")
