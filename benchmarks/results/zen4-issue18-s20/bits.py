"""Same bits: statistics, backward sums, training and backward of two builds."""
import sys, glob, importlib.util, os, itertools
import numpy as np
import ckbn._dispatch as D
v = os.environ.get("CKBN_KERNELS") or D.kernel_name()
def load(path):
    spec = importlib.util.spec_from_file_location(f"ckbn._kernels_{v}", glob.glob(f"{path}/_kernels_{v}*.so")[0])
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
A, B = load(sys.argv[1]), load(sys.argv[2])
rng = np.random.default_rng(1)
shapes = [(1,1,3136,2048),(1,1,392,2048),(1,1,256,1024),(1,1,200,1100),(1,1,70,1088),(1,1,130,600),
          (1,1,1000,64),(1,1,777,3),(1,1,65,513),(1,1,129,2048),(1,1,64,2048),(1,1,63,1024),(1,1,1,2048),
          (16,32,64,1),(16,32,49,1),(130,8,9,1),(2,2048,49,1),(64,64,36,1),(70,5,300,1),(3,4,70000,1),
          (200,3,5,1),(256,256,16,1),(128,512,16,1),(64,1024,4,1),(300,100,9,1),(1,3,5,7),(4,3,100,16),(100,2,3,40),(65,4,8,1),(129,16,16,1),(8,3,20000,1)]
bad = 0; n = 0
for (P,G,R,C), dt, nt in itertools.product(shapes, ("f4","f8"), (1, 2)):
    N = P*G*R*C
    x = (rng.standard_normal(N) * 3 + 1e3 * rng.standard_normal()).astype(dt)
    dy = rng.standard_normal(N).astype(dt)
    k = G*C
    outs = []
    for m in (A, B):
        mean = np.zeros(k); var = np.zeros(k)
        m.bn_stats(x, P, G, R, C, mean, var, nt)
        s1 = np.zeros(k); s2 = np.zeros(k)
        m.bn_grad_sums(dy, x, P, G, R, C, mean, s1, s2, nt)
        outs.append(np.concatenate([mean, var, s1, s2]))
    n += 1
    if outs[0].tobytes() != outs[1].tobytes():
        bad += 1; print("DIFF", (P,G,R,C), dt, nt, np.max(np.abs(outs[0]-outs[1])))
# the small channels-first backward through the entry
for shape in [(16,32,8,8),(100,8,4,4),(65,3,5,5),(64,4,16,16),(130,2,8,8),(2,2,2,2)]:
    x = rng.standard_normal(shape).astype("f4"); dy = rng.standard_normal(shape).astype("f4")
    c = shape[1]; g = rng.random(c).astype("f4") + .5; mu = x.mean((0,2,3)).astype("f4"); var = x.var((0,2,3)).astype("f4")
    r = [m.common_backward(dy, x, g, mu, var, 1e-3, "NCHW", True, None, None, 0) for m in (A, B)]
    n += 1
    if any(a.tobytes() != b.tobytes() for a, b in zip(*r)):
        bad += 1; print("DIFF small", shape)
print(f"[{v}] {n} cases, {bad} differ")
# the entries: training, inference and backward outputs
n2 = bad2 = 0
for fmt, shape in [("NHWC", (8, 7, 7, 2048)), ("NHWC", (256, 1, 1, 1024)), ("NHWC", (64, 7, 7, 2048)), ("NHWC", (4, 10, 10, 1100)),
                   ("NHWC", (32, 14, 14, 64)), ("NCHW", (16, 64, 14, 14)), ("NCHW", (8, 2048, 7, 7)), ("NHWC", (2, 3, 5, 7))]:
    for dt in ("f4",):
        x = (rng.standard_normal(shape) * 2 + 5).astype(dt); dy = rng.standard_normal(shape).astype(dt)
        c = shape[1] if fmt == "NCHW" else shape[-1]
        g = (rng.random(c) + .5).astype(dt); b = rng.standard_normal(c).astype(dt)
        mm = rng.standard_normal(c).astype(dt); mv = (rng.random(c) + .5).astype(dt)
        for nt in (1, 2):
            r = []
            for m in (A, B):
                y, bm, bv = m.common_forward(x, g, b, None, None, 1e-3, fmt, True, None, None, nt)[:3]
                yi = m.common_forward(x, g, b, mm, mv, 1e-3, fmt, False, None, None, nt)[0]
                dxs = m.common_backward(dy, x, g, bm, bv, 1e-3, fmt, True, None, None, nt)
                dxi = m.common_backward(dy, x, g, mm, mv, 1e-3, fmt, False, None, None, nt)
                r.append([y, bm, bv, yi, *dxs, *dxi])
            n2 += 1
            if any(np.asarray(p).tobytes() != np.asarray(q).tobytes() for p, q in zip(*r)):
                bad2 += 1; print("DIFF entry", fmt, shape, nt)
print(f"[{v}] entries: {n2} cases, {bad2} differ")
