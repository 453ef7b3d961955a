"""Under KERAS_BACKEND=jax: the MEI gradient's JAX path (`_jax_value_and_grad`) against the
analytic numpy gradient, and the same MEI from the same seed (tests/test_mei.py checks the
TensorFlow path against the same reference, so the two backends agree)."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from helpers_insilico import (assert_gradient_matches_analytic,  # noqa: E402
                              assert_mei_matches_reference)


def test_jax_path_is_selected_and_matches_the_analytic_gradient():
    import keras

    assert keras.backend.backend() == "jax"
    assert_gradient_matches_analytic()


def test_same_mei_from_the_same_seed_as_the_reference():
    assert_mei_matches_reference()
