"""A VNN-COMP benchmark run through the run store: every instance of ``instances.csv``
decided once (:func:`advbench.core.verification.verify`), its record written when it
ends, so a killed run resumes where it stopped with the same answers for the instances
it finished; nothing is reused that was computed from other code, files or settings
(each instance's key covers advbench's record-making code, the ``bab`` plugin's code, the
backend, both files' digests, the time limit and the verifier's settings).

Layout of the run directory::

    RUN_DIR/
      advbench-run.json            the marker, kind "verification"
      spec.json                    the benchmark folder and its instances as read
      jobs/<instance>.json         one record per decided instance
      counterexamples/<onnx>_<vnnlib>.counterexample   every sat's counterexample
      results.csv                  VNN-COMP's columns: benchmark, onnx, vnnlib, prepare time, result, run time
"""

from __future__ import annotations

import csv
import io
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from advbench.errors import AdvbenchError, UsageError
from advbench.runs.store import MARKER, RunStore

KIND = "verification"
RESULTS = ("sat", "unsat", "timeout", "unknown", "error")


@dataclass
class Instance:
    """One row of instances.csv: the paths as written there, the files found for them, and
    what is wrong with the row (then it is answered ``error`` and the others still run)."""

    row: int
    onnx: str
    vnnlib: str
    timeout: float
    onnx_file: Path | None = None
    vnnlib_file: Path | None = None
    problem: str | None = None

    @property
    def id(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.=-]", "_", instance_stem(self.onnx, self.vnnlib))[:150] or f"row{self.row}"


def instance_stem(onnx: str, vnnlib: str) -> str:
    """``<network>_<property>``: how the competition names an instance's counterexample file."""
    return f"{file_stem(onnx)}_{file_stem(vnnlib)}"


def file_stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".gz", ".onnx", ".vnnlib"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    return name


def find_file(folder: Path, written: str) -> Path | None:
    """The file a row names, relative to the benchmark folder, or its ``.gz`` as VNN-COMP ships it."""
    for candidate in (folder / written, folder / (written + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def read_instances(benchmark: Path, instances: Path | None = None) -> list[Instance]:
    """The rows of ``instances`` (default ``benchmark/instances.csv``): onnx, vnnlib and time
    limit in seconds, paths relative to ``benchmark``.  A missing or unreadable file is an
    error; a bad row is an instance answered ``error`` with its problem named."""
    listing = instances or benchmark / "instances.csv"
    if not benchmark.is_dir():
        raise UsageError(f"{benchmark}: not a folder; give a benchmark folder with instances.csv (or a network and a property)")
    try:
        text = listing.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise AdvbenchError(f"{listing}: cannot read the instances ({exc.__class__.__name__}: {exc})") from None
    rows = []
    for number, fields in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not fields or all(not f.strip() for f in fields):
            continue
        fields = [f.strip() for f in fields]
        instance = Instance(number, *(fields + ["", "", ""])[:2], timeout=math.nan)
        where = f"{listing}, row {number}"
        if len(fields) < 3:
            instance.problem = f"{where}: {len(fields)} field(s); expected 3: onnx, vnnlib, timeout"
        else:
            try:
                instance.timeout = float(fields[2])
            except ValueError:
                instance.problem = f"{where}: timeout {fields[2]!r} is not a number of seconds"
            else:
                if not math.isfinite(instance.timeout) or instance.timeout <= 0:
                    instance.problem = f"{where}: timeout {fields[2]!r}; expected a positive number of seconds"
        if instance.problem is None:
            for kind in ("onnx", "vnnlib"):
                found = find_file(benchmark, getattr(instance, kind))
                if found is None:
                    instance.problem = f"{where}: {kind} file {getattr(instance, kind)!r} not found in {benchmark}"
                    break
                setattr(instance, f"{kind}_file", found)
        rows.append(instance)
    if not rows:
        raise AdvbenchError(f"{listing}: no instances")
    return rows


def instance_key(instance: Instance, identity: dict) -> str:
    """What the instance's answer is a function of (module docstring)."""
    from advbench.core import verification
    from advbench.kit.datafiles import file_digest
    from advbench.spec.resolved import stable_hash

    settings = {
        name: getattr(verification, name) for name in ("ATTACK_STARTS", "ATTACK_STEPS", "INTERMEDIATE_ITERATIONS", "BAB_BATCH")
    }
    files = [file_digest(instance.onnx_file), file_digest(instance.vnnlib_file)] if instance.problem is None else []
    return stable_hash([identity, files, instance.timeout, settings, instance.problem])


def job_id(instance: Instance, ids: set[str]) -> str:
    base = instance.id
    return base if base not in ids else f"{base}-row{instance.row}"


def verify_benchmark(
    benchmark: Path,
    out: Path,
    instances: Path | None = None,
    fresh: bool = False,
    report=print,
    executor: str = "local",
    address: str | None = None,
):
    """Decide every instance not already decided in ``out``; returns the records in the
    listing's order (:func:`write_results` has written results.csv).  ``executor`` "ray":
    the instances in parallel as Ray tasks of one CPU each (on this machine, or the cluster
    at ``address``; the run directory on a filesystem every node mounts), each writing its
    own record; their times then include what the others take from the machine."""
    from advbench.contract.plugins import load_plugins, record_fingerprint
    from advbench.kit import backend

    rows = read_instances(benchmark, instances)
    host = load_plugins()
    plugin = host.registry.plugin_of("certifier", "bab")
    identity = {
        "advbench": record_fingerprint(),
        "bab": host.plugins[plugin].fingerprint if plugin in host.plugins else plugin,
        **backend.identity(),
    }
    store = RunStore(out)
    name = benchmark.resolve().name
    described = {
        "kind": KIND,
        "name": name,
        "benchmark": str(benchmark),
        "instances": [[i.row, i.onnx, i.vnnlib, i.timeout, i.problem] for i in rows],
    }
    from advbench.spec.resolved import stable_hash

    if (out / MARKER).is_file() and not fresh:
        marker = store.read(out / MARKER) or {}
        if marker.get("kind") != KIND:
            raise AdvbenchError(f"{out}: holds a run of a spec, not a verification run; choose another --out")
    store.prepare(name, stable_hash(described), described, fresh, kind=KIND)
    records: list = [None] * len(rows)
    todo, ids = [], set()
    for position, instance in enumerate(rows):
        jid = job_id(instance, ids)
        ids.add(jid)
        key = instance_key(instance, identity)
        record = store.job_record(jid, key)
        if record is not None:
            report(f"{jid}: {record['result']} (decided before)")
            records[position] = record
        else:
            todo.append((position, instance, jid, key))

    def finished(position, record):
        records[position] = record
        report(
            f"{record['id']}: {record['result']} in {record['seconds']:.1f} s"
            + (f" ({record['reason']})" if record.get("reason") else "")
        )
        write_results(store, name, [r for r in records if r is not None])

    if executor == "ray" and todo:
        _on_ray(todo, store, identity, address, finished)
    else:
        for position, instance, jid, key in todo:
            finished(position, solve(instance, host.registry, store, jid, key, identity))
    write_results(store, name, [r for r in records if r is not None])
    return records


def _solve_in_worker(instance, root, jid, key, identity):
    """One instance in a Ray worker: the plugins loaded there, the record written there."""
    from advbench.contract.plugins import load_plugins

    return solve(instance, load_plugins().registry, RunStore(root), jid, key, identity)


def _on_ray(todo, store, identity, address, finished) -> None:
    import os

    from advbench.runs.executors.ray import FORWARDED_ENVIRONMENT, import_ray

    ray = import_ray()
    environment = {name: os.environ[name] for name in FORWARDED_ENVIRONMENT if name in os.environ}
    try:
        ray.init(
            address=address or "local",
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": environment},
        )
    except Exception as exc:  # noqa: BLE001 (Ray raises ConnectionError, RuntimeError, ValueError...)
        raise AdvbenchError(f"--executor ray: could not start or join Ray: {exc.__class__.__name__}: {exc}") from None
    try:
        task = ray.remote(num_cpus=1, max_retries=1)(_solve_in_worker)
        pending = {
            task.remote(instance, str(store.root.resolve()), jid, key, identity): position
            for position, instance, jid, key in todo
        }
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                finished(pending.pop(ref), ray.get(ref))
    finally:
        ray.shutdown()


_NETWORKS: dict[str, object] = {}


def solve(instance: Instance, registry, store: RunStore, jid: str, key: str, identity: dict) -> dict:
    """Decide one instance and save its record (and its counterexample file)."""
    from advbench.core.verification import Network, verify
    from advbench.core.vnnlib import counterexample_text, read_vnnlib
    from advbench.kit.datafiles import file_digest

    record = {
        "id": jid,
        "kind": "verify",
        "key": key,
        "row": instance.row,
        "onnx": instance.onnx,
        "vnnlib": instance.vnnlib,
        "timeout": instance.timeout,
        "code": identity,
        "status": "ok",
    }
    began = time.perf_counter()
    try:
        if instance.problem:
            raise AdvbenchError(instance.problem)
        digest = file_digest(instance.onnx_file)
        if digest not in _NETWORKS:
            _NETWORKS[digest] = Network.load(instance.onnx_file)
        network = _NETWORKS[digest]
        prop = read_vnnlib(instance.vnnlib_file, network.inputs, network.outputs)
        prepared = time.perf_counter() - began
        verdict = verify(network, prop, instance.timeout, registry)
    except AdvbenchError as exc:
        record.update(status="error", result="error", reason=str(exc), seconds=time.perf_counter() - began, prepare_seconds=0.0)
        store.save_job(record)
        return record
    from advbench.kit import backend

    record.update(
        environment=backend.describe(),
        result=verdict.result,
        reason=verdict.reason,
        stages=verdict.stages,
        seconds=round(verdict.seconds, 3),
        prepare_seconds=round(prepared, 3),
    )
    if len(prop.cases) == 1 and prop.cases[0].robustness() is not None:
        record["radii"] = radii(network, prop.cases[0], registry, verdict.counterexample)
    if verdict.counterexample is not None:
        name = f"{instance_stem(instance.onnx, instance.vnnlib)}.counterexample"
        path = store.root / "counterexamples" / name
        path.parent.mkdir(exist_ok=True)
        store.write_bytes(path, counterexample_text(*verdict.counterexample).encode())
        record["counterexample"] = f"counterexamples/{name}"
    store.save_job(record)
    return record


RADIUS_SPAN = 2.0
"""How far the radius search looks: boxes up to this many times the instance's around its centre."""


def radii(network, case, registry, counterexample=None, seed: int = 0) -> dict:
    """Beyond the competition, for a robustness instance: how far from being decided the
    other way it is.  Around the box's centre, the boxes ``centre +- s * half-widths``
    (``s = 1``: the instance's own box) are searched for the largest ``s`` alpha-CROWN
    proves (``certified``) and the smallest ``s`` at which PGD finds a counterexample
    (``empirical``, or the verdict's own ``counterexample`` where nearer; None where none up
    to :data:`RADIUS_SPAN`).  ``certified <= empirical``
    always; ``certified >= 1`` is an unsat proved without branching, ``empirical <= 1`` a
    sat.  ``linf``: the same radii in input units (``s`` times the largest half-width)."""
    import numpy as np

    from advbench.core.vnnlib import Case
    from advbench.kit.target import Target
    from advbench.runs.harness import attack_radii, certified_radii

    began = time.perf_counter()
    centre, half = (case.lower + case.upper) / 2, (case.upper - case.lower) / 2
    wide = Case(centre - RADIUS_SPAN * half, centre + RADIUS_SPAN * half, case.clauses)
    model = network.case_model(wide)
    target = Target(model, num_classes=int(model.output.shape[-1]))
    x = np.full((1,) + tuple(model.input_shape[1:]), 0.5, np.float32)
    y = np.zeros(1, np.int64)
    predicted = target.predict(x)
    certifier = registry.get("certifier", "alpha_crown")
    certified, _ = certified_radii(certifier(certifier.Params(tolerance=0.01)), target, x, y, predicted, "linf", 1)
    attack = registry.get("attack", "pgd")
    outcome = attack_radii(attack(attack.Params(steps=50, restarts=2)), target, x, y, predicted, "linf", [0.5], 0.01, seed, 1)
    scale = 2 * RADIUS_SPAN  # the wide box is the u-ball of radius 1/2
    empirical = float(outcome.radius[0] * scale)
    if counterexample is not None:
        wide_half = np.where(half > 0, half, np.inf)
        empirical = min(empirical, float(np.max(np.abs(counterexample[0] - centre) / wide_half, initial=0.0)))
    values = {"certified": float(certified[0] * scale), "empirical": empirical if np.isfinite(empirical) else None}
    widest = float(half.max())
    return {
        **values,
        "linf": {k: None if v is None else v * widest for k, v in values.items()},
        "unit": "the instance's box half-widths (1: the instance's box)",
        "seconds": round(time.perf_counter() - began, 3),
    }


def write_results(store: RunStore, benchmark: str, records: list[dict]) -> None:
    """results.csv in VNN-COMP's column order (times in seconds)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for r in records:
        writer.writerow(
            [benchmark, r["onnx"], r["vnnlib"], f"{r.get('prepare_seconds', 0.0):.3f}", r["result"], f"{r['seconds']:.3f}"]
        )
    store.write_bytes(store.root / "results.csv", buffer.getvalue().encode())
