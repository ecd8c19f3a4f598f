"""Certified training: the loss includes the worst case that bound propagation proves over
the ball, so that the certifiers can certify the trained model.  `ibp_training` (Gowal et
al. 2018) bounds the margins with interval bound propagation; `crown_ibp_training` (Zhang
et al. 2020) with CROWN-IBP (IBP for every intermediate layer, CROWN for the margins),
blended into IBP as training goes on.  Both use the certifiers' bound propagation
(:mod:`advbench.kit.bounds`), so they train exactly the bounds the
`ibp` and `crown` certifiers compute.

The loss is ``kappa * CE(clean logits) + (1 - kappa) * CE(worst-case logits)``, where the
worst-case logit of class j is minus the certified lower bound of ``f_y - f_j`` (0 for y):
it is small only when every margin is proved positive.  After ``warmup_epochs`` of clean
training, eps grows linearly from 0 to ``eps`` and kappa from ``kappa_start`` to
``kappa_end`` over ``ramp_epochs`` (step by step), then both stay.  Bounds are computed in
inference mode (no dropout; batch normalization with its moving statistics).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from advbench import Budget, Defense, Params, hookimpl
from advbench.kit.structure import UnsupportedModel
from advbench.lazy import keras


class IBPTrainingParams(Params):
    norm: Literal["linf", "l2"] = Field("linf", description="Norm of the training ball.")
    eps: Budget = Field(
        0.1,
        gt=0,
        description="Training budget at the end of the ramp; the papers train a little above the budget they certify (Gowal et al.: 0.4 on MNIST to certify 0.3).",
    )
    warmup_epochs: float = Field(1.0, ge=0, description="Epochs of clean training first (Gowal et al.: 2,000 steps).")
    ramp_epochs: float = Field(
        5.0,
        ge=0,
        description="Epochs over which eps grows from 0 and kappa moves to kappa_end (Gowal et al.: 10,000 steps; 0: at once).",
    )
    kappa_start: float = Field(1.0, ge=0, le=1, description="Weight of the clean loss when the ramp starts.")
    kappa_end: float = Field(0.5, ge=0, le=1, description="Weight of the clean loss after the ramp (Gowal et al.: 0.5).")


class CrownIBPTrainingParams(IBPTrainingParams):
    kappa_end: float = Field(0.0, ge=0, le=1, description="Weight of the clean loss after the ramp (Zhang et al. 2020: 0).")
    beta_start: float = Field(
        1.0, ge=0, le=1, description="Weight of the CROWN-IBP bound (the rest: IBP) when the ramp starts (Zhang et al.: 1)."
    )
    beta_end: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Weight of the CROWN-IBP bound after the ramp (Zhang et al.: 0; 1 keeps CROWN-IBP throughout).",
    )


class IBPTraining(Defense):
    """Gowal et al. 2018: cross-entropy of the worst-case logits from interval bound propagation, mixed with the clean loss."""

    Params = IBPTrainingParams

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self._step = None
        self._schedule = (0.0, 0.0)  # (warm-up steps, ramp steps), set by on_train_begin
        self._graph = None  # (model, its bound-propagation graph), see graph_of

    @property
    def variables(self) -> list:
        """The number of training steps taken (the schedules follow it)."""
        if self._step is None:
            self._step = keras.Variable(0.0, trainable=False, name="certified_training_steps")
        return [self._step]

    def prepare_model(self, model):
        self.graph_of(model)  # refuses what bound propagation cannot read, before training
        return model

    def graph_of(self, model) -> list:
        """The bound-propagation graph of ``model``, read once per model (not at every step)."""
        from advbench.kit.bounds import read_graph

        if self._graph is None or self._graph[0] is not model:
            try:
                self._graph = (model, read_graph(model))
            except UnsupportedModel as exc:
                raise UnsupportedModel(
                    f"{self.name or 'certified training'} needs a model that bound propagation supports: {exc}"
                ) from None
        return self._graph[1]

    def on_train_begin(self, epochs: int, steps_per_epoch: int) -> None:
        p = self.params
        self._schedule = (p.warmup_epochs * steps_per_epoch, p.ramp_epochs * steps_per_epoch)

    def training_batch(self, model, x, y):
        (step,) = self.variables
        step.assign_add(1.0)
        return x, y

    def progress(self):
        """Where the ramp is, from 0 (warm-up) to 1 (after the ramp), at this step."""
        ops = keras.ops
        (step,) = self.variables
        warmup, ramp = self._schedule
        done = ops.convert_to_tensor(step) - 1.0 - warmup  # training_batch counted this step already
        if ramp <= 0:
            return ops.cast(done >= 0, "float32")
        return ops.clip(done / ramp, 0.0, 1.0)

    def regularizer(self, model, x, y, logits):
        from advbench.kit.bounds import margin_matrix
        from advbench.kit.losses import cross_entropy

        ops = keras.ops
        p = self.params
        t = self.progress()
        kappa = p.kappa_start + (p.kappa_end - p.kappa_start) * t
        eps = ops.ones_like(ops.cast(y, "float32")) * (p.eps * t)
        margins = self.lower_margins(model, x, margin_matrix(y, int(logits.shape[-1])), eps, t)
        # the worst-case logits: 0 for y, minus the margin's lower bound for every other class
        robust = ops.mean(ops.logsumexp(ops.concatenate([ops.zeros_like(margins[:, :1]), -margins], axis=1), axis=1))
        clean = ops.mean(cross_entropy(logits, y))
        return (1.0 - kappa) * (robust - clean)

    def lower_margins(self, model, x, C, eps, t):
        from advbench.kit.bounds import ibp_margins

        return ibp_margins(self.graph_of(model), x, C, eps, self.params.norm)

    def settings(self):
        return {**super().settings(), "cost": "about 2 extra forward passes per batch (interval bounds)"}


class CrownIBPTraining(IBPTraining):
    """Zhang et al. 2020: worst-case logits from CROWN-IBP bounds, blended into IBP bounds (beta) as eps ramps up."""

    Params = CrownIBPTrainingParams
    _phase = "crown"

    def lower_margins(self, model, x, C, eps, t):
        from advbench.kit.bounds import Crown

        p = self.params
        if p.beta_start == p.beta_end == 0.0 or self._phase == "ibp":  # beta 0: CROWN's bound would count 0 times
            return super().lower_margins(model, x, C, eps, t)
        crown = Crown(self.graph_of(model), max_neurons=0, differentiable=True)  # max_neurons=0: CROWN-IBP
        crown_ibp = crown.margins(x, C, eps, p.norm)
        if p.beta_start == p.beta_end == 1.0:
            return crown_ibp
        beta = p.beta_start + (p.beta_end - p.beta_start) * t
        return beta * crown_ibp + (1.0 - beta) * crown.ibp_margins()  # the IBP bounds CROWN-IBP computed already

    def training_phase(self, step: int):
        """ "ibp" once beta has reached a ``beta_end`` of 0 (after the ramp): those steps are
        compiled without the CROWN bound and cost what an IBP step costs; "crown" before."""
        warmup, ramp = self._schedule
        done = self.params.beta_end == 0.0 and step >= warmup + max(ramp, 0.0)
        self._phase = "ibp" if done else "crown"
        return self._phase

    def settings(self):
        return {**super().settings(), "cost": "one backward bound pass per class per batch (CROWN-IBP), plus interval bounds"}


@hookimpl
def advbench_register_defenses(register):
    register("ibp_training", IBPTraining)
    register("crown_ibp_training", CrownIBPTraining)
