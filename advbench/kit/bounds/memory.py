"""How much memory a bound computation needs per example (to size sub-batches)."""

from __future__ import annotations

from advbench.kit.bounds.crown import Crown
from advbench.kit.bounds.graph import node_sizes

# Working tensors alive at once per element of the widest backward pass (the coefficients,
# their positive and negative parts, the relaxed ones, a transpose's probe and gradient,
# and what the framework keeps between operations): measured on TensorFlow, the most
# demanding backend (a CNN on 8x8 inputs: 18 per element), with a margin.
LIVE_COPIES = 24


def bytes_per_example(nodes, classes: int, crown_neurons: int | None, optimized: bool = False) -> int:
    """Memory one example needs in a bound computation: IBP (``crown_neurons=None``) folds
    the classes' margins into the widest layer; CROWN propagates 2n rows back through
    every layer before each of its CROWN-bounded nodes (n neurons each), and the margins
    through all layers; optimized slopes (``optimized``, alpha-CROWN) keep every layer's
    coefficients of the margins' pass for the gradient."""
    sizes = node_sizes(nodes)
    widest = max(sizes.values())
    if crown_neurons is None:  # boxes of every layer, and the margins' weights on the logits layer's input
        return 4 * (8 * widest + 3 * classes * sizes[nodes[-1].inputs[0]])
    passes = [classes * (sum(sizes.values()) if optimized else widest)]
    crown = Crown(nodes, crown_neurons)
    for k in range(len(nodes) - 1):
        if crown.crown_bounded(k):
            passes.append(2 * sizes[k] * max(size for index, size in sizes.items() if index <= k))
    return 4 * LIVE_COPIES * max(passes)


def available_bytes() -> int:
    """The memory this machine has available now (Linux: MemAvailable), else its physical memory."""
    import os

    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def require_memory(per_example: int, what: str) -> None:
    """Refuse, before allocating anything, a bound computation whose own estimate for one
    example exceeds the memory available: the process would be killed without a word."""
    from advbench.errors import AdvbenchError

    def size(n: int) -> str:
        return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n:,} bytes"

    available = available_bytes()
    if per_example > available:
        raise AdvbenchError(
            f"{what}: one example needs about {size(per_example)} by advbench's estimate, and {size(available)} "
            "is available; lower max_neurons (CROWN-bounded layers) or use a smaller model"
        )
