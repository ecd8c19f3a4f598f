"""advbench's CROWN and IBP next to decomon (Airbus's Keras linear-relaxation library) on
the same models, same examples, same bisection, in one process.

For an MLP and a small CNN trained on MNIST (random images when MNIST is not found), both
libraries answer "is this example certified in the linf ball of radius eps intersected
with [0, 1]?" and the same log-scale bisection (advbench.BisectionCertifier, tolerance
1e-3) turns the answers into certified radii.  Prints the mean certified radius of each
(larger is tighter; both are sound), the share of examples where advbench's radius is at
least decomon's, and the throughput ratio.  Targets: bounds at least as tight, at least
10x the throughput.

    pip install -e ".[bench]" decomon
    python benchmarks/certifiers_vs_decomon.py [--images 50]

decomon 0.2.1 (its latest release) still uses ``np.float_``, removed in NumPy 2; the
script restores that alias before importing it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from pgd_throughput import mnist


def models():
    import keras

    # decomon converts only models with a flat input and fused activations (it has no
    # ReLU layer), so both libraries get such models.
    def mlp():
        inputs = keras.Input((784,))
        h = keras.layers.Dense(256, activation="relu")(inputs)
        return keras.Model(inputs, keras.layers.Dense(10)(h), name="mlp")

    def cnn():
        inputs = keras.Input((784,))
        h = keras.layers.Reshape((28, 28, 1))(inputs)
        h = keras.layers.Conv2D(8, 4, strides=2, padding="valid", activation="relu")(h)
        h = keras.layers.Conv2D(16, 4, strides=2, padding="valid", activation="relu")(h)
        h = keras.layers.Dense(100, activation="relu")(keras.layers.Flatten()(h))
        return keras.Model(inputs, keras.layers.Dense(10)(h), name="cnn")

    return [mlp(), cnn()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    args = parser.parse_args()

    np.float_ = np.float64  # decomon 0.2.1 predates NumPy 2
    import keras
    from decomon import get_adv_box
    from decomon.models import clone

    from advbench import BisectionCertifier
    from advbench.contract.plugins import load_plugins
    from advbench.kit.target import Target
    from advbench.runs.harness import certified_radii

    registry = load_plugins().registry
    keras.utils.set_random_seed(0)
    x_train, y_train, x, y, source = mnist(args.images)
    x = x.reshape(len(x), -1)
    x_train = None if x_train is None else x_train.reshape(len(x_train), -1)

    class Decomon(BisectionCertifier):
        """decomon's bound on max_j f_j - f_y over the box, as a BisectionCertifier."""

        def __init__(self, method):
            super().__init__()
            self.method, self._converted = method, {}

        def certified(self, target, x, y, norm, eps):
            if id(target) not in self._converted:
                self._converted[id(target)] = clone(target.model, method=self.method)
            e = eps.reshape(-1, 1)
            low, high = np.maximum(x - e, 0.0), np.minimum(x + e, 1.0)
            bound = get_adv_box(
                self._converted[id(target)], low, high, source_labels=np.eye(10, dtype=int)[np.asarray(y)], batch_size=-1
            )  # one-hot; its split path mislabels
            return np.asarray(bound).reshape(-1) < 0

    print(f"{args.images} {source} test images, linf, radius by bisection to relative tolerance 1e-3")
    print(
        f"{'model':5s} {'method':6s} {'advbench mean r':>16s} {'decomon mean r':>15s} {'advbench >= decomon':>20s} {'advbench ex/s':>14s} {'decomon ex/s':>13s} {'speed-up':>9s}"
    )
    for model in models():
        if x_train is not None:
            model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            model.fit(x_train, y_train, epochs=1, batch_size=128, verbose=0)
        target = Target(model, num_classes=10, batch_size=len(x))
        predicted = target.predict(x)
        for ours_name, theirs_method in (("crown", "crown"), ("ibp", "forward-ibp")):
            cls = registry.get("certifier", ours_name)
            row = {}
            for library, certifier in (("advbench", cls(cls.Params())), ("decomon", Decomon(theirs_method))):
                try:
                    certified_radii(certifier, target, x, y, predicted, "linf", len(x))  # warm-up: compiles
                    started = time.perf_counter()
                    radius, _ = certified_radii(certifier, target, x, y, predicted, "linf", len(x))
                except Exception as exc:  # decomon 0.2.1 cannot convert every model under Keras 3.15
                    print(f"{model.name:5s} {ours_name:6s} {library} failed: {exc.__class__.__name__}: {exc}")
                    break
                row[library] = (radius, len(x) / (time.perf_counter() - started))
            if len(row) < 2:
                continue
            (ours, ours_speed), (theirs, theirs_speed) = row["advbench"], row["decomon"]
            tighter = np.mean(ours >= theirs * (1 - 1e-3))
            print(
                f"{model.name:5s} {ours_name:6s} {ours.mean():16.5f} {theirs.mean():15.5f} {100 * tighter:19.0f}% {ours_speed:14.1f} {theirs_speed:13.1f} {ours_speed / theirs_speed:8.1f}x"
            )


if __name__ == "__main__":
    main()
