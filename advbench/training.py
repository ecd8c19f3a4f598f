"""Training: one compiled step through which a defense changes the loss, the inputs and
the model, and a cache of trained models keyed by everything that determines them."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from advbench.lazy import keras, tf


def cross_entropy(logits, y):
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32), logits=logits))


def make_optimizer(training, steps: int):
    rate = training.learning_rate
    if training.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(rate, decay_steps=max(1, steps))
    if training.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=0.9)
    return keras.optimizers.Adam(rate)


def augmenter(augmentation, input_shape, seed: int):
    """A Keras pipeline of random translations and flips, or ``None``."""
    layers = []
    if augmentation.crop:
        height, width = input_shape[:2]
        layers.append(keras.layers.RandomTranslation(augmentation.crop / height, augmentation.crop / width, fill_mode="constant", seed=seed))
    if augmentation.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 1))
    return keras.Sequential(layers) if layers else None


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
    augment = augmenter(training.augmentation, x.shape[1:], seed)

    @tf.function(reduce_retracing=True)
    def step(x, y):
        if augment is not None:
            x = augment(x, training=True)
        x, y = defense.training_batch(model, x, y)
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = cross_entropy(logits, y)
            extra = defense.regularizer(model, x, y, logits)
            total = loss if extra is None else loss + extra
        gradients = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1), tf.cast(y, tf.int64)), tf.float32))
        return total, correct

    rng = np.random.default_rng(seed)
    history = {"loss": [], "accuracy": []}
    started = time.perf_counter()
    for epoch in range(training.epochs):
        defense.on_epoch_start(epoch, training.epochs)
        order = rng.permutation(len(x))
        loss_sum, correct_sum = 0.0, 0.0
        for start in range(0, len(x), training.batch_size):
            batch = order[start : start + training.batch_size]
            loss, correct = step(tf.constant(x[batch]), tf.constant(y[batch]))
            loss_sum += float(loss) * len(batch)
            correct_sum += float(correct)
        logs = {"loss": loss_sum / len(x), "accuracy": correct_sum / len(x)}
        history["loss"].append(logs["loss"])
        history["accuracy"].append(logs["accuracy"])
        on_epoch(epoch, logs)
    history["seconds"] = time.perf_counter() - started
    return history
