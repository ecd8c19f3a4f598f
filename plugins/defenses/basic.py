"""The basic defenses: `none`, `weight_decay` and `dropout` (the baselines of the
Cross-Lipschitz paper)."""

from __future__ import annotations

from pydantic import Field

from advbench import Defense, Params, hookimpl
from advbench.lazy import keras


class NoDefense(Defense):
    """Plain training with cross-entropy."""


class WeightDecayParams(Params):
    lambda_: float = Field(
        1e-4, gt=0, alias="lambda", description="Weight of the sum of squared kernel weights added to the loss."
    )


class WeightDecay(Defense):
    """Cross-entropy plus lambda times the squared L2 norm of all kernels (biases excluded)."""

    Params = WeightDecayParams

    def regularizer(self, model, x, y, logits):
        kernels = [w for w in model.trainable_weights if w.path.endswith("kernel")]
        return self.params.lambda_ * sum(keras.ops.sum(keras.ops.square(w)) for w in kernels)


class DropoutParams(Params):
    rate: float = Field(0.5, gt=0, lt=1, description="Share of the logits layer's inputs dropped in training.")


class Dropout(Defense):
    """Dropout on the inputs of the final (logits) layer during training."""

    Params = DropoutParams

    def prepare_model(self, model):
        head = model.layers[-1]
        if not isinstance(head, keras.layers.Dense):
            raise ValueError(f"dropout needs a model that ends in a Dense layer, not {head.__class__.__name__}")
        from advbench.kit.layers import Dropout as DropoutLayer

        features = DropoutLayer(self.params.rate, name="dropout")(head.input)
        return keras.Model(model.inputs, head(features), name=model.name)


@hookimpl
def advbench_register_defenses(register):
    register("none", NoDefense)
    register("weight_decay", WeightDecay)
    register("dropout", Dropout)
