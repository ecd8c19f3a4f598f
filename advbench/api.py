"""The Python API: evaluate a model in a notebook, or run a spec, with the same run layer
the CLI uses.

    import advbench

    result = advbench.evaluate(model, x_test, y_test, norm="linf", eps=[0.1, 0.3],
                               attacks=["pgd", {"name": "apgd", "steps": 50}], certifiers=["crown"])
    result.certified_radius, result.empirical_radius      # per example (NumPy)
    result.certified_accuracy(0.3), result.empirical_accuracy(0.3), result.flags

    results = advbench.run("specs/quickstart.yaml", out="runs/quickstart")   # {model name: result}

Arguments are validated as the CLI validates a spec: a bad one raises
:class:`~advbench.errors.AdvbenchError` naming the argument and what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from advbench.errors import AdvbenchError

API = "advbench.evaluate"


def evaluate(
    model,
    x,
    y,
    norm: str = "linf",
    eps: Iterable[float] = (),
    attacks: Iterable = (),
    certifiers: Iterable = (),
    *,
    seed: int = 0,
    strict: bool = False,
    layout: str = "NCHW",
    **evaluation,
):
    """Attack and certify ``model`` on the examples ``x, y`` under one threat model.

    :param model: a Keras model mapping inputs in [0, 1] to logits, the path of an ONNX
        network (imported and checked against onnxruntime, see :mod:`advbench.core.onnx`)
        or, on the torch backend, a ``torch.nn.Module``, fed NHWC images transposed to
        ``layout``.
    :param x: NumPy array of images in [0, 1], shape (n, height, width, channels).
    :param y: NumPy array of n integer labels.
    :param norm: ``linf`` or ``l2``.
    :param eps: the budgets (numbers, or fractions like ``"8/255"``).
    :param attacks: attacks by name, or as ``{"name": ..., **parameters}`` (a ``label`` tells two apart).
    :param certifiers: certifiers, likewise.
    :param seed: seeds every method (each gets its own seed from it and its settings).
    :param evaluation: the spec's evaluation settings: ``batch_size``, ``radius_tolerance``,
        ``eot``, ``eot_samples``, ``final_draws``.
    :return: an :class:`~advbench.results.evaluation.Evaluation`.
    """
    from advbench.contract import Defense
    from advbench.contract.plugins import load_plugins
    from advbench.core.checks import gradient_check, unstable_predictions
    from advbench.kit import backend
    from advbench.results.data import model_bounds
    from advbench.results.evaluation import Evaluation
    from advbench.runs.context import Components, make_target
    from advbench.runs.handlers import method_record
    from advbench.spec.resolved import stable_hash

    threat, settings = _threat_model(norm, eps), _evaluation(evaluation)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise AdvbenchError(f"{API}: seed: expected an integer >= 0, got {seed!r}")
    host = load_plugins(strict=strict)
    methods = _methods(host, attacks, "attack") + _methods(host, certifiers, "certifier")
    if not methods:
        raise AdvbenchError(f"{API}: give at least one attack or certifier")
    x, y = _examples(x, y)
    from advbench.contract.components import budget_beyond_box

    for eps in threat.eps:
        problem = budget_beyond_box(eps, x.shape[1:], threat.norm)
        if problem:
            raise AdvbenchError(f"{API}: eps: {problem}")
    keras_model = _keras_model(model, x, layout)
    classes = _classes(keras_model, x, y)
    backend.enable_determinism()
    backend.set_seed(seed)
    target = make_target(keras_model, Defense(), classes, x, settings)
    predicted = target.predict(x)
    clean = {
        "index": list(range(len(x))),
        "label": y.tolist(),
        "predicted": predicted.tolist(),
        "classes": classes,
        "randomness": target.randomness,
        "eot": target.protocol(),
        "gradients": gradient_check(target, x, y),
        "unstable_predictions": unstable_predictions(target, x, y),
    }
    context = Components(host.registry)
    records = []
    for kind, ref in methods:
        job_kind = "attack" if kind == "attack" else "certify"
        method_seed = int(stable_hash([seed, job_kind, threat.norm, threat.eps, ref.identity()])[:8], 16) % (2**31 - 1)
        backend.set_seed(method_seed)
        try:
            record, _ = method_record(
                job_kind, ref, target, x, y, np.arange(len(x)), threat.norm, list(threat.eps), settings, method_seed, context
            )
        except (KeyboardInterrupt, AdvbenchError):
            raise
        except Exception as exc:  # a method that fails is reported in the result, as in a run
            record = {"status": "error", "message": f"{exc.__class__.__name__}: {exc}"}
        records.append((job_kind, ref.label, record))
    name = getattr(keras_model, "name", None) or "model"
    return Evaluation([model_bounds(name, "—", threat.norm, list(threat.eps), clean, records)])


def run(
    spec,
    out: str | Path | None = None,
    *,
    fresh: bool = False,
    executor: str = "local",
    address: str | None = None,
    strict: bool = False,
    reporter=None,
) -> "RunResults":
    """Run a spec through the same store and executors as ``advbench run``.

    :param spec: a spec file's path, or the spec as a mapping (relative paths in it are
        relative to the current directory), or one :func:`advbench.spec.load_spec` read.
    :param out: the run directory (default ``runs/<name>``); finished jobs in it are reused.
    :param fresh: delete earlier results in ``out`` first.
    :param executor: ``local`` or ``ray`` (``address``: a Ray cluster to join).
    :param reporter: progress reports (an :class:`advbench.runs.reporting.Reporter`); none by default.
    :return: a mapping from model name to its :class:`~advbench.results.evaluation.Evaluation`;
        ``.summary`` says how many jobs ran, were reused and failed, ``.results`` holds the
        leaderboard's data, ``.out`` the run directory.
    """
    from advbench.kit.backend import check_environment
    from advbench.results.data import load_results
    from advbench.results.evaluation import Evaluation
    from advbench.runs.executors import executor as make_executor
    from advbench.runs.runner import run_spec
    from advbench.runs.store import MARKER, RunStore
    from advbench.spec.loading import check_data, load_spec, load_spec_data
    from advbench.spec.resolved import Spec

    _check_type("advbench.run", "fresh", fresh, bool, "True or False")
    _check_type("advbench.run", "strict", strict, bool, "True or False")
    _check_type("advbench.run", "out", out, (str, os.PathLike, type(None)), "a directory path or None")
    _check_type("advbench.run", "executor", executor, str, "'local' or 'ray'")
    _check_type("advbench.run", "address", address, (str, type(None)), "a Ray address or None")
    if reporter is not None:
        from advbench.runs.reporting import Reporter

        _check_type("advbench.run", "reporter", reporter, Reporter, "an advbench.runs.reporting.Reporter or None")
    chosen = make_executor(executor, address, strict)
    check_environment()
    if isinstance(spec, Spec):
        loaded = spec
    elif isinstance(spec, (str, Path)):
        loaded = load_spec(spec, strict=strict)
    elif isinstance(spec, dict):
        loaded = load_spec_data(spec, Path.cwd(), strict=strict)
    else:
        raise AdvbenchError(f"advbench.run: spec: expected a file path or a mapping, got {type(spec).__name__}")
    out = Path(out) if out is not None else Path("runs") / loaded.name
    if out.exists() and not out.is_dir():
        raise AdvbenchError(f"advbench.run: out: {out} is a file; give a directory for the run")
    store = RunStore(out)
    if (out / MARKER).is_file():
        store.claim(fresh)  # a run directory in use is said at once, before the data is read
    try:
        if reporter is not None:
            reporter.note("checking the spec against its data and models")
        check_data(loaded)
        summary = run_spec(loaded, out, fresh=fresh, executor=chosen, reporter=reporter, store=store)
    finally:
        store.release()
    results = load_results(out)
    evaluations = RunResults()
    for model in results.spec["models"]:
        bounds = [b for b in results.bounds if b.model == model["name"]]
        if bounds:
            evaluations[model["name"]] = Evaluation(bounds)
    evaluations.summary, evaluations.results, evaluations.out = summary, results, out
    return evaluations


class RunResults(dict):
    """``{model name: Evaluation}`` of a run, with its ``summary`` (jobs run, reused, failed),
    its ``results`` (what the leaderboard renders) and its run directory ``out``."""

    summary: Any = None
    results: Any = None
    out: Path | None = None


# -- validation of the arguments ---------------------------------------------------------


def load_model(path, input_shape=None, normalization=None):
    """A model from a file, as a Keras model that outputs logits (not compiled), in a fresh
    process and on any backend: a model advbench saved (``<run>/models/<name>-<key>.keras``;
    advbench's layers and those of every installed plugin are made known to Keras first,
    which ``keras.saving.load_model`` alone does not do), or an ONNX network (``.onnx``,
    ``.onnx.gz``) imported for NHWC images of ``input_shape`` (height, width, channels;
    read from the network when it takes NCHW images) and checked against onnxruntime;
    ``normalization`` (``{"mean": [...], "std": [...]}``) is the input normalisation the
    network expects, made its first layer."""
    from advbench.contract.plugins import load_plugins
    from advbench.core.models import load_keras_model
    from advbench.core.onnx import is_onnx

    _check_type("advbench.load_model", "path", path, (str, os.PathLike), "the path of a .keras or ONNX file")
    if not Path(path).is_file():
        what = "is a directory" if Path(path).is_dir() else "not found"
        raise AdvbenchError(f"advbench.load_model: path: {path} {what}; expected a .keras or ONNX file")
    if is_onnx(path):
        from advbench.core.onnx import load_onnx

        return load_onnx(path, None if input_shape is None else tuple(input_shape), normalization=normalization)
    if normalization is not None:
        raise AdvbenchError(f"{API}: normalization: only for an ONNX network (a Keras model holds its own)")
    load_plugins()  # a plugin's layers register themselves when it is imported
    try:
        return load_keras_model(Path(path))
    except Exception as exc:  # Keras's ValueError on a foreign or damaged file, and others
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise AdvbenchError(f"advbench.load_model: {path}: not a Keras model file ({first})") from None


def load_dataset(name: str, **params):
    """The full train and test splits of a registered dataset (:func:`advbench.core.data.load_dataset`),
    its name and parameters checked as a spec's are: a bad one raises :class:`AdvbenchError` naming it."""
    from pydantic import ValidationError

    from advbench.contract.plugins import load_plugins
    from advbench.contract.registry import UnknownComponentError
    from advbench.core.data import load_dataset as load

    _check_type("advbench.load_dataset", "name", name, str, "a dataset's name")
    try:
        cls = load_plugins().registry.get("dataset", name)
        cls.Params(**params)
    except UnknownComponentError as exc:
        raise AdvbenchError(f"advbench.load_dataset: name: {exc}") from None
    except ValidationError as exc:
        raise AdvbenchError(f"advbench.load_dataset: {name}: " + "; ".join(_describe(err) for err in exc.errors())) from None
    return load(name, **params)


def _check_type(where: str, name: str, value, types, expected: str) -> None:
    """An argument of the wrong type is an :class:`AdvbenchError` naming it; a bool is not
    taken for a number, nor a string like "no" for a bool."""
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise AdvbenchError(f"{where}: {name}: expected {expected}, got {value!r}")
    if not isinstance(value, types):
        raise AdvbenchError(f"{where}: {name}: expected {expected}, got {type(value).__name__} {value!r}"[:300])


def _threat_model(norm, eps):
    from pydantic import ValidationError

    from advbench.spec.schema import ThreatModel

    if isinstance(eps, (int, float, str)):
        eps = [eps]
    try:
        return ThreatModel.model_validate({"norm": norm, "eps": list(eps)})
    except TypeError:
        raise AdvbenchError(f"{API}: eps: expected a list of budgets, got {eps!r}") from None
    except ValidationError as exc:
        raise AdvbenchError(f"{API}: " + "; ".join(_describe(err) for err in exc.errors())) from None


def _evaluation(evaluation: dict):
    from pydantic import ValidationError

    from advbench.spec.schema import EvaluationSpec

    if "examples" in evaluation:
        raise AdvbenchError(f"{API}: examples: pass the examples to evaluate as x and y")
    known = [name for name in EvaluationSpec.model_fields if name != "examples"]
    for name in evaluation:
        if name not in known:
            from advbench.text import close_matches

            close = close_matches(name, known)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise AdvbenchError(f"{API}: {name}: unknown argument{hint} (known: {', '.join(known)}, seed, strict, layout)")
    try:
        return EvaluationSpec.model_validate(evaluation)
    except ValidationError as exc:
        raise AdvbenchError(f"{API}: " + "; ".join(_describe(err) for err in exc.errors())) from None


def _describe(err: dict) -> str:
    from advbench.spec.loading import describe_error

    where = ".".join(str(part) for part in err["loc"]) or "argument"
    return f"{where}: {describe_error(err)}"


def _methods(host, entries, kind: str) -> list:
    """The resolved attacks or certifiers (``(kind, ComponentRef)``), validated like a spec's."""
    from advbench.spec.loading import Locator, Resolver
    from advbench.spec.schema import MethodEntry

    argument = "attacks" if kind == "attack" else "certifiers"
    if isinstance(entries, (str, dict)):
        entries = [entries]
    try:
        entries = list(entries)
    except TypeError:
        raise AdvbenchError(
            f"{API}: {argument}: expected a list of names or {{'name': ..., **parameters}}, got {entries!r}"
        ) from None
    resolver = Resolver(host.registry, Locator(API, None), Path.cwd())
    refs, labels = [], set()
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise AdvbenchError(f"{API}: {argument}[{i}]: expected a name or {{'name': ..., **parameters}}, got {entry!r}")
        try:
            parsed = MethodEntry.model_validate(entry)
        except Exception as exc:  # noqa: BLE001 (pydantic's ValidationError: a bad label)
            raise AdvbenchError(f"{API}: {argument}[{i}]: {exc}") from None
        ref = resolver.resolve(kind, parsed, (argument, i))
        if ref is None:
            raise AdvbenchError("; ".join(str(problem) for problem in resolver.problems))
        if ref.label in labels:
            raise AdvbenchError(f"{API}: {argument}[{i}]: a second {ref.label!r}; give repeated methods distinct labels")
        labels.add(ref.label)
        refs.append((kind, ref))
    return refs


def _examples(x, y):
    if not isinstance(x, np.ndarray) or x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
        shape = getattr(x, "shape", None)
        raise AdvbenchError(
            f"{API}: x: expected a NumPy float array of images (n, height, width, channels), got "
            f"{type(x).__name__}{'' if shape is None else f' of shape {tuple(shape)}'}"
        )
    if not len(x):
        raise AdvbenchError(f"{API}: x: no examples")
    if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1:
        raise AdvbenchError(
            f"{API}: x: expected pixels in [0, 1] (got values from {np.nanmin(x):g} to {np.nanmax(x):g}"
            f"{', and NaN or inf' if not np.all(np.isfinite(x)) else ''}); scale the images to [0, 1]"
        )
    y = np.asarray(y)
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise AdvbenchError(f"{API}: y: expected {len(x)} integer labels, got {y.dtype} of shape {y.shape}")
    if y.min() < 0:
        raise AdvbenchError(f"{API}: y: labels must be >= 0 (got {y.min()})")
    if int(y.max()) > np.iinfo(np.int64).max:  # compared as Python ints: a uint64 2**63 would wrap to a negative label
        raise AdvbenchError(f"{API}: y: label {int(y.max())} is beyond any model's outputs")
    return x.astype(np.float32), y.astype(np.int64)


def _keras_model(model, x, layout: str):
    from advbench.kit import backend
    from advbench.lazy import keras

    if isinstance(model, keras.Model):
        return model
    if isinstance(model, (str, Path)):
        from advbench.core.onnx import is_onnx

        if not is_onnx(model):
            raise AdvbenchError(
                f"{API}: model: expected a Keras model, a torch.nn.Module or the path of an ONNX file (.onnx, .onnx.gz), "
                f"got {str(model)!r} (load a .keras file with advbench.load_model first)"
            )
        from advbench.core.onnx import load_onnx

        return load_onnx(model, tuple(x.shape[1:]))
    if type(model).__module__.startswith("torch") or hasattr(model, "state_dict"):
        if backend.name() != "torch":
            raise AdvbenchError(
                f"{API}: model: a PyTorch module needs the torch backend (KERAS_BACKEND=torch), not {backend.name()}"
            )
        if layout not in ("NCHW", "NHWC"):
            raise AdvbenchError(f"{API}: layout: expected NCHW or NHWC, got {layout!r}")
        import torch

        with torch.no_grad():
            probe = torch.as_tensor(np.transpose(x[:1], (0, 3, 1, 2)) if layout == "NCHW" else x[:1])
            classes = int(model.eval()(probe).shape[-1])
        inputs = keras.Input(tuple(x.shape[1:]))
        fed = keras.layers.Permute((3, 1, 2))(inputs) if layout == "NCHW" else inputs
        logits = keras.layers.TorchModuleWrapper(model, output_shape=(None, classes), name="torch_module")(fed)
        return keras.Model(inputs, logits, name=type(model).__name__)
    raise AdvbenchError(
        f"{API}: model: expected a Keras model (or a torch.nn.Module on the torch backend), got {type(model).__name__}"
    )


def _classes(model, x, y) -> int:
    from advbench.core.checks import final_activation, outputs_probabilities

    shape = tuple(model.input_shape[1:]) if getattr(model, "input_shape", None) is not None else None
    if shape is not None and None not in shape and shape != tuple(x.shape[1:]):
        raise AdvbenchError(f"{API}: model input shape {shape} does not match x's {tuple(x.shape[1:])}")
    logits = np.asarray(model(x[:64], training=False))
    if logits.ndim != 2:
        raise AdvbenchError(f"{API}: model: expected logits of shape (n, classes), got shape {logits.shape}")
    classes = int(logits.shape[1])
    if classes < 2:
        raise AdvbenchError(
            f"{API}: model: it has {classes} output; a classifier needs 2 or more (nothing could be misclassified)"
        )
    if y.max() >= classes:
        raise AdvbenchError(f"{API}: y: label {int(y.max())} but the model has {classes} outputs")
    if final_activation(model) or outputs_probabilities(model, x[:64]):
        raise AdvbenchError(f"{API}: model: it outputs probabilities, advbench needs logits (remove the final softmax)")
    if not np.all(np.isfinite(logits)):
        raise AdvbenchError(f"{API}: model: its logits are not finite (NaN or inf) on some of x")
    return classes


__all__ = ["RunResults", "evaluate", "load_dataset", "load_model", "run"]
