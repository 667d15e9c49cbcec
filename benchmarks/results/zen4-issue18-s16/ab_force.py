"""Planes path against chunks on the same shapes: two copies of a build
whose _pl_path obeys CKBN_FORCE_PL (1: planes wherever a plane holds two
vectors, 2: chunks; a build made for this measurement from 091b8f8 and not
kept: _pl_path read the variable at import), each imported with its own
setting; ckbn.nn NCHW
training and backward, 1 thread, alternating, medians.
python ab_force.py BUILD_DIR "PxGxHxW ..." [rounds]"""
import os, sys, time, glob, shutil, importlib.util
import numpy as np, ckbn
import ckbn._dispatch as D
v = os.environ.get("CKBN_KERNELS") or D.kernel_name()
def load(tag, force):
    os.environ["CKBN_FORCE_PL"] = force
    d = f"/tmp/ab_force_{tag}"; os.makedirs(d, exist_ok=True)
    src = glob.glob(f"{sys.argv[1]}/_kernels_{v}*.so")[0]; dst = f"{d}/{os.path.basename(src)}"
    shutil.copy(src, dst)
    spec = importlib.util.spec_from_file_location(f"ckbn._kernels_{v}", dst)
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
mods = {"planes": load("planes", "1"), "chunks": load("chunks", "2")}
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 21
ckbn.set_num_threads(1)
rng = np.random.default_rng(0)
for s in sys.argv[2].split():
    P, G, H, W = map(int, s.split("x"))
    assert mods["planes"].reduction_path(P, G, H * W, 1) == "planes", s
    assert mods["chunks"].reduction_path(P, G, H * W, 1) != "planes", s
    x = (rng.standard_normal((P, G, H, W)) * 2 + 3).astype("f4"); dy = rng.standard_normal(x.shape).astype("f4")
    sc = np.ones(G, "f4"); of = np.zeros(G, "f4"); y = np.empty_like(x)
    _, m, var = ckbn.nn.fused_batch_norm(x, sc, of, data_format="NCHW")
    calls = {"train": lambda: ckbn.nn.fused_batch_norm(x, sc, of, data_format="NCHW", out=y),
             "bwd": lambda: ckbn.nn.fused_batch_norm_grad(dy, x, sc, m, var, data_format="NCHW")}
    res = {k: {c: [] for c in calls} for k in mods}
    for r in range(rounds):
        for name in (("planes", "chunks") if r % 2 else ("chunks", "planes")):
            D._chosen = (v, mods[name])
            for c, f in calls.items():
                f(); t0 = time.perf_counter(); f(); res[name][c].append(time.perf_counter() - t0)
    med = {k: {c: np.median(t) for c, t in d.items()} for k, d in res.items()}
    print(f"{s} [{v}] planes/chunks train {med['planes']['train'] / med['chunks']['train']:.2f} "
          f"bwd {med['planes']['bwd'] / med['chunks']['bwd']:.2f} (chunks {med['chunks']['train'] * 1e6:.0f} / {med['chunks']['bwd'] * 1e6:.0f} us)", flush=True)
