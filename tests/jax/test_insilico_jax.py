"""Under KERAS_BACKEND=jax: the in-silico experiments give TensorFlow's results for the
same weights (tests/test_jax_backend.py writes the runs and TensorFlow's numbers), on
both cores, and the differentiable response function has a gradient under jax.grad."""
import json
import os
import pathlib

import numpy as np
import pytest

FIXTURES = os.environ.get("TFSACNN_JAX_FIXTURES")
pytestmark = pytest.mark.skipif(not FIXTURES, reason="run through tests/test_jax_backend.py "
                                                     "(it writes TensorFlow's results)")


@pytest.mark.parametrize("core", ["independent", "shared"])
def test_experiments_match_tensorflow(core):
    from tfsacnn.insilico import load_twin
    from tfsacnn.insilico.experiments import run_experiments

    root = pathlib.Path(FIXTURES)
    want = dict(np.load(root / f"insilico-{core}.npz"))
    settings = json.loads((root / "insilico_settings.json").read_text())
    twin = load_twin(str(want.pop("run")))
    got = run_experiments(twin, twin, settings=settings)
    assert twin.truth is not None
    for key, value in want.items():
        e, *rest = key.split("/")
        g = got[e]["curves"][rest[1]] if rest[0] == "curve" else got[e]["per_neuron"][rest[0]]
        np.testing.assert_allclose(np.asarray(g, np.float64), value, rtol=1e-4, atol=1e-4,
                                   equal_nan=True, err_msg=key)


def test_response_fn_has_a_gradient_under_jax():
    import jax
    import jax.numpy as jnp

    from tfsacnn.insilico import load_twin

    root = pathlib.Path(FIXTURES)
    twin = load_twin(str(np.load(root / "insilico-independent.npz")["run"]))
    f = twin.response_fn()
    x = jnp.full((1, twin.n) + tuple(twin.image_shape), twin.mean_grey, jnp.float32)
    g = jax.grad(lambda v: f(v)[0, 0])(x)
    assert g.shape == x.shape and bool(jnp.isfinite(g).all())
    assert float(jnp.abs(g[0, 0]).sum()) > 0 and float(jnp.abs(g[0, 1]).sum()) == 0
