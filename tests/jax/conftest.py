"""The JAX sub-suite runs as on a GPU machine without TensorFlow: `import tensorflow`
fails in this process (Keras then takes its no-TensorFlow paths, as it would there).
Runs by `tests/test_jax_backend.py` with KERAS_BACKEND=jax."""
import importlib.abc
import os
import sys

assert os.environ.get("KERAS_BACKEND") == "jax", "run tests/jax with KERAS_BACKEND=jax"


class NoTensorFlow(importlib.abc.MetaPathFinder):
    """Refuses `tensorflow` and its submodules, like an environment without the wheel."""

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(f"No module named {name!r} (blocked: the JAX suite has no TF)")
        return None


if "tensorflow" not in sys.modules:
    sys.meta_path.insert(0, NoTensorFlow())
