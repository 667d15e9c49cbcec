"""Touch-size sweep: the start build against copies of the env build (made
for this measurement and not kept: _touch_rows read CKBN_TB1/CKBN_TB2 at
import), each imported with its own CKBN_TB1/CKBN_TB2 (bytes per array), one process,
order rotating; medians; cold (64 MB read first) and read (x read first)."""
import os, sys, time, glob, shutil, importlib, importlib.util, numpy as np, ckbn, ckbn._dispatch as D
v = os.environ.get("CKBN_KERNELS") or D.kernel_name()
def load(path, tag, env):
    os.environ.update(env)
    d = f"/tmp/s16/mods/{tag}"; os.makedirs(d, exist_ok=True)
    src = glob.glob(f"{path}/_kernels_{v}*.so")[0]; dst = f"{d}/{os.path.basename(src)}"; shutil.copy(src, dst)
    spec = importlib.util.spec_from_file_location(f"ckbn._kernels_{v}", dst)
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
mods = [("old", load(sys.argv[1], "old", {}))]
for sz in sys.argv[3].split(","):
    kind, b = sz.split("=")
    mods.append((sz, load("/tmp/s16/so_env", sz.replace("=", "_"), {"CKBN_TB1": b if kind == "t1" else "8192", "CKBN_TB2": b if kind == "t2" else "8192"})))
Pr = importlib.import_module(f"ckbn._probes_{v}")
rounds = int(sys.argv[2]); rng = np.random.default_rng(0); junk = np.ones(16 << 20, "f4")
for shp in [tuple(map(int, s.split("x"))) for s in os.environ["AB_SHAPES"].split()]:
    C = shp[-1]; P = int(np.prod(shp[:-1]))
    x = (rng.standard_normal(shp) * 2 + 3).astype("f4").reshape(-1); dy = rng.standard_normal(x.size).astype("f4")
    mean = np.zeros(C); var = np.zeros(C); mu = np.zeros(C); s1 = np.zeros(C); s2 = np.zeros(C)
    for what in os.environ.get("AB_KINDS", "stats sums").split():
        for cond in ("cold", "read"):
            t = {n: [] for n, _ in mods}
            for r in range(rounds):
                order = mods[r % len(mods):] + mods[:r % len(mods)]
                for n, m in order:
                    f = (lambda: m.bn_stats(x, 1, 1, P, C, mean, var, 1)) if what == "stats" else (lambda: m.bn_grad_sums(dy, x, 1, 1, P, C, mu, s1, s2, 1))
                    if cond == "cold": junk.sum()
                    else: Pr.probe_read(x, 1)
                    t0 = time.perf_counter(); f(); t[n].append(time.perf_counter() - t0)
            m0 = np.median(t["old"])
            print(f"{'x'.join(map(str, shp))} [{v}] {what} {cond}: " + " ".join(f"{n} {np.median(t[n]) / m0:.2f}" for n, _ in mods[1:]), flush=True)
