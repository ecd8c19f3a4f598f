"""Plugins a careless or hostile author might write: names that are paths or markup, an
attack that fails with markup in its message, one that ends the process, a dataset in
[0, 255] and one with NaN pixels, an attack that needs a model the spec lacks."""

import os

import numpy as np

from advbench import Attack, Dataset, DatasetArrays, hookimpl


class Nothing(Attack):
    """Returns the clean images."""

    def perturb(self, target, x, y, eps, norm, seed):
        return np.asarray(x)


class Shouting(Attack):
    """Fails with markup and a newline in its message."""

    def perturb(self, target, x, y, eps, norm, seed):
        raise ValueError("<script>alert(1)</script> | cell\n## injected heading")


class Exiting(Attack):
    """Ends the process in the middle of its job."""

    def perturb(self, target, x, y, eps, norm, seed):
        os._exit(0)


class Aborting(Attack):
    """Aborts the process in the middle of its job."""

    def perturb(self, target, x, y, eps, norm, seed):
        os.abort()


class NeedsAGhost(Attack):
    """Asks for a model no spec has."""

    @classmethod
    def models_needed(cls, params):
        return ["ghost"]

    def perturb(self, target, x, y, eps, norm, seed):
        return np.asarray(x)


def _digits(scale=1.0, nan=False):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[..., None] / 16.0 * scale).astype(np.float32)
    if nan:
        x[0, 0, 0, 0] = np.nan
    y = digits.target.astype(np.int64)
    return DatasetArrays(x[:1000], y[:1000], x[1000:], y[1000:], 10, [str(k) for k in range(10)])


class Bytes(Dataset):
    """The digits in [0, 255] (the classic mistake)."""

    def load(self):
        return _digits(scale=255.0)


class Holes(Dataset):
    """The digits with a NaN pixel."""

    def load(self):
        return _digits(nan=True)


@hookimpl
def advbench_register_attacks(register):
    register("nothing", Nothing)
    register("shouting", Shouting)
    register("exiting", Exiting)
    register("aborting", Aborting)
    register("needs_a_ghost", NeedsAGhost)


@hookimpl
def advbench_register_datasets(register):
    register("bytes", Bytes)
    register("holes", Holes)
