"""advbench's `ensemble` against the original AutoAttack (fra31/auto-attack, version
`standard`: APGD-CE, APGD-T with 9 targets, FAB-T with 9 targets, Square with 5,000
queries) on the same model and the same examples, in one process, on the CPU.

The model is a Keras file (default: the madry-mnist run's PGD-trained Madry CNN); it is
copied into PyTorch layer by layer (the logits are checked equal) so that AutoAttack runs
on exactly the same network.  For each budget it prints the robust accuracy of each, the
examples only one of them breaks, and the wall time of each: advbench's ensemble at the
fixed budget (what AutoAttack computes) and, with ``--radii``, through advbench's harness (with the minimal-norm
stage and the radius, what a leaderboard computes).  With ``--natural``, a naturally trained
Madry CNN is trained first (2 epochs) and attacked at 0.1 as well.

It also prints AttackBench's optimality (Cinà et al. 2025) of each attack of a finished run
(``--run``): 1 minus the area between the attack's robust-accuracy curve and the per-example
best of all the run's attacks, as a share of the area between the clean accuracy and that
best, over eps from 0 to the largest best radius (1: the attack is the best on every example).

    pip install git+https://github.com/fra31/auto-attack   # or from a local checkout
    ADVBENCH_DATA=../shared/data python benchmarks/ensemble_vs_autoattack.py \\
        --model runs/madry-mnist/models/pgd-trained-*.keras --run runs/madry-mnist --examples 1000 --natural
"""

from __future__ import annotations

import argparse
import glob
import time

import numpy as np


def torch_madry_cnn(keras_model):
    """The Madry CNN in PyTorch with the Keras model's weights (NCHW in, logits out)."""
    import torch
    from torch import nn

    convs = [layer for layer in keras_model.layers if type(layer).__name__ == "Conv2D"]
    denses = [layer for layer in keras_model.layers if type(layer).__name__ == "Dense"]
    assert len(convs) == 2 and len(denses) == 2, "expects the madry_cnn architecture"

    class MadryCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 32, 5, padding=2), nn.Conv2d(32, 64, 5, padding=2)
            self.fc1, self.fc2 = nn.Linear(7 * 7 * 64, 1024), nn.Linear(1024, 10)

        def forward(self, x):
            h = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
            h = nn.functional.max_pool2d(torch.relu(self.conv2(h)), 2)
            h = h.permute(0, 2, 3, 1).reshape(len(x), -1)  # Keras flattens NHWC
            return self.fc2(torch.relu(self.fc1(h)))

    module = MadryCNN()
    with torch.no_grad():
        for conv, layer in ((module.conv1, convs[0]), (module.conv2, convs[1])):
            conv.weight.copy_(torch.as_tensor(np.transpose(layer.kernel.numpy(), (3, 2, 0, 1))))
            conv.bias.copy_(torch.as_tensor(layer.bias.numpy()))
        for linear, layer in ((module.fc1, denses[0]), (module.fc2, denses[1])):
            linear.weight.copy_(torch.as_tensor(layer.kernel.numpy().T))
            linear.bias.copy_(torch.as_tensor(layer.bias.numpy()))
    return module.eval()


def autoattack(module, x, y, eps, batch):
    import torch
    from autoattack import AutoAttack

    attack = AutoAttack(module, norm="Linf", eps=eps, version="standard", device="cpu", verbose=False, seed=0)
    started = time.perf_counter()
    adversarial = attack.run_standard_evaluation(torch.as_tensor(np.transpose(x, (0, 3, 1, 2))), torch.as_tensor(y), bs=batch)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        broken = module(adversarial).argmax(1).numpy() != y
    return broken, seconds


def _ensemble(keras_model, batch, targets=9, queries=5000):
    from advbench.contract.plugins import load_plugins
    from advbench.kit.target import Target

    registry = load_plugins().registry
    cls = registry.get("attack", "ensemble")
    settings = {"steps": 100, "targets": targets, "queries": queries, "minimal": ["fmn"], "minimal_steps": 100}
    return registry, cls, settings, Target(keras_model, num_classes=10, batch_size=batch)


def ensemble(keras_model, x, y, eps, batch, targets=9, queries=5000):
    """advbench's ensemble with AutoAttack's settings at the fixed budget (what AutoAttack computes)."""
    from advbench.runs.context import Components

    registry, cls, settings, target = _ensemble(keras_model, batch, targets, queries)
    predicted = target.predict(x)
    correct = np.flatnonzero(predicted == y)
    attack = cls(cls.Params(**settings))
    attack.prepare(target, x, y, Components(registry))
    started = time.perf_counter()
    adversarial, _ = attack.perturb(target, x[correct], y[correct], np.full(len(correct), eps, np.float32), "linf", 0)
    seconds = time.perf_counter() - started
    broken = predicted != y
    broken[correct] = target.adversarial(adversarial, y[correct])
    return broken, seconds


def ensemble_with_radii(keras_model, x, y, eps, batch):
    """The ensemble through advbench's harness: the minimal-norm stage, the budget and the radius (what a leaderboard computes)."""
    from advbench.runs.context import Components
    from advbench.runs.harness import attack_radii

    registry, cls, settings, target = _ensemble(keras_model, batch)
    predicted = target.predict(x)
    started = time.perf_counter()
    outcome = attack_radii(
        cls(cls.Params(**settings)), target, x, y, predicted, "linf", [eps], 0.02, 0, batch, context=Components(registry)
    )
    return outcome.success[0], time.perf_counter() - started


def optimality(run_dir: str, norm: str = "linf") -> dict[str, float]:
    """AttackBench's optimality of every attack of a finished run (see the module docstring)."""
    from advbench.results.data import load_results

    found = {}
    for b in load_results(run_dir).for_norm(norm):
        radii = {label: np.where(b.correct, r, 0.0) for label, r in b.empirical.items()}
        best = np.min(np.stack(list(radii.values())), axis=0)
        top = float(np.max(best[np.isfinite(best)])) if np.isfinite(best).any() else 1.0
        grid = np.linspace(0, top, 2001)

        def curve(r):
            return np.mean(r[None, :] > grid[:, None], axis=1)

        envelope, clean = curve(best), np.full(len(grid), b.correct.mean())
        span = np.trapezoid(clean - envelope, grid)
        for label, r in radii.items():
            found[f"{b.model}: {label}"] = 1 - float(np.trapezoid(curve(r) - envelope, grid)) / max(span, 1e-12)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a Keras model file (default: the madry-mnist run's PGD-trained model)")
    parser.add_argument("--run", default="runs/madry-mnist", help="a finished run, for the optimality of its attacks")
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--natural", action="store_true", help="also a naturally trained Madry CNN at eps 0.1")
    parser.add_argument(
        "--settings",
        type=lambda text: [tuple(int(v) for v in pair.split(":")) for pair in text.split(",")],
        default=[(9, 5000), (3, 500)],
        help="the ensemble's APGD-T targets and Square queries to measure, as TARGETS:QUERIES,... "
        "(default 9:5000,3:500: AutoAttack's, then madry-mnist.yaml's)",
    )
    parser.add_argument("--radii", action="store_true", help="also the ensemble through the harness, with the radius search")
    args = parser.parse_args()

    import torch

    from advbench import load_dataset
    from advbench.core.data import stratified_indices
    from advbench.core.models import load_keras_model

    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = load_dataset("mnist")
    index = stratified_indices(data.y_test, args.examples, seed=1)
    x, y = data.x_test[index], data.y_test[index].astype(np.int64)
    models = []
    path = args.model or sorted(glob.glob(f"{args.run}/models/pgd-trained-*.keras"))[-1]
    models.append((f"PGD-trained ({path})", load_keras_model(path), args.eps))
    if args.natural:
        models.append(("naturally trained (2 epochs)", natural_model(data), 0.1))
    for name, keras_model, eps in models:
        module = torch_madry_cnn(keras_model)
        with torch.no_grad():
            theirs = module(torch.as_tensor(np.transpose(x[:256], (0, 3, 1, 2)))).numpy()
        ours = np.asarray(keras_model(x[:256], training=False))
        gap = float(np.max(np.abs(theirs - ours)))
        assert gap < 1e-3 * max(1.0, float(np.max(np.abs(ours)))), f"the PyTorch copy's logits differ by {gap}"
        print(f"{name}, {len(x)} MNIST test examples, linf eps {eps:g} (logits agree to {gap:.1e})", flush=True)
        aa_broken, aa_seconds = autoattack(module, x, y, eps, args.batch)
        print(f"  AutoAttack standard:       robust {100 * (1 - aa_broken.mean()):5.1f}%  {aa_seconds:8.1f} s", flush=True)
        for targets, queries in args.settings:
            our_broken, fixed_seconds = ensemble(keras_model, x, y, eps, args.batch, targets, queries)
            print(
                f"  ensemble ({targets} targets, {queries} queries), fixed budget: robust "
                f"{100 * (1 - our_broken.mean()):5.1f}%  {fixed_seconds:8.1f} s ({fixed_seconds / aa_seconds:.2f} of "
                f"AutoAttack's time); broken only by AutoAttack: {int(np.sum(aa_broken & ~our_broken))}, only by the "
                f"ensemble: {int(np.sum(our_broken & ~aa_broken))}",
                flush=True,
            )
        if args.radii:
            harness_broken, harness_seconds = ensemble_with_radii(keras_model, x, y, eps, args.batch)
            print(
                f"  ensemble, with radii:      robust {100 * (1 - harness_broken.mean()):5.1f}%  {harness_seconds:8.1f} s "
                f"({harness_seconds / aa_seconds:.2f})",
                flush=True,
            )
    if args.run:
        print(f"AttackBench optimality of each attack of {args.run} (linf):")
        for label, value in optimality(args.run).items():
            print(f"  {label:30s} {value:.3f}")


def natural_model(data):
    import keras

    from advbench.contract.plugins import load_plugins

    keras.utils.set_random_seed(0)
    model = load_plugins().registry.get("architecture", "madry_cnn")().build((28, 28, 1), 10)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.x_train, data.y_train, epochs=2, batch_size=128, verbose=0)
    return model


if __name__ == "__main__":
    main()
