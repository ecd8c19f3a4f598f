"""Reading a Keras model's structure: the chain of layers, fused activations, and the
one-hidden-layer form of Hein & Andriushchenko's closed forms.  Safe to import without
TensorFlow (it is imported when these functions run)."""

from __future__ import annotations

from advbench.lazy import keras


class UnsupportedModel(ValueError):
    """A model contains a layer (or a structure) a method cannot handle soundly."""


def flatten_layers(model) -> list:
    """The model's layers as one chain, nested models expanded; refuses branching graphs."""
    chain = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            chain.extend(flatten_layers(layer))
            continue
        if isinstance(layer.input, (list, tuple)):
            raise UnsupportedModel(
                f"layer {layer.name!r} ({layer.__class__.__name__}) merges several inputs; only chains are supported"
            )
        chain.append(layer)
    return chain


def activation_name(layer) -> str:
    """The name of a layer's fused activation ('linear' when none)."""
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "linear") if activation is not None else "linear"


class OneHiddenLayer:
    """``f(x) = W2^T sigma(U^T flatten(x) + b) + c``: the network class of Hein &
    Andriushchenko's closed forms.  ``activation`` is ``"softplus"`` (with ``alpha``) or ``"relu"``."""

    def __init__(self, model):
        layers = [layer for layer in flatten_layers(model) if not isinstance(layer, keras.layers.Dropout)]
        kinds = [type(layer) for layer in layers]
        if (
            len(layers) != 4
            or kinds[0] is not keras.layers.Flatten
            or kinds[1] is not keras.layers.Dense
            or kinds[3] is not keras.layers.Dense
        ):
            raise UnsupportedModel("not a one-hidden-layer network (Flatten, Dense, activation, Dense)")
        hidden, act, head = layers[1], layers[2], layers[3]
        if activation_name(hidden) != "linear" or activation_name(head) != "linear":
            raise UnsupportedModel("the Dense layers must not fuse activations")
        from advbench.kit.layers import Softplus

        if isinstance(act, Softplus):
            self.activation, self.alpha = "softplus", act.alpha
        elif isinstance(act, keras.layers.ReLU) and act.negative_slope == 0 and act.max_value is None and act.threshold == 0:
            self.activation, self.alpha = "relu", None
        else:
            raise UnsupportedModel(f"hidden activation {act.__class__.__name__} is neither Softplus nor ReLU")
        self.hidden, self.head = hidden, head

    @property
    def U(self):  # (d, h)
        return self.hidden.kernel

    @property
    def b(self):
        return self.hidden.bias

    @property
    def W2(self):  # (h, K)
        return self.head.kernel

    def slope(self, z):
        """sigma'(z): a sigmoid for softplus, a step for ReLU."""
        if self.activation == "softplus":
            return keras.ops.sigmoid(self.alpha * z)
        return keras.ops.cast(z > 0, z.dtype)
