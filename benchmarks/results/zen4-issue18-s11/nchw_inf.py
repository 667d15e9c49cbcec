"""NCHW inference, 1 thread: ckbn vs torch vs copy (best of rounds, interleaved)."""
import sys, time, numpy as np, torch, ckbn
from ckbn._dispatch import probes
nt = int(sys.argv[1]) if len(sys.argv) > 1 else 1
torch.set_num_threads(nt)
F = torch.nn.functional
k = probes()
shapes = [(64, 2048, 7, 7), (32, 64, 56, 56), (32, 256, 28, 28), (8, 64, 112, 112)]
def t1(f):
    t = time.perf_counter(); f(); return time.perf_counter() - t
rng = np.random.default_rng(7)
for sh in shapes:
    x = np.random.default_rng(0).standard_normal(sh).astype(np.float32)
    C = sh[1]
    sc = np.ones(C, np.float32); of = np.zeros(C, np.float32)
    mu = np.zeros(C, np.float32); va = np.ones(C, np.float32)
    y = np.empty_like(x); c = np.empty_like(x)
    xt = torch.from_numpy(x)
    m = torch.from_numpy(mu); v = torch.from_numpy(va); w = torch.from_numpy(sc); b = torch.from_numpy(of)
    fs = {"ckbn": lambda: ckbn.nn.fused_batch_norm(x, sc, of, mu, va, data_format="NCHW", is_training=False, out=y),
          "torch": lambda: F.batch_norm(xt, m, v, w, b, False, 0.1, 1e-3),
          "copy_memcpy": lambda: k.probe_copy(x.reshape(-1), c.reshape(-1), nt, True),
          "copy_loop": lambda: k.probe_copy(x.reshape(-1), c.reshape(-1), nt, False)}
    res = {n: [] for n in fs}
    with ckbn.num_threads(nt):
        for r in range(60):
            order = list(fs.items())
            rng.shuffle(order)
            for n, f in order:
                res[n].append(t1(f))
    a = {n: np.array(v) for n, v in res.items()}
    cp = np.minimum(a["copy_memcpy"], a["copy_loop"])
    print(sh, " ".join(f"{n} {np.min(v)*1e6:.0f}us med-ratio {np.median(v/cp):.2f} [{np.percentile(v/cp,25):.2f},{np.percentile(v/cp,75):.2f}]" for n, v in a.items() if not n.startswith("copy")))
