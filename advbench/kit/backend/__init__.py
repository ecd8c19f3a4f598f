"""The few things Keras does not abstract, one module per Keras backend.

Everything numerical in advbench (and in a plugin) is written once with ``keras.ops``,
``keras.random`` and Keras layers, on whichever backend Keras runs (``KERAS_BACKEND``:
``tensorflow``, the default, ``jax`` or ``torch``).  What is left lives in this package,
as Keras keeps it: one module per backend with the same functions
(:mod:`.tensorflow`, :mod:`.jax`, :mod:`.torch`), chosen once, when first used, by the
backend Keras runs on.  These are the only modules that import TensorFlow, JAX or PyTorch:

* :func:`grad`, :func:`jacobian` and :func:`variable_grad`: gradients with respect to
  inputs (attacks, certifiers, regularizers) and to weights (training);
* :func:`compile`: turn a function into a compiled one (``tf.function``, ``jax.jit``;
  PyTorch runs eagerly);
* :func:`while_loop`: a loop that may stop early, inside compiled code;
* :func:`set_seed`, :func:`name`, :func:`device`, :func:`describe` and
  :func:`enable_determinism`.

(Random draws that are the same on every backend are written in ``keras.ops``, in
:mod:`advbench.kit.rng`.)

Under JAX the Keras variables a compiled function reads and changes are passed in and
out of it; :func:`compile` does this for the objects named in its ``state`` argument,
:func:`while_loop` and the gradient functions carry the changes through loops and
derivatives, so the code that uses them looks the same on every backend: call the
model, assign a variable, advance a random stream or a ``keras.random.SeedGenerator``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Iterable

from advbench.kit.backend.common import SMALLEST_BUCKET, variables_of
from advbench.lazy import keras

BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
"""The Keras backends advbench runs on, each with the package it needs."""

EXTRAS = {"tensorflow": "", "jax": "[jax]", "torch": "[torch]"}

__all__ = [
    "BACKENDS",
    "SMALLEST_BUCKET",
    "compile",
    "describe",
    "device",
    "enable_determinism",
    "grad",
    "jacobian",
    "name",
    "select",
    "set_seed",
    "to_numpy",
    "to_tensor",
    "variable_grad",
    "variables_of",
    "while_loop",
]

_modules: dict[str, Any] = {}


def _framework():
    """The module of the backend Keras runs on, imported once."""
    backend = name()
    if backend not in _modules:
        if backend not in BACKENDS:
            raise RuntimeError(f"Keras runs on {backend!r}; advbench supports {', '.join(BACKENDS)}")
        _modules[backend] = importlib.import_module(f"{__name__}.{backend}")
    return _modules[backend]


def select(requested: str) -> None:
    """Run on ``requested`` (``advbench run --backend``): the Keras way, by setting
    ``KERAS_BACKEND`` before Keras is imported.  Refuses, with the fix, when Keras already
    runs on another backend in this process or the backend's package is missing."""
    import importlib.util
    import os
    import sys

    from advbench.errors import UsageError

    if requested not in BACKENDS:
        raise UsageError(f"--backend: expected one of {', '.join(BACKENDS)}, got {requested!r}")
    if "keras" in sys.modules:
        running = sys.modules["keras"].backend.backend()
        if running != requested:
            raise UsageError(
                f"--backend {requested}: Keras already runs on {running} in this process; "
                f"start a new one with KERAS_BACKEND={requested}"
            )
        return
    if importlib.util.find_spec(BACKENDS[requested]) is None:
        raise UsageError(
            f"--backend {requested}: the package {BACKENDS[requested]!r} is not installed "
            f'(pip install "advbench{EXTRAS[requested]}")'
        )
    os.environ["KERAS_BACKEND"] = requested


def check_environment() -> None:
    """Refuse, with the fix, a ``KERAS_BACKEND`` advbench cannot run on (unknown, or its
    package missing) before anything imports Keras (which would end in a traceback)."""
    import importlib.util
    import os

    from advbench.errors import UsageError

    requested = os.environ.get("KERAS_BACKEND")
    if not requested:
        return
    if requested not in BACKENDS:
        raise UsageError(f"KERAS_BACKEND={requested!r}: expected one of {', '.join(BACKENDS)} (or unset it for tensorflow)")
    if importlib.util.find_spec(BACKENDS[requested]) is None:
        raise UsageError(
            f"KERAS_BACKEND={requested}: the package {BACKENDS[requested]!r} is not installed "
            f'(pip install "advbench{EXTRAS[requested]}")'
        )


def name() -> str:
    """The Keras backend in use: ``tensorflow``, ``jax`` or ``torch``."""
    return keras.backend.backend()


def device() -> str:
    """Where compiled code runs: the accelerator's name (``gpu: NVIDIA H100 ...``), or the
    processor with the widest vector instructions it has (``cpu: AMD EPYC, avx2``).

    The instruction set is part of a result's provenance: the CPU kernels (oneDNN, XLA)
    choose their code by it at run time, so the same code, data and seed give the same
    bits on one instruction set and rounding-level differences on another, which a long
    training grows into a different model."""
    where = _framework().device()
    return f"cpu: {cpu()}" if where == "cpu" else where


_VECTOR_SETS = ("avx512f", "avx2", "avx", "sse4_2", "asimd", "neon")
"""Vector instruction sets, widest first, as Linux names them in ``/proc/cpuinfo``."""


def cpu(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The processor's model name and its widest vector instruction set (``/proc/cpuinfo``
    on Linux; the machine type where that is not readable)."""
    import platform

    model, flags = "", set()
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and not model:
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    widest = next((name for name in _VECTOR_SETS if name in flags), None)
    described = model or platform.machine() or "unknown"
    return f"{described}, {widest}" if widest else described


def identity() -> dict[str, str]:
    """The backend and the float precision, what every result's key holds, without
    importing Keras where it is not imported yet: read as Keras reads them at import
    (``KERAS_BACKEND``, else ``keras.json`` in ``$KERAS_HOME`` or ``~/.keras``, else
    TensorFlow; its ``floatx``, else float32), so that a rerun with nothing left to do does
    not wait seconds for TensorFlow.  A job that runs checks it against Keras itself
    (:func:`check_identity`)."""
    import json
    import os

    if "keras" in sys.modules:
        return {"backend": name(), "precision": keras.config.floatx()}
    if "KERAS_HOME" in os.environ:
        folder = os.environ["KERAS_HOME"]
    else:
        home = os.path.expanduser("~")
        folder = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    config: dict = {}
    try:
        with open(os.path.expanduser(os.path.join(folder, "keras.json"))) as handle:
            loaded = json.load(handle)
        config = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    chosen = os.environ.get("KERAS_BACKEND") or config.get("backend", "tensorflow")
    return {"backend": chosen, "precision": config.get("floatx", "float32")}


def check_identity(expected: dict[str, str]) -> None:
    """Raise if Keras runs on another backend or precision than :func:`identity` read
    before importing it (the keys would name the wrong one)."""
    actual = {"backend": name(), "precision": keras.config.floatx()}
    wanted = {key: expected[key] for key in actual}
    if actual != wanted:
        raise RuntimeError(f"Keras runs with {actual}, where its configuration read {wanted}; set KERAS_BACKEND explicitly")


def describe() -> dict[str, str]:
    """The backend, the device and the float precision: recorded with every result."""
    return {"backend": name(), "device": device(), "precision": keras.config.floatx()}


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and the framework's global generators and Keras' own (what
    ``keras.utils.set_random_seed`` does, without importing TensorFlow under another
    backend).  Seed generators created afterwards without a seed draw from it."""
    _framework().set_seed(seed)


def enable_determinism() -> None:
    """Ask the framework for deterministic kernels (same inputs, same bits)."""
    _framework().enable_determinism()


def compile(
    fn: Callable,
    state: Iterable[Any] = (),
    mutable: Iterable[Any] | None = None,
    batch_args: tuple[int, ...] = (),
    smallest_batch: int | None = None,
) -> Callable:
    """Compile ``fn`` for the backend in use.

    :param state: the objects whose Keras variables ``fn`` reads (see :func:`variables_of`).
    :param mutable: those of them ``fn`` may change; default: the non-trainable variables
        (seed-generator states, counters, batch-norm statistics).  A training step names
        everything it updates (the model, the optimizer).
    :param batch_args: positions of the arguments that are batches of examples (their
        first axis), for a function whose examples do not interact.  JAX compiles once
        per input shape, so these are padded (with copies of the first example) to the
        next power of two (at least ``smallest_batch``, default :data:`SMALLEST_BUCKET`),
        and every output with that many rows is cut back: a batch that shrinks as
        examples finish costs a few compilations, not one per size.  A caller that
        sizes its batches to a memory budget passes ``smallest_batch=1``.
    :return: a function with ``fn``'s signature.  Arguments may be NumPy arrays or
        tensors; positional arguments are traced (pass Python settings by closure).
    """
    return _framework().compile(fn, state, mutable, batch_args, smallest_batch)


def grad(fn: Callable, x, differentiable: bool = False):
    """Gradient of a scalar function with respect to its input.

    :param fn: ``fn(x) -> (value, aux)`` with ``value`` a scalar; ``x`` a tensor or a
        list of tensors.
    :param differentiable: keep the gradient differentiable with respect to the weights
        (a regularizer made of input gradients, in a training step).
    :return: ``(gradient, aux)``; the gradient has ``x``'s structure (zeros where the
        value does not depend on ``x``).
    """
    return _framework().grad(fn, x, differentiable)


def jacobian(fn: Callable, x, differentiable: bool = False):
    """Input gradients of every output of a per-example function.

    :param fn: ``fn(x) -> outputs`` of shape ``(batch, K)``, each row depending on its own
        example only (a model in inference mode).
    :return: ``(outputs, jacobian)``, the jacobian of shape ``(batch, K, *x.shape[1:])``.
    """
    return _framework().jacobian(fn, x, differentiable)


def variable_grad(fn: Callable, variables: list):
    """Gradient of a scalar loss with respect to Keras variables (a training step).

    :param fn: ``fn() -> (loss, aux)``, reading the variables (e.g. calling the model).
    :return: ``(loss, aux, gradients)``, one gradient per variable.
    """
    return _framework().variable_grad(fn, variables)


def while_loop(cond: Callable, body: Callable, loop_vars):
    """``keras.ops.while_loop`` that may assign Keras variables in its body (seed
    generators, counters), on every backend.  ``loop_vars`` is a tuple or list;
    ``cond`` and ``body`` take its elements as arguments."""
    return _framework().while_loop(cond, body, tuple(loop_vars))


def to_tensor(array, dtype: str = "float32"):
    """A NumPy array as a backend tensor (float32 by default)."""
    return keras.ops.convert_to_tensor(array, dtype)


def to_numpy(tensor):
    """A backend tensor (or NumPy array) as a NumPy array."""
    return keras.ops.convert_to_numpy(tensor)
