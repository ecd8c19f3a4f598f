"""The backend functions on PyTorch: autograd for gradients; compiled functions run
eagerly, as Keras' torch backend does by default (see :mod:`advbench.kit.backend`)."""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import torch

from advbench.kit.backend.common import seed_keras_and_python
from advbench.lazy import keras


def device() -> str:
    return f"gpu: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"


def set_seed(seed: int) -> None:
    seed_keras_and_python(seed)
    torch.manual_seed(seed)


def enable_determinism() -> None:
    torch.use_deterministic_algorithms(True, warn_only=True)


def compile(fn: Callable, state, mutable, batch_args, smallest_batch) -> Callable:
    """``fn`` with its NumPy arguments turned into tensors (PyTorch's operators take no NumPy)."""

    def tensor(value):
        if isinstance(value, (np.ndarray, np.generic)):
            return keras.ops.convert_to_tensor(value)
        if isinstance(value, (list, tuple)):
            return type(value)(tensor(v) for v in value)
        return value

    @functools.wraps(fn)
    def call(*args, **kwargs):
        return fn(*(tensor(a) for a in args), **{k: tensor(v) for k, v in kwargs.items()})

    return call


def _detach(tree):
    if isinstance(tree, torch.Tensor):
        return tree.detach()
    if isinstance(tree, (list, tuple)):
        return type(tree)(_detach(t) for t in tree)
    if isinstance(tree, dict):
        return {k: _detach(v) for k, v in tree.items()}
    return tree


def grad(fn: Callable, x, differentiable: bool):
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    leaves = [t.detach().requires_grad_(True) for t in (keras.ops.convert_to_tensor(t) for t in xs)]
    with torch.enable_grad():
        value, aux = fn(leaves if isinstance(x, (list, tuple)) else leaves[0])
        grads = torch.autograd.grad(value, leaves, create_graph=differentiable, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, leaves)]
    if not differentiable:
        aux = _detach(aux)
    return (grads if isinstance(x, (list, tuple)) else grads[0]), aux


def jacobian(fn: Callable, x, differentiable: bool):
    leaf = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
    with torch.enable_grad():
        outputs = fn(leaf)
        classes = outputs.shape[1]
        rows = []
        for k in range(classes):
            (g,) = torch.autograd.grad(
                outputs[:, k].sum(), leaf, retain_graph=True, create_graph=differentiable, allow_unused=True
            )
            rows.append(torch.zeros_like(leaf) if g is None else g)
    jac = torch.stack(rows, dim=1)
    return (outputs if differentiable else outputs.detach()), jac


def variable_grad(fn: Callable, variables: list):
    parameters = [v.value for v in variables]
    with torch.enable_grad():
        loss, aux = fn()
        grads = torch.autograd.grad(loss, parameters, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, parameters)]
    return loss.detach(), _detach(aux), grads


def while_loop(cond: Callable, body: Callable, loop_vars: tuple):
    return tuple(keras.ops.while_loop(cond, body, loop_vars))
