"""advbench's IBP, CROWN and alpha-CROWN next to auto_LiRPA's (PyTorch) on the same
networks (weights copied over), the same examples and the same bisection, in one process.

Three networks are trained on scikit-learn's digits (8x8, offline): an MLP (two hidden
layers of 64), a CNN without pooling (a
convolution with padding and a strided one) and a CNN with two
conv-ReLU-max-pool blocks (padding "same" or "valid", as the copy
supports them).  Both libraries answer "are all margins f_y - f_j provably
positive in the ball of radius eps intersected with [0, 1]?" and the same log-scale
bisection (:class:`advbench.BisectionCertifier`, tolerance 1e-3) turns the answers into
certified radii.  auto_LiRPA runs with its defaults (alpha-CROWN: 20 Adam steps of 0.5,
decay 0.98, intermediate bounds fixed at CROWN's), as advbench's ``alpha_crown`` does.

Prints, per network, norm and method: the median certified radius of each library, the
ratio of the medians, the share of examples where advbench's radius is at least 99% of
auto_LiRPA's, and seconds per example of each.  Targets (issue 15): alpha-CROWN radii
within 1% of auto_LiRPA's, and no slower per example on 2 CPU cores.

    pip install -e ".[bench]"
    pip install git+https://github.com/Verified-Intelligence/auto_LiRPA  # 0.7; PyPI has only 0.3
    python benchmarks/certifiers_vs_auto_lirpa.py [--examples 50] [--norms linf,l2] [--networks mlp,cnn,cnn-maxpool]
        [--methods ibp,crown,alpha_crown]

For l2, auto_LiRPA bounds the ball alone, advbench the ball intersected with [0, 1]
(slightly tighter where the box cuts the ball); auto_LiRPA's l2 bounds of a convolution
take one eps per call, so on the CNNs it runs one call per example's budget (its l2
seconds per example there count that, not batched work).  Any Keras backend (``KERAS_BACKEND``);
auto_LiRPA always runs on PyTorch, on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np
from torch_copy import to_torch

METHODS = (("ibp", "IBP"), ("crown", "CROWN"), ("alpha_crown", "alpha-CROWN"))


def networks():
    import keras

    def mlp():
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Flatten()(inputs)
        h = keras.layers.Dense(64, activation="relu")(h)
        h = keras.layers.Dense(64, activation="relu")(h)
        return keras.Model(inputs, keras.layers.Dense(10)(h), name="mlp")

    def cnn():
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
        h = keras.layers.Conv2D(32, 4, strides=2, padding="valid", activation="relu")(h)
        h = keras.layers.Dense(64, activation="relu")(keras.layers.Flatten()(h))
        return keras.Model(inputs, keras.layers.Dense(10)(h), name="cnn")

    def cnn_maxpool():
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
        h = keras.layers.MaxPooling2D(2)(h)
        h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D(2)(h)
        return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(h)), name="cnn-maxpool")

    return [mlp(), cnn(), cnn_maxpool()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50)
    parser.add_argument("--norms", default="linf,l2")
    parser.add_argument("--networks", default="mlp,cnn,cnn-maxpool")
    parser.add_argument("--methods", default=",".join(name for name, _ in METHODS))
    args = parser.parse_args()

    import keras
    import torch  # before TensorFlow: the two must not load in the other order
    import torch._dynamo  # noqa: F401  (Adam loads it lazily, which after TensorFlow crashes)
    from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm
    from sklearn.datasets import load_digits

    from advbench import BisectionCertifier
    from advbench.contract.plugins import load_plugins
    from advbench.kit import backend
    from advbench.kit.target import Target
    from advbench.runs.harness import certified_radii

    torch.set_num_threads(torch.get_num_threads())
    registry = load_plugins().registry
    digits = load_digits()
    x_all = (digits.images / 16.0).astype(np.float32)[..., None]
    y_all = digits.target
    x_train, y_train = x_all[:1500], y_all[:1500]
    x, y = x_all[1500 : 1500 + args.examples], y_all[1500 : 1500 + args.examples]

    class AutoLirpa(BisectionCertifier):
        """auto_LiRPA's lower bounds of the margins, as a BisectionCertifier."""

        def __init__(self, network, method):
            super().__init__()
            self.method = method
            nchw = torch.zeros((1, 1, 8, 8))
            # its default "patches" mode fails on max-pooling (a view of non-contiguous patches)
            pooled = any(isinstance(layer, torch.nn.MaxPool2d) for layer in network)
            self.convolutional = any(isinstance(layer, torch.nn.Conv2d) for layer in network)
            self.bounded = BoundedModule(
                network, nchw, device="cpu", verbose=0, bound_opts={"conv_mode": "matrix" if pooled else "patches"}
            )

        def certified(self, target, x, y, norm, eps):
            eps = np.broadcast_to(np.asarray(eps, np.float32), (len(x),))
            if norm == "l2" and self.convolutional and len(set(eps)) > 1:
                # its l2 interval bounds of a convolution take one eps per call: one call per budget
                answer = np.zeros(len(x), bool)
                for value in set(eps):
                    rows = eps == value
                    answer[rows] = self.certified(target, x[rows], y[rows], norm, value)
                return answer
            inputs = torch.tensor(np.asarray(x, np.float32).transpose(0, 3, 1, 2))
            e = torch.tensor(eps).reshape(-1, 1, 1, 1)
            if norm == "linf":
                ptb = PerturbationLpNorm(norm=np.inf, x_L=(inputs - e).clamp(min=0), x_U=(inputs + e).clamp(max=1))
            else:
                ptb = PerturbationLpNorm(
                    norm=2,
                    eps=float(eps[0]) if self.convolutional else e.reshape(-1, 1),
                    x_L=torch.zeros_like(inputs),
                    x_U=torch.ones_like(inputs),
                )
            labels = torch.tensor(np.asarray(y, np.int64))
            others = torch.tensor([[j for j in range(10) if j != c] for c in range(10)])[labels]
            C = torch.eye(10)[labels].unsqueeze(1) - torch.eye(10)[others]
            with contextlib.redirect_stdout(io.StringIO()):  # its early-stop messages
                lower, _ = self.bounded.compute_bounds(
                    x=(BoundedTensor(inputs, ptb),), C=C, method=self.method, bound_upper=False
                )
            return (lower > 0).all(dim=1).numpy()

    print(
        f"{len(x)} digits test images, keras backend {backend.name()}, torch threads {torch.get_num_threads()}; "
        "radius by bisection to relative tolerance 1e-3"
    )
    print(
        f"{'network':12s} {'norm':4s} {'method':12s} {'advbench median r':>18s} {'auto_LiRPA median r':>20s} "
        f"{'ratio':>6s} {'>= 99%':>7s} {'advbench s/ex':>14s} {'auto_LiRPA s/ex':>16s}"
    )
    keras.utils.set_random_seed(0)
    for model in (m for m in networks() if m.name in args.networks.split(",")):
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x_train, y_train, epochs=15, batch_size=64, verbose=0)
        network = to_torch(model)
        probe = x[:8]
        with torch.no_grad():
            theirs_logits = network(torch.tensor(probe.transpose(0, 3, 1, 2))).numpy()
        gap = np.abs(theirs_logits - np.asarray(model(probe))).max()
        assert gap < 1e-4, f"{model.name}: the PyTorch copy differs by {gap}"
        target = Target(model, num_classes=10, batch_size=len(x))
        predicted = target.predict(x)
        for norm in args.norms.split(","):
            for ours_name, theirs_method in (m for m in METHODS if m[0] in args.methods.split(",")):
                cls = registry.get("certifier", ours_name)
                row = {}
                for library, certifier in (("advbench", cls(cls.Params())), ("auto_LiRPA", AutoLirpa(network, theirs_method))):
                    certified_radii(certifier, target, x[:2], y[:2], predicted[:2], norm, len(x))  # warm-up: compiles
                    started = time.perf_counter()
                    radius, _ = certified_radii(certifier, target, x, y, predicted, norm, len(x))
                    row[library] = (radius, (time.perf_counter() - started) / len(x))
                (ours, ours_time), (theirs, theirs_time) = row["advbench"], row["auto_LiRPA"]
                close = np.mean(ours >= 0.99 * theirs)
                ratio = np.median(ours) / max(np.median(theirs), 1e-12)
                print(
                    f"{model.name:12s} {norm:4s} {theirs_method:12s} {np.median(ours):18.5f} {np.median(theirs):20.5f} "
                    f"{ratio:6.3f} {100 * close:6.0f}% {ours_time:14.3f} {theirs_time:16.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
