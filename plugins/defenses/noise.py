"""`gaussian_noise`: training with Gaussian noise augmentation (the usual base model for
randomized smoothing, Cohen et al. 2019)."""

from __future__ import annotations

from pydantic import Field

from advbench import Defense, Params, hookimpl
from advbench.lazy import tf


class GaussianNoiseParams(Params):
    sigma: float = Field(0.25, gt=0, description="Standard deviation of the noise added to every training input (not clipped, as in smoothing).")


class GaussianNoise(Defense):
    """Train on inputs plus N(0, sigma^2) noise; evaluate the plain network."""

    Params = GaussianNoiseParams

    def training_batch(self, model, x, y):
        return x + self.params.sigma * tf.random.normal(tf.shape(x)), y


@hookimpl
def advbench_register_defenses(register):
    register("gaussian_noise", GaussianNoise)
