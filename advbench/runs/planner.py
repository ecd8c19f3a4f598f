"""Planning a run: the jobs of a spec with their identities and keys.

A job's *identity* is what the spec says about it (it seeds the job, so that every
backend and every version of the code draws alike); its *key* adds everything else that
determines the result: the backend and its precision, the code of advbench and of every
plugin the job uses (for an editable install, their source), and the content of the
data.  A job whose record exists with the same key is skipped, so an interrupted run
resumes where it stopped and a changed spec recomputes exactly what changed.
"""

from __future__ import annotations

import platform
from importlib import metadata

import advbench
from advbench.contract.plugins import record_fingerprint
from advbench.core.data import Subsets, load_arrays, make_subsets
from advbench.kit import backend
from advbench.kit.datafiles import file_digest
from advbench.runs.jobs import Job, job_id
from advbench.spec.resolved import ModelPlan, Spec, stable_hash


def versions() -> dict[str, str]:
    """The versions of Python, advbench, the framework, Keras and NumPy (recorded with every result)."""
    found = {"python": platform.python_version(), "advbench": advbench.__version__}
    for package in (backend.BACKENDS.get(backend.name(), backend.name()), "keras", "numpy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


class Planner:
    """The jobs of one spec, with their identities and keys, and the data they use."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.data: Subsets | None = None
        self.identity = backend.identity()  # what keys hold, read without importing Keras
        self._environment: dict | None = None
        dataset = spec.dataset.identity()
        evaluation = spec.evaluation.model_dump(mode="json")
        self.data_identity = stable_hash({"dataset": dataset, "seed": spec.seed, "examples": evaluation["examples"]})
        self._evaluation_identity = stable_hash({k: v for k, v in evaluation.items() if k != "examples"})
        self.model_identities = {plan.name: self._model_identity(plan) for plan in spec.models}
        self._model_keys: dict[str, str] | None = None

    @property
    def environment(self) -> dict[str, str]:
        """The backend, device and precision recorded with a job that runs (this imports
        Keras, and checks it runs as :attr:`identity` says)."""
        if self._environment is None:
            self._environment = backend.describe()
            backend.check_identity(self.identity)
        return self._environment

    def _key(self, identity: str, *upstream: str) -> str:
        return stable_hash([identity, self.identity["backend"], self.identity["precision"], *upstream])

    def _plugin(self, ref) -> str:
        """The fingerprint of the plugin that registered a component (see :class:`advbench.contract.plugins.PluginInfo`)."""
        return self.spec.host.plugins[ref.plugin].fingerprint if ref.plugin in self.spec.host.plugins else ref.plugin

    def _model_identity(self, plan: ModelPlan) -> str:
        what: dict = {"data": self.data_identity, "defense": plan.defense.identity(), "seed": plan.seed, "outputs": plan.outputs}
        if plan.path is not None:
            what["file"] = file_digest(plan.path)
            if plan.normalization is not None:
                what["normalization"] = plan.normalization
        elif plan.torch is not None:
            what["torch"] = {
                **plan.torch.as_dict(),
                "module": file_digest(plan.torch.file),
                "attribute": plan.torch.attribute,
                "weights": file_digest(plan.torch.weights) if plan.torch.weights else None,
            }
        else:
            what.update(architecture=plan.architecture.identity(), training=plan.training.model_dump(mode="json"))
        return stable_hash(what)

    @property
    def model_keys(self) -> dict[str, str]:
        """Each model's training key (loads the data: its content is part of the key)."""
        if self._model_keys is None:
            data = self.load_data()
            self.code = {"advbench": record_fingerprint(), "dataset": self._plugin(self.spec.dataset), "data": data.fingerprint}
            self._model_keys = {}
            for plan in self.spec.models:
                components = [ref for ref in [plan.architecture, *plan.defense.refs] if ref is not None]
                self._model_keys[plan.name] = self._key(
                    self.model_identities[plan.name], *self.code.values(), *(self._plugin(ref) for ref in components)
                )
        return self._model_keys

    def plan(self) -> list[Job]:
        """Every job of the spec, in the spec's order: per model its training, its clean
        job, then every attack and certifier under every threat model."""
        jobs: list[Job] = []
        for plan in self.spec.models:
            model_identity, model_key = self.model_identities[plan.name], self.model_keys[plan.name]
            jobs.append(Job(job_id(plan.name, "train"), "train", plan.name, model_key, identity=model_identity))
            clean_identity = stable_hash([model_identity, self.data_identity, self._evaluation_identity])
            clean_key = self._key(clean_identity, model_key)
            jobs.append(Job(job_id(plan.name, "clean"), "clean", plan.name, clean_key, identity=clean_identity))
            for threat in self.spec.threat_models:
                for kind, methods in (("attack", self.spec.attacks), ("certify", self.spec.certifiers)):
                    for method in methods:
                        identity = stable_hash([clean_identity, threat.norm, threat.eps, kind, method.identity()])
                        key = self._key(identity, clean_key, self._plugin(method))
                        jobs.append(
                            Job(
                                job_id(plan.name, kind, threat.norm, method.label),
                                kind,
                                plan.name,
                                key,
                                threat.norm,
                                method,
                                list(threat.eps),
                                identity,
                            )
                        )
        return jobs

    def plugins_used(self) -> dict[str, str]:
        """Every plugin a job of this spec uses, with its version or source fingerprint (the provenance)."""
        refs = [self.spec.dataset, *self.spec.attacks, *self.spec.certifiers]
        refs += [ref for plan in self.spec.models for ref in [plan.architecture, *plan.defense.refs] if ref is not None]
        used = {"advbench (host)": record_fingerprint()}
        for ref in refs:
            info = self.spec.host.plugins.get(ref.plugin)
            used[ref.plugin if info is None else f"{info.name} ({info.source})"] = self._plugin(ref)
        return dict(sorted(used.items()))

    def load_data(self) -> Subsets:
        """The data subsets of the run (loaded once; the spec's data checks may have loaded them already)."""
        if self.data is None and self.spec.loaded is not None:
            self.data = self.spec.loaded
        if self.data is None:
            ref = self.spec.dataset
            self.data = make_subsets(
                load_arrays(ref), ref.params.train_size, ref.params.test_size, self.spec.evaluation.examples, self.spec.seed
            )
        return self.data
