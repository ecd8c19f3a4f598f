"""The markdown leaderboard: one ranked table per threat model, the per-method tables,
plots, and the provenance.

Rendered from :mod:`advbench.results.data` only, so a table can never disagree with the
records it comes from.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from advbench.core.checks import explain_flag, triggered
from advbench.results import formats
from advbench.results.data import Bounds, Results, load_results
from advbench.results.plots import examples_figure, plot
from advbench.results.table import COMPLETE_LEGEND, exact_text, format_eps, percent, ranked, table, undecided_text, with_interval
from advbench.runs.jobs import job_id
from advbench.text import markdown, markdown_code


def render_markdown(
    results: Results,
    rank_by: str = "certified",
    plots: dict[str, str] | None = None,
    figures: dict[str, str] | None = None,
    diagnostics: dict[str, dict] | None = None,
) -> str:
    spec = results.spec
    dataset = spec["dataset"]
    evaluated = {len(b.label) for b in results.bounds}
    lines = [
        f"# advbench leaderboard: {markdown(spec['name'])}",
        "",
        f"Dataset {markdown_code(dataset['name'])}"
        + (f" (train {dataset.get('train_size') or 'all'}, test {dataset.get('test_size') or 'all'})")
        + f", {', '.join(map(str, sorted(evaluated))) or 0} evaluated test examples, seed {spec['seed']}.",
        "",
        "For every model and budget ε, two bounds on the true robust accuracy: **cert** is the certified robust "
        "accuracy (a lower bound: no perturbation within ε changes these predictions), **emp** the empirical robust "
        "accuracy (an upper bound: the attacks found no adversarial example within ε); **clean** the accuracy on the "
        "same evaluated examples. Every accuracy is in % with the half-width of its 95% interval. The radii are "
        "medians over all evaluated examples (a misclassified one counts 0): the certified radius is the largest any "
        "certifier proved, the empirical radius the smallest adversarial perturbation any attack found, and the gap "
        "their per-example difference: what is not known yet. "
        f"Ranked by {rank_by} robust accuracy at the largest ε (ties: the other bound, then the next smaller ε); "
        "the notes under each table say how.",
        "",
    ]
    for threat in spec["threat_models"]:
        norm = threat["norm"]
        bounds = results.for_norm(norm)
        lines += [f"## {norm} threat model: ε ∈ {{{', '.join(format_eps(e) for e in threat['eps'])}}}", ""]
        if not bounds:
            lines += ["No results yet.", ""]
            continue
        shown = table(bounds, rank_by)
        header = shown.header
        lines.append("| " + " | ".join(markdown(cell) for cell in header) + " |")
        lines.append(
            "|" + "|".join(["---:" if i == 0 or i >= 3 and i < len(header) - 1 else "---" for i in range(len(header))]) + "|"
        )
        lines += ["| " + " | ".join(markdown(cell) for cell in row.cells) + " |" for row in shown.rows]
        lines += [""] + shown.notes + [""]
        lines += _per_method(bounds, rank_by, threat["eps"])
        lines += _complete(bounds, rank_by, threat["eps"])
        lines += _indicators(bounds, rank_by)
        lines += _sources(bounds, rank_by)
        ceiling = results.robustness_limit(threat["eps"])
        if ceiling is not None:
            lines += [
                "Fawzi et al.'s limit for this generator: no classifier can have a robust accuracy above "
                + ", ".join(f"{percent(float(c))}% at ε={format_eps(e)}" for e, c in zip(threat["eps"], ceiling))
                + ".",
                "",
            ]
        if plots and norm in plots:
            both, each = plots[norm]
            lines += [_image(f"{norm}: every model's robust accuracy against ε", both), ""]
            lines += [_image(f"{norm}: robust accuracy against ε, one panel per model", each), ""]
        if figures and norm in figures:
            lines += [_image(f"{norm}: smallest adversarial examples found", figures[norm]), ""]
        smoothed = [(b, label) for b in ranked(bounds, rank_by) for label in b.smoothed]
        if smoothed:
            lines += [
                "Randomized smoothing certifies the *smoothed* classifier g (a majority vote under Gaussian noise), "
                "not the model above, and holds with probability at least 1 − α; abstentions count as not certified.",
                "",
                "| model | certifier | smoothed clean | " + " | ".join(f"ε={format_eps(e)} cert" for e in threat["eps"]) + " |",
                "|---|---|---:|" + "---:|" * len(threat["eps"]),
            ]
            lines += [
                f"| {markdown(b.model)} | {markdown(label)} | "
                + " | ".join(
                    with_interval(b.smoothed_accuracy(label, e), b.smoothed_interval(label, e)) for e in [0, *threat["eps"]]
                )
                + " |"
                for b, label in smoothed
            ]
            lines += [
                "",
                "±: the 95% Clopper-Pearson interval over the evaluated examples (its larger side), as above; it does "
                "not include the smoothing certificate's own failure probability α.",
                "",
            ]
        details = []
        for b in ranked(bounds, rank_by):
            details += [f"- **ERROR** {markdown_code(b.model)}: {markdown(e)}" for e in b.errors]
            details += [f"- {markdown_code(b.model)}: {markdown(n)}" for n in b.notes]
        if details:
            lines += details + [""]
    if diagnostics:
        lines += [
            "## Defense diagnostics",
            "",
            "What each model's defense records about itself when it is evaluated (e.g. `prm`: the IoU between the top "
            "pixels by mean absolute input gradient and the pixels it designates).",
            "",
        ]
        for model, found in diagnostics.items():
            values = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in found["values"].items())
            lines.append(f"- {markdown_code(model)}: {markdown(values)}")
        lines.append("")
        images = [(model, name) for model, found in diagnostics.items() for name in found["figures"]]
        if images:
            lines += [
                "| " + " | ".join(markdown(model) for model, _ in images) + " |",
                "|" + "---|" * len(images),
                "| " + " | ".join(f"![{markdown(model)}]({name})" for model, name in images) + " |",
                "",
            ]
    if results.damaged:
        lines += [
            "## Damaged records",
            "",
            "These files of the run directory do not read back; their jobs are "
            "missing above and are redone by the next `advbench run` of the spec.",
            "",
        ]
        lines += [f"- {markdown_code(name)}: {markdown(problem)}" for name, problem in sorted(results.damaged.items())] + [""]
    lines += _cost(results)
    lines += _provenance(results)
    return "\n".join(lines) + "\n"


def _cost(results: Results) -> list[str]:
    """Per model, the seconds of its jobs by kind and the evaluations they counted; the run's total."""
    from advbench.results.data import cost_summary, costs

    found = {name: cost_summary(jobs) for name, jobs in costs(results).items() if jobs}
    if not found:
        return []
    lines = [
        "## Cost",
        "",
        "Seconds each model's jobs took where they ran (training; the clean job's predictions and checks; every "
        "attack, its radius search included; every certifier), and the model evaluations the attacks and "
        "certifiers counted (input gradients, forward passes). Per job in `advbench export --format json`.",
        "",
        "| model | training | clean | attacks | certifiers | total | gradient evaluations | forward evaluations |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in found.items():
        lines.append(
            f"| {markdown(name)} | {_seconds(c['training_seconds'])} | {_seconds(c['clean_seconds'])} | "
            f"{_seconds(c['attack_seconds'])} | {_seconds(c['certify_seconds'])} | {_seconds(c['total_seconds'])} | "
            f"{c['gradient_evaluations']:,} | {c['forward_evaluations']:,} |"
        )
    total = sum(c["total_seconds"] for c in found.values())
    lines += ["", f"The run: {_seconds(total)} of job time in all ({total / 60:.1f} min).", ""]
    return lines


_seconds = formats.seconds


def _per_method(bounds: list[Bounds], rank_by: str, eps_list: list[float]) -> list[str]:
    """Robust accuracy per attack (empirical) and per certifier (certified), at every eps."""
    attacks = sorted({label for b in bounds for label in b.empirical})
    certifiers = sorted({label for b in bounds for label in b.certified})
    if len(attacks) + len(certifiers) < 2:
        return []
    header = ["model"] + [f"{markdown(a)} (emp)" for a in attacks] + [f"{markdown(c)} (cert)" for c in certifiers]
    eps_text = " / ".join(format_eps(e) for e in eps_list)
    lines = [
        f"Per method, at ε = {eps_text} (%). The table above combines them per example: an example "
        "counts as broken if any attack broke it and as certified if any certifier certified it, so its "
        "empirical numbers can lie below every single attack's.",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    flagged = False
    for b in ranked(bounds, rank_by):
        cells = [markdown(b.model)]
        for a in attacks:
            if a not in b.empirical:
                cells.append("n/a")
                continue
            marked = " ⚑" if triggered(b.indicators.get(a, {})) else ""
            flagged |= bool(marked)
            cells.append(" / ".join(percent(b.empirical_accuracy(e, a)) for e in eps_list) + marked)
        cells += [
            "unsound"
            if c in b.unsound
            else " / ".join(percent(b.certified_accuracy(e, c)) for e in eps_list)
            if c in b.certified
            else "n/a"
            for c in certifiers
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if flagged:
        lines += ["", "⚑: an indicator of attack failure triggered on this evaluation (see below): its number may be too high."]
    return lines + [""]


def _complete(bounds: list[Bounds], rank_by: str, eps_list: list[float]) -> list[str]:
    """Per model and complete verifier (``bab``): the examples whose robust radius is known
    exactly, those still unknown at each eps, and what it cost."""
    rows = []
    for b in ranked(bounds, rank_by):
        for label in b.complete:
            c = b.complete_summary(label)
            rows.append(
                f"| {markdown(b.model)} | {markdown(label)} | {exact_text(c)} | "
                + " | ".join(map(str, c["unknown"]))
                + f" | {undecided_text(c)} | {c['subdomains']:,.0f} | {c['seconds']:.2f} |"
            )
    if not rows:
        return []
    eps_cells = " | ".join(f"unknown ε={format_eps(e)}" for e in eps_list)
    return [
        COMPLETE_LEGEND,
        "",
        f"| model | verifier | exact | {eps_cells} | undecided | subdomains (median) | s per example |",
        "|---|---|---:|" + "---:|" * len(eps_list) + "---:|---:|---:|",
        *rows,
        "",
    ]


def _indicators(bounds: list[Bounds], rank_by: str) -> list[str]:
    """The indicators of attack failure per model and attack, where any is triggered."""
    rows, names = [], []
    for b in ranked(bounds, rank_by):
        for label, found in b.indicators.items():
            shown = [name for name, share in found.items() if share]
            names += [name for name in shown if name not in names]
            if shown:
                text = ", ".join(f"{name.replace('_', ' ')} {percent(found[name])}%" for name in shown)
                rows.append(f"| {markdown(b.model)} | {markdown(label)} | {text} |")
    if not rows:
        return []
    meanings = [f"- {name.replace('_', ' ')}: {' '.join(explain_flag(name.replace('_', ' ')))}" for name in names]
    return [
        "Indicators of attack failure (Pintor et al. 2022), as shares of the correctly classified examples; each marks "
        "an evaluation to repeat with a stronger or better-suited attack:",
        "",
        *meanings,
        "",
        "| model | attack | triggered indicators |",
        "|---|---|---|",
        *rows,
        "",
    ]


def _sources(bounds: list[Bounds], rank_by: str) -> list[str]:
    """Which attack gave the empirical radius, as shares of the correctly classified examples."""
    shares = {b.model: b.source_shares() for b in ranked(bounds, rank_by) if b.empirical and b.correct.any()}
    if not shares:
        return []
    lines = [
        "Which attack found each example's smallest adversarial example (the empirical radius), "
        "as a share of the correctly classified examples (`ensemble: fab`: the ensemble's FAB member; "
        "per example in `advbench export`, column `empirical_by`):",
        "",
    ]
    for model, parts in shares.items():
        text = ", ".join(f"{markdown(name) or 'none found'} {percent(share)}%" for name, share in parts)
        lines.append(f"- {markdown_code(model)}: {text}")
    return lines + [""]


def _provenance(results: Results) -> list[str]:
    spec = results.spec
    records = [r for r in results.records.values() if r.get("status") == "ok"]
    spec_hashes = sorted({r["spec_hash"][:12] for r in records})
    versions = records[-1]["versions"] if records else {}
    lines = ["## Provenance", ""]
    lines.append(f"- spec {markdown_code(spec['name'])}, hash `{spec_hashes[-1] if spec_hashes else '?'}`, seed {spec['seed']}")
    lines.append(f"- evaluation: {markdown_code(_inline(spec['evaluation']))}")
    for model in spec["models"]:
        train = results.training.get(model["name"], {})
        described = _inline({k: v for k, v in model.items() if k != "name"})
        accuracy = (
            (
                f", accuracy on all {train.get('test_size', results.plan.get('data', {}).get('test', '?'))} test images "
                f"{percent(train['test_accuracy'])}% (the tables' clean: on the evaluated examples)"
            )
            if "test_accuracy" in train
            else ""
        )
        lines.append(f"- model {markdown_code(model['name'])}: {markdown_code(described)}{accuracy}")
    for kind in ("attacks", "certifiers"):
        for method in spec[kind]:
            lines.append(f"- {kind[:-1]} {markdown_code(method.get('label', method['name']))}: {markdown_code(_inline(method))}")
    attack_records = [r for r in records if r.get("kind") == "attack"]
    if attack_records:
        calls = sum(r["evaluations"]["gradient"] for r in attack_records)
        lines.append(
            f"- fixed-budget attacks: radius by per-example bisection over ε to relative tolerance "
            f"{spec['evaluation']['radius_tolerance']}; {calls:,} gradient evaluations in all"
        )
    plugins = results.plan.get("plugins", {})
    if plugins:
        by_code: dict[str, list[str]] = {}
        for name, fingerprint in plugins.items():
            by_code.setdefault(fingerprint, []).append(name.split(" (")[0])
        lines.append(
            "- code: " + "; ".join(f"{markdown_code(code)} ({markdown(', '.join(names))})" for code, names in by_code.items())
        )
    data = results.plan.get("data", {})
    if data:
        lines.append(
            f"- data: {data['train']} training and {data['test']} test images, {data['evaluated']} evaluated; "
            f"content fingerprint `{data['fingerprint']}`"
        )
    environments = sorted({(e["backend"], e["device"], e["precision"]) for e in (r.get("environment") for r in records) if e})
    if environments:
        lines.append("- computed with " + markdown("; ".join(f"Keras on {b} ({d}; {p})" for b, d, p in environments)))
    if versions:
        lines.append("- versions: " + markdown(", ".join(f"{k} {v}" for k, v in sorted(versions.items()))))
    lines.append(f"- generated {dt.date.today().isoformat()} by `advbench leaderboard`")
    return lines


def leaderboard_is_current(run_dir: str | Path, path: str | Path, rank_by: str) -> bool:
    """Whether the leaderboard at ``path`` was drawn from exactly the run's records as they
    are now (their content, not their file times), by this code and ranked by ``rank_by``:
    a rerun with nothing left to do need not draw it again."""
    path, run_dir = Path(path), Path(run_dir)
    if not path.is_file():
        return False
    try:
        last = path.read_text(encoding="utf-8").rstrip("\n").rsplit("\n", 1)[-1] + "\n"
    except (OSError, UnicodeDecodeError):
        return False
    return last == _drawn_by(rank_by, records_digest(run_dir))


def records_digest(run_dir: str | Path) -> str:
    """SHA-256 of what a leaderboard is drawn from: the plan and every job file (paths and
    contents), so a record saved while a leaderboard was drawn makes it stale whatever the
    file times say."""
    import hashlib

    run_dir = Path(run_dir)
    digest = hashlib.sha256()
    files = [run_dir / "plan.json", run_dir / "spec.json", *sorted(run_dir.joinpath("jobs").rglob("*"))]
    for file in files:
        if file.is_file() and not file.is_symlink():
            digest.update(file.relative_to(run_dir).as_posix().encode() + b"\0")
            try:
                digest.update(file.read_bytes())
            except OSError:
                digest.update(b"unreadable")
    return digest.hexdigest()[:16]


def _image(caption: str, name: str) -> str:
    """A figure in the page; a PDF (which markdown cannot show) as a link."""
    return f"[{caption} (PDF)]({name})" if name.endswith(".pdf") else f"![{caption}]({name})"


def _drawn_by(rank_by: str, records: str) -> str:
    """The leaderboard's last line, hidden in rendered markdown: the code that drew it, its
    ranking and the digest of the records it was drawn from, so a rerun redraws it when any
    of them changed."""
    from advbench.contract.plugins import host_fingerprint

    return f"<!-- drawn by {host_fingerprint()}, ranked by {rank_by}, from records {records} -->\n"


def write_leaderboard(
    run_dir: str | Path, output: str | Path | None = None, rank_by: str = "certified", figure_format: str = "png"
) -> tuple[Path, Results]:
    """Write the markdown leaderboard (default ``<run_dir>/leaderboard.md``) with its
    figures beside it (``figure_format``: png, pdf or svg): per threat model the models
    overlaid on one axis, one panel per model, and the smallest adversarial examples."""
    from advbench.runs.store import write_atomic

    records = records_digest(run_dir)  # before reading them: a record saved meanwhile makes the page stale
    results = load_results(run_dir)
    output = Path(output) if output else Path(run_dir) / "leaderboard.md"
    plots, figures = draw_figures(results, run_dir, output.parent, output.stem, rank_by, figure_format)
    diagnostics = _copy_diagnostics(results, Path(run_dir), output)
    text = render_markdown(results, rank_by, plots, figures, diagnostics)
    write_atomic(output, (text + ("" if text.endswith("\n") else "\n") + "\n" + _drawn_by(rank_by, records)).encode())
    return output, results


def draw_figures(
    results: Results, run_dir: str | Path, folder: Path, stem: str, rank_by: str, figure_format: str = "png"
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Per threat model with results, the overlay and the small multiples (``plots``: their
    file names) and the examples figure (``figures``), drawn into ``folder``."""
    from advbench.results.plots import FIGURE_FORMATS, overlay
    from advbench.runs.store import RunStore

    if figure_format not in FIGURE_FORMATS:
        raise ValueError(f"figure format: expected one of {', '.join(FIGURE_FORMATS)}, got {figure_format!r}")
    store = RunStore.open(run_dir)
    plots, figures = {}, {}
    for threat in results.spec["threat_models"]:
        norm = threat["norm"]
        if not _safe_name(norm):  # a damaged or planted spec.json: never a path from it
            results.damaged.setdefault("spec.json", f"threat_models: norm {str(norm)[:40]!r} is not a norm's name; not drawn")
            continue
        if results.for_norm(norm):
            names = [f"{stem}-{norm}-overlay.{figure_format}", f"{stem}-{norm}.{figure_format}"]
            overlay(results, norm, folder / names[0], rank_by)
            plot(results, norm, folder / names[1], rank_by)
            plots[norm] = names
            figure_name = f"{stem}-{norm}-examples.{figure_format}"
            if examples_figure(results, store, norm, folder / figure_name):
                figures[norm] = figure_name
    results.damaged.update(store.damaged)  # array files found damaged while drawing
    return plots, figures


def _copy_diagnostics(results: Results, run_dir: Path, output: Path) -> dict[str, dict]:
    """Per model, what its defense recorded in ``diagnostics`` (e.g. PRM's gradient IoU),
    with its figures copied beside the leaderboard (``<stem>-<figure>``)."""
    from advbench.runs.store import write_atomic

    found = {}
    for model in results.spec["models"]:
        record = results.records.get(job_id(model["name"], "clean")) or {}
        diagnostics = record.get("diagnostics") or {}
        if not isinstance(diagnostics, dict) or not diagnostics:
            continue
        figures = []
        for name in diagnostics.get("figures", []) if isinstance(diagnostics.get("figures"), list) else []:
            if not _safe_name(name):  # a planted record: its names never leave the run directory
                results.damaged.setdefault(
                    job_id(model["name"], "clean"), f"diagnostics.figures: {str(name)[:40]!r} is not a file name; not copied"
                )
                continue
            source = run_dir / "diagnostics" / name
            if source.is_file() and not source.is_symlink():
                target = output.parent / f"{output.stem}-{name}"
                if source.resolve() != target.resolve():
                    write_atomic(target, source.read_bytes())
                figures.append(target.name)
        found[model["name"]] = {"values": {k: v for k, v in diagnostics.items() if k != "figures"}, "figures": figures}
    return found


def _safe_name(name) -> bool:
    """A name read from disk that may become part of a file name: 1 to 64 letters, digits,
    `_`, `.` or `-`, starting with a letter or digit (no separator, no `..` of its own)."""
    import re

    from advbench.contract.components import NAME_PATTERN

    return isinstance(name, str) and re.fullmatch(NAME_PATTERN, name) is not None and ".." not in name


def _inline(data: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in data.items())
