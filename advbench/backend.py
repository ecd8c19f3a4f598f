"""The few things Keras does not abstract, one short version per Keras backend.

Everything numerical in advbench (and in a plugin) is written once with ``keras.ops``,
``keras.random`` and Keras layers, on whichever backend Keras runs (``KERAS_BACKEND``:
``tensorflow``, the default, ``jax`` or ``torch``).  What is left lives here, and this
is the only module that imports TensorFlow, JAX or PyTorch:

* :func:`grad`, :func:`jacobian` and :func:`variable_grad`: gradients with respect to
  inputs (attacks, certifiers, regularizers) and to weights (training);
* :func:`compile`: turn a function into a compiled one (``tf.function``, ``jax.jit``;
  PyTorch runs eagerly);
* :func:`while_loop`: a loop that may stop early, inside compiled code;
* :func:`set_seed`, :func:`name`, :func:`device`, :func:`describe` and
  :func:`enable_determinism`.

(Random draws that are the same on every backend are written in ``keras.ops``, in
:mod:`advbench.rng`.)

JAX has no hidden state, so under JAX the Keras variables a compiled function reads
(weights, seed-generator states, counters) are passed in as arguments, and the ones
it changes are passed out again and assigned afterwards.  :func:`compile` does this
for the objects named in its ``state`` argument, :func:`while_loop` and the gradient
functions carry the changes through loops and derivatives, so the code that uses them
looks the same on every backend: call the model, assign a variable, advance a random
stream (:mod:`advbench.rng`) or a ``keras.random.SeedGenerator``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable

import numpy as np

from advbench.lazy import keras


BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
"""The Keras backends advbench runs on, each with the package it needs."""

EXTRAS = {"tensorflow": "", "jax": "[jax]", "torch": "[torch]"}


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
            f"(pip install \"advbench{EXTRAS[requested]}\")"
        )
    os.environ["KERAS_BACKEND"] = requested


def name() -> str:
    """The Keras backend in use: ``tensorflow``, ``jax`` or ``torch``."""
    return keras.backend.backend()


def device() -> str:
    """Where compiled code runs: ``cpu``, or the accelerator's name (``gpu: NVIDIA H100 ...``)."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"gpu: {details.get('device_name', gpus[0].name)}"
        return "cpu"
    if backend == "jax":
        import jax

        first = jax.devices()[0]
        return "cpu" if first.platform == "cpu" else f"{first.platform}: {first.device_kind}"
    if backend == "torch":
        import torch

        return f"gpu: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"
    return "cpu"


def describe() -> dict[str, str]:
    """The backend, the device and the float precision: recorded with every result."""
    return {"backend": name(), "device": device(), "precision": keras.config.floatx()}


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and the framework's global generators and Keras' own (what
    ``keras.utils.set_random_seed`` does, without importing TensorFlow under another
    backend).  Seed generators created afterwards without a seed draw from it."""
    if name() == "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    import random

    import numpy as np
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)
    if name() == "torch":
        import torch

        torch.manual_seed(seed)


def enable_determinism() -> None:
    """Ask the framework for deterministic kernels (same inputs, same bits)."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "torch":
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)
    # JAX: XLA's CPU kernels are deterministic; on a GPU set
    # XLA_FLAGS=--xla_gpu_deterministic_ops=true before starting Python.


def torch_model(file, attribute: str, arguments: dict, weights, layout: str, input_shape, num_classes: int):
    """A Keras model around a PyTorch ``nn.Module`` (the torch backend only): the module
    ``attribute`` of the Python file ``file``, called with ``arguments``, its state_dict
    loaded from ``weights`` (``weights_only``: no code runs from that file), in eval mode,
    fed NHWC images transposed to ``layout``."""
    import hashlib
    import importlib.util
    import sys

    if name() != "torch":
        raise RuntimeError(f"a PyTorch module needs the torch backend (KERAS_BACKEND=torch or --backend torch), not {name()}")
    import torch

    module_name = f"advbench_torch_{hashlib.sha256(str(file).encode()).hexdigest()[:12]}"
    source = sys.modules.get(module_name)
    if source is None:
        spec = importlib.util.spec_from_file_location(module_name, file)
        source = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = source  # so that saving the model can pickle the module's class
        try:
            spec.loader.exec_module(source)
        except BaseException:
            del sys.modules[module_name]
            raise
    module = getattr(source, attribute)(**arguments)
    if weights is not None:
        module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    module.eval()
    inputs = keras.Input(tuple(input_shape))
    fed = keras.layers.Permute((3, 1, 2))(inputs) if layout == "NCHW" else inputs
    logits = keras.layers.TorchModuleWrapper(module, output_shape=(None, num_classes), name="torch_module")(fed)
    return keras.Model(inputs, logits, name=attribute)


# -- state: which Keras variables a compiled function reads and writes ---------------------


def variables_of(objects: Iterable[Any]) -> list:
    """The Keras variables of ``objects`` (layers and models, optimizers, seed generators,
    variables, or anything with a ``variables`` attribute), without duplicates."""
    found, seen = [], set()

    def add(variable):
        if id(variable) not in seen:
            seen.add(id(variable))
            found.append(variable)

    for item in objects:
        if item is None:
            continue
        if isinstance(item, keras.Variable):
            add(item)
        elif isinstance(item, keras.random.SeedGenerator):
            add(item.state)
        else:
            for variable in getattr(item, "variables", ()):
                add(variable)
    return found


def compile(
    fn: Callable, state: Iterable[Any] = (), mutable: Iterable[Any] | None = None, batch_args: tuple[int, ...] = (),
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
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=True)
    if backend != "jax":
        return _eager(fn)  # PyTorch: eager (Keras' torch backend does the same by default)
    import jax

    _jax_cache()
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
            out = jax.tree_util.tree_map(lambda t: np.asarray(t)[:rows] if getattr(t, "ndim", 0) and t.shape[0] == padded else t, out)
        return out

    return call


SMALLEST_BUCKET = 64
"""JAX pads batches to at least this many rows (and to powers of two above): on an
accelerator a small batch costs as much as this, and every distinct size is compiled."""


def _bucket(rows: int, smallest: int) -> int:
    return max(smallest, 1 << max(0, rows - 1).bit_length())


def _pad_rows(array, rows: int):
    """``array`` with copies of its first row appended up to ``rows`` (on the host for NumPy input)."""
    if isinstance(array, np.ndarray):
        return np.concatenate([array, np.broadcast_to(array[:1], (rows - len(array),) + array.shape[1:])])
    import jax.numpy as jnp

    array = jnp.asarray(array)
    return jnp.concatenate([array, jnp.broadcast_to(array[:1], (rows - array.shape[0],) + array.shape[1:])])


def _jax_cache() -> None:
    """Keep JAX's compiled programs on disk (``jax/`` in advbench's cache folder,
    ``$ADVBENCH_CACHE`` or ``~/.cache/advbench``): every job builds its attack anew and
    would compile the same program again; with the cache it is compiled once per
    machine.  A directory the user configured for JAX is kept."""
    import jax

    from advbench.datafiles import cache_root

    if jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", str(cache_root() / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _eager(fn: Callable) -> Callable:
    """``fn`` with its NumPy arguments turned into tensors (PyTorch's operators take no NumPy)."""
    import numpy as np

    def tensor(value):
        if isinstance(value, (np.ndarray, np.generic)):
            return keras.ops.convert_to_tensor(value)
        if isinstance(value, (list, tuple)):
            return type(value)(tensor(v) for v in value)
        return value

    @functools.wraps(fn)
    def call(*args, **kwargs):
        return fn(*(tensor(a) for a in args), **{k: tensor(v) for k, v in kwargs.items()})

    return call


def to_tensor(array, dtype: str = "float32"):
    """A NumPy array as a backend tensor (float32 by default)."""
    return keras.ops.convert_to_tensor(array, dtype)


def to_numpy(tensor):
    """A backend tensor (or NumPy array) as a NumPy array."""
    return keras.ops.convert_to_numpy(tensor)


def _scope():
    """The stateless scope of the compiled function being traced (JAX), or ``None``."""
    from keras.src.backend.common.stateless_scope import get_stateless_scope

    return get_stateless_scope() if name() == "jax" else None


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


# -- gradients ------------------------------------------------------------------------------


def grad(fn: Callable, x, differentiable: bool = False):
    """Gradient of a scalar function with respect to its input.

    :param fn: ``fn(x) -> (value, aux)`` with ``value`` a scalar; ``x`` a tensor or a
        list of tensors.
    :param differentiable: keep the gradient differentiable with respect to the weights
        (a regularizer made of input gradients, in a training step).
    :return: ``(gradient, aux)``; the gradient has ``x``'s structure (zeros where the
        value does not depend on ``x``).
    """
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        xs = x if isinstance(x, (list, tuple)) else [x]
        with tf.GradientTape(watch_accessed_variables=differentiable) as tape:
            for tensor in xs:
                tape.watch(tensor)
            value, aux = fn(x)
        grads = tape.gradient(value, xs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return (grads if isinstance(x, (list, tuple)) else grads[0]), aux
    if backend == "jax":
        import jax

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
    import torch

    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    leaves = [t.detach().requires_grad_(True) for t in (keras.ops.convert_to_tensor(t) for t in xs)]
    with torch.enable_grad():
        value, aux = fn(leaves if isinstance(x, (list, tuple)) else leaves[0])
        grads = torch.autograd.grad(value, leaves, create_graph=differentiable, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, leaves)]
    if not differentiable:
        aux = _detach(aux)
    return (grads if isinstance(x, (list, tuple)) else grads[0]), aux


def _detach(tree):
    import torch

    if isinstance(tree, torch.Tensor):
        return tree.detach()
    if isinstance(tree, (list, tuple)):
        return type(tree)(_detach(t) for t in tree)
    if isinstance(tree, dict):
        return {k: _detach(v) for k, v in tree.items()}
    return tree


def jacobian(fn: Callable, x, differentiable: bool = False):
    """Input gradients of every output of a per-example function.

    :param fn: ``fn(x) -> outputs`` of shape ``(batch, K)``, each row depending on its own
        example only (a model in inference mode).
    :return: ``(outputs, jacobian)``, the jacobian of shape ``(batch, K, *x.shape[1:])``.
    """
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape(watch_accessed_variables=differentiable) as tape:
            tape.watch(x)
            outputs = fn(x)
        jac = tape.batch_jacobian(outputs, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return outputs, jac
    if backend == "jax":
        import jax
        import jax.numpy as jnp

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
    import torch

    leaf = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
    with torch.enable_grad():
        outputs = fn(leaf)
        classes = outputs.shape[1]
        rows = []
        for k in range(classes):
            (g,) = torch.autograd.grad(outputs[:, k].sum(), leaf, retain_graph=True, create_graph=differentiable, allow_unused=True)
            rows.append(torch.zeros_like(leaf) if g is None else g)
    jac = torch.stack(rows, dim=1)
    return (outputs if differentiable else outputs.detach()), jac


def variable_grad(fn: Callable, variables: list):
    """Gradient of a scalar loss with respect to Keras variables (a training step).

    :param fn: ``fn() -> (loss, aux)``, reading the variables (e.g. calling the model).
    :return: ``(loss, aux, gradients)``, one gradient per variable.
    """
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss, aux = fn()
        grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return loss, aux, grads
    if backend == "jax":
        import jax

        scope = _scope()
        if scope is None:
            raise RuntimeError("variable_grad needs a function compiled by advbench.backend.compile")
        start = [scope.get_current_value(v) for v in variables]
        start = [v.value if s is None else s for v, s in zip(variables, start)]

        def pure(values):
            with _Child(scope, {id(v): value for v, value in zip(variables, values)}) as child:
                loss, aux = fn()
            return loss, (aux, child.changes())

        (loss, (aux, changes)), grads = jax.value_and_grad(pure, has_aux=True)(start)
        _apply(scope, {k: v for k, v in changes.items() if k not in {id(var) for var in variables}})
        return loss, aux, grads
    import torch

    parameters = [v.value for v in variables]
    with torch.enable_grad():
        loss, aux = fn()
        grads = torch.autograd.grad(loss, parameters, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, parameters)]
    return loss.detach(), _detach(aux), grads


# -- loops ------------------------------------------------------------------------------------


def while_loop(cond: Callable, body: Callable, loop_vars):
    """``keras.ops.while_loop`` that may assign Keras variables in its body (seed
    generators, counters), on every backend.  ``loop_vars`` is a tuple or list;
    ``cond`` and ``body`` take its elements as arguments."""
    loop_vars = tuple(loop_vars)
    scope = _scope()
    if scope is None:
        return tuple(keras.ops.while_loop(cond, body, loop_vars))
    import jax

    # Under JAX the variables the body assigns travel as part of the loop's carry; find
    # them with one abstract trace of the body, so the weights it only reads stay
    # outside the carry.
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
