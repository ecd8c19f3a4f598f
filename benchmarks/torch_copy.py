"""A Keras network copied into PyTorch with its weights, for the benchmarks that measure
advbench next to a PyTorch peer (auto_LiRPA, alpha-beta-CROWN) on the same network."""

from __future__ import annotations

import numpy as np


def to_torch(model):
    """The same network in PyTorch (NCHW in), the weights copied: Conv2D (valid padding, or
    odd kernels at stride 1), Dense, MaxPooling2D, Flatten, and ReLUs as layers or fused
    activations.  A Keras Flatten reads (h, w, c), a PyTorch one (c, h, w): the Dense layer
    after a Flatten gets its kernel's rows reordered to match (so the copy has no permute,
    which some verifiers' LP encodings do not take)."""
    import torch
    from torch import nn

    layers: list = []
    flattened = None  # (h, w, c) of the last Flatten's input, for the next Dense
    for layer in model.layers[1:]:
        kind = type(layer).__name__
        if kind == "Conv2D":
            kernel, bias = (np.asarray(w) for w in layer.get_weights())
            stride, size = layer.strides[0], kernel.shape[0]
            assert layer.padding == "valid" or (stride == 1 and size % 2), "symmetric padding only"
            padding = 0 if layer.padding == "valid" else size // 2
            conv = nn.Conv2d(kernel.shape[2], kernel.shape[3], size, stride=stride, padding=padding)
            conv.weight.data = torch.tensor(kernel.transpose(3, 2, 0, 1).copy())
            conv.bias.data = torch.tensor(bias)
            layers.append(conv)
        elif kind == "Dense":
            kernel, bias = (np.asarray(w) for w in layer.get_weights())
            if flattened is not None:  # rows from (h, w, c) to (c, h, w) order
                kernel = kernel.reshape(*flattened, -1).transpose(2, 0, 1, 3).reshape(kernel.shape)
                flattened = None
            dense = nn.Linear(kernel.shape[0], kernel.shape[1])
            dense.weight.data, dense.bias.data = torch.tensor(kernel.T.copy()), torch.tensor(bias)
            layers.append(dense)
        elif kind == "MaxPooling2D":
            layers.append(nn.MaxPool2d(layer.pool_size[0], layer.strides[0]))
        elif kind == "Flatten":
            flattened = tuple(layer.input.shape[1:])
            layers.append(nn.Flatten())
            continue
        elif kind == "ReLU" or (kind == "Activation" and layer.activation.__name__ == "relu"):
            layers.append(nn.ReLU())
            continue
        else:
            raise ValueError(f"layer {layer.name!r} ({kind}) is not copied")
        activation = getattr(layer, "activation", None)
        if activation is not None and activation.__name__ == "relu":
            layers.append(nn.ReLU())
        elif activation is not None and activation.__name__ != "linear":
            raise ValueError(f"layer {layer.name!r}: activation {activation.__name__!r} is not copied")
    return nn.Sequential(*layers).eval()
