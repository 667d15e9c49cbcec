"""Inference of a large NCHW/NHWC float32 batch: ckbn.nn against torch's
F.batch_norm (1 thread each), alternating in one process, warm (the same x
and output every call, as the suite times them).  python infer_torch.py SHAPE FMT ROUNDS"""
import sys, time, numpy as np, torch, torch.nn.functional as F, ckbn, ckbn.nn
torch.set_num_threads(1); ckbn.set_num_threads(1)
shape = tuple(map(int, sys.argv[1].split("x"))); fmt = sys.argv[2]; rounds = int(sys.argv[3])
rng = np.random.default_rng(0)
x = rng.standard_normal(shape, dtype=np.float32)
c = shape[1] if fmt == "NCHW" else shape[-1]
g, b = (rng.random(c, dtype=np.float32) + .5), rng.standard_normal(c).astype("f4")
m, v = rng.standard_normal(c).astype("f4"), (rng.random(c, dtype=np.float32) + .5)
tx = torch.from_numpy(x) if fmt == "NCHW" else torch.from_numpy(x).permute(0, 3, 1, 2)
tg, tb, tm, tv = map(torch.from_numpy, (g, b, m, v))
calls = {"ckbn": lambda: ckbn.nn.fused_batch_norm(x, g, b, m, v, 1e-3, fmt, is_training=False),
         "torch": lambda: F.batch_norm(tx, tm, tv, tg, tb, training=False, eps=1e-3)}
t = {k: [] for k in calls}
for r in range(rounds):
    for k in (calls if r % 2 else reversed(list(calls))):
        f = calls[k]; f()
        best = 1e9
        for _ in range(5):
            t0 = time.perf_counter(); f(); best = min(best, time.perf_counter() - t0)
        t[k].append(best)
ck, to = np.median(t["ckbn"]), np.median(t["torch"])
print(f"{sys.argv[1]} {fmt}: ckbn {ck * 1e6:.0f} us, torch {to * 1e6:.0f} us, torch/ckbn {to / ck:.2f} "
      f"(per round: {min(a / b for a, b in zip(t['torch'], t['ckbn'])):.2f}-{max(a / b for a, b in zip(t['torch'], t['ckbn'])):.2f})")
