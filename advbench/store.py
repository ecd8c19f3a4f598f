"""The run directory: resolved spec, trained models and one record per job.

Layout::

    runs/<name>/
      advbench-run.json        marks the directory as a run (name, spec hash, created)
      spec.json                the resolved spec (defaults filled in)
      models/<model>-<hash>.keras, .json    trained models and their training records
      jobs/<job id>.json       one record per finished job (written atomically)
      jobs/<job id>.npz        its arrays too large for JSON (adversarial examples)
      leaderboard.md, <norm>.png

Every file is written to a temporary name and renamed into place, so a record either
exists complete or not at all; a job is done exactly when its JSON record exists and
its key matches the job's current key.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from advbench.errors import AdvbenchError

MARKER = "advbench-run.json"


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


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

    @classmethod
    def open(cls, root: str | Path) -> "RunStore":
        """Open an existing run directory (for export and leaderboard)."""
        store = cls(root)
        if not (store.root / MARKER).is_file():
            raise AdvbenchError(f"{store.root}: not an advbench run directory (no {MARKER})")
        return store

    def prepare(self, spec_name: str, spec_hash: str, resolved: dict, fresh: bool) -> None:
        """Create the directory, or reuse it; ``fresh`` deletes an earlier run first."""
        if self.root.exists() and any(self.root.iterdir()) and not (self.root / MARKER).is_file():
            raise AdvbenchError(f"{self.root}: exists, is not empty and is not an advbench run directory; choose another --out")
        if fresh and self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.root / MARKER, {"name": spec_name, "spec_hash": spec_hash})
        write_json(self.root / "spec.json", resolved)

    def spec(self) -> dict:
        return read_json(self.root / "spec.json")

    # -- models -----------------------------------------------------------------------

    def model_path(self, name: str, key: str) -> Path:
        return self.models / f"{name}-{key[:12]}.keras"

    def model_record(self, name: str, key: str) -> dict | None:
        path = self.model_path(name, key).with_suffix(".json")
        if not path.is_file():
            return None
        record = read_json(path)
        return record if record.get("key") == key and self.model_path(name, key).is_file() else None

    def save_model(self, model, name: str, key: str, record: dict) -> None:
        path = self.model_path(name, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        from advbench.lazy import quiet_framework_import

        temporary = path.with_name(f".{path.stem}.tmp.keras")
        with quiet_framework_import():
            model.save(temporary)
        os.replace(temporary, path)
        write_json(path.with_suffix(".json"), {**record, "key": key, "file": path.name})

    # -- jobs -------------------------------------------------------------------------

    def job_path(self, job_id: str) -> Path:
        return self.jobs / f"{job_id}.json"

    def job_record(self, job_id: str, key: str | None = None) -> dict | None:
        """The finished record of a job, or ``None`` if absent or computed for another key."""
        path = self.job_path(job_id)
        if not path.is_file():
            return None
        record = read_json(path)
        if key is not None and record.get("key") != key:
            return None
        return record

    def save_job(self, record: dict, arrays: dict[str, np.ndarray] | None = None) -> None:
        path = self.job_path(record["id"])
        if arrays:
            import io

            buffer = io.BytesIO()
            np.savez_compressed(buffer, **arrays)
            write_atomic(path.with_suffix(".npz"), buffer.getvalue())
        write_json(path, record)

    def job_arrays(self, job_id: str) -> dict[str, np.ndarray]:
        path = self.job_path(job_id).with_suffix(".npz")
        if not path.is_file():
            return {}
        with np.load(path) as data:
            return {k: data[k] for k in data.files}

    def all_jobs(self) -> list[dict]:
        return [read_json(p) for p in sorted(self.jobs.glob("*.json"))] if self.jobs.is_dir() else []
