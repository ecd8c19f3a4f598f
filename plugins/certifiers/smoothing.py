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
from scipy.stats import beta, norm as gaussian

from advbench import Certifier, Params, hookimpl
from advbench.lazy import tf


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

    def counts(self, target, x, samples, generator):
        """Class votes of the base classifier under noise, per example: (B, K).  All
        examples of the batch are sampled together, ``batch`` noisy inputs per pass."""
        counts = np.zeros((len(x), target.num_classes), dtype=np.int64)
        per_pass = max(1, self.params.batch // len(x))
        base = tf.constant(x)
        done = 0
        while done < samples:
            size = min(per_pass, samples - done)
            tiled = tf.repeat(base, size, axis=0)
            noisy = tiled + self.params.sigma * generator.normal(tf.shape(tiled))
            labels = np.argmax(target.logits(noisy).numpy(), axis=1).reshape(len(x), size)
            counts += (labels[:, :, None] == np.arange(target.num_classes)).sum(axis=1)
            done += size
        return counts

    def certify(self, target, x, y, norm):
        x = np.asarray(x, np.float32)
        seed = int.from_bytes(hashlib.sha256(x.tobytes()).digest()[:4], "little")
        generator = tf.random.Generator.from_seed(seed)
        top = self.counts(target, x, self.params.n0, generator).argmax(axis=1)
        estimate = self.counts(target, x, self.params.n, generator)
        votes = estimate[np.arange(len(x)), top]
        p_lower = np.where(votes > 0, beta.ppf(self.params.alpha, votes, self.params.n - votes + 1), 0.0)
        prediction = np.where(p_lower > 0.5, top, -1)  # -1: abstain
        radius = np.where((prediction == np.asarray(y)), self.params.sigma * gaussian.ppf(np.clip(p_lower, 0.5, 1 - 1e-16)), 0.0)
        return radius, {"prediction": prediction}


@hookimpl
def advbench_register_certifiers(register):
    register("smoothing", Smoothing)
