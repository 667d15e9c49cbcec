import sys, time
sys.path.insert(0, "/work/main")
import numpy as np, ckbn, torch
torch.set_num_threads(2)
big = np.ones(8 << 20, np.float32)  # 32 MB
def evict():
    big.sum()
for shp in [(16,16,16,144),(16,32,32,96),(16,4,4,384),(16,4,4,576),(16,8,8,192),(16,2,2,960),(16,32,32,32)]:
    x = np.random.rand(*shp).astype('f4'); C = shp[-1]
    g = np.ones(C, 'f4'); b = np.zeros(C, 'f4')
    y, m, v = ckbn.nn.fused_batch_norm(x, g, b)[:3]
    dy = np.random.rand(*shp).astype('f4')
    xt = torch.from_numpy(x).permute(0,3,1,2); gt=torch.from_numpy(g); bt=torch.from_numpy(b)
    fns = {"fwd": lambda: ckbn.nn.fused_batch_norm(x, g, b),
           "bwd": lambda: ckbn.nn.fused_batch_norm_grad(dy, x, g, m, v),
           "torch fwd": lambda: torch.nn.functional.batch_norm(xt, None, None, gt, bt, True)}
    res = {}
    for k, f in fns.items():
        for cold in (False, True):
            ts = []
            for _ in range(30):
                if cold: evict()
                t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
            res[(k, cold)] = np.median(ts) * 1e6
    print(shp, " ".join(f"{k}{' cold' if c else ''} {t:.0f}" for (k, c), t in res.items()))
