"""Cross-Lipschitz regularization (Hein & Andriushchenko 2017).

Adds to the cross-entropy

    lambda / (n K^2) * sum_i sum_{l,m} ||grad f_l(x_i) - grad f_m(x_i)||_2^2,

computed as ``2K sum_l ||g_l||^2 - 2 ||sum_l g_l||^2`` from the K input gradients of each
example.  For a one-hidden-layer network it uses the closed form from the weights
(gradients ``U diag(sigma'(z)) W2``); otherwise the K gradients come from one batched
Jacobian (:func:`advbench.kit.backend.jacobian`), kept differentiable for the training step.  Both are evaluated on the
inference function (no dropout), so they agree exactly.
"""

from __future__ import annotations

from pydantic import Field

from advbench import Defense, Params, hookimpl
from advbench.kit import backend
from advbench.lazy import keras


class CrossLipschitzParams(Params):
    lambda_: float = Field(0.01, gt=0, alias="lambda", description="Weight of the Cross-Lipschitz regularizer.")


class CrossLipschitz(Defense):
    """Cross-entropy plus lambda times the Cross-Lipschitz regularizer (closed form for one hidden layer)."""

    Params = CrossLipschitzParams

    def regularizer(self, model, x, y, logits):
        return self.params.lambda_ * cross_lipschitz(model, x)


def cross_lipschitz(model, x, closed_form: bool | None = None):
    """Mean over the batch of ``(1 / K^2) sum_{l,m} ||grad f_l(x) - grad f_m(x)||^2``.

    ``closed_form=None`` picks the closed form when the model has one hidden layer.
    """
    from advbench.kit.structure import OneHiddenLayer, UnsupportedModel

    if closed_form is not False:
        try:
            return _one_hidden_layer(OneHiddenLayer(model), x)
        except UnsupportedModel:
            if closed_form:
                raise
    return _generic(model, x)


def pairwise_sum(squared_norms, squared_norm_of_sum, classes):
    """sum_{l,m} ||g_l - g_m||^2 = 2K sum_l ||g_l||^2 - 2 ||sum_l g_l||^2, per example."""
    return 2.0 * classes * squared_norms - 2.0 * squared_norm_of_sum


def _generic(model, x):
    ops = keras.ops
    _, jacobian = backend.jacobian(lambda point: model(point, training=False), x, differentiable=True)  # (B, K, ...)
    classes = jacobian.shape[1]
    gradients = ops.reshape(jacobian, (ops.shape(x)[0], classes, -1))
    squared = ops.sum(ops.square(gradients), axis=(1, 2))
    total = ops.sum(ops.square(ops.sum(gradients, axis=1)), axis=1)
    return ops.mean(pairwise_sum(squared, total, classes)) / classes**2


def _one_hidden_layer(net, x):
    ops = keras.ops
    U, b, W2 = net.U, net.b, net.W2  # (d, h), (h,), (h, K)
    classes = W2.shape[1]
    z = ops.matmul(ops.reshape(x, (ops.shape(x)[0], -1)), U) + b
    s = net.slope(z)  # (B, h): grad f_r = U (s * W2[:, r])
    gram = ops.matmul(ops.transpose(U), U)  # U^T U, (h, h)
    squared = ops.einsum("bh,hk,bk->b", s, gram * ops.matmul(W2, ops.transpose(W2)), s)
    weighted = s * ops.sum(W2, axis=1)  # s * (W2 1)
    total = ops.einsum("bh,hk,bk->b", weighted, gram, weighted)
    return ops.mean(pairwise_sum(squared, total, classes)) / classes**2


@hookimpl
def advbench_register_defenses(register):
    register("cross_lipschitz", CrossLipschitz)
