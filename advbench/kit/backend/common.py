"""What every backend module shares: finding the Keras variables a compiled function
reads and writes, and the shapes JAX pads batches to."""

from __future__ import annotations

from typing import Any, Iterable

from advbench.lazy import keras

SMALLEST_BUCKET = 64
"""JAX pads batches to at least this many rows (and to powers of two above): on an
accelerator a small batch costs as much as this, and every distinct size is compiled."""


def variables_of(objects: Iterable[Any]) -> list:
    """The Keras variables of ``objects`` (layers and models, optimizers, seed generators,
    variables, or anything with a ``variables`` attribute), without duplicates."""
    found, seen = [], set()

    def add(variable):
        if id(variable) not in seen:
            seen.add(id(variable))
            found.append(variable)

    for item in objects:
        if item is None:
            continue
        if isinstance(item, keras.Variable):
            add(item)
        elif isinstance(item, keras.random.SeedGenerator):
            add(item.state)
        else:
            for variable in getattr(item, "variables", ()):
                add(variable)
    return found


def seed_keras_and_python(seed: int) -> None:
    """Seed Keras' global seed (its seed generators created without a seed draw from it),
    Python's and NumPy's generators, without importing TensorFlow."""
    import random

    import numpy as np
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)
