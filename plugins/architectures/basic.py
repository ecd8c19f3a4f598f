"""The basic architectures: `linear`, `mlp` (one hidden layer) and a small `cnn`.

Every model ends in a Dense layer named ``logits``; activations are separate layers so
that certifiers can see and bound them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from advbench import Architecture, Params, hookimpl
from advbench.lazy import keras


class Linear(Architecture):
    """A linear classifier (multinomial logistic regression) on the flattened image."""

    def build(self, input_shape, num_classes):
        inputs = keras.Input(shape=input_shape)
        logits = keras.layers.Dense(num_classes, name="logits")(keras.layers.Flatten()(inputs))
        return keras.Model(inputs, logits, name="linear")


class MLPParams(Params):
    hidden: int = Field(256, ge=1, description="Units in the hidden layer.")
    activation: Literal["softplus", "relu"] = Field("softplus", description="Hidden activation.")
    alpha: float = Field(1.0, gt=0, description="Softplus sharpness: log(1 + exp(alpha t)) / alpha.")


class MLP(Architecture):
    """One hidden layer (softplus or ReLU) on the flattened image."""

    Params = MLPParams

    def build(self, input_shape, num_classes):
        from advbench.kit.layers import one_hidden_layer

        return one_hidden_layer(input_shape, num_classes, self.params.hidden, self.params.activation, self.params.alpha)


class CNNParams(Params):
    filters: list[int] = Field(
        [16, 32], min_length=1, description="Filters of each 3x3 conv block (conv, activation, 2x2 max-pool)."
    )
    hidden: int = Field(64, ge=1, description="Units in the dense layer before the logits.")
    activation: Literal["relu", "softplus"] = Field("relu", description="Activation after every conv and dense layer.")
    alpha: float = Field(1.0, gt=0, description="Softplus sharpness, when activation is softplus.")


class CNN(Architecture):
    """A small CNN: 3x3 conv blocks with 2x2 max-pooling, one dense layer, logits."""

    Params = CNNParams

    def build(self, input_shape, num_classes):
        from advbench.kit.layers import activation_layer

        inputs = keras.Input(shape=input_shape)
        hidden = inputs
        for filters in self.params.filters:
            hidden = keras.layers.Conv2D(filters, 3, padding="same")(hidden)
            hidden = activation_layer(self.params.activation, self.params.alpha)(hidden)
            if min(hidden.shape[1:3]) >= 2:
                hidden = keras.layers.MaxPooling2D(2)(hidden)
        hidden = keras.layers.Dense(self.params.hidden)(keras.layers.Flatten()(hidden))
        hidden = activation_layer(self.params.activation, self.params.alpha)(hidden)
        logits = keras.layers.Dense(num_classes, name="logits")(hidden)
        return keras.Model(inputs, logits, name="cnn")


@hookimpl
def advbench_register_architectures(register):
    register("linear", Linear)
    register("mlp", MLP)
    register("cnn", CNN)
