"""On PYTHONPATH, makes TensorFlow absent in every Python process started so (the GPU
machines have no TensorFlow): `import tensorflow` raises ModuleNotFoundError and
`importlib.util.find_spec("tensorflow")` is None, as without the wheel (PyTorch and Keras
probe with find_spec). tests/test_device_script.py runs the device script so."""
import importlib.machinery
import sys


class NoTensorFlowPathFinder(importlib.machinery.PathFinder):
    """The standard path finder, blind to `tensorflow` and its submodules."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return None
        return super().find_spec(name, path, target)


sys.meta_path[:] = [NoTensorFlowPathFinder if f is importlib.machinery.PathFinder else f
                    for f in sys.meta_path]
