"""Small models with known answers and the registry's components, shared by the tests."""

import numpy as np

from advbench.contract.plugins import load_plugins
from advbench.runs.context import Components

REGISTRY = load_plugins(strict=True).registry
"""Every built-in component, loaded as a run loads them."""

CONTEXT = Components(REGISTRY)
"""What an attack's ``prepare`` gets outside a run: the registered attacks (an ensemble's members)."""


def build(kind, name, **params):
    """The registered component ``name`` of ``kind``, built with validated ``params``."""
    cls = REGISTRY.get(kind, name)
    return cls(cls.Params(**params))


def attack(name, **params):
    return build("attack", name, **params)


def certifier(name, **params):
    return build("certifier", name, **params)


def linear_model(input_shape=(8, 8, 1), classes=4, seed=0):
    """A Flatten + Dense model with random weights: its exact minimal perturbations are known."""
    import keras

    rng = np.random.default_rng(seed)
    inputs = keras.Input(shape=input_shape)
    dense = keras.layers.Dense(classes, name="logits")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dim = int(np.prod(input_shape))
    dense.kernel.assign(rng.normal(size=(dim, classes)).astype(np.float32) * 0.3)
    dense.bias.assign(rng.normal(size=classes).astype(np.float32))
    return model


def exact_linear_radius(model, x, norm):
    """Closed-form minimal perturbation (without the box) of a linear model around its prediction:
    min_j (f_c - f_j) / ||w_c - w_j||_q with q the dual norm."""
    kernel = model.layers[-1].kernel.numpy().astype(np.float64)
    bias = model.layers[-1].bias.numpy().astype(np.float64)
    flat = x.reshape(len(x), -1).astype(np.float64)
    logits = flat @ kernel + bias
    predicted = logits.argmax(1)
    radii = np.full(len(x), np.inf)
    for j in range(kernel.shape[1]):
        diff = kernel[:, predicted] - kernel[:, [j]]
        dual = np.linalg.norm(diff, ord=2 if norm == "l2" else 1, axis=0)
        gap = logits[np.arange(len(x)), predicted] - logits[:, j]
        with np.errstate(divide="ignore", invalid="ignore"):
            candidate = np.where(predicted == j, np.inf, gap / dual)
        radii = np.minimum(radii, candidate)
    return predicted, radii


def trained_mlp(hidden=32, epochs=20, seed=0, activation="softplus"):
    """A small MLP trained on the digits (a few seconds on a CPU), and the test data."""
    import keras

    from advbench import load_dataset
    from advbench_plugins.architectures.basic import MLP

    keras.utils.set_random_seed(seed)
    data = load_dataset("digits")
    model = MLP(hidden=hidden, activation=activation).build(data.input_shape, data.num_classes)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=128, verbose=0)
    return model, data


def kill_midway(command, run_dir, records: int, timeout: float = 180) -> int:
    """Start ``advbench run`` (``command``), SIGKILL it once ``records`` job records exist in
    ``run_dir``, and return how many exist after it died (to check it died midway)."""
    import signal
    import subprocess
    import time

    victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    jobs, deadline = run_dir / "jobs", time.time() + timeout
    while time.time() < deadline and len(list(jobs.rglob("*.json"))) < records:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    return len(list(jobs.rglob("*.json")))
