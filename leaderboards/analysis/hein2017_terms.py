"""Why Hein & Andriushchenko's guarantee certifies what it does on a published run.

For each evaluated example, the guarantee (plugins/certifiers/hein2017.py) is
``min_j R_j`` with ``R_j (a_j + b_j R_j) = g_j``: the margin ``g_j = f_c - f_j``, the
gradient norm ``a_j = ||grad g_j(x)||_2`` and the curvature constant ``b_j`` of ``grad g_j``.
This script prints, per model, the medians over the correctly classified examples of the
three terms at the class j that binds, the median over hidden units of ``||u_l||_2``
(``b_j`` grows with its square), and the mean slope ``sigma'`` of the hidden units at the
data (0 where a unit is off, 1 where it is linear).  ``g`` and ``a`` come from Keras
(autodiff, float32, not the certifier's closed form), ``b`` from the certifier itself, and
the radii they give are checked against the published ones (last column), so the table
explains the published numbers and nothing else.

    ADVBENCH_DATA=../shared/data advbench export runs/hein2017-mnist --format csv -o hein.csv
    ADVBENCH_DATA=../shared/data python leaderboards/analysis/hein2017_terms.py runs/hein2017-mnist hein.csv
"""

from __future__ import annotations

import csv
import sys

import numpy as np


def terms(model, x):
    """Margins g (B, K), gradient norms a (B, K) and curvature b (B, K) at the predicted class."""
    import tensorflow as tf

    from advbench.kit.target import Target
    from advbench_plugins.certifiers.hein2017 import Hein2017

    inputs = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(inputs)
        logits = model(inputs, training=False)
        predicted = tf.argmax(logits, axis=1)
        margins = tf.gather(logits, predicted, batch_dims=1)[:, None] - logits
        per_class = [margins[:, j] for j in range(logits.shape[1])]
    a = np.stack([np.linalg.norm(tape.gradient(m, inputs).numpy().reshape(len(x), -1), axis=1) for m in per_class], 1)
    _, _, curvature = Hein2017()._curvature(Target(model, num_classes=logits.shape[1]), "l2")
    return margins.numpy().astype(np.float64), a.astype(np.float64), curvature[predicted.numpy()], predicted.numpy()


def main(run: str, exported: str) -> None:
    from advbench.api import load_model
    from advbench.kit.structure import OneHiddenLayer
    from advbench.runs.store import RunStore
    from advbench_plugins.datasets.mnist import MNIST

    store = RunStore.open(run)

    rows = list(csv.DictReader(open(exported)))
    data = MNIST().load()
    print(
        "| model | clean | g | a | b | R (their guarantee) | sqrt(g / b) | certified at 0.5 | hidden ||u_l||_2 | mean sigma' | max abs R - published |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in dict.fromkeys(r["model"] for r in rows if r["norm"] == "l2"):
        mine = [r for r in rows if r["model"] == name and r["norm"] == "l2"]
        index = np.array([int(r["index"]) for r in mine])
        published = np.array([float(r["cert:hein2017"] or 0) for r in mine])
        # the model this run trained (its store keeps the models of earlier code too)
        model = load_model(store.model_path(name, store.job_record(f"{name}/train")["key"]))
        x, y = data.x_test[index], data.y_test[index]
        g, a, b, predicted = terms(model, x)
        with np.errstate(divide="ignore", invalid="ignore"):
            R = (-a + np.sqrt(a**2 + 4 * b * np.maximum(g, 0))) / (2 * b)
        at = np.arange(len(x))
        R[at, predicted] = np.inf
        binding = R.argmin(1)
        correct = predicted == y
        radius = np.where(correct, R[at, binding], 0.0)
        g, a, b = (t[at, binding][correct] for t in (g, a, b))
        net = OneHiddenLayer(model)
        hidden = np.linalg.norm(net.U.numpy(), axis=0)  # ||u_l||_2 per hidden unit
        z = x.reshape(len(x), -1) @ net.U.numpy() + net.b.numpy()
        slope = 1 / (1 + np.exp(-net.alpha * z[correct]))  # sigma'(z): 0 where a unit is off, 1 where linear
        print(
            f"| {name} | {correct.mean():.1%} | {np.median(g):.2f} | {np.median(a):.2f} | {np.median(b):.1f} | {np.median(radius):.3f} "
            f"| {np.median(np.sqrt(g / b)):.3f} | {np.mean(radius >= 0.5):.1%} "
            f"| {np.median(hidden):.2f} | {slope.mean():.3f} | {np.max(np.abs(radius - published)):.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main(*sys.argv[1:3])
