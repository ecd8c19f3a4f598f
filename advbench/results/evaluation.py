"""What the Python API returns: one model's two bounds, per example and as accuracies,
under one or more threat models (:class:`Evaluation`)."""

from __future__ import annotations

import json

import numpy as np

from advbench.errors import AdvbenchError
from advbench.results.data import Bounds


class Evaluation:
    """A model's certified and empirical bounds under its threat models.

    Under one threat model (what :func:`advbench.evaluate` returns, or ``result["linf"]``):
    ``certified_radius`` and ``empirical_radius`` per example (NumPy arrays; 0 where the
    example is misclassified, the empirical radius ``inf`` where no attack broke it), the
    accuracies at any eps, and the flags the leaderboard shows.  With several threat
    models (a spec's), pick one by its norm."""

    def __init__(self, bounds: list[Bounds]):
        if not bounds:
            raise AdvbenchError("no results: the model has no finished clean job")
        self._bounds = {b.norm: b for b in bounds}
        self.model = bounds[0].model

    @property
    def norms(self) -> list[str]:
        """The threat models' norms."""
        return list(self._bounds)

    def __getitem__(self, norm: str) -> "Evaluation":
        if norm not in self._bounds:
            raise KeyError(f"no {norm!r} threat model (these results have {', '.join(self.norms)})")
        return Evaluation([self._bounds[norm]])

    @property
    def bounds(self) -> Bounds:
        """The bounds under the one threat model (:class:`advbench.results.data.Bounds`)."""
        if len(self._bounds) != 1:
            raise AdvbenchError(
                f"these results have threat models {', '.join(self.norms)}: pick one, e.g. result[{self.norms[0]!r}]"
            )
        return next(iter(self._bounds.values()))

    @property
    def norm(self) -> str:
        return self.bounds.norm

    @property
    def eps(self) -> list[float]:
        return list(self.bounds.eps)

    @property
    def certified_radius(self) -> np.ndarray:
        """Per example, the largest radius a sound certifier proved (0: none, or misclassified)."""
        return self.bounds.certified_radius

    @property
    def empirical_radius(self) -> np.ndarray:
        """Per example, the norm of the smallest adversarial example found (inf: none found; 0: misclassified)."""
        return self.bounds.empirical_radius

    @property
    def per_certifier(self) -> dict[str, np.ndarray]:
        """Each certifier's radii (unsound ones included; see :attr:`errors`)."""
        return dict(self.bounds.certified)

    @property
    def per_attack(self) -> dict[str, np.ndarray]:
        """Each attack's radii."""
        return dict(self.bounds.empirical)

    @property
    def predicted(self) -> np.ndarray:
        return self.bounds.predicted

    def clean_accuracy(self) -> float:
        return self.bounds.clean_accuracy()

    def certified_accuracy(self, eps: float, method: str | None = None) -> float | None:
        """The share of examples certified at ``eps`` (by any sound certifier, or ``method``); None without a certifier."""
        return self.bounds.certified_accuracy(float(eps), method)

    def empirical_accuracy(self, eps: float, method: str | None = None) -> float | None:
        """The share of examples no attack (or ``method``) broke within ``eps``; None without an attack."""
        return self.bounds.empirical_accuracy(float(eps), method)

    def interval(self, which: str, eps: float | None = None) -> tuple[float, float] | None:
        """The 95% Clopper-Pearson interval of the ``clean``, ``certified`` or ``empirical`` accuracy."""
        return self.bounds.interval(which, eps)

    @property
    def flags(self) -> list[str]:
        """What the leaderboard flags: gradient masking, randomness, near-chance accuracy, ..."""
        return [flag for b in self._bounds.values() for flag in b.flags]

    @property
    def errors(self) -> list[str]:
        """Failed methods and unsound certifiers (their radii are left out of the bounds)."""
        return [error for b in self._bounds.values() for error in b.errors]

    @property
    def notes(self) -> list[str]:
        return [note for b in self._bounds.values() for note in b.notes]

    def to_dict(self) -> dict:
        """Every number as plain data: per threat model, the accuracies at its budgets with
        their intervals, and the per-example radii (``"inf"`` where none was found)."""

        def radii(values) -> list:
            return ["inf" if np.isinf(v) else float(v) for v in np.asarray(values, dtype=np.float64)]

        norms = {}
        for norm, b in self._bounds.items():
            budgets = []
            for eps in b.eps:
                budgets.append(
                    {
                        "eps": eps,
                        **{kind: b.accuracy(kind, eps) for kind in ("certified", "empirical")},
                        **{f"{kind}_interval": b.interval(kind, eps) for kind in ("certified", "empirical")},
                    }
                )
            norms[norm] = {
                "eps": list(b.eps),
                "clean": b.clean_accuracy(),
                "clean_interval": b.interval("clean"),
                "budgets": budgets,
                "certified_radius": radii(b.certified_radius),
                "empirical_radius": radii(b.empirical_radius),
                "per_certifier": {k: radii(v) for k, v in b.certified.items()},
                "per_attack": {k: radii(v) for k, v in b.empirical.items()},
                "label": b.label.tolist(),
                "predicted": b.predicted.tolist(),
                "flags": list(b.flags),
                "errors": list(b.errors),
                "notes": list(b.notes),
                "unsound_certifiers": sorted(b.unsound),
            }
        return {"model": self.model, "threat_models": norms}

    def to_json(self, **dumps) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), **dumps)

    def __repr__(self) -> str:
        parts = []
        for norm, b in self._bounds.items():
            cells = []
            for eps in b.eps:
                certified, empirical = b.certified_accuracy(eps), b.empirical_accuracy(eps)
                cells.append(f"{eps:g}: {_pct(certified)}/{_pct(empirical)}")
            parts.append(f"{norm} cert/emp % {{{', '.join(cells)}}}")
        b = next(iter(self._bounds.values()))
        flags = f", {len(self.flags)} flag(s)" if self.flags else ""
        errors = f", {len(self.errors)} error(s)" if self.errors else ""
        return f"<Evaluation {self.model!r}: {len(b.label)} examples, clean {_pct(b.clean_accuracy())}%, {'; '.join(parts)}{flags}{errors}>"


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}"
