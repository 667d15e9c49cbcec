"""Run the TensorFlow reference layer, ``tf.compat.v1.layers.BatchNormalization``
(tf-keras 2.21, TF 1.15 "V1" semantics), in graph mode.

Imported lazily by the oracle tests; they skip when TensorFlow or tf-keras is
not installed.
"""

import os

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

tf1 = tf.compat.v1


def _tf_init(value):
    if value is None:
        return None
    return tf1.constant_initializer(value)


def run_reference(config, steps, x_infer, dy_steps, dy_infer, init=None):
    """Train the reference layer on ``steps`` and report everything observable.

    Parameters
    ----------
    config : dict
        Constructor arguments (``adjustment`` as a pair of arrays, not a callable).
    steps : list of ndarray
        One training batch per step: each step runs ``y`` and the gradients in
        one session run, then the layer's updates in another.
    x_infer : ndarray
        Input of the final inference call (after the steps).
    dy_steps, dy_infer : list of ndarray, ndarray
        Upstream gradients.
    init : dict, optional
        Constant initial values for ``gamma``/``beta``/moving statistics.

    Returns
    -------
    dict with ``y``, ``dx``, ``grads`` (per step), ``final`` (variable values by
    short name after the steps), ``y_infer``, ``dx_infer``, ``grads_infer``,
    ``names``, ``shapes``, ``count_params``, ``fused``, ``n_updates``.
    """
    cfg = dict(config)
    init = init or {}
    adj = cfg.pop("adjustment", None)
    dtype = steps[0].dtype
    g = tf.Graph()
    with g.as_default():
        tf1.disable_eager_execution() if tf.executing_eagerly() else None
        for key, arg in (("gamma", "gamma_initializer"), ("beta", "beta_initializer"),
                         ("moving_mean", "moving_mean_initializer"),
                         ("moving_variance", "moving_variance_initializer")):
            if key in init:
                cfg[arg] = _tf_init(init[key])
        if adj is not None:
            a_s, a_b = adj
            pdt = tf.float32 if dtype == np.float16 else tf.as_dtype(dtype)
            cfg["adjustment"] = lambda shape: (tf.constant(a_s, pdt), tf.constant(a_b, pdt))
        layer = tf1.layers.BatchNormalization(**cfg)
        xph = tf1.placeholder(dtype, steps[0].shape)
        dyph = tf1.placeholder(dtype, steps[0].shape)
        y = layer(xph, training=True)
        updates = list(layer.updates)
        y_inf = layer(xph, training=False)
        tv = list(layer.trainable_variables)
        grads = tf.gradients(y, [xph] + tv, grad_ys=dyph)
        grads_inf = tf.gradients(y_inf, [xph] + tv, grad_ys=dyph)
        sess = tf1.Session(graph=g)
        sess.run(tf1.global_variables_initializer())
        out = {"y": [], "dx": [], "grads": []}
        for x, dy in zip(steps, dy_steps):
            res = sess.run([y] + grads, {xph: x, dyph: dy})
            out["y"].append(res[0])
            out["dx"].append(res[1])
            out["grads"].append(res[2:])
            if updates:
                sess.run(updates, {xph: x})
        short = lambda v: v.name.split("/")[-1].split(":")[0]  # noqa: E731
        out["final"] = {short(v): sess.run(v) for v in layer.variables}
        res = sess.run([y_inf] + grads_inf, {xph: x_infer, dyph: dy_infer})
        out["y_infer"], out["dx_infer"], out["grads_infer"] = res[0], res[1], res[2:]
        out["names"] = [v.name for v in layer.variables]
        out["shapes"] = [tuple(v.shape.as_list()) for v in layer.variables]
        out["count_params"] = layer.count_params()
        out["fused"] = bool(layer.fused)
        out["n_updates"] = len(updates)
        sess.close()
    return out
