"""`gaussian_noise`: training with Gaussian noise augmentation (the usual base model for
randomized smoothing, Cohen et al. 2019)."""

from __future__ import annotations

from pydantic import Field

from advbench import Defense, Params, hookimpl
from advbench.kit import rng
from advbench.lazy import keras


class GaussianNoiseParams(Params):
    sigma: float = Field(
        0.25, gt=0, description="Standard deviation of the noise added to every training input (not clipped, as in smoothing)."
    )


class GaussianNoise(Defense):
    """Train on inputs plus N(0, sigma^2) noise; evaluate the plain network."""

    Params = GaussianNoiseParams

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self._stream = None

    @property
    def variables(self) -> list:
        if self._stream is None:
            self._stream = (rng.default_seed(), rng.counter())  # the base seed comes from the job's seed
        return [self._stream[1]]

    def training_batch(self, model, x, y):
        self.variables  # noqa: B018 (creates the stream outside compiled code on first use)
        return x + self.params.sigma * rng.normal(keras.ops.shape(x), rng.next_seed(*self._stream)), y


@hookimpl
def advbench_register_defenses(register):
    register("gaussian_noise", GaussianNoise)
