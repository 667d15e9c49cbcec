"""Cost of synchronized batch normalization: exchange against local compute.

    OMP_NUM_THREADS=1 mpiexec -n 2 python benchmarks/bench_sync.py   # and -n 4
    python benchmarks/bench_sync.py --merge                          # no MPI needed

Under ``mpiexec`` (every rank takes part, rank 0 prints), per channel count
C in 64 ... 2048, on a local NHWC float32 batch of ``--local`` (default
8x7x7xC) per rank, side by side in one run (best of ``--reps``, the slowest
rank's best; the best, not the median: on a shared machine the median
measures the scheduler, since a rank waits whenever its peer is descheduled):

* ``local``  -- one training step of an unsynchronized layer (forward +
  backward, what each process would do alone);
* ``sync``   -- the same step of ``synchronized=True`` (one all-gather of
  2C+7 values forward, one all-reduce of 2C+5 values backward);
* ``gather`` / ``reduce`` -- the two collectives alone, on vectors of those
  sizes (``reduce2`` is an all-reduce of 2C+1 values: the single exchange of
  the shifted-sums alternative discussed in ``benchmarks/SYNC.md``);
* ``msync`` / ``mreduce`` -- the synchronized step with
  ``from_mpi4py(reduction="merge")`` and its merge all-reduce (+ broadcast) alone.

``--merge`` times the ordered Chan merge of P rows (what every process
computes after the all-gather) for P = 16 ... 1024, without communication.
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))

import ckbn  # noqa: E402
from ckbn import distributed  # noqa: E402

CHANNELS = (64, 128, 256, 512, 1024, 2048)


def _best(fn, reps, comm=None):
    fn()
    times = []
    for _ in range(reps):
        if comm is not None:
            comm.allreduce(np.zeros(1))        # line the ranks up
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.min(times))


def bench_mpi(args):
    from mpi4py import MPI
    comm = distributed.from_mpi4py(MPI.COMM_WORLD)
    merge = distributed.from_mpi4py(MPI.COMM_WORLD, reduction="merge")
    rank, size = comm.rank, comm.size
    n, h, w = args.local
    rows = []
    for c in args.channels:
        rng = np.random.default_rng(rank)
        x = rng.standard_normal((n, h, w, c)).astype(np.float32) * 2 + 3
        dy = rng.standard_normal(x.shape).astype(np.float32)
        plain = ckbn.BatchNormalization(name=f"plain_{c}")
        sync = ckbn.BatchNormalization(synchronized=True, communicator=comm, name=f"sync_{c}")
        msync = ckbn.BatchNormalization(synchronized=True, communicator=merge,
                                        name=f"msync_{c}")

        def step(layer):
            layer(x, training=True)
            layer.backward(dy)

        with ckbn.eager_mode():
            t_local = _best(lambda: step(plain), args.reps, comm)
            t_sync = _best(lambda: step(sync), args.reps, comm)
            t_msync = _best(lambda: step(msync), args.reps, comm)
        g = np.zeros(2 * c + 7)
        r = np.zeros(2 * c + 5)
        r2 = np.zeros(2 * c + 1)
        t_gather = _best(lambda: comm.allgather(g), args.reps, comm)
        t_reduce = _best(lambda: comm.allreduce(r), args.reps, comm)
        t_reduce2 = _best(lambda: comm.allreduce(r2), args.reps, comm)
        pk = np.zeros(12 + 2 * c)
        t_merge = _best(lambda: merge.merge_allreduce(pk, c), args.reps, comm)
        mine = np.array([t_local, t_sync, t_gather, t_reduce, t_reduce2, t_msync, t_merge])
        worst = comm.allgather(mine).max(axis=0)   # the slowest rank's best times
        rows.append(dict(C=c, local_ms=worst[0] * 1e3, sync_ms=worst[1] * 1e3,
                         gather_us=worst[2] * 1e6, reduce_us=worst[3] * 1e6,
                         reduce2_us=worst[4] * 1e6, merge_sync_ms=worst[5] * 1e3,
                         merge_allreduce_us=worst[6] * 1e6,
                         overhead=(worst[1] - worst[0]) / worst[0]))
    if rank == 0:
        print(f"# {size} ranks (mpiexec, MPICH), local batch {n}x{h}x{w}xC float32, "
              f"OMP threads {ckbn.get_num_threads()}, best of {args.reps}, slowest rank")
        print(f"{'C':>6} {'local ms':>9} {'sync ms':>9} {'overhead':>9} {'gather us':>10} "
              f"{'reduce us':>10} {'reduce2 us':>10} {'msync ms':>9} {'mreduce us':>10}")
        for r_ in rows:
            print(f"{r_['C']:>6} {r_['local_ms']:>9.3f} {r_['sync_ms']:>9.3f} "
                  f"{r_['overhead']:>8.1%} {r_['gather_us']:>10.1f} {r_['reduce_us']:>10.1f} "
                  f"{r_['reduce2_us']:>10.1f} {r_['merge_sync_ms']:>9.3f} "
                  f"{r_['merge_allreduce_us']:>10.1f}")
        return dict(ranks=size, local=[n, h, w], rows=rows)
    return None


def bench_merge(args):
    rows = []
    for p in (16, 64, 256, 1024):
        for c in (64, 512, 2048):
            rng = np.random.default_rng(p)
            counts = rng.integers(1, 100, p).astype(float)
            means = rng.standard_normal((p, c))
            m2s = rng.random((p, c)) * counts[:, None]
            t = _best(lambda: distributed.merge(counts, means, m2s), max(3, args.reps // 4))
            rows.append(dict(P=p, C=c, merge_ms=t * 1e3))
    print("# ordered Chan merge of P rows of 2C+1 values (one process, float64)")
    print(f"{'P':>6} {'C':>6} {'merge ms':>9}")
    for r in rows:
        print(f"{r['P']:>6} {r['C']:>6} {r['merge_ms']:>9.3f}")
    return dict(rows=rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=lambda s: [int(v) for v in s.split(",")],
                   default=list(CHANNELS))
    p.add_argument("--local", type=lambda s: [int(v) for v in s.split("x")], default=[8, 7, 7])
    p.add_argument("--reps", type=int, default=40)
    p.add_argument("--merge", action="store_true", help="time the merge only (no MPI)")
    p.add_argument("--out", help="write the results as JSON (rank 0)")
    args = p.parse_args()
    res = bench_merge(args) if args.merge else bench_mpi(args)
    if res is not None and args.out:
        res.update(machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                   ckbn=ckbn.__version__)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
