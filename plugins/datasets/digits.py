"""The `digits` dataset: 1,797 handwritten digits (8x8, 17 grey levels) shipped inside
scikit-learn, so advbench's quickstart runs offline on a fresh machine."""

from __future__ import annotations

import numpy as np

from advbench import Dataset, DatasetArrays, hookimpl


class Digits(Dataset):
    """Handwritten digits 8x8 from scikit-learn (offline; 1,347 train / 450 test)."""

    def load(self) -> DatasetArrays:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = (bunch.images / 16.0).astype(np.float32)[..., None]  # 0..16 -> [0, 1], NHWC
        labels = bunch.target.astype(np.int64)
        # A fixed split with no random number generator, so it never changes: every
        # fourth image (in scikit-learn's order) is a test image.
        is_test = np.arange(len(labels)) % 4 == 0
        return DatasetArrays(
            x_train=images[~is_test],
            y_train=labels[~is_test],
            x_test=images[is_test],
            y_test=labels[is_test],
            num_classes=10,
            class_names=[str(d) for d in range(10)],
            info={"source": "sklearn.datasets.load_digits", "split": "test = every 4th image"},
        )


@hookimpl
def advbench_register_datasets(register):
    register("digits", Digits)
