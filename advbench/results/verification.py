"""The report of a verification run (`advbench verify BENCHMARK_DIR`): per network the
verified / falsified / unknown / timeout counts and times, which stage decided each
instance, the competition's cactus plot (instances decided against time), and, with other
tools' published ``results.csv``, the answers side by side with every contradiction
settled by the counterexample (re-run under onnxruntime on the benchmark's own file).
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from advbench.errors import AdvbenchError
from advbench.runs.store import RunStore
from advbench.runs.verification import KIND, RADIUS_SPAN, file_stem, find_file, instance_stem

DECIDED = ("sat", "unsat")


def is_verification_run(root: Path) -> bool:
    """Whether ``root`` is a run directory `advbench verify` wrote."""
    from advbench.runs.store import MARKER, read_json

    try:
        return read_json(root / MARKER).get("kind") == KIND
    except Exception:  # noqa: BLE001 (not a run, or a damaged marker: the ordinary leaderboard says which)
        return False


@dataclass
class Answer:
    result: str
    seconds: float


def instance_name(onnx: str, vnnlib: str) -> tuple[str, str]:
    """How two tools' rows are matched: the files' stems (paths and .gz differ between listings)."""
    return file_stem(onnx), file_stem(vnnlib)


def read_results(path: Path, benchmark: str | None = None) -> dict[tuple[str, str], Answer]:
    """A tool's results.csv (benchmark, onnx, vnnlib, prepare time, result, run time); rows of
    other benchmarks (the competition's ``test_nano`` probe) are left out."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise AdvbenchError(f"{path}: cannot read the results ({exc.__class__.__name__}: {exc})") from None
    answers = {}
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row:
            continue
        if len(row) < 6:
            raise AdvbenchError(
                f"{path}, row {number}: {len(row)} field(s); expected benchmark, onnx, vnnlib, prepare time, result, run time"
            )
        if (benchmark is not None and row[0].strip() != benchmark) or "/test/test_" in row[1]:
            continue  # another benchmark, or the competition's overhead probe (test_nano)
        try:
            seconds = float(row[5])
        except ValueError:
            raise AdvbenchError(f"{path}, row {number}: run time {row[5]!r} is not a number") from None
        result = row[4].strip()
        answers[instance_name(row[1].strip(), row[2].strip())] = Answer(
            result if result in DECIDED else _undecided(result), seconds
        )
    return answers


def _undecided(result: str) -> str:
    return "timeout" if "timeout" in result else ("unknown" if result == "unknown" else "error" if result else "unknown")


class Report:
    """A verification run read back, with other tools' answers beside it."""

    def __init__(self, root: Path, compare: dict[str, Path] | None = None):
        self.store = RunStore.open(root)
        self.spec = self.store.read(root / "spec.json", required=True)
        self.benchmark = Path(self.spec["benchmark"])
        self.name = self.spec["name"]
        self.records = []
        for path in sorted((root / "jobs").glob("*.json")):
            record = self.store.read(path)
            if isinstance(record, dict) and record.get("kind") == "verify" and "result" in record:
                self.records.append(record)
        self.records.sort(key=lambda r: r.get("row", 0))
        self.others = {name: read_results(path, self.name) for name, path in (compare or {}).items()}
        self.compare_files = compare or {}

    def ours(self) -> dict[tuple[str, str], Answer]:
        return {instance_name(r["onnx"], r["vnnlib"]): Answer(r["result"], float(r.get("seconds", 0.0))) for r in self.records}

    def networks(self) -> list[str]:
        return list(dict.fromkeys(file_stem(r["onnx"]) for r in self.records))

    def contradictions(self) -> list[dict]:
        """Every instance where one answer is sat and another unsat, with the counterexample's
        verdict: advbench's own (re-run now) or the other tool's file beside its results.csv."""
        found = []
        ours = self.ours()
        for tool, answers in self.others.items():
            for key, theirs in answers.items():
                mine = ours.get(key)
                if mine is None or {mine.result, theirs.result} != {"sat", "unsat"}:
                    continue
                if mine.result == "sat":
                    record = next(r for r in self.records if instance_name(r["onnx"], r["vnnlib"]) == key)
                    holds = self.reproduces(record["onnx"], record["vnnlib"], self.store.root / record["counterexample"])
                    wrong = tool if holds else "advbench"
                else:
                    file = _counterexample_file(self.compare_files[tool].parent, key)
                    holds = None if file is None else self.reproduces_key(key, file)
                    wrong = "advbench" if holds else (tool if holds is False else "undecided (no counterexample published)")
                found.append({"instance": key, "tool": tool, "advbench": mine.result, "other": theirs.result, "wrong": wrong})
        return found

    def reproduces_key(self, key, file: Path) -> bool:
        record = next(r for r in self.records if instance_name(r["onnx"], r["vnnlib"]) == key)
        return self.reproduces(record["onnx"], record["vnnlib"], file)

    def reproduces(self, onnx: str, vnnlib: str, file: Path) -> bool:
        """Whether the counterexample ``file`` lies in the property's box and violates it
        under onnxruntime on the benchmark's network."""
        from advbench.core.verification import read_instance
        from advbench.core.vnnlib import read_counterexample

        network, prop = read_instance(find_file(self.benchmark, onnx), find_file(self.benchmark, vnnlib))
        inputs, _ = read_counterexample(file)
        outputs = network.run(inputs[None])
        return any(bool(case.inside(inputs[None])[0] and case.violated(outputs)[0]) for case in prop.cases)


def _counterexample_file(folder: Path, key: tuple[str, str]) -> Path | None:
    stem = instance_stem(*key)  # a key holds the stems already
    for name in (f"{stem}.counterexample", f"{stem}.counterexample.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _counts(answers) -> Counter:
    return Counter(a.result for a in answers)


def cactus(report: Report, path: Path) -> None:
    """Instances decided (x) against the time each took, sorted (y), one line per tool."""
    from advbench.results.plots import _pyplot, save_figure

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    ours = report.ours()
    for tool, answers in {"advbench": ours, **report.others}.items():
        times = sorted(a.seconds for key, a in answers.items() if a.result in DECIDED and key in ours)
        if times:
            axis.step(range(1, len(times) + 1), times, where="post", label=f"{tool} ({len(times)})")
    axis.set_xlabel("instances decided")
    axis.set_ylabel("seconds per instance")
    axis.set_yscale("log")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(f"{report.name}: instances decided within a time")
    save_figure(figure, path)
    plt.close(figure)


def markdown(report: Report, figure: str | None) -> str:
    from advbench.core.verification import Network  # noqa: F401 (checks the extra is there before the work)

    lines = [f"# {report.name}: advbench verify", ""]
    lines += [
        f"{len(report.records)} instances of `{report.benchmark}`, each within its time limit. "
        "sat: a counterexample that reproduces under onnxruntime (files in counterexamples/); "
        "unsat: proved by the bounds.",
        "",
        "| network | instances | unsat | sat | timeout | unknown | error | decided | seconds (decided, median) | seconds (all) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for network in report.networks() + ["all"]:
        rows = [r for r in report.records if network == "all" or file_stem(r["onnx"]) == network]
        counts = Counter(r["result"] for r in rows)
        decided = sorted(float(r["seconds"]) for r in rows if r["result"] in DECIDED)
        median = f"{decided[len(decided) // 2]:.1f}" if decided else "-"
        total = sum(float(r.get("seconds", 0)) for r in rows)
        lines.append(
            f"| {network} | {len(rows)} | {counts['unsat']} | {counts['sat']} | {counts['timeout']} | {counts['unknown']} | "
            f"{counts['error']} | {counts['unsat'] + counts['sat']} | {median} | {total:.0f} |"
        )
    stages = Counter(_deciding_stage(r) for r in report.records if r["result"] in DECIDED)
    lines += ["", "Decided by stage: " + ", ".join(f"{stage} {n}" for stage, n in stages.most_common()) + "."]
    if report.others:
        lines += ["", "## Beside the published results", ""]
        lines += ["| tool | unsat | sat | timeout / unknown / error | decided |", "| --- | ---: | ---: | ---: | ---: |"]
        ours = report.ours()
        lines.insert(len(lines) - 2, f"On the {len(ours)} instances of this run:\n")
        for tool, answers in {"advbench": ours, **report.others}.items():
            c = _counts(a for key, a in answers.items() if key in ours)
            lines.append(
                f"| {tool} | {c['unsat']} | {c['sat']} | {c['timeout'] + c['unknown'] + c['error']} | {c['unsat'] + c['sat']} |"
            )
        contradictions = report.contradictions()
        lines += ["", f"Contradictions (sat against unsat): {len(contradictions)}."]
        for c in contradictions:
            lines.append(
                f"- {c['instance'][0]} {c['instance'][1]}: advbench {c['advbench']}, {c['tool']} {c['other']}: wrong: {c['wrong']}"
            )
        ours = report.ours()
        lines += [
            "",
            "| network | property | advbench | " + " | ".join(report.others) + " |",
            "| --- | --- | --- |" + " --- |" * len(report.others),
        ]
        for key, mine in ours.items():
            cells = [f"{a.result} {a.seconds:.1f}" if (a := answers.get(key)) else "-" for answers in report.others.values()]
            lines.append(f"| {key[0]} | {key[1]} | {mine.result} {mine.seconds:.1f} | " + " | ".join(cells) + " |")
    if figure:
        lines += ["", f"![instances decided against time]({figure})"]
    measured = [r for r in report.records if isinstance(r.get("radii"), dict)]
    if measured:
        lines += [
            "",
            "## How far each instance is from the other answer",
            "",
            "Beyond the competition: around each robustness instance's box centre, the largest box alpha-CROWN "
            "proves (certified) and the smallest in which PGD finds a counterexample (empirical), in multiples of "
            "the instance's box (1: the instance); certified <= empirical always.",
            "",
            "| network | property | answer | certified | empirical | linf certified | linf empirical |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for r in measured:
            d = r["radii"]
            empirical = d["empirical"] if d["empirical"] is not None else float("inf")
            flag = " (certified above empirical!)" if d["certified"] > empirical else ""
            far = d["empirical"] is None  # no counterexample up to RADIUS_SPAN times the box
            lines.append(
                f"| {file_stem(r['onnx'])} | {file_stem(r['vnnlib'])} | {r['result']}{flag} | {d['certified']:.3f} | "
                + (f"> {RADIUS_SPAN:g} | " if far else f"{d['empirical']:.3f} | ")
                + f"{d['linf']['certified']:.4f} | "
                + ("- |" if far else f"{d['linf']['empirical']:.4f} |")
            )
    unknown = [r for r in report.records if r["result"] not in DECIDED]
    if unknown:
        lines += ["", "## Undecided", ""]
        for r in unknown:
            last = (r.get("stages") or [{}])[-1]
            lines.append(
                f"- {file_stem(r['onnx'])} {file_stem(r['vnnlib'])}: {r['result']} ({r.get('reason', '')}; last stage {last.get('stage', '-')}, "
                f"{last.get('subdomains', 0)} subdomains)"
            )
    return "\n".join(lines) + "\n"


def _deciding_stage(record: dict) -> str:
    stages = record.get("stages") or []
    return stages[-1]["stage"] if stages else "-"


def write_report(
    root: Path, output: Path | None = None, compare: dict[str, Path] | None = None, figure_format: str = "png"
) -> Path:
    report = Report(root, compare)
    path = output or root / "leaderboard.md"
    figure = path.with_name(f"{path.stem}-cactus.{figure_format}")
    cactus(report, figure)
    text = markdown(report, figure.name)
    from advbench.runs.store import write_atomic

    write_atomic(path, text.encode())
    return path


def parse_compare(values: list[str]) -> dict[str, Path]:
    """``NAME=results.csv`` options into a mapping, each file checked to exist."""
    tools = {}
    for value in values:
        name, sep, file = value.partition("=")
        if not sep or not name or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise AdvbenchError(f"--compare {value!r}: expected NAME=results.csv (a name of letters, digits, _ . -)")
        if not Path(file).is_file():
            raise AdvbenchError(f"--compare {value!r}: {file} is not a file")
        tools[name] = Path(file)
    return tools
