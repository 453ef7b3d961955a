"""Under KERAS_BACKEND=jax: the MEI gradient's JAX path (`_jax_value_and_grad`) against the
analytic numpy gradient, and the same MEI from the same seed (tests/test_mei.py checks the
TensorFlow path against the same reference, so the two backends agree)."""
import sys
import pathlib

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from helpers_insilico import GREY, FakeTwin, assert_gradient_matches_analytic  # noqa: E402


def test_jax_path_is_selected_and_matches_the_analytic_gradient():
    import keras

    assert keras.backend.backend() == "jax"
    assert_gradient_matches_analytic()


def test_same_mei_from_the_same_seed_as_the_reference():
    from tfsacnn.insilico import mei as M

    twin = FakeTwin(n=2)
    cfg = M.MEIConfig(steps=25, seeds=1)
    ours = M.compute_meis(twin, cfg)
    ref = M.compute_meis(twin, cfg, vg=twin.numpy_value_and_grad)
    scale = np.abs(ref.mei - GREY).max()
    np.testing.assert_allclose(ours.mei, ref.mei, atol=0.02 * scale)
    np.testing.assert_allclose(ours.response, ref.response, rtol=5e-3)
