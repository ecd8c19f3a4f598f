"""Masked PGD (Hwang et al. 2019): PGD whose perturbation is restricted to a pixel mask,
``x_adv = x + M * delta``: the top or bottom share of pixels ranked by the mean absolute
input gradient over the evaluated examples, or a mask from a file (.npy, H x W, 0/1).
It shows where a model's robustness lives, e.g. behind a PRM's designated pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from advbench import SPEC_FILE, hookimpl
from advbench.kit.pgd import PGD, PGDParams


class MaskedPGDParams(PGDParams):
    pixels: Literal["top", "bottom", "file"] = Field(
        "top", description="Which pixels may change: highest or lowest mean |gradient|, or `mask_file`."
    )
    share: float = Field(0.25, gt=0, le=1, description="Share of pixels in the mask (top/bottom).")
    mask_file: str | None = Field(
        None,
        min_length=1,
        json_schema_extra=SPEC_FILE,
        description="A .npy array (H x W) of 0/1 giving the pixels that may change (pixels: file), relative to the spec.",
    )


class MaskedPGD(PGD):
    """PGD restricted to a pixel mask: top/bottom share by mean |input gradient|, or a given mask (Hwang et al. 2019)."""

    Params = MaskedPGDParams

    @classmethod
    def check_spec(cls, params, spec):
        if params.pixels == "file":
            if not params.mask_file:
                return "pixels: file needs a mask_file"
            if not Path(params.mask_file).is_file():
                return f"mask_file not found: {params.mask_file}"
        return None

    def prepare(self, target, x, y, context):
        from advbench.kit.boundary import gradient_heatmap

        if self.params.pixels == "file":
            mask = np.load(self.params.mask_file).astype(np.float32)
            if mask.shape != x.shape[1:3]:
                raise ValueError(f"mask_file has shape {mask.shape}, the images are {x.shape[1:3]}")
        else:
            heatmap = gradient_heatmap(target, x, y)
            count = int(round(self.params.share * heatmap.size))
            order = np.argsort(-heatmap.ravel() if self.params.pixels == "top" else heatmap.ravel(), kind="stable")
            mask = np.zeros(heatmap.size, np.float32)
            mask[order[:count]] = 1.0
            mask = mask.reshape(heatmap.shape)
        self.pixel_mask = mask[..., None]
        self.forget_targets()  # the compiled steps baked in the old mask


@hookimpl
def advbench_register_attacks(register):
    register("masked_pgd", MaskedPGD)
