"""The YAML spec's schema: what each section may say, as pydantic models (strict: no
unknown keys, no ``yes`` for a number, no inf or NaN)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from advbench.contract.components import NAME_PATTERN, NORMS, Budget


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
    crop: int = Field(
        0, ge=0, description="Random translations by up to this many pixels (zero fill), as random crops of a padded image."
    )
    flip: bool = Field(False, description="Random horizontal flips (only for datasets whose classes are mirror-invariant).")


class TrainingSpec(_Strict):
    epochs: int = Field(10, ge=1, description="Passes over the training set.")
    batch_size: int = Field(64, ge=1, description="Training batch size.")
    learning_rate: float = Field(1e-3, gt=0, le=10, description="Optimizer learning rate.")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="adam, or sgd with momentum 0.9.")
    schedule: Literal["constant", "cosine"] = Field("constant", description="Learning-rate schedule over the training steps.")
    augmentation: AugmentationSpec = Field(
        default_factory=AugmentationSpec, description="Data augmentation of the training images."
    )


class TorchModuleSpec(_Strict):
    """A PyTorch ``nn.Module`` evaluated as is (the torch backend only)."""

    module: str = Field(
        pattern=r"^[^:]+\.py:[A-Za-z_][A-Za-z0-9_]*$",
        description="`file.py:Name`: a Python file (relative to the spec) and the nn.Module class, or a function returning one, in it.",
    )
    arguments: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for `Name`.")
    weights: str | None = Field(
        None,
        min_length=1,
        description="A state_dict saved with torch.save (relative to the spec), loaded with weights_only=True.",
    )
    layout: Literal["NCHW", "NHWC"] = Field(
        "NCHW", description="The input layout the module expects; advbench's images (NHWC, in [0, 1]) are transposed for it."
    )


class Normalization(_Strict):
    mean: list[float] = Field(min_length=1, description="Per channel (or one for all): subtracted from the [0, 1] pixels.")
    std: list[float] = Field(min_length=1, description="Per channel (or one for all), each > 0: the difference is divided by it.")

    @field_validator("std")
    @classmethod
    def _positive(cls, std: list[float]) -> list[float]:
        if not all(s > 0 and s != float("inf") for s in std):
            raise ValueError("every std must be a finite number > 0")
        return std


class ModelSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Unique name of the model in this spec.")
    architecture: ComponentEntry | None = Field(None, description="Architecture to train (or give `path` or `torch`).")
    defense: ComponentEntry | list[ComponentEntry] = Field(
        default_factory=lambda: ComponentEntry(name="none"),
        description="Defense used in training and inference, or a list of defenses applied together (e.g. a regularizer and adversarial training).",
    )
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    path: str | None = Field(
        None,
        min_length=1,
        description="A pretrained model, relative to the spec: a Keras file (logits out, inputs in [0, 1]) or an ONNX network (.onnx, .onnx.gz).",
    )
    normalization: Normalization | None = Field(
        None,
        description="An ONNX network's input normalisation (x - mean) / std, made its first layer: budgets stay in pixel space.",
    )
    outputs: Literal["logits", "probabilities"] = Field(
        "logits", description="What a pretrained model outputs; probabilities (a final softmax) are turned into logits by a log."
    )
    torch: TorchModuleSpec | None = Field(
        None, description="A pretrained PyTorch module (logits out, inputs in [0, 1]); needs the torch backend."
    )
    seed: int | None = Field(
        None,
        ge=0,
        description="Seed of this model's initialization and training (default: the spec's seed); e.g. an independently trained copy.",
    )

    @model_validator(mode="after")
    def _architecture_or_path(self):
        if sum(given is not None for given in (self.architecture, self.path, self.torch)) != 1:
            raise ValueError(
                "give exactly one of `architecture` (train a model), `path` (load a pretrained Keras model) "
                "or `torch` (load a pretrained PyTorch module)"
            )
        if self.normalization is not None and not (self.path or "").lower().endswith((".onnx", ".onnx.gz")):
            raise ValueError("`normalization` is for an ONNX network given as `path` (a Keras model holds its own)")
        return self


class ThreatModel(_Strict):
    norm: str = Field(description=f"One of {', '.join(NORMS)}.")
    eps: list[Budget] = Field(
        min_length=1,
        description="Perturbation budgets, each > 0 and at most the largest distance in [0, 1]^d; a fraction like 8/255 is read as its value.",
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
    examples: int | None = Field(
        None, ge=1, description="Test examples to attack and certify (stratified subset of the test set); all when unset."
    )
    batch_size: int = Field(256, ge=1, description="Examples per attack or certifier batch.")
    radius_tolerance: float = Field(
        0.02,
        ge=1e-6,
        lt=1,
        description="Relative precision of the bisection that turns fixed-budget attacks into radii (float32 resolves about 1e-7).",
    )
    eot: bool = Field(
        True,
        description="Attack randomized models with EOT and repeated final draws. Turning it off invalidates the evaluation and is flagged.",
    )
    eot_samples: int = Field(20, ge=1, description="Draws averaged per gradient against a randomized model.")
    final_draws: int = Field(10, ge=1, description="Draws over which a randomized model's prediction is a majority vote.")


class ResourcesSpec(_Strict):
    """What one job asks of a worker under ``--executor ray`` (ignored by the in-process executor;
    not part of any result's key: where a job runs does not change what it computes)."""

    cpus_per_job: float = Field(
        1,
        gt=0,
        description="CPU cores Ray reserves per job (the framework keeps its own thread pool: its size changes float sums).",
    )
    gpus_per_job: float | None = Field(
        None,
        ge=0,
        description="GPUs per job (a fraction shares one GPU between jobs); default: 1 where the cluster has GPUs, else 0.",
    )
    retries: int = Field(
        3, ge=0, description="Times a job is rerun when its worker process or node is lost (a job that raises is not retried)."
    )


class SpecModel(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Run name; output goes to runs/<name>/ by default.")
    seed: int = Field(0, ge=0, description="Seeds data subsets, training and attacks.")
    dataset: ComponentEntry
    models: list[ModelSpec] = Field(min_length=1)
    threat_models: list[ThreatModel] = Field(min_length=1)
    attacks: list[MethodEntry] = Field(default_factory=list)
    certifiers: list[MethodEntry] = Field(default_factory=list)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    plugins: list[str] = Field(
        default_factory=list, description="Plugin modules (.py files, relative to the spec) to import: a spec runs their code."
    )
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
