"""The backend functions on JAX: ``jax.value_and_grad`` and ``jax.vjp`` for gradients,
``jax.jit`` over Keras' stateless scopes for compilation (see :mod:`advbench.kit.backend`).

JAX has no hidden state, so the Keras variables a compiled function reads (weights,
seed-generator states, counters) are passed in as arguments, and the ones it changes
are passed out again and assigned afterwards; loops and derivatives inside carry the
changes through child scopes (:class:`_Child`).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from advbench.kit.backend.common import SMALLEST_BUCKET, seed_keras_and_python, variables_of
from advbench.lazy import keras


def device() -> str:
    first = jax.devices()[0]
    return "cpu" if first.platform == "cpu" else f"{first.platform}: {first.device_kind}"


def set_seed(seed: int) -> None:
    seed_keras_and_python(seed)


def enable_determinism() -> None:
    """XLA's CPU kernels are deterministic; on a GPU set
    XLA_FLAGS=--xla_gpu_deterministic_ops=true before starting Python."""


def compile(fn: Callable, state, mutable, batch_args, smallest_batch) -> Callable:
    _persistent_cache()
    variables = variables_of(state)
    if mutable is None:
        changing = [v for v in variables if not v.trainable]
    else:
        changing = variables_of(mutable)
    changing_ids = {id(v) for v in changing}
    fixed = [v for v in variables if id(v) not in changing_ids]

    def pure(fixed_values, changing_values, args, kwargs):
        mapping = list(zip(fixed, fixed_values)) + list(zip(changing, changing_values))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            scope.advbench_changing = changing
            out = fn(*args, **kwargs)
            new = [scope.get_current_value(v) for v in changing]
        return out, new

    jitted = jax.jit(pure)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        rows = padded = None
        if batch_args:
            rows = int(args[batch_args[0]].shape[0])
            padded = _bucket(rows, SMALLEST_BUCKET if smallest_batch is None else smallest_batch)
            if padded != rows:
                args = tuple(_pad_rows(a, padded) if i in batch_args else a for i, a in enumerate(args))
        out, new = jitted([v.value for v in fixed], [v.value for v in changing], args, kwargs)
        for variable, value in zip(changing, new):
            variable.assign(value)
        if padded is not None and padded != rows:
            # Cut on the host: an eager slice of a device array would compile a program
            # for every new shape.
            out = jax.tree_util.tree_map(
                lambda t: np.asarray(t)[:rows] if getattr(t, "ndim", 0) and t.shape[0] == padded else t, out
            )
        return out

    return call


def _bucket(rows: int, smallest: int) -> int:
    return max(smallest, 1 << max(0, rows - 1).bit_length())


def _pad_rows(array, rows: int):
    """``array`` with copies of its first row appended up to ``rows`` (on the host for NumPy input)."""
    if isinstance(array, np.ndarray):
        return np.concatenate([array, np.broadcast_to(array[:1], (rows - len(array),) + array.shape[1:])])
    array = jnp.asarray(array)
    return jnp.concatenate([array, jnp.broadcast_to(array[:1], (rows - array.shape[0],) + array.shape[1:])])


def _persistent_cache() -> None:
    """Keep JAX's compiled programs on disk (``jax/`` in advbench's cache folder,
    ``$ADVBENCH_CACHE`` or ``~/.cache/advbench``): every job builds its attack anew and
    would compile the same program again; with the cache it is compiled once per
    machine.  A directory the user configured for JAX is kept."""
    from advbench.kit.datafiles import cache_root

    if jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", str(cache_root() / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _scope():
    """The stateless scope of the compiled function being traced, or ``None``."""
    from keras.src.backend.common.stateless_scope import get_stateless_scope

    return get_stateless_scope()


class _Child:
    """Run part of a traced function in its own stateless scope (a loop body, a function
    being differentiated), starting from ``parent``'s values with ``overrides``, and
    hand back what it changed."""

    def __init__(self, parent, overrides: dict):
        self.parent = parent
        self.scope = keras.StatelessScope()
        self.scope.state_mapping = {**parent.state_mapping, **overrides}
        self.scope.advbench_changing = getattr(parent, "advbench_changing", [])
        self.start = dict(self.scope.state_mapping)

    def __enter__(self):
        self.scope.__enter__()
        return self

    def __exit__(self, *exc):
        self.scope.__exit__(*exc)

    def changes(self) -> dict:
        """Variable id -> new value, for every variable assigned inside."""
        return {k: v for k, v in self.scope.state_mapping.items() if self.start.get(k) is not v}


def _apply(scope, changes: dict) -> None:
    scope.state_mapping.update(changes)


def grad(fn: Callable, x, differentiable: bool):
    scope = _scope()
    if scope is None:
        (_, aux), gradient = jax.value_and_grad(fn, has_aux=True)(x)
        return gradient, aux

    def pure(x):
        with _Child(scope, {}) as child:
            value, aux = fn(x)
        return value, (aux, child.changes())

    (_, (aux, changes)), gradient = jax.value_and_grad(pure, has_aux=True)(x)
    _apply(scope, changes)
    return gradient, aux


def jacobian(fn: Callable, x, differentiable: bool):
    scope = _scope()

    def forward(x):
        if scope is None:
            return fn(x), {}
        with _Child(scope, {}) as child:
            out = fn(x)
        return out, child.changes()

    outputs, pullback, changes = jax.vjp(forward, x, has_aux=True)
    if scope is not None:
        _apply(scope, changes)
    classes = outputs.shape[1]
    eye = jnp.eye(classes, dtype=outputs.dtype)
    cotangents = jnp.broadcast_to(eye[:, None, :], (classes,) + outputs.shape)
    (jac,) = jax.vmap(pullback)(cotangents)  # (K, batch, ...)
    return outputs, jnp.moveaxis(jac, 0, 1)


def variable_grad(fn: Callable, variables: list):
    scope = _scope()
    if scope is None:
        raise RuntimeError("variable_grad needs a function compiled by advbench.kit.backend.compile")
    start = [scope.get_current_value(v) for v in variables]
    start = [v.value if s is None else s for v, s in zip(variables, start)]

    def pure(values):
        with _Child(scope, {id(v): value for v, value in zip(variables, values)}) as child:
            loss, aux = fn()
        return loss, (aux, child.changes())

    (loss, (aux, changes)), grads = jax.value_and_grad(pure, has_aux=True)(start)
    _apply(scope, {k: v for k, v in changes.items() if k not in {id(var) for var in variables}})
    return loss, aux, grads


def while_loop(cond: Callable, body: Callable, loop_vars: tuple):
    scope = _scope()
    if scope is None:
        return tuple(keras.ops.while_loop(cond, body, loop_vars))
    # The variables the body assigns travel as part of the loop's carry; find them with
    # one abstract trace of the body, so the weights it only reads stay outside the carry.
    by_id = {id(v): v for v in getattr(scope, "advbench_changing", [])}
    assigned = set()

    def probe(*args):
        with _Child(scope, {}) as child:
            out = body(*args)
        assigned.update(child.changes())
        return out

    jax.eval_shape(probe, *loop_vars)
    stray = assigned - set(by_id)
    if stray:
        raise RuntimeError("a loop body assigned a variable that the compiled function does not declare as mutable")
    changing = [by_id[i] for i in sorted(assigned, key=list(by_id).index)]

    def overrides(values):
        return {id(v): value for v, value in zip(changing, values)}

    def wrapped_cond(*args):
        with _Child(scope, overrides(args[-1])):
            return cond(*args[:-1])

    def wrapped_body(*args):
        with _Child(scope, overrides(args[-1])) as child:
            out = tuple(body(*args[:-1]))
        changed = child.changes()
        return out + ([changed.get(id(v), value) for v, value in zip(changing, args[-1])],)

    carried = [scope.get_current_value(v) for v in changing]
    result = keras.ops.while_loop(wrapped_cond, wrapped_body, loop_vars + (carried,))
    _apply(scope, overrides(result[-1]))
    return tuple(result[:-1])
