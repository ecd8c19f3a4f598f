"""Running a spec: plan its jobs, skip those whose records exist for their keys, run the
rest with an executor, save one record per job in the run directory.

Each job seeds its own random numbers from the spec's seed and its id, so the order in
which jobs run (or whether they ran in an earlier, interrupted process) does not change
any result.  :func:`run_spec` is the one entry point the CLI and the Python API share.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from pathlib import Path

from advbench.kit import backend
from advbench.runs.context import Context
from advbench.runs.executors.local import InProcess
from advbench.runs.handlers import HANDLERS
from advbench.runs.jobs import Job
from advbench.runs.planner import Planner, versions
from advbench.runs.reporting import Reporter, RunSummary
from advbench.runs.store import DiskFull, RunStore
from advbench.text import short_message


def run_spec(
    spec, out: str | Path, *, fresh: bool = False, executor=None, reporter: Reporter | None = None, store: RunStore | None = None
) -> RunSummary:
    """Run ``spec`` (a :class:`~advbench.spec.Spec`) into the run directory ``out``: take
    its lock (unless ``store`` holds it already), run every unfinished job with ``executor``
    (default: one after another in this process), give the lock back.  ``fresh`` deletes
    earlier results first."""
    store = store or RunStore(out)
    runner = Runner(spec, store, reporter)
    try:
        store.prepare(spec.name, spec.hash, spec.as_dict(), fresh)
        return runner.run(executor)
    finally:
        store.release()


class Runner:
    """Plans and runs the jobs of one spec in one run directory."""

    def __init__(self, spec, store: RunStore, reporter: Reporter | None = None):
        self.spec = spec
        self.store = store
        self.reporter = reporter or Reporter()
        self.planner = Planner(spec)
        self.context = Context(spec, store, self.planner, self)
        self.handlers = {kind: handler(self) for kind, handler in HANDLERS.items()}

    @property
    def environment(self) -> dict[str, str]:
        return self.planner.environment

    def warn(self, message: str) -> None:
        """A warning for the user, through whichever reporter the runner has now."""
        self.reporter.warn(message)

    def plan(self) -> list[Job]:
        return self.planner.plan()

    def run(self, executor=None) -> RunSummary:
        """Run every unfinished job with ``executor`` (see :mod:`advbench.runs.executors`; by
        default one after another in this process)."""
        jobs = self.plan()
        data = self.planner.load_data()
        plan = {
            "spec_hash": self.spec.hash,
            "jobs": {j.id: j.key for j in jobs},
            "plugins": self.planner.plugins_used(),
            "data": {
                "fingerprint": data.fingerprint,
                "train": int(len(data.train_index)),
                "test": int(len(data.test_index)),
                "evaluated": int(len(data.eval_index)),
            },
        }
        plan_path = self.store.root / "plan.json"
        if not plan_path.is_file() or self.store.read(plan_path) != plan:  # unchanged: left as it is (its time says so)
            self.store.write_json(plan_path, plan)
        todo = [job for job in jobs if not self._finished(job)]
        if todo:  # (nothing to do: Keras, and the seconds its import takes, are not needed)
            backend.enable_determinism()
        for name, problem in sorted(self.store.damaged.items()):
            self.reporter.warn(f"{self.store.root / name} is damaged ({problem}); its job is redone")
        summary = RunSummary(total=len(jobs), skipped=len(jobs) - len(todo))
        self.reporter.start(len(jobs), summary.skipped)
        for record in (executor or InProcess()).execute(self, todo):
            summary.done += "blocked_by" not in record
            if record["status"] == "error":
                summary.errors.append(record)
        return summary

    def needs(self, job: Job) -> set[str]:
        """The models whose training must have finished before ``job`` runs: its own, and
        those its attack evaluates too (a transfer attack's source)."""
        if job.kind == "train":
            return set()
        needed = {job.model}
        if job.kind == "attack":
            needed.update(job.method.cls.models_needed(job.method.params))
        return needed

    def run_one(self, job: Job, failed: set[str] = frozenset()) -> dict:
        """Run one job and save its record; ``failed``: the models whose training failed in
        this run (a job that needs one of them is recorded as blocked, not run)."""
        handler = self.handlers[job.kind]
        blocked = sorted(self.needs(job) & set(failed))
        if blocked:
            return self._run_job(job, 0, lambda advance: (self._blocked_record(blocked[0]), None))
        return self._run_job(job, handler.size(job), lambda advance: handler.run(job, advance))

    def _finished(self, job: Job) -> bool:
        """A job is done when its record reads back whole for its key and did not fail
        (failures are retried); a training job also needs its model file, unchanged."""
        record = self.store.job_record(job.id, job.key)
        if record is None or record.get("status") == "error":
            return False
        return job.kind != "train" or self.store.model_record(job.model, job.key) is not None

    def _run_job(self, job: Job, size: int, work) -> dict:
        started = time.perf_counter()
        with self.reporter.job(job, size) as advance:
            try:
                backend.set_seed(job.seed)
                self.context.forget_randomized()
                with no_exits():
                    record, arrays = work(advance)
            except (KeyboardInterrupt, DiskFull):
                raise
            except BaseException as exc:  # a plugin calling sys.exit() fails its job, never ends the run
                record, arrays = self._error(job, exc), None
        self._record(job, record, started, arrays)
        return record

    @staticmethod
    def _blocked_record(model: str) -> dict:
        return {"status": "error", "blocked_by": model, "message": f"model {model!r} could not be trained; see its train job"}

    def _record(self, job: Job, record: dict, started: float, arrays) -> None:
        record.update(
            id=job.id,
            kind=job.kind,
            key=job.key,
            model=job.model,
            seconds=round(time.perf_counter() - started, 3),
            seed=job.seed,
            spec_hash=self.spec.hash,
            versions=versions(),
            # the model's own float type where the job knows it (a float16 file is not float32)
            environment={**self.environment, **({"precision": record.pop("precision")} if "precision" in record else {})},
        )
        if job.norm:
            record.update(
                norm=job.norm, eps=job.eps, method=job.method.name, label=job.method.label, settings=job.method.as_dict()
            )
        self.store.save_job(record, arrays)

    def record_failure(self, job: Job, exc: BaseException) -> dict:
        """Save an error record for a job that ended outside :meth:`run_one` (its worker was
        lost for good); returns it."""
        record = self._error(job, exc)
        self._record(job, record, time.perf_counter(), None)
        return record

    def _error(self, job: Job, exc: BaseException) -> dict:
        message = f"{exc.__class__.__name__}: {exc}"
        self.reporter.warn(f"{job.id} failed: {short_message(message)} (in full: {self.store.job_path(job.id)})")
        return {"status": "error", "message": message, "traceback": traceback.format_exc()}


class PluginExit(BaseException):
    """A job called ``os._exit`` or ``os.abort`` (which would end the run at once, losing its
    output): the job fails instead."""


@contextlib.contextmanager
def no_exits():
    """While a job runs, ``os._exit`` and ``os.abort`` raise :class:`PluginExit` instead of
    ending the process (``sys.exit`` raises ``SystemExit`` anyway): a plugin can fail its job,
    never end the run."""
    import os

    saved = os._exit, os.abort

    def refuse(*arguments):
        what = f"os._exit({arguments[0]!r})" if arguments else "os.abort()"
        raise PluginExit(f"the job called {what}, which would have ended the run; it fails instead")

    os._exit, os.abort = refuse, refuse
    try:
        yield
    finally:
        os._exit, os.abort = saved
