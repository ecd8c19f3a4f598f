"""The Ray executor: jobs in parallel on Ray, on this machine or a cluster.

Ray (``--executor ray``, ``pip install -e ".[ray]"``) runs each job as a task with the
spec's ``resources`` (CPUs and GPUs per job), after the trainings it needs (its model's,
and a transfer attack's source model's); Ray reruns a task whose worker process or node
was lost (``resources.retries``).  Workers read the spec, the data and the trained models
and write their records in the run directory themselves: on a cluster the run directory
and the spec must be on a filesystem every node mounts at the same path (see the README).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from advbench.errors import AdvbenchError, UsageError
from advbench.runs.jobs import Job
from advbench.runs.reporting import Reporter
from advbench.runs.runner import Runner
from advbench.runs.store import DiskFull, RunStore

POLL_SECONDS = 0.2
"""How often the driver relays the workers' progress while it waits for jobs."""

FORWARDED_ENVIRONMENT = ("KERAS_BACKEND", "ADVBENCH_DATA", "ADVBENCH_CACHE", "TF_CPP_MIN_LOG_LEVEL")
"""The driver's environment variables that the workers get too (where data lives, the backend)."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError(
            '--executor ray: Ray is not installed (pip install "advbench[ray]", or pip install -e ".[ray]" in a checkout)'
        ) from None
    return ray


@dataclass(frozen=True)
class WorkerContext:
    """What a worker needs to rebuild the driver's pipeline: the spec, the run directory and
    the backend; the spec's hash to check that it read the same spec."""

    spec_file: str
    strict: bool
    run_dir: str
    backend: str
    spec_hash: str
    omp_threads: str | None = None  # the driver's OMP_NUM_THREADS (Ray sets its own in workers)


class RayExecutor:
    """Each job a Ray task; ``address`` joins a running cluster (``ray start --head`` on one
    machine, ``ray start --address ...`` on the others), none starts Ray on this machine."""

    def __init__(self, address: str | None = None, strict: bool = False, num_cpus: int | None = None):
        import_ray()  # before any work: a missing extra is a usage error
        self.address = address
        self.strict = strict
        self.num_cpus = num_cpus  # for a local Ray: the cores it may use (default: all)

    def execute(self, pipeline: Runner, todo: list[Job]) -> Iterator[dict]:
        ray = import_ray()
        environment = {name: os.environ[name] for name in FORWARDED_ENVIRONMENT if name in os.environ}
        environment["KERAS_BACKEND"] = pipeline.planner.identity["backend"]
        # GPU memory taken as needed, so that jobs sharing a GPU (gpus_per_job < 1) fit.  The
        # frameworks' CPU thread pools keep their defaults: their size changes the order of
        # floating-point sums, and a run must give the same bits with either executor.
        environment.update(TF_FORCE_GPU_ALLOW_GROWTH="true", XLA_PYTHON_CLIENT_PREALLOCATE="false")
        started = time.perf_counter()
        try:
            ray.init(
                address=self.address or "local",
                num_cpus=None if self.address else self.num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                runtime_env={"env_vars": environment},
            )
        except Exception as exc:  # noqa: BLE001 (Ray raises ConnectionError, RuntimeError, ValueError...)
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
            raise AdvbenchError(f"--executor ray: could not start or join {where}: {exc.__class__.__name__}: {exc}") from None
        pipeline.reporter.note(
            f"Ray {ray.__version__}: {_describe_cluster(ray.cluster_resources())}, ready in {time.perf_counter() - started:.1f} s"
        )
        try:
            yield from self._schedule(ray, pipeline, todo)
        finally:
            ray.shutdown()

    def _schedule(self, ray, pipeline: Runner, todo: list[Job]) -> Iterator[dict]:
        resources = pipeline.spec.resources
        cluster = ray.cluster_resources()
        gpus = resources.gpus_per_job if resources.gpus_per_job is not None else (1.0 if cluster.get("GPU", 0) else 0.0)
        _check_fits(ray, resources.cpus_per_job, gpus)
        if pipeline.spec.file is None:
            raise UsageError("--executor ray: the workers read the spec from its file; give the spec as a file, not as data")
        context = WorkerContext(
            str(Path(pipeline.spec.file).resolve()),
            self.strict,
            str(pipeline.store.root.resolve()),
            pipeline.planner.identity["backend"],
            pipeline.spec.hash,
            os.environ.get("OMP_NUM_THREADS"),
        )
        board = ray.remote(num_cpus=0)(Board).remote()
        # a GPU job gets a fresh worker process (max_calls=1), whose framework sees only the
        # device Ray gave the job (CUDA_VISIBLE_DEVICES is read once, at the framework's import)
        task = ray.remote(
            num_cpus=resources.cpus_per_job,
            num_gpus=gpus,
            max_calls=1 if gpus else 0,
            max_retries=resources.retries,
            retry_exceptions=False,
        )(run_on_worker)
        reporter = pipeline.reporter
        waiting = list(todo)  # the plan's order: Ray starts the tasks it can in the order they came
        training = {job.model for job in todo if job.kind == "train"}  # trainings not finished yet
        failed: set[str] = set()
        running: dict = {}  # object ref -> job
        bars: dict[str, object] = {}  # job id -> the reporter's handle of its bar
        ended: set[str] = set()
        jobs = {job.id: job for job in todo}

        def relay() -> None:
            for kind, job_id, *rest in ray.get(board.take.remote()):
                if kind == "warn":
                    reporter.warn(rest[0])
                elif job_id in ended:
                    continue  # a late message of a job already finished
                elif kind == "begin":
                    if job_id in bars:  # Ray reran it
                        reporter.note(f"{job_id}: started again (its worker process was lost)")
                        reporter.end(bars.pop(job_id), finished=False)
                    bars[job_id] = reporter.begin(jobs[job_id], rest[0])
                elif kind == "advance" and job_id in bars:
                    reporter.advance(bars[job_id], *rest)
            reporter.queue(len(bars), len(todo) - len(ended) - len(bars))

        while waiting or running:
            ready = [job for job in waiting if not pipeline.needs(job) & training]
            for job in ready:
                waiting.remove(job)
                ref = task.options(name=f"advbench {job.id}").remote(context, job.id, job.key, sorted(failed), board)
                running[ref] = job
            done, _ = ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
            relay()
            for ref in done:
                job = running.pop(ref)
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # raised by the job outside its own error handling
                    if isinstance(exc.cause, (DiskFull, KeyboardInterrupt)):
                        raise exc.cause from None
                    record = pipeline.record_failure(job, exc.cause or exc)
                except ray.exceptions.RayError as exc:  # the worker or its node was lost more often than retries allow
                    record = pipeline.record_failure(job, exc)
                ended.add(job.id)
                if job.id in bars:
                    reporter.end(bars.pop(job.id))
                else:
                    reporter.end(reporter.begin(job, 0))
                if job.kind == "train":
                    training.discard(job.model)
                    if record["status"] == "error":
                        failed.add(job.model)
                yield record
            relay()


class Board:
    """A Ray actor through which workers report progress and warnings to the driver."""

    def __init__(self):
        self.messages: list[tuple] = []

    def post(self, message: tuple) -> None:
        self.messages.append(message)

    def take(self) -> list[tuple]:
        messages, self.messages = self.messages, []
        return messages


class BoardReporter(Reporter):
    """A worker's reporter: sends begin, advance and warnings to the driver's :class:`Board`
    (the driver ends a job's bar when its result arrives)."""

    def __init__(self, board):
        self.board = board

    def begin(self, job: Job, size: int):
        self.board.post.remote(("begin", job.id, size))
        return job.id

    def advance(self, handle, n: int, description: str | None = None) -> None:
        self.board.post.remote(("advance", handle, n, description))

    def warn(self, message: str) -> None:
        self.board.post.remote(("warn", None, f"[{socket.gethostname()}] {message}"))


_pipelines: dict[WorkerContext, tuple[Runner, dict[str, Job]]] = {}


def run_on_worker(context: WorkerContext, job_id: str, key: str, failed: list[str], board) -> dict:
    """A Ray task: one job, run by a pipeline rebuilt in this worker process (once per
    process and run) from the spec file, which must plan the job with the driver's key."""
    if context not in _pipelines:
        pipeline = worker_pipeline(context)
        _pipelines[context] = pipeline, {job.id: job for job in pipeline.plan()}
    pipeline, jobs = _pipelines[context]
    pipeline.reporter = BoardReporter(board)
    job = jobs.get(job_id)
    if job is None or job.key != key:
        raise AdvbenchError(
            f"the worker on {socket.gethostname()} computes another key for {job_id} than the driver: its advbench, its "
            "plugins or its data differ from the driver's (install the same code and data on every node)"
        )
    return pipeline.run_one(job, set(failed))


def worker_pipeline(context: WorkerContext) -> Runner:
    # Ray caps OMP_NUM_THREADS at the task's CPUs; PyTorch would then sum in another order
    # than in the driver's process (set before the framework is imported)
    if context.omp_threads is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = context.omp_threads
    from advbench.kit import backend
    from advbench.spec.loading import load_spec

    if backend.name() != context.backend:
        raise AdvbenchError(
            f"the worker on {socket.gethostname()} runs Keras on {backend.name()}, the driver on {context.backend}"
        )
    spec = load_spec(context.spec_file, strict=context.strict)
    if spec.hash != context.spec_hash:
        raise AdvbenchError(
            f"the worker on {socket.gethostname()} reads another spec at {context.spec_file} than the driver "
            "(was it edited during the run, or is it not on a shared filesystem?)"
        )
    backend.enable_determinism()
    return Runner(spec, RunStore(context.run_dir))


def _describe_cluster(resources: dict) -> str:
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    nodes = sum(1 for name in resources if name.startswith("node:") and not name.startswith("node:__internal"))
    return f"{nodes} node(s), {cpus:g} CPU(s), {gpus:g} GPU(s)"


def _check_fits(ray, cpus: float, gpus: float) -> None:
    """Refuse per-job resources that no node has (Ray would wait for them forever)."""
    for node in ray.nodes():
        have = node.get("Resources", {})
        if node.get("Alive") and have.get("CPU", 0) >= cpus and have.get("GPU", 0) >= gpus:
            return
    raise UsageError(
        f"resources: no node of the Ray cluster has {cpus:g} CPU(s) and {gpus:g} GPU(s) for one job "
        f"({_describe_cluster(ray.cluster_resources())}); lower cpus_per_job or gpus_per_job in the spec"
    )
