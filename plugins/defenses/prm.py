"""`prm`: the pixel robustness manipulator (Hwang et al. 2019).

A front module whose first convolution sees only a designated share of the pixels (25% by
default, fixed by `mask_seed`); the classifier sees ``(1 - lambda) x + lambda PRM(x)``, so
as lambda grows the input gradients concentrate on the designated pixels.  PRM is a small
convolutional auto-encoder trained jointly, with a reconstruction loss (as in the authors'
"ACE" code).  With `random_pixels` the designated pixels are re-drawn at every inference
call, which makes the model randomized (attacked with EOT).

Diagnostics recorded with the results: the mean absolute input-gradient heatmap over the
evaluated test examples (PNG) and the IoU between its top share of pixels and the
designated pixels.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from advbench import Defense, Params, hookimpl
from advbench.lazy import keras


class PRMParams(Params):
    lambda_: float = Field(
        0.5, ge=0, le=1, alias="lambda", description="Blend: the classifier sees (1 - lambda) x + lambda PRM(x)."
    )
    share: float = Field(0.25, gt=0, lt=1, description="Share of pixels the first convolution connects to.")
    filters: int = Field(16, ge=1, description="Filters of the PRM's hidden convolution.")
    reconstruction: float = Field(1.0, ge=0, description="Weight of the PRM's reconstruction loss ||PRM(x) - x||^2.")
    random_pixels: bool = Field(
        False, description="Re-draw the designated pixels at random at every inference call (randomized model)."
    )
    mask_seed: int = Field(0, ge=0, description="Seed of the designated pixels.")


class PRM(Defense):
    """Pixel robustness manipulator: a sparse-input front module blended with the input (Hwang et al. 2019)."""

    Params = PRMParams

    def mask(self, input_shape) -> np.ndarray:
        """The designated pixels (H, W, 1) of 0/1, the same for every channel."""
        height, width = input_shape[:2]
        rng = np.random.default_rng(self.params.mask_seed)
        chosen = rng.choice(height * width, int(round(self.params.share * height * width)), replace=False)
        mask = np.zeros(height * width, np.float32)
        mask[chosen] = 1.0
        return mask.reshape(height, width, 1)

    def prepare_model(self, model):
        from advbench.kit.layers import Blend, FixedMask

        shape = model.input_shape[1:]
        inputs = keras.Input(shape)
        masked = FixedMask(self.mask(shape), name="designated_pixels")(inputs)
        prm = self._front(shape)
        blended = Blend(self.params.lambda_, name="blend")([inputs, prm(masked)])
        return keras.Model(inputs, model(blended), name=f"{model.name}_prm")

    def _front(self, shape):
        inputs = keras.Input(shape)
        hidden = keras.layers.Conv2D(self.params.filters, 3, padding="same", activation="relu", name="prm_sparse_conv")(inputs)
        output = keras.layers.Conv2D(shape[-1], 3, padding="same", activation="sigmoid", name="prm_decode")(hidden)
        return keras.Model(inputs, output, name="prm")

    def regularizer(self, model, x, y, logits):
        if not self.params.reconstruction:
            return None
        prm = model.get_layer("prm")
        masked = model.get_layer("designated_pixels")(x)
        return self.params.reconstruction * keras.ops.mean(keras.ops.square(prm(masked, training=True) - x))

    def inference_model(self, model):
        if not self.params.random_pixels:
            return model
        from advbench.kit.layers import Blend, RandomPixelMask

        classifier = model.layers[-1]
        prm = model.get_layer("prm")
        inputs = keras.Input(model.input_shape[1:])
        masked = RandomPixelMask(self.params.share, name="random_pixels")(inputs)
        blended = Blend(self.params.lambda_, name="blend")([inputs, prm(masked)])
        return keras.Model(inputs, classifier(blended), name=f"{model.name}_random_pixels")

    def randomized(self) -> bool:
        return self.params.random_pixels

    def diagnostics(self, target, x, y, directory, stem):
        from advbench.kit.boundary import gradient_heatmap

        heatmap = gradient_heatmap(target, x, y)
        mask = self.mask(x.shape[1:])[..., 0] > 0
        iou = top_share_iou(heatmap, mask, self.params.share)
        name = f"{stem}-gradients.png"
        draw_heatmap(heatmap, mask, directory / name, f"mean |input gradient|; IoU with the designated pixels {iou:.2f}")
        return {"gradient_iou": iou, "designated_share": self.params.share, "figures": [name]}


def top_share_iou(heatmap: np.ndarray, mask: np.ndarray, share: float) -> float:
    """IoU between the top ``share`` of heatmap pixels and the boolean ``mask``."""
    count = int(round(share * heatmap.size))
    top = np.zeros(heatmap.size, bool)
    top[np.argsort(-heatmap.ravel(), kind="stable")[:count]] = True
    top = top.reshape(heatmap.shape)
    return float((top & mask).sum() / max(1, (top | mask).sum()))


def draw_heatmap(heatmap, mask, path, title) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(6, 3), dpi=120)
    axes[0].imshow(heatmap, cmap="hot")
    axes[0].set_title("mean |gradient|", fontsize=8)
    axes[1].imshow(mask, cmap="gray")
    axes[1].set_title("designated pixels", fontsize=8)
    for axis in axes:
        axis.axis("off")
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


@hookimpl
def advbench_register_defenses(register):
    register("prm", PRM)
