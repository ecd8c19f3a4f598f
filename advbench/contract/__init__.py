"""The plugin contract: what a plugin implements and registers.

Component base classes with their typed parameters (:mod:`.components`), the hooks a
plugin implements (:mod:`.hookspecs`), the registry its components go into
(:mod:`.registry`) and the host that loads plugins (:mod:`.plugins`).  Nothing here
imports a deep-learning framework; everything above builds on it.
"""

from advbench.contract.components import (
    BUDGET_RTOL,
    KINDS,
    NORMS,
    SPEC_FILE,
    SPEC_FOLDER,
    Architecture,
    Attack,
    Budget,
    Certifier,
    Component,
    Dataset,
    DatasetArrays,
    DatasetParams,
    Defense,
    DefenseStack,
    Params,
    box_diameter,
    budget_allowance,
)

__all__ = [
    "BUDGET_RTOL",
    "KINDS",
    "NORMS",
    "SPEC_FILE",
    "SPEC_FOLDER",
    "Architecture",
    "Attack",
    "Budget",
    "Certifier",
    "Component",
    "Dataset",
    "DatasetArrays",
    "DatasetParams",
    "Defense",
    "DefenseStack",
    "Params",
    "box_diameter",
    "budget_allowance",
]
