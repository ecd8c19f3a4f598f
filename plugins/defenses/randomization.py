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
from advbench.lazy import keras


class RandomizationParams(Params):
    max_ratio: float = Field(
        331 / 299, gt=1, le=2, description="Padded size as a multiple of the input size; random sizes lie in [input, padded)."
    )
    method: Literal["bilinear", "nearest"] = Field("bilinear", description="Interpolation of the random resize.")
    train: bool = Field(True, description="Apply the same randomization to the training images (augmentation).")


class Randomization(Defense):
    """Random resize and random zero-padding at inference (Xie et al. 2018); randomized."""

    Params = RandomizationParams

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self._training_layer = None

    def layer(self, name: str | None = None):
        """A random resize-and-pad layer (:class:`advbench.kit.layers.RandomResizePad`)."""
        from advbench.kit.layers import RandomResizePad

        return RandomResizePad(self.params.max_ratio, self.params.method, name=name)

    @property
    def variables(self) -> list:
        if self.params.train and self._training_layer is None:
            self._training_layer = self.layer()
        return self._training_layer.variables if self._training_layer is not None else []

    def training_batch(self, model, x, y):
        if not self.params.train:
            return x, y
        self.variables  # noqa: B018 (creates the layer outside compiled code on first use)
        return self._training_layer(x), y

    def inference_model(self, model):
        inputs = keras.Input(model.input_shape[1:])
        randomized = self.layer(name="random_resize_pad")(inputs)
        return keras.Model(inputs, model(randomized), name=f"{model.name}_randomized")

    def randomized(self) -> bool:
        return True


@hookimpl
def advbench_register_defenses(register):
    register("randomization", Randomization)
