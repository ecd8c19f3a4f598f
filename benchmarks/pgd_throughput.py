"""PGD throughput: advbench on any Keras backend against the peers, in one process.

advbench's PGD runs through the real attack path (the `pgd` plugin on a
:class:`advbench.target.Target`, batch by batch, as the pipeline calls it) on the Madry
MNIST CNN (conv 32 5x5, max-pool, conv 64 5x5, max-pool, dense 1024, logits): linf,
eps 0.3, 40 steps of 0.01, random start, one restart.  In the same process and on the
same network (weights copied), the same images and batches:

* a plain PyTorch eager PGD loop (what AutoAttack and RobustBench users run), when
  PyTorch is installed; on the device PyTorch sees (the GPU if there is one);
* the Adversarial Robustness Toolbox's PGD (TensorFlow backend only, when installed).

Prints images per second and the robust accuracy each reaches, and the ratios.
Targets: on a GPU, advbench on JAX at least 1.5x the plain PyTorch loop; on 2 CPU cores
with TensorFlow, at least 4x ART's PGD.

advbench's PGD stops working on an example once it has found an adversarial point (the
batch is compacted every 10 steps); the peers run every step on every example.  The
benchmark also reports advbench with ``early_stop: false``, the same work as the peers.

    python benchmarks/pgd_throughput.py --backend jax [--images 10000] [--batch-size 10000]
    pip install -e ".[bench]"  # ART, for the TensorFlow comparison

Uses MNIST test images from $ADVBENCH_DATA or ../shared/data when present (the model
is trained for one epoch first, so that the attack has work to do), random images
otherwise.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import os
import time
from pathlib import Path

import numpy as np

EPS, STEPS, STEP = 0.3, 40, 0.01


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


def madry_cnn(x_train=None, y_train=None):
    """The Madry MNIST CNN, seeded, trained for one epoch when training data is given."""
    import keras

    from advbench.contract.plugins import load_plugins
    from advbench.core.training import initialize
    from advbench.kit import backend

    backend.set_seed(0)
    model = load_plugins().registry.get("architecture", "madry_cnn")().build((28, 28, 1), 10)
    initialize(model, 0)
    if x_train is not None:
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x_train, y_train, epochs=1, batch_size=128, verbose=0)
    return model


def torch_copy(model):
    """The same network in plain PyTorch, weights copied from the Keras model."""
    import torch

    kernels = [v.numpy() for v in model.trainable_variables]  # conv1 k, b, conv2 k, b, dense k, b, logits k, b

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 32, 5, padding=2)
            self.conv2 = torch.nn.Conv2d(32, 64, 5, padding=2)
            self.dense = torch.nn.Linear(7 * 7 * 64, 1024)
            self.logits = torch.nn.Linear(1024, 10)

        def forward(self, x):  # x: NHWC, as advbench's images
            h = x.permute(0, 3, 1, 2)
            h = torch.nn.functional.max_pool2d(torch.relu(self.conv1(h)), 2)
            h = torch.nn.functional.max_pool2d(torch.relu(self.conv2(h)), 2)
            h = h.permute(0, 2, 3, 1).flatten(1)  # Keras flattens channels-last
            return self.logits(torch.relu(self.dense(h)))

    net = Net()
    with torch.no_grad():
        for conv, (k, b) in ((net.conv1, kernels[0:2]), (net.conv2, kernels[2:4])):
            conv.weight.copy_(torch.tensor(k).permute(3, 2, 0, 1))
            conv.bias.copy_(torch.tensor(b))
        for dense, (k, b) in ((net.dense, kernels[4:6]), (net.logits, kernels[6:8])):
            dense.weight.copy_(torch.tensor(k).T)
            dense.bias.copy_(torch.tensor(b))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return net.to(device).eval(), device


def torch_pgd(net, device, x, y, batch_size):
    """The textbook PGD loop in eager PyTorch: every step on every example."""
    import torch

    out = []
    generator = torch.Generator(device=device).manual_seed(0)
    for s in range(0, len(x), batch_size):
        xb = torch.tensor(x[s : s + batch_size], device=device)
        yb = torch.tensor(y[s : s + batch_size], device=device)
        adv = (xb + (torch.rand(xb.shape, generator=generator, device=device) * 2 - 1) * EPS).clamp(0, 1)
        for _ in range(STEPS):
            adv.requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(net(adv), yb)
            (grad,) = torch.autograd.grad(loss, adv)
            adv = adv.detach() + STEP * grad.sign()
            adv = torch.min(torch.max(adv, xb - EPS), xb + EPS).clamp(0, 1)
        out.append(adv.detach().cpu().numpy())
    if device == "cuda":
        torch.cuda.synchronize()
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend", choices=("tensorflow", "jax", "torch"), default=os.environ.get("KERAS_BACKEND", "tensorflow")
    )
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions; the best is reported")
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = args.backend
    if importlib.util.find_spec("torch") is not None:
        import torch  # noqa: F401 (before TensorFlow: imported after it, PyTorch's CUDA wheel crashes the process)

    import keras

    from advbench.kit import backend
    from advbench.kit.pgd import PGD
    from advbench.kit.target import Target

    backend.enable_determinism()  # what every run asks for (the peers run under it too, in this process)
    x_train, y_train, x, y, source = mnist(args.images)
    model = madry_cnn(x_train, y_train)
    target = Target(model, num_classes=10, batch_size=args.batch_size)

    def advbench_runner(early_stop):
        attack = PGD(steps=STEPS, restarts=1, step_size=STEP / EPS, random_start=True, early_stop=early_stop)

        def run():
            out = []
            for s in range(0, len(x), args.batch_size):
                xb, yb = x[s : s + args.batch_size], y[s : s + args.batch_size]
                out.append(np.asarray(attack.perturb(target, xb, yb, np.full(len(xb), EPS, np.float32), "linf", s)))
            return np.concatenate(out)

        return run

    runs = [
        (f"advbench ({args.backend})", advbench_runner(True)),
        (f"advbench ({args.backend}), every step", advbench_runner(False)),
    ]
    if importlib.util.find_spec("torch") is not None:
        net, device = torch_copy(model)
        runs.append((f"plain PyTorch eager ({device})", lambda: torch_pgd(net, device, x, y, args.batch_size)))
    if args.backend == "tensorflow" and importlib.util.find_spec("art") is not None:
        import tensorflow as tf
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
            classifier,
            norm=np.inf,
            eps=EPS,
            eps_step=STEP,
            max_iter=STEPS,
            num_random_init=1,
            batch_size=args.batch_size,
            verbose=False,
        )
        runs.append(("ART (TensorFlow)", lambda: art_attack.generate(x=x, y=y).astype(np.float32)))

    results = {}
    for name, run in runs:
        run()  # warm-up: compiles
        best = np.inf
        for _ in range(args.repeats):
            started = time.perf_counter()
            adversarial = run()
            best = min(best, time.perf_counter() - started)
        assert np.abs(adversarial - x).max() <= EPS + 1e-5
        robust = float(np.mean(target.predict(adversarial) == y))
        results[name] = (len(x) / best, robust)

    clean = float(np.mean(target.predict(x) == y))
    print(f"PGD linf eps={EPS}, {STEPS} steps of {STEP}, {len(x)} {source}, batch {args.batch_size}, clean accuracy {clean:.3f}")
    print(f"advbench on Keras {keras.__version__}, backend {args.backend}, device {backend.device()}")
    for name, (speed, robust) in results.items():
        print(f"  {name:40s} {speed:10.1f} images/s   robust accuracy {robust:.3f}")
    mine = results[runs[0][0]][0]
    for name, (speed, _) in results.items():
        if not name.startswith("advbench"):
            target_text = "(target >= 4x)" if name.startswith("ART") else "(target on a GPU, JAX: >= 1.5x)"
            print(f"  advbench / {name}: {mine / speed:.2f}x {target_text}; every step: {results[runs[1][0]][0] / speed:.2f}x")


if __name__ == "__main__":
    main()
