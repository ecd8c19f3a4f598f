"""Checks of a spec against its data and its pretrained models, before any work.

They need the dataset (and Keras, for pretrained models), so they run after the spec's
own validation (:func:`advbench.spec.load_spec` calls them with ``check_data=True``), on
every part of the spec that is valid on its own: one pass reports every problem.
"""

from __future__ import annotations

import numpy as np

from advbench.errors import Problem


def data_problems(spec, locator) -> list[Problem]:
    """Problems of ``spec`` that the data reveals: sizes the dataset cannot provide,
    budgets beyond the input box, pretrained models that do not fit the data or do not
    output logits.  Loads the dataset once and keeps it in ``spec.loaded`` for the run."""
    from advbench.contract.components import budget_beyond_box
    from advbench.core.data import load_arrays, make_subsets
    from advbench.errors import DataError

    ref = spec.dataset
    try:
        arrays = load_arrays(ref)
    except DataError as exc:
        return [locator.problem(("dataset",), str(exc))]
    problems = []
    sizes = {"train_size": len(arrays.y_train), "test_size": len(arrays.y_test)}
    for field, available in sizes.items():
        asked = getattr(ref.params, field, None)
        if asked is not None and asked > available:
            split = field.split("_")[0]
            problems.append(
                locator.problem(("dataset", field), f"{asked} {split} images asked for, dataset {ref.name!r} has {available}")
            )
    test_size = min(ref.params.test_size or len(arrays.y_test), len(arrays.y_test))
    if spec.evaluation is not None and spec.evaluation.examples is not None and spec.evaluation.examples > test_size:
        problems.append(
            locator.problem(
                ("evaluation", "examples"),
                f"{spec.evaluation.examples} examples asked for, the test set has "
                f"{test_size} (dataset.test_size); use at most {test_size}",
            )
        )
    for index, threat in spec.indexed_threat_models:
        for k, eps in enumerate(threat.eps):
            problem = budget_beyond_box(eps, arrays.input_shape, threat.norm)
            if problem:
                problems.append(locator.problem(("threat_models", index, "eps", k), problem))
    if problems:
        return problems
    examples = spec.evaluation.examples if spec.evaluation is not None else None
    spec.loaded = make_subsets(arrays, ref.params.train_size, ref.params.test_size, examples, spec.seed)
    for index, plan in spec.indexed_models:
        if plan.path is not None or plan.torch is not None:
            problems += _pretrained_problems(spec, locator, index, plan)
    return problems


def _pretrained_problems(spec, locator, index, plan) -> list[Problem]:
    from advbench.core.checks import final_activation, outputs_probabilities
    from advbench.core.models import pretrained_model
    from advbench.kit import backend

    data = spec.loaded.data
    where = ("models", index, "path" if plan.path is not None else "torch")
    files = [plan.path] if plan.path is not None else [plan.torch.file, plan.torch.weights]
    if not all(file is None or file.is_file() for file in files):
        return []  # a missing file is reported once, where the spec is read
    if plan.torch is not None and backend.name() != "torch":
        return [
            locator.problem(where, f"a PyTorch module needs the torch backend (run with --backend torch), not {backend.name()}")
        ]
    try:
        model = pretrained_model(
            plan.path,
            plan.torch,
            plan.outputs,
            data.input_shape,
            data.num_classes,
            as_given=True,
            normalization=plan.normalization,
        )
    except Exception as exc:  # whatever a foreign file raises: say what, never a traceback
        message = str(exc).splitlines()[0][:300] if str(exc) else exc.__class__.__name__
        return [locator.problem(where, f"cannot load {plan.path or plan.torch.file}: {message}")]
    problems = []
    got_in = tuple(model.input_shape[1:])
    if got_in != tuple(data.input_shape):
        problems.append(
            locator.problem(where, f"model input shape {got_in} does not match the dataset's {tuple(data.input_shape)}")
        )
    classes = model.output_shape[-1]
    if classes != data.num_classes:
        problems.append(locator.problem(where, f"model outputs {classes} classes, the dataset has {data.num_classes}"))
    if problems:
        return problems
    probes = {
        "of the evaluated test images": spec.loaded.x_eval,
        "of 16 images of uniform noise in [0, 1]": np.random.default_rng(0)
        .uniform(size=(16, *data.input_shape))
        .astype("float32"),
    }
    for what, x in probes.items():
        outputs = np.concatenate([backend.to_numpy(model(x[s : s + 256], training=False)) for s in range(0, len(x), 256)])
        bad = int(np.sum(~np.all(np.isfinite(outputs), axis=1)))
        if bad:
            problems.append(
                locator.problem(
                    where,
                    f"the model outputs NaN or inf on {bad} {what}: attacks and certifiers "
                    "need finite logits everywhere in [0, 1]",
                )
            )
    if problems or plan.outputs == "probabilities":
        return problems
    activation = final_activation(model)
    if activation in ("softmax", "sigmoid"):
        problems.append(
            locator.problem(
                where,
                f"the model ends in a {activation}: it outputs probabilities, advbench needs logits. "
                "Remove the final activation, or say `outputs: probabilities` for this model",
            )
        )
    elif outputs_probabilities(model, spec.loaded.x_eval[:64]):
        problems.append(
            locator.problem(
                where,
                "the model's outputs on the test images are probabilities (non-negative, summing to 1), "
                "advbench needs logits. Remove the final softmax, or say `outputs: probabilities`",
            )
        )
    return problems
