"""A dataset plugin whose pixels are in [0, 255], and one whose attack needs a model no spec has."""

import numpy as np

from advbench import Attack, Dataset, DatasetArrays, hookimpl


class Bytes(Dataset):
    """The digits in [0, 255] (the classic mistake)."""

    def load(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = (digits.images[..., None] * 16).astype(np.float32)
        y = digits.target.astype(np.int64)
        return DatasetArrays(x[:1000], y[:1000], x[1000:], y[1000:], 10, [str(k) for k in range(10)])


class NeedsAGhost(Attack):
    """Asks for a model no spec has."""

    @classmethod
    def models_needed(cls, params):
        return ["ghost"]


@hookimpl
def advbench_register_datasets(register):
    register("bytes", Bytes)


@hookimpl
def advbench_register_attacks(register):
    register("needs_a_ghost", NeedsAGhost)
