"""On PYTHONPATH, makes `import tensorflow` fail in every Python process started so (the
GPU machines have no TensorFlow): tests/test_device_script.py runs the device script so."""
import importlib.abc
import sys


class NoTensorFlow(importlib.abc.MetaPathFinder):
    """Refuses `tensorflow` and its submodules, like an environment without the wheel."""

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(f"No module named {name!r} (blocked: no TensorFlow here)")
        return None


sys.meta_path.insert(0, NoTensorFlow())
