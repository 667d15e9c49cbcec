# Session 12: the C++ backward node timed from inside (the library make_torch_ops_timed.py
# writes and says how to build, in /tmp/s12/tprobe/libp.so), 16x8x8x32 float32 NHWC, 1 thread,
# 2000 calls.
import os, time, ctypes, statistics
os.environ["KERAS_BACKEND"] = "torch"
import numpy as np, torch, ckbn
torch.ops.load_library('/tmp/s12/tprobe/libp.so')
lib = ctypes.CDLL('/tmp/s12/tprobe/libp.so')
get = ctypes.pythonapi.PyCapsule_GetPointer; get.restype = ctypes.c_void_p; get.argtypes = [ctypes.py_object, ctypes.c_char_p]
cap = ckbn.kernel_table(); lib.ckbn_native_set_table.argtypes=[ctypes.c_void_p]; lib.ckbn_native_set_table(get(cap, b"ckbn.kernel_table.v1"))
lib.probe_t.restype = ctypes.c_int64
tr = torch.ops.ckbn_probe2.bn_train.default._op
rng = np.random.default_rng(0)
x = rng.normal(size=(16, 8, 8, 32)).astype(np.float32); dy = torch.from_numpy(rng.normal(size=x.shape).astype(np.float32))
xg = torch.tensor(x, requires_grad=True); sg = torch.ones(32, requires_grad=True); og = torch.zeros(32, requires_grad=True)
inf = float('inf')
f = lambda: tr(xg, sg, og, None, None, 0.0, (3,), 1e-3, 0, 0.0, inf, 1)[0].backward(dy)
for _ in range(200): f()
lib.probe_reset()
t0 = time.perf_counter()
for _ in range(2000): f()
tot = (time.perf_counter() - t0) / 2000 * 1e6
n = lib.probe_t(5)
print("fwd+bwd", tot, "us; in backward_call per call (us):", [round(lib.probe_t(i) / n / 1e3, 2) for i in range(5)])
m, v = ckbn.nn.fused_batch_norm(x, np.ones(32, np.float32), np.zeros(32, np.float32), epsilon=1e-3, axis=[3])[1:]
dyn = dy.numpy()
def med(fn, calls=1000):
    for _ in range(100): fn()
    t0 = time.perf_counter()
    for _ in range(calls): fn()
    return (time.perf_counter() - t0) / calls * 1e6
print("nn bwd", med(lambda: ckbn.nn.fused_batch_norm_grad(dyn, x, np.ones(32, np.float32), m, v, epsilon=1e-3, axis=[3])))
