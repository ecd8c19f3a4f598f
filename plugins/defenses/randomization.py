"""`randomization`: Xie et al.'s (2018) input randomization at inference: resize the image
to a random size, zero-pad it at a random offset to a fixed larger size, and (because
advbench's classifiers have a fixed input size) resize it back to the input size.

Their ImageNet setting resizes 299 to [299, 331) and pads to 331; the defaults here keep
that ratio (331 / 299) for any input size.  The model declares itself randomized, so it
is attacked with EOT and predicted by a majority over repeated draws.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from advbench import Defense, Params, hookimpl
from advbench.lazy import keras, tf


class RandomizationParams(Params):
    max_ratio: float = Field(331 / 299, gt=1, le=2, description="Padded size as a multiple of the input size; random sizes lie in [input, padded).")
    method: Literal["bilinear", "nearest"] = Field("bilinear", description="Interpolation of the random resize.")
    train: bool = Field(True, description="Apply the same randomization to the training images (augmentation).")


class Randomization(Defense):
    """Random resize and random zero-padding at inference (Xie et al. 2018); randomized."""

    Params = RandomizationParams

    def transform(self, x):
        height = x.shape[1]
        padded = max(height + 2, int(round(height * self.params.max_ratio)))
        size = tf.random.uniform([], height, padded, dtype=tf.int32)
        resized = tf.image.resize(x, tf.stack([size, size]), method=self.params.method)
        room = padded - size
        top = tf.random.uniform([], 0, room + 1, dtype=tf.int32)
        left = tf.random.uniform([], 0, room + 1, dtype=tf.int32)
        canvas = tf.image.pad_to_bounding_box(resized, top, left, padded, padded)
        return tf.image.resize(canvas, [x.shape[1], x.shape[2]], method="bilinear")

    def training_batch(self, model, x, y):
        return (self.transform(x), y) if self.params.train else (x, y)

    def inference_model(self, model):
        inputs = keras.Input(model.input_shape[1:])
        randomized = keras.layers.Lambda(self.transform, name="random_resize_pad")(inputs)
        return keras.Model(inputs, model(randomized), name=f"{model.name}_randomized")

    def randomized(self) -> bool:
        return True


@hookimpl
def advbench_register_defenses(register):
    register("randomization", Randomization)
