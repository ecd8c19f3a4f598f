"""``advbench export --format csv``: one row per (model, norm, test example) with every radius."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from advbench.results.data import Results, counterexample_label, load_results


def export_csv(run_dir: str | Path, output) -> tuple[int, Results]:
    """One row per (model, norm, example) into ``output`` (a path, or a text stream);
    returns the number of rows written and the results.

    Columns: the example (``index`` into the test set, ``label``, ``predicted``), the two
    bounds (``certified_radius``, ``empirical_radius`` and ``empirical_by``, the attack
    that found it), each certifier's (``cert:<label>``) and each attack's (``attack:<label>``)
    radius, and for randomized smoothing, which certifies the *smoothed* classifier and
    not the model, its radius and its prediction in columns of their own
    (``smoothed:<label>``, ``smoothed:<label>:prediction``, -1 where it abstains; they
    are not part of ``certified_radius``)."""
    results = load_results(run_dir)
    smoothed = sorted({label for b in results.bounds for label in b.smoothed})
    certifiers = [m.get("label", m["name"]) for m in results.spec["certifiers"]]
    certifiers = [c for c in certifiers if c not in smoothed]
    attacks = [m.get("label", m["name"]) for m in results.spec["attacks"]]
    # complete verifiers' counterexamples: among the empirical radii, in columns of their own
    attacks += [counterexample_label(c) for c in certifiers if any(c in b.complete for b in results.bounds)]
    header = ["model", "norm", "index", "label", "predicted", "certified_radius", "empirical_radius", "empirical_by"]
    header += [f"cert:{c}" for c in certifiers] + [f"attack:{a}" for a in attacks]
    header += [column for s in smoothed for column in (f"smoothed:{s}", f"smoothed:{s}:prediction")]
    if isinstance(output, (str, Path)):
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        with Path(output).open("w", newline="") as stream:
            return _write_rows(stream, results, header, certifiers, attacks, smoothed), results
    return _write_rows(output, results, header, certifiers, attacks, smoothed), results


def _write_rows(stream, results: Results, header, certifiers, attacks, smoothed) -> int:
    writer = csv.writer(stream)
    writer.writerow(header)
    rows = 0
    for b in results.bounds:
        certified, empirical, source = b.certified_radius, b.empirical_radius, b.empirical_source
        for i in range(len(b.label)):
            row = [
                b.model,
                b.norm,
                int(b.index[i]),
                int(b.label[i]),
                int(b.predicted[i]),
                _num(certified[i]),
                _num(empirical[i]),
                source[i],
            ]
            row += [_num(b.certified[c][i]) if c in b.certified else "" for c in certifiers]
            row += [_num(b.empirical[a][i]) if a in b.empirical else "" for a in attacks]
            for s in smoothed:
                row += [_num(b.smoothed[s][0][i]), int(b.smoothed[s][1][i])] if s in b.smoothed else ["", ""]
            writer.writerow(row)
            rows += 1
    return rows


def _num(value: float) -> str:
    return "inf" if np.isinf(value) else repr(float(value))
