"""Kernel benchmark: ckbn.nn against a memory-bandwidth roofline, NumPy and PyTorch.

Every time is the minimum over repeated calls, taken side by side in one run,
and reported as a ratio to a roofline measured in the same run with the same
thread count:

* read probe: ``t_read(S)``, one pass reading S bytes;
* copy probe: ``t_copy(S)``, reading S bytes and writing S bytes.

with S the size of ``x``.  The rooflines of the three operations are

* training forward (statistics, then normalize): ``t_read(S) + t_copy(S)``;
* inference: ``t_copy(S)``;
* backward (sums over x and dy, then dx): ``2 t_read(S) + t_read(S) + t_copy(S)``.

Usage::

    python benchmarks/bench_kernels.py --quick
    python benchmarks/bench_kernels.py --threads 1,2 --json out.json --markdown out.md
    python benchmarks/bench_kernels.py --variants --threads 1    # every compiled variant

For a NumPy peer that runs at full speed, unset OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE in the command that runs this script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

import ckbn
from ckbn._dispatch import available_kernels, kernel_name, kernels, probes, use_kernels

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import cpu_info  # noqa: E402

SHAPES = {
    "32x56x56x64": (32, 56, 56, 64),
    "32x28x28x256": (32, 28, 28, 256),
    "64x7x7x2048": (64, 7, 7, 2048),
    "8x112x112x64": (8, 112, 112, 64),
    "256x1024": (256, 1024),
    "16x8x8x32": (16, 8, 8, 32),
}
QUICK = ["32x56x56x64", "64x7x7x2048", "256x1024", "16x8x8x32"]


_FLUSH = None
COLD = False


def _flush_caches():
    """Evict the caches by writing a buffer larger than any last-level cache."""
    global _FLUSH
    if _FLUSH is None:
        _FLUSH = np.ones(64 * 2**20, dtype=np.float32)  # 256 MiB
    _FLUSH += 1.0


def _best(fn, budget=0.4, min_reps=3, max_reps=200):
    """Minimum wall time of ``fn()`` over repetitions within ``budget`` seconds.

    With ``COLD`` set, the caches are flushed before every timed call.
    """
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget and len(times) < max_reps):
        if COLD:
            _flush_caches()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _cache_sizes():
    """{"L1d": bytes, "L2": ..., "L3": ...}: what the kernels tune with
    (their ``tuning()``, from sysconf/cpuid), else sysconf here."""
    k = kernels()
    tune = getattr(k, "tuning", None)
    if tune is not None:
        t = tune()
        return {"L1d": t["L1d"], "L2": t["L2"], "L3": t["L3"]}
    names = {"L1d": "SC_LEVEL1_DCACHE_SIZE", "L2": "SC_LEVEL2_CACHE_SIZE",
             "L3": "SC_LEVEL3_CACHE_SIZE"}
    out = {}
    for key, name in names.items():
        try:
            out[key] = os.sysconf(name)
        except (ValueError, OSError):
            out[key] = None
    return out


def _kib(n):
    return "?" if not n else (f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB")


def machine_info():
    """The machine a result was taken on: CPU vendor, model, family/model,
    ISA features, cache sizes (L1d/L2 per core, L3), cores, the dispatched
    kernel variant and its machine-derived tuning, and show_config()."""
    import io

    buf = io.StringIO()
    ckbn.show_config(file=buf)
    info = cpu_info()
    vendor, model = info["vendor"], info["model"]
    family, model_no = info.get("family", "?"), info.get("model_number", "?")
    from ckbn import _cpu

    feats = sorted(k for k, v in _cpu.cpu_features().items() if v)
    caches = _cache_sizes()
    tune = getattr(kernels(), "tuning", None)
    cpu = (f"{vendor} {model} (family {family}, model {model_no}); "
           f"L1d {_kib(caches['L1d'])}, L2 {_kib(caches['L2'])} per core, "
           f"L3 {_kib(caches['L3'])}; ISA: {kernel_name()} variant")
    return {"cpu": cpu, "vendor": vendor, "model": model, "family": family,
            "model_number": model_no, "caches": caches, "cores": os.cpu_count(),
            "platform": platform.platform(), "cpu_features": feats, "kernel": kernel_name(),
            "tuning": tune() if tune is not None else None, "show_config": buf.getvalue()}


def rooflines(nbytes, n_threads, budget):
    k = probes()
    n = nbytes // 4
    src = np.random.default_rng(0).random(n, dtype=np.float32)
    dst = np.empty_like(src)
    t_read = _best(lambda: k.probe_read(src, n_threads), budget)
    # The faster of memcpy and a plain loop (see probe_copy's docstring).
    t_copy = min(_best(lambda: k.probe_copy(src, dst, n_threads, True), budget),
                 _best(lambda: k.probe_copy(src, dst, n_threads, False), budget))
    return t_read, t_copy


def _nchw(shape):
    if len(shape) != 4:
        return shape
    n, h, w, c = shape
    return (n, c, h, w)


def bench_ckbn(x, fmt, n_threads, budget):
    c = x.shape[-1] if fmt == "NHWC" or fmt == "NC" else x.shape[1]
    scale = np.ones(c, x.dtype)
    offset = np.zeros(c, x.dtype)
    y = np.empty_like(x)
    dy = np.ones_like(x)
    res = {}
    with ckbn.num_threads(n_threads):
        _, m, v = ckbn.nn.fused_batch_norm(x, scale, offset, data_format=fmt)
        res["train"] = _best(lambda: ckbn.nn.fused_batch_norm(x, scale, offset, data_format=fmt, out=y), budget)
        res["infer"] = _best(lambda: ckbn.nn.fused_batch_norm(x, scale, offset, m, v, data_format=fmt,
                                                              is_training=False, out=y), budget)
        res["backward"] = _best(lambda: ckbn.nn.fused_batch_norm_grad(dy, x, scale, m, v, data_format=fmt), budget)
    return res


def bench_numpy(x, fmt, budget):
    red = tuple(i for i in range(x.ndim) if i != (x.ndim - 1 if fmt in ("NHWC", "NC") else 1))

    def train():
        m = x.mean(axis=red, keepdims=True)
        v = x.var(axis=red, keepdims=True)
        return (x - m) / np.sqrt(v + 1e-3)

    return {"train": _best(train, budget)}


def bench_torch(x, fmt, n_threads, budget):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(n_threads)
    t = torch.from_numpy(x)
    if fmt == "NHWC":
        t = t.permute(0, 3, 1, 2)  # channels_last memory format, no copy
    c = t.shape[1]
    w = torch.ones(c, dtype=t.dtype)
    b = torch.zeros(c, dtype=t.dtype)
    rm = torch.zeros(c, dtype=t.dtype)
    rv = torch.ones(c, dtype=t.dtype)
    F = torch.nn.functional
    res = {}
    try:
        _torch_ops(t, w, b, rm, rv, F, res, budget)
    except RuntimeError:  # e.g. a dtype without a CPU kernel
        return None
    return res


def _torch_ops(t, w, b, rm, rv, F, res, budget):
    import torch

    with torch.no_grad():
        res["train"] = _best(lambda: F.batch_norm(t, None, None, w, b, training=True, eps=1e-3), budget)
        res["infer"] = _best(lambda: F.batch_norm(t, rm, rv, w, b, training=False, eps=1e-3), budget)
        _, sm, sinv = torch.ops.aten.native_batch_norm(t, w, b, None, None, True, 0.1, 1e-3)
        g = torch.ones_like(t)
        res["backward"] = _best(lambda: torch.ops.aten.native_batch_norm_backward(
            g, t, w, None, None, sm, sinv, True, 1e-3, [True, True, True]), budget)


def bench_tensorflow(x, fmt, n_threads, budget):
    """TensorFlow's fused batch norm (its oneDNN CPU kernel), eager, NHWC/NCHW."""
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf
    except ImportError:
        return None
    if x.ndim != 4:
        return None
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n_threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialized: the first setting stays
    t = tf.constant(x)
    c = x.shape[3] if fmt == "NHWC" else x.shape[1]
    one = tf.ones([c], tf.float32)
    zero = tf.zeros([c], tf.float32)
    fbn = tf.compat.v1.nn.fused_batch_norm
    res = {}
    try:
        res["train"] = _best(lambda: fbn(t, one, zero, epsilon=1e-3, data_format=fmt, is_training=True), budget)
        res["infer"] = _best(lambda: fbn(t, one, zero, zero, one, epsilon=1e-3, data_format=fmt,
                                         is_training=False), budget)
    except Exception:  # noqa: BLE001 - some layouts have no CPU kernel
        return None
    return res


def bench_torch_mkldnn(x, fmt, n_threads, budget):
    """PyTorch on oneDNN's blocked layout (``to_mkldnn()``), NCHW only."""
    try:
        import torch
    except ImportError:
        return None
    if fmt != "NCHW" or x.dtype != np.float32:
        return None
    torch.set_num_threads(n_threads)
    t = torch.from_numpy(x).to_mkldnn()
    c = x.shape[1]
    w = torch.ones(c)
    b = torch.zeros(c)
    rm = torch.zeros(c)
    rv = torch.ones(c)
    F = torch.nn.functional
    try:
        with torch.no_grad():
            return {"train": _best(lambda: F.batch_norm(t, rm, rv, w, b, training=True, eps=1e-3), budget),
                    "infer": _best(lambda: F.batch_norm(t, rm, rv, w, b, training=False, eps=1e-3), budget)}
    except Exception:  # noqa: BLE001
        return None


def run(shapes, threads, dtypes, budget, peers=True):
    rows = []
    for name in shapes:
        shape = SHAPES[name]
        for dtype in dtypes:
            for fmt in (["NHWC", "NCHW"] if len(shape) == 4 else ["NC"]):
                xs = shape if fmt != "NCHW" else _nchw(shape)
                x = np.random.default_rng(1).standard_normal(xs).astype(dtype)
                for nt in threads:
                    # float64 data moves twice the bytes of the float32 probe's unit.
                    # Probes before and after the kernels, best of both: one
                    # noisy moment on a shared machine cannot inflate the roofline.
                    t_read, t_copy = rooflines(x.nbytes, nt, budget)
                    ck = bench_ckbn(x, fmt, nt, budget)
                    t_read2, t_copy2 = rooflines(x.nbytes, nt, budget)
                    t_read, t_copy = min(t_read, t_read2), min(t_copy, t_copy2)
                    roof = {"train": t_read + t_copy, "infer": t_copy, "backward": 3 * t_read + t_copy}
                    row = {"shape": name, "layout": fmt, "dtype": np.dtype(dtype).name, "threads": nt,
                           "bytes": x.nbytes, "t_read": t_read, "t_copy": t_copy}
                    for op in ("train", "infer", "backward"):
                        row[f"ckbn_{op}"] = ck[op]
                        row[f"x_roof_{op}"] = ck[op] / roof[op]
                    if peers:
                        tp = bench_torch(x, fmt, nt, budget)
                        if tp:
                            for op, t in tp.items():
                                row[f"torch_{op}"] = t
                        for peer, fn in (("tf", bench_tensorflow), ("mkldnn", bench_torch_mkldnn)):
                            res = fn(x, fmt, nt, budget) if np.dtype(dtype) == np.float32 else None
                            for op, t in (res or {}).items():
                                row[f"{peer}_{op}"] = t
                        if nt == 1:
                            row["numpy_train"] = bench_numpy(x, fmt, budget)["train"]
                    rows.append(row)
                    print(_fmt_row(row), flush=True)
    return rows


VARIANT_OPS = ("stats", "train", "infer", "backward")


def run_variants(shapes, n_threads, budget, dtype=np.float32):
    """Every available kernel variant on the same arrays, side by side.

    For each shape and layout, each operation is timed on every variant in
    turn, and again in the reverse order; the best of both is kept, so a
    noisy moment cannot favour one variant.  Returns rows with
    ``{variant}_{op}`` times in seconds.
    """
    names = available_kernels()
    rows = []
    for name in shapes:
        shape = SHAPES[name]
        for fmt in (["NHWC", "NCHW"] if len(shape) == 4 else ["NC"]):
            xs = shape if fmt != "NCHW" else _nchw(shape)
            x = np.random.default_rng(1).standard_normal(xs).astype(dtype)
            red = [i for i in range(x.ndim) if i != (1 if fmt == "NCHW" else x.ndim - 1)]
            row = {"shape": name, "layout": fmt, "dtype": np.dtype(dtype).name,
                   "threads": n_threads}
            for order in (names, names[::-1]):
                for v in order:
                    with use_kernels(v), ckbn.num_threads(n_threads):
                        t = {"stats": _best(lambda: ckbn.nn.moments(x, red), budget)}
                        t.update(bench_ckbn(x, fmt, n_threads, budget))
                    for op in VARIANT_OPS:
                        key = f"{v}_{op}"
                        row[key] = min(row.get(key, np.inf), t[op])
            rows.append(row)
            print(_fmt_variants(row, names), flush=True)
    return rows


def _fmt_variants(r, names):
    s = f"{r['shape']:>13} {r['layout']:>4} t={r['threads']} |"
    for op in VARIANT_OPS:
        s += f" {op}" + "".join(f" {v} {r[f'{v}_{op}'] * 1e6:7.1f}" for v in names) + " |"
    return s


def variants_markdown(rows, names):
    """Table of the variants' times, and each one's ratio to the fastest."""
    head = "| shape | layout | thr | " + " | ".join(
        f"{op} {v} µs" for op in VARIANT_OPS for v in names) + " | slowest ÷ fastest |\n"
    head += "|" + "---|" * (3 + len(VARIANT_OPS) * len(names) + 1) + "\n"
    lines = []
    for r in rows:
        cells = [f"{r[f'{v}_{op}'] * 1e6:.1f}" for op in VARIANT_OPS for v in names]
        worst = max(max(r[f"{v}_{op}"] for v in names) / min(r[f"{v}_{op}"] for v in names)
                    for op in VARIANT_OPS)
        lines.append(f"| {r['shape']} | {r['layout']} | {r['threads']} | " + " | ".join(cells)
                     + f" | {worst:.2f} |")
    return head + "\n".join(lines) + "\n"


def _fmt_row(r):
    us = lambda t: f"{t * 1e6:9.1f}"  # noqa: E731
    s = (f"{r['shape']:>13} {r['layout']:>4} {r['dtype']:>7} t={r['threads']} | "
         f"train {us(r['ckbn_train'])} us ({r['x_roof_train']:.2f}x roof) | "
         f"infer {us(r['ckbn_infer'])} us ({r['x_roof_infer']:.2f}x) | "
         f"bwd {us(r['ckbn_backward'])} us ({r['x_roof_backward']:.2f}x)")
    if "torch_train" in r:
        s += (f" | torch/ckbn train {r['torch_train'] / r['ckbn_train']:.2f}x "
              f"infer {r['torch_infer'] / r['ckbn_infer']:.2f}x "
              f"bwd {r['torch_backward'] / r['ckbn_backward']:.2f}x")
    for peer in ("tf", "mkldnn"):
        if f"{peer}_train" in r:
            s += f" | {peer}/ckbn train {r[f'{peer}_train'] / r['ckbn_train']:.2f}x"
    if "numpy_train" in r:
        s += f" | numpy/ckbn {r['numpy_train'] / r['ckbn_train']:.1f}x"
    return s


def to_markdown(rows):
    head = ("| shape | layout | dtype | thr | train µs | ×roof | infer µs | ×roof | bwd µs | ×roof "
            "| torch÷ckbn train | infer | bwd | TF÷ckbn train | infer | mkldnn÷ckbn train "
            "| numpy÷ckbn train |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        def ratio(peer, k):
            return f"{r[f'{peer}_{k}'] / r[f'ckbn_{k}']:.2f}" if f"{peer}_{k}" in r else "–"

        tr = lambda k: ratio("torch", k)  # noqa: E731
        npy = f"{r['numpy_train'] / r['ckbn_train']:.1f}" if "numpy_train" in r else "–"
        lines.append(
            f"| {r['shape']} | {r['layout']} | {r['dtype']} | {r['threads']} "
            f"| {r['ckbn_train'] * 1e6:.1f} | {r['x_roof_train']:.2f} "
            f"| {r['ckbn_infer'] * 1e6:.1f} | {r['x_roof_infer']:.2f} "
            f"| {r['ckbn_backward'] * 1e6:.1f} | {r['x_roof_backward']:.2f} "
            f"| {tr('train')} | {tr('infer')} | {tr('backward')} "
            f"| {ratio('tf', 'train')} | {ratio('tf', 'infer')} | {ratio('mkldnn', 'train')} | {npy} |")
    return head + "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few shapes, float32 only")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--shapes", default=None, help="comma-separated names from: " + ", ".join(SHAPES))
    ap.add_argument("--dtypes", default="float32", help="float32,float64")
    ap.add_argument("--budget", type=float, default=0.3, help="seconds per measurement")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--cold", action="store_true", help="flush the caches before every timed call")
    ap.add_argument("--variants", action="store_true",
                    help="time every available kernel variant side by side (no peers)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args(argv)
    global COLD
    COLD = args.cold
    shapes = args.shapes.split(",") if args.shapes else (QUICK if args.quick else list(SHAPES))
    threads = [int(t) for t in args.threads.split(",")]
    dtypes = [np.dtype(d).type for d in args.dtypes.split(",")]
    info = machine_info()
    print(info["cpu"], f"{info['cores']} cores;", "features:", " ".join(info["cpu_features"]))
    print(info["show_config"])
    if args.variants:
        names = available_kernels()
        rows = [r for nt in threads for r in run_variants(shapes, nt, args.budget)]
        md = variants_markdown(rows, names)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": info, "variants": names, "rows": rows}, f, indent=1)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(md)
        else:
            print(md)
        return 0
    rows = run(shapes, threads, dtypes, args.budget, peers=not args.no_peers)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=1)
    md = to_markdown(rows)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md)
    else:
        print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
