"""A lazy stand-in for Keras.

Importing Keras imports its backend (TensorFlow, JAX or PyTorch), which takes seconds,
so the CLI, the registries and every plugin module must not import it at module level.
Code that needs it writes ``from advbench.lazy import keras`` and uses it as usual
inside functions; the real import happens on first attribute access.  (Module-level
Keras layer subclasses would defeat this: keep layer classes in modules that are
themselves imported lazily, like :mod:`advbench.kit.layers`.)  The frameworks themselves
are imported only by :mod:`advbench.kit.backend`.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import types
from contextlib import contextmanager


class LazyModule(types.ModuleType):
    """A module proxy that imports the real module on first attribute access."""

    def __init__(self, name: str):
        super().__init__(name)

    def __getattr__(self, attribute: str):
        if attribute.startswith("__") or attribute.startswith("advbench_"):
            # Probes by introspection (pluggy, inspect, copy) must not trigger the import.
            raise AttributeError(attribute)
        module = _import(self.__name__)
        value = getattr(module, attribute)
        setattr(self, attribute, value)  # later lookups skip __getattr__
        return value

    def __dir__(self):
        return dir(_import(self.__name__))


# What TensorFlow's C++ runtime prints while probing for CUDA on a machine without a
# GPU; TF_CPP_MIN_LOG_LEVEL does not silence it because absl logging is not set up yet.
_IMPORT_NOISE = (
    "absl::InitializeLog",
    "cudart_stub.cc",
    "cuda_platform.cc",
    "cuInit",
    "cuda_dnn.cc",
    "cuda_fft.cc",
    "cuda_blas.cc",
    "computation_placer.cc",
    "cpu_feature_guard.cc",
    "This TensorFlow binary is optimized",
    "To enable the following instructions",
    "oneDNN custom operations are on",
)


@contextmanager
def quiet_framework_import():
    """Capture file descriptor 2 while a framework may be imported for the first time
    (Keras imports TensorFlow, when installed, even to save a model under another
    backend) and replay all but the noise of its CUDA probe."""
    if "tensorflow" in sys.modules:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
            tensorflow = sys.modules.get("tensorflow")
            if tensorflow is not None:
                tensorflow.config.list_physical_devices()  # the CUDA probe prints here
                # Retracing warnings for batches of varying size are expected here, not actionable.
                tensorflow.get_logger().setLevel("ERROR")
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(noise in line for noise in _IMPORT_NOISE):
                    sys.stderr.write(line)


def _import(name: str):
    if name.split(".")[0] in sys.modules:
        return importlib.import_module(name)
    with quiet_framework_import():
        return importlib.import_module(name)


keras = LazyModule("keras")
