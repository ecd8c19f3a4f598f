"""The architectures of the founding papers: `hein_mlp` (Hein & Andriushchenko 2017),
`madry_cnn` (Madry et al. 2018), `resnet32` (He et al. 2016, CIFAR variant, with a width
multiplier), `preact_resnet18` (He et al. 2016, the model of Wong et al. 2020), `ibp_small`
(Gowal et al. 2018, for certified training) and `gtsrb_cnn`, a compact CNN for 32x32
traffic signs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from advbench import Architecture, Params, hookimpl
from advbench.lazy import keras


class HeinMLPParams(Params):
    hidden: int = Field(1024, ge=1, description="Units in the hidden layer.")
    activation: Literal["softplus", "relu"] = Field("softplus", description="Hidden activation.")
    alpha: float = Field(10.0, gt=0, description="Softplus sharpness, as in the paper's code.")


class HeinMLP(Architecture):
    """One hidden layer of 1024 softplus units (alpha 10), as in Hein & Andriushchenko 2017."""

    Params = HeinMLPParams

    def build(self, input_shape, num_classes):
        from advbench.kit.layers import one_hidden_layer

        return one_hidden_layer(input_shape, num_classes, self.params.hidden, self.params.activation, self.params.alpha)


class MadryCNN(Architecture):
    """conv 32 (5x5) - max-pool - conv 64 (5x5) - max-pool - dense 1024 - logits (Madry et al. 2018)."""

    def build(self, input_shape, num_classes):
        inputs = keras.Input(shape=input_shape)
        h = keras.layers.Conv2D(32, 5, padding="same")(inputs)
        h = keras.layers.MaxPooling2D(2)(keras.layers.ReLU()(h))
        h = keras.layers.Conv2D(64, 5, padding="same")(h)
        h = keras.layers.MaxPooling2D(2)(keras.layers.ReLU()(h))
        h = keras.layers.ReLU()(keras.layers.Dense(1024)(keras.layers.Flatten()(h)))
        return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(h), name="madry_cnn")


class ResNetParams(Params):
    depth: int = Field(32, ge=8, description="6n + 2 layers (32: n = 5 basic blocks per stage).")
    width: int = Field(1, ge=1, le=16, description="Width multiplier of the 16/32/64 filters.")


class ResNet(Architecture):
    """The CIFAR ResNet of He et al. 2016 (6n + 2 layers, 16/32/64 filters times `width`, projection shortcuts)."""

    Params = ResNetParams

    def build(self, input_shape, num_classes):
        if (self.params.depth - 2) % 6:
            raise ValueError(f"resnet depth must be 6n + 2, got {self.params.depth}")
        blocks = (self.params.depth - 2) // 6
        inputs = keras.Input(shape=input_shape)
        h = self._conv_bn(inputs, 16 * self.params.width, 1)
        h = keras.layers.ReLU()(h)
        for stage, filters in enumerate(f * self.params.width for f in (16, 32, 64)):
            for block in range(blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                h = self._block(h, filters, strides)
        h = keras.layers.GlobalAveragePooling2D()(h)
        return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(h), name=f"resnet{self.params.depth}")

    @staticmethod
    def _conv_bn(h, filters, strides, size=3):
        h = keras.layers.Conv2D(filters, size, strides=strides, padding="same", use_bias=False)(h)
        return keras.layers.BatchNormalization()(h)

    def _block(self, h, filters, strides):
        shortcut = h
        out = keras.layers.ReLU()(self._conv_bn(h, filters, strides))
        out = self._conv_bn(out, filters, 1)
        if strides != 1 or h.shape[-1] != filters:
            shortcut = self._conv_bn(h, filters, strides, size=1)  # projection shortcut (option B)
        return keras.layers.ReLU()(keras.layers.Add()([out, shortcut]))


class PreActResNet18Params(Params):
    width: int = Field(64, ge=8, description="Filters of the first stage (then 2x, 4x, 8x).")


class PreActResNet18(Architecture):
    """PreAct ResNet-18 (He et al. 2016, identity mappings): the CIFAR-10 model of Wong et al. 2020's fast FGSM training."""

    Params = PreActResNet18Params

    def build(self, input_shape, num_classes):
        width = self.params.width
        inputs = keras.Input(shape=input_shape)
        h = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
        for stage, filters in enumerate((width, 2 * width, 4 * width, 8 * width)):
            for block in range(2):
                h = self._block(h, filters, 2 if stage > 0 and block == 0 else 1)
        h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
        h = keras.layers.GlobalAveragePooling2D()(h)
        return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(h), name="preact_resnet18")

    @staticmethod
    def _block(h, filters, strides):
        out = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
        shortcut = h
        if strides != 1 or h.shape[-1] != filters:
            shortcut = keras.layers.Conv2D(filters, 1, strides=strides, use_bias=False)(out)
        out = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(out)
        out = keras.layers.ReLU()(keras.layers.BatchNormalization()(out))
        out = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(out)
        return keras.layers.Add()([out, shortcut])


class GTSRBCNN(Architecture):
    """A compact CNN for 32x32 RGB traffic signs: two 3x3 conv pairs (32, 64) with max-pooling, dense 256, logits."""

    def build(self, input_shape, num_classes):
        inputs = keras.Input(shape=input_shape)
        h = inputs
        for filters in (32, 64):
            for _ in range(2):
                h = keras.layers.ReLU()(keras.layers.Conv2D(filters, 3, padding="same")(h))
            h = keras.layers.MaxPooling2D(2)(h)
        h = keras.layers.ReLU()(keras.layers.Dense(256)(keras.layers.Flatten()(h)))
        return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(h), name="gtsrb_cnn")


class IBPSmallParams(Params):
    filters: list[int] = Field([16, 32], min_length=2, max_length=2, description="Filters of the two 4x4 convolutions.")
    hidden: int = Field(100, ge=1, description="Units in the dense layer before the logits.")


class IBPSmall(Architecture):
    """conv 16 (4x4, stride 2) - conv 32 (4x4) - dense 100 - logits, ReLU, no pooling: the small model of Gowal et al. 2018 (CROWN-IBP's DM-small)."""

    Params = IBPSmallParams

    def build(self, input_shape, num_classes):
        inputs = keras.Input(shape=input_shape)
        h = keras.layers.ReLU()(keras.layers.Conv2D(self.params.filters[0], 4, strides=2, padding="valid")(inputs))
        h = keras.layers.ReLU()(keras.layers.Conv2D(self.params.filters[1], 4, padding="valid")(h))
        h = keras.layers.ReLU()(keras.layers.Dense(self.params.hidden)(keras.layers.Flatten()(h)))
        return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(h), name="ibp_small")


@hookimpl
def advbench_register_architectures(register):
    register("hein_mlp", HeinMLP)
    register("madry_cnn", MadryCNN)
    register("resnet32", ResNet)
    register("gtsrb_cnn", GTSRBCNN)
    register("preact_resnet18", PreActResNet18)
    register("ibp_small", IBPSmall)
