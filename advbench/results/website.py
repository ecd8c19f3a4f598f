"""The static leaderboard site (``advbench leaderboard RUN... --format html -o DIR``): per
run a page with the ranked table of each threat model (sortable by any column, 95%
intervals shown and in each cell's tooltip, flags explained in a legend), the figures, the
cost and the provenance, and a page per model (its card: defense, training, every attack's
and certifier's numbers, the indicators, cost, flags).  Several runs: an index with a page
per run.

Rendered from the JSON export (:func:`advbench.results.json.leaderboard_document`), so
the site, the export and the markdown agree.  No server, no network: one self-contained
folder of HTML (its styles and the sorting script inline) and images, opened from disk.
Every string is escaped (a plugin's name or error cannot leave markup in the page) and no
data is placed inside the script.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

from advbench.core.checks import explain_flag
from advbench.results import formats
from advbench.results.data import Results, load_results
from advbench.results.table import COMPLETE_LEGEND, exact_text, format_eps, rank_text, shown_flags, undecided_text
from advbench.runs.store import write_atomic

SITE_FORMATS = ("png", "svg")
"""Figure formats a browser shows inline (``pdf`` is for the markdown's and papers' figures)."""


def write_site(run_dirs: list[str | Path], out: str | Path, rank_by: str = "certified", figure_format: str = "png") -> Path:
    """Write the site for ``run_dirs`` into ``out``: with one run, ``out/index.html`` is its
    page; with several, an index linking ``out/<run>/index.html``.  Returns the index."""
    if figure_format not in SITE_FORMATS:
        raise ValueError(f"figure format for a site: expected one of {', '.join(SITE_FORMATS)}, got {figure_format!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = [(Path(d), load_results(d)) for d in run_dirs]
    if len(loaded) == 1:
        run_dir, results = loaded[0]
        _write_run(run_dir, results, out, rank_by, figure_format, home=None)
        return out / "index.html"
    folders = _unique([results.spec["name"] for _, results in loaded])
    summaries = []
    for (run_dir, results), folder in zip(loaded, folders):
        document = _write_run(run_dir, results, out / folder, rank_by, figure_format, home="../index.html")
        summaries.append((folder, document))
    _write(out / "index.html", _index_page(summaries))
    return out / "index.html"


# -- one run ------------------------------------------------------------------------


def _write_run(run_dir: Path, results: Results, folder: Path, rank_by: str, figure_format: str, home: str | None) -> dict:
    from advbench.results.json import leaderboard_document
    from advbench.results.markdown import draw_figures

    folder.mkdir(parents=True, exist_ok=True)
    document = leaderboard_document(results, rank_by)
    plots, figures = draw_figures(results, run_dir, folder, "figure", rank_by, figure_format)
    models = [m["name"] for m in results.spec["models"]]
    pages = dict(zip(models, _unique(models)))
    _write(folder / "index.html", _run_page(document, results, plots, figures, pages, home))
    (folder / "models").mkdir(exist_ok=True)
    for model in models:
        _write(folder / "models" / f"{pages[model]}.html", _model_page(document, results, model))
    return document


def _run_page(document: dict, results: Results, plots: dict, figures: dict, pages: dict, home: str | None) -> str:
    dataset = document["dataset"]
    body = []
    if home:
        body.append(f'<p class="crumbs"><a href="{_e(home)}">all runs</a></p>')
    body += [
        f"<h1>advbench leaderboard: {_e(document['name'])}</h1>",
        f"<p>Dataset <code>{_e(dataset.get('name'))}</code> (train {_e(dataset.get('train_size') or 'all')}, "
        f"test {_e(dataset.get('test_size') or 'all')}), {document['evaluated_examples']} evaluated test examples, "
        f"seed {document['seed']}.</p>",
        "<p>For every model and budget ε two bounds on the true robust accuracy: <b>cert</b>, the certified robust "
        "accuracy (a lower bound: no perturbation within ε changes these predictions) and <b>emp</b>, the empirical "
        "robust accuracy (an upper bound: the attacks found no adversarial example within ε). Accuracies in % with the "
        "half-width of their 95% Clopper-Pearson interval (both ends in each cell's tooltip). Click a column's "
        "heading to sort by it.</p>",
    ]
    flags_seen: dict[str, list[str]] = {}
    for threat in document["threat_models"]:
        norm = threat["norm"]
        body.append(f'<h2 id="{_e(norm)}">{_e(norm)} threat model: ε ∈ {{{", ".join(_eps(e) for e in threat["eps"])}}}</h2>')
        if not threat["entries"]:
            body.append("<p>No results yet.</p>")
            continue
        body.append(_ranked_table(threat, pages, flags_seen))
        body += [f'<p class="note">{_e(n)}</p>' for n in threat["table_notes"]]
        for name, caption in (
            (plots.get(norm, [None, None])[0], "every model's robust accuracy against ε (solid: certified, dashed: empirical)"),
            (plots.get(norm, [None, None])[1], "one panel per model, the band between the bounds shaded"),
            (figures.get(norm), "the smallest adversarial example found per model"),
        ):
            if name:
                body.append(
                    f'<figure><img src="{_e(name)}" alt="{_e(norm)}: {_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'
                )
        details = [(e["model"], "ERROR", x) for e in threat["entries"] for x in e["errors"]]
        details += [(e["model"], "note", x) for e in threat["entries"] for x in e["notes"]]
        if details:
            body.append(
                "<ul>" + "".join(f"<li><b>{_e(kind)}</b> <code>{_e(m)}</code>: {_e(x)}</li>" for m, kind, x in details) + "</ul>"
            )
    if flags_seen:
        body.append('<h2 id="flags">Flags</h2><dl class="legend">')
        for flag, meanings in flags_seen.items():
            body.append(f"<dt>⚑ {_e(flag)}</dt>" + "".join(f"<dd>{_e(m)}</dd>" for m in meanings))
        body.append("</dl>")
    body.append(_cost_table(document, pages))
    body.append(_provenance(document))
    return _page(f"advbench: {document['name']}", "\n".join(body), script=True)


def _ranked_table(threat: dict, pages: dict, flags_seen: dict) -> str:
    eps_list = threat["eps"]
    head = [("#", "number"), ("model", "text"), ("defense", "text"), ("clean", "number")]
    for e in eps_list:
        head += [(f"ε={format_eps(e)} cert", "number"), (f"ε={format_eps(e)} emp", "number")]
    head += [("median r cert", "number"), ("median r emp", "number"), ("median gap", "number"), ("flags", "text")]
    rows = []
    for entry in threat["entries"]:
        cells = [
            _cell(rank_text(entry["rank_range"]), math.inf if entry["rank"] is None else entry["rank"]),
            _cell(f'<a href="models/{_e(pages[entry["model"]])}.html">{_e(entry["model"])}</a>', entry["model"], raw=True),
            _cell(entry["defense"], entry["defense"]),
            _accuracy_cell(entry["clean"]),
        ]
        for budget in entry["budgets"]:
            cells += [_accuracy_cell(budget["certified"]), _accuracy_cell(budget["empirical"])]
        cells += [_radius_cell(entry[k]) for k in ("median_radius_certified", "median_radius_empirical", "median_gap")]
        flags = shown_flags(entry["flags"], entry["errors"])
        for flag in flags:
            flags_seen.setdefault(flag, explain_flag(flag))
        flag_html = "<br>".join(f'<span class="flag" title="{_e(" ".join(explain_flag(f)))}">⚑ {_e(f)}</span>' for f in flags)
        cells.append(_cell(flag_html, len(flags), raw=True))
        classes = ' class="error"' if entry["errors"] else ""
        rows.append(f'<tr data-model="{_e(entry["model"])}"{classes}>' + "".join(cells) + "</tr>")
    return (
        f'<table class="ranked sortable" data-norm="{_e(threat["norm"])}"><thead><tr>{_sortable_head(head)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _cost_table(document: dict, pages: dict) -> str:
    cost = document["cost"]
    lines = [
        '<h2 id="cost">Cost</h2>',
        "<p>Seconds each model's jobs took where they ran, and the model evaluations the attacks and certifiers counted.</p>",
        '<table class="sortable"><thead><tr>'
        + _sortable_head(
            [("model", "text")]
            + [(f"{part} s", "number") for part in ("training", "clean", "attacks", "certifiers", "total")]
            + [("gradient evaluations", "number"), ("forward evaluations", "number")]
        )
        + "</tr></thead><tbody>",
    ]
    for model, c in cost["models"].items():
        values = [c[k] for k in ("training_seconds", "clean_seconds", "attack_seconds", "certify_seconds", "total_seconds")]
        lines.append(
            f'<tr><td data-value="{_e(model)}"><a href="models/{_e(pages.get(model, model))}.html">{_e(model)}</a></td>'
            + "".join(f'<td data-value="{v}">{v:.1f}</td>' for v in values)
            + f'<td data-value="{c["gradient_evaluations"]}">{c["gradient_evaluations"]:,}</td>'
            + f'<td data-value="{c["forward_evaluations"]}">{c["forward_evaluations"]:,}</td></tr>'
        )
    lines.append(
        f"</tbody></table><p>The run: {cost['total_seconds']:.1f} s of job time ({cost['total_seconds'] / 60:.1f} min).</p>"
    )
    return "\n".join(lines)


def _provenance(document: dict) -> str:
    provenance = document["provenance"]
    parts = ['<h2 id="provenance">Provenance</h2><dl class="provenance">']
    parts.append(f"<dt>spec hash</dt><dd><code>{_e(provenance.get('spec_hash'))}</code></dd>")
    data = provenance.get("data") or {}
    parts.append(f"<dt>data</dt><dd>{_e(', '.join(f'{k}: {v}' for k, v in data.items()))}</dd>")
    for name, version in (provenance.get("plugins") or {}).items():
        parts.append(f"<dt>plugin {_e(name)}</dt><dd><code>{_e(version)}</code></dd>")
    environments = "; ".join(" / ".join(map(str, e)) for e in provenance.get("environments") or [])
    parts.append(f"<dt>environments</dt><dd>{_e(environments)}</dd>")
    versions = ", ".join(f"{k} {v}" for k, v in (provenance.get("versions") or {}).items())
    parts.append(f"<dt>versions</dt><dd>{_e(versions)}</dd></dl>")
    parts.append(
        "<details><summary>the resolved spec</summary><pre>" + _e(json.dumps(document["spec"], indent=1)) + "</pre></details>"
    )
    return "".join(parts)


# -- a model's card -------------------------------------------------------------------


def _model_page(document: dict, results: Results, model: str) -> str:
    from advbench.runs.jobs import job_id

    spec_model = next(m for m in results.spec["models"] if m["name"] == model)
    train = results.records.get(job_id(model, "train")) or {}
    body = [
        '<p class="crumbs"><a href="../index.html">the leaderboard</a></p>',
        f"<h1>{_e(model)}</h1>",
        f"<p>Run <code>{_e(document['name'])}</code>.</p>",
        '<h2>Model</h2><dl class="card">',
    ]
    for key in ("architecture", "defense", "training", "source", "pretrained"):
        if key in spec_model and spec_model[key] is not None:
            body.append(f"<dt>{_e(key)}</dt><dd><code>{_e(_settings(spec_model[key]))}</code></dd>")
    if train.get("status") == "ok":
        facts = []
        if train.get("test_accuracy") is not None:
            facts.append(f"test accuracy {100 * train['test_accuracy']:.2f}% (the whole test split)")
        if train.get("parameters"):
            facts.append(f"{train['parameters']:,} parameters")
        if train.get("train_size"):
            facts.append(f"{train['train_size']:,} training images")
        if train.get("stopped_after_epoch"):
            facts.append(f"stopped after epoch {train['stopped_after_epoch']}")
        facts.append(f"{train.get('seconds', 0):.1f} s")
        body.append(f"<dt>trained</dt><dd>{_e(', '.join(facts))}</dd>")
    body.append("</dl>")
    for threat in document["threat_models"]:
        entry = next((e for e in threat["entries"] if e["model"] == model), None)
        if entry is None:
            continue
        body.append(f"<h2>{_e(threat['norm'])} threat model</h2>")
        body.append(
            f"<p>Rank {_e(rank_text(entry['rank_range']))} by "
            f"{_e(threat['ranked_by'])} accuracy; clean {_percent(entry['clean'])}; median radius certified "
            f"{_e(_radius(entry['median_radius_certified']))}, empirical {_e(_radius(entry['median_radius_empirical']))}, "
            f"median gap {_e(_radius(entry['median_gap']))}.</p>"
        )
        methods = sorted({a for b in entry["budgets"] for a in b["per_attack"]})
        certifiers = sorted({c for b in entry["budgets"] for c in b["per_certifier"]})
        head = ["ε", "certified", "empirical"] + [f"{c} (cert)" for c in certifiers] + [f"{a} (emp)" for a in methods]
        rows = []
        for b in entry["budgets"]:
            cells = [_e(b["eps_text"]), _percent(b["certified"]), _percent(b["empirical"])]
            cells += [_share(b["per_certifier"].get(c)) for c in certifiers]
            cells += [_share(b["per_attack"].get(a)) for a in methods]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        body.append(
            '<table class="methods"><thead><tr>'
            + "".join(f"<th>{_e(h)}</th>" for h in head)
            + "</tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table>"
        )
        if entry["indicators"]:
            names = sorted({n for found in entry["indicators"].values() for n in found})
            body.append(
                "<h3>Indicators of attack failure</h3><p>The share of the correctly classified examples each affects "
                "(Pintor et al. 2022); — where it does not apply.</p>"
                '<table class="indicators"><thead><tr><th>attack</th>'
                + "".join(f"<th>{_e(n.replace('_', ' '))}</th>" for n in names)
                + "</tr></thead><tbody>"
                + "".join(
                    f"<tr><td>{_e(a)}</td>" + "".join(f"<td>{_share(found.get(n))}</td>" for n in names) + "</tr>"
                    for a, found in entry["indicators"].items()
                )
                + "</tbody></table>"
            )
        if entry.get("complete"):
            body.append(
                f"<h3>Complete verification</h3><p>{_e(COMPLETE_LEGEND)}</p>"
                '<table class="complete"><thead><tr><th>verifier</th><th>exact</th>'
                + "".join(f"<th>unknown ε={_e(b['eps_text'])}</th>" for b in entry["budgets"])
                + "<th>undecided</th><th>subdomains (median)</th><th>s per example</th></tr></thead><tbody>"
                + "".join(
                    f"<tr><td>{_e(label)}</td><td>{_e(exact_text(c))}</td>"
                    + "".join(f"<td>{n}</td>" for n in c["unknown"])
                    + f"<td>{_e(undecided_text(c))}</td><td>{c['subdomains']:,.0f}</td><td>{c['seconds']:.2f}</td></tr>"
                    for label, c in entry["complete"].items()
                )
                + "</tbody></table>"
            )
        if entry["empirical_sources"]:
            body.append(
                "<p>Which attack gave each example's smallest adversarial example: "
                + _e(", ".join(f"{k or 'none found'} {100 * v:.0f}%" for k, v in entry["empirical_sources"].items()))
                + "</p>"
            )
        flags = shown_flags(entry["flags"], entry["errors"])
        if flags:
            body.append(
                '<dl class="legend">'
                + "".join(f"<dt>⚑ {_e(f)}</dt>" + "".join(f"<dd>{_e(m)}</dd>" for m in explain_flag(f)) for f in flags)
                + "</dl>"
            )
        body += [f"<p><b>ERROR</b>: {_e(x)}</p>" for x in entry["errors"]]
        body += [f'<p class="note">{_e(x)}</p>' for x in entry["notes"]]
    cost = document["cost"]["models"].get(model)
    if cost:
        body.append(
            "<h2>Cost</h2><table><thead><tr><th>job</th><th>kind</th><th>seconds</th><th>gradient evaluations</th>"
            "<th>forward evaluations</th></tr></thead><tbody>"
            + "".join(
                f"<tr><td><code>{_e(j['job'])}</code></td><td>{_e(j['kind'])}</td><td>{j['seconds']:.1f}</td>"
                f"<td>{_count(j['gradient'])}</td><td>{_count(j['forward'])}</td></tr>"
                for j in cost["jobs"]
            )
            + f"</tbody></table><p>In all: {cost['total_seconds']:.1f} s.</p>"
        )
    return _page(f"advbench: {model} ({document['name']})", "\n".join(body), script=False)


# -- several runs ---------------------------------------------------------------------


def _index_page(summaries: list[tuple[str, dict]]) -> str:
    rows = []
    for folder, document in summaries:
        best = []
        for threat in document["threat_models"]:
            top = next((e for e in threat["entries"] if e["rank"] == 1), None)
            if top:
                best.append(f"{threat['norm']}: {top['model']}")
        rows.append(
            f'<tr><td><a href="{_e(folder)}/index.html">{_e(document["name"])}</a></td>'
            f"<td>{_e(document['dataset'].get('name'))}</td>"
            f'<td data-value="{len(document["spec"]["models"])}">{len(document["spec"]["models"])}</td>'
            f'<td data-value="{document["evaluated_examples"]}">{document["evaluated_examples"]}</td>'
            f"<td>{_e('; '.join(best))}</td></tr>"
        )
    head = _sortable_head([("run", "text"), ("dataset", "text"), ("models", "number"), ("examples", "number"), ("first", "text")])
    body = (
        "<h1>advbench leaderboards</h1><p>One page per run: its ranked tables, figures, cost and provenance.</p>"
        f'<table class="sortable runs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )
    return _page("advbench leaderboards", body, script=True)


# -- pieces ---------------------------------------------------------------------------


def _sortable_head(columns: list[tuple[str, str]]) -> str:
    """Header cells the page's script sorts by: ``(name, "number" | "text")`` each."""
    return "".join(
        f'<th data-type="{kind}" tabindex="0" aria-sort="none" title="sort by {_e(name)}">{_e(name)}</th>'
        for name, kind in columns
    )


def _cell(content: str, value, raw: bool = False) -> str:
    shown = content if raw else _e(content)
    return f'<td data-value="{_e(_sort_value(value))}">{shown}</td>'


def _accuracy_cell(accuracy: dict | None) -> str:
    if accuracy is None:
        return '<td data-value="-1" title="no such bound">—</td>'
    value, lower, upper = accuracy["value"], accuracy["lower"], accuracy["upper"]
    half = 100 * max(value - lower, upper - value)
    title = f"95% interval [{100 * lower:.1f}, {100 * upper:.1f}]"
    return f'<td data-value="{value}" title="{title}">{100 * value:.1f} <span class="ci">±{half:.1f}</span></td>'


def _radius_cell(radius) -> str:
    if radius is None:
        return '<td data-value="-1">—</td>'
    if radius == "inf":
        return '<td data-value="Infinity">∞</td>'
    return f'<td data-value="{radius}">{formats.radius(radius)}</td>'


def _sort_value(value) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "Infinity"
    return str(value)


def _percent(accuracy: dict | None) -> str:
    if accuracy is None:
        return "—"
    value, lower, upper = accuracy["value"], accuracy["lower"], accuracy["upper"]
    return f"{formats.percent(value)}% [{formats.percent(lower)}, {formats.percent(upper)}]"


_share, _count, _radius = formats.share, formats.count, formats.radius


def _eps(eps: float) -> str:
    return _e(format_eps(eps))


def _settings(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_settings(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + "; ".join(_settings(v) for v in value) + "]"
    return str(value)


def _unique(names: list[str]) -> list[str]:
    """File-system-safe, distinct names for pages and folders."""
    seen: set[str] = set()
    found = []
    for name in names:
        base = re.sub(r"[^A-Za-z0-9._-]", "_", str(name)).lstrip(".") or "page"
        candidate, k = base, 1
        while candidate.lower() in seen:
            k += 1
            candidate = f"{base}-{k}"
        seen.add(candidate.lower())
        found.append(candidate)
    return found


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _write(path: Path, text: str) -> None:
    write_atomic(path, text.encode())


STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 78em; padding: 0 1em; color: #1b1b1b; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1em 0; font-variant-numeric: tabular-nums; }
th, td { padding: 0.3em 0.6em; border-bottom: 1px solid #e4e4e4; text-align: right; vertical-align: top; }
th { background: #f4f4f4; position: sticky; top: 0; }
td:nth-child(2), td:nth-child(3), th:nth-child(2), th:nth-child(3), table.runs td, table.runs th { text-align: left; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort="ascending"]::after { content: " ▲"; }
table.sortable th[aria-sort="descending"]::after { content: " ▼"; }
tr.error td { background: #fff1f0; }
.ci { color: #777; font-size: 0.85em; }
table.ranked td { white-space: nowrap; } table.ranked td:last-child { white-space: normal; }
.flag { color: #b3261e; white-space: nowrap; font-size: 0.9em; }
.note { color: #555; font-size: 0.92em; margin: 0.3em 0; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
dl.legend dt { font-weight: 600; color: #b3261e; margin-top: 0.6em; } dl.legend dd { margin-left: 1.5em; }
dl.provenance dt, dl.card dt { font-weight: 600; margin-top: 0.4em; } dl.provenance dd, dl.card dd { margin-left: 1.5em; }
pre { background: #f7f7f7; padding: 1em; overflow: auto; font-size: 0.85em; }
.crumbs { font-size: 0.9em; }
"""

SCRIPT = """
(function () {
  function value(cell, type) {
    var raw = cell.getAttribute('data-value');
    if (raw === null) raw = cell.textContent;
    if (type === 'number') { var n = parseFloat(raw); return isNaN(n) ? -Infinity : n; }
    return raw.toLowerCase();
  }
  function sortBy(table, column) {
    var header = table.tHead.rows[0].cells[column];
    var type = header.getAttribute('data-type') || 'text';
    var ascending = header.getAttribute('aria-sort') !== 'ascending';
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.setAttribute('aria-sort', 'none'); });
    header.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a.cells[column], type), y = value(b.cells[column], type);
      return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
      header.addEventListener('click', function () { sortBy(table, column); });
      header.addEventListener('keydown', function (event) {
        if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); sortBy(table, column); }
      });
    });
  });
})();
"""


def _page(title: str, body: str, script: bool) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src 'self'; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<title>{_e(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n"
        + (f"<script>{SCRIPT}</script>\n" if script else "")
        + '<footer><p class="note">Generated by advbench.</p></footer>\n</body></html>\n'
    )
