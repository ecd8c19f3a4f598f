"""One handler per job kind: what a job computes, from the store's inputs to its record.

Each handler's :meth:`~Handler.run` returns the job's record (plain data) and the arrays
too large for JSON (or ``None``); the runner (:mod:`advbench.runs.runner`) seeds the job,
catches its errors and saves the record.
"""

from __future__ import annotations

import numpy as np

from advbench.core.checks import gradient_check, near_chance, unstable_predictions
from advbench.core.training import initialize, train_model
from advbench.kit.datafiles import file_digest
from advbench.runs.context import build_model, make_target, pretrained
from advbench.runs.harness import KEEP_ADVERSARIAL, attack_radii, certified_radii


class Handler:
    """Runs the jobs of one kind; ``runner`` gives the spec, the store, the data and the models."""

    kind = ""

    def __init__(self, runner):
        self.runner = runner

    def size(self, job) -> int:
        """How many units of progress the job reports (epochs, examples)."""
        return len(self.runner.planner.load_data().eval_index)

    def run(self, job, advance) -> tuple[dict, dict | None]:
        raise NotImplementedError


class TrainHandler(Handler):
    """Train the model (or load the pretrained file), measure its test accuracy, save it."""

    kind = "train"

    def size(self, job) -> int:
        return self.runner.spec.model(job.model).training.epochs

    def run(self, job, advance):
        runner = self.runner
        plan = runner.spec.model(job.model)
        data = runner.planner.load_data()
        record = {"status": "ok", "train_size": int(len(data.train_index)), "dataset": data.data.info}
        if plan.path is not None or plan.torch is not None:
            model = pretrained(plan, data)
            source = plan.path if plan.path is not None else plan.torch.file
            record.update(pretrained=str(source), sha256=file_digest(source))
            advance(plan.training.epochs)
            defense = plan.defense.build()
        else:
            defense = plan.defense.build()
            model = build_model(plan, data, defense)
            initialize(model, job.seed)
            history = train_model(
                model,
                defense,
                plan.training,
                data.x_train,
                data.y_train,
                job.seed,
                on_epoch=lambda epoch, logs: advance(1, f"epoch {epoch + 1}: loss {logs['loss']:.3f}"),
            )
            record["history"] = history
        target = make_target(model, defense, data.data.num_classes, data.x_eval, runner.spec.evaluation)
        predicted = target.predict(data.x_test)
        record["test_accuracy"] = float(np.mean(predicted == data.y_test))
        if near_chance(record["test_accuracy"], data.data.num_classes):
            runner.reporter.warn(
                f"{plan.name}: test accuracy {100 * record['test_accuracy']:.1f}% is near chance "
                f"({data.data.num_classes} classes); are its inputs scaled as the model expects ([0, 1])?"
            )
        record["parameters"] = int(model.count_params())
        record["precision"] = target.precision
        runner.store.save_model(model, plan.name, job.key, record)
        return record, {"train_index": data.train_index, "test_index": data.test_index}


class CleanHandler(Handler):
    """Clean predictions on the evaluated examples, the gradient and randomness checks, and
    the defense's own diagnostics."""

    kind = "clean"

    def run(self, job, advance):
        runner = self.runner
        data = runner.planner.load_data()
        x, y = data.x_eval, data.y_eval
        target = runner.context.target(job.model)
        predicted = target.predict(x)
        defense = runner.spec.model(job.model).defense.build()
        diagnostics = defense.diagnostics(target, x, y, runner.store.root / "diagnostics", job.model)
        advance(len(x))
        return {
            "gradients": gradient_check(target, x, y),
            "unstable_predictions": unstable_predictions(target, x, y),
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
            "precision": target.precision,
        }, None


class _MethodHandler(Handler):
    """An attack or certifier under one threat model (:func:`method_record`)."""

    def run(self, job, advance):
        runner = self.runner
        data = runner.planner.load_data()
        target = runner.context.target(job.model)
        return method_record(
            job.kind,
            job.method,
            target,
            data.x_eval,
            data.y_eval,
            data.eval_index,
            job.norm,
            job.eps,
            runner.spec.evaluation,
            job.seed,
            runner.context,
            advance,
        )


class CertifyHandler(_MethodHandler):
    """Certified radii of every evaluated example."""

    kind = "certify"


class AttackHandler(_MethodHandler):
    """Empirical radii of every evaluated example, and the first adversarial examples."""

    kind = "attack"


def method_record(
    kind: str,
    ref,
    target,
    x,
    y,
    index,
    norm: str,
    eps: list[float],
    evaluation,
    seed: int,
    context,
    advance=lambda n, description=None: None,
) -> tuple[dict, dict | None]:
    """Run the attack or certifier ``ref`` (a resolved component) on ``target``'s examples
    ``x, y`` (test-set positions ``index``) under the ``norm`` threat model with budgets
    ``eps``; the record, ``not_applicable`` where the method does not support the norm or
    refuses the model, and the arrays to keep (the first adversarial examples)."""
    predicted = target.predict(x)
    method = ref.build()
    record: dict = {"examples": int(len(x)), "eot": target.protocol(), "precision": target.precision}
    reason = f"{ref.name} supports {', '.join(method.norms)}, not {norm}" if norm not in method.norms else None
    if reason is None:
        target.reset_counts()
        if kind == "certify" and target.randomized and not method.supports_randomized:
            reason = "the model is randomized; this certifier needs a deterministic model"
        elif kind == "certify":
            reason = method.check(target)
    if reason:
        advance(len(x))
        return {**record, "status": "not_applicable", "message": reason}, None
    if kind == "certify":
        radius, details = certified_radii(method, target, x, y, predicted, norm, evaluation.batch_size, advance)
        record.update(
            status="ok",
            radius=radius.tolist(),
            probabilistic=method.probabilistic,
            certifies_smoothed=method.certifies_smoothed,
            tolerance=getattr(method.params, "tolerance", None),
            details=details,
            evaluations=target.evaluations(),
        )
        return record, None
    outcome = attack_radii(
        method,
        target,
        x,
        y,
        predicted,
        norm,
        eps,
        evaluation.radius_tolerance,
        seed,
        evaluation.batch_size,
        advance,
        context=context,
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
    if outcome.evidence:
        record["evidence"] = {name: values.tolist() for name, values in outcome.evidence.items()}
    keep = slice(0, KEEP_ADVERSARIAL)
    kept = outcome.adversarial[keep]
    return record, {
        "index": index[keep],
        "original": x[keep],
        "adversarial": kept,
        "label": y[keep],
        "predicted": target.predict(kept),
    }


HANDLERS: dict[str, type[Handler]] = {
    handler.kind: handler for handler in (TrainHandler, CleanHandler, AttackHandler, CertifyHandler)
}
"""The handler of each job kind."""
