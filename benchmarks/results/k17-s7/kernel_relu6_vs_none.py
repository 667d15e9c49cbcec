import sys, numpy as np, ckbn
sys.path.insert(0, "benchmarks")
from _timing import round_robin, medians, cpu_line
print(cpu_line())
rng = np.random.default_rng(2)
print("| shape | threads | backward None | relu | relu6 | relu6/None | forward None | relu6 |")
print("|---|---|---|---|---|---|---|---|")
for shape in [(16,32,32,32),(16,32,32,96),(16,16,16,144),(16,8,8,192),(16,4,4,576),(16,2,2,1280)]:
    c = shape[-1]
    x = rng.standard_normal(shape).astype(np.float32)
    s = rng.uniform(0.5, 2.0, c).astype(np.float32); o = rng.uniform(-1, 3, c).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    _, m, v = ckbn.nn.fused_batch_norm(x, s, o)
    for th in (1, 2):
        ckbn.set_num_threads(th)
        fns = {}
        for a in (None, "relu", "relu6"):
            fns[("b", a)] = (lambda a: lambda: ckbn.nn.fused_batch_norm_grad(dy, x, s, m, v, offset=o, activation=a))(a)
        for a in (None, "relu6"):
            fns[("f", a)] = (lambda a: lambda: ckbn.nn.fused_batch_norm(x, s, o, activation=a))(a)
        r = {k: t * 1e6 for k, t in medians(round_robin(fns, 20, warmup=2, inner=max(2, int(1e6 / x.size)))).items()}
        print(f"| {'x'.join(map(str, shape))} | {th} | {r[('b', None)]:.0f} | {r[('b', 'relu')]:.0f} | {r[('b', 'relu6')]:.0f} | {r[('b', 'relu6')] / r[('b', None)]:.2f} | {r[('f', None)]:.0f} | {r[('f', 'relu6')]:.0f} |", flush=True)
