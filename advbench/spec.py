"""The YAML spec: its schema, its validation, and the resolved form the pipeline runs.

Validation collects every problem before any work starts; each names the file, the
line where it can, the field path (``models[1].architecture.hidden``) and what was
expected.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from advbench.components import NORMS, Budget, Component
from advbench.errors import PluginError, Problem, SpecError
from advbench.registry import UnknownComponentError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


# -- the schema ----------------------------------------------------------------------------


class _Strict(BaseModel):
    # strict: `eps: [true]` or `epochs: yes` are refused, not read as 1; no inf or NaN anywhere
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ComponentEntry(BaseModel):
    """``{name: ..., <parameters>}``: a registered component and its parameters."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="The registered name of the component.")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class MethodEntry(ComponentEntry):
    """An attack or certifier; ``label`` tells apart two entries of the same method."""

    label: str | None = Field(None, pattern=NAME_PATTERN, description="Name shown in results; defaults to `name`.")


class AugmentationSpec(_Strict):
    crop: int = Field(0, ge=0, description="Random translations by up to this many pixels (zero fill), as random crops of a padded image.")
    flip: bool = Field(False, description="Random horizontal flips (only for datasets whose classes are mirror-invariant).")


class TrainingSpec(_Strict):
    epochs: int = Field(10, ge=1, description="Passes over the training set.")
    batch_size: int = Field(64, ge=1, description="Training batch size.")
    learning_rate: float = Field(1e-3, gt=0, le=10, description="Optimizer learning rate.")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="adam, or sgd with momentum 0.9.")
    schedule: Literal["constant", "cosine"] = Field("constant", description="Learning-rate schedule over the training steps.")
    augmentation: AugmentationSpec = Field(default_factory=AugmentationSpec, description="Data augmentation of the training images.")


class TorchModuleSpec(_Strict):
    """A PyTorch ``nn.Module`` evaluated as is (the torch backend only)."""

    module: str = Field(
        pattern=r"^[^:]+\.py:[A-Za-z_][A-Za-z0-9_]*$",
        description="`file.py:Name`: a Python file (relative to the spec) and the nn.Module class, or a function returning one, in it.",
    )
    arguments: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for `Name`.")
    weights: str | None = Field(None, min_length=1, description="A state_dict saved with torch.save (relative to the spec), loaded with weights_only=True.")
    layout: Literal["NCHW", "NHWC"] = Field(
        "NCHW", description="The input layout the module expects; advbench's images (NHWC, in [0, 1]) are transposed for it."
    )


class ModelSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Unique name of the model in this spec.")
    architecture: ComponentEntry | None = Field(None, description="Architecture to train (or give `path` or `torch`).")
    defense: ComponentEntry | list[ComponentEntry] = Field(
        default_factory=lambda: ComponentEntry(name="none"),
        description="Defense used in training and inference, or a list of defenses applied together (e.g. a regularizer and adversarial training).",
    )
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    path: str | None = Field(None, min_length=1, description="A pretrained Keras model (logits out, inputs in [0, 1]), relative to the spec.")
    outputs: Literal["logits", "probabilities"] = Field(
        "logits", description="What a pretrained model outputs; probabilities (a final softmax) are turned into logits by a log."
    )
    torch: TorchModuleSpec | None = Field(None, description="A pretrained PyTorch module (logits out, inputs in [0, 1]); needs the torch backend.")
    seed: int | None = Field(None, ge=0, description="Seed of this model's initialization and training (default: the spec's seed); e.g. an independently trained copy.")

    @model_validator(mode="after")
    def _architecture_or_path(self):
        if sum(given is not None for given in (self.architecture, self.path, self.torch)) != 1:
            raise ValueError(
                "give exactly one of `architecture` (train a model), `path` (load a pretrained Keras model) "
                "or `torch` (load a pretrained PyTorch module)"
            )
        return self


class ThreatModel(_Strict):
    norm: str = Field(description=f"One of {', '.join(NORMS)}.")
    eps: list[Budget] = Field(
        min_length=1, description="Perturbation budgets, each > 0 and at most the largest distance in [0, 1]^d; a fraction like 8/255 is read as its value.",
    )

    @field_validator("norm")
    @classmethod
    def _known_norm(cls, norm: str) -> str:
        if norm not in NORMS:
            raise ValueError(f"unsupported norm {norm!r}; expected one of {', '.join(NORMS)}")
        return norm

    @field_validator("eps")
    @classmethod
    def _positive_sorted(cls, eps: list[float]) -> list[float]:
        bad = [e for e in eps if not e > 0 or e == float("inf")]
        if bad:
            raise ValueError(f"every eps must be a finite number > 0, got {bad[0]}")
        if len(set(eps)) != len(eps):
            raise ValueError("eps values must be distinct")
        return sorted(eps)


class EvaluationSpec(_Strict):
    examples: int | None = Field(None, ge=1, description="Test examples to attack and certify (stratified subset of the test set); all when unset.")
    batch_size: int = Field(256, ge=1, description="Examples per attack or certifier batch.")
    radius_tolerance: float = Field(
        0.02, ge=1e-6, lt=1,
        description="Relative precision of the bisection that turns fixed-budget attacks into radii (float32 resolves about 1e-7).",
    )
    eot: bool = Field(True, description="Attack randomized models with EOT and repeated final draws. Turning it off invalidates the evaluation and is flagged.")
    eot_samples: int = Field(20, ge=1, description="Draws averaged per gradient against a randomized model.")
    final_draws: int = Field(10, ge=1, description="Draws over which a randomized model's prediction is a majority vote.")


class ResourcesSpec(_Strict):
    """What one job asks of a worker under ``--executor ray`` (ignored by the in-process executor;
    not part of any result's key: where a job runs does not change what it computes)."""

    cpus_per_job: float = Field(1, gt=0, description="CPU cores Ray reserves per job (the framework keeps its own thread pool: its size changes float sums).")
    gpus_per_job: float | None = Field(
        None, ge=0, description="GPUs per job (a fraction shares one GPU between jobs); default: 1 where the cluster has GPUs, else 0.",
    )
    retries: int = Field(3, ge=0, description="Times a job is rerun when its worker process or node is lost (a job that raises is not retried).")


class SpecModel(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Run name; output goes to runs/<name>/ by default.")
    seed: int = Field(0, ge=0, description="Seeds data subsets, training and attacks.")
    dataset: ComponentEntry
    models: list[ModelSpec] = Field(min_length=1)
    threat_models: list[ThreatModel] = Field(min_length=1)
    attacks: list[MethodEntry] = Field(default_factory=list)
    certifiers: list[MethodEntry] = Field(default_factory=list)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    plugins: list[str] = Field(default_factory=list, description="Plugin modules (.py files, relative to the spec) to import: a spec runs their code.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Per-job resources under `--executor ray`.")

    @field_validator("models")
    @classmethod
    def _unique_models(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        _reject_duplicates([m.name for m in models], "model name")
        return models

    @field_validator("threat_models")
    @classmethod
    def _unique_norms(cls, threat_models: list[ThreatModel]) -> list[ThreatModel]:
        _reject_duplicates([t.norm for t in threat_models], "threat-model norm (put all its eps in one list)")
        return threat_models

    @field_validator("attacks", "certifiers")
    @classmethod
    def _unique_labels(cls, entries: list[MethodEntry]) -> list[MethodEntry]:
        _reject_duplicates([e.label or e.name for e in entries], "label (give repeated methods distinct `label`s)")
        return entries

    @model_validator(mode="after")
    def _something_to_run(self):
        if not self.attacks and not self.certifiers:
            raise ValueError("give at least one attack or certifier")
        return self


def _reject_duplicates(values: list[str], what: str) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what}: {value!r}")
        seen.add(value)


# -- the resolved spec -----------------------------------------------------------------


@dataclass
class ComponentRef:
    """A validated reference to a registered component with its parameters."""

    kind: str
    name: str
    cls: type[Component]
    params: Any
    label: str
    plugin: str = ""  # the plugin that registered it

    def build(self) -> Component:
        return self.cls(self.params)

    def identity(self) -> dict:
        """What determines the component's results: its parameters, with the content
        (SHA-256) of the files they name instead of their location, and without the
        folders they name (a dataset's content is fingerprinted separately)."""
        from advbench.store import file_digest

        data = self.as_dict()
        for name, info in type(self.params).model_fields.items():
            kind, key = spec_path_kind(info), info.alias or name
            if kind == "folder":
                data.pop(key, None)
            elif kind == "file" and data.get(key) and Path(data[key]).is_file():
                data[key] = "sha256:" + file_digest(Path(data[key]))
        return data

    def as_dict(self) -> dict:
        data = {"name": self.name, **self.params.model_dump(mode="json", by_alias=True)}
        if self.label != self.name:
            data["label"] = self.label
        return data


@dataclass
class DefenseRefs:
    """One defense, or several applied together (see :class:`advbench.components.DefenseStack`)."""

    refs: list[ComponentRef]

    def build(self):
        from advbench.components import DefenseStack

        defenses = [ref.build() for ref in self.refs]
        return defenses[0] if len(defenses) == 1 else DefenseStack(defenses)

    def as_dict(self):
        return self.refs[0].as_dict() if len(self.refs) == 1 else [ref.as_dict() for ref in self.refs]

    def identity(self):
        return self.refs[0].identity() if len(self.refs) == 1 else [ref.identity() for ref in self.refs]

    @property
    def name(self) -> str:
        return "+".join(ref.name for ref in self.refs)


@dataclass
class ModelPlan:
    name: str
    architecture: ComponentRef | None
    defense: DefenseRefs
    training: TrainingSpec
    path: Path | None
    seed: int | None = None
    torch: "TorchModule | None" = None
    outputs: str = "logits"

    def as_dict(self) -> dict:
        data: dict[str, Any] = {"name": self.name, "defense": self.defense.as_dict()}
        if self.seed is not None:
            data["seed"] = self.seed
        if self.torch is not None:
            data["torch"] = self.torch.as_dict()
        elif self.path is not None:
            data["path"] = str(self.path)
        else:
            data["architecture"] = self.architecture.as_dict()
            data["training"] = self.training.model_dump(mode="json")
        return data


@dataclass
class TorchModule:
    """A resolved ``torch:`` entry: the module's file and name, its arguments and weights."""

    file: Path
    attribute: str
    arguments: dict
    weights: Path | None
    layout: str

    def as_dict(self) -> dict:
        return {"module": f"{self.file}:{self.attribute}", "arguments": self.arguments,
                "weights": str(self.weights) if self.weights else None, "layout": self.layout}


@dataclass
class Spec:
    """A validated spec with every component resolved against the loaded plugins."""

    file: Path
    name: str
    seed: int
    dataset: ComponentRef
    models: list[ModelPlan]
    threat_models: list[ThreatModel]
    attacks: list[ComponentRef]
    certifiers: list[ComponentRef]
    evaluation: EvaluationSpec
    plugin_files: list[Path]
    host: Any  # advbench.plugins.PluginHost
    model_index: list[int] = field(default_factory=list)  # position of each model in the file (a partial spec skips some)
    threat_index: list[int] = field(default_factory=list)
    loaded: Any = None  # the data subsets, once the data checks loaded them (advbench.data.Subsets)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)  # where jobs run, not what they compute

    @property
    def indexed_models(self) -> list[tuple[int, "ModelPlan"]]:
        return list(zip(self.model_index or range(len(self.models)), self.models))

    @property
    def indexed_threat_models(self) -> list[tuple[int, "ThreatModel"]]:
        return list(zip(self.threat_index or range(len(self.threat_models)), self.threat_models))

    def as_dict(self) -> dict:
        """Everything that determines the results, with defaults filled in."""
        return {
            "name": self.name,
            "seed": self.seed,
            "dataset": self.dataset.as_dict(),
            "models": [m.as_dict() for m in self.models],
            "threat_models": [t.model_dump(mode="json") for t in self.threat_models],
            "attacks": [a.as_dict() for a in self.attacks],
            "certifiers": [c.as_dict() for c in self.certifiers],
            "evaluation": self.evaluation.model_dump(mode="json"),
            "plugins": [str(p) for p in self.plugin_files],
        }

    @property
    def hash(self) -> str:
        return stable_hash(self.as_dict())

    def model(self, name: str) -> ModelPlan:
        return next(m for m in self.models if m.name == name)


def stable_hash(data: Any) -> str:
    """SHA-256 of a canonical JSON encoding (sorted keys)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


# -- loading and validation ------------------------------------------------------------


def load_spec(path: str | Path, strict: bool = False, check_data: bool = False) -> Spec:
    """Read, validate and resolve a spec file; raise :class:`SpecError` with every problem.

    With ``check_data``, the spec is also checked against its data and pretrained models
    (:mod:`advbench.checks`), on every part that is valid on its own, so that one pass
    reports every problem.
    """
    from advbench.plugins import load_plugins

    path = Path(path)
    shown = str(path)
    if not path.exists():
        raise SpecError([Problem(shown, "", "file not found")])
    if not path.is_file():
        raise SpecError([Problem(shown, "", "not a file (a directory?); give the spec's YAML file")])
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SpecError([Problem(shown, "", f"exists but cannot be read: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise SpecError([Problem(shown, "", f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                                            "save the spec as UTF-8", line)]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise SpecError([Problem(shown, "", f"invalid YAML: {getattr(exc, 'problem', exc)}", line)]) from None
    locator = _Locator(shown, root)
    problems = locator.duplicate_keys()
    if not isinstance(data, dict):
        raise SpecError(problems + [Problem(shown, "", "expected a mapping with name, dataset, models, threat_models, ...", 1)])

    # Spec-local plugin files first: they may register components the spec uses.
    plugin_files: list[Path] = []
    entries = data.get("plugins") or []
    if not isinstance(entries, list):
        problems.append(locator.problem(("plugins",), f"expected a list of Python files, e.g. [{entries!r}] (got {type(entries).__name__})"))
        entries = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, str) or not entry:
            problems.append(locator.problem(("plugins", index), f"expected the file name of a Python module (got {entry!r})"))
            continue
        problem = _file_problem(path.parent / entry, "plugin file")
        if problem:
            problems.append(locator.problem(("plugins", index), problem))
        else:
            plugin_files.append((path.parent / entry).resolve())
    try:
        host = load_plugins(strict=strict)
    except PluginError as exc:
        raise SpecError(problems + [Problem(shown, "", str(exc))]) from None
    for index, plugin_path in enumerate(plugin_files):
        try:
            host.load_file(plugin_path)
        except PluginError as exc:
            problems.append(locator.problem(("plugins", index), str(exc)))

    try:
        model = SpecModel.model_validate({k: v for k, v in data.items() if k != "plugins"} | {"plugins": [str(p) for p in plugin_files]})
    except ValidationError as exc:
        problems.extend(locator.problem(err["loc"], _describe(err)) for err in exc.errors())
        model = None
    resolver = _Resolver(host.registry, locator, path.parent)
    spec = _resolve(model, data, path, resolver, plugin_files, host)
    problems += resolver.problems
    if spec is not None and model is not None and not problems:
        problems += _cross_checks(spec, locator)
    if check_data and spec is not None and spec.dataset is not None:
        from advbench.checks import data_problems

        problems += data_problems(spec, locator)
    if problems:
        raise SpecError(problems)
    return spec


def _file_problem(path: Path, what: str) -> str | None:
    """What is wrong with a file a spec names: missing, a directory, unreadable; or ``None``."""
    import os

    if not path.exists():
        return f"{what} not found: {path}"
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return (f"{path} is a TensorFlow SavedModel directory; advbench loads Keras 3 `.keras` files: load it "
                    "with TensorFlow and save it with model.save('model.keras')")
        return f"{what} {path} is a directory, not a file"
    if not os.access(path, os.R_OK):
        return f"{what} {path} exists but cannot be read (permission denied)"
    return None


def _resolve(model, data: dict, path: Path, resolver: "_Resolver", plugin_files, host) -> "Spec | None":
    """The resolved spec; when the spec as a whole did not validate, a partial one made of
    its parts that do (for the data checks), or ``None`` without a usable dataset."""
    if model is not None:
        return Spec(
            file=path, name=model.name, seed=model.seed,
            dataset=resolver.resolve("dataset", model.dataset, ("dataset",)),
            models=[_model_plan(m, i, resolver, path) for i, m in enumerate(model.models)],
            threat_models=model.threat_models,
            attacks=[resolver.resolve("attack", a, ("attacks", i)) for i, a in enumerate(model.attacks)],
            certifiers=[resolver.resolve("certifier", c, ("certifiers", i)) for i, c in enumerate(model.certifiers)],
            evaluation=model.evaluation, plugin_files=plugin_files, host=host, resources=model.resources,
        )
    # Each part on its own: components are resolved (and their problems reported) wherever
    # the entry names one; sections that validate are kept for the data checks.
    def part(cls, value):
        try:
            return cls.model_validate(value)
        except (ValidationError, TypeError):
            return None

    def entry(value, loc, kind, label=False):
        parsed = part(MethodEntry if label else ComponentEntry, value) if isinstance(value, dict) else None
        return resolver.resolve(kind, parsed, loc) if parsed is not None else None

    dataset = entry(data.get("dataset"), ("dataset",), "dataset")
    for kind, section in (("attack", "attacks"), ("certifier", "certifiers")):
        for i, value in enumerate(data.get(section) or [] if isinstance(data.get(section), list) else []):
            entry(value, (section, i), kind, label=True)
    models, model_index = [], []
    for i, value in enumerate(data.get("models") if isinstance(data.get("models"), list) else []):
        parsed = part(ModelSpec, value)
        if parsed is not None:
            models.append(_model_plan(parsed, i, resolver, path))
            model_index.append(i)
        elif isinstance(value, dict):
            entry(value.get("architecture"), ("models", i, "architecture"), "architecture")
            defenses = value.get("defense")
            for k, d in enumerate(defenses if isinstance(defenses, list) else [defenses]):
                entry(d, ("models", i, "defense", k) if isinstance(defenses, list) else ("models", i, "defense"), "defense")
    threats, threat_index = [], []
    for i, value in enumerate(data.get("threat_models") if isinstance(data.get("threat_models"), list) else []):
        parsed = part(ThreatModel, value)
        if parsed is not None:
            threats.append(parsed)
            threat_index.append(i)
    seed = data.get("seed", 0)
    if dataset is None or not isinstance(seed, int) or isinstance(seed, bool):
        return None
    return Spec(
        file=path, name=str(data.get("name", "")), seed=seed, dataset=dataset, models=models, threat_models=threats,
        attacks=[], certifiers=[], evaluation=_evaluation_part(data.get("evaluation")), plugin_files=plugin_files,
        host=host, model_index=model_index, threat_index=threat_index,
    )


def _evaluation_part(raw) -> "EvaluationSpec | None":
    """The evaluation section, or at least its number of examples, for the data checks."""
    raw = raw if isinstance(raw, dict) else {}
    for candidate in (raw, {"examples": raw.get("examples")}):
        try:
            return EvaluationSpec.model_validate(candidate)
        except ValidationError:
            continue
    return None


def _model_plan(m: "ModelSpec", i: int, resolver: "_Resolver", path: Path) -> "ModelPlan":
    plan = ModelPlan(
        name=m.name,
        architecture=resolver.resolve("architecture", m.architecture, ("models", i, "architecture")) if m.architecture else None,
        defense=DefenseRefs(
            [resolver.resolve("defense", m.defense, ("models", i, "defense"))]
            if isinstance(m.defense, ComponentEntry)
            else [resolver.resolve("defense", d, ("models", i, "defense", k)) for k, d in enumerate(m.defense)]
        ),
        training=m.training,
        path=(path.parent / m.path) if m.path else None,
        seed=m.seed,
        torch=_torch_module(path.parent, m.torch) if m.torch else None,
        outputs=m.outputs,
    )
    locate = resolver.locator.problem
    if plan.path is not None:
        problem = _file_problem(plan.path, "model file")
        if problem:
            resolver.problems.append(locate(("models", i, "path"), problem))
    if plan.torch is not None:
        for file, field_name in ((plan.torch.file, "module"), (plan.torch.weights, "weights")):
            problem = _file_problem(file, f"{field_name} file") if file is not None else None
            if problem:
                resolver.problems.append(locate(("models", i, "torch", field_name), problem))
    return plan


def _cross_checks(spec: "Spec", locator: "_Locator") -> list[Problem]:
    """Checks across sections: flips the dataset forbids, and each component's own
    ``check_spec`` against the rest of the spec (e.g. a transfer attack's source model)."""
    problems = []
    for i, plan in enumerate(spec.models):
        if plan.training.augmentation.flip and not spec.dataset.cls.mirror_invariant:
            problems.append(locator.problem(
                ("models", i, "training", "augmentation", "flip"),
                f"dataset {spec.dataset.name!r} does not allow horizontal flips (its classes are not mirror-invariant)",
            ))
    references = [(("dataset",), spec.dataset)]
    references += [(("models", i, "architecture"), m.architecture) for i, m in enumerate(spec.models)]
    references += [(("models", i, "defense"), ref) for i, m in enumerate(spec.models) for ref in m.defense.refs]
    references += [(("attacks", i), a) for i, a in enumerate(spec.attacks)] + [(("certifiers", i), c) for i, c in enumerate(spec.certifiers)]
    for loc, ref in references:
        if ref is None:
            continue
        try:
            message = ref.cls.check_spec(ref.params, spec)
        except Exception as exc:  # a plugin's own check must not end validation with a traceback
            message = f"the {ref.kind} plugin's check_spec raised {exc.__class__.__name__}: {exc}"
        if message:
            problems.append(locator.problem(loc, message))
    return problems


def _torch_module(folder: Path, entry: TorchModuleSpec) -> TorchModule:
    file, attribute = entry.module.rsplit(":", 1)
    return TorchModule(folder / file, attribute, dict(entry.arguments), folder / entry.weights if entry.weights else None, entry.layout)


class _Resolver:
    def __init__(self, registry, locator: "_Locator", folder: Path):
        self.registry = registry
        self.locator = locator
        self.folder = folder
        self.problems: list[Problem] = []

    def resolve(self, kind: str, entry: ComponentEntry, loc: tuple) -> ComponentRef | None:
        try:
            cls = self.registry.get(kind, entry.name)
        except UnknownComponentError as exc:
            self.problems.append(self.locator.problem(loc + ("name",), str(exc)))
            return None
        try:
            params = cls.Params.model_validate(entry.options)
        except ValidationError as exc:
            for err in exc.errors():
                self.problems.append(self.locator.problem(loc + tuple(err["loc"]), _describe(err, cls.Params)))
            return None
        except Exception as exc:  # a plugin's validator raising something else is still a message
            self.problems.append(self.locator.problem(loc, f"the {kind} {entry.name!r} could not check its parameters: "
                                                           f"{exc.__class__.__name__}: {exc}"))
            return None
        params = self._spec_relative(params)
        label = getattr(entry, "label", None) or entry.name
        return ComponentRef(kind, entry.name, cls, params, label, self.registry.plugin_of(kind, entry.name))

    def _spec_relative(self, params):
        """Parameters marked as files or folders (``json_schema_extra={"spec_path": ...}``)
        are relative to the spec's folder, not to where advbench runs."""
        updates = {}
        for name, info in type(params).model_fields.items():
            value = getattr(params, name)
            if spec_path_kind(info) and isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                updates[name] = str((self.folder / value).resolve())
        return params.model_copy(update=updates) if updates else params


def spec_path_kind(info) -> str | None:
    """``"file"`` or ``"folder"`` for a parameter that names a path, else ``None``."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return extra.get("spec_path")


def _describe(err: dict, params_model: type[BaseModel] | None = None) -> str:
    """Turn a pydantic error into 'what was expected (got what)'."""
    kind = err["type"]
    if kind == "extra_forbidden":
        field = err["loc"][-1] if err["loc"] else "?"
        if params_model is not None:
            known = ", ".join(params_model.model_fields) or "none"
            return f"unknown parameter {field!r} (known: {known})"
        return f"unknown field {field!r}"
    if kind == "missing":
        return "required field missing"
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if "input" in err and kind not in ("value_error", "assertion_error") and not isinstance(err["input"], dict):
        message += f" (got {err['input']!r})"
    return message


class _Locator:
    """Maps a field path to its line in the YAML file."""

    def __init__(self, file: str, root: yaml.Node | None):
        self.file = file
        self.root = root

    def problem(self, loc: tuple, message: str) -> Problem:
        return Problem(self.file, _format_path(loc), message, self.line(loc))

    def line(self, loc: tuple) -> int | None:
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            child = None
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if key.value == part:
                        child, line = value, key.start_mark.line + 1
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                child = node.value[part]
                line = child.start_mark.line + 1
            if child is None:
                break
            node = child
        return line

    def duplicate_keys(self) -> list[Problem]:
        problems: list[Problem] = []

        def walk(node: yaml.Node, loc: tuple) -> None:
            if isinstance(node, yaml.MappingNode):
                seen = set()
                for key, value in node.value:
                    if key.value in seen:
                        problems.append(Problem(self.file, _format_path(loc + (key.value,)), "duplicate key", key.start_mark.line + 1))
                    seen.add(key.value)
                    walk(value, loc + (key.value,))
            elif isinstance(node, yaml.SequenceNode):
                for index, value in enumerate(node.value):
                    walk(value, loc + (index,))

        if self.root is not None:
            walk(self.root, ())
        return problems


def _format_path(loc: tuple) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif str(part).startswith(("function-", "list[", "dict[")):
            continue  # pydantic's internal union/validator labels
        else:
            text += f".{part}" if text else str(part)
    return text
