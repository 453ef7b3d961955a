"""tfsacnn: CNNs with and without self-attention for V1 system identification (Keras 3)."""
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
