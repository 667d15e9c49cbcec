"""A/B of two kernel builds: the statistics (ckbn.nn.moments) after one read
probe of x each round, 300 rounds.  python ab_stats.py SHAPE... (e.g. 64x7x7x2048);
the old build from /tmp/old_so."""
import sys, time, importlib.util, glob, numpy as np, ckbn
import ckbn._dispatch as D
from ckbn import _probes_avx512 as Pr
new = D.kernels(); variant = D.kernel_name()
spec = importlib.util.spec_from_file_location(new.__name__, glob.glob(f"/tmp/old_so/_kernels_{variant}*.so")[0])
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
ckbn.set_num_threads(1)
rng=np.random.default_rng(0)
for shp in [tuple(int(v) for v in s.split("x")) for s in sys.argv[1:]]:
    x=(rng.standard_normal(shp)*2+3).astype("f4"); axes=tuple(range(len(shp)-1))
    t={"old":[], "new":[], "read":[]}
    for r in range(300):
        t0=time.perf_counter(); Pr.probe_read(x.reshape(-1),1); t["read"].append(time.perf_counter()-t0)
        for n,m in ((("old",old),("new",new)) if r%2==0 else (("new",new),("old",old))):
            D._chosen=(variant,m); t0=time.perf_counter(); ckbn.nn.moments(x,axes); t[n].append(time.perf_counter()-t0)
    md={k: np.median(v) for k,v in t.items()}
    print(shp, "new/old %.3f"%(md["new"]/md["old"]), "xread old %.2f new %.2f"%(md["old"]/md["read"], md["new"]/md["read"]))
