"""Reading a Keras model as a graph of bound-propagation operators (:mod:`.operators`),
through an open table of bound rules: one entry per Keras layer class, saying which
operators compute that layer (:func:`register_bound_rule`; a plugin adds its own layers'
the same way the built-in ones are added, as auto_LiRPA's ``register_custom_op``)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from advbench.kit.bounds import operators
from advbench.kit.bounds.operators import Dense, Identity, Operator, ReLU, Softplus
from advbench.kit.structure import UnsupportedModel, activation_name
from advbench.lazy import keras

ACTIVATIONS = {"linear": Identity, "relu": ReLU, "softplus": Softplus}
"""The activations bound propagation relaxes, as layers or fused into an affine layer."""

Rule = Callable[[object, list], list[Operator]]
"""A bound rule: ``rule(layer, inputs) -> [operators]``, the operators that compute
``layer`` from the nodes ``inputs`` (the first one reads them; each following one reads
the one before it).  An :class:`~.operators.Operator` subclass is a rule of one operator."""

_RULES: dict[type, Rule] = {}


def register_bound_rule(layer_class: type, rule: Rule | type[Operator], *, replace: bool = False) -> None:
    """Make bound propagation (IBP, CROWN, alpha-CROWN, ``bab``, certified training) read
    layers of exactly ``layer_class`` (not its subclasses, which may compute otherwise) with
    ``rule``: an :class:`~.operators.Operator` subclass, or a function ``(layer, inputs) ->
    [operators]``.  A class that has a rule already is refused unless ``replace``."""
    _builtin_rules()
    if not isinstance(layer_class, type):
        raise TypeError(f"register_bound_rule: {layer_class!r} is not a class")
    if isinstance(rule, type) and not issubclass(rule, Operator):
        raise TypeError(f"register_bound_rule: {rule.__name__} is not a subclass of advbench.kit.bounds.operators.Operator")
    if not callable(rule):
        raise TypeError(f"register_bound_rule: {rule!r} is neither an Operator subclass nor a function")
    if layer_class in _RULES and not replace:
        raise ValueError(f"register_bound_rule: {layer_class.__name__} has a bound rule already (replace=True to replace it)")
    _RULES[layer_class] = _as_rule(rule)


def bound_rules() -> dict[type, Rule]:
    """Every registered bound rule, by Keras layer class."""
    return dict(_builtin_rules())


def _as_rule(rule) -> Rule:
    if isinstance(rule, type):
        return lambda layer, inputs: [rule(layer, inputs)]
    return rule


def _with_fused_activation(operator: type[Operator]) -> Rule:
    """An affine layer (Dense, Conv2D) and the activation fused into it."""

    def rule(layer, inputs):
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise UnsupportedModel(f"layer {layer.name!r}: only channels_last is supported")
        act = activation_name(layer)
        if act not in ("linear", "relu", "softplus"):
            raise UnsupportedModel(f"layer {layer.name!r}: fused activation {act!r} is not supported")
        return [operator(layer, inputs)] + ([] if act == "linear" else [ACTIVATIONS[act](None, [-2])])

    return rule


def _relu(layer, inputs):
    if layer.negative_slope != 0 or layer.max_value is not None or layer.threshold != 0:
        raise UnsupportedModel(f"layer {layer.name!r}: only the plain ReLU is supported")
    return [ReLU(layer, inputs)]


def _activation(layer, inputs):
    act = activation_name(layer)
    if act not in ACTIVATIONS:
        raise UnsupportedModel(f"layer {layer.name!r}: activation {act!r} is not supported")
    return [ACTIVATIONS[act](layer, inputs)]


def _softplus(layer, inputs):
    return [Softplus(layer, inputs, layer.alpha)]


def _builtin_rules() -> dict[type, Rule]:
    """The built-in rules, registered on first use (reading them imports Keras)."""
    if not _RULES:
        from advbench.kit.layers import Dropout as DropoutLayer
        from advbench.kit.layers import Softplus as SoftplusLayer

        layers = keras.layers
        _RULES.update(
            {
                layers.Dense: _with_fused_activation(operators.Dense),
                layers.Conv2D: _with_fused_activation(operators.Conv2D),
                layers.Rescaling: _as_rule(operators.Rescaling),
                layers.BatchNormalization: _as_rule(operators.BatchNormalization),
                layers.Add: _as_rule(operators.Add),
                layers.Flatten: _as_rule(operators.Reshape),
                layers.Reshape: _as_rule(operators.Reshape),
                layers.Dropout: _as_rule(operators.Reshape),  # the identity at inference
                DropoutLayer: _as_rule(operators.Reshape),
                layers.AveragePooling2D: _as_rule(operators.Pooling),
                layers.GlobalAveragePooling2D: _as_rule(operators.Pooling),
                layers.ZeroPadding2D: _as_rule(operators.Pooling),
                layers.MaxPooling2D: _as_rule(operators.MaxPooling2D),
                layers.ReLU: _relu,
                layers.Activation: _activation,
                SoftplusLayer: _softplus,
            }
        )
    return _RULES


def read_graph(model) -> list[Operator]:
    """The model's layers in topological order as operators (each layer through its bound
    rule, e.g. split into its affine part and its fused activation); refuses what it cannot
    bound, by name."""
    rules = _builtin_rules()
    index_of = {}
    nodes: list[Operator] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            index_of[id(layer)] = -1
            continue
        if isinstance(layer, keras.Model):
            raise UnsupportedModel(f"layer {layer.name!r} is a nested model; bound propagation needs a flat model")
        tensors = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        sources = [index_of.get(id(tensor._keras_history.operation), -1) for tensor in tensors]
        rule = rules.get(type(layer))
        if rule is None:
            raise UnsupportedModel(
                f"layer {layer.name!r} ({type(layer).__name__}) is not supported by bound propagation "
                "(a plugin can add a rule: advbench.kit.bounds.register_bound_rule)"
            )
        for k, operator in enumerate(rule(layer, sources)):
            if k > 0:  # each following operator reads the one before it
                operator.inputs = [len(nodes) - 1]
            nodes.append(operator)
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
