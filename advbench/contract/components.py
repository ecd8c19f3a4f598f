"""Base classes of everything a plugin can register.

Each component declares its spec parameters as a nested pydantic ``Params`` model
(typed, with defaults and descriptions): the spec is validated against it before any
work starts, and ``advbench schema`` publishes it.  A component is constructed with a
validated ``Params`` instance, available as ``self.params``.

This module does not import a deep-learning framework; the methods receive and return
backend tensors (of whichever Keras backend runs) or NumPy arrays as documented.  A
``target`` is the model under evaluation as the kit wraps it
(:class:`advbench.kit.target.Target`: logits, gradients with EOT, counted evaluations).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Names of components, runs, models and labels: they become file and folder names and
appear in every rendered format, so letters, digits, ``_``, ``.`` and ``-`` only (no path
separators, no leading dot, no markup), at most 64 characters."""

NORMS = ("linf", "l2")
"""The threat-model norms advbench knows: ``linf`` and ``l2``."""

BUDGET_RTOL = 1e-5
"""An example counts as broken at eps when its empirical radius is <= eps (1 + BUDGET_RTOL),
and an attack's point may exceed its budget by that much, plus the rounding of its float32
coordinates (:func:`budget_allowance`)."""


def budget_allowance(adversarial: np.ndarray, eps, p: str) -> np.ndarray:
    """Per example, the largest p-distance from the clean point an attack's float32 point
    ``adversarial`` may have at budget ``eps``: ``eps (1 + BUDGET_RTOL)`` plus the p-norm of
    half a float32 spacing at each coordinate of the point.

    An attack that computes ``x + delta`` with ``||delta||_p <= eps`` exactly still returns
    the float32 rounding of it, and each coordinate may move by half its spacing; the
    triangle inequality bounds the distance by ``eps`` plus the norm of those half-spacings.
    An attack that picks the best of many iterates picks the roundings that help it, so in
    high dimension at tiny eps (a radius bisection on a 32x32x3 image, eps near 4e-4) the
    excess reaches a few 1e-7, far above ``eps * BUDGET_RTOL``; the bound is at most
    ``2**-24 sqrt(d) / 2`` for points in [0, 1]^d (1.7e-6 for d = 3072 in l2, 6e-8 in linf)."""
    points = np.asarray(adversarial, dtype=np.float32)
    half_spacing = np.spacing(np.abs(points)).astype(np.float64) / 2
    rows = half_spacing.reshape(len(points), -1)
    rounding = rows.max(axis=1) if p == "linf" else np.linalg.norm(rows, ord={"l2": 2, "l1": 1}[p], axis=1)
    return np.asarray(eps, dtype=np.float64) * (1 + BUDGET_RTOL) + rounding


def box_diameter(input_shape, p: str) -> float:
    """The largest p-distance between two points of [0, 1]^d: no budget needs to exceed it."""
    dim = int(np.prod(input_shape))
    return {"linf": 1.0, "l2": float(np.sqrt(dim)), "l1": float(dim)}[p]


def budget_beyond_box(eps: float, input_shape, p: str) -> str | None:
    """Why ``eps`` is no budget for inputs of ``input_shape`` (every point of [0, 1]^d would
    be in its ball), or ``None``: the one rule a spec and the Python API apply."""
    diameter = box_diameter(input_shape, p)
    if eps > diameter * (1 + 1e-6):
        return f"{eps:g} exceeds the largest {p} distance between two images in [0, 1]^{tuple(input_shape)} ({diameter:g})"
    return None


def budget_value(value):
    """A budget as a spec may write it: a number, or a fraction ``8/255`` (YAML reads it as
    text), which becomes the number; anything else is left for the number check to refuse."""
    if isinstance(value, str) and value.count("/") == 1:
        numerator, denominator = (part.strip() for part in value.split("/"))
        try:
            numerator_value, denominator_value = float(numerator), float(denominator)
        except ValueError:
            raise ValueError(f"expected a number or a fraction like 8/255, got {value!r}") from None
        if denominator_value == 0:
            raise ValueError(f"{value!r} divides by zero")
        return numerator_value / denominator_value
    return value


Budget = Annotated[float, BeforeValidator(budget_value)]
"""A float parameter that also accepts ``k/255`` (perturbation budgets)."""


class Params(BaseModel):
    """Base of every component's parameter model: unknown keys are errors."""

    # strict: a spec's `steps: yes` is refused, not read as 1; no inf or NaN anywhere
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True, allow_inf_nan=False)


SPEC_FILE = {"spec_path": "file"}
"""``Field(json_schema_extra=SPEC_FILE)`` marks a parameter naming a file: a relative path
is relative to the spec's folder, and the file's content (not its name) is part of the
results' key."""

SPEC_FOLDER = {"spec_path": "folder"}
"""``Field(json_schema_extra=SPEC_FOLDER)`` marks a parameter naming a folder (e.g. where
data lives): relative to the spec's folder, and not part of the results' key."""


class Component:
    """Common base: a name given at registration and validated parameters."""

    Params: ClassVar[type[Params]] = Params
    name: str = ""  # the registered name; set by the registry on a subclass copy

    def __init__(self, params: Params | None = None, **kwargs: Any):
        self.params = params if params is not None else self.Params(**kwargs)

    def per_target(self, target, key, build):
        """What ``build()`` returns (compiled functions for this model), made on the first
        call with this ``(target, key)`` and kept for later calls.  The target itself is
        checked, not only its ``id``: Python may give a dead target's id to a new one."""
        cache = self.__dict__.setdefault("_per_target", {})
        entry = cache.get((id(target), key))
        if entry is None or entry[0] is not target:
            entry = cache[(id(target), key)] = (target, build())
        return entry[1]

    def forget_targets(self) -> None:
        """Drop what :meth:`per_target` kept (after a change that the kept functions baked in)."""
        self.__dict__.pop("_per_target", None)

    @classmethod
    def summary(cls) -> str:
        """First line of the class docstring, shown by ``advbench plugins``."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def parameters(cls) -> list[tuple[str, str, str, str]]:
        """``(name, type, default, description)`` of each parameter a spec may set, as
        ``advbench plugins NAME`` lists them; the default is ``required`` where there is none."""
        rows = []
        for name, info in cls.Params.model_fields.items():
            kind = info.annotation
            shown = kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")
            if info.is_required():
                default = "required"
            elif info.default_factory is not None:
                default = repr(info.default_factory())
            else:
                default = repr(info.default)
            rows.append((info.alias or name, shown, default, info.description or ""))
        return rows

    @classmethod
    def check_spec(cls, params, spec) -> str | None:
        """Return what is wrong with these parameters in this spec (e.g. a model name that
        does not exist), or ``None``.  Runs during validation, before any work."""
        return None

    def settings(self) -> dict:
        """The parameters as plain data, recorded with every result."""
        return self.params.model_dump(mode="json", by_alias=True)


# -- datasets ---------------------------------------------------------------------------


@dataclass
class DatasetArrays:
    """A dataset's full train and test splits.

    Images are float32 in [0, 1], NHWC; labels are int64 class indices.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str]
    info: dict = field(default_factory=dict)  # provenance: source files, batches read, ...

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


class DatasetParams(Params):
    train_size: int | None = Field(
        None, gt=0, description="Training examples to use (stratified by class, chosen by the spec's seed); all when unset."
    )
    test_size: int | None = Field(
        None, gt=0, description="Test examples to keep (stratified by class, chosen by the spec's seed); all when unset."
    )


class Dataset(Component):
    """A source of labelled images.  ``train_size`` and ``test_size`` are applied by
    advbench (stratified, by seed); :meth:`load` returns the full splits."""

    Params: ClassVar[type[Params]] = DatasetParams
    mirror_invariant: ClassVar[bool] = False  # may training flip images horizontally?

    def load(self) -> DatasetArrays:
        """Return the full train and test splits (float32 in [0, 1], NHWC)."""
        raise NotImplementedError


# -- architectures ----------------------------------------------------------------------


class Architecture(Component):
    """A Keras model family whose models output logits for inputs in [0, 1]."""

    def build(self, input_shape: tuple[int, ...], num_classes: int):
        """Return an unbuilt-or-built ``keras.Model`` mapping ``input_shape`` to ``num_classes`` logits."""
        raise NotImplementedError


# -- defenses ---------------------------------------------------------------------------


class Defense(Component):
    """A change to how a model is trained or used.

    The training step calls, in this order and inside one compiled function (see
    :func:`advbench.kit.backend.compile`): ``training_batch`` (may replace the inputs, e.g.
    by adversarial examples), the forward pass, and ``regularizer`` (added to the mean
    cross-entropy).  Write them with ``keras.ops``, ``keras.random`` and
    :mod:`advbench.kit.backend` and they run on every Keras backend.  State a defense keeps
    across steps (a budget ramp, the counter of an :mod:`advbench.kit.rng` stream) is a
    Keras variable listed in :attr:`variables`.  Before training, ``prepare_model`` may extend the
    architecture; at evaluation, ``inference_model`` may wrap it.  A defense whose
    inference model draws random numbers must say so in :meth:`randomized`, so that it
    is attacked with EOT; its random layers draw from their own streams.
    """

    @property
    def variables(self) -> list:
        """Keras variables the training step reads or changes besides the model's (created
        on first access, outside compiled code)."""
        return []

    def prepare_model(self, model):
        """Return the model to train (default: unchanged).  Called once, before training."""
        return model

    def on_train_begin(self, epochs: int, steps_per_epoch: int) -> None:
        """Called once before training, with its length (e.g. to schedule a ramp by steps)."""

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called before each training epoch (e.g. to ramp up a budget)."""

    def on_epoch_end(self, model, epoch: int, epochs: int, probe) -> dict | None:
        """Called after each training epoch with the model and ``probe``, a fixed sample of
        the training data ``(x, y)`` (NumPy, the same every epoch): a dict of numbers goes
        into the training history (one value per epoch), and ``"stop": True`` in it ends
        training there (e.g. early stopping).  Default: nothing."""
        return None

    def training_phase(self, step: int):
        """A hashable name for the kind of training step number ``step`` (from 0) is, or None
        (default: one kind throughout).  Training compiles one step per phase and calls this
        (outside compiled code) before each step, so a defense whose later steps need less
        work (CROWN-IBP once its CROWN weight is 0) can leave that work out of their graph."""
        return None

    def training_batch(self, model, x, y):
        """Return the ``(x, y)`` batch to train on (default: unchanged).  Runs inside compiled code."""
        return x, y

    def regularizer(self, model, x, y, logits):
        """Return a scalar added to the mean cross-entropy, or ``None`` (default).  Runs inside compiled code."""
        return None

    def inference_model(self, model):
        """Return the model to evaluate (default: the trained model)."""
        return model

    def randomized(self) -> bool:
        """Whether :meth:`inference_model` is random (two identical calls may differ)."""
        return False

    def diagnostics(self, target, x, y, directory, stem: str) -> dict:
        """Optional measurements of the trained model on the evaluated examples, recorded
        with its clean results.  Figures go into ``directory`` (a :class:`pathlib.Path`)
        as ``<stem>-*.png``; list their file names under ``"figures"``."""
        return {}


class DefenseStack(Defense):
    """Several defenses applied together, in the order given: each ``prepare_model`` and
    ``training_batch`` in turn, the regularizers summed, the inference wrappers nested
    (the last outermost); randomized if any part is."""

    def __init__(self, defenses: list[Defense]):
        super().__init__()
        self.defenses = defenses

    def settings(self) -> dict:
        return {"stack": [d.settings() for d in self.defenses]}

    @property
    def variables(self) -> list:
        return [v for defense in self.defenses for v in defense.variables]

    def prepare_model(self, model):
        for defense in self.defenses:
            model = defense.prepare_model(model)
        return model

    def on_train_begin(self, epochs: int, steps_per_epoch: int) -> None:
        for defense in self.defenses:
            defense.on_train_begin(epochs, steps_per_epoch)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        for defense in self.defenses:
            defense.on_epoch_start(epoch, epochs)

    def on_epoch_end(self, model, epoch: int, epochs: int, probe) -> dict | None:
        logs: dict = {}
        for defense in self.defenses:
            logs.update(defense.on_epoch_end(model, epoch, epochs, probe) or {})
        return logs or None

    def training_phase(self, step: int):
        phases = tuple(defense.training_phase(step) for defense in self.defenses)
        return None if all(phase is None for phase in phases) else phases

    def training_batch(self, model, x, y):
        for defense in self.defenses:
            x, y = defense.training_batch(model, x, y)
        return x, y

    def regularizer(self, model, x, y, logits):
        terms = [t for t in (d.regularizer(model, x, y, logits) for d in self.defenses) if t is not None]
        return sum(terms[1:], terms[0]) if terms else None

    def inference_model(self, model):
        for defense in self.defenses:
            model = defense.inference_model(model)
        return model

    def randomized(self) -> bool:
        return any(d.randomized() for d in self.defenses)

    def diagnostics(self, target, x, y, directory, stem: str) -> dict:
        found = {}
        for defense in self.defenses:
            found.update(defense.diagnostics(target, x, y, directory, stem))
        return found


# -- attacks ----------------------------------------------------------------------------


class Attack(Component):
    """An attack: it finds adversarial examples and so gives empirical upper bounds.

    A *fixed-budget* attack implements :meth:`perturb`: advbench calls it at each eps of
    the threat model and bisects eps per example for the radius.  A *minimal-norm*
    attack sets ``minimal_norm = True`` and implements :meth:`minimize`; its result's
    norm is the radius directly.  A fixed-budget attack that also sets ``minimal_stage =
    True`` and implements :meth:`minimize` (the ``ensemble``) has it called first: its
    result is where the bisection over eps starts.  Gradients must come from
    :meth:`Target.loss_and_gradient` (which applies EOT to randomized models and counts
    evaluations), logits from :meth:`Target.logits`.
    """

    norms: ClassVar[tuple[str, ...]] = NORMS
    minimal_norm: ClassVar[bool] = False
    minimal_stage: ClassVar[bool] = False  # a fixed-budget attack whose minimize() runs before its bisection
    uses_gradients: ClassVar[bool] = True  # False for black-box attacks (they only query logits)

    @classmethod
    def models_needed(cls, params) -> list[str]:
        """Other models of the spec whose training this attack's jobs wait for, because
        :meth:`prepare` asks ``context.target(name)`` for them (a transfer attack's source)."""
        return []

    def prepare(self, target, x, y, context) -> None:
        """Called once per job with all the evaluated examples (NumPy) before the batches:
        e.g. to rank pixels over the dataset.  ``context.target(name)`` gives another
        model of the spec, for transfer attacks (name it in :meth:`models_needed`)."""

    def perturb(self, target, x, y, eps, norm: str, seed: int):
        """Return adversarial candidates with ``||x_adv - x||_norm <= eps`` per example
        (``eps`` has one entry per example) inside the [0, 1] box.

        ``x``, ``y``, ``eps`` are NumPy arrays of one batch; ``seed`` seeds any randomness.
        May return ``(x_adv, found_by)`` with ``found_by`` a per-example array of labels
        (which part of a composite attack found each example), recorded with the result.
        """
        raise NotImplementedError

    def minimize(self, target, x, y, norm: str, seed: int):
        """Return, per example, the smallest adversarial example found (inside the box);
        like :meth:`perturb`, may return ``(x_adv, found_by)``."""
        raise NotImplementedError

    def evidence(self) -> dict[str, np.ndarray]:
        """What the last :meth:`perturb` or :meth:`minimize` call saw, per example, for the
        indicators of attack failure (Pintor et al. 2022; see :mod:`advbench.core.checks`):
        ``incomplete_optimization`` (the loss was still rising at the last steps) and
        ``transfer_failure`` (the point fooled the model it was crafted on), as boolean
        arrays.  Default: nothing measured."""
        return {}


# -- certifiers -------------------------------------------------------------------------


class Certifier(Component):
    """A certifier: per example, a radius below which no perturbation changes the prediction.

    Implement :meth:`certify`.  Set ``probabilistic = True`` when the certificate holds
    only with a stated probability (randomized smoothing), and ``supports_randomized``
    when it applies to randomized models.  :meth:`check` may refuse a model it cannot
    certify soundly, with the reason.
    """

    norms: ClassVar[tuple[str, ...]] = NORMS
    probabilistic: ClassVar[bool] = False
    supports_randomized: ClassVar[bool] = False
    certifies_smoothed: ClassVar[bool] = False  # True: the radius is of a smoothed classifier, not of the model

    def check(self, target) -> str | None:
        """Return why this certifier cannot certify ``target`` soundly, or ``None``."""
        return None

    def certify(self, target, x, y, norm: str) -> np.ndarray:
        """Return the certified radius of each example around label ``y`` (NumPy float array).

        ``x`` and ``y`` are NumPy arrays of one batch; advbench sets the radius of
        misclassified examples to 0 afterwards.  May return ``(radius, details)`` with
        ``details`` a dict of per-example arrays recorded with the result (e.g. the
        smoothed classifier's predictions).
        """
        raise NotImplementedError


KINDS: dict[str, type[Component]] = {
    "dataset": Dataset,
    "architecture": Architecture,
    "defense": Defense,
    "attack": Attack,
    "certifier": Certifier,
}
"""Component kinds, each with the base class its registrations must subclass."""
