"""How uncertain a robust accuracy measured on n examples is, and which ranks it can separate.

Every accuracy advbench reports is a share k/n of the evaluated test examples, an
estimate of the model's accuracy on the distribution they were drawn from.  Its 95%
interval is the Clopper-Pearson ("exact") binomial interval: conservative (it covers
the true value at least 95% of the time for every n and accuracy), where the normal
approximation fails at 0% and 100%, which robust accuracies often are.

Two models are ranked apart only when their intervals do not overlap; a model's *rank
range* is every rank it could take among models it cannot be separated from.
"""

from __future__ import annotations

import numpy as np

CONFIDENCE = 0.95


def clopper_pearson(k, n, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """The two-sided ``confidence`` interval of a binomial proportion with ``k`` successes
    in ``n`` trials (arrays broadcast): the alpha/2 and 1 - alpha/2 quantiles of
    Beta(k, n - k + 1) and Beta(k + 1, n - k), 0 at k = 0 and 1 at k = n."""
    from scipy.stats import beta

    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    alpha = 1 - confidence
    with np.errstate(invalid="ignore"):
        lower = np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        upper = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    return lower, upper


def rank_ranges(lower, upper) -> list[tuple[int, int]]:
    """For models listed in ranked order with intervals ``[lower, upper]`` of the ranking
    accuracy: each one's best and worst rank (1-based).  A model is certainly behind every
    model whose lower end is above its upper end, and certainly ahead of every model whose
    upper end is below its lower end; its rank can be anything in between."""
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    ranges = []
    for i in range(len(lower)):
        ahead = int(np.sum(lower > upper[i]))  # surely better than model i
        behind = int(np.sum(upper < lower[i]))  # surely worse
        ranges.append((ahead + 1, len(lower) - behind))
    return ranges
