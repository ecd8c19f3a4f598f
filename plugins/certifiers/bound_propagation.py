"""`ibp`, `crown`, `alpha_crown` and `bab`: certified radii from interval bound propagation
(Gowal et al. 2018), from CROWN's linear relaxations (Zhang et al. 2018), with CROWN's ReLU
slopes optimized (alpha-CROWN, Xu et al. 2021), and by branch and bound over ReLU splits
on top (complete verification, :mod:`advbench.kit.bounds.bab`), for linf and l2 balls
intersected with [0, 1].  The radius is the largest eps at which every margin's lower
bound is positive, found by bisection (:class:`advbench.BisectionCertifier`).  Work is
split into sub-batches that fit the memory budget."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from advbench import BisectionCertifier, Params, hookimpl
from advbench.kit import backend, lp, search
from advbench.kit.structure import UnsupportedModel


class BoundParams(Params):
    tolerance: float = Field(
        1e-3, ge=1e-6, lt=1, description="Relative precision of the radius bisection (float32 resolves about 1e-7)."
    )
    memory_mb: int = Field(
        1024,
        ge=16,
        description="Memory budget of one sub-batch of bound computations (its working tensors; the framework's fixed overhead, a few hundred MB, comes on top). A single example that needs more runs alone.",
    )


class CrownParams(BoundParams):
    max_neurons: int = Field(
        2048, ge=1, description="Layers with at most this many neurons get CROWN intermediate bounds; larger ones IBP."
    )


class AlphaCrownParams(CrownParams):
    iterations: int = Field(20, ge=1, description="Adam steps on the ReLU slopes per bound (auto_LiRPA's default: 20).")
    learning_rate: float = Field(0.5, gt=0, description="Adam step size on the slopes (auto_LiRPA's default: 0.5).")
    pool_learning_rate: float = Field(
        0.05,
        ge=0,
        description="Adam step size on the max-pool windows' weights of their inputs (0: CROWN's choice, "
        "the input with the largest lower bound). Smaller than the slopes': a step moves every window at once, and "
        "at 0.5 on a trained digits CNN no step beat CROWN's choice; 0.05 gained most over linf and l2 budgets.",
    )
    lr_decay: float = Field(0.98, gt=0, le=1, description="Step size factor per step (auto_LiRPA's default: 0.98).")


class _Propagation(BisectionCertifier):
    optimized = False  # the bounds keep a backward pass for the gradient (sizes the sub-batches)

    def check(self, target):
        from advbench.kit.bounds import read_graph

        try:
            read_graph(target.model)
        except UnsupportedModel as exc:
            return str(exc)
        return None

    def _function(self, target, norm):
        def build():
            from advbench.kit.bounds import bytes_per_example, margin_matrix, read_graph, require_memory

            nodes = read_graph(target.model)
            margins = self.lower_margins(nodes, norm)
            classes = target.num_classes

            def compute(x, y, eps):
                return margins(x, margin_matrix(y, classes), eps)

            per_example = bytes_per_example(nodes, target.num_classes, self.crown_neurons(), self.optimized)
            require_memory(per_example, self.name or type(self).__name__)
            fits = max(1, int(self.params.memory_mb * 2**20 // max(1, per_example)))
            sub_batch = 2 ** (fits.bit_length() - 1)
            # JAX pads a batch to a power of two, by default to at least 64 rows: not here,
            # where the sub-batch is what fits the memory budget
            return (target.compile(compute, batch_args=(0, 1, 2), smallest_batch=1), sub_batch)

        return self.per_target(target, norm, build)

    def crown_neurons(self) -> int | None:
        """Layers up to this size get CROWN bounds (None: IBP only); sizes the sub-batches."""
        return None

    def certified(self, target, x, y, norm, eps):
        compute, sub_batch = self._function(target, norm)
        result = np.zeros(len(x), dtype=bool)
        for start in range(0, len(x), sub_batch):
            part = slice(start, start + sub_batch)
            labels = np.asarray(y[part], np.int32)
            lower = backend.to_numpy(compute(np.asarray(x[part], np.float32), labels, np.asarray(eps[part], np.float32)))
            result[part] = np.all(lower > 0, axis=1)
        return result


class IBP(_Propagation):
    """Interval bound propagation: boxes through every layer, margins folded into the last layer."""

    Params = BoundParams

    def lower_margins(self, nodes, norm):
        from advbench.kit.bounds import ibp_margins

        return lambda x, C, eps: ibp_margins(nodes, x, C, eps, norm)


class CROWN(_Propagation):
    """CROWN: backward linear relaxation (adaptive ReLU, convex softplus), intermediate bounds by CROWN or IBP."""

    Params = CrownParams

    def lower_margins(self, nodes, norm):
        from advbench.kit.bounds import Crown

        crown = Crown(nodes, self.params.max_neurons)
        return lambda x, C, eps: crown.margins(x, C, eps, norm)

    def crown_neurons(self) -> int | None:
        return self.params.max_neurons


class AlphaCROWN(CROWN):
    """alpha-CROWN: CROWN with the unstable ReLUs' lower slopes optimized per example and margin (never looser than CROWN)."""

    Params = AlphaCrownParams
    optimized = True
    intermediate_iterations = 0
    """Adam steps optimizing the intermediate layers' bounds too, layer by layer (0: CROWN's,
    as auto_LiRPA's ``fix_interm_bounds``; branch and bound's subdomains reuse the root's);
    tighter on deep networks.  `advbench verify` sets it; not yet a spec parameter, because
    a new parameter changes the hash of every published spec that names the certifier."""

    def lower_margins(self, nodes, norm):
        from advbench.kit.bounds import AlphaCrown

        p = self.params
        crown = AlphaCrown(
            nodes, p.max_neurons, p.iterations, p.learning_rate, p.lr_decay, p.pool_learning_rate, self.intermediate_iterations
        )
        return lambda x, C, eps: crown.margins(x, C, eps, norm)


class BaBParams(AlphaCrownParams):
    max_domains: int = Field(
        2000,
        ge=1,
        le=2**40,  # counted in int64 per example; far beyond what any machine bounds
        description="Subdomains bounded per example over its whole radius search; beyond it its radius is the last one verified.",
    )
    timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds of branch and bound per example over its whole radius search (a safety net: where it binds the result depends on the machine; the record's timed_out says where).",
    )
    batch: int = Field(256, ge=2, description="Subdomains bounded in one call at most (fewer where memory_mb says so).")
    beta_learning_rate: float = Field(
        0.05, gt=0, description="Adam step size on the split constraints' multipliers (beta-CROWN's default: 0.05)."
    )
    attack_steps: int = Field(
        40,
        ge=0,
        description="PGD steps (one restart) run at each budget on what the root bounds leave, to stop early on what is easily broken (0: none).",
    )
    max_radius: float | None = Field(
        None,
        gt=0,
        description="Where the radius search stops: each example is first decided at this budget, and one verified there "
        "gets it as its radius (a lower bound, recorded as capped). Set it to the threat model's largest eps where only "
        "the accuracy there matters: exact radii of robust examples cost far more. Default: the box diameter.",
    )


class BranchAndBound(AlphaCROWN):
    """Branch and bound over ReLU splits on alpha-CROWN with beta-CROWN's split multipliers: complete within its budgets.

    Staged as the field's verifiers: first alpha-CROWN's radius (the same bisection as
    `alpha_crown`, so never below it), then, between it and the box diameter, a bisection
    whose every step attacks what the root bounds leave (PGD; a verified counterexample
    at distance d caps the bracket at d) and branches on the rest.  Per example the
    record keeps the smallest counterexample distance found (``counterexample``; the radius is
    exact, within the tolerance, where it is at most radius * (1 + tolerance)), whether
    some step ended undecided (``undecided``: a budget ran out, or a fully split subdomain
    stayed unproven with no counterexample), and the ``subdomains`` and
    ``seconds`` spent; the leaderboard reads them (complete verification).  With
    ``max_radius`` the search decides that budget first and stops there (``capped``): the
    accuracy at that budget for a fraction of the cost of exact radii."""

    Params = BaBParams

    def check(self, target):
        from advbench.kit.bounds import read_graph
        from advbench.kit.bounds.operators import ReLU

        reason = super().check(target)
        if reason is None and not any(isinstance(node, ReLU) for node in read_graph(target.model)):
            return "branch and bound splits ReLUs, and this model has none (alpha_crown gives the same bound)"
        return reason

    def _splitter(self, target, norm):
        def build():
            from advbench.kit.bounds import SplitCrown, bytes_per_example, read_graph, require_memory

            p = self.params
            nodes = read_graph(target.model)
            engine = SplitCrown(
                nodes,
                p.max_neurons,
                p.iterations,
                p.learning_rate,
                p.lr_decay,
                p.pool_learning_rate,
                p.beta_learning_rate,
                self.intermediate_iterations,
            )
            classes = target.num_classes

            def compute(x, C, eps, signs):
                return engine.bound(x, C, eps, norm, signs)

            def compute_child(x, C, eps, signs, lower, upper, alphas, betas):
                return engine.bound(x, C, eps, norm, signs, lower, upper, alphas, betas)

            per_example = bytes_per_example(nodes, classes, p.max_neurons, optimized=True)
            require_memory(per_example, self.name or "bab")
            fits = max(1, int(p.memory_mb * 2**20 // max(1, per_example)))
            sub_batch = min(p.batch, 2 ** (fits.bit_length() - 1))
            compiled = target.compile(compute, batch_args=(0, 1, 2, 3), smallest_batch=1)
            child = target.compile(compute_child, batch_args=(0, 1, 2, 3, 4, 5, 6, 7), smallest_batch=1)
            return (compiled, child), engine.neurons, sub_batch

        return self.per_target(target, ("bab", norm), build)

    def root_bounds(self, target, x, spec, eps, norm):
        """alpha-CROWN's bounds on the whole input sets, as branch and bound starts: the
        margins' lower bounds (rows of ``spec``, (N, S, classes)), every ReLU input's bounds
        (N, neurons) and the slopes (N, S, neurons), to hand to :meth:`decide` as ``root``
        (with zero split multipliers)."""
        compute, neurons, _ = self._splitter(target, norm)
        out = compute[0](
            np.asarray(x, np.float32),
            np.asarray(spec, np.float32),
            np.asarray(eps, np.float32),
            np.zeros((len(x), neurons), np.float32),
        )
        margins, lower, upper = (backend.to_numpy(t) for t in out[:3])
        return margins, lower, upper, backend.to_numpy(out[5])

    def decide(
        self, target, x, y, norm, eps, domains_left=None, seconds_left=None, seed: int = 0, spec=None, deadline=None, root=None
    ):
        """Per example at its budget ``eps``: ``(status, subdomains, seconds, distance, point)``,
        the status one of :mod:`advbench.kit.bounds.bab`'s VERIFIED, FALSIFIED, UNKNOWN, and
        the distance of the smallest verified counterexample found (inf where none) and that
        counterexample (``x`` where none).  The budgets default to the parameters'
        ``max_domains`` and ``timeout``; ``deadline`` (a :func:`time.perf_counter` time) ends
        every example's search.  ``spec`` (N, S, classes): the margins to prove per example
        (default: every ``f_y - f_j``); a counterexample is any point the target misclassifies.
        ``root``: the examples' intermediate bounds from :meth:`root_bounds`, reused."""
        from advbench.kit import lp
        from advbench.kit.bounds.bab import branch_and_bound
        from advbench.kit.pgd import PGD, PGDParams

        p = self.params
        compute, neurons, sub_batch = self._splitter(target, norm)
        x, y, eps = np.asarray(x, np.float32), np.asarray(y, np.int32), np.asarray(eps, np.float32)
        if spec is None:
            from advbench.kit.bounds import margin_matrix

            spec = backend.to_numpy(margin_matrix(y, target.num_classes))
        C = np.asarray(spec, np.float32)
        found = np.full(len(x), np.inf)
        closest = x.copy()
        attack = PGD(PGDParams(steps=p.attack_steps, restarts=1)) if p.attack_steps else None

        def bound(rows, signs, parents):
            parts = []
            for start in range(0, len(rows), sub_batch):
                chunk, part = rows[start : start + sub_batch], slice(start, start + sub_batch)
                if parents is None:
                    out = compute[0](x[chunk], C[chunk], eps[chunk], signs[part])
                else:
                    out = compute[1](x[chunk], C[chunk], eps[chunk], signs[part], *(p[part] for p in parents))
                parts.append([backend.to_numpy(t) for t in out])
            return [np.concatenate(columns) for columns in zip(*parts)]

        def falsify(rows, points):
            if points is None:  # the attack on the whole ball
                if attack is None:
                    return np.zeros(len(rows), bool)
                points = attack.perturb(target, x[rows], y[rows], eps[rows], norm, seed=seed)
            hit = target.adversarial(points, y[rows])
            distance = lp.numpy_norm(points.astype(np.float64) - x[rows], norm)
            order = np.argsort(-distance, kind="stable")  # a row repeats (several subdomains): the smallest written last
            search.keep_smaller_rows(rows[order], hit[order], distance[order], points[order], found, closest)
            return hit

        domains_left = np.full(len(x), p.max_domains) if domains_left is None else domains_left
        seconds_left = np.full(len(x), p.timeout) if seconds_left is None else seconds_left
        status, domains, seconds = branch_and_bound(
            bound, neurons, len(x), falsify, domains_left, seconds_left, p.batch, deadline=deadline, root=root
        )
        return status, domains, seconds, found, closest

    def certify(self, target, x, y, norm):
        from advbench.kit.bounds.bab import UNKNOWN, VERIFIED

        p = self.params
        low = np.asarray(super().certify(target, x, y, norm), np.float64)  # alpha-CROWN's radius
        n = len(x)
        top = lp.box_diameter(x.shape[1:], norm) if p.max_radius is None else p.max_radius
        high = np.full(n, top)
        upper = np.full(n, np.inf)  # the smallest verified counterexample's distance
        domains, seconds, unknown = np.zeros(n, np.int64), np.zeros(n), np.zeros(n, bool)
        calls = [0]

        def step(index, middle):
            status, bounded, spent, found, _ = self.decide(
                target,
                x[index],
                y[index],
                norm,
                middle,
                p.max_domains - domains[index],
                p.timeout - seconds[index],
                seed=calls[0],
            )
            calls[0] += 1
            domains[index] += bounded
            seconds[index] += spent
            upper[index] = np.minimum(upper[index], found)
            unknown[index[status == UNKNOWN]] = True
            computed_at = np.float32(middle)  # the eps the bounds were computed at
            # not verified: a verified counterexample bounds the radius too
            return status != VERIFIED, computed_at, np.minimum(computed_at, upper[index])

        # with a cap, its budget first: one step settles what is verified or broken there
        first = high if p.max_radius is not None else None
        low, high = search.bisect(step, low, high, (low > 0) & (low < high), tolerance=p.tolerance, geometric=True, first=first)
        details = {
            "counterexample": [None if np.isinf(u) else float(u) for u in upper],
            "undecided": unknown,
            "timed_out": seconds >= p.timeout,  # the wall-clock budget bound: this radius depends on the machine
            "capped": (low >= np.float32(top)) & (p.max_radius is not None),  # verified at max_radius, not searched beyond
            "subdomains": domains,
            "seconds": seconds,
        }
        return low, details


@hookimpl
def advbench_register_certifiers(register):
    register("ibp", IBP)
    register("crown", CROWN)
    register("alpha_crown", AlphaCROWN)
    register("bab", BranchAndBound)
