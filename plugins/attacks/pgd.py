"""`pgd`: projected gradient descent with random restarts (Madry et al. 2018), linf and l2.

The implementation is :class:`advbench.kit.pgd.PGD`, shared with `fgsm`, `masked_pgd`,
`transfer` and PGD adversarial training.
"""

from __future__ import annotations

from advbench import hookimpl
from advbench.kit.pgd import PGD


@hookimpl
def advbench_register_attacks(register):
    register("pgd", PGD)
