import sys, time, importlib
import numpy as np
import ckbn._dispatch as D
K = D.kernels(); v = D.kernel_name()
Pr = importlib.import_module(f"ckbn._probes_{v}")
rng = np.random.default_rng(0)
shapes = [tuple(map(int,s.split("x"))) for s in sys.argv[2].split()]
for P,G,R in shapes:
    n=P*G*R
    x = (rng.standard_normal(n)*2+3).astype("f4"); dy = rng.standard_normal(n).astype("f4")
    y = np.empty_like(x); dst=np.empty_like(x)
    mean = np.zeros(G); var = np.zeros(G); a = np.ones(G,"f4"); b=np.zeros(G,"f4"); s1=np.zeros(G); s2=np.zeros(G)
    mu = x.reshape(P,G,R).mean((0,2)).astype("f8")
    calls = {"read": lambda: Pr.probe_read(x,1), "copy": lambda: Pr.probe_copy(x,dst,1),
             "stats": lambda: K.bn_stats(x,P,G,R,1,mean,var,1), "affine": lambda: K.bn_affine(x,P,G,R,1,a,b,y,1),
             "sums": lambda: K.bn_grad_sums(dy,x,P,G,R,1,mu,s1,s2,1), "dx": lambda: K.bn_grad_dx(dy,x,P,G,R,1,a,a,b,y,1)}
    t = {k: [] for k in calls}
    for r in range(int(sys.argv[1]) if len(sys.argv)>1 else 30):
        for k,f in calls.items():
            t0=time.perf_counter(); f(); t[k].append(time.perf_counter()-t0)
    m = {k: np.median(vv)*1e6 for k,vv in t.items()}
    print(f"{P}x{G}x{R} NCHW ({n*4>>10} KiB): " + " ".join(f"{k} {m[k]:.1f}" for k in calls) + f" | stats/read {m['stats']/m['read']:.2f} sums/2read {m['sums']/2/m['read']:.2f} affine/copy {m['affine']/m['copy']:.2f} dx/(r+c) {m['dx']/(m['read']+m['copy']):.2f}")
