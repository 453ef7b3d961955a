"""Under KERAS_BACKEND=jax: every variant and both cores equal TensorFlow's for the same
weights (inference outputs <= 1e-5; training-mode outputs, gradients and BatchNorm
statistics too, see the tolerances), and nothing imports
TensorFlow. Started by tests/test_jax_backend.py, which writes the TensorFlow side's .npz
files into $TFSACNN_JAX_FIXTURES.
"""
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfsacnn import models

FIXTURES = os.environ.get("TFSACNN_JAX_FIXTURES")
REPO = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not FIXTURES, reason="run through tests/test_jax_backend.py "
                                                     "(it writes TensorFlow's results)")
CORES = ("independent", "shared")


def test_backend_is_jax():
    assert keras.backend.backend() == "jax"


def _load(name, core, **overrides):
    z = dict(np.load(pathlib.Path(FIXTURES) / f"{name}-{core}.npz"))
    m = models.build(name, n_neurons=z["y_eval"].shape[1], core=core, dropout=0.0, **overrides)
    m.set_weights([z[f"w{i}"] for i in range(len(m.weights))])
    return m, z


def _results(m, z):
    """Inference output, training output, loss, gradients and new statistics under jax.jit."""
    import jax
    import jax.numpy as jnp

    x, target = z["x"], z["target"]

    def loss_fn(trainable, non_trainable):
        y, non_trainable = m.stateless_call(trainable, non_trainable, x, training=True)
        return jnp.sum(jnp.square(y - target)), (y, non_trainable)

    @jax.jit
    def run(trainable, non_trainable):
        y_eval, _ = m.stateless_call(trainable, non_trainable, x, training=False)
        (loss, (y_train, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable, non_trainable)
        return y_eval, y_train, loss, grads, stats

    return run([v.value for v in m.trainable_variables],
               [v.value for v in m.non_trainable_variables])


@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("name", models.names())
def test_same_function_as_tensorflow(name, core):
    m, z = _load(name, core)
    y_eval, y_train, loss, grads, stats = _results(m, z)
    assert z["y_eval"].std(0).min() > 5e-4, "degenerate test: outputs do not vary"
    np.testing.assert_allclose(np.asarray(y_eval), z["y_eval"], atol=1e-5, rtol=0)
    # training mode normalises by the statistics of 4 images, which amplifies the summation
    # order of fused (TF) vs unfused moments to a few 1e-5 on outputs of order 1
    np.testing.assert_allclose(np.asarray(y_train), z["y_train"], atol=5e-5, rtol=0)
    np.testing.assert_allclose(float(loss), float(z["loss"]), rtol=1e-5)
    assert len(grads) == len(m.trainable_variables)
    wants = [z[f"g{i}"] for i in range(len(grads))]
    overall = max(np.abs(w).max() for w in wants)
    for g, want, v in zip(grads, wants, m.trainable_variables):
        # relative to the variable's largest gradient, and (for gradients that are zero
        # up to rounding, e.g. conv biases before BatchNorm) to the model's largest one
        err = np.abs(np.asarray(g) - want).max()
        assert err <= 1e-3 * np.abs(want).max() + 1e-5 * overall, (v.path, err, overall)
    for i, (s, v) in enumerate(zip(stats, m.non_trainable_variables)):
        # moving statistics updated as in PyTorch (unbiased variance) on both backends
        np.testing.assert_allclose(np.asarray(s), z[f"s{i}"], atol=1e-5, rtol=1e-5,
                                   err_msg=v.path)


@pytest.mark.parametrize("name", ["ff_sa_cnn", "ff_cnn"])
def test_grouped_convolutions_same_function(name):
    """conv_implementation="grouped" (feature groups, the GPU path) = the per-neuron convs."""
    m, z = _load(name, "independent", conv_implementation="grouped")
    np.testing.assert_allclose(np.asarray(m(z["x"], training=False)), z["y_eval"],
                               atol=1e-5, rtol=0)


def test_reader_without_tensorflow_in_a_fresh_process():
    """import tfsacnn, models.build and tfsacnn.data (load_numpy reads without tf.data
    under JAX) leave TensorFlow unimported; the arrays are tf.data's, byte for byte."""
    fixtures = pathlib.Path(FIXTURES)
    code = (
        "import sys, numpy as np\n"
        "import tfsacnn, tfsacnn.models as models, tfsacnn.data as data\n"
        "m = models.build('ff_sa_cnn', n_neurons=2, core='shared')\n"
        "m(np.zeros((1, 50, 50, 1), 'float32'), training=False)\n"
        "models.build('rf_sa_cnn', n_neurons=2)(np.zeros((1, 50, 50, 1), 'float32'))\n"
        f"got = data.load_numpy(r'{fixtures / 'ds'}', 'train', neurons='3,0', with_repeats=True)\n"
        f"want = np.load(r'{fixtures / 'ds.npz'}')\n"
        "for a, k in zip(got, ('images', 'responses', 'repeats')):\n"
        "    assert a.dtype == want[k].dtype and a.tobytes() == want[k].tobytes(), k\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
        "print('OK')\n")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]
