"""Run the ckbn benchmark suite and write JSON, a markdown report and PNG plots.

    python benchmarks/run.py --quick          # under 2 minutes
    python benchmarks/run.py --variants       # every compiled kernel variant side by side
    python benchmarks/run.py --infer-probe    # inference against the copy and affine probes
    python benchmarks/run.py --infer-probe --suite --threads 1,2 --old DIR   # and an old build
    python benchmarks/run.py                  # full: every shape, float32 and float64,
                                              # warm and cold caches, 1..all threads

Outputs go to ``benchmarks/results/<tag>/`` (tag: ``--tag``, default the host
name and core count): ``results.json``, ``report.md``, ``scaling.png``,
``roofline.png``.  Every time is a ratio taken side by side in the same run:
to the memory-bandwidth roofline measured with the same thread count, and to
the peers (NumPy, PyTorch, TensorFlow) where they are installed.

For a NumPy peer that runs at full speed, unset OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE in the command that runs this script.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_kernels as bk  # noqa: E402


def _threads_all():
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out, t = [], 1
    while t < n:
        out.append(t)
        t *= 2
    out.append(n)
    return sorted(set(out))


def plot(rows, outdir):
    """scaling.png and roofline.png from the rows (also used to redraw them
    from a results.json: ``plot(json.load(f)["rows"], outdir)``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plots")
        return []
    files = []
    warm = [r for r in rows if not r.get("cold") and r["dtype"] == "float32"]
    # Scaling: training-forward time against threads, per shape/layout.
    fig, ax = plt.subplots(figsize=(7, 4.5))
    keys = sorted({(r["shape"], r["layout"]) for r in warm})
    for shape, layout in keys:
        pts = sorted((r["threads"], r["ckbn_train"]) for r in warm
                     if r["shape"] == shape and r["layout"] == layout)
        if len(pts) > 1:
            t1 = pts[0][1]
            ax.plot([p[0] for p in pts], [t1 / p[1] for p in pts], marker="o", label=f"{shape} {layout}")
    if ax.lines:
        n = max(r["threads"] for r in warm)
        ax.plot([1, n], [1, n], "k:", lw=0.8, label="linear")
        ax.set_xlabel("threads")
        ax.set_ylabel("speed-up of training forward over 1 thread")
        ax.legend(fontsize=7)
        ax.set_title("ckbn thread scaling (float32)")
        path = os.path.join(outdir, "scaling.png")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        files.append(path)
    plt.close(fig)
    # Roofline multiples per shape at 1 thread.
    one = [r for r in warm if r["threads"] == 1]
    if one:
        fig, ax = plt.subplots(figsize=(9, 5))
        labels = [f"{r['shape']} {r['layout']}" for r in one]
        xs = range(len(one))
        w = 0.27
        for i, op in enumerate(("train", "infer", "backward")):
            ax.bar([x + (i - 1) * w for x in xs], [r[f"x_roof_{op}"] for r in one], w, label=op)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, fontsize=7, rotation=35, ha="right")
        ax.set_ylabel("time ÷ roofline (1 thread)")
        ax.legend()
        ax.set_title("ckbn against the memory-bandwidth roofline (float32, warm)")
        path = os.path.join(outdir, "roofline.png")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        files.append(path)
        plt.close(fig)
    return files


def _ew_row_lanes(c):
    """Lanes of the element-wise units' channels-last rows (``_ew_lanes`` in
    pyx/ckbn/_k_elementwise.pxi, float32): the fewest whole channels that fill
    whole 64-byte lines and at least 256 bytes, up to 2048 bytes; C itself
    from 256 channels on (or past 2048 bytes: C*k >= 256 lanes)."""
    if c >= 256:
        return c
    k = 1
    while (4 * c * k) % 64:
        k += 1
    w = 4 * c * k
    if w < 256:
        w *= -(-256 // w)
    if w > 2048:
        return c * -(-256 // c)
    return w // 4


def _load_old(old_dir):
    """The kernel module of another build (``--old DIR``: a folder holding
    that build's ``_kernels_<variant>*.so``), loaded beside this one."""
    import importlib.util

    name = f"_kernels_{bk.kernel_name()}"
    files = [f for f in os.listdir(old_dir) if f.startswith(name + ".")]
    if not files:
        raise SystemExit(f"--old {old_dir}: no {name}*.so there")
    spec = importlib.util.spec_from_file_location(f"ckbn_old.{name}",
                                                  os.path.join(old_dir, files[0]))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def infer_probe(shapes, rounds, n_threads=1, old_dir=None):
    """Inference (``fused_batch_norm(..., is_training=False, out=y)``) against
    the probes of the same traffic, ``n_threads`` threads, round robin in one
    process (one call of each per round): the copy probe (memcpy and the
    plain loop; "copy" is the faster median of the two) and ``probe_affine``
    (read x, write y, one multiply-add per element with the coefficients of
    the layout: repeated to rows of the units' W lanes for channels last, in
    registers for channels first), PyTorch's ``batch_norm`` (eval) where it
    is installed, and with ``old_dir`` the kernel entry ``bn_affine`` of
    another build beside this build's (same arrays).  Rows of (shape, layout,
    {name: median seconds, "r_new_old" / "r_torch_new": medians of the
    per-round ratios}, whether old and new gave the same bits).  Every other
    round runs in reverse order."""
    from ckbn._layout import make_layout

    k = bk.probes()
    old = _load_old(old_dir) if old_dir else None
    new = bk.kernels()
    try:
        import torch

        torch.set_num_threads(n_threads)
    except ImportError:
        torch = None
    timed, same = {}, {}
    for name in shapes:
        shape = bk.SHAPES[name]
        for fmt in ("NHWC", "NCHW") if len(shape) == 4 else ("NC",):
            x = bk.np.random.default_rng(0).random(bk._nchw(shape) if fmt == "NCHW" else shape,
                                                  dtype=bk.np.float32)
            axis = 1 if fmt == "NCHW" else x.ndim - 1
            c = x.shape[axis]
            g = bk.np.linspace(0.5, 1.5, c, dtype=bk.np.float32)
            b = bk.np.zeros(c, bk.np.float32)
            y = bk.np.empty_like(x)
            y2 = bk.np.empty_like(x)
            _, m, v = bk.ckbn.nn.fused_batch_norm(x, g, b, data_format=fmt)
            w = 1 if fmt == "NCHW" else _ew_row_lanes(c)
            pa = bk.np.tile(g, w // c) if w > 1 else g[:1].copy()
            pb = pa - 1
            xf, yf, y2f = x.reshape(-1), y.reshape(-1), y2.reshape(-1)
            fs = {
                "memcpy": lambda xf=xf, yf=yf: k.probe_copy(xf, yf, n_threads, True),
                "loop": lambda xf=xf, yf=yf: k.probe_copy(xf, yf, n_threads, False),
                "affine": lambda xf=xf, yf=yf, pa=pa, pb=pb: k.probe_affine(
                    xf, pa, pb, yf, n_threads),
                "infer": lambda x=x, g=g, b=b, m=m, v=v, y=y, fmt=fmt: bk.ckbn.nn.fused_batch_norm(
                    x, g, b, m, v, data_format=fmt, is_training=False, out=y),
            }
            dims = make_layout(x.shape, (axis,)).dims
            ga, gb = g, (g - 1).astype(bk.np.float32)
            fs["new"] = lambda xf=xf, yf=yf, dims=dims, ga=ga, gb=gb: new.bn_affine(
                xf, *dims, ga, gb, yf, n_threads)
            if old is not None:
                # every timed call writes y (same cache state); the bits
                # are compared once, old into y2
                fs["old"] = lambda xf=xf, yf=yf, dims=dims, ga=ga, gb=gb: old.bn_affine(
                    xf, *dims, ga, gb, yf, n_threads)
                new.bn_affine(xf, *dims, ga, gb, yf, n_threads)
                old.bn_affine(xf, *dims, ga, gb, y2f, n_threads)
                same[(name, fmt)] = bool(bk.np.array_equal(y, y2))
            if torch is not None:
                t = torch.from_numpy(x)
                if fmt == "NHWC":
                    t = t.permute(0, 3, 1, 2)
                tw, tb = torch.ones(c), torch.zeros(c)
                rm, rv = torch.zeros(c), torch.ones(c)
                fs["torch"] = lambda t=t, tw=tw, tb=tb, rm=rm, rv=rv: torch.nn.functional.batch_norm(
                    t, rm, rv, tw, tb, training=False, eps=1e-3)
            timed[(name, fmt)] = fs
    times = {key: {n: [] for n in fs} for key, fs in timed.items()}
    with bk.ckbn.num_threads(n_threads):
        for fs in timed.values():
            for f in fs.values():
                f()
        for i in range(rounds):
            for key, fs in timed.items():
                # every other round in reverse order: no timing sits always
                # right after the same neighbour
                for n, f in (fs.items() if i % 2 == 0 else reversed(fs.items())):
                    t0 = time.perf_counter()
                    f()
                    times[key][n].append(time.perf_counter() - t0)
    rows = []
    for key, t in times.items():
        med = {n: float(bk.np.median(v)) for n, v in t.items()}
        med["copy"] = min(med["memcpy"], med["loop"])
        # medians of the per-round ratios (each from two calls a few ms apart)
        new_t = bk.np.array(t["new"])
        if "old" in t:
            med["r_new_old"] = float(bk.np.median(new_t / bk.np.array(t["old"])))
        if "torch" in t:
            med["r_torch_new"] = float(bk.np.median(bk.np.array(t["torch"]) / new_t))
        rows.append((key[0], key[1], med, same.get(key)))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description="ckbn benchmark suite")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--threads", default=None, help="comma-separated (default: 1, 2, 4, ... all)")
    ap.add_argument("--budget", type=float, default=None)
    ap.add_argument("--variants", action="store_true",
                    help="only time every compiled kernel variant side by side (variants.md)")
    ap.add_argument("--infer-probe", action="store_true",
                    help="only inference against the copy and affine probes, 1 thread")
    ap.add_argument("--rounds", type=int, default=25, help="rounds of --infer-probe")
    ap.add_argument("--old", default=None,
                    help="--infer-probe: a folder with another build's _kernels_*.so, "
                         "timed beside this build (bn_affine)")
    ap.add_argument("--suite", action="store_true",
                    help="--infer-probe: every suite shape (default: the quick ones)")
    args = ap.parse_args(argv)
    if args.infer_probe:
        nts = [int(t) for t in args.threads.split(",")] if args.threads else [1]
        shapes = list(bk.SHAPES) if args.suite else bk.QUICK
        print(bk.machine_info()["cpu"], f"| inference vs probes, float32, medians of "
              f"{args.rounds} rounds round robin")
        for nt in nts:
            for name, fmt, t, same in infer_probe(shapes, args.rounds, nt, args.old):
                cp = t["copy"]
                line = (f"{name:12s} {fmt:4s} t={nt} copy {cp * 1e6:8.1f} us | probe_affine "
                        f"{t['affine'] / cp:5.2f}x | infer {t['infer'] / cp:5.2f}x | "
                        f"bn_affine {t['new'] / cp:5.2f}x copy")
                if "old" in t:
                    line += (f" (old {t['old'] / cp:5.2f}x, new/old {t['r_new_old']:4.2f},"
                             f" same bits {same})")
                if "torch" in t:
                    line += (f" | torch {t['torch'] / cp:5.2f}x, torch/bn_affine "
                             f"{t['r_torch_new']:4.2f}")
                print(line + f" | load {os.getloadavg()[0]:.2f}", flush=True)
        return 0
    tag = args.tag or f"{socket.gethostname()}-{os.cpu_count()}cores"
    outdir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", tag)
    os.makedirs(outdir, exist_ok=True)
    threads = [int(t) for t in args.threads.split(",")] if args.threads else (
        [1, 2] if args.quick else _threads_all())
    start = time.time()
    info = bk.machine_info()
    print(info["cpu"], f"{info['cores']} cores")
    print(info["show_config"])
    budget = args.budget or (0.1 if args.quick else 0.3)
    if args.variants:
        names = bk.available_kernels()
        shapes = bk.QUICK if args.quick else [s for s in bk.SHAPES if s != "16x8x8x32"]
        vrows = [r for nt in threads for r in bk.run_variants(shapes, nt, budget)]
        with open(os.path.join(outdir, "variants.json"), "w") as f:
            json.dump({"machine": info, "variants": names, "rows": vrows}, f, indent=1)
        with open(os.path.join(outdir, "variants.md"), "w") as f:
            f.write(f"# ckbn kernel variants side by side: {tag}\n\n")
            f.write(f"CPU: {info['cpu']}; features: {' '.join(info['cpu_features'])}; "
                    f"dispatched variant: {info['kernel']}.\n\n")
            f.write(bk.variants_markdown(vrows, names))
        print(f"wrote {outdir}/variants.md in {time.time() - start:.0f} s")
        return 0
    rows = []
    if args.quick:
        rows += bk.run(bk.QUICK, threads, [bk.np.float32], budget)
    else:
        rows += bk.run(list(bk.SHAPES), threads, [bk.np.float32, bk.np.float64], budget)
        rows += bk.run(["32x56x56x64", "32x28x28x256"], threads, [bk.np.float16], budget)
        bk.COLD = True
        cold = bk.run(["32x56x56x64", "64x7x7x2048", "8x112x112x64"], [1, max(threads)],
                      [bk.np.float32], budget, peers=False)
        bk.COLD = False
        for r in cold:
            r["cold"] = True
        rows += cold
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump({"machine": info, "rows": rows, "seconds": time.time() - start}, f, indent=1)
    pngs = plot(rows, outdir)
    warm = [r for r in rows if not r.get("cold")]
    cold = [r for r in rows if r.get("cold")]
    with open(os.path.join(outdir, "report.md"), "w") as f:
        f.write(f"# ckbn benchmarks: {tag}\n\n")
        f.write(f"CPU: {info['cpu']}, {info['cores']} cores. Run took {time.time() - start:.0f} s.\n\n")
        f.write("```\n" + info["show_config"] + "```\n\n")
        f.write("## Kernels, warm caches\n\n" + bk.to_markdown(warm) + "\n")
        if cold:
            f.write("## Kernels, cold caches (caches flushed before every call; "
                    "roofline also cold)\n\n" + bk.to_markdown(cold) + "\n")
        for p in pngs:
            f.write(f"![{os.path.basename(p)}]({os.path.basename(p)})\n\n")
    print(f"wrote {outdir} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
