"""The backend functions on TensorFlow: ``tf.GradientTape`` for gradients,
``tf.function`` for compilation (see :mod:`advbench.kit.backend`)."""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from advbench.lazy import keras


def device() -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"gpu: {details.get('device_name', gpus[0].name)}"
    return "cpu"


def set_seed(seed: int) -> None:
    keras.utils.set_random_seed(seed)


def enable_determinism() -> None:
    """TensorFlow's deterministic kernels, and sums in a fixed order.  An AddN of three or
    more tensors is not deterministic on CPU even with those kernels: it writes into the
    buffer of whichever input is free when it runs and moves that input to the front, so
    its order of summation (its rounding) follows the thread schedule.  So the gradient
    contributions to a tensor are summed pairwise in the order the tape gives them, and
    Grappler's arithmetic optimizer, which folds chains of additions back into AddN, is
    off (measured on 2 cores: about the same speed, see the README's Backends)."""
    tf.config.experimental.enable_op_determinism()
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
    _sum_gradients_in_order()


def _sum_gradients_in_order() -> None:
    """Register TensorFlow's gradient vector space again, with the contributions to each
    tensor summed pairwise, in order, instead of by one AddN (TensorFlow offers no public
    switch; this is the function its tape calls, ``backprop._aggregate_grads``)."""
    from tensorflow.python import pywrap_tfe
    from tensorflow.python.eager import backprop

    if getattr(backprop, "_advbench_in_order", False):
        return
    vspace = backprop._default_vspace
    aggregate = vspace.aggregate_fn

    def in_order(gradients):
        if len(gradients) > 2 and all(isinstance(g, tf.Tensor) for g in gradients):
            total = gradients[0]
            for g in gradients[1:]:
                total = tf.add(total, g)  # two terms: commutative, so any buffer reuse gives the same bits
            return total
        return aggregate(gradients)

    pywrap_tfe.TFE_Py_RegisterVSpace(vspace._replace(aggregate_fn=in_order))
    backprop._advbench_in_order = True


def compile(fn: Callable, state, mutable, batch_args, smallest_batch) -> Callable:
    return tf.function(fn, reduce_retracing=True)


def grad(fn: Callable, x, differentiable: bool):
    xs = x if isinstance(x, (list, tuple)) else [x]
    with tf.GradientTape(watch_accessed_variables=differentiable) as tape:
        for tensor in xs:
            tape.watch(tensor)
        value, aux = fn(x)
    grads = tape.gradient(value, xs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return (grads if isinstance(x, (list, tuple)) else grads[0]), aux


def jacobian(fn: Callable, x, differentiable: bool):
    with tf.GradientTape(watch_accessed_variables=differentiable) as tape:
        tape.watch(x)
        outputs = fn(x)
    jac = tape.batch_jacobian(outputs, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return outputs, jac


def variable_grad(fn: Callable, variables: list):
    with tf.GradientTape() as tape:
        loss, aux = fn()
    grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return loss, aux, grads


def while_loop(cond: Callable, body: Callable, loop_vars: tuple):
    return tuple(keras.ops.while_loop(cond, body, loop_vars))
