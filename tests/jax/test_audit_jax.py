"""Audit case L4 (docs/audit.md): `tfsacnn analyze` of a run under the JAX backend."""
import numpy as np
import pytest


@pytest.mark.slow
def test_analyze_forward_runs_under_jax_and_matches_predict():
    """`analyze.forward` (predictions, readout parts, attention rows) works without
    TensorFlow; its prediction is `model.predict`'s and the parts add up to it."""
    from tfsacnn import models
    from tfsacnn.evaluation.analyze import forward

    model = models.build("ff_sa_cnn", n_neurons=1, seed=0)
    images = np.random.default_rng(0).standard_normal((3, 50, 50, 1)).astype(np.float32)
    top = np.array([[2, 0]])            # the last batch (image 2) is padded
    fw = forward(model, images, batch_size=2, attention_images=top, attention_columns=[0])
    reference = model.predict(images, verbose=0)
    np.testing.assert_allclose(fw["prediction"], reference, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sum(fw["parts"].values()), reference, rtol=1e-4, atol=1e-5)
    assert fw["attention"].shape[:2] == top.shape
    np.testing.assert_allclose(fw["attention"].sum(-1), 1.0, atol=1e-5)
