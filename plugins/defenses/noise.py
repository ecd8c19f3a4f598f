"""`gaussian_noise`: training with Gaussian noise augmentation (the usual base model for
randomized smoothing, Cohen et al. 2019)."""

from __future__ import annotations

from pydantic import Field

from advbench import Defense, Params, hookimpl
from advbench.lazy import keras


class GaussianNoiseParams(Params):
    sigma: float = Field(0.25, gt=0, description="Standard deviation of the noise added to every training input (not clipped, as in smoothing).")


class GaussianNoise(Defense):
    """Train on inputs plus N(0, sigma^2) noise; evaluate the plain network."""

    Params = GaussianNoiseParams

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self._seeds = None

    @property
    def variables(self) -> list:
        if self._seeds is None:
            self._seeds = keras.random.SeedGenerator()  # seeded from the job's seed
        return [self._seeds.state]

    def training_batch(self, model, x, y):
        self.variables  # noqa: B018 (creates the seed generator outside compiled code on first use)
        return x + self.params.sigma * keras.random.normal(keras.ops.shape(x), seed=self._seeds), y


@hookimpl
def advbench_register_defenses(register):
    register("gaussian_noise", GaussianNoise)
