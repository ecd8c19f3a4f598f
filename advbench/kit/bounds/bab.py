"""Branch and bound over ReLU splits (complete verification), on alpha-CROWN.

A *subdomain* is one example's input set with some unstable ReLUs fixed: *active*
(pre-activation >= 0) or *inactive* (<= 0).  The two children of a split cover their
parent, so the property holds on the input set once it holds on every leaf.  Each
subdomain is one row of a batch: the example's input repeated, and a sign per ReLU
neuron (+1 active, -1 inactive, 0 free), so many subdomains of many examples are bounded
in one compiled call.

A subdomain is bounded as beta-CROWN (Wang et al. 2021) does: its split neurons'
pre-activation bounds are clamped to their side (which makes their relaxation exact and
tightens every later layer's bounds), and each split constraint ``s z >= 0`` enters the
margins' bound through a Lagrange multiplier ``beta >= 0`` (``min g >= min g - beta s z``
on the subdomain), optimized with alpha-CROWN's slopes by projected gradient ascent.
Any ``beta >= 0`` is sound; once every unstable neuron is split the subdomain's problem
is a linear program, whose dual this is, so optimized multipliers make the bound exact
there (infeasible subdomains, where a split contradicts the neuron's bounds, are dropped as
verified; :func:`contradicted`).

Branching (:func:`branching_scores`): the intercept score of BaBSR (Bunel et al. 2020),
how much of the margins' bound a neuron's upper-line intercept costs, ``-min(lam, 0) *
(-u l / (u - l))`` with ``lam`` its coefficient in the margins' backward pass, summed
over the margins not yet proven; where every score is 0, the widest relaxation.
"""

from __future__ import annotations

import numpy as np

from advbench.kit.bounds.crown import AlphaCrown
from advbench.kit.bounds.operators import ReLU
from advbench.kit.bounds.sets import input_box, l2_norm
from advbench.lazy import keras


class SplitCrown(AlphaCrown):
    """alpha-CROWN on subdomains: :meth:`bound` takes per row a sign for every neuron of
    every ReLU node's input (flattened in node order, :attr:`neurons` in all) and returns
    the margins' lower bounds with the clamped pre-activation bounds and branching scores.

    ``beta_learning_rate``: the multipliers' Adam step (beta-CROWN's default 0.05)."""

    def __init__(
        self,
        nodes,
        max_neurons: int = 2048,
        iterations: int = 20,
        learning_rate: float = 0.5,
        decay: float = 0.98,
        pool_learning_rate: float = 0.05,
        beta_learning_rate: float = 0.05,
        intermediate_iterations: int = 0,
    ):
        super().__init__(nodes, max_neurons, iterations, learning_rate, decay, pool_learning_rate, intermediate_iterations)
        self.beta_learning_rate = beta_learning_rate
        self.relus = [k for k, node in enumerate(nodes) if isinstance(node, ReLU)]
        self.offsets = {}
        total = 0
        for k in self.relus:
            self.offsets[k] = total
            total += self.sizes[nodes[k].inputs[0]]
        self.neurons = total
        self.signs = {}  # input node of a ReLU -> its neurons' signs, (B, *shape)
        self.recorded = None  # ReLU node -> lam of the last backward pass, when recording

    def bound(self, x, C, eps, norm, signs, lower=None, upper=None, alphas=None, betas=None):
        """``signs`` (B, :attr:`neurons`) in {-1, 0, 1}.  Returns ``(margins, lower, upper,
        score, point, alphas, betas)``: the margins' lower bounds (B, S), +inf where the
        subdomain is empty; per neuron (B, :attr:`neurons`) its pre-activation bounds on the
        subdomain and its branching score (0 for stable or split neurons); :meth:`own_point`;
        and the last iterate's ReLU slopes and split multipliers (B, S, :attr:`neurons`).
        ``alphas`` and ``betas`` given (a parent's): the ascent starts from them (warm start,
        as beta-CROWN), else from CROWN's slopes and zero multipliers.

        ``lower`` and ``upper`` (B, :attr:`neurons`): the parent subdomain's pre-activation
        bounds, reused as they are (valid on any part of the parent's set) with the split
        neurons clamped to their side, as beta-CROWN does: only the margins' bound is
        computed anew.  None: every intermediate bound computed for this subdomain."""
        ops = keras.ops
        self.prepare(x, C, eps, norm)
        batch = ops.shape(x)[0]
        for k in self.relus:
            source = self.nodes[k].inputs[0]
            offset = self.offsets[k]
            part = signs[:, offset : offset + self.sizes[source]]
            self.signs[source] = ops.reshape(part, (batch,) + self.shape(source))
            if lower is not None:
                shape = (batch,) + self.shape(source)
                low = ops.reshape(lower[:, offset : offset + self.sizes[source]], shape)
                high = ops.reshape(upper[:, offset : offset + self.sizes[source]], shape)
                signed = self.signs[source]
                low = ops.where(signed > 0, ops.maximum(low, 0.0), low)
                high = ops.where(signed < 0, ops.minimum(high, 0.0), high)
                self.bounds[source] = (low, high)
                self.tightened.add(source)
        if lower is None:  # the root: its intermediate bounds, optimized where asked, serve every subdomain below
            self.optimize_intermediate()
        start = self.start_slopes()
        scales = self.slope_scales(start)
        ceilings = {k: 1.0 for k in start}
        rows = (batch, C.shape[1])
        for k in self.relus:
            key = ("beta", k)
            shape = rows + self.shape(self.nodes[k].inputs[0])
            start[key] = ops.zeros(shape)
            scales[key] = self.beta_learning_rate / self.learning_rate
            ceilings[key] = None
            if alphas is not None:
                part = slice(self.offsets[k], self.offsets[k] + self.sizes[self.nodes[k].inputs[0]])
                start[k] = ops.reshape(alphas[:, :, part], shape)
                start[key] = ops.reshape(betas[:, :, part], shape)
        if start:
            margins, last = self.ascend(start, scales, ceilings)
        else:  # nothing to optimize (no ReLU, no max-pool): CROWN's bound, computed below
            margins, last = ops.full(rows, -np.inf), None
        self.recorded = {}
        final = self.lower_bound(len(self.nodes) - 1, C, last)
        recorded, self.recorded = self.recorded, None
        margins = ops.maximum(margins, final)
        point = self.own_point(recorded["input"], margins)
        lowers, uppers, scores = [], [], []
        empty = ops.zeros((batch,), "bool")
        unproven = ops.cast(margins <= 0, x.dtype)  # (B, S)
        for k in self.relus:
            source = self.nodes[k].inputs[0]
            lower, upper = self.pre_bounds(source)
            flat_lower, flat_upper = ops.reshape(lower, (batch, -1)), ops.reshape(upper, (batch, -1))
            empty = ops.logical_or(
                empty, ops.any(contradicted(flat_lower, flat_upper, ops.reshape(self.signs[source], (batch, -1))), axis=1)
            )
            lam = ops.reshape(recorded[k], (batch, C.shape[1], -1))
            scores.append(branching_scores(flat_lower, flat_upper, lam, unproven))
            lowers.append(flat_lower)
            uppers.append(flat_upper)
        margins = ops.where(empty[:, None], np.float32(np.inf), margins)
        join = (lambda parts: ops.concatenate(parts, axis=1)) if self.relus else (lambda parts: ops.zeros((batch, 0)))
        carried = []
        for name in ("alpha", "beta"):
            parts = [ops.reshape(last[k if name == "alpha" else ("beta", k)], rows + (-1,)) for k in self.relus] if last else []
            carried.append(ops.concatenate(parts, axis=2) if parts else ops.zeros(rows + (0,)))
        return margins, join(lowers), join(uppers), join(scores), point, *carried

    def pre_bounds(self, index):
        if index in self.bounds or index not in self.signs:
            return super().pre_bounds(index)
        lower, upper = super().pre_bounds(index)
        signs = self.signs[index]
        ops = keras.ops
        lower = ops.where(signs > 0, ops.maximum(lower, 0.0), lower)
        upper = ops.where(signs < 0, ops.minimum(upper, 0.0), upper)
        self.bounds[index] = (lower, upper)
        self.tightened.add(index)
        return lower, upper

    def input_bound(self, lam):
        if self.recorded is not None:
            self.recorded["input"] = lam
        return super().input_bound(lam)

    def own_point(self, lam, margins):
        """The subdomain's own point: the input that minimizes the linear lower bound of its
        worst margin over the input set (linf: a corner of the box; l2: the step against
        the coefficients, clipped to [0, 1], which stays in the ball), a candidate
        counterexample (exact where every unstable neuron is split)."""
        ops = keras.ops
        worst = ops.argmin(margins, axis=1)
        batch = ops.shape(lam)[0]
        flat = ops.reshape(lam, (batch, lam.shape[1], -1))
        row = ops.take_along_axis(flat, ops.reshape(worst, (-1, 1, 1)), axis=1)[:, 0]
        row = ops.reshape(row, ops.shape(self.x))
        if self.norm == "linf":
            lower, upper = input_box(self.x, self.eps, self.norm)
            return ops.where(row > 0, lower, upper)
        size = ops.reshape(l2_norm(ops.reshape(row, (batch, -1)), axis=1), (-1,) + (1,) * (len(self.x.shape) - 1))
        e = ops.reshape(self.eps, (-1,) + (1,) * (len(self.x.shape) - 1))
        return ops.clip(self.x - e * row / ops.maximum(size, 1e-12), 0.0, 1.0)

    def backward_step(self, k, lam, slopes):
        contributions, offset = super().backward_step(k, lam, slopes)
        if self.recorded is not None and k in self.offsets:
            self.recorded[k] = lam
        beta = None if slopes is None else slopes.get(("beta", k))
        if beta is not None:  # the Lagrange term -beta s z of each split constraint s z >= 0
            signs = self.signs[self.nodes[k].inputs[0]]
            contributions = [contributions[0] - beta * signs[:, None]]
        return contributions, offset


EMPTY_SLACK = 1e-5
"""How far past 0 (relative to the bounds' size) a split neuron's other bound must lie
for its subdomain to count as empty: float32 rounding moves bounds by about 1e-7 of their size."""


def contradicted(lower, upper, signs):
    """Per neuron, whether its split contradicts its bounds, so the subdomain holds no input:
    split active (``signs`` > 0) with an upper bound below 0, or inactive with a lower bound
    above 0, by more than :data:`EMPTY_SLACK`.  Only a split can empty a subdomain: an
    unsplit neuron's bounds cross only through rounding (IBP's and CROWN's bounds of a neuron
    that is nearly constant on the input set), which says nothing about the input set."""
    ops = keras.ops
    slack = EMPTY_SLACK * (1.0 + ops.maximum(ops.abs(lower), ops.abs(upper)))
    return ((signs > 0) & (upper < -slack)) | ((signs < 0) & (lower > slack))


def branching_scores(lower, upper, lam, unproven):
    """BaBSR's intercept score per neuron (B, n): the loss in the unproven margins' bounds
    (``unproven`` (B, S) of 0/1) from the upper line's intercept of each unstable neuron,
    ``lam`` (B, S, n) the coefficients of the ReLU's output."""
    ops = keras.ops
    unstable = (lower < 0) & (upper > 0)
    intercept = ops.where(unstable, -upper * lower / ops.maximum(upper - lower, 1e-12), 0.0)
    cost = ops.sum(-ops.minimum(lam, 0.0) * unproven[:, :, None], axis=1)
    return cost * intercept


def choose_neurons(lower: np.ndarray, upper: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Per subdomain, the neuron to split (-1 where none is unstable): the highest score,
    or the widest relaxation (largest ``-u l / (u - l)``) where every score is 0."""
    if not lower.shape[1]:  # no ReLU
        return np.full(len(lower), -1)
    unstable = (lower < 0) & (upper > 0)
    width = np.where(unstable, -upper * lower / np.maximum(upper - lower, 1e-12), -1.0)
    ranked = np.where(unstable, score, -1.0)
    pick = np.where(ranked.max(axis=1, initial=-1.0) > 0, ranked.argmax(axis=1), width.argmax(axis=1))
    return np.where(unstable.any(axis=1), pick, -1)


VERIFIED, UNKNOWN, FALSIFIED = 1, 0, -1


def branch_and_bound(
    bound,
    neurons: int,
    count: int,
    falsify,
    domains_left: np.ndarray,
    seconds_left: np.ndarray,
    batch: int,
    deadline=None,
    root=None,
):
    """Decide, for ``count`` examples, whether every margin is positive on the whole input
    set: ``VERIFIED``, ``FALSIFIED`` (``falsify`` found a real counterexample) or
    ``UNKNOWN`` (an example's subdomain or time budget ran out, or a subdomain has no
    unstable neuron left to split and is still not proven).

    :param bound: ``bound(rows, signs, parents)`` -> NumPy ``(margins, lower, upper,
        score, point, alphas, betas)`` of :meth:`SplitCrown.bound` for subdomains of the
        examples ``rows`` (indices); ``parents``, None at the root, else the parents'
        ``(lower, upper, alphas, betas)`` to reuse.
    :param falsify: ``falsify(rows, points)`` -> boolean per row: a counterexample was
        found, by an attack on the example (``points`` None) or at ``points`` (the
        subdomains' own points, checked as they are).
    :param domains_left, seconds_left: per example, what it may still spend.
    :param batch: subdomains bounded in one call at most.
    :param deadline: a :func:`time.perf_counter` time after which every example still open
        is given up (UNKNOWN), whatever its own budget.
    :param root: per example, ``(lower, upper, alphas, betas)`` already computed for its
        whole input set (reused as a parent's), or None.
    :return: ``(status, domains, seconds)`` per example: the verdict, the subdomains
        bounded and the seconds spent (each call's time shared among its rows).
    """
    import time

    status = np.full(count, UNKNOWN, np.int8)
    spent = np.zeros(count)
    bounded = np.zeros(count, np.int64)

    def timed(rows, work, *args):
        began = time.perf_counter()
        result = work(*args)
        np.add.at(spent, rows, (time.perf_counter() - began) / max(1, len(rows)))
        return result

    def evaluate(rows, signs, parents=None):
        """Bound the subdomains (``parents``: their parents' bounds, to reuse); falsified
        where an unproven one's own point is a counterexample."""
        margins, lower, upper, score, points, alpha, beta = timed(rows, bound, rows, signs, parents)
        np.add.at(bounded, rows, 1)
        unproven = np.flatnonzero((margins.min(axis=1) <= 0) & (status[rows] == UNKNOWN))
        if len(unproven):
            hit = np.asarray(timed(rows[unproven], falsify, rows[unproven], points[unproven]), bool)
            status[rows[unproven[hit]]] = FALSIFIED
        return margins, lower, upper, score, alpha, beta

    everyone = np.arange(count)
    margins, lower, upper, score, alpha, beta = evaluate(everyone, np.zeros((count, neurons), np.float32), root)
    status[(margins.min(axis=1) > 0) & (status == UNKNOWN)] = VERIFIED
    open_ = np.flatnonzero(status == UNKNOWN)
    if len(open_):
        broken = np.asarray(timed(open_, falsify, open_, None), bool)
        status[open_[broken]] = FALSIFIED
    keep = status == UNKNOWN
    queue = {
        "row": everyone[keep],
        "signs": np.zeros((int(keep.sum()), neurons), np.float32),
        "margins": margins[keep],
        "lower": lower[keep],
        "upper": upper[keep],
        "score": score[keep],
        "alpha": alpha[keep],
        "beta": beta[keep],
    }
    given_up = np.zeros(count, bool)
    while len(queue["row"]):
        rows = queue["row"]
        neuron = choose_neurons(queue["lower"], queue["upper"], queue["score"])
        out = (bounded[rows] >= domains_left[rows]) | (spent[rows] >= seconds_left[rows]) | (neuron < 0)
        if deadline is not None and time.perf_counter() >= deadline:
            out[:] = True
        given_up[rows[out]] = True
        alive = ~given_up[rows] & (status[rows] == UNKNOWN)
        queue = {name: values[alive] for name, values in queue.items()}
        neuron = neuron[alive]
        if not len(neuron):
            break
        order = np.argsort(queue["margins"].min(axis=1), kind="stable")  # the hardest subdomains first
        pick, rest = order[: max(1, batch // 2)], order[max(1, batch // 2) :]
        parents = {name: values[pick] for name, values in queue.items()}
        signs = np.concatenate([parents["signs"], parents["signs"]])
        half = len(pick)
        signs[np.arange(half), neuron[pick]] = 1.0
        signs[half + np.arange(half), neuron[pick]] = -1.0
        rows = np.concatenate([parents["row"], parents["row"]])
        reuse = tuple(np.concatenate([parents[name], parents[name]]) for name in ("lower", "upper", "alpha", "beta"))
        margins, lower, upper, score, alpha, beta = evaluate(rows, signs, reuse)
        margins = np.maximum(margins, np.concatenate([parents["margins"], parents["margins"]]))  # within a proven parent bound
        pending = margins.min(axis=1) <= 0
        children = {
            "row": rows,
            "signs": signs,
            "margins": margins,
            "lower": lower,
            "upper": upper,
            "score": score,
            "alpha": alpha,
            "beta": beta,
        }
        queue = {name: np.concatenate([queue[name][rest], values[pending]]) for name, values in children.items()}
    status[(status == UNKNOWN) & ~given_up] = VERIFIED
    return status, bounded, spent
