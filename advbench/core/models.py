"""Models from files: a saved Keras model, an ONNX network (imported as Keras layers), or a
PyTorch ``nn.Module`` wrapped for Keras."""

from __future__ import annotations

from pathlib import Path

from advbench.core.onnx import is_onnx
from advbench.kit import backend
from advbench.lazy import keras


def load_keras_model(path: Path):
    """A saved Keras model; advbench's own layers (:mod:`advbench.kit.layers`) are known to
    Keras first, so a model advbench saved loads in any process and on any backend."""
    import advbench.kit.layers  # noqa: F401 (registers the layers' classes for deserialization)

    return keras.models.load_model(path, compile=False)


def torch_model(file, attribute: str, arguments: dict, weights, layout: str, input_shape, num_classes: int):
    """A Keras model around a PyTorch ``nn.Module`` (the torch backend only): the module
    ``attribute`` of the Python file ``file``, called with ``arguments``, its state_dict
    loaded from ``weights`` (``weights_only``: no code runs from that file), in eval mode,
    fed NHWC images transposed to ``layout``."""
    import hashlib
    import importlib.util
    import sys

    if backend.name() != "torch":
        raise RuntimeError(
            f"a PyTorch module needs the torch backend (KERAS_BACKEND=torch or --backend torch), not {backend.name()}"
        )
    import torch

    module_name = f"advbench_torch_{hashlib.sha256(str(file).encode()).hexdigest()[:12]}"
    source = sys.modules.get(module_name)
    if source is None:
        spec = importlib.util.spec_from_file_location(module_name, file)
        source = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = source  # so that saving the model can pickle the module's class
        try:
            spec.loader.exec_module(source)
        except BaseException:
            del sys.modules[module_name]
            raise
    module = getattr(source, attribute)(**arguments)
    if weights is not None:
        module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    module.eval()
    inputs = keras.Input(tuple(input_shape))
    fed = keras.layers.Permute((3, 1, 2))(inputs) if layout == "NCHW" else inputs
    logits = keras.layers.TorchModuleWrapper(module, output_shape=(None, num_classes), name="torch_module")(fed)
    return keras.Model(inputs, logits, name=attribute)


def pretrained_model(path, torch, outputs: str, input_shape, num_classes: int, as_given: bool = False, normalization=None):
    """A pretrained model: the Keras file ``path`` or an ONNX file (imported, see
    :mod:`advbench.core.onnx`), or the PyTorch module ``torch`` (with
    ``file``, ``attribute``, ``arguments``, ``weights`` and ``layout``); one that outputs
    probabilities (``outputs="probabilities"``) gets a log, its logits, unless ``as_given``."""
    if path is not None and is_onnx(path):
        from advbench.core.onnx import load_onnx

        model = load_onnx(path, input_shape, normalization=normalization)
    elif path is not None:
        model = load_keras_model(path)
    else:
        model = torch_model(torch.file, torch.attribute, torch.arguments, torch.weights, torch.layout, input_shape, num_classes)
    if outputs == "probabilities" and not as_given:
        from advbench.kit.layers import LogProbabilities

        model = keras.Model(model.inputs, LogProbabilities(name="logits_from_probabilities")(model.outputs[0]), name=model.name)
    return model
