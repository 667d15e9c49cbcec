import sys, time, importlib
import numpy as np
import ckbn._dispatch as D
K = D.kernels(); v = D.kernel_name()
Pr = importlib.import_module(f"ckbn._probes_{v}")
rng = np.random.default_rng(0)
for P, C in [(64,1024),(128,1024),(256,1024),(512,1024),(256,256),(256,4096)]:
    x = (rng.standard_normal((P,C))*2+3).astype("f4").reshape(-1)
    dy = rng.standard_normal(P*C).astype("f4")
    y = np.empty_like(x); dst=np.empty_like(x)
    mean = np.zeros(C); var = np.zeros(C); a = np.ones(C,"f4"); b=np.zeros(C,"f4"); s1=np.zeros(C); s2=np.zeros(C)
    mu = x.reshape(-1,C).mean(0).astype("f8")
    calls = {"read": lambda: Pr.probe_read(x,1), "copy": lambda: Pr.probe_copy(x,dst,1),
             "stats": lambda: K.bn_stats(x,1,1,P,C,mean,var,1), "affine": lambda: K.bn_affine(x,1,1,P,C,a,b,y,1),
             "sums": lambda: K.bn_grad_sums(dy,x,1,1,P,C,mu,s1,s2,1), "npsum": lambda: x.reshape(P,C).sum(0)}
    t = {k: [] for k in calls}
    for r in range(200):
        for k,f in calls.items():
            t0=time.perf_counter(); f(); t[k].append(time.perf_counter()-t0)
    m = {k: np.min(vv)*1e6 for k,vv in t.items()}
    print(f"{P}x{C} ({P*C*4>>10} KiB): " + " ".join(f"{k} {m[k]:.1f}" for k in calls) + f" | stats/read {m['stats']/m['read']:.2f} sums/2read {m['sums']/2/m['read']:.2f}")
