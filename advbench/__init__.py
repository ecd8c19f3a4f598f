"""advbench: how robust is this classifier, really?

A plugin author needs one import to start::

    from advbench import hookimpl

and the base classes of the components they register (:class:`Dataset`,
:class:`Architecture`, :class:`Defense`, :class:`Attack`, :class:`Certifier`, each with
a pydantic :class:`Params` model): the plugin contract (:mod:`advbench.contract`).  The
building blocks plugins use live in :mod:`advbench.kit` (backend, lp, rng, losses,
layers, the target, PGD, the bound engine).  In a notebook::

    result = advbench.evaluate(model, x, y, norm="linf", eps=[0.1], attacks=["pgd"], certifiers=["crown"])
    results = advbench.run("spec.yaml")

Nothing here imports TensorFlow; :func:`evaluate`, :func:`run` and :func:`load_dataset`
load what they need when called.
"""

from __future__ import annotations

__version__ = "0.1.0"

from advbench.contract.components import (  # noqa: E402
    BUDGET_RTOL,
    NORMS,
    SPEC_FILE,
    SPEC_FOLDER,
    Architecture,
    Attack,
    Budget,
    Certifier,
    Dataset,
    DatasetArrays,
    DatasetParams,
    Defense,
    Params,
    budget_allowance,
)
from advbench.contract.hookspecs import hookimpl  # noqa: E402
from advbench.errors import AdvbenchError  # noqa: E402
from advbench.kit.search import BisectionCertifier  # noqa: E402

_LAZY = {
    "evaluate": "advbench.api",
    "run": "advbench.api",
    "load_model": "advbench.api",
    "load_dataset": "advbench.api",
    "Target": "advbench.kit.target",
}


def __getattr__(name: str):
    # The Python API and the Keras-backed parts load on first use (importing advbench stays fast).
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'advbench' has no attribute {name!r}")


__all__ = [
    "BUDGET_RTOL",
    "NORMS",
    "SPEC_FILE",
    "SPEC_FOLDER",
    "AdvbenchError",
    "Architecture",
    "Attack",
    "BisectionCertifier",
    "Budget",
    "Certifier",
    "Dataset",
    "DatasetArrays",
    "DatasetParams",
    "Defense",
    "Params",
    "Target",
    "__version__",
    "budget_allowance",
    "evaluate",
    "hookimpl",
    "load_dataset",
    "run",
]
