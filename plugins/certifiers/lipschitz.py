"""The Lipschitz-margin certificate (Tsuzuku et al. 2018; Leino et al. 2021).

For the predicted class c and every other class j, ``g_j = f_c - f_j`` changes by at most
``L_cj * ||delta||`` under a perturbation delta, so no perturbation with
``||delta|| < min_j g_j(x) / L_cj`` changes the prediction.  ``L_cj`` is an upper bound:
the norm of the difference of the two logit rows of the last layer (L2: its L2 norm,
Linf: its L1 norm) times the product of sound upper bounds of every earlier layer's
operator norm:

* Dense: the exact spectral norm (SVD in float64) for L2, the maximum absolute row sum
  of the linear map for Linf;
* Conv2D: the largest singular value of the circular convolution on a grid padded to
  avoid wrap-around (exact per-frequency SVDs of the kernel's 2-D DFT, Sedghi et al.
  2019), which bounds the zero-padded, possibly strided convolution from above; for
  Linf the largest absolute kernel sum of an output channel;
* activations: their largest slope (1 for ReLU, softplus, tanh; 1/4 for sigmoid);
* max-pooling: sqrt of the number of windows covering a pixel for L2, 1 for Linf;
  average pooling: sqrt(coverage / window size) for L2 ('valid'), 1 for Linf;
* batch normalization (inference): the largest |gamma / sqrt(var + eps)|.

No power iteration is involved, so no unconverged estimate can undercut the bound.
A layer it cannot bound soundly is refused by name.
"""

from __future__ import annotations

import math

import numpy as np

from advbench import Certifier, hookimpl
from advbench.kit.structure import UnsupportedModel, activation_name, flatten_layers
from advbench.lazy import keras

ROUNDING_MARGIN = 1e-6
"""Relative safety margin on each layer norm against float rounding."""

ACTIVATION_SLOPE = {"linear": 1.0, "relu": 1.0, "softplus": 1.0, "tanh": 1.0, "sigmoid": 0.25, "elu": 1.0, "leaky_relu": 1.0}


class LipschitzMargin(Certifier):
    """Margin divided by a sound per-class-pair Lipschitz bound (L2 and Linf)."""

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self._constants = {}

    def check(self, target):
        try:
            pair_constants(target.model, "l2")
        except UnsupportedModel as exc:
            return str(exc)
        return None

    def certify(self, target, x, y, norm):
        key = (id(target), norm)
        if key not in self._constants:
            self._constants[key] = pair_constants(target.model, norm)
        constants = self._constants[key]  # (K, K): L[c, j]
        logits = target.logits_numpy(x).astype(np.float64)
        y = np.asarray(y)
        margins = logits[np.arange(len(y)), y][:, None] - logits  # g_j = f_y - f_j
        pair = constants[y]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = margins / pair
        # a pair whose difference cannot change (L = 0): never flipped where its margin is
        # positive, already lost where it is not (0 / 0 is not a radius)
        ratios = np.where(pair == 0, np.where(margins > 0, np.inf, 0.0), ratios)
        ratios[np.arange(len(y)), y] = np.inf
        return np.maximum(ratios.min(axis=1), 0.0)


def pair_constants(model, norm: str) -> np.ndarray:
    """Upper bounds ``L[c, j]`` on the Lipschitz constant of ``f_c - f_j`` w.r.t. ``norm``."""
    layers = flatten_layers(model)
    head = layers[-1]
    if not isinstance(head, keras.layers.Dense) or activation_name(head) != "linear":
        raise UnsupportedModel(
            f"the last layer must be a linear Dense layer (logits), got {head.__class__.__name__} {head.name!r}"
        )
    body = math.prod(layer_norm(layer, norm) for layer in layers[:-1])
    kernel = np.asarray(head.kernel.numpy(), dtype=np.float64)  # (features, K)
    diff = kernel[:, :, None] - kernel[:, None, :]  # (features, K, K)
    order = 2 if norm == "l2" else 1  # the dual norm of the head's input norm
    return np.linalg.norm(diff, ord=order, axis=0) * body * (1 + ROUNDING_MARGIN)


def layer_norm(layer, norm: str) -> float:
    """A sound upper bound of the layer's Lipschitz constant (``linf`` or ``l2``)."""

    from advbench.kit.layers import Softplus

    name = layer.__class__.__name__
    if isinstance(layer, (keras.layers.Flatten, keras.layers.Reshape, keras.layers.Dropout, keras.layers.ZeroPadding2D)):
        return 1.0
    if isinstance(layer, (keras.layers.ReLU, Softplus)):
        return 1.0
    if isinstance(layer, keras.layers.Activation):
        return _slope(layer)
    if isinstance(layer, keras.layers.Rescaling):
        return float(np.max(np.abs(layer.scale)))
    if isinstance(layer, keras.layers.Dense):
        kernel = np.asarray(layer.kernel.numpy(), dtype=np.float64)
        linear = np.linalg.norm(kernel, 2) if norm == "l2" else np.abs(kernel).sum(axis=0).max()
        return linear * _slope(layer) * (1 + ROUNDING_MARGIN)
    if isinstance(layer, keras.layers.Conv2D) and name == "Conv2D":
        kernel = np.asarray(layer.kernel.numpy(), dtype=np.float64)  # (kh, kw, cin, cout)
        if layer.data_format != "channels_last":
            raise UnsupportedModel(f"layer {layer.name!r}: only channels_last convolutions are supported")
        dilation = tuple(layer.dilation_rate)
        if dilation != (1, 1):
            dilated = np.zeros(
                ((kernel.shape[0] - 1) * dilation[0] + 1, (kernel.shape[1] - 1) * dilation[1] + 1) + kernel.shape[2:]
            )
            dilated[:: dilation[0], :: dilation[1]] = kernel
            kernel = dilated
        if norm == "l2":
            height, width = layer.input.shape[1:3]
            linear = conv_spectral_norm_bound(kernel, (height, width))
        else:
            linear = np.abs(kernel).sum(axis=(0, 1, 2)).max()
        return linear * _slope(layer) * (1 + ROUNDING_MARGIN)
    if isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)):
        if norm == "linf":
            return 1.0
        pool, strides = tuple(layer.pool_size), tuple(layer.strides)
        coverage = math.prod(math.ceil(p / s) for p, s in zip(pool, strides))
        if isinstance(layer, keras.layers.MaxPooling2D):
            return math.sqrt(coverage)
        window = math.prod(pool) if layer.padding == "valid" else 1  # 'same' may average fewer pixels
        return math.sqrt(coverage / window)
    if isinstance(layer, keras.layers.GlobalAveragePooling2D):
        if norm == "linf":
            return 1.0
        height, width = layer.input.shape[1:3]
        return 1.0 / math.sqrt(height * width)
    if isinstance(layer, keras.layers.BatchNormalization):
        scale = 1.0 / np.sqrt(np.asarray(layer.moving_variance.numpy(), np.float64) + layer.epsilon)
        if layer.scale:
            scale = scale * np.asarray(layer.gamma.numpy(), np.float64)
        return float(np.max(np.abs(scale))) * (1 + ROUNDING_MARGIN)
    raise UnsupportedModel(f"layer {layer.name!r} ({name}) is not supported by the Lipschitz bound")


def conv_spectral_norm_bound(kernel: np.ndarray, spatial: tuple[int, int]) -> float:
    """Largest singular value of the circular convolution with ``kernel`` on a grid large
    enough that the zero-padded convolution on ``spatial`` is a restriction of it."""
    kh, kw = kernel.shape[:2]
    grid = (spatial[0] + kh - 1, spatial[1] + kw - 1)
    spectrum = np.fft.fft2(kernel, s=grid, axes=(0, 1))  # (g1, g2, cin, cout)
    singular = np.linalg.svd(spectrum.reshape(-1, *kernel.shape[2:]), compute_uv=False)
    return float(singular.max())


def _slope(layer) -> float:
    name = activation_name(layer)
    if name not in ACTIVATION_SLOPE:
        raise UnsupportedModel(f"layer {layer.name!r}: activation {name!r} is not supported by the Lipschitz bound")
    return ACTIVATION_SLOPE[name]


@hookimpl
def advbench_register_certifiers(register):
    register("lipschitz", LipschitzMargin)
