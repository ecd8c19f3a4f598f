"""advbench's `bab` next to alpha-beta-CROWN (the VNN-COMP winner, 2021-2025) on the same
networks (weights copied to PyTorch), the same examples, the same linf budget and the same
time limit per example, in one process.

Networks: a ReLU MLP trained here on scikit-learn's digits (two hidden layers of 32,
offline), and optionally a certified-trained MNIST CNN from a run (``--model``, e.g.
``runs/certified-mnist/models/crown-ibp-0.4-*.keras``, with ``ADVBENCH_DATA`` for the
MNIST test images).  Each tool answers, per example, whether every margin f_y - f_j is
positive on the linf ball of radius eps intersected with [0, 1]: verified, falsified (a
counterexample) or unknown (time limit).  advbench runs every example in one batched call
(:meth:`BranchAndBound.decide`, its default settings and the limit per example);
alpha-beta-CROWN one call per example (its default configuration: PGD, alpha-CROWN, then
beta-CROWN branch and bound; ``bab.timeout`` the limit), on the CPU.

Prints per network the verified / falsified / unknown counts of each, the examples where
they contradict each other (one verifies what the other falsifies: must be 0), and seconds
per example.

    pip install -e ".[bench]"
    # alpha-beta-CROWN and auto_LiRPA from github.com/Verified-Intelligence (not on PyPI), e.g.
    #   git clone --recursive https://github.com/Verified-Intelligence/alpha-beta-CROWN
    #   pip install -e alpha-beta-CROWN/auto_LiRPA; pip install -r alpha-beta-CROWN/complete_verifier/requirements.txt
    PYTHONPATH=alpha-beta-CROWN:alpha-beta-CROWN/complete_verifier python benchmarks/bab_vs_abcrown.py \\
        [--examples 30] [--eps 0.06] [--timeout 10] [--model MODEL.keras --model-eps 0.3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import time

import numpy as np
from torch_copy import to_torch

VERIFIED, FALSIFIED, UNKNOWN = "verified", "falsified", "unknown"


def digits_mlp():
    import keras

    from advbench import load_dataset

    keras.utils.set_random_seed(0)
    data = load_dataset("digits")
    inputs = keras.Input(data.input_shape)
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(32, activation="relu")(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(h))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.x_train, data.y_train, epochs=20, batch_size=128, verbose=0)
    return model, data.x_test, data.y_test


def advbench_verdicts(model, x, y, eps, timeout):
    from advbench.contract.plugins import load_plugins
    from advbench.kit.bounds.bab import FALSIFIED as NO
    from advbench.kit.bounds.bab import VERIFIED as YES
    from advbench.kit.target import Target

    cls = load_plugins(strict=True).registry.get("certifier", "bab")
    bab = cls(cls.Params(timeout=timeout))
    target = Target(model, num_classes=10)
    bab.decide(target, x[:1], y[:1], "linf", np.full(1, eps))  # compile outside the clock
    began = time.perf_counter()
    status, domains, _, _, _ = bab.decide(target, x, y, "linf", np.full(len(x), eps))
    seconds = time.perf_counter() - began
    names = np.where(status == YES, VERIFIED, np.where(status == NO, FALSIFIED, UNKNOWN))
    return list(names), seconds, int(np.median(domains))


def abcrown_verdicts(network, x, y, eps, timeout):
    import torch
    from abcrown import ABCrownSolver, ConfigBuilder

    logging.disable(logging.WARNING)
    config = ConfigBuilder.from_defaults().set(general__device="cpu", bab__timeout=timeout)
    names = []
    began = time.perf_counter()
    for point, label in zip(x, y):
        flat = torch.tensor(point.transpose(2, 0, 1)[None])  # NCHW, as the copy reads it
        clauses = []  # the property's violation, one clause per wrong class: f_y - f_j <= 0
        for j in range(10):
            if j != label:
                C = torch.zeros(1, 10)
                C[0, int(label)], C[0, j] = 1.0, -1.0
                clauses.append((C, torch.zeros(1)))
        spec = {"lower": (flat - eps).clamp(0, 1), "upper": (flat + eps).clamp(0, 1), "clauses": clauses}
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            status = ABCrownSolver(spec, network, config=config).solve().status
        names.append(VERIFIED if status.startswith("safe") else FALSIFIED if status.startswith("unsafe") else UNKNOWN)
    return names, time.perf_counter() - began


def compare(name, model, x, y, eps, timeout, examples):
    import torch

    from advbench.kit.target import Target

    predicted = Target(model, num_classes=10).predict(x)
    keep = np.flatnonzero(predicted == y)[:examples]
    x, y = np.asarray(x[keep], np.float32), np.asarray(y[keep])
    network = to_torch(model)
    with torch.no_grad():
        gap = np.abs(network(torch.tensor(x.transpose(0, 3, 1, 2))).numpy() - model.predict(x, verbose=0)).max()
    ours, our_seconds, domains = advbench_verdicts(model, x, y, eps, timeout)
    theirs, their_seconds = abcrown_verdicts(network, x, y, eps, timeout)
    contradictions = sum({a, b} == {VERIFIED, FALSIFIED} for a, b in zip(ours, theirs))
    print(
        f"\n{name}: {len(x)} correctly classified test examples, linf eps={eps:g}, {timeout:g} s per example (logits agree to {gap:.1e})"
    )
    print(f"{'':18}{'verified':>9}{'falsified':>10}{'unknown':>8}{'s/example':>11}")
    for tool, verdicts, seconds in (("advbench bab", ours, our_seconds), ("alpha-beta-CROWN", theirs, their_seconds)):
        counts = [verdicts.count(v) for v in (VERIFIED, FALSIFIED, UNKNOWN)]
        print(f"{tool:18}{counts[0]:>9}{counts[1]:>10}{counts[2]:>8}{seconds / len(x):>11.2f}")
    print(f"contradictions (one verifies what the other falsifies): {contradictions}; advbench's median subdomains {domains}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=30)
    parser.add_argument("--eps", type=float, default=0.06, help="linf budget on the digits MLP")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per example, both tools")
    parser.add_argument("--model", help="a certified-trained MNIST model saved by advbench (.keras)")
    parser.add_argument("--model-eps", type=float, default=0.3)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    model, x, y = digits_mlp()
    compare("digits ReLU MLP (64-32-32-10)", model, x, y, args.eps, args.timeout, args.examples)
    if args.model:
        from advbench import load_dataset, load_model

        data = load_dataset("mnist")
        compare(
            os.path.basename(args.model),
            load_model(args.model),
            data.x_test,
            data.y_test,
            args.model_eps,
            args.timeout,
            args.examples,
        )


if __name__ == "__main__":
    main()
