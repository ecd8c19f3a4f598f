"""The model under evaluation, as attacks and certifiers see it.

A :class:`Target` hides whether the model is randomized: against a randomized model,
:meth:`Target.loss_and_gradient` averages over ``eot_samples`` draws (Expectation over
Transformation) and :meth:`Target.predict` takes the most frequent class over
``final_draws`` draws.  It also counts the forward and gradient evaluations attacks
spend, so every result records its cost.  Everything here is backend-agnostic: the
model is a Keras model, gradients come from :mod:`advbench.kit.backend`.
"""

from __future__ import annotations

import numpy as np

from advbench.kit import backend
from advbench.lazy import keras

MARGIN_RTOL = 2.0**-16
"""A point is adversarial when its largest wrong logit exceeds the label's by more than
``MARGIN_RTOL`` times its largest absolute logit: 256 float32 units in the last place
(2^-24) of that logit, where predicting the same points in other batch sizes moves logits
by at most about 10 (measured on the digits MLP, CNN and the Madry CNN, batch sizes 1 to
64; ``tests/test_validity.py`` checks it), so that a point counted as adversarial stays
misclassified however it is predicted again.  On a linear model it lengthens a minimal
radius r by about ``MARGIN_RTOL max|logit| / margin`` of r (0.15% for a margin 1/100 of the
largest logit)."""

VERIFY_BATCH = 8
"""Points are verified in batches of this many (not the attack's batch): a fixed, small batch."""


class Target:
    """A Keras logits model plus how to query it soundly.

    :param model: maps a batch of inputs in [0, 1] to logits.
    :param randomized: whether two identical calls may differ.
    :param eot_samples: draws averaged per gradient when randomized.
    :param final_draws: draws per prediction when randomized (most frequent class wins,
        ties to the lowest class index).
    :param eot: ``False`` turns EOT and repeated draws off for a randomized model: an
        invalid evaluation, recorded as such in :meth:`protocol`.
    :param base_model: the deterministic trained network inside a randomized wrapper
        (what a structural certifier would look at); defaults to ``model``.
    """

    def __init__(
        self,
        model,
        *,
        num_classes: int,
        randomized: bool = False,
        eot_samples: int = 20,
        final_draws: int = 10,
        batch_size: int = 256,
        eot: bool = True,
        base_model=None,
    ):
        self.model = model
        self.base_model = base_model if base_model is not None else model
        self.num_classes = int(num_classes)
        self.randomized = bool(randomized)
        self.eot = bool(eot)
        self.eot_samples = int(eot_samples) if randomized and eot else 1
        self.final_draws = int(final_draws) if randomized and eot else 1
        self.randomness = {"declared": self.randomized, "observed": None}
        self.batch_size = int(batch_size)
        self.forward_evaluations = keras.Variable(0, dtype="int32", trainable=False, name="forward_evaluations")
        self.gradient_evaluations = keras.Variable(0, dtype="int32", trainable=False, name="gradient_evaluations")
        self._logits_fn = self.compile(lambda x: self.model(x, training=False), batch_args=(0,))

    @property
    def precision(self) -> str:
        """The float type of the model's logits (a float16 model is recorded as such, whatever
        Keras' default is)."""
        outputs = getattr(self.model, "outputs", None)
        if outputs:
            return str(outputs[0].dtype)
        policy = getattr(self.model, "dtype_policy", None)
        return str(getattr(policy, "compute_dtype", None) or keras.config.floatx())

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.model.input_shape[1:])

    @property
    def variables(self) -> list:
        """The model's variables and the evaluation counters (what compiled code reads and writes)."""
        return backend.variables_of([self.model, self.forward_evaluations, self.gradient_evaluations])

    def compile(self, fn, batch_args: tuple[int, ...] = (), smallest_batch: int | None = None):
        """Compile ``fn``, a function that queries this target (see :func:`advbench.kit.backend.compile`)."""
        return backend.compile(fn, state=[self], batch_args=batch_args, smallest_batch=smallest_batch)

    # -- inside attacks (may run inside compiled code) ----------------------------------

    def logits(self, x):
        """One draw of the logits of a batch (counted as forward evaluations)."""
        self.forward_evaluations.assign_add(keras.ops.cast(keras.ops.shape(x)[0], "int32"))
        return self.model(x, training=False)

    def loss_and_gradient(self, loss_fn, x, y):
        """Per-example ``loss_fn(logits, y)`` and its input gradient, averaged over EOT draws.

        Returns ``(loss, gradient, logits)``; ``logits`` are those of the last draw.
        """
        ops = keras.ops
        draws = self.eot_samples

        def objective(point):
            logits = self.model(point, training=False)
            loss = loss_fn(logits, y)
            return ops.sum(loss), (loss, logits)

        def one_draw():
            # A model with no differentiable path to its input (e.g. rounding) has zero
            # gradients, which the gradient-masking check then reports.
            gradient, (loss, logits) = backend.grad(objective, x)
            return loss, gradient, logits

        self.gradient_evaluations.assign_add(ops.cast(ops.shape(x)[0] * draws, "int32"))
        if draws == 1:
            return one_draw()

        def body(i, loss_sum, grad_sum, _):
            loss, grad, logits = one_draw()
            return i + 1, loss_sum + loss, grad_sum + grad, logits

        batch = ops.shape(x)[0]
        start = (0, ops.zeros((batch,), x.dtype), ops.zeros_like(x), ops.zeros((batch, self.num_classes), x.dtype))
        _, loss_sum, grad_sum, logits = backend.while_loop(lambda i, *_: i < draws, body, start)
        return loss_sum / draws, grad_sum / draws, logits

    def logit_jacobian(self, x):
        """Input gradients of all K logits, shape (batch, K, ...), averaged over EOT draws,
        and the logits of the last draw (counted as K gradient evaluations per example)."""
        ops = keras.ops
        draws = self.eot_samples

        def one_draw():
            logits, jacobian = backend.jacobian(lambda point: self.model(point, training=False), x)
            return jacobian, logits

        self.gradient_evaluations.assign_add(ops.cast(ops.shape(x)[0] * draws * self.num_classes, "int32"))
        if draws == 1:
            return one_draw()

        def body(i, total, _):
            jacobian, logits = one_draw()
            return i + 1, total + jacobian, logits

        batch = ops.shape(x)[0]
        shape = (batch, self.num_classes) + tuple(x.shape[1:])
        start = (0, ops.zeros(shape, x.dtype), ops.zeros((batch, self.num_classes), x.dtype))
        _, total, logits = backend.while_loop(lambda i, *_: i < draws, body, start)
        return total / draws, logits

    # -- outside attacks (NumPy in, NumPy out) -------------------------------------------

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted labels; for a randomized model, the most frequent class over draws."""
        votes = np.zeros((len(x), self.num_classes), dtype=np.int64)
        for start in range(0, len(x), self.batch_size):
            batch = np.asarray(x[start : start + self.batch_size], np.float32)
            for _ in range(self.final_draws):
                labels = np.argmax(keras.ops.convert_to_numpy(self._logits_fn(batch)), axis=1)
                votes[start + np.arange(len(labels)), labels] += 1
        self.forward_evaluations.assign_add(len(x) * self.final_draws)
        return np.argmax(votes, axis=1)

    def logits_numpy(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """One draw of the logits, in batches of ``batch_size`` (default: the target's), as NumPy."""
        size = batch_size or self.batch_size
        parts = [
            keras.ops.convert_to_numpy(self._logits_fn(np.asarray(x[s : s + size], np.float32))) for s in range(0, len(x), size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.num_classes), np.float32)

    def adversarial(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per point, whether it is adversarial for sure, checked anew: for a deterministic
        model, its logits computed in batches of :data:`VERIFY_BATCH` put a wrong class above
        the label by more than :data:`MARGIN_RTOL` times the largest absolute logit; for a
        randomized model, the majority vote of :meth:`predict` differs from the label.  A
        point on the decision boundary is not adversarial."""
        y = np.asarray(y)
        if self.randomized:
            return self.predict(x) != y
        logits = self.logits_numpy(x, VERIFY_BATCH).astype(np.float64)
        self.forward_evaluations.assign_add(len(x))
        return adversarial_margin(logits, y) > MARGIN_RTOL * np.max(np.abs(logits), axis=1, initial=0.0)

    def differs_between_calls(self, x: np.ndarray, calls: int = 8) -> bool:
        """Whether identical calls on ``x`` give different logits (the randomness check).

        Compares the first call with up to ``calls - 1`` more: a randomized model with few
        possible draws (say, random padding of a small image) can repeat a draw by chance."""
        first = self.logits_numpy(x)
        return any(bool(np.any(self.logits_numpy(x) != first)) for _ in range(calls - 1))

    def protocol(self) -> dict:
        """How the model was queried, recorded with every result."""
        if not self.randomized:
            return {"randomized": False, "rule": "deterministic model: one draw per query"}
        return {
            "randomized": True,
            "eot_enabled": self.eot,
            "eot_samples": self.eot_samples,
            "final_draws": self.final_draws,
            "rule": (
                f"gradients averaged over {self.eot_samples} draws; prediction = most frequent class over "
                f"{self.final_draws} draws (ties: lowest class index); adversarial when it differs from the label"
            ),
        }

    def evaluations(self) -> dict[str, int]:
        return {
            "forward": int(keras.ops.convert_to_numpy(self.forward_evaluations)),
            "gradient": int(keras.ops.convert_to_numpy(self.gradient_evaluations)),
        }

    def reset_counts(self) -> None:
        self.forward_evaluations.assign(0)
        self.gradient_evaluations.assign(0)


def adversarial_margin(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per example, the largest wrong logit minus the label's (positive: misclassified)."""
    rows = np.arange(len(y))
    others = np.where(np.arange(logits.shape[1])[None, :] == np.asarray(y)[:, None], -np.inf, logits)
    return others.max(axis=1) - logits[rows, y]
