"""The models of a run as attacks and certifiers see them (:class:`~advbench.kit.target.Target`),
and the ``context`` an attack's ``prepare`` receives: another model of the spec
(``context.target(name)``, a transfer attack's source) or another registered attack
(``context.attack(name, **params)``, an ensemble's members)."""

from __future__ import annotations

from advbench.core.checks import observed_randomness
from advbench.core.models import load_keras_model, pretrained_model
from advbench.errors import AdvbenchError
from advbench.kit.target import Target


def make_target(model, defense, num_classes: int, probe, evaluation) -> Target:
    """Wrap a trained model for evaluation: the defense's inference model, its declared
    randomness checked against identical calls on ``probe`` (test images), EOT settings
    from the spec's evaluation section."""
    inference = defense.inference_model(model)
    declared = bool(defense.randomized())
    observed = observed_randomness(Target(inference, num_classes=num_classes, batch_size=evaluation.batch_size), probe)
    target = Target(
        inference,
        num_classes=num_classes,
        randomized=declared or observed,
        eot=evaluation.eot,
        eot_samples=evaluation.eot_samples,
        final_draws=evaluation.final_draws,
        batch_size=evaluation.batch_size,
    )
    target.randomness = {"declared": declared, "observed": observed}
    return target


def build_model(plan, data, defense=None):
    """The trainable model of ``plan``: its architecture, then the changes of its defense
    (``defense``, the built one when the caller keeps it, e.g. to train with it)."""
    model = plan.architecture.build().build(data.data.input_shape, data.data.num_classes)
    return (plan.defense.build() if defense is None else defense).prepare_model(model)


def pretrained(plan, data):
    """The pretrained model ``plan`` names (a Keras file or a PyTorch module)."""
    return pretrained_model(
        plan.path, plan.torch, plan.outputs, data.data.input_shape, data.data.num_classes, normalization=plan.normalization
    )


class Components:
    """What ``Attack.prepare`` sees as ``context`` without a spec (:func:`advbench.evaluate`):
    the registered attacks (of ``registry``, by default every installed plugin's), and no
    other models."""

    def __init__(self, registry=None):
        self._registry = registry

    @property
    def registry(self):
        if self._registry is None:
            from advbench.contract.plugins import load_plugins

            self._registry = load_plugins().registry
        return self._registry

    def attack(self, name: str, **params):
        """A registered attack built with ``params`` (validated by its parameter model)."""
        cls = self.registry.get("attack", name)
        return cls(cls.Params(**params))

    def target(self, name: str) -> Target:
        raise AdvbenchError(f"an attack asked for the model {name!r}: a transfer attack needs a spec with its source model")


class Context(Components):
    """The evaluated models of a run, deterministic ones loaded once, randomized ones once
    per job, and the run's registry: what ``Attack.prepare`` sees as ``context``."""

    def __init__(self, spec, store, planner, reporter):
        super().__init__(spec.host.registry)
        self.spec, self.store, self.planner, self.reporter = spec, store, planner, reporter
        self._loaded: dict = {}
        self._warned: set[str] = set()

    def forget_randomized(self) -> None:
        """Drop the randomized models, so that the next job loads them afresh after seeding.

        TensorFlow's stateful random ops keep their state inside a traced function, so a
        randomized model reused across jobs would draw differently depending on which jobs
        ran before it in this process; reloaded, its draws depend on the job's seed alone,
        and a resumed run equals an uninterrupted one."""
        self._loaded = {name: target for name, target in self._loaded.items() if not target.randomized}

    def target(self, name: str) -> Target:
        """The model ``name`` of the spec, as evaluated (its defense's inference model)."""
        if name not in self._loaded:
            plan = self.spec.model(name)
            data = self.planner.load_data()
            target = make_target(
                self.load_model(plan), plan.defense.build(), data.data.num_classes, data.x_eval, self.spec.evaluation
            )
            if target.randomized and not target.eot and name not in self._warned:
                self._warned.add(name)
                self.reporter.warn(
                    f"{name} is randomized but the spec turns EOT off: its evaluation is invalid and marked so in the leaderboard"
                )
            self._loaded[name] = target
        return self._loaded[name]

    def load_model(self, plan):
        """The trained model of ``plan`` from the run directory."""
        key = self.planner.model_keys[plan.name]
        path = self.store.model_path(plan.name, key)
        if self.store.model_record(plan.name, key) is None:
            raise AdvbenchError(f"model {plan.name!r} has no trained file for key {key[:12]}; its train job failed")
        if plan.path is not None:
            return load_keras_model(path)
        if plan.torch is not None:
            return pretrained(plan, self.planner.load_data())  # from the spec's files, whose digests are in the key
        model = build_model(plan, self.planner.load_data())  # our own code defines the model; the file holds the weights
        model.load_weights(path)
        return model
