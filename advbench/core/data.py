"""Deterministic, class-stratified subsets of a dataset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from advbench.contract.components import DatasetArrays


def stratified_indices(labels: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a subset of ``size`` examples with class shares as in ``labels``.

    Each class gets its proportional share (largest remainders first); the members are
    drawn by ``seed``.  ``size`` of ``None`` or at least ``len(labels)`` keeps everything.
    """
    labels = np.asarray(labels)
    if size is None or size >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / len(labels)
    quota = np.floor(exact).astype(int)
    for k in np.argsort(-(exact - quota), kind="stable")[: size - quota.sum()]:
        quota[k] += 1
    chosen = [rng.choice(np.flatnonzero(labels == c), q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


@dataclass
class Subsets:
    """The arrays a run trains and evaluates on, and where they sit in the full splits."""

    data: DatasetArrays
    train_index: np.ndarray
    test_index: np.ndarray  # the test subset (clean accuracy)
    eval_index: np.ndarray  # the examples attacked and certified (a subset of test_index)

    @property
    def fingerprint(self) -> str:
        """A digest of the content of the arrays used (the train and test subsets): a
        job's key changes when the data files change, even under the same names."""
        if not hasattr(self, "_fingerprint"):
            import hashlib

            digest = hashlib.blake2b(digest_size=16)
            for array in (self.x_train, self.y_train, self.x_test, self.y_test):
                digest.update(str(array.shape).encode())
                digest.update(np.ascontiguousarray(array).tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    @property
    def x_train(self):
        return self.data.x_train[self.train_index]

    @property
    def y_train(self):
        return self.data.y_train[self.train_index]

    @property
    def x_test(self):
        return self.data.x_test[self.test_index]

    @property
    def y_test(self):
        return self.data.y_test[self.test_index]

    @property
    def x_eval(self):
        return self.data.x_test[self.eval_index]

    @property
    def y_eval(self):
        return self.data.y_test[self.eval_index]


def make_subsets(data: DatasetArrays, train_size: int | None, test_size: int | None, examples: int | None, seed: int) -> Subsets:
    train_index = stratified_indices(data.y_train, train_size, seed)
    test_index = stratified_indices(data.y_test, test_size, seed)
    within = stratified_indices(data.y_test[test_index], examples, seed + 1)
    return Subsets(data, train_index, test_index, test_index[within])


def load_arrays(ref) -> DatasetArrays:
    """The arrays of the spec's dataset ``ref``; a :class:`DataError` naming the dataset
    where they cannot be read (the one place that names it)."""
    from advbench.errors import AdvbenchError, DataError

    try:
        arrays = ref.build().load()
    except (AdvbenchError, OSError) as exc:  # FileNotFoundError is an OSError
        raise DataError(f"dataset {ref.name!r}: {exc}") from None
    problem = arrays_problem(arrays)
    if problem:
        raise DataError(
            f"dataset {ref.name!r} does not give what a dataset must (float32 images in [0, 1], NHWC, integer labels): {problem}"
        )
    return arrays


def arrays_problem(arrays) -> str | None:
    """What is wrong with a dataset plugin's arrays, or ``None``: the shape advbench expects,
    images in [0, 1] (not [0, 255]) with no NaN, labels that are class indices."""
    if not isinstance(arrays, DatasetArrays):
        return f"load() returned a {type(arrays).__name__}, not an advbench.DatasetArrays"
    for split in ("train", "test"):
        x, y = getattr(arrays, f"x_{split}"), getattr(arrays, f"y_{split}")
        if not isinstance(x, np.ndarray) or x.ndim != 4:
            return f"x_{split} has shape {getattr(x, 'shape', None)}, expected (n, height, width, channels)"
        if not isinstance(y, np.ndarray) or y.shape != (len(x),):
            return f"y_{split} has shape {getattr(y, 'shape', None)}, expected ({len(x)},): one label per image"
        if not np.issubdtype(x.dtype, np.floating):
            return f"x_{split} is {x.dtype}, expected float32 in [0, 1]"
        if len(x) and not np.all(np.isfinite(x)):
            return f"x_{split} has {int(np.sum(~np.isfinite(x)))} NaN or infinite pixels"
        if len(x) and (x.min() < 0 or x.max() > 1):
            return f"x_{split} ranges over [{x.min():g}, {x.max():g}], expected [0, 1] (divide 8-bit pixels by 255)"
        if not np.issubdtype(y.dtype, np.integer):
            return f"y_{split} is {y.dtype}, expected integer class indices"
        if len(y) and (y.min() < 0 or y.max() >= arrays.num_classes):
            return f"y_{split} holds labels from {y.min()} to {y.max()}, expected 0 to {arrays.num_classes - 1} (num_classes)"
    if arrays.x_train.shape[1:] != arrays.x_test.shape[1:]:
        return f"train images {arrays.x_train.shape[1:]} and test images {arrays.x_test.shape[1:]} differ in shape"
    return None


def load_dataset(name: str, **params) -> DatasetArrays:
    """Load the full train and test splits of a registered dataset (``advbench.load_dataset``).

    ``index`` columns in advbench's exports are positions in ``load_dataset(name,
    **params).x_test``, so an exported example can always be found again.
    """
    from advbench.contract.plugins import load_plugins

    registry = load_plugins().registry
    dataset_cls = registry.get("dataset", name)
    dataset = dataset_cls(dataset_cls.Params(**params))
    return dataset.load()
