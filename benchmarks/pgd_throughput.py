"""PGD throughput: advbench against the Adversarial Robustness Toolbox, same process.

Both attack the same Madry-style MNIST CNN (conv 32 5x5, max-pool, conv 64 5x5,
max-pool, dense 1024, logits) on the same images with the same settings: linf,
eps 0.3, 40 steps of 0.01, random start, one restart, batch size 128.  Prints images
per second for each and the ratio (target: advbench at least 3x faster), plus the
robust accuracy each reaches (they should agree within noise).

advbench's PGD stops working on an example once it has found an adversarial point at
the budget (the batch is compacted every 10 steps) and runs restarts only on unbroken
examples; ART runs every step on every example.  The benchmark also reports advbench
with ``early_stop: false``, which does the same work as ART, so the two sources of the
speed-up (less Python overhead per step, less work) are visible separately.

    pip install -e ".[bench]"
    python benchmarks/pgd_throughput.py [--images 512] [--batch-size 128] [--repeats 3]

Uses MNIST test images from $ADVBENCH_DATA or ../shared/data when present (the model
is trained for one epoch first, so that the attack has work to do), random images
otherwise.
"""

from __future__ import annotations

import argparse
import gzip
import os
import time
from pathlib import Path

import numpy as np


def mnist(images: int):
    roots = [os.environ.get("ADVBENCH_DATA", ""), Path(__file__).resolve().parents[2] / "shared" / "data"]
    for root in roots:
        folder = Path(root) / "mnist"
        if (folder / "train-images-idx3-ubyte.gz").is_file():
            def read(name, offset):
                with gzip.open(folder / name) as stream:
                    return np.frombuffer(stream.read(), np.uint8, offset=offset)

            x_train = read("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1).astype(np.float32) / 255
            y_train = read("train-labels-idx1-ubyte.gz", 8).astype(np.int64)
            x_test = read("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1).astype(np.float32) / 255
            y_test = read("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64)
            return x_train[:20000], y_train[:20000], x_test[:images], y_test[:images], "MNIST"
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(images, 28, 28, 1)).astype(np.float32)
    return None, None, x, rng.integers(0, 10, images), "random images"


def madry_cnn():
    import keras

    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(32, 5, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(64, 5, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Dense(1024, activation="relu")(keras.layers.Flatten()(h))
    return keras.Model(inputs, keras.layers.Dense(10)(h))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions; the best is reported")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from advbench.target import Target
    from advbench_plugins.attacks.pgd import PGD

    keras.utils.set_random_seed(0)
    x_train, y_train, x, y, source = mnist(args.images)
    model = madry_cnn()
    if x_train is not None:
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x_train, y_train, epochs=1, batch_size=128, verbose=0)

    eps, steps, step = 0.3, 40, 0.01

    # advbench: the PGD plugin as the pipeline calls it, batch by batch.
    target = Target(model, num_classes=10)

    def advbench_runner(early_stop):
        attack = PGD(steps=steps, restarts=1, step_size=step / eps, random_start=True, early_stop=early_stop)
        return lambda: run_advbench(attack)

    def run_advbench(attack):
        out = []
        for s in range(0, len(x), args.batch_size):
            xb, yb = x[s : s + args.batch_size], y[s : s + args.batch_size]
            out.append(np.asarray(attack.perturb(target, tf.constant(xb), tf.constant(yb), tf.fill([len(xb)], eps), "linf", s)))
        return np.concatenate(out)

    # ART: its TensorFlow 2 PGD on the same Keras model.
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import TensorFlowV2Classifier

    classifier = TensorFlowV2Classifier(
        model=model,
        nb_classes=10,
        input_shape=(28, 28, 1),
        loss_object=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        clip_values=(0.0, 1.0),
    )
    art_attack = ProjectedGradientDescent(
        classifier, norm=np.inf, eps=eps, eps_step=step, max_iter=steps, num_random_init=1, batch_size=args.batch_size, verbose=False
    )

    def run_art():
        return art_attack.generate(x=x, y=y).astype(np.float32)

    results = {}
    runs = (("advbench", advbench_runner(True)), ("advbench, every step", advbench_runner(False)), ("ART", run_art))
    for name, run in runs:
        run()  # warm-up: compiles the graphs
        best = np.inf
        for _ in range(args.repeats):
            started = time.perf_counter()
            adversarial = run()
            best = min(best, time.perf_counter() - started)
        assert np.abs(adversarial - x).max() <= eps + 1e-5
        robust = float(np.mean(np.argmax(model.predict(adversarial, verbose=0), 1) == y))
        results[name] = (len(x) / best, robust)

    clean = float(np.mean(np.argmax(model.predict(x, verbose=0), 1) == y))
    print(f"PGD linf eps={eps}, {steps} steps of {step}, {len(x)} {source}, batch {args.batch_size}, clean accuracy {clean:.3f}")
    for name, (speed, robust) in results.items():
        print(f"  {name:22s} {speed:9.1f} images/s   robust accuracy {robust:.3f}")
    ratio = results["advbench"][0] / results["ART"][0]
    same_work = results["advbench, every step"][0] / results["ART"][0]
    print(f"  speed ratio advbench / ART: {ratio:.2f}x (target >= 3x)")
    print(f"  with early_stop off (every example runs all {steps} steps, as in ART): {same_work:.2f}x")


if __name__ == "__main__":
    main()
