"""Shared pytest fixtures. The suite runs in one process (TF import is ~6 s)."""
import importlib
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# tests/jax runs under KERAS_BACKEND=jax only: tests/test_jax_backend.py starts it in a
# subprocess (the backend is fixed when Keras is imported).
collect_ignore = [] if os.environ.get("KERAS_BACKEND") == "jax" else ["jax"]


def require(module):
    """`pytest.importorskip(module)`, but a failure when the environment variable CI is set:
    a parity test must not pass silently on a CI machine without its reference library."""
    if os.environ.get("CI"):
        try:
            return importlib.import_module(module)
        except ImportError as e:
            pytest.fail(f"{module} is needed for this test under CI ({e}); install the "
                        "test extra")
    return pytest.importorskip(module)


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """A tiny simulated site shared by the training tests: 3 neurons, 200/100/100 images."""
    from data_prep.synthesize import synthesize

    out = tmp_path_factory.mktemp("site") / "site"
    synthesize(out, neurons=3, train=200, val=100, test=100, repeats=4, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def real_sample():
    """Real responses of 10 M1S1 neurons to 1000 validation images, (1000, 10) float64
    (data_prep/reference/README.md)."""
    from data_prep.reference import real_sample

    return real_sample()


def randomize_statistics(model, seed=0):
    """Non-trivial BatchNorm statistics (and gamma/beta) and SA gamma of a model."""
    import keras

    from tfsacnn.nn.layers import SelfAttention2D

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.3, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.2, c).astype("float32"))
        if isinstance(layer, SelfAttention2D):
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape).astype("float32"))
