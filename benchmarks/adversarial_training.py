"""Cost of PGD adversarial training against plain training, same model, same process.

Trains the Madry MNIST CNN for a fixed number of batches with `none` and with
`pgd_training` (k PGD steps) and prints examples per second of each and the slowdown,
which should be close to the k + 1 forward-backward passes per batch the method costs.

    python benchmarks/adversarial_training.py [--steps 7] [--batches 20] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=7, help="PGD steps per batch (k)")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import keras

    from advbench.contract.plugins import load_plugins
    from advbench.kit.training import train_model
    from advbench.spec import TrainingSpec

    registry = load_plugins().registry
    rng = np.random.default_rng(0)
    n = args.batches * args.batch_size
    x = rng.uniform(size=(n, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, n)
    training = TrainingSpec(epochs=1, batch_size=args.batch_size)
    speeds = {}
    for name, params in (("none", {}), ("pgd_training", {"eps": 0.3, "steps": args.steps})):
        cls = registry.get("defense", name)
        defense = cls(cls.Params(**params))
        keras.utils.set_random_seed(0)
        model = registry.get("architecture", "madry_cnn")().build((28, 28, 1), 10)
        train_model(model, defense, training, x[: 2 * args.batch_size], y[: 2 * args.batch_size], seed=0)  # compile
        started = time.perf_counter()
        train_model(model, defense, training, x, y, seed=0)
        speeds[name] = n / (time.perf_counter() - started)
    print(f"Madry CNN, batch {args.batch_size}, {args.batches} batches")
    for name, speed in speeds.items():
        print(f"  {name:13s} {speed:8.1f} examples/s")
    print(
        f"  slowdown of pgd_training with k={args.steps}: {speeds['none'] / speeds['pgd_training']:.2f}x (the method costs about k + 1 = {args.steps + 1})"
    )


if __name__ == "__main__":
    main()
