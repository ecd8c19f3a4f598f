"""Random numbers from explicit seeds, the same on every Keras backend.

A seed is a pair of int32 values (:func:`seed`).  Draws are a function of the seed and
the position in the output alone: a 32-bit integer hash (Wellons' ``lowbias32``) of a
counter, written with ``keras.ops`` integer arithmetic, which wraps identically on
TensorFlow, JAX and PyTorch.  So an attack's random start, a dropout mask or a random
input transformation is the same on every backend, inside compiled code and out (the
frameworks' own generators, behind ``keras.random``, differ between backends).

Layers and defenses that draw at every call keep a *stream*: a base seed
(:func:`default_seed`) and a counter variable (:func:`counter`), advanced by
:func:`next_seed`; being a Keras variable, the counter is carried through compiled code
on every backend (JAX has no hidden state).
"""

from __future__ import annotations

import math

import numpy as np

from advbench.lazy import keras

_MASK24 = float(2**24)


def seed(*values: int) -> np.ndarray:
    """A seed from Python integers, e.g. ``seed(job_seed, restart)``."""
    first = int(values[0]) if values else 0
    second = 0
    for value in values[1:]:
        second = (second * 1_000_003 + int(value) + 1) % (2**31 - 1)
    return np.array([first % (2**31 - 1), second], dtype=np.int32)


def _logical_shift(x, bits: int):
    return keras.ops.bitwise_and(keras.ops.right_shift(x, bits), (1 << (32 - bits)) - 1)


def _hash(x):
    """lowbias32: a bijective mix of 32-bit integers (int32 with wrap-around)."""
    ops = keras.ops
    x = ops.bitwise_xor(x, _logical_shift(x, 16))
    x = x * 0x7FEB352D
    x = ops.bitwise_xor(x, _logical_shift(x, 15))
    x = x * (0x846CA68B - 2**32)
    return ops.bitwise_xor(x, _logical_shift(x, 16))


def fold_in(seed_tensor, data):
    """A new seed from a seed and an integer (a loop counter, say), in compiled code too."""
    ops = keras.ops
    seed_tensor = ops.cast(seed_tensor, "int32")
    mixed = _hash(ops.bitwise_xor(seed_tensor[1], _hash(ops.cast(data, "int32") + seed_tensor[0])))
    return ops.stack([seed_tensor[0], mixed])


def _bits(shape, seed_tensor, stream: int):
    """Hashed int32 counters of ``shape`` for ``seed_tensor``; ``stream`` separates draws."""
    ops = keras.ops
    seed_tensor = ops.cast(seed_tensor, "int32")
    if all(isinstance(s, int) for s in shape):
        count = math.prod(shape)
    else:
        count = ops.prod(ops.stack([ops.cast(s, "int32") for s in shape]))
    key0 = _hash(seed_tensor[0] + stream * 0x3C6EF372)
    key1 = _hash(ops.bitwise_xor(seed_tensor[1], key0))
    counter = ops.arange(count, dtype="int32")
    return ops.reshape(_hash(_hash(ops.bitwise_xor(counter, key0)) + key1), shape)


def _unit(bits):
    """(0, 1) floats from the top 24 bits."""
    return (keras.ops.cast(_logical_shift(bits, 8), "float32") + 0.5) / _MASK24


def uniform(shape, seed_tensor, minval: float = 0.0, maxval: float = 1.0):
    """float32 draws uniform in (minval, maxval)."""
    return minval + (maxval - minval) * _unit(_bits(shape, seed_tensor, 0))


def normal(shape, seed_tensor):
    """float32 standard normal draws (Box-Muller)."""
    ops = keras.ops
    radius = ops.sqrt(-2.0 * ops.log(_unit(_bits(shape, seed_tensor, 1))))
    return radius * ops.cos(2.0 * math.pi * _unit(_bits(shape, seed_tensor, 2)))


def default_seed(value: int | None = None) -> int:
    """``value``, or a seed drawn from Python's generator (seeded per job by
    :func:`advbench.kit.backend.set_seed`), as Keras does for a ``SeedGenerator``."""
    import random

    return int(value) if value is not None else random.randint(1, 2**31 - 2)


def counter(name: str = "rng_counter"):
    """The state of a stream of draws: an int32 Keras variable (assign it as a layer
    attribute, or list it in a defense's ``variables``, so compiled code carries it)."""
    return keras.Variable(0, dtype="int32", trainable=False, name=name)


def next_seed(base: int, count):
    """The next seed of the stream ``(base, count)``; advances ``count``."""
    drawn = fold_in(seed(base), count)
    count.assign_add(1)
    return drawn
