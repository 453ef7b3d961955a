"""tfsacnn: CNNs with and without self-attention for V1 system identification (Keras 3)."""
import sys
import warnings
from importlib import metadata


def tensorflow_wheels():
    """The installed TensorFlow wheels among tensorflow-cpu and tensorflow (should be one)."""
    found = []
    for name in ("tensorflow-cpu", "tensorflow"):
        try:
            metadata.version(name)
            found.append(name)
        except metadata.PackageNotFoundError:
            pass
    return found


if len(tensorflow_wheels()) > 1:
    warnings.warn("tensorflow-cpu and tensorflow are both installed and overwrite each other's "
                  "files: pip uninstall -y tensorflow-cpu tensorflow, then pip install "
                  "'tfsacnn[gpu]' (GPU) or pip install tfsacnn (CPU)", stacklevel=2)


def _register_layers():
    """Register tfsacnn's Keras layers (`keras.saving.load_model` then finds them)."""
    try:
        import tfsacnn.nn.layers  # noqa: F401
    except Exception as e:  # noqa: BLE001  (never break `import keras` itself)
        warnings.warn(f"tfsacnn: its Keras layers are not registered ({e})", stacklevel=2)


def _after_keras(run, module):
    run(module)
    _register_layers()


# `import tfsacnn` imports neither Keras nor a backend; tfsacnn's layers are registered
# when Keras is imported (now, if it is), so plain `keras.saving.load_model` loads a run.
if "keras" in sys.modules:
    _register_layers()
else:
    from .quiet import wrap_import

    wrap_import("keras", _after_keras)
