"""The leaderboard as one JSON document (``advbench export RUN --format json``), for
websites and papers' tables, and its JSON Schema (``schemas/leaderboard.schema.json``,
written from the models below; ``advbench schema --leaderboard`` prints it).

Every number of the markdown leaderboard is here as a number: accuracies as fractions
in [0, 1] with both ends of their 95% Clopper-Pearson interval, radii in the threat
model's norm (``"inf"`` where no adversarial example was found, ``null`` where there is no
such number), ranks with their rank range, and every flag, error and note.
"""

from __future__ import annotations

import math
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from advbench.results.data import Results
from advbench.results.statistics import CONFIDENCE

FORMAT = "advbench-leaderboard/5"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Accuracy(_Model):
    value: float = Field(ge=0, le=1, description="The share of the evaluated examples.")
    lower: float = Field(ge=0, le=1, description="Lower end of the 95% Clopper-Pearson interval.")
    upper: float = Field(ge=0, le=1, description="Upper end of the 95% Clopper-Pearson interval.")


Radius = Optional[Union[float, Literal["inf"]]]


class Budget(_Model):
    eps: float = Field(gt=0)
    eps_text: str = Field(description="The budget as the leaderboard writes it (8/255, 0.1).")
    certified: Optional[Accuracy] = Field(description="Certified robust accuracy (lower bound); null: no certifier applies.")
    empirical: Optional[Accuracy] = Field(description="Empirical robust accuracy (upper bound); null: no attack ran.")
    per_attack: dict[str, Optional[float]] = Field(description="Empirical robust accuracy of each attack alone.")
    per_certifier: dict[str, Optional[float]] = Field(description="Certified accuracy of each sound certifier alone.")
    smoothed: dict[str, Accuracy] = Field(
        description="Certified accuracy of the smoothed classifier, per smoothing certifier "
        "(the interval is over the evaluated examples; the certificate's own failure "
        "probability alpha is not in it)."
    )


class CompleteVerification(_Model):
    exact: int = Field(
        description="Correctly classified examples whose robust radius is known (certified within the tolerance of an adversarial example)."
    )
    correct: int = Field(description="Correctly classified examples.")
    unknown: list[int] = Field(
        description="Per budget of the threat model: correctly classified examples neither certified nor broken."
    )
    undecided: int = Field(description="Examples where some step of the radius search ended undecided (a budget ran out).")
    timed_out: int = Field(0, description="Of them, those whose time budget ran out (their radius depends on the machine).")
    capped: int = Field(
        0, description="Correctly classified examples verified at the verifier's max_radius, not searched beyond."
    )
    subdomains: float = Field(description="Median subdomains bounded per correctly classified example.")
    seconds: float = Field(description="Mean seconds per example.")


class Entry(_Model):
    model: str
    defense: str
    rank: Optional[int] = Field(description="Position in the ranking; null: not ranked (an error, or no ranking accuracy).")
    rank_range: Optional[tuple[int, int]] = Field(description="Best and worst rank the 95% intervals allow (a tie group).")
    clean: Accuracy = Field(description="Accuracy on the evaluated examples.")
    budgets: list[Budget]
    median_radius_certified: Radius = Field(description="Median over all evaluated examples (misclassified: 0).")
    median_radius_empirical: Radius = Field(description="Median over all evaluated examples (misclassified: 0).")
    median_gap: Radius = Field(description="Median of the per-example empirical minus certified radius.")
    empirical_sources: dict[str, float] = Field(
        description="Share of the correctly classified examples whose empirical radius each attack gave ('' : none found)."
    )
    flags: list[str]
    indicators: dict[str, dict[str, Optional[float]]] = Field(
        description="Per attack, Pintor et al.'s (2022) indicators of attack failure (silent_success, "
        "incomplete_optimization, transfer_failure, unconstrained_failure, unavailable_gradients, "
        "unstable_predictions): the share of the correctly classified examples each affects; null where it does not "
        "apply to the attack (advbench.core.checks.INDICATORS says how each is measured)."
    )
    complete: dict[str, CompleteVerification] = Field(
        default_factory=dict, description="Per complete verifier (bab), what it settled (empty without one)."
    )
    errors: list[str]
    notes: list[str]
    unsound_certifiers: list[str]


class ThreatModelTable(_Model):
    norm: str
    eps: list[float]
    ranked_by: Literal["certified", "empirical", "clean"]
    decided_at: Optional[float] = Field(description="The eps the ranking was decided at (the largest where models differ).")
    entries: list[Entry]
    table_notes: list[str]


class JobCostEntry(_Model):
    job: str = Field(description="The job's id (its record is jobs/<id>.json).")
    kind: Literal["train", "clean", "attack", "certify"]
    seconds: float = Field(ge=0, description="Wall time of the job on the machine that ran it.")
    forward: Optional[int] = Field(description="Forward evaluations of the model it counted (null: not counted).")
    gradient: Optional[int] = Field(description="Input-gradient evaluations it counted (null: not counted).")


class ModelCost(_Model):
    training_seconds: float
    clean_seconds: float
    attack_seconds: float
    certify_seconds: float
    total_seconds: float
    gradient_evaluations: int
    forward_evaluations: int
    jobs: list[JobCostEntry]


class Cost(_Model):
    models: dict[str, ModelCost] = Field(description="Per model, the seconds of its jobs by kind and in all, and each job's.")
    total_seconds: float = Field(description="The seconds of every job of the run (on one machine, one job after another).")


class Leaderboard(_Model):
    format: Literal["advbench-leaderboard/5"] = FORMAT
    name: str
    dataset: dict
    seed: int
    evaluated_examples: int
    confidence: float = Field(description="Confidence level of every interval.")
    interval: Literal["clopper-pearson"] = "clopper-pearson"
    threat_models: list[ThreatModelTable]
    spec: dict = Field(description="The resolved spec the run computed.")
    provenance: dict = Field(description="Job keys' plugins and code, data fingerprint, backends and versions.")
    cost: Cost = Field(description="What each model's jobs spent (seconds, counted evaluations), and the run in all.")


def _accuracy(value: float | None, interval: tuple[float, float] | None) -> Accuracy | None:
    return None if value is None or interval is None else Accuracy(value=value, lower=interval[0], upper=interval[1])


def _radius(value: float | None):
    return None if value is None else "inf" if math.isinf(value) else value


def leaderboard_document(results: Results, rank_by: str = "certified") -> dict:
    """Everything the leaderboard shows, as plain JSON data (validated against :class:`Leaderboard`)."""
    from advbench.results.table import deciding_eps, format_eps, table

    tables = []
    for threat in results.spec["threat_models"]:
        bounds = results.for_norm(threat["norm"])
        shown = table(bounds, rank_by) if bounds else None
        entries = []
        for row in shown.rows if shown else []:
            b = row.bounds
            entries.append(
                Entry(
                    model=b.model,
                    defense=b.defense,
                    rank=row.rank if row.rank_range else None,
                    rank_range=row.rank_range,
                    clean=_accuracy(b.accuracy("clean"), b.interval("clean")),
                    budgets=[
                        Budget(
                            eps=e,
                            eps_text=format_eps(e),
                            certified=_accuracy(b.accuracy("certified", e), b.interval("certified", e)),
                            empirical=_accuracy(b.accuracy("empirical", e), b.interval("empirical", e)),
                            per_attack={a: b.empirical_accuracy(e, a) for a in b.empirical},
                            per_certifier={c: b.certified_accuracy(e, c) for c in b.sound_certified},
                            smoothed={s: _accuracy(b.smoothed_accuracy(s, e), b.smoothed_interval(s, e)) for s in b.smoothed},
                        )
                        for e in b.eps
                    ],
                    median_radius_certified=_radius(b.median_radius("certified")),
                    median_radius_empirical=_radius(b.median_radius("empirical")),
                    median_gap=_radius(b.median_gap()),
                    empirical_sources=dict(b.source_shares()) if b.empirical and b.correct.any() else {},
                    flags=list(b.flags),
                    indicators=b.indicators,
                    complete={label: b.complete_summary(label) for label in b.complete},
                    errors=list(b.errors),
                    notes=list(b.notes),
                    unsound_certifiers=sorted(b.unsound),
                )
            )
        tables.append(
            ThreatModelTable(
                norm=threat["norm"],
                eps=threat["eps"],
                ranked_by=rank_by,
                decided_at=deciding_eps(bounds, rank_by) if bounds else None,
                entries=entries,
                table_notes=shown.notes if shown else [],
            )
        )
    evaluated = max((len(b.label) for b in results.bounds), default=0)
    records = [r for r in results.records.values() if r.get("status") == "ok"]
    provenance = {
        "plugins": results.plan.get("plugins", {}),
        "data": results.plan.get("data", {}),
        "environments": sorted({tuple(r["environment"].values()) for r in records if r.get("environment")}),
        "versions": records[-1].get("versions", {}) if records else {},
        "spec_hash": results.plan.get("spec_hash"),
    }
    document = Leaderboard(
        name=results.spec["name"],
        dataset=results.spec["dataset"],
        seed=results.spec["seed"],
        evaluated_examples=evaluated,
        confidence=CONFIDENCE,
        threat_models=tables,
        spec=results.spec,
        provenance=provenance,
        cost=_cost(results),
    )
    return document.model_dump(mode="json")


def _cost(results: Results) -> Cost:
    from dataclasses import asdict

    from advbench.results.data import cost_summary, costs

    models = {
        name: ModelCost(**cost_summary(jobs), jobs=[JobCostEntry(**asdict(j)) for j in jobs])
        for name, jobs in costs(results).items()
    }
    return Cost(models=models, total_seconds=sum(m.total_seconds for m in models.values()))


def leaderboard_schema() -> dict:
    """The JSON Schema of :func:`leaderboard_document`'s output."""
    schema = Leaderboard.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
