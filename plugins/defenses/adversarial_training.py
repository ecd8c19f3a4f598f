"""Adversarial training: Madry et al.'s PGD training (`pgd_training`) for linf and l2,
on the PGD of the attacks (:mod:`advbench.kit.pgd`); Wong et al.'s fast FGSM training
(`fgsm_training`: one FGSM step from a random start, 1.25 eps long, with a check for
catastrophic overfitting); and Hein & Andriushchenko's l2 training on their boundary
attack (`hein_training`), reusing its exact box solver."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from advbench import Budget, Defense, Params, hookimpl
from advbench.kit import backend, lp, rng, search
from advbench.lazy import keras


class PGDTrainingParams(Params):
    norm: Literal["linf", "l2"] = Field("linf", description="Norm of the training threat model.")
    eps: Budget = Field(0.3, gt=0, description="Training budget (a fraction like 8/255 is read as its value).")
    steps: int = Field(40, ge=1, description="PGD steps per batch.")
    step_size: float | None = Field(None, gt=0, description="PGD step as a fraction of eps; default 2.5 / steps.")
    random_start: bool = Field(True, description="Start PGD from a random point in the ball.")
    loss: Literal["ce", "cw"] = Field("ce", description="Loss PGD maximizes.")
    share: float = Field(
        1.0, gt=0, le=1, description="Share of each batch replaced by adversarial examples (1: Madry et al.; 0.5: half clean)."
    )
    ramp_epochs: int = Field(
        0, ge=0, description="Epochs over which eps grows linearly from eps / ramp_epochs to eps (0: full eps from the start)."
    )


class PGDTraining(Defense):
    """Madry et al.'s adversarial training: train on PGD adversarial examples (linf or l2)."""

    Params = PGDTrainingParams

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self._scale = None
        self._calls = None

    @property
    def variables(self) -> list:
        """The budget's ramp factor and a counter of batches (it seeds the random starts)."""
        if self._scale is None:
            self._scale = keras.Variable(1.0, trainable=False, name="eps_scale")
            self._calls = keras.Variable(0, dtype="int32", trainable=False, name="batches")
        return [self._scale, self._calls]

    def on_epoch_start(self, epoch, epochs):
        scale, _ = self.variables
        ramp = self.params.ramp_epochs
        scale.assign(min(1.0, (epoch + 1) / ramp) if ramp else 1.0)

    def training_batch(self, model, x, y):
        from advbench.kit.losses import LOSSES
        from advbench.kit.pgd import pgd_start, pgd_steps

        ops = keras.ops
        p = self.params
        scale, calls = self.variables
        calls.assign_add(1)
        count = leading_share(x, p.share)
        x_adv, y_adv = x[:count], y[:count]
        eps = ops.ones_like(x_adv[:, 0, 0, 0]) * (p.eps * scale)
        loss = LOSSES[p.loss]

        def loss_and_gradient(inputs, labels):
            def objective(point):
                logits = model(point, training=False)
                values = loss(logits, labels)
                return ops.sum(values), (values, logits)

            gradient, (values, logits) = backend.grad(objective, inputs)
            return values, gradient, logits

        steps, step_size, random_start = self.search()
        delta = pgd_start(x_adv, eps, p.norm, random_start, rng.fold_in(rng.seed(7), calls))
        delta, _, _ = pgd_steps(loss_and_gradient, x_adv, y_adv, eps, p.norm, delta, steps=steps, step_size=step_size)
        adversarial = ops.stop_gradient(ops.clip(x_adv + delta, 0.0, 1.0))
        return ops.concatenate([adversarial, x[count:]], axis=0), y

    def search(self) -> tuple[int, float, bool]:
        """The inner maximization: PGD steps, step as a fraction of eps, random start."""
        p = self.params
        return p.steps, (p.step_size if p.step_size is not None else 2.5 / p.steps), p.random_start

    def settings(self):
        return {**super().settings(), "cost": f"about {self.search()[0] + 1} forward-backward passes per batch"}


class FGSMTrainingParams(Params):
    norm: Literal["linf", "l2"] = Field("linf", description="Norm of the training threat model.")
    eps: Budget = Field(0.3, gt=0, description="Training budget (a fraction like 8/255 is read as its value).")
    alpha: float = Field(
        1.25,
        gt=0,
        description="The FGSM step as a fraction of eps (Wong et al.: 1.25; at 2 and above catastrophic overfitting "
        "comes early).",
    )
    loss: Literal["ce", "cw"] = Field("ce", description="Loss the step ascends.")
    share: float = Field(1.0, gt=0, le=1, description="Share of each batch replaced by adversarial examples.")
    ramp_epochs: int = Field(0, ge=0, description="Epochs over which eps grows linearly from eps / ramp_epochs to eps.")
    check_steps: int = Field(
        10, ge=0, description="PGD steps of the end-of-epoch check for catastrophic overfitting (0: no check)."
    )
    check_examples: int = Field(512, ge=1, description="Training examples the check attacks (the same every epoch).")
    check_drop: float = Field(
        0.2,
        gt=0,
        le=1,
        description="A fall of the checked PGD accuracy by more than this below its best so far is "
        "catastrophic overfitting: training stops and the weights of the best epoch come back (Wong et al.'s early stopping).",
    )


class FGSMTraining(PGDTraining):
    """Wong et al. 2020 ("Fast is better than free"): FGSM from a random start, step 1.25 eps; stops at catastrophic overfitting."""

    Params = FGSMTrainingParams

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self._check = None  # (target, PGD, probe, best accuracy, best weights)

    def search(self):
        return 1, self.params.alpha, True

    def on_epoch_end(self, model, epoch, epochs, probe):
        """PGD accuracy on the fixed probe of training examples at the full budget; on a collapse (catastrophic overfitting: FGSM's examples stop being hard, PGD's
        accuracy falls to near 0), the best epoch's weights come back and training stops."""
        import numpy as np

        p = self.params
        if not p.check_steps or probe is None:
            return None
        from advbench.kit.pgd import PGD
        from advbench.kit.target import Target

        if self._check is None or self._check[0].model is not model:
            x, y = probe[0][: p.check_examples], probe[1][: p.check_examples]
            target = Target(model, num_classes=int(model.output_shape[-1]), batch_size=256)
            self._check = [target, PGD(steps=p.check_steps, restarts=1), (x, y), -1.0, None]
        target, attack, (x, y), best, _ = self._check
        eps = np.full(len(x), p.eps, np.float32)  # the full budget: a ramp's smaller ones would fall as they grow
        robust = float(np.mean(target.predict(attack.perturb(target, x, y, eps, p.norm, seed=epoch)) == y))
        logs = {"pgd_accuracy": robust}
        if robust > best:
            self._check[3], self._check[4] = robust, [w.copy() for w in model.get_weights()]
        elif best - robust > p.check_drop:
            model.set_weights(self._check[4])
            logs.update(catastrophic_overfitting=float(epoch + 1), stop=True)
        return logs

    def settings(self):
        return {**super().settings(), "cost": "about 2 forward-backward passes per batch"}


class HeinTrainingParams(Params):
    share: float = Field(0.5, gt=0, le=1, description="Share of each batch replaced by adversarial examples (the paper: half).")
    growth_steps: int = Field(
        4, ge=0, description="Doublings of the margin scale when the linear step does not cross the boundary."
    )
    bisection_steps: int = Field(6, ge=0, description="Bisection steps on the margin scale towards the boundary.")
    max_norm: float | None = Field(
        None, gt=0, description="Drop adversarial examples farther than this (l2) from their image; default keep all."
    )


class HeinTraining(Defense):
    """Hein & Andriushchenko's l2 adversarial training: their box-constrained boundary attack towards the runner-up class, on half of each batch."""

    Params = HeinTrainingParams

    def training_batch(self, model, x, y):
        p = self.params
        count = leading_share(x, p.share)
        adversarial = runner_up_boundary_points(model, x[:count], y[:count], p.growth_steps, p.bisection_steps, p.max_norm)
        return keras.ops.concatenate([keras.ops.stop_gradient(adversarial), x[count:]], axis=0), y


def leading_share(x, share: float):
    """How many of the batch's first examples make ``share`` of it (rounded up); a
    Python int where the batch size is known when compiling, else a tensor."""
    import math

    rows = x.shape[0]
    if rows is not None:
        return math.ceil(share * rows)
    return keras.ops.cast(keras.ops.ceil(share * keras.ops.cast(keras.ops.shape(x)[0], "float32")), "int32")


def runner_up_boundary_points(model, x, y, growth_steps, bisection_steps, max_norm=None):
    """The boundary attack of :mod:`advbench_plugins.attacks.hein_boundary` towards the
    runner-up class only, compilable inside a training step: one linearization at x,
    the exact box-constrained step, the margin scale searched on the network (doubling,
    then bisection).  Examples whose scale search fails stay clean."""
    ops = keras.ops
    y = ops.cast(y, "int32")

    def runner_up_margin(point):
        logits = model(point, training=False)
        true = ops.one_hot(y, ops.shape(logits)[1]) > 0.5
        runner_up = ops.argmax(ops.where(true, -float("inf"), logits), axis=1)
        margin = ops.sum(ops.where(true, logits, 0.0), axis=1) - ops.take_along_axis(logits, runner_up[:, None], axis=1)[:, 0]
        return ops.sum(margin), margin

    direction, margin = backend.grad(runner_up_margin, x)  # grad of f_y - f_runner-up
    margin = ops.maximum(margin, 0.0)

    def crosses(scale):
        delta, feasible = lp.box_constrained_l2_step(direction, scale * margin, x)
        predicted = ops.cast(ops.argmax(model(x + delta, training=False), axis=1), "int32")
        return feasible & (predicted != y), delta

    success, _, high = search.grow_then_bisect(
        lambda scale: crosses(scale)[0], ops.zeros_like(margin), ops.ones_like(margin), growth_steps, bisection_steps, xp=ops
    )
    hit, delta = crosses(high)
    keep = success & hit
    if max_norm is not None:
        keep = keep & (lp.norm(delta, "l2") <= max_norm)
    return ops.clip(x + ops.where(lp.broadcast(keep, x), delta, 0.0), 0.0, 1.0)


@hookimpl
def advbench_register_defenses(register):
    register("pgd_training", PGDTraining)
    register("fgsm_training", FGSMTraining)
    register("hein_training", HeinTraining)
