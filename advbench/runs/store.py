"""The run directory: resolved spec, trained models and one record per job.

Layout::

    runs/<name>/
      advbench-run.json        marks the directory as a run (name, spec hash, created)
      spec.json                the resolved spec (defaults filled in)
      plan.json                the current plan: every job's id and key
      models/<model>-<hash>.keras, .json    trained models and their training records
      jobs/<job id>.json       one record per finished job (written atomically)
      jobs/<job id>.npz        its arrays too large for JSON (adversarial examples)
      leaderboard.md, <norm>.png
      .lock                    held by the process running the spec (who and since when)

Every file is written to a unique temporary name and renamed into place, so a record
either exists complete or not at all; a job is done exactly when its JSON record exists,
reads back whole and its key matches the job's current key.  A record that does not
read back (truncated, hand-edited) is reported by name and its job redone; a model file
whose digest differs from its training record is retrained.  One process at a time
runs in a directory: the second is told who holds it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from advbench.errors import AdvbenchError, RunDirectoryError
from advbench.kit.datafiles import file_digest

MARKER = "advbench-run.json"
LOCK = ".lock"
TEMPORARY_SUFFIXES = (".tmp", ".tmp.keras")


class RunDirectoryBusy(AdvbenchError):
    """Another process holds the run directory's lock."""


class DiskFull(AdvbenchError):
    """The run directory's disk is full; finished jobs are kept."""


class UnsafeRunDirectory(AdvbenchError):
    """The run directory holds a symbolic link, or a path would leave it: nothing is written."""

    exit_code = 2


def symbolic_links(root: Path) -> list[Path]:
    """Every symbolic link inside ``root`` (not followed; ``root`` itself may be one)."""
    found = []
    for folder, folders, files in os.walk(root, followlinks=False):
        for name in folders + files:
            if os.path.islink(os.path.join(folder, name)):
                found.append(Path(folder) / name)
    return found


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a unique temporary file beside ``path`` and rename it into place: the
    file is whole or absent, and a symbolic link at ``path`` is replaced, never written through."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        _raise_if_disk_full(exc, path)
        raise


def _raise_if_disk_full(exc: BaseException, path: Path) -> None:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise DiskFull(
            f"no space left on the device of {path.parent} while writing {path.name}; every finished job is "
            "saved: free some space and rerun the same command to go on"
        ) from None


def write_json(path: Path, record: Any) -> None:
    write_atomic(path, json.dumps(record, indent=1, sort_keys=True).encode())


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.models = self.root / "models"
        self.jobs = self.root / "jobs"
        self.damaged: dict[str, str] = {}  # file (relative to the root) -> what is wrong with it
        self._lock = None

    def inside(self, path: Path) -> Path:
        """``path``, checked to lie inside the run directory with no symbolic link on the way
        (a component name from a plugin, or a link planted in the directory, cannot make
        advbench write elsewhere)."""
        root = Path(os.path.abspath(self.root))
        full = Path(os.path.abspath(path))
        if not full.is_relative_to(root) or full == root:
            raise UnsafeRunDirectory(f"{path}: outside the run directory {self.root}; nothing was written")
        current = root
        for part in full.relative_to(root).parts:
            current = current / part
            if current.is_symlink():
                raise UnsafeRunDirectory(
                    f"{current} is a symbolic link; a run directory holds none (advbench writes only "
                    "inside it): remove it, or rerun with --fresh"
                )
        return path

    def write_json(self, path: Path, record: Any) -> None:
        """:func:`write_json` to a path inside the run directory (see :meth:`inside`)."""
        write_json(self.inside(path), record)

    def write_bytes(self, path: Path, data: bytes) -> None:
        """:func:`write_atomic` to a path inside the run directory (see :meth:`inside`)."""
        write_atomic(self.inside(path), data)

    @classmethod
    def open(cls, root: str | Path) -> "RunStore":
        """Open an existing run directory (for export and leaderboard)."""
        store = cls(root)
        if store.root.exists() and not store.root.is_dir():
            raise AdvbenchError(f"{store.root}: is a file, not a run directory")
        if not (store.root / MARKER).is_file():
            raise AdvbenchError(f"{store.root}: not an advbench run directory (no {MARKER})")
        return store

    def prepare(self, spec_name: str, spec_hash: str, resolved: dict, fresh: bool, kind: str | None = None) -> None:
        """Create the directory, or reuse it; ``fresh`` deletes an earlier run first.
        Takes the directory's lock (see :meth:`lock`) before touching anything in it."""
        if self.root.exists() and not self.root.is_dir():
            raise AdvbenchError(f"{self.root}: is a file; --out needs a directory")
        if self.root.exists() and any(self.root.iterdir()) and not (self.root / MARKER).is_file():
            raise AdvbenchError(f"{self.root}: exists, is not empty and is not an advbench run directory; choose another --out")
        self.claim(fresh)
        if fresh:
            for child in self.root.iterdir():
                if child.name == LOCK:
                    continue
                if child.is_symlink() or not child.is_dir():
                    child.unlink()  # a link goes, what it points to stays
                else:
                    shutil.rmtree(child)  # does not follow links inside
        marker = {"name": spec_name, "spec_hash": spec_hash, **({"kind": kind} if kind else {})}  # kind: a spec's run has none
        self.write_json(self.root / MARKER, marker)
        self.write_json(self.root / "spec.json", resolved)

    # -- the lock ---------------------------------------------------------------------

    def claim(self, fresh: bool = False) -> None:
        """Take the lock of a directory that holds no symbolic link (``fresh``: one planted as
        the lock file is removed first, the others by :meth:`prepare`)."""
        if self._lock is not None:
            return
        if not fresh:
            links = symbolic_links(self.root) if self.root.is_dir() else []
            if links:
                raise UnsafeRunDirectory(
                    f"{links[0]} is a symbolic link; a run directory holds none (advbench writes "
                    "only inside it): remove it, or rerun with --fresh (which removes links, not "
                    "what they point to)"
                )
        if fresh and (self.root / LOCK).is_symlink():
            (self.root / LOCK).unlink()  # the link goes, what it points to stays
        self.lock()

    def lock(self) -> None:
        """Hold the directory's lock for the life of this process (released when it ends,
        however it ends), then remove temporary files a killed run left behind."""
        import fcntl

        if self._lock is not None:
            return  # held already by this store
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            # never through a link: a planted `.lock` link would have us truncate its target
            descriptor = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeRunDirectory(
                    f"{self.root / LOCK} is a symbolic link; remove it (a run directory holds none)"
                ) from None
            raise UnsafeRunDirectory(
                f"{self.root}: cannot write the run directory ({exc.strerror or exc}); choose another --out"
            ) from None
        handle = os.fdopen(descriptor, "r+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunDirectoryBusy(
                f"{self.root} is in use by {holder}; wait for it to finish, or run with another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self._lock = handle
        for path in self.root.rglob(".*"):
            if path.is_file() and path.name.endswith(TEMPORARY_SUFFIXES):
                path.unlink(missing_ok=True)

    def release(self) -> None:
        """Give the lock back (a process that ends gives it back anyway)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def spec(self) -> dict:
        """spec.json, checked to have the shape a run writes (else an error naming the field)."""
        path = self.root / "spec.json"
        spec = self.read(path, required=True)
        problem = spec_problem(spec)
        if problem:
            raise RunDirectoryError(f"{path}: {problem}; not a run directory advbench wrote (rerun the spec with --fresh)")
        return spec

    def plan(self) -> dict:
        """plan.json, checked to have the shape a run writes (else an error naming the field)."""
        path = self.root / "plan.json"
        if not path.is_file():
            raise RunDirectoryError(f"{self.root}: no plan.json; run the spec first")
        plan = self.read(path, required=True)
        jobs = plan.get("jobs") if isinstance(plan, dict) else None
        if not isinstance(jobs, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in jobs.items()):
            raise RunDirectoryError(f"{path}: jobs: expected a mapping of job ids to keys; rerun the spec with --fresh")
        return plan

    def read(self, path: Path, required: bool = False):
        """A JSON file, or ``None`` (recording it as damaged) when it does not parse."""
        try:
            return read_json(path)
        except (OSError, ValueError) as exc:
            if required:
                raise AdvbenchError(
                    f"{path}: cannot be read ({exc.__class__.__name__}: {exc}); rerun the spec with --fresh"
                ) from None
            self.damaged[str(path.relative_to(self.root))] = f"{exc.__class__.__name__}: {exc}"
            return None

    # -- models -----------------------------------------------------------------------

    def model_path(self, name: str, key: str) -> Path:
        return self.models / f"{name}-{key[:12]}.keras"

    def model_record(self, name: str, key: str) -> dict | None:
        """The training record of a model file that is there, whole, and the one the record
        describes (its SHA-256), or ``None``."""
        path = self.model_path(name, key)
        record_path = path.with_suffix(".json")
        if not record_path.is_file():
            return None
        record = self.read(record_path)
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        if not path.is_file():
            self.damaged[str(path.relative_to(self.root))] = "missing"
            return None
        if record.get("sha256_file") != file_digest(path):
            self.damaged[str(path.relative_to(self.root))] = "its content is not the file its training record describes"
            return None
        return record

    def save_model(self, model, name: str, key: str, record: dict) -> None:
        from advbench.lazy import quiet_framework_import

        path = self.inside(self.model_path(name, key))
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.keras")
        os.close(handle)
        try:
            with quiet_framework_import():
                model.save(temporary)
            os.replace(temporary, path)
        except BaseException as exc:
            Path(temporary).unlink(missing_ok=True)
            _raise_if_disk_full(exc, path)
            raise
        self.write_json(path.with_suffix(".json"), {**record, "key": key, "file": path.name, "sha256_file": file_digest(path)})

    # -- jobs -------------------------------------------------------------------------

    def job_path(self, job_id: str) -> Path:
        return self.jobs / f"{job_id}.json"

    def job_record(self, job_id: str, key: str | None = None) -> dict | None:
        """The finished record of a job, or ``None`` if absent, computed for another key, or
        damaged (then listed in :attr:`damaged`)."""
        path = self.job_path(job_id)
        if not path.is_file():
            return None
        record = self.read(path)
        if record is None:
            return None
        problem = record_problem(record)
        if problem:
            self.damaged[str(path.relative_to(self.root))] = problem
            return None
        if key is not None and record.get("key") != key:
            return None
        return record

    def save_job(self, record: dict, arrays: dict[str, np.ndarray] | None = None) -> None:
        path = self.inside(self.job_path(record["id"]))
        if arrays:
            import io

            buffer = io.BytesIO()
            np.savez_compressed(buffer, **arrays)
            write_atomic(self.inside(path.with_suffix(".npz")), buffer.getvalue())
        self.write_json(path, record)

    def job_arrays(self, job_id: str) -> dict[str, np.ndarray]:
        path = self.job_path(job_id).with_suffix(".npz")
        if not path.is_file():
            return {}
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except Exception as exc:  # a truncated or foreign file: report it, show no figure from it
            self.damaged[str(path.relative_to(self.root))] = f"{exc.__class__.__name__}: {exc}"
            return {}


def spec_problem(spec) -> str | None:
    """What makes a run's spec.json unusable (not the shape a run writes), or ``None``."""
    if not isinstance(spec, dict):
        return "expected a JSON object"
    if not isinstance(spec.get("name"), str):
        return "name: expected a string"
    if not isinstance(spec.get("seed"), int) or isinstance(spec.get("seed"), bool):
        return "seed: expected an integer"
    models = spec.get("models")
    if not isinstance(models, list) or not all(isinstance(m, dict) and isinstance(m.get("name"), str) for m in models):
        return "models: expected a list of objects with a name"
    for k, model in enumerate(models):
        defense = model.get("defense")
        parts = defense if isinstance(defense, list) else [defense]
        if not all(isinstance(d, dict) and isinstance(d.get("name"), str) for d in parts):
            return f"models[{k}].defense: expected an object with a name, or a list of them"
    threats = spec.get("threat_models")
    if not isinstance(threats, list) or not all(
        isinstance(t, dict)
        and isinstance(t.get("norm"), str)
        and isinstance(t.get("eps"), list)
        and all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in t["eps"])
        for t in threats
    ):
        return "threat_models: expected a list of objects with a norm and a list of numbers eps"
    for section in ("attacks", "certifiers"):
        methods = spec.get(section)
        if not isinstance(methods, list) or not all(isinstance(m, dict) and isinstance(m.get("name"), str) for m in methods):
            return f"{section}: expected a list of objects with a name"
    return None


def record_problem(record) -> str | None:
    """What makes a job record unusable (it does not have the shape advbench writes), or ``None``."""
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [field for field in ("id", "kind", "key", "status") if not isinstance(record.get(field), str)]
    if missing:
        return f"missing or malformed field(s) {', '.join(missing)}"
    for field, kind, expected in (
        ("environment", dict, "an object"),
        ("evaluations", dict, "an object"),
        ("seconds", (int, float), "a number"),
    ):
        if field in record and (not isinstance(record[field], kind) or isinstance(record[field], bool)):
            return f"{field} must be {expected}"
    evaluations = record.get("evaluations") or {}
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in evaluations.values()):
        return "evaluations must map to numbers"
    if record["status"] != "ok" or record["kind"] == "train":
        return None
    if record["kind"] == "verify":  # an instance of a verification run
        ok = record.get("result") in ("sat", "unsat", "timeout", "unknown") and isinstance(record.get("stages"), list)
        return None if ok else "result must be sat, unsat, timeout or unknown, with its stages"
    if record["kind"] == "clean":
        lengths = {len(record.get(f) or []) if isinstance(record.get(f), list) else -1 for f in ("index", "label", "predicted")}
        return None if len(lengths) == 1 and -1 not in lengths else "index, label and predicted must be lists of one length"
    radius = record.get("radius")
    if not isinstance(radius, list) or not all(isinstance(r, (int, float)) for r in radius):
        return "radius must be a list of numbers"
    if len(radius) != record.get("examples"):
        return f"{len(radius)} radii for {record.get('examples')} examples"
    return None
