"""The Cross-Lipschitz guarantee of Hein & Andriushchenko (NIPS 2017), Theorem 2.1, for
one-hidden-layer networks with softplus activation (and linear models), l2 and linf.

For the predicted class c and each j, with ``g_j = f_c - f_j``, ``a_j = ||grad g_j(x)||_q``
and ``b_j`` a Lipschitz constant of ``grad g_j`` (p-norm in, q-norm out), every ``delta``
with ``||delta||_p <= min_j R_j`` keeps the prediction, where
``R_j = (-a_j + sqrt(a_j^2 + 4 b_j g_j(x))) / (2 b_j)`` solves ``R (a_j + b_j R) = g_j(x)``.

For ``f_r(x) = sum_l w_rl sigma(<u_l, x> + b_l)`` with softplus of sharpness alpha,
``|sigma''| <= alpha / 4`` and ``|<u_l, delta>| <= ||u_l||_q ||delta||_p`` give
``b_j <= (alpha / 4) sum_l |w_cl - w_jl| ||u_l||_q^2``; for p = 2 the tighter spectral form
``(alpha / 4) lambda_max(U^T diag(|w_c - w_j|) U)`` is used (exact eigenvalues in
float64).  (../shared/docs/REFERENCE.md writes ``||u_l||_q ||u_l||_p``; for p = inf that
is smaller than the bound the proof gives, so the proof's ``||u_l||_q^2`` is used.)
For a linear model b_j = 0 and the certificate is exact: ``min_j g_j / ||w_c - w_j||_q``.
ReLU networks and deeper models are refused: the theorem needs a continuous gradient.
"""

from __future__ import annotations

import numpy as np

from advbench import Certifier, hookimpl
from advbench.kit.structure import OneHiddenLayer, UnsupportedModel, flatten_layers
from advbench.lazy import keras

ROUNDING_MARGIN = 1e-6


class Hein2017(Certifier):
    """Hein & Andriushchenko's Theorem 2.1 (one hidden softplus layer, or linear): local Cross-Lipschitz certificate."""

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self._constants = {}

    def check(self, target):
        try:
            self._network(target.model)
        except UnsupportedModel as exc:
            return f"hein2017 applies to one-hidden-layer softplus networks and linear models only: {exc}"
        return None

    @staticmethod
    def _network(model):
        layers = [layer for layer in flatten_layers(model) if not isinstance(layer, keras.layers.Dropout)]
        if len(layers) == 2 and isinstance(layers[0], keras.layers.Flatten) and isinstance(layers[1], keras.layers.Dense):
            return "linear", layers[1]
        net = OneHiddenLayer(model)
        if net.activation != "softplus":
            raise UnsupportedModel("ReLU has no continuous gradient, so Theorem 2.1 does not apply")
        return "softplus", net

    def _curvature(self, target, norm):
        """b[c, j] for every pair (0 for a linear model), and the pieces for the gradients."""
        key = (id(target), norm)
        if key not in self._constants:
            kind, net = self._network(target.model)
            head = net if kind == "linear" else net.head
            W2 = np.asarray(head.kernel.numpy(), np.float64)  # (h or d, K)
            classes = W2.shape[1]
            b = np.zeros((classes, classes))
            if kind == "softplus":
                U = np.asarray(net.U.numpy(), np.float64)  # (d, h): column l is u_l
                quarter = net.alpha / 4
                for c in range(classes):
                    for j in range(c + 1, classes):
                        weights = np.abs(W2[:, c] - W2[:, j])
                        if norm == "l2":
                            scaled = U * np.sqrt(weights)[None, :]
                            value = np.linalg.eigvalsh(scaled.T @ scaled)[-1]
                        else:
                            value = np.sum(weights * np.sum(np.abs(U), axis=0) ** 2)
                        b[c, j] = b[j, c] = quarter * value * (1 + ROUNDING_MARGIN)
            self._constants[key] = (kind, net, b)
        return self._constants[key]

    def certify(self, target, x, y, norm):
        kind, net, b = self._curvature(target, norm)
        flat = np.asarray(x, np.float64).reshape(len(x), -1)
        y = np.asarray(y)
        if kind == "linear":
            W, bias = np.asarray(net.kernel.numpy(), np.float64), np.asarray(net.bias.numpy(), np.float64)
            logits = flat @ W + bias
            gradients = np.broadcast_to(W.T[None], (len(x),) + W.T.shape)  # (B, K, d)
        else:
            U, u_bias = np.asarray(net.U.numpy(), np.float64), np.asarray(net.b.numpy(), np.float64)
            W2, out_bias = np.asarray(net.W2.numpy(), np.float64), np.asarray(net.head.bias.numpy(), np.float64)
            z = flat @ U + u_bias
            hidden = np.logaddexp(0, net.alpha * z) / net.alpha
            logits = hidden @ W2 + out_bias
            slope = 1 / (1 + np.exp(-net.alpha * z))  # sigma'(z)
            gradients = np.einsum("dh,bh,hk->bkd", U, slope, W2)
        rows = np.arange(len(x))
        margin = logits[rows, y][:, None] - logits  # g_j
        difference = gradients[rows, y][:, None, :] - gradients  # grad g_j
        dual = 2 if norm == "l2" else 1
        a = np.linalg.norm(difference, ord=dual, axis=2)
        curvature = b[y]  # (B, K)
        with np.errstate(divide="ignore", invalid="ignore"):
            quadratic = (-a + np.sqrt(a**2 + 4 * curvature * np.maximum(margin, 0))) / (2 * curvature)
            linear = np.maximum(margin, 0) / a
        radius = np.where(curvature > 0, quadratic, linear)
        radius[rows, y] = np.inf
        radius = np.where(np.isnan(radius), 0.0, radius)
        return np.maximum(radius.min(axis=1), 0.0)


@hookimpl
def advbench_register_certifiers(register):
    register("hein2017", Hein2017)
