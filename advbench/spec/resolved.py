"""The resolved spec: every component looked up in the registry with validated
parameters, paths relative to the spec's folder made absolute; what the run layer plans
from.  :meth:`Spec.as_dict` is the one plain-data form (``spec.json`` in a run directory)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advbench.contract.components import Component, DefenseStack
from advbench.kit.datafiles import file_digest
from advbench.spec.schema import EvaluationSpec, ResourcesSpec, ThreatModel, TrainingSpec


def spec_path_kind(info) -> str | None:
    """``"file"`` or ``"folder"`` for a parameter that names a path, else ``None``."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return extra.get("spec_path")


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
    """One defense, or several applied together (see :class:`advbench.contract.components.DefenseStack`)."""

    refs: list[ComponentRef]

    def build(self):
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
    normalization: dict | None = None  # {"mean": [...], "std": [...]} of an ONNX network

    def as_dict(self) -> dict:
        data: dict[str, Any] = {"name": self.name, "defense": self.defense.as_dict()}
        if self.seed is not None:
            data["seed"] = self.seed
        if self.torch is not None:
            data["torch"] = self.torch.as_dict()
        elif self.path is not None:
            data["path"] = str(self.path)
            if self.normalization is not None:
                data["normalization"] = self.normalization
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
        return {
            "module": f"{self.file}:{self.attribute}",
            "arguments": self.arguments,
            "weights": str(self.weights) if self.weights else None,
            "layout": self.layout,
        }


@dataclass
class Spec:
    """A validated spec with every component resolved against the loaded plugins."""

    file: Path | None  # the spec file (None: a spec given as data, see load_spec_data)
    name: str
    seed: int
    dataset: ComponentRef
    models: list[ModelPlan]
    threat_models: list[ThreatModel]
    attacks: list[ComponentRef]
    certifiers: list[ComponentRef]
    evaluation: EvaluationSpec
    plugin_files: list[Path]
    host: Any  # advbench.contract.plugins.PluginHost
    model_index: list[int] = field(default_factory=list)  # position of each model in the file (a partial spec skips some)
    threat_index: list[int] = field(default_factory=list)
    loaded: Any = None  # the data subsets, once the data checks loaded them (advbench.core.data.Subsets)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)  # where jobs run, not what they compute
    locator: Any = None  # the file's field-to-line map (advbench.spec.loading.Locator), for later checks' messages

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
