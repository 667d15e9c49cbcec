"""Run the ckbn benchmark suite and write JSON, a markdown report and PNG plots.

    python benchmarks/run.py --quick          # under 2 minutes
    python benchmarks/run.py --variants       # every compiled kernel variant side by side
    python benchmarks/run.py --infer-probe    # inference against the copy and affine probes
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


def infer_probe(shapes, rounds):
    """Inference (``fused_batch_norm(..., is_training=False, out=y)``) against
    the probes of the same traffic, 1 thread, round robin in one process:
    the copy probe (the faster of memcpy and the plain loop) and
    ``probe_affine`` (read x, write y, one multiply-add per element with the
    coefficients of the layout: repeated to rows of the units' W lanes for
    channels last, in registers for channels first).  Rows of (shape, layout,
    copy seconds, probe_affine ÷ copy, inference ÷ copy), best of the rounds."""
    k = bk.probes()
    timed = {}
    for name in shapes:
        shape = tuple(int(v) for v in name.split("x"))
        for fmt in ("NHWC", "NCHW") if len(shape) == 4 else ("NC",):
            x = bk.np.random.default_rng(0).random(bk._nchw(shape) if fmt == "NCHW" else shape,
                                                  dtype=bk.np.float32)
            c = x.shape[1] if fmt == "NCHW" else x.shape[-1]
            g = bk.np.linspace(0.5, 1.5, c, dtype=bk.np.float32)
            b = bk.np.zeros(c, bk.np.float32)
            y = bk.np.empty_like(x)
            _, m, v = bk.ckbn.nn.fused_batch_norm(x, g, b, data_format=fmt)
            w = 1 if fmt == "NCHW" else c * max(1, -(-256 // c))   # MIN_LANES_EW
            pa = bk.np.tile(g, w // c) if w > 1 else g[:1].copy()
            pb = pa - 1
            xf, yf = x.reshape(-1), y.reshape(-1)
            timed[(name, fmt)] = {
                "memcpy": lambda xf=xf, yf=yf: k.probe_copy(xf, yf, 1, True),
                "loop": lambda xf=xf, yf=yf: k.probe_copy(xf, yf, 1, False),
                "affine": lambda xf=xf, yf=yf, pa=pa, pb=pb: k.probe_affine(xf, pa, pb, yf, 1),
                "infer": lambda x=x, g=g, b=b, m=m, v=v, y=y, fmt=fmt: bk.ckbn.nn.fused_batch_norm(
                    x, g, b, m, v, data_format=fmt, is_training=False, out=y),
            }
    best = {key: {n: float("inf") for n in fs} for key, fs in timed.items()}
    with bk.ckbn.num_threads(1):
        for _ in range(rounds):
            for key, fs in timed.items():
                for n, f in fs.items():
                    best[key][n] = min(best[key][n], bk._best(f, 0.0, min_reps=3))
    rows = []
    for (name, fmt), t in best.items():
        cp = min(t["memcpy"], t["loop"])
        rows.append((name, fmt, cp, t["affine"] / cp, t["infer"] / cp))
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
    ap.add_argument("--rounds", type=int, default=5, help="rounds of --infer-probe")
    args = ap.parse_args(argv)
    if args.infer_probe:
        print(bk.machine_info()["cpu"], "| inference vs probes, 1 thread, float32, best of "
              f"{args.rounds} rounds round robin")
        for name, fmt, cp, ra, ri in infer_probe(bk.QUICK, args.rounds):
            print(f"{name:12s} {fmt:4s} copy {cp * 1e6:9.1f} us | probe_affine {ra:5.2f}x copy"
                  f" | inference {ri:5.2f}x copy ({ri / ra:4.2f}x probe_affine)")
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
