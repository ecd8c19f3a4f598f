"""`synthetic`: images from a known smooth generator, for which the robustness limit of
Fawzi, Fawzi & Fawzi (NeurIPS 2018) is known exactly.

``x = g(z) = 0.5 + 0.5 tanh(A z / s)`` with ``z ~ N(0, I_m)`` and A a fixed random
low-frequency basis (m images of size ``image_size``), s chosen so that g is exactly
``lipschitz``-Lipschitz from the latent Euclidean norm to the image l2 norm (tanh is
1-Lipschitz: ``L = 0.5 ||A||_2 / s``).  The class is the sector of the angle of
``(z_1, z_2)``, so each of the K classes has mass exactly 1/K.

Fawzi et al.: for *any* classifier, the share of points whose (in-distribution, hence
also unconstrained) robustness is at most eta is at least
``sum_i Phi(a_i + eta / L) - Phi(a_i)`` with ``a_i = Phi^{-1}(P(class != i))``; since
``||.||_inf <= ||.||_2`` the same holds for linf.  So no classifier's robust accuracy at
eps exceeds ``1 - sum_i [Phi(a_i + eps / L) - Phi(a_i)]`` (see
:func:`advbench.results.fawzi_limit`), which the leaderboard draws next to each model.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from advbench import Dataset, DatasetArrays, DatasetParams, hookimpl


class SyntheticParams(DatasetParams):
    latent_dim: int = Field(8, ge=2, description="Dimension m of the Gaussian latent.")
    classes: int = Field(4, ge=2, description="Number of classes (equal-angle sectors of (z1, z2)).")
    lipschitz: float = Field(1.0, gt=0, description="Lipschitz constant L of the generator (latent l2 to image l2).")
    image_size: int = Field(16, ge=4, description="Side of the square grey images.")
    train_examples: int = Field(6000, ge=10, description="Training examples drawn.")
    test_examples: int = Field(1000, ge=10, description="Test examples drawn.")
    generator_seed: int = Field(0, ge=0, description="Seed of the generator's basis and of the draws.")


class Synthetic(Dataset):
    """Images g(z) of a Gaussian latent through a known L-Lipschitz generator (Fawzi et al.'s robustness limit is known)."""

    Params = SyntheticParams

    def basis(self) -> np.ndarray:
        """A: (pixels, m) smooth random patterns (sums of low-frequency cosines)."""
        p = self.params
        rng = np.random.default_rng(p.generator_seed)
        grid = np.linspace(0, np.pi, p.image_size)
        rows, cols = np.meshgrid(grid, grid, indexing="ij")
        patterns = []
        for _ in range(p.latent_dim):
            image = np.zeros_like(rows)
            for _ in range(4):
                fy, fx = rng.integers(0, 4, size=2)
                image += rng.normal() * np.cos(fy * rows + rng.uniform(0, np.pi)) * np.cos(fx * cols + rng.uniform(0, np.pi))
            patterns.append(image.ravel())
        return np.stack(patterns, axis=1)

    def generate(self, z: np.ndarray) -> np.ndarray:
        A = self.basis()
        scale = 0.5 * np.linalg.norm(A, 2) / self.params.lipschitz
        images = 0.5 + 0.5 * np.tanh(z @ A.T / scale)
        size = self.params.image_size
        return images.reshape(len(z), size, size, 1).astype(np.float32)

    def label(self, z: np.ndarray) -> np.ndarray:
        angle = np.arctan2(z[:, 1], z[:, 0]) + np.pi
        return (np.floor(angle / (2 * np.pi) * self.params.classes).astype(np.int64)) % self.params.classes

    def load(self) -> DatasetArrays:
        p = self.params
        rng = np.random.default_rng(p.generator_seed + 1)
        z_train = rng.normal(size=(p.train_examples, p.latent_dim))
        z_test = rng.normal(size=(p.test_examples, p.latent_dim))
        return DatasetArrays(
            x_train=self.generate(z_train),
            y_train=self.label(z_train),
            x_test=self.generate(z_test),
            y_test=self.label(z_test),
            num_classes=p.classes,
            class_names=[f"sector {k}" for k in range(p.classes)],
            info={
                "generator": "0.5 + 0.5 tanh(A z / s)",
                "fawzi": {"lipschitz": p.lipschitz, "class_masses": [1 / p.classes] * p.classes},
            },
        )


@hookimpl
def advbench_register_datasets(register):
    register("synthetic", Synthetic)
