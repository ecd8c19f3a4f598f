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


def exact_linf_radius_relu(model, x, label):
    """The exact minimal linf perturbation (in [0, 1]) that makes some class j tie or beat
    ``label`` on a ReLU MLP (Dense layers, ReLU between them), by mixed-integer linear
    programming (scipy's milp, HiGHS): one program per class j, minimize t subject to
    |x' - x| <= t and logit_j(x') >= logit_label(x'), each ReLU a = max(z, 0) in the big-M
    encoding with z's interval bounds over the whole box (a >= z, a >= 0, a <= z - l (1 - s),
    a <= u s, s binary).  Independent of advbench's bound engine."""
    import keras
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import lil_matrix

    layers = [
        (d.kernel.numpy().astype(np.float64), d.bias.numpy().astype(np.float64))
        for d in model.layers
        if isinstance(d, keras.layers.Dense)
    ]
    x = np.asarray(x, np.float64).reshape(-1)
    dim = len(x)
    low, high, boxes = np.zeros(dim), np.ones(dim), []
    for W, b in layers[:-1]:
        center, radius = (low + high) / 2, (high - low) / 2
        boxes.append((center @ W + b - radius @ np.abs(W), center @ W + b + radius @ np.abs(W)))
        low, high = np.maximum(boxes[-1][0], 0), np.maximum(boxes[-1][1], 0)
    widths = [W.shape[1] for W, _ in layers[:-1]]
    variables = dim + 1 + 3 * sum(widths)  # x', t, then per hidden layer z, a, s
    lower, upper, integral = np.zeros(variables), np.ones(variables), np.zeros(variables)
    rows, row_low, row_high = lil_matrix((2 * dim + 4 * sum(widths) + 1, variables)), [], []

    def row(entries, lo, hi):
        for column, value in entries:
            rows[len(row_low), column] = value
        row_low.append(lo)
        row_high.append(hi)

    for i in range(dim):
        row([(i, 1.0), (dim, -1.0)], -np.inf, x[i])
        row([(i, 1.0), (dim, 1.0)], x[i], np.inf)
    previous, base = list(range(dim)), dim + 1
    for (W, b), (l, u), width in zip(layers[:-1], boxes, widths):
        z, a, s = base, base + width, base + 2 * width
        lower[z : z + width], upper[z : z + width] = l, u
        upper[a : a + width] = np.maximum(u, 0)
        integral[s : s + width] = 1
        for k in range(width):
            row([(i, v) for i, v in zip(previous, W[:, k])] + [(z + k, -1.0)], -b[k], -b[k])
            row([(a + k, 1.0), (z + k, -1.0)], 0.0, np.inf)
            row([(a + k, 1.0), (z + k, -1.0), (s + k, -l[k])], -np.inf, -l[k])
            row([(a + k, 1.0), (s + k, -max(u[k], 0.0))], -np.inf, 0.0)
        previous, base = list(range(a, a + width)), base + 3 * width
    head = len(row_low)
    row([], 0.0, np.inf)  # the class's margin, filled per class
    W, b = layers[-1]
    cost = np.zeros(variables)
    cost[dim] = 1.0
    best = np.inf
    for j in range(W.shape[1]):
        if j == label:
            continue
        for i, v in zip(previous, W[:, j] - W[:, label]):
            rows[head, i] = v
        row_low[head] = b[label] - b[j]
        upper[dim] = min(1.0, best)  # only a smaller radius than the best so far matters
        result = milp(
            cost,
            constraints=LinearConstraint(rows.tocsr(), row_low, row_high),
            integrality=integral,
            bounds=Bounds(lower, upper),
            options={"mip_rel_gap": 1e-9},
        )
        if result.status == 0:
            best = min(best, result.x[dim])
    return best
