"""The search kit (advbench.kit.search): the bracket-and-bisect searches, keep-the-smaller
point and the still-rising indicator that every attack and certifier goes through."""

import numpy as np
import pytest

from advbench.kit import search


@pytest.mark.parametrize("geometric", [True, False])
def test_bisect_brackets_each_examples_threshold_to_the_tolerance(geometric):
    threshold = np.array([0.013, 0.5, 2.7, 9.0])  # succeeds at or above the threshold
    queried = []

    def step(index, middle):
        queried.append(len(index))
        return middle >= threshold[index]

    low, high = search.bisect(step, np.full(4, 1e-3), np.full(4, 10.0), np.ones(4, bool), tolerance=1e-4, geometric=geometric)
    assert np.all(low < threshold) and np.all(high >= threshold)
    assert np.all(~search.wide(low, high, 1e-4, geometric) | ~search.splittable(low, high, search.midpoint(low, high, geometric)))
    assert queried[-1] < 4 or len(set(queried)) == 1  # finished examples are not queried again


def test_bisect_stops_where_float32_cannot_split_the_bracket():
    low = np.array([1.0])
    high = np.array([np.nextafter(np.float32(1.0), np.float32(2.0))], np.float64)
    calls = []
    search.bisect(
        lambda i, m: calls.append(m) or np.ones(len(i), bool), low, high, np.ones(1, bool), tolerance=0.0, geometric=False
    )
    assert len(calls) == 1  # one query, then float32 has no value strictly inside


def test_bisect_stops_a_step_that_moves_nothing_and_whole_batch_queries_everyone():
    shapes = []

    def stalled(index, middle):
        shapes.append(len(index))
        return np.zeros(len(index), bool), np.zeros(len(index)), np.full(len(index), 8.0)  # the bracket stays [0, 8]

    low, high = search.bisect(
        stalled, np.zeros(3), np.full(3, 8.0), np.array([True, False, True]), tolerance=1e-6, geometric=False
    )
    assert shapes == [2] and list(high) == [8.0, 8.0, 8.0]
    shapes.clear()
    search.bisect(
        lambda i, m: shapes.append(len(i)) or m > 1.0,
        np.zeros(3) + 0.5,
        np.full(3, 4.0),
        np.array([True, False, True]),
        tolerance=1e-3,
        geometric=True,
        whole_batch=True,
    )
    assert set(shapes) == {3}


def test_a_step_can_move_an_end_past_the_midpoint():
    # an attack asked at budget m >= 3 finds a point of norm m / 2: the upper end comes down to it
    low, high = search.bisect(
        lambda i, m: (m >= 3, m, m / 2), np.zeros(1), np.array([8.0]), np.ones(1, bool), tolerance=1e-3, geometric=False
    )
    assert high[0] == 2.0 and 2.0 * (1 - 1e-3) <= low[0] < 2.0  # 8 -> query 4 finds 2; below 2 nothing succeeds


def test_narrow_and_next_guess_search_a_constant_that_grows_until_it_succeeds():
    low, high, value = np.zeros(2), np.full(2, np.inf), np.array([0.01, 0.01])
    needed = np.array([5.0, 0.002])
    for _ in range(30):
        low, high = search.narrow(value, value >= needed, low, high)
        value = search.next_guess(value, low, high, factor=10)
    assert np.all(low < needed) and np.all(needed <= high) and np.all(high - low < 1e-4)


def test_grow_then_bisect_finds_the_smallest_crossing_scale():
    needed = np.array([0.3, 3.0, 100.0])
    success, low, high = search.grow_then_bisect(lambda s: s >= needed, np.zeros(3), np.ones(3), 4, 20)
    assert list(success) == [True, True, False]
    assert np.all(np.abs(high[:2] - needed[:2]) < 1e-5) and np.all(low[:2] < needed[:2])


def test_keep_smaller_rows_keeps_only_smaller_adversarial_points():
    best_norm, best = np.array([1.0, np.inf, 0.5]), np.zeros((3, 2))
    index = np.array([0, 1, 2])
    better = search.keep_smaller_rows(
        index, np.array([True, True, False]), np.array([0.7, 3.0, 0.1]), np.ones((3, 2)), best_norm, best
    )
    assert list(better) == [True, True, False]
    assert list(best_norm) == [0.7, 3.0, 0.5] and best[2].sum() == 0


def test_keep_smaller_in_keras_ops_matches_the_numpy_form():
    from advbench.lazy import keras

    size, adversarial = np.array([0.7, 3.0, 0.1], np.float32), np.array([True, True, False])
    point, best = np.ones((3, 2), np.float32), np.zeros((3, 2), np.float32)
    best_norm = np.array([1.0, np.inf, 0.5], np.float32)
    norm_ops, best_ops = search.keep_smaller(
        keras.ops.convert_to_tensor(adversarial),
        keras.ops.convert_to_tensor(size),
        keras.ops.convert_to_tensor(point),
        keras.ops.convert_to_tensor(best_norm),
        keras.ops.convert_to_tensor(best),
    )
    search.keep_smaller_rows(np.arange(3), adversarial, size, point, best_norm, best)
    assert np.array_equal(keras.ops.convert_to_numpy(norm_ops), best_norm)
    assert np.array_equal(keras.ops.convert_to_numpy(best_ops), best)


def test_still_rising_is_pintors_five_percent_rule():
    best, lowest = np.array([10.0, 10.0, -np.inf]), np.array([0.0, 0.0, np.inf])
    before = np.array([9.0, 9.8, -np.inf])  # rose by 10% and by 2% of the range
    assert list(search.still_rising(best, before, lowest)) == [True, False, False]
