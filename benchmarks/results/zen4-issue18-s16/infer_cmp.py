import time, numpy as np, ckbn, importlib, ckbn._dispatch as D
ckbn.set_num_threads(1)
Pr = importlib.import_module(f"ckbn._probes_{D.kernel_name()}")
rng = np.random.default_rng(0)
xh = rng.standard_normal((64, 7, 7, 2048)).astype("f4"); xc = np.ascontiguousarray(xh.transpose(0, 3, 1, 2))
g = np.ones(2048, "f4"); b = np.zeros(2048, "f4"); m = np.zeros(2048, "f4"); v = np.ones(2048, "f4")
yh = np.empty_like(xh); yc = np.empty_like(xc); dst = np.empty_like(xh)
calls = {"NHWC": lambda: ckbn.nn.fused_batch_norm(xh, g, b, m, v, data_format="NHWC", is_training=False, out=yh),
         "NCHW": lambda: ckbn.nn.fused_batch_norm(xc, g, b, m, v, data_format="NCHW", is_training=False, out=yc),
         "copy": lambda: Pr.probe_copy(xh.reshape(-1), dst.reshape(-1), 1, True),
         "copyloop": lambda: Pr.probe_copy(xh.reshape(-1), dst.reshape(-1), 1, False)}
t = {k: [] for k in calls}
for r in range(31):
    for k, f in calls.items():
        t0 = time.perf_counter(); f(); t[k].append(time.perf_counter() - t0)
print(" ".join(f"{k} {np.median(x) * 1e3:.2f} (min {np.min(x) * 1e3:.2f})" for k, x in t.items()))
