"""Minimal-norm attacks against their reference implementations, on the same network and
the same images, in one process.

The Madry MNIST CNN is trained for one epoch with Keras and copied into PyTorch (weights
and layout, as in ``pgd_throughput.py``).  On the first correctly classified MNIST test
images, every attack looks for the smallest adversarial example, l2 and linf, with its
paper's default settings (100 iterations, one run):

* advbench's ``fmn`` against Foolbox's FMN (``L2FMNAttack``, ``LInfFMNAttack``; Foolbox
  3.3, the implementation the FMN authors contributed);
* advbench's ``fab`` against torchattacks' FAB (a port of AutoAttack's ``FABAttack_PT``,
  the reference code of Croce & Hein) with an unbounded budget;
* advbench's ``ensemble`` (its minimal-norm stage, FMN and FAB, then the cascade's
  bisection over eps to 1%; APGD with 3 targets, Square with 500 queries, to keep the
  run short) and ``deepfool`` for context.

A peer's radius is the norm of its output where that output is misclassified (inf
elsewhere), as its users get it; advbench's is what its leaderboard records.  Printed per
norm: the median radius of each attack, and for each pair the share of examples where
advbench's radius is no larger than the peer's (to 0.01% and to 1%), and the time taken.

    pip install -e ".[bench]"             # the peers (PyTorch is in the test extra)
    python benchmarks/minimal_norm.py [--images 100] [--norms l2 linf]

Uses MNIST from $ADVBENCH_DATA or ../shared/data (random images otherwise, which makes
the comparison meaningless; it says so).
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np
from pgd_throughput import madry_cnn, mnist, torch_copy

STEPS = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--norms", nargs="+", choices=("l2", "linf"), default=["l2", "linf"])
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    for module in ("torch", "foolbox", "torchattacks"):
        if importlib.util.find_spec(module) is None:
            raise SystemExit(f'{module} is not installed: pip install -e ".[bench]"')
    import foolbox
    import keras
    import torch  # before TensorFlow: imported after it, PyTorch's CUDA wheel crashes the process
    import torchattacks

    from advbench.contract.plugins import load_plugins
    from advbench.kit import backend, lp
    from advbench.kit.target import Target
    from advbench.runs.harness import attack_radii

    x_train, y_train, x, y, source = mnist(4 * args.images)
    model = madry_cnn(x_train, y_train)
    target = Target(model, num_classes=10, batch_size=args.batch_size)
    keep = np.flatnonzero(target.predict(x) == y)[: args.images]
    x, y = x[keep], y[keep]
    net, device = torch_copy(model)
    with torch.no_grad():
        agree = (net(torch.tensor(x, device=device)).argmax(1).cpu().numpy() == y).mean()
    registry = load_plugins().registry

    def ours(name, tolerance=0.001, **params):
        cls = registry.get("attack", name)
        attack = cls(cls.Params(**params))

        def run(norm):
            eps = [0.3] if norm == "linf" else [1.5]
            return attack_radii(attack, target, x, y, y, norm, eps, tolerance, 0, args.batch_size).radius

        return run

    def radii_of(adversarial, norm):
        adversarial = np.asarray(adversarial, np.float32)
        broken = target.predict(adversarial) != y
        return np.where(broken, lp.numpy_norm(adversarial - x, norm), np.inf)

    def foolbox_fmn(norm):
        attack = foolbox.attacks.L2FMNAttack(steps=STEPS) if norm == "l2" else foolbox.attacks.LInfFMNAttack(steps=STEPS)
        fmodel = foolbox.PyTorchModel(net, bounds=(0, 1), device=device)
        out = []
        for s in range(0, len(x), args.batch_size):
            xb, yb = (torch.tensor(a[s : s + args.batch_size], device=device) for a in (x, y))
            _, clipped, _ = attack(fmodel, xb, yb, epsilons=None)
            out.append(clipped.detach().cpu().numpy())
        return radii_of(np.concatenate(out), norm)

    def torchattacks_fab(norm):
        attack = torchattacks.FAB(
            net,
            norm="L2" if norm == "l2" else "Linf",
            eps=float(lp.box_diameter(x.shape[1:], norm)),
            steps=STEPS,
            n_restarts=1,
            n_classes=10,
            seed=0,
        )
        out = []
        for s in range(0, len(x), args.batch_size):
            xb, yb = (torch.tensor(a[s : s + args.batch_size], device=device) for a in (x, y))
            out.append(attack(xb, yb).detach().cpu().numpy())
        return radii_of(np.concatenate(out), norm)

    attacks = {
        "advbench fmn": ours("fmn", steps=STEPS),
        "Foolbox FMN": foolbox_fmn,
        "advbench fab": ours("fab", steps=STEPS),
        "torchattacks FAB": torchattacks_fab,
        "advbench deepfool": ours("deepfool"),
        "advbench ensemble": ours("ensemble", tolerance=0.01, steps=STEPS, targets=3, queries=500),
    }
    pairs = [
        ("advbench fmn", "Foolbox FMN"),
        ("advbench fab", "torchattacks FAB"),
        ("advbench ensemble", "Foolbox FMN"),
        ("advbench ensemble", "torchattacks FAB"),
    ]
    print(
        f"{len(x)} {source} test images (correctly classified), Madry CNN trained 1 epoch; the PyTorch copy agrees on "
        f"{100 * agree:.1f}% of them; Keras {keras.__version__} on {backend.name()} ({backend.device()}), "
        f"Foolbox {foolbox.__version__}, torchattacks {torchattacks.__version__}, PyTorch {torch.__version__} ({device})"
    )
    if source != "MNIST":
        print("WARNING: no MNIST found; random images make this comparison meaningless")
    for norm in args.norms:
        radius, seconds = {}, {}
        for name, run in attacks.items():
            started = time.perf_counter()
            radius[name] = run(norm)
            seconds[name] = time.perf_counter() - started
        print(f"\n{norm}: median radius (found on), time")
        for name in attacks:
            found = np.isfinite(radius[name])
            print(f"  {name:20s} {np.median(radius[name]):.4f}  ({100 * found.mean():5.1f}%)  {seconds[name]:7.1f} s")
        for mine, theirs in pairs:
            a, b = radius[mine], radius[theirs]
            print(
                f"  {mine} <= {theirs}: on {100 * np.mean(a <= b * (1 + 1e-4)):5.1f}% of examples "
                f"(within 1%: {100 * np.mean(a <= b * 1.01):5.1f}%); median ratio {np.median(a / b):.4f}"
            )


if __name__ == "__main__":
    main()
