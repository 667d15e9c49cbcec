"""One process of the synchronized batch-normalization tests.

Run under ``mpiexec`` (engine ``mpi``, or ``mpi-merge`` for the merge
all-reduce) or as one of several processes of a
``torch.distributed`` gloo group on 127.0.0.1 (engine ``torch``, with
``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set)::

    python -m tests.distributed_worker ENGINE PLAN OUTDIR

``PLAN`` is ``steps`` (every data case of :data:`CASES` on every split, then
the error cases) or ``dead`` (rank 1 exits before the first exchange).  Each
rank writes ``OUTDIR/rank<r>.npz`` (arrays) and ``OUTDIR/rank<r>.json``
(errors raised, as "Type: message").  The tests (``test_distributed_*.py``)
rebuild the global batch with :func:`global_batch` and compare.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

# Data cases: name -> (shape of one sample, channel axis, dtype, |mean|/std offset,
# renorm).  NHWC float32 takes the fused path (Bessel-corrected moving variance).
CASES = {
    "dense": ((3,), -1, "float32", 0.0, False),
    "nhwc": ((2, 3, 4), 3, "float32", 0.0, False),
    "nchw": ((4, 2, 3), 1, "float32", 0.0, False),
    "far": ((3,), -1, "float64", 1e4, False),       # |mean| / std = 1e4
    "renorm": ((3,), -1, "float32", 0.0, True),
    "seq": ((5, 3), -1, "float32", 0.0, False),     # the Keras layers also mask it
}
MOMENTUM = 0.5
EPS = 1e-3
STEPS = 2


def splits(size):
    """Local batch sizes per split name, for a world of ``size`` processes."""
    if size == 2:
        return {"equal": [4, 4], "uneven": [5, 2], "empty": [6, 0]}
    if size == 4:
        return {"equal": [2, 2, 2, 2], "uneven": [1, 2, 3, 5], "empty": [3, 0, 2, 4]}
    if size == 8:
        return {"equal": [2] * 8, "uneven": [1, 3, 2, 5, 1, 4, 2, 3],
                "empty": [3, 0, 2, 4, 0, 1, 2, 3]}
    raise ValueError(f"no splits for {size} processes")


def global_batch(case, split, sizes, step):
    """(x, dy) of the global batch of one step: the same on every process."""
    shape, _, dtype, offset, _ = CASES[case]
    seed = [sum(map(ord, case)), sum(map(ord, split)), step, len(sizes)]
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    std = rng.uniform(0.5, 2.0, size=shape)
    x = rng.standard_normal((n,) + shape) * std + rng.uniform(-1, 1, size=shape)
    if offset:
        x = x + offset * std * np.sign(rng.uniform(-1, 1, size=shape))
    dy = rng.standard_normal((n,) + shape)
    return x.astype(dtype), dy.astype(dtype)


def gamma_init(shape, dtype):
    return np.linspace(0.5, 1.5, int(np.prod(shape))).reshape(shape).astype(dtype)


def beta_init(shape, dtype):
    return np.linspace(-0.3, 0.2, int(np.prod(shape))).reshape(shape).astype(dtype)


def make_layer(case, name, comm):
    import ckbn
    _, axis, dtype, _, renorm = CASES[case]
    return ckbn.BatchNormalization(
        axis=axis, momentum=MOMENTUM, epsilon=EPS, gamma_initializer=gamma_init,
        beta_initializer=beta_init, renorm=renorm, renorm_momentum=MOMENTUM,
        renorm_clipping={"rmax": 1.5, "rmin": 0.7, "dmax": 0.4} if renorm else None,
        dtype=dtype, synchronized=True, communicator=comm, name=name)


def local_slice(a, sizes, rank):
    lo = sum(sizes[:rank])
    return a[lo:lo + sizes[rank]]


def run_steps(comm, out, errors):
    import ckbn
    rank, size = comm.rank, comm.size
    for split, sizes in splits(size).items():
        for case in CASES:
            tag = f"{split}_{case}"
            layer = make_layer(case, tag, comm)
            for step in range(STEPS):
                x, dy = global_batch(case, split, sizes, step)
                xl, dyl = local_slice(x, sizes, rank), local_slice(dy, sizes, rank)
                y = layer(xl, training=True)
                dx, grads = layer.backward(dyl)
            out[f"{tag}/y"], out[f"{tag}/dx"] = y, dx
            for w, g in zip(layer.trainable_weights, grads):
                out[f"{tag}/d_{w.name.split('/')[-1].split(':')[0]}"] = g
            for w in layer.non_trainable_weights:
                out[f"{tag}/{w.name.split('/')[-1].split(':')[0]}"] = w.value
            # Inference uses the moving statistics and never communicates: only
            # rank 0 calls it here.
            if rank == 0:
                out[f"{tag}/infer"] = layer(xl, training=False)
    run_errors(comm, out, errors)


KERAS_CASES = ("dense", "nhwc", "nchw", "seq")
MASKED = ("seq",)   # Keras cases called with a mask of shape x.shape[:-1]


def global_mask(case, split, sizes, step):
    """The Keras mask of the global batch (about 70% True), or None."""
    if case not in MASKED:
        return None
    rng = np.random.default_rng([7, sum(map(ord, split)), step, len(sizes)])
    return rng.random((sum(sizes),) + CASES[case][0][:-1]) < 0.7


def run_keras_torch(comm, out, errors):
    """keras_plugin.BatchNormalization(synchronized=True) on the torch backend."""
    import keras
    import torch

    from keras_plugin import BatchNormalization
    rank, size = comm.rank, comm.size
    for split, sizes in splits(size).items():
        for case in KERAS_CASES:
            shape, axis, dtype, _, _ = CASES[case]
            tag = f"{split}_{case}"
            layer = BatchNormalization(axis=axis, momentum=MOMENTUM, epsilon=EPS,
                                       synchronized=True, dtype=dtype, name=tag)
            layer.build((None,) + shape)
            c = ((None,) + shape)[axis]
            layer.gamma.assign(gamma_init((c,), dtype))
            layer.beta.assign(beta_init((c,), dtype))
            for step in range(STEPS):
                x, dy = global_batch(case, split, sizes, step)
                xl = torch.tensor(local_slice(x, sizes, rank), requires_grad=True)
                dyl = torch.tensor(local_slice(dy, sizes, rank))
                mask = global_mask(case, split, sizes, step)
                kw = {} if mask is None else {"mask": torch.tensor(local_slice(mask, sizes,
                                                                               rank))}
                for w in (layer.gamma, layer.beta):
                    w.value.grad = None
                y = layer(xl, training=True, **kw)
                (y * dyl).sum().backward()
            out[f"{tag}/y"] = y.detach().numpy()
            out[f"{tag}/dx"] = xl.grad.numpy()
            out[f"{tag}/d_gamma"] = layer.gamma.value.grad.numpy()
            out[f"{tag}/d_beta"] = layer.beta.value.grad.numpy()
            out[f"{tag}/moving_mean"] = keras.ops.convert_to_numpy(layer.moving_mean)
            out[f"{tag}/moving_variance"] = keras.ops.convert_to_numpy(layer.moving_variance)
            if rank == 0:
                out[f"{tag}/infer"] = keras.ops.convert_to_numpy(
                    layer(torch.tensor(local_slice(x, sizes, rank)), training=False))
    # What cannot synchronize says so.
    lay = BatchNormalization(synchronized=True, renorm=True, name="keras_renorm")
    try:
        lay(torch.ones((4, 3)), training=True)
    except NotImplementedError as e:
        errors["keras_renorm"] = f"{type(e).__name__}: {e}"


def run_keras_tf(outdir, multi_worker=False):
    """keras_plugin.BatchNormalization(synchronized=True) under a MirroredStrategy over
    two logical CPU devices, in this one process; writes one file per replica.

    ``multi_worker``: under a MultiWorkerMirroredStrategy instead (``TF_CONFIG``
    names the workers; one replica per worker process); each worker writes the
    file of its own replica."""
    import tensorflow as tf
    if not multi_worker:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration(),
                  tf.config.LogicalDeviceConfiguration()])
    import keras

    from keras_plugin import BatchNormalization
    if multi_worker:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        mine = [strategy.cluster_resolver.task_id]
    else:
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        mine = list(range(strategy.num_replicas_in_sync))
    size = strategy.num_replicas_in_sync
    outs = [{} for _ in range(size)]
    errors = [{} for _ in range(size)]

    def per_replica(arrays):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(arrays[ctx.replica_id_in_sync_group]))

    def local(v):
        return [t.numpy() for t in strategy.experimental_local_results(v)]

    for split, sizes in splits(size).items():
        for case in KERAS_CASES:
            shape, axis, dtype, _, _ = CASES[case]
            tag = f"{split}_{case}"
            with strategy.scope():
                layer = BatchNormalization(axis=axis, momentum=MOMENTUM, epsilon=EPS,
                                           synchronized=True, dtype=dtype, name=tag)
                layer.build((None,) + shape)
                c = ((None,) + shape)[axis]
                layer.gamma.assign(gamma_init((c,), dtype))
                layer.beta.assign(beta_init((c,), dtype))

            def replica_step(xl, dyl, ml, masked=case in MASKED):
                with tf.GradientTape() as tape:
                    tape.watch(xl)
                    y = layer(xl, training=True, mask=ml if masked else None)
                    loss = tf.reduce_sum(y * dyl)
                dx, dg, db = tape.gradient(loss, [xl, layer.gamma.value, layer.beta.value])
                return y, dx, dg, db

            @tf.function
            def step(xd, dyd, md):
                return strategy.run(replica_step, args=(xd, dyd, md))

            for s in range(STEPS):
                x, dy = global_batch(case, split, sizes, s)
                mask = global_mask(case, split, sizes, s)
                if mask is None:
                    mask = np.ones(x.shape[:-1], bool)
                res = step(per_replica([local_slice(x, sizes, r) for r in range(size)]),
                           per_replica([local_slice(dy, sizes, r) for r in range(size)]),
                           per_replica([local_slice(mask, sizes, r) for r in range(size)]))
            for key, v in zip(("y", "dx", "d_gamma", "d_beta"), res):
                for r, a in zip(mine, local(v)):
                    outs[r][f"{tag}/{key}"] = a
            for name in ("moving_mean", "moving_variance"):
                for r, a in zip(mine, local(getattr(layer, name).value)):
                    outs[r][f"{tag}/{name}"] = a
            if 0 in mine:
                outs[0][f"{tag}/infer"] = keras.ops.convert_to_numpy(
                    layer(tf.constant(local_slice(x, sizes, 0)), training=False))
    # What cannot synchronize says so (on every replica).
    with strategy.scope():
        lay = BatchNormalization(synchronized=True, renorm=True, name="keras_renorm")
        lay.build((None, 3))

    def renorm_step(xl):
        try:
            lay(xl, training=True)
        except NotImplementedError as e:
            return f"{type(e).__name__}: {e}"
        return "no error"

    msgs = strategy.run(renorm_step, args=(per_replica([np.ones((2, 3), np.float32)] * size),))
    for r, m in zip(mine, strategy.experimental_local_results(msgs)):
        errors[r]["keras_renorm"] = m if isinstance(m, str) else m.numpy().decode()
    for r in mine:
        np.savez(os.path.join(outdir, f"rank{r}.npz"), **outs[r])
        with open(os.path.join(outdir, f"rank{r}.json"), "w") as f:
            json.dump(errors[r], f)


def run_keras_jax(outdir, padded=False):
    """keras_plugin.BatchNormalization(synchronized=True) in shard_map over the host
    CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=4); one file per
    device.  shard_map's shards are equal: the equal split runs every case
    unpadded; with ``padded`` (plan ``keras-padded``), the uneven and empty
    splits run instead, every shard padded to the largest local batch with the
    padding masked out (mask False, dy 0), for the cases whose channels are on
    the last axis (masks need that)."""
    import jax
    import jax.numpy as jnp
    import keras
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    import keras_plugin
    from keras_plugin import BatchNormalization
    shard_map = getattr(jax, "shard_map", None)
    if shard_map is None:   # older JAX
        from jax.experimental.shard_map import shard_map
    devices = jax.devices("cpu")
    size = len(devices)
    mesh = Mesh(np.array(devices), ("batch",))
    outs = [{} for _ in range(size)]
    errors = [{} for _ in range(size)]
    for split, sizes, case in jax_runs(size, padded):
        shape, axis, dtype, _, _ = CASES[case]
        tag = f"{split}_{case}"
        padded = split != "equal"
        pad = max(sizes)
        layer = BatchNormalization(axis=axis, momentum=MOMENTUM, epsilon=EPS,
                                   synchronized=True, dtype=dtype, name=tag)
        layer.build((None,) + shape)
        c = ((None,) + shape)[axis]
        layer.gamma.assign(gamma_init((c,), dtype))
        layer.beta.assign(beta_init((c,), dtype))
        tv = [v.value for v in layer.trainable_variables]
        ntv = [v.value for v in layer.non_trainable_variables]

        def shard_step(tv, ntv, x, dy, m, layer=layer, masked=case in MASKED or padded):
            def loss(tv, x):
                with keras_plugin.jax_sync_axis("batch"):
                    y, new_ntv = layer.stateless_call(tv, ntv, x, training=True,
                                                      mask=m if masked else None)
                return jnp.sum(y * dy), (y, new_ntv)

            (_, (y, new_ntv)), (gtv, gx) = jax.value_and_grad(
                loss, argnums=(0, 1), has_aux=True)(tv, x)
            # Per-shard results stacked along the mapped axis.
            return y, gx, [g[None] for g in gtv], [v[None] for v in new_ntv]

        specs = dict(mesh=mesh, in_specs=(P(), P(), P("batch"), P("batch"), P("batch")),
                     out_specs=(P("batch"), P("batch"), P("batch"), P("batch")))
        try:
            f = jax.jit(shard_map(shard_step, check_vma=False, **specs))
        except TypeError:   # JAX before check_vma
            f = jax.jit(shard_map(shard_step, check_rep=False, **specs))
        for s in range(STEPS):
            x, dy = global_batch(case, split, sizes, s)
            mask = global_mask(case, split, sizes, s)
            if mask is None:
                mask = np.ones(x.shape[:-1], bool)
            if padded:    # shard r holds its sizes[r] rows, then zeros masked out
                x, dy, mask = (pad_shards(a, sizes, pad) for a in (x, dy, mask))
            y, dx, gtv, new_ntv = f(tv, ntv, jnp.asarray(x), jnp.asarray(dy), jnp.asarray(mask))
            ntv = [v[0] for v in new_ntv]
        for r in range(size):
            if padded:
                sl = slice(r * pad, r * pad + sizes[r])
            else:
                sl = slice(sum(sizes[:r]), sum(sizes[:r + 1]))
            outs[r][f"{tag}/y"] = np.asarray(y)[sl]
            outs[r][f"{tag}/dx"] = np.asarray(dx)[sl]
            outs[r][f"{tag}/d_gamma"] = np.asarray(gtv[0])[r]
            outs[r][f"{tag}/d_beta"] = np.asarray(gtv[1])[r]
            outs[r][f"{tag}/moving_mean"] = np.asarray(new_ntv[0])[r]
            outs[r][f"{tag}/moving_variance"] = np.asarray(new_ntv[1])[r]
        for v, val in zip(layer.non_trainable_variables, ntv):
            v.assign(val)
        outs[0][f"{tag}/infer"] = keras.ops.convert_to_numpy(
            layer(jnp.asarray(local_slice(x, sizes, 0)), training=False))
    lay = BatchNormalization(synchronized=True, renorm=True, name="keras_renorm")
    lay.build((None, 3))
    for r in range(size):
        try:
            with keras_plugin.jax_sync_axis("batch"):
                lay(jnp.ones((2, 3)), training=True)
        except NotImplementedError as e:
            errors[r]["keras_renorm"] = f"{type(e).__name__}: {e}"
        np.savez(os.path.join(outdir, f"rank{r}.npz"), **outs[r])
        with open(os.path.join(outdir, f"rank{r}.json"), "w") as f:
            json.dump(errors[r], f)


def jax_runs(size, padded):
    """(split, sizes, case) of a JAX run: every Keras case on the equal split;
    ``padded``: the channels-last ones on the uneven and empty splits."""
    runs = []
    for split, sizes in splits(size).items():
        if (split != "equal") != padded:
            continue
        for case in KERAS_CASES:
            shape, axis, _, _, _ = CASES[case]
            if not padded or axis % (len(shape) + 1) == len(shape):
                runs.append((split, sizes, case))
    return runs


def pad_shards(a, sizes, pad):
    """The global array ``a`` (local batches in rank order) with every local
    batch padded with zeros (False) to ``pad`` rows."""
    out = np.zeros((len(sizes) * pad,) + a.shape[1:], a.dtype)
    start = 0
    for r, n in enumerate(sizes):
        out[r * pad:r * pad + n] = a[start:start + n]
        start += n
    return out


def _catch(errors, key, fn):
    try:
        fn()
    except Exception as e:   # recorded for the test to compare across ranks
        errors[key] = f"{type(e).__name__}: {e}"
    else:
        errors[key] = None


def run_errors(comm, out, errors):
    rank = comm.rank
    rng = np.random.default_rng(rank)

    # Channel counts differ: every rank raises the same ValueError.
    bad = make_layer("dense", "channels", comm)
    _catch(errors, "channels",
           lambda: bad(rng.standard_normal((4, 3 + (rank == 1))).astype(np.float32),
                       training=True))
    out["channels/moving_mean"] = bad.moving_mean.value if bad.built else np.zeros(0)

    # One rank's input is rejected (integers): the same TypeError everywhere,
    # nothing changed, and the next step works on every rank.
    lay = make_layer("dense", "badinput", comm)
    xs = rng.standard_normal((4, 3)).astype(np.float32)
    _catch(errors, "badinput",
           lambda: lay(np.ones((4, 3), np.int64) if rank == 1 else xs, training=True))
    out["badinput/moving_mean_after_error"] = (lay.moving_mean.value.copy() if lay.built
                                               else np.full(3, np.nan))
    _catch(errors, "badinput_next", lambda: lay(xs, training=True))
    out["badinput/x_next"] = xs
    out["badinput/moving_mean"] = lay.moving_mean.value

    # A rejected dy in backward: the same error everywhere.
    _catch(errors, "bad_dy",
           lambda: lay.backward(np.ones((5 if rank == 1 else 4, 3), np.float32)))

    # A global batch of one value per channel: ValueError everywhere, state unchanged.
    one = make_layer("dense", "count1", comm)
    one(rng.standard_normal((4, 3)).astype(np.float32), training=True)
    before = one.moving_mean.value.copy(), one.moving_variance.value.copy()
    _catch(errors, "count1",
           lambda: one(np.ones((1 if rank == 0 else 0, 3), np.float32), training=True))
    out["count1/unchanged"] = np.array(
        [np.array_equal(before[0], one.moving_mean.value),
         np.array_equal(before[1], one.moving_variance.value)])

    # Layers called in different orders on different ranks.
    a, b = make_layer("dense", "order_a", comm), make_layer("dense", "order_b", comm)
    first, second = (a, b) if rank % 2 == 0 else (b, a)
    xo = rng.standard_normal((4, 3)).astype(np.float32)
    _catch(errors, "order", lambda: first(xo, training=True))
    _catch(errors, "order_2", lambda: second(xo, training=True))


def communicator(engine):
    import ckbn
    if engine in ("mpi", "mpi-merge"):
        from mpi4py import MPI
        return ckbn.distributed.from_mpi4py(
            MPI.COMM_WORLD, reduction="merge" if engine == "mpi-merge" else "gather")
    import datetime

    import torch.distributed as dist
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=30))
    return ckbn.distributed.from_torch()


def main(engine, plan, outdir):
    import ckbn
    if engine in ("tf", "tf-multi-worker"):
        return run_keras_tf(outdir, multi_worker=engine == "tf-multi-worker")
    if engine == "jax":
        return run_keras_jax(outdir, padded=plan == "keras-padded")
    comm = communicator(engine)
    rank = comm.rank
    out, errors = {}, {}
    with ckbn.eager_mode():
        if plan == "steps":
            run_steps(comm, out, errors)
        elif plan == "keras":
            run_keras_torch(comm, out, errors)
        elif plan == "dead":
            layer = make_layer("dense", "dead", comm)
            x = np.random.default_rng(rank).standard_normal((4, 3)).astype(np.float32)
            layer(x, training=True)          # one good step
            if rank == 1:
                os._exit(3)                  # dies mid-training
            _catch(errors, "dead", lambda: layer(x, training=True))
        else:
            raise ValueError(f"unknown plan {plan!r}")
    np.savez(os.path.join(outdir, f"rank{rank}.npz"), **out)
    with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
        json.dump(errors, f)
    if engine == "torch":
        import torch.distributed as dist
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
