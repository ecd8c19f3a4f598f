"""advbench: how robust is this classifier, really?

A plugin author needs one import to start::

    from advbench import hookimpl

and the base classes of the components they register (:class:`Dataset`,
:class:`Architecture`, :class:`Defense`, :class:`Attack`, :class:`Certifier`,
each with a pydantic :class:`Params` model).  Nothing here imports TensorFlow.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("advbench")
"""Marker for plugin hook implementations: ``@hookimpl def advbench_register_attacks(register): ...``."""

from advbench.components import (  # noqa: E402  (hookimpl must exist before plugins import us)
    Architecture,
    Attack,
    BisectionCertifier,
    Certifier,
    Dataset,
    DatasetArrays,
    Defense,
    Params,
    Target,
)


def load_dataset(name: str, **params) -> DatasetArrays:
    """Load the full train and test splits of a registered dataset.

    ``index`` columns in advbench's exports are positions in ``load_dataset(name,
    **params).x_test``, so an exported example can always be found again.
    """
    from advbench.plugins import load_plugins

    registry = load_plugins().registry
    dataset_cls = registry.get("dataset", name)
    dataset = dataset_cls(dataset_cls.Params(**params))
    return dataset.load()


__all__ = [
    "Architecture",
    "Attack",
    "BisectionCertifier",
    "Certifier",
    "Dataset",
    "DatasetArrays",
    "Defense",
    "Params",
    "Target",
    "__version__",
    "hookimpl",
    "load_dataset",
]
