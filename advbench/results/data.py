"""Results as data: job records merged per (model, threat model), with the two bounds
per example, robust accuracies, the soundness check, and the CSV export.

Everything the leaderboard shows is computed here from the records, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from advbench.contract.components import BUDGET_RTOL
from advbench.core.checks import attack_indicators, clean_flags, indicator_flags, masking_flags
from advbench.runs.jobs import job_id
from advbench.runs.store import RunStore
from advbench.text import short_message

VIOLATION_RTOL = 1e-4
"""A certified radius above an empirical one by more than this relative slack is a violation."""


@dataclass
class Bounds:
    """Both bounds for one model under one threat model."""

    model: str
    defense: str
    norm: str
    eps: list[float]
    index: np.ndarray
    label: np.ndarray
    predicted: np.ndarray
    certified: dict[str, np.ndarray] = field(default_factory=dict)  # certifier label -> radii
    empirical: dict[str, np.ndarray] = field(default_factory=dict)  # attack label -> radii
    probabilistic: set[str] = field(default_factory=set)  # certifiers whose radius holds with probability 1 - alpha
    smoothed: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # label -> (radii, predictions; -1 abstain)
    attack_records: dict[str, dict] = field(default_factory=dict)  # attack label -> its record
    certifier_records: dict[str, dict] = field(default_factory=dict)  # certifier label -> its record
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    unsound: set[str] = field(default_factory=set)  # certifiers shown wrong on this model: their radii are not used
    indicators: dict[str, dict[str, float | None]] = field(default_factory=dict)  # attack -> indicator -> share (kit.checks)
    pending: list[tuple[str, str]] = field(default_factory=list)  # (attack|certify, label) of jobs not finished yet

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.label

    @property
    def sound_certified(self) -> dict[str, np.ndarray]:
        """The certifiers' radii, without those of certifiers shown unsound on this model."""
        return {label: radius for label, radius in self.certified.items() if label not in self.unsound}

    @property
    def certified_radius(self) -> np.ndarray:
        """Per example, the best (largest) certified radius of the sound certifiers; 0 where
        nothing certified."""
        radii = [np.zeros(len(self.label))] + list(self.sound_certified.values())
        return np.max(radii, axis=0) * self.correct

    @property
    def empirical_radius(self) -> np.ndarray:
        """Per example, the best (smallest) attack radius; inf where nothing was found."""
        radii = [np.full(len(self.label), np.inf)] + list(self.empirical.values())
        return np.where(self.correct, np.min(radii, axis=0), 0.0)

    @property
    def empirical_source(self) -> np.ndarray:
        """Per example, which attack gave the empirical radius: its label, with the member of a
        composite attack that found it (``"ensemble: fab"``); ``""`` where nothing was found or
        the example is misclassified.  Ties go to the attack listed first in the spec."""
        source = np.full(len(self.label), "", dtype=object)
        if not self.empirical:
            return source
        labels = list(self.empirical)
        radii = np.stack([self.empirical[label] for label in labels])
        best = np.argmin(radii, axis=0)
        for i in np.flatnonzero(self.correct & np.isfinite(radii.min(axis=0))):
            label = labels[best[i]]
            members = self.attack_records.get(label, {}).get("found_by")
            member = members[i] if members and i < len(members) else None
            source[i] = f"{label}: {member}" if member else label
        return source

    def source_shares(self) -> list[tuple[str, float]]:
        """The share of the correctly classified examples whose empirical radius each source
        gave (largest first), ``""`` standing for no adversarial example found."""
        source = self.empirical_source[self.correct]
        names, counts = np.unique(source.astype(str), return_counts=True)
        order = np.argsort(-counts, kind="stable")
        return [(str(names[k]), counts[k] / len(source)) for k in order]

    def clean_accuracy(self) -> float:
        return float(np.mean(self.correct))

    def certified_accuracy(self, eps: float, method: str | None = None) -> float | None:
        """Certified robust accuracy at eps: of all sound certifiers, or of the one labelled
        ``method``; ``None`` when there is none (or ``method`` is unsound)."""
        if (method is None and not self.sound_certified) or method in self.unsound:
            return None
        radius = self.certified_radius if method is None else self.certified[method]
        return float(np.mean(self.correct & (radius >= eps)))

    def empirical_accuracy(self, eps: float, method: str | None = None) -> float | None:
        """Empirical robust accuracy at eps: against all attacks, or the one labelled ``method``."""
        if not self.empirical:
            return None
        return _accuracy(self.empirical_radius if method is None else self.empirical[method], self.correct, eps)

    def median_radius(self, which: str) -> float | None:
        radii = self.certified_radius if which == "certified" else self.empirical_radius
        present = self.sound_certified if which == "certified" else self.empirical
        return float(np.median(radii)) if present and len(radii) else None

    def smoothed_accuracy(self, label: str, eps: float) -> float:
        """Certified accuracy of the smoothed classifier at eps (eps = 0: its clean accuracy; abstentions count as wrong)."""
        radius, prediction = self.smoothed[label]
        correct = prediction == self.label
        return float(np.mean(correct & (radius >= eps))) if eps > 0 else float(np.mean(correct))

    def median_gap(self) -> float | None:
        """Median of empirical minus certified radius over the same examples as the radii's
        medians (every evaluated example; 0 for a misclassified one), so it never exceeds
        the median empirical radius."""
        if not (self.sound_certified and self.empirical) or not len(self.label):
            return None
        return float(np.median(self.empirical_radius - self.certified_radius))

    def accuracy(self, which: str, eps: float | None = None) -> float | None:
        """``clean``, ``certified`` or ``empirical`` accuracy (the latter two at ``eps``)."""
        if which == "clean":
            return self.clean_accuracy()
        return self.certified_accuracy(eps) if which == "certified" else self.empirical_accuracy(eps)

    def interval(self, which: str, eps: float | None = None) -> tuple[float, float] | None:
        """The 95% Clopper-Pearson interval of :meth:`accuracy` over the evaluated examples
        (:mod:`advbench.results.statistics`), or ``None`` where there is no such accuracy."""
        return self._interval(self.accuracy(which, eps))

    def smoothed_interval(self, label: str, eps: float) -> tuple[float, float] | None:
        """The 95% Clopper-Pearson interval of :meth:`smoothed_accuracy` over the evaluated examples."""
        return self._interval(self.smoothed_accuracy(label, eps))

    def _interval(self, value: float | None) -> tuple[float, float] | None:
        from advbench.results.statistics import clopper_pearson

        if value is None or not len(self.label):
            return None
        lower, upper = clopper_pearson(round(value * len(self.label)), len(self.label))
        return float(lower), float(upper)

    @property
    def complete(self) -> list[str]:
        """The sound certifiers that also search for counterexamples (complete verifiers
        such as ``bab``: their record's ``details`` has ``counterexample``)."""
        return [
            label
            for label, record in self.certifier_records.items()
            if label not in self.unsound and "counterexample" in record.get("details", {})
        ]

    def settled(self, label: str) -> np.ndarray:
        """Per example, whether its exact robust radius is known: correctly classified, and
        certifier ``label``'s radius within its bisection tolerance of the smallest
        adversarial perturbation found (by an attack or a complete verifier)."""
        tolerance = self.certifier_records[label].get("tolerance") or 0.0
        return self.correct & (self.empirical_radius <= self.certified[label] * (1 + tolerance) * (1 + 1e-9))

    def unknown(self, label: str, eps: float) -> int:
        """Correctly classified examples neither certified by ``label`` nor broken at ``eps``."""
        broken = self.empirical_radius <= eps * (1 + BUDGET_RTOL)
        return int(np.sum(self.correct & (self.certified[label] < eps) & ~broken))

    def complete_summary(self, label: str) -> dict:
        """What complete verifier ``label`` settled: ``exact`` of the ``correct`` examples
        (:meth:`settled`), ``unknown`` per eps of :attr:`eps`, ``undecided`` (examples where
        some step of its radius search ended undecided; ``timed_out``: of them, those whose
        time budget ran out, so their radius depends on the machine), ``capped`` (verified
        at its ``max_radius``, their radius not searched beyond), the median ``subdomains`` per
        correctly classified example and the mean ``seconds`` per example."""
        details = self.certifier_records[label]["details"]
        correct = self.correct

        def column(name, dtype):
            values = details.get(name)
            return (
                np.asarray(values, dtype) if values is not None and len(values) == len(correct) else np.zeros(len(correct), dtype)
            )

        return {
            "exact": int(self.settled(label).sum()),
            "correct": int(correct.sum()),
            "unknown": [self.unknown(label, e) for e in self.eps],
            "undecided": int(np.sum(column("undecided", bool) & correct)),
            "timed_out": int(np.sum(column("timed_out", bool) & correct)),
            "capped": int(np.sum(column("capped", bool) & correct)),
            "subdomains": float(np.median(column("subdomains", float)[correct])) if correct.any() else 0.0,
            "seconds": float(np.mean(column("seconds", float))) if len(correct) else 0.0,
        }

    def violations(self) -> list[tuple[str, str, int]]:
        """(certifier, attack, examples) where a certified radius exceeds an empirical one."""
        found = []
        for certifier, r_cert in self.certified.items():
            for attack, r_emp in self.empirical.items():
                bad = self.correct & (r_cert > r_emp * (1 + VIOLATION_RTOL) + 1e-9)
                if bad.any():
                    found.append((certifier, attack, int(bad.sum())))
        return found


@dataclass
class Results:
    spec: dict
    records: dict[str, dict]
    bounds: list[Bounds]
    training: dict[str, dict]
    limit: dict | None = None  # Fawzi et al.'s parameters when the dataset's generator is known
    damaged: dict[str, str] = field(default_factory=dict)  # run-directory files that do not read back, and why
    plan: dict = field(default_factory=dict)  # plan.json: job keys, plugins used, data fingerprint

    def robustness_limit(self, eps):
        """The highest robust accuracy any classifier can reach at eps, or ``None`` if unknown."""
        if not self.limit:
            return None
        return fawzi_limit(eps, self.limit["lipschitz"], self.limit["class_masses"])

    def for_norm(self, norm: str) -> list[Bounds]:
        return [b for b in self.bounds if b.norm == norm]


def load_results(run_dir: str | Path) -> Results:
    """Merge the records of a run directory that belong to its current plan."""
    store = RunStore.open(run_dir)
    spec = store.spec()
    plan_record = store.plan()
    plan = plan_record["jobs"]
    records = {}
    for planned, key in plan.items():
        record = store.job_record(planned, key)
        if record is not None:
            records[planned] = record
    bounds = []
    training = {}
    limit = None
    for model in spec["models"]:
        name = model["name"]
        defense = (
            model["defense"]["name"] if isinstance(model["defense"], dict) else "+".join(d["name"] for d in model["defense"])
        )
        training[name] = records.get(job_id(name, "train"), {})
        clean = records.get(job_id(name, "clean"))
        if clean and clean.get("dataset", {}).get("fawzi"):
            limit = clean["dataset"]["fawzi"]
        if clean is None or clean.get("status") != "ok":
            continue
        for threat in spec["threat_models"]:
            norm = threat["norm"]
            methods = [
                (kind, label, records.get(job_id(name, kind, norm, label)))
                for kind, section in (("attack", "attacks"), ("certify", "certifiers"))
                for label in (method.get("label", method["name"]) for method in spec[section])
            ]
            bounds.append(model_bounds(name, defense, norm, threat["eps"], clean, methods))
            bounds[-1].pending = [(kind, label) for kind, label, record in methods if record is None]
    results = Results(
        spec=spec, records=records, bounds=bounds, training=training, limit=limit, damaged=dict(store.damaged), plan=plan_record
    )
    for b in bounds:
        for eps in b.eps:
            ceiling = results.robustness_limit(eps)
            for certifier in sorted(b.sound_certified) if ceiling is not None else []:
                certified = b.certified_accuracy(eps, certifier)
                if certified > ceiling + 1e-9:
                    b.unsound.add(certifier)
                    b.errors.append(
                        f"{certifier}: certified accuracy {100 * certified:.1f}% at ε={eps:g} exceeds the Fawzi limit "
                        f"{100 * float(ceiling):.1f}%, so {certifier} is unsound on this model; its radii are not used"
                    )
    return results


def model_bounds(
    model: str, defense: str, norm: str, eps: list[float], clean: dict, methods: list[tuple[str, str, dict | None]]
) -> Bounds:
    """One model's bounds under one threat model from its clean record and its methods'
    records (``(kind, label, record)``, ``record`` None where the job has not run), with
    the flags, notes and errors they show, and certifiers shown unsound set aside."""
    b = Bounds(
        model=model,
        defense=defense,
        norm=norm,
        eps=eps,
        index=np.asarray(clean["index"]),
        label=np.asarray(clean["label"]),
        predicted=np.asarray(clean["predicted"]),
    )
    b.flags.extend(clean_flags(b, clean))
    for kind, label, record in methods:
        target = b.empirical if kind == "attack" else b.certified
        if record is None:
            b.notes.append(f"{label}: not run yet")
        elif record["status"] == "ok" and record.get("certifies_smoothed"):
            # certifies a smoothed classifier, not this model: kept apart
            prediction = np.asarray(record.get("details", {}).get("prediction", [-1] * len(b.label)))
            b.smoothed[label] = (np.asarray(record["radius"], dtype=np.float64), prediction)
        elif record["status"] == "ok":
            target[label] = np.asarray(record["radius"], dtype=np.float64)
            if record.get("probabilistic"):
                b.probabilistic.add(label)
            (b.attack_records if kind == "attack" else b.certifier_records)[label] = record
            if kind == "certify" and "counterexample" in record.get("details", {}):
                # a complete verifier's counterexamples (checked as attacks' are) bound the radius from above too
                b.empirical[counterexample_label(label)] = counterexamples(record)
        elif record["status"] == "error":
            where = f" (in full: jobs/{record['id']}.json)" if "id" in record else ""
            b.errors.append(f"{label} failed: {short_message(record['message'])}{where}")
        else:
            b.notes.append(f"{label}: {record['message']}")
    b.flags.extend(masking_flags(b, clean))
    b.indicators = attack_indicators(b, clean)
    b.flags.extend(indicator_flags(b.indicators))
    for certifier, attack, count in b.violations():
        # the attack's example was checked to be misclassified: the certificate is wrong
        b.unsound.add(certifier)
        b.errors.append(
            f"certified > empirical on {count} example(s): {certifier} certifies a radius larger than the "
            f"adversarial example {attack} found, so {certifier} is unsound on this model; its radii are not used"
        )
    return b


def counterexample_label(certifier: str) -> str:
    """How a complete verifier's counterexamples appear among the empirical radii."""
    return f"{certifier} counterexamples"


def counterexamples(record: dict) -> np.ndarray:
    """A complete verifier's record: per example, its smallest verified counterexample's
    distance (inf where it found none)."""
    return np.array([np.inf if d is None else d for d in record["details"]["counterexample"]], dtype=np.float64)


def _accuracy(radius: np.ndarray, correct: np.ndarray, eps: float) -> float:
    return float(np.mean(correct & (radius > eps * (1 + BUDGET_RTOL))))


def fawzi_limit(eps, lipschitz: float, class_masses: list[float]):
    """Fawzi et al. (2018): the largest robust accuracy any classifier can have at ``eps``
    on data from an L-Lipschitz generator of a Gaussian latent with these class masses:
    ``1 - sum_i [Phi(a_i + eps / L) - Phi(a_i)]``, ``a_i = Phi^{-1}(1 - mass_i)``."""
    from scipy.stats import norm

    eps = np.asarray(eps, dtype=np.float64)
    a = norm.ppf(1 - np.asarray(class_masses))
    flat = eps.reshape(-1, 1)
    vulnerable = np.sum(norm.cdf(a[None, :] + flat / lipschitz) - norm.cdf(a[None, :]), axis=1)
    return np.clip(1 - vulnerable, 0.0, 1.0).reshape(eps.shape)


@dataclass
class JobCost:
    """What one job spent: seconds, and the model evaluations it counted (None where it
    counts none: training)."""

    job: str
    kind: str
    seconds: float
    forward: int | None = None
    gradient: int | None = None


def costs(results: Results) -> dict[str, list[JobCost]]:
    """Per model, the cost of each of its jobs (from their records), in the plan's order."""
    found: dict[str, list[JobCost]] = {model["name"]: [] for model in results.spec["models"]}
    for job, record in results.records.items():
        model = record.get("model")
        if model not in found or not isinstance(record.get("seconds"), (int, float)):
            continue
        evaluations = record.get("evaluations") or {}
        found[model].append(
            JobCost(
                job, record.get("kind", "?"), float(record["seconds"]), evaluations.get("forward"), evaluations.get("gradient")
            )
        )
    return found


def cost_summary(jobs: list[JobCost]) -> dict[str, float | int]:
    """A model's seconds by job kind and in all, and its counted evaluations."""
    seconds = {kind: sum(j.seconds for j in jobs if j.kind == kind) for kind in ("train", "clean", "attack", "certify")}
    return {
        "training_seconds": seconds["train"],
        "clean_seconds": seconds["clean"],
        "attack_seconds": seconds["attack"],
        "certify_seconds": seconds["certify"],
        "total_seconds": sum(seconds.values()),
        "gradient_evaluations": sum(j.gradient or 0 for j in jobs),
        "forward_evaluations": sum(j.forward or 0 for j in jobs),
    }
