"""From a validated spec to finished job records.

The work is split into jobs, each a self-contained unit whose inputs (the spec, the
dataset, a trained model file) and output (one record) live in the run directory:

* ``<model>/train``: train the model (or load the pretrained file) and save it;
* ``<model>/clean``: clean predictions on the evaluated examples, randomness check;
* ``<model>/<norm>/attack-<label>`` and ``<model>/<norm>/certify-<label>``.

Each job has a key, the hash of everything that determines its result; a job whose
record exists with the same key is skipped, so an interrupted run resumes where it
stopped and a changed spec recomputes exactly what changed.  Each job seeds its own
random numbers from the spec's seed and its id, so the order in which jobs run (or
whether they ran in an earlier, interrupted process) does not change any result.
"""

from __future__ import annotations

import hashlib
import platform
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

import advbench
from advbench.data import Subsets, load_arrays, make_subsets
from advbench.errors import AdvbenchError, Problem, SpecError
from advbench.evaluation import KEEP_ADVERSARIAL, attack_radii, certified_radii, gradient_check
from advbench import backend
from advbench.lazy import keras
from advbench.plugins import host_fingerprint
from advbench.spec import ModelPlan, Spec, stable_hash
from advbench.store import DiskFull, RunStore, file_digest, write_json

RANDOMNESS_PROBE = 32
"""Examples used to check whether two identical calls of a model differ."""


@dataclass
class Job:
    id: str
    kind: str  # train | clean | attack | certify
    model: str
    key: str  # everything that determines the result, the backend included
    norm: str | None = None
    method: object | None = None  # ComponentRef of the attack or certifier
    eps: list[float] = field(default_factory=list)
    identity: str = ""  # the same without the backend: it seeds the job, so backends draw alike

    @property
    def seed(self) -> int:
        return int((self.identity or self.key)[:8], 16) % (2**31 - 1)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "advbench": advbench.__version__}
    for package in (backend.BACKENDS.get(backend.name(), backend.name()), "keras", "numpy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def pretrained_model(plan: ModelPlan, input_shape, num_classes: int, as_given: bool = False):
    """A pretrained model as the spec gives it (a Keras file or a PyTorch module); one
    that outputs probabilities (``outputs: probabilities``) gets a log, its logits,
    unless ``as_given``."""
    if plan.path is not None:
        model = load_keras_model(plan.path)
    else:
        t = plan.torch
        model = backend.torch_model(t.file, t.attribute, t.arguments, t.weights, t.layout, input_shape, num_classes)
    if plan.outputs == "probabilities" and not as_given:
        from advbench.layers import LogProbabilities

        model = keras.Model(model.inputs, LogProbabilities(name="logits_from_probabilities")(model.outputs[0]), name=model.name)
    return model


def load_keras_model(path: Path):
    """A saved Keras model; advbench's own layers (``advbench.layers``) are known to Keras
    first, so a model advbench saved loads in any process and on any backend."""
    import advbench.layers  # noqa: F401 (registers the layers' classes for deserialization)

    return keras.models.load_model(path, compile=False)


class Pipeline:
    """Plans and runs the jobs of one spec in one run directory."""

    def __init__(self, spec: Spec, store: RunStore, reporter: "Reporter | None" = None):
        self.spec = spec
        self.store = store
        self.reporter = reporter or Reporter()
        self.data: Subsets | None = None
        self.environment = backend.describe()
        dataset = spec.dataset.identity()
        evaluation = spec.evaluation.model_dump(mode="json")
        self.data_identity = stable_hash({"dataset": dataset, "seed": spec.seed, "examples": evaluation["examples"]})
        self._evaluation_identity = stable_hash({k: v for k, v in evaluation.items() if k != "examples"})
        self.model_identities = {plan.name: self._model_identity(plan) for plan in spec.models}
        self._model_keys: dict[str, str] | None = None

    # -- planning ---------------------------------------------------------------------
    #
    # A job's *identity* is what the spec says about it (it seeds the job, so that every
    # backend and every version of the code draws alike); its *key* adds everything else
    # that determines the result: the backend and its precision, the code of advbench
    # and of every plugin the job uses (for an editable install, their source), and the
    # content of the data.  A job is redone whenever its key changes.

    def _key(self, identity: str, *upstream: str) -> str:
        return stable_hash([identity, self.environment["backend"], self.environment["precision"], *upstream])

    def _plugin(self, ref) -> str:
        """The fingerprint of the plugin that registered a component (see :class:`advbench.plugins.PluginInfo`)."""
        return self.spec.host.plugins[ref.plugin].fingerprint if ref.plugin in self.spec.host.plugins else ref.plugin

    def _model_identity(self, plan: ModelPlan) -> str:
        what: dict = {"data": self.data_identity, "defense": plan.defense.identity(), "seed": plan.seed, "outputs": plan.outputs}
        if plan.path is not None:
            what["file"] = file_digest(plan.path)
        elif plan.torch is not None:
            what["torch"] = {**plan.torch.as_dict(), "module": file_digest(plan.torch.file), "attribute": plan.torch.attribute,
                             "weights": file_digest(plan.torch.weights) if plan.torch.weights else None}
        else:
            what.update(architecture=plan.architecture.identity(), training=plan.training.model_dump(mode="json"))
        return stable_hash(what)

    @property
    def model_keys(self) -> dict[str, str]:
        """Each model's training key (loads the data: its content is part of the key)."""
        if self._model_keys is None:
            data = self.load_data()
            self.code = {"advbench": host_fingerprint(), "dataset": self._plugin(self.spec.dataset), "data": data.fingerprint}
            self._model_keys = {}
            for plan in self.spec.models:
                components = [ref for ref in [plan.architecture, *plan.defense.refs] if ref is not None]
                self._model_keys[plan.name] = self._key(
                    self.model_identities[plan.name], *self.code.values(), *(self._plugin(ref) for ref in components)
                )
        return self._model_keys

    def plan(self) -> list[Job]:
        jobs: list[Job] = []
        for plan in self.spec.models:
            model_identity, model_key = self.model_identities[plan.name], self.model_keys[plan.name]
            jobs.append(Job(f"{plan.name}/train", "train", plan.name, model_key, identity=model_identity))
            clean_identity = stable_hash([model_identity, self.data_identity, self._evaluation_identity])
            clean_key = self._key(clean_identity, model_key)
            jobs.append(Job(f"{plan.name}/clean", "clean", plan.name, clean_key, identity=clean_identity))
            for threat in self.spec.threat_models:
                for kind, methods in (("attack", self.spec.attacks), ("certify", self.spec.certifiers)):
                    for method in methods:
                        identity = stable_hash([clean_identity, threat.norm, threat.eps, kind, method.identity()])
                        job_id = f"{plan.name}/{threat.norm}/{kind}-{method.label}"
                        key = self._key(identity, clean_key, self._plugin(method))
                        jobs.append(Job(job_id, kind, plan.name, key, threat.norm, method, list(threat.eps), identity))
        return jobs

    def plugins_used(self) -> dict[str, str]:
        """Every plugin a job of this spec uses, with its version or source fingerprint (the provenance)."""
        refs = [self.spec.dataset, *self.spec.attacks, *self.spec.certifiers]
        refs += [ref for plan in self.spec.models for ref in [plan.architecture, *plan.defense.refs] if ref is not None]
        used = {"advbench (host)": host_fingerprint()}
        for ref in refs:
            info = self.spec.host.plugins.get(ref.plugin)
            used[ref.plugin if info is None else f"{info.name} ({info.source})"] = self._plugin(ref)
        return dict(sorted(used.items()))

    # -- checks before any work ----------------------------------------------------------

    def load_data(self) -> Subsets:
        if self.data is None and self.spec.loaded is not None:
            self.data = self.spec.loaded  # loaded by the spec's data checks
        if self.data is None:
            ref = self.spec.dataset
            self.data = make_subsets(
                load_arrays(ref), ref.params.train_size, ref.params.test_size, self.spec.evaluation.examples, self.spec.seed
            )
        return self.data

    # -- running ---------------------------------------------------------------------------

    def run(self, executor=None) -> "RunSummary":
        """Run every unfinished job with ``executor`` (see :mod:`advbench.executors`; by
        default one after another in this process)."""
        from advbench.executors import InProcess

        backend.enable_determinism()
        jobs = self.plan()
        data = self.load_data()
        write_json(self.store.root / "plan.json", {
            "spec_hash": self.spec.hash, "jobs": {j.id: j.key for j in jobs}, "plugins": self.plugins_used(),
            "data": {"fingerprint": data.fingerprint, "train": int(len(data.train_index)), "test": int(len(data.test_index)),
                     "evaluated": int(len(data.eval_index))},
        })
        todo = [job for job in jobs if not self._finished(job)]
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
        if job.kind == "train":
            return self._run_job(job, self.spec.model(job.model).training.epochs, lambda advance: self._train(job, advance))
        blocked = sorted(self.needs(job) & set(failed))
        if blocked:
            return self._run_job(job, 0, lambda advance: (self._blocked_record(blocked[0]), None))
        size = len(self.load_data().eval_index)
        return self._run_job(job, size, lambda advance: self._evaluate(job, self.targets.target(job.model), advance))

    def _finished(self, job: Job) -> bool:
        """A job is done when its record reads back whole for its key and did not fail
        (failures are retried); a training job also needs its model file, unchanged."""
        record = self.store.job_record(job.id, job.key)
        if record is None or record.get("status") == "error":
            return False
        return job.kind != "train" or self.store.model_record(job.model, job.key) is not None

    @property
    def targets(self) -> "Targets":
        if not hasattr(self, "_targets"):
            self._targets = Targets(self)
        return self._targets

    def _run_job(self, job: Job, size: int, work) -> dict:
        started = time.perf_counter()
        with self.reporter.job(job, size) as advance:
            try:
                backend.set_seed(job.seed)
                self.targets.forget_randomized()
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
            environment=self.environment,
        )
        if job.norm:
            record.update(norm=job.norm, eps=job.eps, method=job.method.name, label=job.method.label, settings=job.method.as_dict())
        self.store.save_job(record, arrays)

    def record_failure(self, job: Job, exc: BaseException) -> dict:
        """Save an error record for a job that ended outside :meth:`run_one` (its worker was
        lost for good); returns it."""
        record = self._error(job, exc)
        self._record(job, record, time.perf_counter(), None)
        return record

    def _error(self, job: Job, exc: BaseException) -> dict:
        from advbench.results import short_message

        message = f"{exc.__class__.__name__}: {exc}"
        self.reporter.warn(f"{job.id} failed: {short_message(message)} (in full: {self.store.job_path(job.id)})")
        return {"status": "error", "message": message, "traceback": traceback.format_exc()}

    # -- training ----------------------------------------------------------------------------

    def _build(self, plan: ModelPlan):
        """The trainable model: architecture, then the defense's changes."""
        data = self.load_data()
        architecture = plan.architecture.build()
        model = architecture.build(data.data.input_shape, data.data.num_classes)
        return plan.defense.build().prepare_model(model)

    def _pretrained(self, plan: ModelPlan):
        data = self.load_data().data
        return pretrained_model(plan, data.input_shape, data.num_classes)

    def _train(self, job: Job, advance) -> tuple[dict, dict]:
        from advbench.training import train_model

        plan = self.spec.model(job.model)
        data = self.load_data()
        record = {"status": "ok", "train_size": int(len(data.train_index)), "dataset": data.data.info}
        if plan.path is not None or plan.torch is not None:
            model = self._pretrained(plan)
            source = plan.path if plan.path is not None else plan.torch.file
            record.update(pretrained=str(source), sha256=file_digest(source))
            advance(plan.training.epochs)
        else:
            from advbench.training import initialize

            model = self._build(plan)
            initialize(model, job.seed)
            defense = plan.defense.build()
            history = train_model(
                model, defense, plan.training, data.x_train, data.y_train, job.seed,
                on_epoch=lambda epoch, logs: advance(1, f"epoch {epoch + 1}: loss {logs['loss']:.3f}"),
            )
            record["history"] = history
        target = make_target(model, plan, data, self.spec.evaluation)
        predicted = target.predict(data.x_test)
        record["test_accuracy"] = float(np.mean(predicted == data.y_test))
        from advbench.checks import near_chance

        if near_chance(record["test_accuracy"], data.data.num_classes):
            self.reporter.warn(f"{plan.name}: test accuracy {100 * record['test_accuracy']:.1f}% is near chance "
                               f"({data.data.num_classes} classes); are its inputs scaled as the model expects ([0, 1])?")
        record["parameters"] = int(model.count_params())
        self.store.save_model(model, plan.name, job.key, record)
        return record, {"train_index": data.train_index, "test_index": data.test_index}

    def _load_model(self, plan: ModelPlan):
        key = self.model_keys[plan.name]
        path = self.store.model_path(plan.name, key)
        if self.store.model_record(plan.name, key) is None:
            raise AdvbenchError(f"model {plan.name!r} has no trained file for key {key[:12]}; its train job failed")
        if plan.path is not None:
            return load_keras_model(path)
        if plan.torch is not None:
            return self._pretrained(plan)  # from the spec's files, whose digests are in the key
        model = self._build(plan)  # our own code defines the model; the file holds the weights
        model.load_weights(path)
        return model

    # -- evaluation --------------------------------------------------------------------------

    def _evaluate(self, job: Job, target, advance) -> tuple[dict, dict | None]:
        data = self.load_data()
        x, y = data.x_eval, data.y_eval
        predicted = target.predict(x)
        if job.kind == "clean":
            defense = self.spec.model(job.model).defense.build()
            diagnostics = defense.diagnostics(target, x, y, self.store.root / "diagnostics", job.model)
            advance(len(x))
            return {
                "gradients": gradient_check(target, x, y),
                "diagnostics": diagnostics,
                "dataset": data.data.info,
                "status": "ok",
                "index": data.eval_index.tolist(),
                "label": y.tolist(),
                "predicted": predicted.tolist(),
                "clean_accuracy": float(np.mean(predicted == y)),
                "classes": int(data.data.num_classes),
                "class_names": [str(name) for name in data.data.class_names],
                "randomness": target.randomness,
                "eot": target.protocol(),
                "examples": int(len(x)),
            }, None
        method = job.method.build()
        record: dict = {"examples": int(len(x)), "eot": target.protocol()}
        if job.norm not in method.norms:
            advance(len(x))
            return {**record, "status": "not_applicable", "message": f"{job.method.name} supports {', '.join(method.norms)}, not {job.norm}"}, None
        target.reset_counts()
        evaluation = self.spec.evaluation
        if job.kind == "certify":
            reason = None
            if target.randomized and not method.supports_randomized:
                reason = "the model is randomized; this certifier needs a deterministic model"
            reason = reason or method.check(target)
            if reason:
                advance(len(x))
                return {**record, "status": "not_applicable", "message": reason}, None
            radius, details = certified_radii(method, target, x, y, predicted, job.norm, evaluation.batch_size, advance)
            record.update(status="ok", radius=radius.tolist(), probabilistic=method.probabilistic,
                          certifies_smoothed=method.certifies_smoothed, details=details)
            return record, None
        outcome = attack_radii(
            method, target, x, y, predicted, job.norm, job.eps, evaluation.radius_tolerance, job.seed, evaluation.batch_size, advance,
            context=self.targets,
        )
        record.update(
            status="ok",
            minimal_norm=method.minimal_norm,
            radius=outcome.radius.tolist(),
            success=outcome.success.tolist(),
            fixed_budget_success=outcome.fixed_budget_success.tolist(),
            tolerance=None if method.minimal_norm else evaluation.radius_tolerance,
            attack_calls=outcome.attack_calls,
            evaluations=target.evaluations(),
            uses_gradients=method.uses_gradients,
        )
        if outcome.found_by is not None:
            record["found_by"] = outcome.found_by
        keep = slice(0, KEEP_ADVERSARIAL)
        kept = outcome.adversarial[keep]
        return record, {"index": data.eval_index[keep], "original": x[keep], "adversarial": kept,
                        "label": y[keep], "predicted": target.predict(kept)}





def make_target(model, plan: ModelPlan, data: Subsets, evaluation):
    """Wrap a trained model for evaluation: the defense's inference model, its declared
    randomness checked against two identical calls, EOT settings from the spec."""
    from advbench.target import Target

    defense = plan.defense.build()
    inference = defense.inference_model(model)
    declared = bool(defense.randomized())
    probe = Target(inference, num_classes=data.data.num_classes, batch_size=evaluation.batch_size)
    observed = probe.differs_between_calls(data.x_eval[:RANDOMNESS_PROBE])
    target = Target(
        inference,
        num_classes=data.data.num_classes,
        randomized=declared or observed,
        eot=evaluation.eot,
        eot_samples=evaluation.eot_samples,
        final_draws=evaluation.final_draws,
        batch_size=evaluation.batch_size,
        base_model=model,
    )
    target.randomness = {"declared": declared, "observed": observed}
    return target


class Targets:
    """The evaluated models of a run, deterministic ones loaded once, randomized ones once
    per job: what ``Attack.prepare`` sees as ``context`` (``context.target(name)``, e.g. a
    transfer attack's source)."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self._loaded: dict = {}
        self._warned: set[str] = set()

    def forget_randomized(self) -> None:
        """Drop the randomized models, so that the next job loads them afresh after seeding.

        TensorFlow's stateful random ops keep their state inside a traced function, so a
        randomized model reused across jobs would draw differently depending on which jobs
        ran before it in this process; reloaded, its draws depend on the job's seed alone,
        and a resumed run equals an uninterrupted one."""
        self._loaded = {name: target for name, target in self._loaded.items() if not target.randomized}

    def target(self, name: str):
        if name not in self._loaded:
            plan = self.pipeline.spec.model(name)
            model = self.pipeline._load_model(plan)
            target = make_target(model, plan, self.pipeline.load_data(), self.pipeline.spec.evaluation)
            if target.randomized and not target.eot and name not in self._warned:
                self._warned.add(name)
                self.pipeline.reporter.warn(
                    f"{name} is randomized but the spec turns EOT off: its evaluation is invalid and marked so in the leaderboard"
                )
            self._loaded[name] = target
        return self._loaded[name]


@dataclass
class RunSummary:
    total: int = 0
    skipped: int = 0
    done: int = 0
    errors: list[dict] = field(default_factory=list)


class Reporter:
    """Progress reporting; the default reports nothing (the CLI passes a Rich one).

    A job's progress is ``handle = begin(job, size)``, then ``advance(handle, n)`` as work
    is done and ``end(handle)`` when the job's record is saved; :meth:`job` wraps the three
    for a job run in this process.  Executors that run jobs in parallel also call
    :meth:`queue` with how many jobs are running and how many wait."""

    def start(self, total: int, skipped: int) -> None:
        pass

    def begin(self, job: Job, size: int):
        return None

    def advance(self, handle, n: int, description: str | None = None) -> None:
        pass

    def end(self, handle, finished: bool = True) -> None:
        """The job's bar goes; ``finished``: its record is saved (False: it will start again)."""

    def queue(self, running: int, waiting: int) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    @contextmanager
    def job(self, job: Job, size: int):
        """A context manager yielding ``advance(n, description=None)``."""
        handle = self.begin(job, size)
        try:
            yield lambda n, description=None: self.advance(handle, n, description)
        finally:
            self.end(handle)
