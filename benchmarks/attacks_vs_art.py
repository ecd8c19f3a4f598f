"""advbench's attacks next to the Adversarial Robustness Toolbox's, same model, same data,
one process: PGD, APGD, Square, DeepFool and Carlini-Wagner L2.

For each attack: images per second of each library (best of ``--repeats`` timed runs after
a warm-up), the robust accuracy each leaves, and the ratios.  Targets: advbench at least
as strong (robust accuracy no higher than ART's by more than 0.5 points) and at least 3x
faster.  Fixed-budget attacks are compared at one eps; minimal-norm attacks (DeepFool,
CW) by the robust accuracy implied by their radii at one eps (a perturbation found with
norm <= eps breaks the example).

    pip install -e ".[bench]"
    python benchmarks/attacks_vs_art.py [--images 200] [--attacks pgd,apgd,square,deepfool,cw]

The model is a small MNIST CNN (conv 16 - pool - conv 32 - pool - dense 64), trained for
one epoch on 20,000 MNIST images when they are found ($ADVBENCH_DATA or ../shared/data;
random images otherwise).  Settings are matched between the libraries as far as their
parameters allow and printed with the results.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from pgd_throughput import mnist


def small_cnn():
    import keras

    inputs = keras.Input((28, 28, 1))
    h = keras.layers.MaxPooling2D(2)(keras.layers.ReLU()(keras.layers.Conv2D(16, 3, padding="same")(inputs)))
    h = keras.layers.MaxPooling2D(2)(keras.layers.ReLU()(keras.layers.Conv2D(32, 3, padding="same")(h)))
    h = keras.layers.ReLU()(keras.layers.Dense(64)(keras.layers.Flatten()(h)))
    return keras.Model(inputs, keras.layers.Dense(10)(h))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--attacks", default="pgd,apgd,square,deepfool,cw")
    args = parser.parse_args()

    import keras
    import tensorflow as tf
    from art.attacks.evasion import (
        AutoProjectedGradientDescent,
        CarliniL2Method,
        DeepFool,
        ProjectedGradientDescent,
        SquareAttack,
    )
    from art.estimators.classification import TensorFlowV2Classifier

    from advbench.contract.plugins import load_plugins
    from advbench.kit import lp
    from advbench.kit.target import Target

    keras.utils.set_random_seed(0)
    x_train, y_train, x, y, source = mnist(args.images)
    model = small_cnn()
    if x_train is not None:
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x_train, y_train, epochs=1, batch_size=128, verbose=0)
    target = Target(model, num_classes=10, batch_size=args.images)
    keep = target.predict(x) == y
    x, y = x[keep], y[keep]
    registry = load_plugins().registry
    classifier = TensorFlowV2Classifier(
        model=model,
        nb_classes=10,
        input_shape=(28, 28, 1),
        loss_object=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        clip_values=(0.0, 1.0),
    )
    batch = len(x)

    def ours(name, **params):
        cls = registry.get("attack", name)
        attack = cls(cls.Params(**params))

        def run(eps, norm):
            if attack.minimal_norm:
                adversarial = attack.minimize(target, x, y, norm, 0)
                return lp.numpy_norm(adversarial - x, norm), adversarial
            result = attack.perturb(target, x, y, np.full(len(x), eps, np.float32), norm, 0)
            return None, np.asarray(result[0] if isinstance(result, tuple) else result)

        return run

    def theirs(make):
        def run(eps, norm):
            adversarial = make(eps, norm).generate(x=x, y=y).astype(np.float32)
            return lp.numpy_norm(adversarial - x, norm), adversarial

        return run

    linf, l2 = 0.1, 1.5
    cases = {
        "pgd": (
            linf,
            "linf",
            "40 steps of eps/10, 1 random start",
            ours("pgd", steps=40, step_size=0.1),
            theirs(
                lambda e, n: ProjectedGradientDescent(
                    classifier,
                    norm=np.inf,
                    eps=e,
                    eps_step=e / 10,
                    max_iter=40,
                    num_random_init=1,
                    batch_size=batch,
                    verbose=False,
                )
            ),
        ),
        "apgd": (
            linf,
            "linf",
            "100 iterations, cross-entropy, 1 random start",
            ours("apgd", steps=100),
            theirs(
                lambda e, n: AutoProjectedGradientDescent(
                    classifier,
                    norm=np.inf,
                    eps=e,
                    eps_step=2 * e,
                    max_iter=100,
                    nb_random_init=1,
                    batch_size=batch,
                    loss_type="cross_entropy",
                    verbose=False,
                )
            ),
        ),
        "square": (
            linf,
            "linf",
            "300 queries, p_init 0.8",
            ours("square", queries=300),
            theirs(
                lambda e, n: SquareAttack(
                    classifier, norm=np.inf, eps=e, max_iter=300, p_init=0.8, nb_restarts=1, batch_size=batch, verbose=False
                )
            ),
        ),
        "deepfool": (
            l2,
            "l2",
            "up to 50 iterations, overshoot 0.02 (ART: epsilon 0.02), all 10 class gradients",
            ours("deepfool", steps=50),
            theirs(lambda e, n: DeepFool(classifier, max_iter=50, epsilon=0.02, nb_grads=10, batch_size=batch, verbose=False)),
        ),
        "cw": (
            l2,
            "l2",
            "5 binary-search steps x 50 Adam steps, learning rate 0.01, initial c 1, untargeted only",
            ours("cw", steps=50, search_steps=5, learning_rate=0.01, initial_const=1.0, targets=0),
            theirs(
                lambda e, n: CarliniL2Method(
                    classifier,
                    learning_rate=0.01,
                    binary_search_steps=5,
                    max_iter=50,
                    initial_const=1.0,
                    batch_size=batch,
                    verbose=False,
                )
            ),
        ),
    }

    print(f"{len(x)} correctly classified {source} test images, small CNN; linf eps {linf}, l2 eps {l2}")
    print(
        f"{'attack':9s} {'advbench img/s':>15s} {'ART img/s':>10s} {'speed-up':>9s} {'robust acc advbench':>20s} {'ART':>6s}   settings"
    )
    for name in args.attacks.split(","):
        eps, norm, settings, mine, art = cases[name]
        row = {}
        for library, run in (("advbench", mine), ("ART", art)):
            run(eps, norm)  # warm-up: graph compilation
            best = np.inf
            for _ in range(args.repeats):
                started = time.perf_counter()
                radius, adversarial = run(eps, norm)
                best = min(best, time.perf_counter() - started)
            broken = target.predict(adversarial) != y
            if radius is not None:  # minimal-norm (or any) attack: broken within eps
                broken &= radius <= eps * (1 + 1e-5)
            else:
                assert np.all(lp.numpy_norm(adversarial - x, norm) <= eps * (1 + 1e-5) + 1e-6)
            row[library] = (len(x) / best, 1 - broken.mean())
        (ours_speed, ours_acc), (art_speed, art_acc) = row["advbench"], row["ART"]
        print(
            f"{name:9s} {ours_speed:15.1f} {art_speed:10.1f} {ours_speed / art_speed:8.1f}x {100 * ours_acc:19.1f}% {100 * art_acc:5.1f}%   {settings}"
        )


if __name__ == "__main__":
    main()
