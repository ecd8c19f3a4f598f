"""Keras layers advbench's architectures use; certifiers recognise them by class.

Imported lazily (it subclasses Keras classes, so importing it imports TensorFlow).
"""

from __future__ import annotations

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
