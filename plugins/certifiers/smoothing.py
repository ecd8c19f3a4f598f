"""Randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019), l2.

The smoothed classifier ``g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c)`` is certified by
CERTIFY: ``n0`` noisy samples pick the top class c; ``n`` fresh samples count ``nA``
votes for c; ``pA`` is the one-sided Clopper-Pearson lower confidence bound at level
``1 - alpha``; below 1/2 the certifier abstains (not certified), else the radius is
``sigma * Phi^{-1}(pA)``.  The radius certifies g, not the base network, and holds with
probability at least ``1 - alpha``: results and the leaderboard label it so, and keep it
apart from the certificates of the network itself.  The noise is sampled in batches.
Randomized defenses are welcome: their randomness sits inside the base classifier.
"""

from __future__ import annotations

import hashlib

import numpy as np
from pydantic import Field
from scipy.stats import beta
from scipy.stats import norm as gaussian

from advbench import Certifier, Params, hookimpl
from advbench.kit import backend, rng
from advbench.lazy import keras


class SmoothingParams(Params):
    sigma: float = Field(0.25, gt=0, description="Standard deviation of the Gaussian noise.")
    n0: int = Field(100, ge=1, description="Samples that select the top class.")
    n: int = Field(10000, ge=1, description="Samples that estimate its probability (Cohen et al. use 100,000).")
    alpha: float = Field(0.001, gt=0, lt=1, description="Failure probability of the certificate.")
    batch: int = Field(1000, ge=1, description="Noisy samples per forward pass.")


class Smoothing(Certifier):
    """Randomized smoothing CERTIFY (Cohen et al. 2019): l2 radius of the smoothed classifier, with probability 1 - alpha."""

    Params = SmoothingParams
    norms = ("l2",)
    probabilistic = True
    certifies_smoothed = True
    supports_randomized = True

    def _votes(self, target):
        """Compiled: the base classifier's labels of ``copies`` noisy copies of each example."""
        key = id(target)
        if getattr(self, "_compiled_for", None) != key:
            ops = keras.ops
            sigma = self.params.sigma

            def labels(tiled, seed):
                noisy = tiled + sigma * rng.normal(ops.shape(tiled), seed)
                return ops.argmax(target.logits(noisy), axis=1)

            self._compiled_for, self._labels = key, target.compile(labels, batch_args=(0,))
        return self._labels

    def counts(self, target, x, samples, seed):
        """Class votes of the base classifier under noise, per example: (B, K).  All
        examples of the batch are sampled together, ``batch`` noisy inputs per pass."""
        labels_of = self._votes(target)
        counts = np.zeros((len(x), target.num_classes), dtype=np.int64)
        per_pass = max(1, self.params.batch // len(x))
        done = 0
        while done < samples:
            size = min(per_pass, samples - done)
            tiled = np.repeat(x, size, axis=0)
            labels = backend.to_numpy(labels_of(tiled, rng.seed(seed, done))).reshape(len(x), size)
            counts += (labels[:, :, None] == np.arange(target.num_classes)).sum(axis=1)
            done += size
        return counts

    def certify(self, target, x, y, norm):
        x = np.asarray(x, np.float32)
        seed = int.from_bytes(hashlib.sha256(x.tobytes()).digest()[:4], "little") % (2**31 - 1)
        top = self.counts(target, x, self.params.n0, seed).argmax(axis=1)
        estimate = self.counts(target, x, self.params.n, seed + 1)
        votes = estimate[np.arange(len(x)), top]
        p_lower = np.where(votes > 0, beta.ppf(self.params.alpha, votes, self.params.n - votes + 1), 0.0)
        prediction = np.where(p_lower > 0.5, top, -1)  # -1: abstain
        radius = np.where((prediction == np.asarray(y)), self.params.sigma * gaussian.ppf(np.clip(p_lower, 0.5, 1 - 1e-16)), 0.0)
        return radius, {"prediction": prediction}


@hookimpl
def advbench_register_certifiers(register):
    register("smoothing", Smoothing)
