"""Under KERAS_BACKEND=jax: the MEI gradient's JAX path (`_jax_value_and_grad`) against the
analytic numpy gradient, and the same MEI from the same seed (tests/test_mei.py checks the
TensorFlow path against the same reference, so the two backends agree)."""
import sys
import pathlib

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from helpers_insilico import GREY, H, W, FakeTwin  # noqa: E402


def test_jax_path_is_selected_and_matches_the_analytic_gradient():
    import keras

    from tfsacnn.insilico.gradients import value_and_grad

    assert keras.backend.backend() == "jax"
    twin = FakeTwin(n=3, surround=True)
    rng = np.random.default_rng(1)
    x = (GREY + 0.2 * rng.standard_normal((2, 3, H, W))).astype(np.float32)
    w = np.array([[1.0, -1.0, 2.0], [0.5, 1.0, -1.0]], np.float32)
    y, g = value_and_grad(twin.response_fn())(x, w)
    y_ref, g_ref = twin.numpy_value_and_grad(x, w)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4)
    np.testing.assert_allclose(g, g_ref, rtol=1e-3, atol=1e-5 * np.abs(g_ref).max())


def test_same_mei_from_the_same_seed_as_the_reference():
    from tfsacnn.insilico import mei as M

    twin = FakeTwin(n=2)
    cfg = M.MEIConfig(steps=25, seeds=1)
    ours = M.compute_meis(twin, cfg)
    ref = M.compute_meis(twin, cfg, vg=twin.numpy_value_and_grad)
    scale = np.abs(ref.mei - GREY).max()
    np.testing.assert_allclose(ours.mei, ref.mei, atol=0.02 * scale)
    np.testing.assert_allclose(ours.response, ref.response, rtol=5e-3)
