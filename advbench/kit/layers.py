"""Keras layers of advbench's architectures and defenses; certifiers recognise them by class.

Imported lazily (it subclasses Keras classes, so importing it imports Keras).  Random
layers draw from :mod:`advbench.kit.rng` with a base seed and a counter variable: they run
compiled on every backend, are reproducible from the job's seed, and draw the same
numbers on TensorFlow, JAX and PyTorch.
"""

from __future__ import annotations

import numpy as np

from advbench.kit import rng
from advbench.lazy import keras


@keras.saving.register_keras_serializable(package="advbench")
class Softplus(keras.layers.Layer):
    """``log(1 + exp(alpha t)) / alpha``: smooth ReLU with curvature ``|sigma''| <= alpha / 4``
    and slope in (0, 1), so it is 1-Lipschitz."""

    def __init__(self, alpha: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha = float(alpha)

    def call(self, inputs):
        return keras.ops.softplus(self.alpha * inputs) / self.alpha

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


def activation_layer(name: str, alpha: float = 1.0, layer_name: str | None = None) -> keras.layers.Layer:
    """A separate activation layer (never fused into Dense/Conv, so certifiers see it)."""
    if name == "softplus":
        return Softplus(alpha, name=layer_name)
    if name == "relu":
        return keras.layers.ReLU(name=layer_name)
    raise ValueError(f"unknown activation {name!r}")


def one_hidden_layer(input_shape, num_classes: int, hidden: int, activation: str, alpha: float = 1.0):
    """Flatten, Dense (``hidden`` units, named ``hidden``), a separate activation, Dense
    logits (named ``logits``): the network class of Hein & Andriushchenko's closed forms
    (:class:`advbench.kit.structure.OneHiddenLayer` reads it back)."""
    inputs = keras.Input(shape=input_shape)
    features = keras.layers.Dense(hidden, name="hidden")(keras.layers.Flatten()(inputs))
    features = activation_layer(activation, alpha)(features)
    logits = keras.layers.Dense(num_classes, name="logits")(features)
    return keras.Model(inputs, logits, name="mlp")


def bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """The (out, in) matrix of a 1-D bilinear resize with half-pixel centres (as
    ``tf.image.resize``, no antialiasing)."""
    matrix = np.zeros((size_out, size_in), np.float32)
    for o in range(size_out):
        source = (o + 0.5) * size_in / size_out - 0.5
        floor = np.floor(source)
        lower, upper = int(max(floor, 0)), int(min(np.ceil(source), size_in - 1))
        lerp = source - floor
        matrix[o, lower] += 1 - lerp
        matrix[o, upper] += lerp
    return matrix


@keras.saving.register_keras_serializable(package="advbench")
class RandomResizePad(keras.layers.Layer):
    """Xie et al.'s (2018) input randomization: resize the image to a random size in
    ``[H, P)``, zero-pad it at a random offset to ``P x P`` (``P = round(H max_ratio)``),
    and resize it back to ``H x W`` (advbench's classifiers have a fixed input size).
    One draw per call, for the whole batch.

    Every step is linear and separable, so the layer multiplies the image by one row
    and one column matrix built from the draw: static shapes, hence compilable on every
    backend (a resize to a traced size is not)."""

    def __init__(self, max_ratio: float, method: str = "bilinear", seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.max_ratio, self.method = float(max_ratio), method
        self.base_seed, self.counter = rng.default_seed(seed), rng.counter()

    def _axis_matrix(self, size_in, padded, size, offset):
        """(size_in, size_in): input axis -> resized to ``size`` at ``offset`` in a canvas of
        ``padded`` -> resized back to ``size_in``."""
        ops = keras.ops
        back = ops.convert_to_tensor(bilinear_matrix(padded, size_in))  # (size_in, padded)
        canvas = ops.cast(ops.arange(padded), "float32") - offset  # position within the resized image
        inside = ops.cast((canvas >= 0) & (canvas < size), "float32")
        scale = size_in / size
        if self.method == "nearest":
            index = ops.minimum(ops.floor((canvas + 0.5) * scale), size_in - 1)
            index = ops.cast(ops.maximum(index, 0), "int32")
            forward = ops.one_hot(index, size_in)
        else:
            source = (canvas + 0.5) * scale - 0.5
            floor = ops.floor(source)
            lower = ops.cast(ops.clip(floor, 0, size_in - 1), "int32")
            upper = ops.cast(ops.clip(ops.ceil(source), 0, size_in - 1), "int32")
            lerp = (source - floor)[:, None]
            forward = ops.one_hot(lower, size_in) * (1 - lerp) + ops.one_hot(upper, size_in) * lerp
        return ops.matmul(back, forward * inside[:, None])

    def call(self, inputs):
        ops = keras.ops
        height, width = inputs.shape[1], inputs.shape[2]
        padded = max(height + 2, int(round(height * self.max_ratio)))
        padded_w = max(width + 2, int(round(width * self.max_ratio)))
        draw = rng.uniform((3,), rng.next_seed(self.base_seed, self.counter))
        size = ops.floor(height + draw[0] * (padded - height))  # in [height, padded)
        size_w = ops.floor(size * width / height)
        top = ops.floor(draw[1] * (padded - size + 1))
        left = ops.floor(draw[2] * (padded_w - size_w + 1))
        rows = self._axis_matrix(height, padded, size, top)
        cols = self._axis_matrix(width, padded_w, size_w, left)
        return ops.einsum("ri,bijc,sj->brsc", rows, inputs, cols)

    def get_config(self):
        return {**super().get_config(), "max_ratio": self.max_ratio, "method": self.method}


@keras.saving.register_keras_serializable(package="advbench")
class RandomPixelMask(keras.layers.Layer):
    """Keeps a random share of the pixels (the same for every channel), zeroes the rest;
    drawn anew at every call."""

    def __init__(self, share: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.share = float(share)
        self.base_seed, self.counter = rng.default_seed(seed), rng.counter()

    def call(self, inputs):
        shape = keras.ops.shape(inputs)
        noise = rng.uniform((shape[0], shape[1], shape[2], 1), rng.next_seed(self.base_seed, self.counter))
        return inputs * keras.ops.cast(noise < self.share, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "share": self.share}


@keras.saving.register_keras_serializable(package="advbench")
class FixedMask(keras.layers.Layer):
    """Multiplies the input by a fixed 0/1 mask (broadcast over the batch)."""

    def __init__(self, mask, **kwargs):
        super().__init__(**kwargs)
        self.mask = np.asarray(mask, np.float32)

    def call(self, inputs):
        return inputs * keras.ops.convert_to_tensor(self.mask)

    def get_config(self):
        return {**super().get_config(), "mask": self.mask.tolist()}


@keras.saving.register_keras_serializable(package="advbench")
class Blend(keras.layers.Layer):
    """``(1 - lam) a + lam b`` of two inputs."""

    def __init__(self, lam: float, **kwargs):
        super().__init__(**kwargs)
        self.lam = float(lam)

    def call(self, inputs):
        first, second = inputs
        return (1 - self.lam) * first + self.lam * second

    def get_config(self):
        return {**super().get_config(), "lam": self.lam}


@keras.saving.register_keras_serializable(package="advbench")
class LogProbabilities(keras.layers.Layer):
    """``log(p)``: logits of a model that outputs probabilities (softmax(log p) = p)."""

    def call(self, inputs):
        return keras.ops.log(keras.ops.maximum(inputs, 1e-30))


@keras.saving.register_keras_serializable(package="advbench")
class Dropout(keras.layers.Dropout):
    """Keras' dropout (inverted: kept units scaled by ``1 / (1 - rate)``) in training, the
    identity at inference, with masks from :mod:`advbench.kit.rng`, so that training draws
    the same masks on every backend.  A subclass of ``keras.layers.Dropout``, so that
    every certifier treats it as one."""

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(rate, **kwargs)
        self.base_seed, self.counter = rng.default_seed(seed), rng.counter()

    def build(self, input_shape):
        """Nothing to build (the counter exists already); defining it keeps Keras from
        locking the layer's state before the counter is added."""

    def call(self, inputs, training=False):
        if not training:
            return inputs
        keep = rng.uniform(keras.ops.shape(inputs), rng.next_seed(self.base_seed, self.counter)) >= self.rate
        return keras.ops.where(keep, inputs / (1.0 - self.rate), 0.0)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


class Augment(keras.layers.Layer):
    """Training augmentation: per image, a random translation by up to ``shift`` pixels
    in each direction with zero fill (a random crop of the image padded by ``shift``)
    and, with ``flip``, a horizontal flip half of the time.  Each image's shift and flip
    is a 0/1 matrix applied to its rows and columns: static shapes, compiled on every
    backend, the same draws on all of them."""

    def __init__(self, shift: int, flip: bool, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.shift, self.flip = int(shift), bool(flip)
        self.base_seed, self.counter = rng.default_seed(seed), rng.counter()

    def call(self, inputs, training=False):
        ops = keras.ops
        if not training:
            return inputs
        batch, height, width = ops.shape(inputs)[0], inputs.shape[1], inputs.shape[2]
        draw = rng.uniform((batch, 3), rng.next_seed(self.base_seed, self.counter))
        span = 2 * self.shift + 1
        down = ops.cast(ops.floor(draw[:, 0] * span), "int32") - self.shift
        right = ops.cast(ops.floor(draw[:, 1] * span), "int32") - self.shift
        rows = _shift_matrices(down, height)  # (B, H, H): output row <- input row
        cols = _shift_matrices(right, width)
        if self.flip:
            flipped = ops.flip(cols, axis=2)
            cols = ops.where((draw[:, 2] < 0.5)[:, None, None], flipped, cols)
        return ops.einsum("bij,bjkc,blk->bilc", rows, inputs, cols)

    def get_config(self):
        return {**super().get_config(), "shift": self.shift, "flip": self.flip}


def _shift_matrices(offsets, size: int):
    """Per example, the (size, size) 0/1 matrix moving index j to j + offset (zero fill)."""
    ops = keras.ops
    index = ops.arange(size, dtype="int32")
    source = index[None, :] - offsets[:, None]  # output i reads input i - offset
    return ops.cast(source[:, :, None] == index[None, None, :], "float32")
