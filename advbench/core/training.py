"""Training: one compiled step through which a defense changes the loss, the inputs and
the model, written once for every Keras backend."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from advbench.kit import backend
from advbench.lazy import keras


def mean_cross_entropy(logits, y):
    """Mean cross-entropy of a batch (the training loss before a defense's regularizer)."""
    from advbench.kit.losses import cross_entropy

    return keras.ops.mean(cross_entropy(logits, y))


def make_optimizer(training, steps: int):
    rate = training.learning_rate
    if training.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(rate, decay_steps=max(1, steps))
    if training.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=0.9)
    return keras.optimizers.Adam(rate)


def augmenter(augmentation, seed: int):
    """Random translations (random crops of the zero-padded image) and flips, or ``None``."""
    from advbench.kit.layers import Augment

    if not (augmentation.crop or augmentation.flip):
        return None
    return Augment(augmentation.crop, augmentation.flip, seed=seed)


def initialize(model, seed: int) -> None:
    """Redraw the model's initial weights with NumPy, from ``seed``, following each layer's
    initializer (the standard Keras ones: variance scaling, i.e. Glorot, He and LeCun;
    uniform; normal; truncated normal; constants).  Keras draws them from the backend's
    own random generator, so the same seed would start training from different weights
    on TensorFlow, JAX and PyTorch; these are the same on all three.  Variables with any
    other initializer keep the values Keras drew."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False):
        for attribute, value in sorted(vars(layer).items()):
            if not attribute.endswith("_initializer") or not isinstance(value, keras.initializers.Initializer):
                continue
            variable = getattr(layer, attribute[: -len("_initializer")], None)
            if isinstance(variable, keras.Variable):
                drawn = _numpy_draw(value, tuple(variable.shape), rng)
                if drawn is not None:
                    variable.assign(drawn.astype(variable.dtype))


def _numpy_draw(initializer, shape, rng):
    kind = type(initializer).__name__
    if kind == "RandomUniform":
        return rng.uniform(initializer.minval, initializer.maxval, shape)
    if kind == "RandomNormal":
        return rng.normal(initializer.mean, initializer.stddev, shape)
    if kind == "TruncatedNormal":
        return initializer.mean + initializer.stddev * _truncated(rng, shape)
    if isinstance(initializer, keras.initializers.VarianceScaling):
        fan_in, fan_out = _fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[initializer.mode]
        scale = initializer.scale / max(1.0, fan)
        if initializer.distribution == "uniform":
            limit = np.sqrt(3.0 * scale)
            return rng.uniform(-limit, limit, shape)
        if initializer.distribution == "untruncated_normal":
            return rng.normal(0.0, np.sqrt(scale), shape)
        return np.sqrt(scale) / 0.87962566103423978 * _truncated(rng, shape)
    return None  # constants are the same everywhere already; others stay as Keras drew them


def _truncated(rng, shape):
    """Standard normal draws truncated to [-2, 2] (Keras' truncated normal)."""
    values = rng.normal(size=shape)
    outside = np.abs(values) > 2
    while outside.any():
        values[outside] = rng.normal(size=int(outside.sum()))
        outside = np.abs(values) > 2
    return values


def _fans(shape):
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[:-2]))
    return shape[-2] * receptive, shape[-1] * receptive


def train_model(
    model,
    defense,
    training,
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    on_epoch: Callable[[int, dict], None] = lambda epoch, logs: None,
) -> dict:
    """Train ``model`` in place with ``defense``; return the history.

    Each step: ``x, y = defense.training_batch(model, x, y)``, then minimize the mean
    cross-entropy plus ``defense.regularizer(...)``.
    """
    steps_per_epoch = -(-len(x) // training.batch_size)
    optimizer = make_optimizer(training, steps_per_epoch * training.epochs)
    optimizer.build(model.trainable_variables)
    augment = augmenter(training.augmentation, seed)
    trainable = model.trainable_variables
    defense.on_train_begin(training.epochs, steps_per_epoch)
    state = [model, optimizer, augment, *defense.variables]

    def step(x, y):
        if augment is not None:
            x = augment(x, training=True)
        x, y = defense.training_batch(model, x, y)

        def objective():
            logits = model(x, training=True)
            loss = mean_cross_entropy(logits, y)
            extra = defense.regularizer(model, x, y, logits)
            return (loss if extra is None else loss + extra), logits

        total, logits, gradients = backend.variable_grad(objective, trainable)
        optimizer.apply(gradients, trainable)
        correct = keras.ops.sum(keras.ops.cast(keras.ops.argmax(logits, axis=1) == keras.ops.cast(y, "int32"), "float32"))
        return total, correct

    compiled: dict = {}  # one compiled step per training phase (Defense.training_phase)
    rng = np.random.default_rng(seed)
    probe_index = np.random.default_rng([seed, 1]).permutation(len(x))[:PROBE]
    probe = (x[probe_index], y[probe_index])
    history = {"loss": [], "accuracy": []}
    started = time.perf_counter()
    taken = 0  # training steps so far
    for epoch in range(training.epochs):
        defense.on_epoch_start(epoch, training.epochs)
        order = rng.permutation(len(x))
        loss_sum, correct_sum = 0.0, 0.0
        for start in range(0, len(x), training.batch_size):
            batch = order[start : start + training.batch_size]
            phase = defense.training_phase(taken)
            if phase not in compiled:
                compiled[phase] = backend.compile(step, state=state, mutable=state)
            loss, correct = compiled[phase](x[batch], y[batch])
            taken += 1
            loss_sum += float(backend.to_numpy(loss)) * len(batch)
            correct_sum += float(backend.to_numpy(correct))
        logs = {"loss": loss_sum / len(x), "accuracy": correct_sum / len(x)}
        history["loss"].append(logs["loss"])
        history["accuracy"].append(logs["accuracy"])
        extra = defense.on_epoch_end(model, epoch, training.epochs, probe) or {}
        stop = bool(extra.pop("stop", False))
        for key, value in extra.items():
            history.setdefault(key, []).append(float(value))
            logs[key] = value
        on_epoch(epoch, logs)
        if stop:
            history["stopped_after_epoch"] = epoch + 1
            break
    history["seconds"] = time.perf_counter() - started
    return history


PROBE = 1024
"""Training examples handed to ``Defense.on_epoch_end`` (the same each epoch, drawn by the training seed)."""
