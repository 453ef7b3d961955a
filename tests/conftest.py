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


JAX_SUB_SUITE = "tests/test_jax_backend.py::test_jax_sub_suite_passes"


def pytest_collection_modifyitems(session, config, items):
    """Where the JAX sub-suite will run, the first test asks for it (`jax_sub_suite`
    starts it in the background)."""
    if items and any(item.nodeid == JAX_SUB_SUITE for item in items):
        items[0].fixturenames.insert(0, "jax_sub_suite")


@pytest.fixture(scope="session")
def jax_sub_suite(tmp_path_factory):
    """tests/jax under KERAS_BACKEND=jax, running in the background -> (Popen, log)."""
    from tests.test_jax_backend import start_sub_suite

    proc, log = start_sub_suite(tmp_path_factory.mktemp("jax_sub_suite"))
    yield proc, log
    proc.kill()


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


def calibrate_statistics(model, images):
    """BatchNorm statistics from `images` (b, H, W) as in training, gamma 1, beta 0: a
    random model whose responses vary with the image (std ~0.1, not ~1e-5 as after
    `randomize_statistics`, where float32 rounding is a visible part of the signal)."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            h = np.asarray(keras.Model(model.inputs, layer.input)(images))
            h = h.reshape(-1, h.shape[-1])
            layer.moving_mean.assign(h.mean(0))
            layer.moving_variance.assign(h.var(0))
            layer.gamma.assign(np.ones(layer.gamma.shape, "float32"))
            layer.beta.assign(np.zeros(layer.beta.shape, "float32"))


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
