"""Reading a Keras model as a graph of bound-propagation operators (:mod:`.operators`)."""

from __future__ import annotations

import numpy as np

from advbench.kit.bounds.operators import OPERATORS, Dense, Identity, MaxPooling2D, Operator, ReLU, Softplus
from advbench.kit.structure import UnsupportedModel, activation_name
from advbench.lazy import keras

ACTIVATIONS = {"linear": Identity, "relu": ReLU, "softplus": Softplus}
"""The activations bound propagation relaxes, as layers or fused into an affine layer."""


def read_graph(model) -> list[Operator]:
    """The model's layers in topological order as operators, each layer split into its
    affine part and its (fused) activation; refuses what it cannot bound, by name."""
    from advbench.kit.layers import Softplus as SoftplusLayer

    index_of = {}
    nodes: list[Operator] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            index_of[id(layer)] = -1
            continue
        if isinstance(layer, keras.Model):
            raise UnsupportedModel(f"layer {layer.name!r} is a nested model; bound propagation needs a flat model")
        tensors = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        sources = []
        for tensor in tensors:
            producer = tensor._keras_history.operation
            sources.append(index_of.get(id(producer), -1))
        name = type(layer).__name__
        if isinstance(layer, SoftplusLayer):
            nodes.append(Softplus(layer, sources, layer.alpha))
        elif isinstance(layer, keras.layers.ReLU):
            if layer.negative_slope != 0 or layer.max_value is not None or layer.threshold != 0:
                raise UnsupportedModel(f"layer {layer.name!r}: only the plain ReLU is supported")
            nodes.append(ReLU(layer, sources))
        elif isinstance(layer, keras.layers.Activation):
            act = activation_name(layer)
            if act not in ACTIVATIONS:
                raise UnsupportedModel(f"layer {layer.name!r}: activation {act!r} is not supported")
            nodes.append(ACTIVATIONS[act](layer, sources))
        elif isinstance(layer, keras.layers.MaxPooling2D):
            nodes.append(MaxPooling2D(layer, sources))
        elif name in OPERATORS:
            if name in ("Dense", "Conv2D") and getattr(layer, "data_format", "channels_last") != "channels_last":
                raise UnsupportedModel(f"layer {layer.name!r}: only channels_last is supported")
            nodes.append(OPERATORS[name](layer, sources))
            act = activation_name(layer)
            if act in ("relu", "softplus"):
                nodes.append(ACTIVATIONS[act](None, [len(nodes) - 1]))
            elif act != "linear":
                raise UnsupportedModel(f"layer {layer.name!r}: fused activation {act!r} is not supported")
        else:
            raise UnsupportedModel(f"layer {layer.name!r} ({name}) is not supported by bound propagation")
        index_of[id(layer)] = len(nodes) - 1
    if not isinstance(nodes[-1], Dense):
        raise UnsupportedModel("the last layer must be a Dense layer without activation (logits)")
    return nodes


def node_sizes(nodes) -> dict[int, int]:
    """Neurons in each node's output (-1: the input)."""
    first = nodes[0].layer
    sizes = {-1: int(np.prod((first.input[0] if isinstance(first.input, (list, tuple)) else first.input).shape[1:]))}
    for k, node in enumerate(nodes):
        if node.layer is not None and hasattr(node.layer, "output"):
            sizes[k] = int(np.prod(node.layer.output.shape[1:]))
        else:  # an activation fused into the layer before it
            sizes[k] = sizes[node.inputs[0]]
    return sizes
