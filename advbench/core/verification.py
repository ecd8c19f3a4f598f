"""Deciding a VNN-LIB property on an ONNX network: ``sat`` with a counterexample that
reproduces under onnxruntime, ``unsat`` when the bounds prove that none exists, else
``timeout`` or ``unknown``.

A box and a property become advbench's ordinary problem, so every attack and certifier
applies unchanged.  The box ``[lo, hi]`` is the image of the unit cube under ``u -> lo +
(hi - lo) u``, prepended to the network as its first layer (a per-input Rescaling): the
box is the linf ball of radius 1/2 around ``u = 1/2`` (intersected with [0, 1], which it
already is).  The property's clauses ``a_d . y <= b_d`` (one row each) become the logits
``z = (0, b_1 - a_1 . y, ..., b_D - a_D . y)`` with label 0, folded into the network's last
dense layer: the margin ``z_0 - z_d = a_d . y - b_d`` is positive exactly where clause d
fails, so "every margin positive on the ball" is ``unsat`` and a misclassified point is a
counterexample.  The bounds on these margins are the bounds on the property's linear
functions over the box (the spec matrix of bound propagation).

Staged as the field's verifiers: a batched attack (PGD with many random starts, the margin
loss), then CROWN, alpha-CROWN, and branch and bound (beta-CROWN, ``bab``) until the time
limit; each stage's seconds and outcome are recorded.  A counterexample found by any
stage is mapped back to the box, clipped into it, and run on the original file under
onnxruntime; only if the property's clause holds there is ``sat`` reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from advbench.core.onnx import _Importer, import_checked, input_dims, onnx_inputs, read_proto, run_onnxruntime
from advbench.core.vnnlib import Case, Property, VnnlibError, read_vnnlib
from advbench.errors import AdvbenchError
from advbench.lazy import keras

SAT, UNSAT, TIMEOUT, UNKNOWN = "sat", "unsat", "timeout", "unknown"

ATTACK_STARTS = 64
"""Random starts of the first attack, run as one batch."""

ATTACK_STEPS = 100
"""PGD steps of each start."""

INTERMEDIATE_ITERATIONS = 20
"""alpha-CROWN's steps on the intermediate bounds, at the root (every subdomain reuses them)."""

BAB_BATCH = 1024
"""Subdomains bounded in one call of branch and bound (on 2 cores, 420 a second on mnist_fc's
256x4 network against 350 with 256)."""


@dataclass
class Network:
    """An ONNX network read for verification: its proto, its input as NHWC images (a flat
    input is a 1 x n x 1 image), and the sizes VNN-LIB numbers ``X_i`` and ``Y_j`` by."""

    path: Path
    proto: object
    input_shape: tuple
    inputs: int
    outputs: int

    @classmethod
    def load(cls, path: str | Path) -> "Network":
        path = Path(path)
        proto = read_proto(path)
        dims = input_dims(proto)
        if any(d is None or d <= 0 for d in dims[1:]) or len(dims) < 2:
            raise AdvbenchError(f"{path}: input of shape {dims}; advbench needs a batch dimension and fixed sizes")
        shape = (dims[2], dims[3], dims[1]) if len(dims) == 4 else (1, int(np.prod(dims[1:])), 1)
        model = import_checked(proto, path, shape, check_points=16)
        return cls(path, proto, shape, int(np.prod(shape)), int(model.output.shape[-1]))

    def images(self, flat: np.ndarray) -> np.ndarray:
        """VNN-LIB's input vectors (N, inputs), ordered as the ONNX input flattened, as the
        importer's NHWC images."""
        dims = input_dims(self.proto)
        flat = np.asarray(flat)
        if len(dims) == 4:
            return np.transpose(flat.reshape((len(flat),) + tuple(dims[1:])), (0, 2, 3, 1))
        return flat.reshape((len(flat),) + self.input_shape)

    def flat(self, images: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`images`."""
        return onnx_inputs(self.proto, np.asarray(images)).reshape(len(images), -1)

    def run(self, flat: np.ndarray) -> np.ndarray:
        """The network's outputs under onnxruntime on input vectors (N, inputs), float32 in."""
        return run_onnxruntime(self.proto, self.images(np.asarray(flat, np.float32)))

    def case_model(self, case: Case):
        """The Keras model of one case: u in [0, 1]^n -> the margins' logits (module docstring)."""
        for A, _ in case.clauses:
            if A.shape[0] != 1:
                raise UnsupportedProperty(
                    "a clause of several output constraints (a conjunction) is read but not yet decided; "
                    "advbench decides disjunctions of single constraints (robustness-style properties)"
                )
        scale = self.images((case.upper - case.lower)[None])[0].astype(np.float32)
        offset = self.images(case.lower[None])[0].astype(np.float32)
        body = _Importer(self.proto, self.path, self.input_shape, scale, offset).build()
        A = np.concatenate([A for A, _ in case.clauses])  # (D, outputs)
        b = np.concatenate([b for _, b in case.clauses])
        last = body.layers[-1]
        head_kernel = np.concatenate([np.zeros((self.outputs, 1)), -A.T], axis=1)  # y -> z
        head_bias = np.concatenate([[0.0], b])
        if isinstance(last, keras.layers.Dense) and last.activation in (None, keras.activations.linear):
            W = np.asarray(keras.ops.convert_to_numpy(last.kernel), np.float64)
            bias = np.asarray(keras.ops.convert_to_numpy(last.bias), np.float64) if last.use_bias else 0.0
            kernel, offset_out, source = W @ head_kernel, bias @ head_kernel + head_bias, last.input
        else:
            kernel, offset_out, source = head_kernel, head_bias, body.output
        head = keras.layers.Dense(len(head_bias), name="property")
        out = head(source)
        head.set_weights([kernel.astype(np.float32), np.asarray(offset_out, np.float32)])
        return keras.Model(body.inputs, out, name="property_" + body.name)


class UnsupportedProperty(AdvbenchError):
    """A property read from the file that the verifier does not decide (answered ``unknown``)."""


@dataclass
class Verdict:
    """One instance's answer: the result, the counterexample (inputs and the onnxruntime
    outputs) where ``sat``, and per stage its seconds and outcome."""

    result: str
    counterexample: tuple[np.ndarray, np.ndarray] | None = None
    stages: list[dict] = field(default_factory=list)
    reason: str = ""
    seconds: float = 0.0


def verify(network: Network, prop: Property, timeout: float, registry, seed: int = 0) -> Verdict:
    """Decide ``prop`` on ``network`` within ``timeout`` seconds (module docstring).  A case
    with a reproduced counterexample makes the answer ``sat``; ``unsat`` needs every case proved."""
    began = time.perf_counter()
    stages: list[dict] = []
    open_cases = []
    for index, case in enumerate(prop.cases):
        try:
            model = network.case_model(case)
        except UnsupportedProperty as exc:
            return Verdict(UNKNOWN, stages=stages, reason=str(exc), seconds=time.perf_counter() - began)
        open_cases.append((index, case, model, {}))  # the dict: what the case's stages hand on
    undecided = []
    for stage in ("attack", "crown", "alpha_crown", "bab"):
        still = []
        for index, case, model, memo in open_cases:
            left = timeout - (time.perf_counter() - began)
            if left <= 0:
                return Verdict(
                    TIMEOUT, stages=stages, reason=f"the time limit ran out before {stage}", seconds=time.perf_counter() - began
                )
            start = time.perf_counter()
            outcome, point, details = _STAGES[stage](model, left, registry, seed, memo)
            record = {
                "stage": stage,
                "case": index,
                "seconds": round(time.perf_counter() - start, 3),
                "outcome": outcome,
                **details,
            }
            stages.append(record)
            if point is not None:
                reproduced = reproduce(network, case, point)
                record["reproduced"] = reproduced is not None
                if reproduced is not None:
                    return Verdict(SAT, reproduced, stages, seconds=time.perf_counter() - began)
                outcome = UNKNOWN
            if outcome == UNSAT:
                continue
            still.append((index, case, model, memo))
            if stage == "bab":
                undecided.append(outcome)
        open_cases = still
        if not open_cases:
            return Verdict(UNSAT, stages=stages, seconds=time.perf_counter() - began)
    result = TIMEOUT if TIMEOUT in undecided else UNKNOWN
    reason = "the time limit ran out in branch and bound" if result == TIMEOUT else "branch and bound ended undecided"
    return Verdict(result, stages=stages, reason=reason, seconds=time.perf_counter() - began)


def reproduce(network: Network, case: Case, point: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The counterexample ``(inputs, outputs)`` where ``point`` (an NHWC image of u in [0,
    1]) mapped back into the box violates the property under onnxruntime, else None."""
    u = np.clip(network.flat(np.asarray(point, np.float64)[None])[0], 0.0, 1.0)
    x = np.clip(case.lower + (case.upper - case.lower) * u, case.lower, case.upper).astype(np.float32)
    # float32 rounding may leave the box by an ulp: step back inside where it did
    x = np.where(x < case.lower, np.nextafter(x, np.float32(np.inf)), x)
    x = np.where(x > case.upper, np.nextafter(x, np.float32(-np.inf)), x)
    if not case.inside(x[None])[0]:
        return None
    y = network.run(x[None])[0]
    if not case.violated(y[None])[0]:
        return None
    return x, y


def _ball(model):
    shape = (1,) + tuple(model.input_shape[1:])
    return np.full(shape, 0.5, np.float32), np.zeros(1, np.int32), np.full(1, 0.5, np.float32)


def _target(model, memo):
    from advbench.kit.target import Target

    if "target" not in memo:  # one per case: the stages share its compiled functions
        memo["target"] = Target(model, num_classes=int(model.output.shape[-1]))
    return memo["target"]


def _bab_certifier(registry, memo):
    if "bab" not in memo:
        cls = registry.get("certifier", "bab")
        memo["bab"] = cls(cls.Params(max_domains=2**40, batch=BAB_BATCH))
        memo["bab"].intermediate_iterations = INTERMEDIATE_ITERATIONS
    return memo["bab"]


def _attack(model, left, registry, seed, memo):
    from advbench.kit.pgd import PGD, PGDParams

    x, y, eps = _ball(model)
    target = _target(model, memo)
    starts = np.repeat(x, ATTACK_STARTS, axis=0)
    attack = PGD(PGDParams(steps=ATTACK_STEPS, restarts=1, loss="cw"))
    points = attack.perturb(target, starts, np.repeat(y, ATTACK_STARTS), np.repeat(eps, ATTACK_STARTS), "linf", seed=seed)
    hit = np.flatnonzero(target.adversarial(points, np.repeat(y, ATTACK_STARTS)))
    if len(hit):
        return SAT, points[hit[0]], {}
    return UNKNOWN, None, {}


def _crown(model, left, registry, seed, memo):
    from advbench.kit.bounds import Crown, margin_matrix, read_graph

    x, y, eps = _ball(model)
    margins = keras.ops.convert_to_numpy(
        Crown(read_graph(model)).margins(x, margin_matrix(y, int(model.output.shape[-1])), eps, "linf")
    )
    return (UNSAT if np.all(margins > 0) else UNKNOWN), None, {"worst_margin": float(np.min(margins))}


def _clause_spec(clauses: int) -> np.ndarray:
    """One margin row per clause, ``z_0 - z_d`` (clauses, 1, clauses + 1)."""
    spec = np.zeros((clauses, 1, clauses + 1), np.float32)
    spec[:, 0, 0] = 1.0
    spec[np.arange(clauses), 0, np.arange(1, clauses + 1)] = -1.0
    return spec


def _alpha_crown(model, left, registry, seed, memo):
    """alpha-CROWN with optimized intermediate bounds, as branch and bound's root: the
    intermediate bounds are kept for the clauses' searches."""
    x, y, eps = _ball(model)
    clauses = int(model.output.shape[-1]) - 1
    spec = _clause_spec(clauses)[:, 0][None]  # every clause's margin, one example
    margins, lower, upper, alphas = _bab_certifier(registry, memo).root_bounds(_target(model, memo), x, spec, eps, "linf")
    memo["root"] = (lower, upper, alphas)
    return (UNSAT if np.all(margins > 0) else UNKNOWN), None, {"worst_margin": float(np.min(margins))}


def _bab(model, left, registry, seed, memo):
    """Branch and bound on each clause apart (one margin per problem, all in one batch, as
    the clauses are proved independently), every problem stopped at the time limit, all
    starting from the root's intermediate bounds."""
    from advbench.kit.bounds.bab import FALSIFIED, VERIFIED

    x, y, eps = _ball(model)
    clauses = int(model.output.shape[-1]) - 1
    bab = _bab_certifier(registry, memo)
    deadline = time.perf_counter() + left
    rows = np.zeros(clauses, np.int64)
    root = memo.get("root")
    if root is not None:  # clause d starts from the root's bounds and its row of the root's slopes
        alphas = np.transpose(root[2], (1, 0, 2))  # (clauses, 1, neurons)
        root = (root[0][rows], root[1][rows], alphas, np.zeros_like(alphas))
    status, domains, _, _, point = bab.decide(
        _target(model, memo),
        x[rows],
        y[rows],
        "linf",
        eps[rows],
        seed=seed,
        spec=_clause_spec(clauses),
        deadline=deadline,
        seconds_left=np.full(clauses, max(left, 1e-3)),
        root=root,
    )
    details = {"subdomains": int(domains.sum()), "clauses_proved": int(np.sum(status == VERIFIED))}
    if np.all(status == VERIFIED):
        return UNSAT, None, details
    if np.any(status == FALSIFIED):
        return SAT, point[int(np.flatnonzero(status == FALSIFIED)[0])], details
    return (TIMEOUT if time.perf_counter() >= deadline else UNKNOWN), None, details


_STAGES = {"attack": _attack, "crown": _crown, "alpha_crown": _alpha_crown, "bab": _bab}


def read_instance(onnx_path, vnnlib_path) -> tuple[Network, Property]:
    """The network and its property, the property's variables checked against the network."""
    network = Network.load(onnx_path)
    return network, read_vnnlib(vnnlib_path, network.inputs, network.outputs)


__all__ = ["Network", "Verdict", "VnnlibError", "read_instance", "reproduce", "verify", "SAT", "UNSAT", "TIMEOUT", "UNKNOWN"]
