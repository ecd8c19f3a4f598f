"""Datasets and subsets."""

import numpy as np

from advbench import load_dataset
from advbench.data import make_subsets, stratified_indices


def test_digits_is_float_nhwc_in_unit_range():
    data = load_dataset("digits")
    assert data.x_train.shape == (1347, 8, 8, 1) and data.x_test.shape == (450, 8, 8, 1)
    assert data.x_train.dtype == np.float32 and data.x_train.min() == 0 and data.x_train.max() == 1
    assert data.num_classes == 10 and len(data.class_names) == 10


def test_stratified_subsets_are_deterministic_and_keep_class_shares():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    first = stratified_indices(labels, 40, seed=3)
    assert np.array_equal(first, stratified_indices(labels, 40, seed=3))
    assert not np.array_equal(first, stratified_indices(labels, 40, seed=4))
    assert len(first) == 40 and len(set(first)) == 40
    assert np.bincount(labels[first]).tolist() == [20, 10, 6, 4]
    assert np.array_equal(stratified_indices(labels, None, 0), np.arange(200))


def test_evaluated_examples_are_a_subset_of_the_test_subset():
    data = load_dataset("digits")
    subsets = make_subsets(data, 300, 100, 30, seed=0)
    assert set(subsets.eval_index) <= set(subsets.test_index)
    assert len(subsets.x_train) == 300 and len(subsets.x_test) == 100 and len(subsets.x_eval) == 30
