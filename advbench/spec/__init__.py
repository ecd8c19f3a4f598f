"""The spec: its schema (:mod:`.schema`), the resolved form runs are planned from
(:mod:`.resolved`), reading and validating a file with line-located errors
(:mod:`.loading`, checked against its data by :mod:`.data_checks`), and the JSON schema
``advbench schema`` prints (:mod:`.jsonschema`)."""

from advbench.spec.loading import check_data, load_spec, load_spec_data
from advbench.spec.resolved import ComponentRef, DefenseRefs, ModelPlan, Spec, TorchModule, stable_hash
from advbench.spec.schema import (
    AugmentationSpec,
    EvaluationSpec,
    ModelSpec,
    ResourcesSpec,
    SpecModel,
    ThreatModel,
    TrainingSpec,
)

__all__ = [
    "AugmentationSpec",
    "ComponentRef",
    "DefenseRefs",
    "EvaluationSpec",
    "ModelPlan",
    "ModelSpec",
    "ResourcesSpec",
    "Spec",
    "SpecModel",
    "ThreatModel",
    "TorchModule",
    "TrainingSpec",
    "check_data",
    "load_spec",
    "load_spec_data",
    "stable_hash",
]
