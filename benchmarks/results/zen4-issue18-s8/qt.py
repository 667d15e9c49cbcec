import importlib.util, sys, time, os, numpy as np
import ckbn
from ckbn._dispatch import probes
spec = importlib.util.spec_from_file_location("k18old._kernels_avx512", "/tmp/k18old/_kernels_avx512.cpython-311-x86_64-linux-gnu.so")
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
import ckbn._kernels_avx512 as new
pr = probes()
R = int(sys.argv[1]) if len(sys.argv) > 1 else 15
SH=[tuple(map(int,s.split(","))) for s in sys.argv[2].split(";")]
NT=int(sys.argv[3]) if len(sys.argv)>3 else 1
for P,G,Rr,C in SH:
    n=P*G*Rr*C; x=np.random.default_rng(0).random(n,dtype=np.float32); y=np.empty_like(x)
    a=np.linspace(.5,1.5,G*C,dtype=np.float32); b=a-1
    fs={"copy":lambda: pr.probe_copy(x,y,NT,False),"old":lambda: old.bn_affine(x,P,G,Rr,C,a,b,y,NT),"new":lambda: new.bn_affine(x,P,G,Rr,C,a,b,y,NT)}
    T={k:[] for k in fs}
    for i in range(R):
        for k,f in (fs.items() if i%2==0 else reversed(fs.items())):
            t0=time.perf_counter(); f(); T[k].append(time.perf_counter()-t0)
    T={k:np.array(v) for k,v in T.items()}
    print(f"t={NT} {(P,G,Rr,C)}: copy {np.median(T['copy'])*1e6:.0f}us old/copy {np.median(T['old']/T['copy']):.2f} new/copy {np.median(T['new']/T['copy']):.2f} new/old {np.median(T['new']/T['old']):.2f} load {os.getloadavg()[0]:.2f}")
