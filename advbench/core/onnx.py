"""ONNX networks as Keras models the bound engine reads, checked against onnxruntime.

The importer maps each ONNX operator onto plain Keras layers (Dense, Conv2D, ReLU,
Rescaling, BatchNormalization, pooling, Add), so every attack and every certifier applies
to the result.  advbench feeds NHWC images in [0, 1]; an ONNX network that takes NCHW
images keeps its layout in the weights instead (convolution kernels transposed to
channels-last; the first dense layer after a flatten takes its rows in NHWC order), and a
network that takes a flat vector (``[1, 784, 1]``) gets the image flattened in row-major
order.  A leading Sub/Div (an input normalisation) becomes a Rescaling layer, so the
threat model stays in pixel space.  A final Softmax is left out: the model returns its
input, the logits.

Nothing outside :data:`SUPPORTED` is imported: an operator or attribute advbench does not
reproduce is refused naming the node.  Every import is checked against onnxruntime on
random points of [0, 1]: outputs within :data:`TOLERANCE` relative, else an error.

Needs the ``onnx`` extra (``pip install -e ".[onnx]"``); imported only when a model is an
ONNX file.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from advbench.errors import AdvbenchError
from advbench.lazy import keras

SUPPORTED = (
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Constant",
    "Conv",
    "Div",
    "Flatten",
    "Gemm",
    "GlobalAveragePool",
    "Identity",
    "MatMul",
    "MaxPool",
    "Mul",
    "Relu",
    "Reshape",
    "Sigmoid",
    "Softmax",
    "Sub",
    "Tanh",
)
"""The ONNX operators the importer reproduces exactly (Softmax only as the last node)."""

TOLERANCE = 1e-5
"""The largest difference from onnxruntime's outputs, relative to their largest magnitude (at least 1)."""


def is_onnx(path) -> bool:
    """Whether ``path`` names an ONNX file (``.onnx``, or ``.onnx.gz`` as VNN-COMP ships them)."""
    name = str(path).lower()
    return name.endswith(".onnx") or name.endswith(".onnx.gz")


def read_proto(path: str | Path):
    """The ONNX model in ``path`` (gzip-compressed or not), or an :class:`AdvbenchError`
    naming the file and what is wrong with it."""
    try:
        import onnx
    except ImportError:
        raise AdvbenchError(f'{path}: reading ONNX models needs the onnx extra: pip install "advbench[onnx]"') from None
    path = Path(path)
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        proto = onnx.load_from_string(data)
    except OSError as exc:
        raise AdvbenchError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except Exception as exc:  # a truncated or foreign file: protobuf's DecodeError and others
        raise AdvbenchError(f"{path}: not an ONNX model ({type(exc).__name__}: {exc})") from None
    if not len(proto.graph.node):
        raise AdvbenchError(f"{path}: not an ONNX model (its graph has no nodes)")
    return proto


@dataclass
class _Tensor:
    """An ONNX tensor as the importer holds it: a Keras tensor, and how its data is laid out
    against the ONNX one: ``nchw`` (an NCHW tensor held NHWC), ``flat`` (the same data in
    row-major order, batch first) with ``order`` the ONNX index of each Keras feature."""

    value: object
    layout: str  # "nchw" | "flat"
    shape: tuple  # the ONNX shape without the batch dimension
    order: np.ndarray | None = None


def load_onnx(
    path: str | Path, input_shape: tuple | None = None, check_points: int = 64, seed: int = 0, normalization: dict | None = None
):
    """The ONNX network at ``path`` as a Keras model on NHWC images of ``input_shape`` in
    [0, 1] (default: read from a network that takes NCHW images), checked against
    onnxruntime on ``check_points`` random images.  ``normalization`` (``{"mean": [...],
    "std": [...]}``, per channel or one value): the network takes ``(x - mean) / std``; the
    model gets it as its first layer."""
    proto = read_proto(path)
    if input_shape is None:
        dims = input_dims(proto)
        if len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
            raise AdvbenchError(
                f"{path}: its input is {dims}, not NCHW images: give the images' input_shape (height, width, channels)"
            )
        input_shape = (dims[2], dims[3], dims[1])
    shape = tuple(int(d) for d in input_shape)
    scale, offset = _normalization(Path(path), normalization, shape[-1])
    return import_checked(proto, Path(path), shape, check_points, seed, scale, offset)


def import_checked(proto, path: Path, input_shape: tuple, check_points: int, seed: int = 0, scale=None, offset=None):
    """``proto`` imported as a Keras model on NHWC images of ``input_shape`` (with the
    Rescaling ``scale``, ``offset`` first, where given) and checked against onnxruntime."""
    model = _Importer(proto, path, input_shape, scale, offset).build()
    check_against_onnxruntime(proto, model, path, input_shape, check_points, seed, scale, offset)
    return model


def graph_inputs(proto) -> list:
    """The graph's real inputs (those that are not initializers, as older exporters list them)."""
    constants = {init.name for init in proto.graph.initializer}
    return [value for value in proto.graph.input if value.name not in constants]


def input_dims(proto) -> list:
    """The first real input's dimensions (an int, or None where dynamic)."""
    inputs = graph_inputs(proto)
    if not inputs:
        return []
    return [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]


def _normalization(path: Path, normalization: dict | None, channels: int):
    """(scale, offset) per channel of x * scale + offset = (x - mean) / std, or (None, None)."""
    if not normalization:
        return None, None
    mean, std = (np.asarray(normalization[k], np.float64).reshape(-1) for k in ("mean", "std"))
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise AdvbenchError(
                f"{path}: normalization {name}: {len(values)} values for {channels} channels (give 1 or {channels})"
            )
    if not np.all(std > 0):
        raise AdvbenchError(f"{path}: normalization std: every value must be > 0")
    scale = np.broadcast_to(1.0 / std, (channels,)).astype(np.float32)
    return scale, np.broadcast_to(-mean / std, (channels,)).astype(np.float32)


class _Importer:
    def __init__(self, proto, path: Path, input_shape: tuple, scale=None, offset=None):
        from onnx import numpy_helper

        self.proto, self.path, self.input_shape = proto, path, input_shape
        self.scale, self.offset = scale, offset
        graph = proto.graph
        self.constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        for name, array in self.constants.items():
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                raise AdvbenchError(f"{path}: initializer {name!r} holds NaN or infinite weights")
        inputs = graph_inputs(proto)
        if len(inputs) != 1:
            raise AdvbenchError(
                f"{path}: the graph has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); advbench reads networks of one input"
            )
        if len(graph.output) != 1:
            raise AdvbenchError(
                f"{path}: the graph has {len(graph.output)} outputs; advbench reads networks of one output (logits)"
            )
        self.input = inputs[0]
        self.output = graph.output[0].name
        self.tensors: dict[str, _Tensor] = {}
        self.count = 0
        self.uses: dict[str, int] = {self.output: 1}
        for node in graph.node:
            for name in node.input:
                self.uses[name] = self.uses.get(name, 0) + 1
        self.dense_layers: dict[str, object] = {}  # a Dense layer's output tensor name -> the layer

    def name(self, node) -> str:
        self.count += 1
        return f"onnx_{self.count}_{''.join(c if c.isalnum() else '_' for c in (node.name or node.op_type))}"[:60]

    def refuse(self, node, what: str):
        raise AdvbenchError(
            f"{self.path}: node {node.name or '(unnamed)'!r} ({node.op_type}): {what} (advbench imports: {', '.join(SUPPORTED)})"
        )

    def build(self):
        dims = input_dims(self.proto)
        inputs = keras.Input(self.input_shape, name="image")
        height, width, channels = self.input_shape
        image = inputs
        if self.scale is not None:  # the stated normalisation, as the first layer
            image = keras.layers.Rescaling(self.scale, self.offset, name="onnx_normalization")(inputs)
        if any(d is None or d <= 0 for d in dims[1:]):
            raise AdvbenchError(f"{self.path}: input {self.input.name!r} has a dynamic shape {dims}; advbench needs fixed sizes")
        shape = tuple(dims[1:])
        if shape == (channels, height, width):
            self.tensors[self.input.name] = _Tensor(image, "nchw", shape)
        elif int(np.prod(shape)) == height * width * channels and (len(shape) < 3 or shape[0] == 1 or channels == 1):
            flat = keras.layers.Flatten(name="onnx_input_flatten")(image)
            self.tensors[self.input.name] = _Tensor(flat, "flat", shape)
        else:
            raise AdvbenchError(
                f"{self.path}: input {self.input.name!r} of shape {dims} does not fit the dataset's images "
                f"{self.input_shape} (NHWC): expected [1, {channels}, {height}, {width}] or {height * width * channels} values"
            )
        nodes = list(self.proto.graph.node)
        for k, node in enumerate(nodes):
            if node.op_type not in SUPPORTED:
                self.refuse(node, "this operator is not supported")
            if node.op_type == "Softmax":
                if k != len(nodes) - 1:
                    self.refuse(node, "Softmax is read only as the last node (the model's logits are its input)")
                self.tensors[node.output[0]] = self.tensor(node, node.input[0])
                continue
            getattr(self, f"op_{node.op_type}")(node)
        out = self.tensors.get(self.output)
        if out is None or out.layout != "flat" or len(out.shape) != 1:
            raise AdvbenchError(f"{self.path}: the output {self.output!r} is not a vector of logits per example")
        return keras.Model(inputs, out.value, name=self.path.name.split(".")[0].replace("-", "_"))

    # -- helpers -------------------------------------------------------------------

    def tensor(self, node, name) -> _Tensor:
        if name not in self.tensors:
            self.refuse(node, f"input {name!r} is not computed from the network's input (constant subgraphs are not read)")
        return self.tensors[name]

    def constant(self, node, name) -> np.ndarray | None:
        return self.constants.get(name)

    @staticmethod
    def attributes(node) -> dict:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def set(self, node, value, layout, shape, order=None):
        self.tensors[node.output[0]] = _Tensor(value, layout, tuple(shape), order)

    # -- operators -----------------------------------------------------------------

    def op_Identity(self, node):
        self.tensors[node.output[0]] = self.tensor(node, node.input[0])

    def op_Constant(self, node):
        from onnx import numpy_helper

        value = self.attributes(node).get("value")
        if value is None:
            self.refuse(node, "only a Constant with a tensor `value` is supported")
        self.constants[node.output[0]] = numpy_helper.to_array(value)

    def op_Relu(self, node):
        x = self.tensor(node, node.input[0])
        self.set(node, keras.layers.ReLU(name=self.name(node))(x.value), x.layout, x.shape, x.order)

    def op_Sigmoid(self, node):
        x = self.tensor(node, node.input[0])
        self.set(node, keras.layers.Activation("sigmoid", name=self.name(node))(x.value), x.layout, x.shape, x.order)

    def op_Tanh(self, node):
        x = self.tensor(node, node.input[0])
        self.set(node, keras.layers.Activation("tanh", name=self.name(node))(x.value), x.layout, x.shape, x.order)

    def op_Flatten(self, node):
        x = self.tensor(node, node.input[0])
        if self.attributes(node).get("axis", 1) != 1:
            self.refuse(node, "only axis 1 is supported (keep the batch dimension)")
        self.flatten(node, x)

    def op_Reshape(self, node):
        x = self.tensor(node, node.input[0])
        target = self.constant(node, node.input[1])
        if target is None:
            self.refuse(node, "the shape must be a constant")
        size = int(np.prod(x.shape))
        if list(target) in ([1, size], [-1, size], [1, -1], [0, -1], [0, size]):
            return self.flatten(node, x)
        self.refuse(node, f"only a reshape to [batch, features] is supported, not {list(target)}")

    def flatten(self, node, x: _Tensor):
        if x.layout == "flat":
            return self.set(node, x.value, "flat", (int(np.prod(x.shape)),), x.order)
        channels, height, width = x.shape
        # Keras flattens (h, w, c); ONNX's index of that feature is c * H * W + h * W + w
        h, w, c = np.meshgrid(np.arange(height), np.arange(width), np.arange(channels), indexing="ij")
        order = (c * height * width + h * width + w).reshape(-1)
        value = keras.layers.Flatten(name=self.name(node))(x.value)
        self.set(node, value, "flat", (channels * height * width,), order)

    def dense(self, node, x: _Tensor, kernel: np.ndarray, bias: np.ndarray):
        """A Dense layer ``x @ kernel + bias`` with ``kernel`` indexed by ONNX features."""
        if x.layout != "flat" or len(x.shape) != 1:
            self.refuse(node, f"a matrix product needs a [batch, features] input, got {list(x.shape)}")
        if kernel.shape[0] != x.shape[0]:
            self.refuse(node, f"weights of shape {list(kernel.shape)} do not fit {x.shape[0]} features")
        if x.order is not None:
            kernel = kernel[x.order]
        layer = keras.layers.Dense(kernel.shape[1], name=self.name(node))
        value = layer(x.value)
        layer.set_weights([kernel.astype(np.float32), np.broadcast_to(bias, (kernel.shape[1],)).astype(np.float32)])
        self.set(node, value, "flat", (kernel.shape[1],))
        self.dense_layers[node.output[0]] = layer

    def op_Gemm(self, node):
        a = self.attributes(node)
        x = self.tensor(node, node.input[0])
        weights = self.constant(node, node.input[1])
        bias = self.constant(node, node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1, np.float32)
        if weights is None or bias is None:
            self.refuse(node, "B and C must be constants (weights)")
        if a.get("transA", 0):
            self.refuse(node, "transA = 1 is not supported")
        kernel = (weights.T if a.get("transB", 0) else weights) * a.get("alpha", 1.0)
        self.dense(node, x, kernel, bias * a.get("beta", 1.0))

    def op_MatMul(self, node):
        x = self.tensor(node, node.input[0])
        weights = self.constant(node, node.input[1])
        if weights is None or weights.ndim != 2:
            self.refuse(node, "the second operand must be a constant matrix")
        self.dense(node, x, weights, np.zeros(weights.shape[1], np.float32))

    def per_channel(self, node, x: _Tensor, array: np.ndarray) -> np.ndarray:
        """A constant operand broadcast against ``x``, as Keras holds ``x``."""
        array = np.asarray(array, np.float32)
        if array.size == 1:
            return array.reshape(())
        full = np.broadcast_to(array, (1,) + x.shape)[0] if array.ndim <= len(x.shape) + 1 else None
        if full is None:
            self.refuse(node, f"a constant of shape {list(array.shape)} does not broadcast against {list(x.shape)}")
        if x.layout == "nchw":
            return np.ascontiguousarray(np.transpose(full, (1, 2, 0)))
        full = full.reshape(-1)
        return full[x.order] if x.order is not None else full

    def binary(self, node):
        """(tensor, constant) of an elementwise Add, Sub, Mul or Div, the tensor first."""
        first, second = node.input
        if self.constant(node, second) is not None and first in self.tensors:
            return self.tensors[first], self.constant(node, second), False
        if self.constant(node, first) is not None and second in self.tensors:
            return self.tensors[second], self.constant(node, first), True
        return None, None, None

    def op_Add(self, node):
        x, c, _ = self.binary(node)
        if x is not None:
            source = node.input[0] if node.input[0] in self.tensors else node.input[1]
            layer = self.dense_layers.get(source)
            if layer is not None and self.uses.get(source) == 1:  # MatMul + Add: the Dense layer's bias
                kernel, bias = layer.get_weights()
                layer.set_weights([kernel, (bias + np.broadcast_to(np.asarray(c, np.float32), bias.shape)).astype(np.float32)])
                self.tensors[node.output[0]] = x
                self.dense_layers[node.output[0]] = layer
                return None
            return self.affine_on(node, x, 1.0, self.per_channel(node, x, c))
        a, b = self.tensor(node, node.input[0]), self.tensor(node, node.input[1])
        if a.layout != b.layout or a.shape != b.shape or (a.order is None) != (b.order is None):
            self.refuse(node, f"the two tensors have different shapes {list(a.shape)} and {list(b.shape)}")
        if a.order is not None and not np.array_equal(a.order, b.order):
            self.refuse(node, "the two tensors are laid out differently")
        self.set(node, keras.layers.Add(name=self.name(node))([a.value, b.value]), a.layout, a.shape, a.order)

    def op_Sub(self, node):
        x, c, reversed_ = self.binary(node)
        if x is None:
            self.refuse(node, "only a difference with a constant is supported")
        c = self.per_channel(node, x, c)
        self.affine_on(node, x, -1.0 if reversed_ else 1.0, c if reversed_ else -c)

    def op_Mul(self, node):
        x, c, _ = self.binary(node)
        if x is None:
            self.refuse(node, "only a product with a constant is supported")
        self.affine_on(node, x, self.per_channel(node, x, c), 0.0)

    def op_Div(self, node):
        x, c, reversed_ = self.binary(node)
        if x is None or reversed_:
            self.refuse(node, "only a division by a constant is supported")
        c = self.per_channel(node, x, c)
        if np.any(c == 0):
            self.refuse(node, "division by zero")
        self.affine_on(node, x, 1.0 / c, 0.0)

    def affine_on(self, node, x: _Tensor, scale, offset):
        layer = keras.layers.Rescaling(scale, offset, name=self.name(node))
        self.set(node, layer(x.value), x.layout, x.shape, x.order)

    def spatial(self, node, x: _Tensor):
        if x.layout != "nchw":
            self.refuse(node, f"expected an NCHW image tensor, got {list(x.shape)}")
        a = self.attributes(node)
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            self.refuse(node, "auto_pad is not supported (give pads)")
        return a, pads

    def op_Conv(self, node):
        x = self.tensor(node, node.input[0])
        a, pads = self.spatial(node, x)
        weights = self.constant(node, node.input[1])
        bias = self.constant(node, node.input[2]) if len(node.input) > 2 else None
        if weights is None:
            self.refuse(node, "the weights must be constants")
        if a.get("group", 1) != 1:
            self.refuse(node, "grouped convolutions (group > 1) are not supported")
        out_channels, _, kh, kw = weights.shape
        value = x.value
        if any(pads):
            top, left, bottom, right = pads
            value = keras.layers.ZeroPadding2D(((top, bottom), (left, right)), name=self.name(node) + "_pad")(value)
        layer = keras.layers.Conv2D(
            out_channels,
            (kh, kw),
            strides=tuple(a.get("strides", [1, 1])),
            dilation_rate=tuple(a.get("dilations", [1, 1])),
            name=self.name(node),
        )
        if layer.strides != (1, 1) and layer.dilation_rate != (1, 1):
            self.refuse(node, "strides and dilations together are not supported")
        value = layer(value)
        layer.set_weights(
            [
                np.transpose(weights, (2, 3, 1, 0)).astype(np.float32),
                (bias if bias is not None else np.zeros(out_channels)).astype(np.float32),
            ]
        )
        _, height, width, _ = value.shape
        self.set(node, value, "nchw", (out_channels, height, width))

    def pool(self, node, kind):
        x = self.tensor(node, node.input[0])
        a, pads = self.spatial(node, x)
        if any(pads):
            self.refuse(node, "padded pooling is not supported")
        if a.get("ceil_mode", 0):
            self.refuse(node, "ceil_mode = 1 is not supported")
        if a.get("dilations", [1, 1]) != [1, 1]:
            self.refuse(node, "dilated pooling is not supported")
        kernel = tuple(a["kernel_shape"])
        layer = kind(
            pool_size=kernel, strides=tuple(a.get("strides", [1, 1])), name=self.name(node)
        )  # ONNX: stride 1 unless given
        value = layer(x.value)
        _, height, width, channels = value.shape
        self.set(node, value, "nchw", (channels, height, width))

    def op_MaxPool(self, node):
        if len(node.output) > 1 and node.output[1]:
            self.refuse(node, "the Indices output is not supported")
        self.pool(node, keras.layers.MaxPooling2D)

    def op_AveragePool(self, node):
        self.pool(node, keras.layers.AveragePooling2D)

    def op_GlobalAveragePool(self, node):
        x = self.tensor(node, node.input[0])
        if x.layout != "nchw":
            self.refuse(node, f"expected an NCHW image tensor, got {list(x.shape)}")
        value = keras.layers.GlobalAveragePooling2D(name=self.name(node))(x.value)
        self.set(node, value, "flat", (x.shape[0], 1, 1))

    def op_BatchNormalization(self, node):
        x = self.tensor(node, node.input[0])
        scale, bias, mean, var = (self.constant(node, name) for name in node.input[1:5])
        if any(v is None for v in (scale, bias, mean, var)):
            self.refuse(node, "scale, bias, mean and variance must be constants (inference mode)")
        if x.layout == "flat" and x.order is not None:
            scale, bias, mean, var = (v[x.order] for v in (scale, bias, mean, var))
        layer = keras.layers.BatchNormalization(
            axis=-1, epsilon=float(self.attributes(node).get("epsilon", 1e-5)), name=self.name(node)
        )
        value = layer(x.value)
        layer.set_weights([v.astype(np.float32) for v in (scale, bias, mean, var)])
        self.set(node, value, x.layout, x.shape, x.order)


def onnx_inputs(proto, images: np.ndarray) -> np.ndarray:
    """NHWC images laid out as the ONNX network's input (NCHW, or flat in its shape)."""
    dims = input_dims(proto)
    if len(dims) == 4 and tuple(dims[1:]) == (images.shape[3], images.shape[1], images.shape[2]):
        return np.ascontiguousarray(np.transpose(images, (0, 3, 1, 2)))
    return images.reshape((len(images),) + tuple(dims[1:]))


def run_onnxruntime(proto, images: np.ndarray) -> np.ndarray:
    """The ONNX network's outputs on NHWC ``images``, by onnxruntime on the CPU, one batch
    (the batch dimension made free first: VNN-COMP's networks fix it at 1)."""
    import onnx
    import onnxruntime

    free = onnx.ModelProto()
    free.CopyFrom(proto)
    for value in [*graph_inputs(free), *free.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if len(dims):
            dims[0].dim_param = "batch"
    del free.graph.value_info[:]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(free.SerializeToString(), options, providers=["CPUExecutionProvider"])
        name = [i.name for i in session.get_inputs()][0]
        outputs = session.run(None, {name: onnx_inputs(proto, images).astype(np.float32)})[0]
    except Exception as exc:  # onnxruntime's own errors (an inconsistent graph)
        raise AdvbenchError(f"onnxruntime cannot run the network: {str(exc).strip()}") from None
    return np.asarray(outputs).reshape(len(images), -1)


def check_against_onnxruntime(
    proto, model, path: Path, input_shape: tuple, points: int, seed: int, scale=None, offset=None
) -> None:
    """Raise an :class:`AdvbenchError` unless ``model`` computes what onnxruntime computes on
    ``points`` random images of [0, 1] (the logits; a final Softmax on both sides; the
    network fed the normalised images where a normalisation is stated)."""
    images = np.random.default_rng(seed).uniform(0, 1, (points,) + tuple(input_shape)).astype(np.float32)
    try:
        reference = run_onnxruntime(proto, images if scale is None else (images * scale + offset).astype(np.float32))
    except AdvbenchError as exc:
        raise AdvbenchError(f"{path}: {exc}") from None
    logits = np.asarray(keras.ops.convert_to_numpy(model(images, training=False)), np.float64)
    if proto.graph.node[-1].op_type == "Softmax":
        logits = np.exp(logits - logits.max(axis=1, keepdims=True))
        logits /= logits.sum(axis=1, keepdims=True)
    if logits.shape != reference.shape:
        raise AdvbenchError(f"{path}: the import gives outputs of shape {logits.shape}, onnxruntime {reference.shape}")
    error = float(np.max(np.abs(logits - reference)) / max(1.0, float(np.max(np.abs(reference)))))
    if not np.isfinite(error) or error > TOLERANCE:
        raise AdvbenchError(
            f"{path}: the imported network differs from onnxruntime by {error:.2g} (relative) on random inputs; "
            f"at most {TOLERANCE:g} is accepted"
        )
