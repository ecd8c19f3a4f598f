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
    tf.config.experimental.enable_op_determinism()


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
