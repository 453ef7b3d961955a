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
# the classic experiments; MEIs have their own test (test_mei_jax.py)
CLASSIC = ("rf", "grating", "size", "contrast_surround")


@pytest.mark.parametrize("core", ["independent", "shared"])
def test_experiments_match_tensorflow(core):
    """Same weights, same results: every curve to a thousandth of its range and every
    per-neuron value (RF centre, optimal grating, tuning, SSI, GSF, CMI, ...) to 0.5 %, on
    a random model whose responses vary with the image (tests/conftest.calibrate_statistics),
    with each later experiment placed by this backend's own earlier results."""
    from tfsacnn.insilico import load_twin
    from tfsacnn.insilico.experiments import run_experiments

    root = pathlib.Path(FIXTURES)
    want = dict(np.load(root / f"insilico-{core}.npz"))
    settings = json.loads((root / "insilico_settings.json").read_text())
    twin = load_twin(str(want.pop("run")))
    assert twin.truth is not None
    np.testing.assert_allclose(twin.dataset_responses(), want.pop("dataset_responses"),
                               atol=1e-5)
    got = run_experiments(twin, twin, names=CLASSIC, settings=settings)
    assert sorted(got) == sorted(CLASSIC)
    have = {f"{e}/{q}": v for e, r in got.items() for q, v in r["per_neuron"].items()}
    have.update({f"{e}/curve/{c}": v for e, r in got.items()
                 for c, v in r.get("curves", {}).items()})
    assert sorted(have) == sorted(want)
    for key, value in want.items():
        if key == "contrast_surround/cmi":
            continue       # (cross - iso) / (cross + iso): compared through r_cross and r_iso
        g = np.asarray(have[key], np.float64)
        if "/curve/" in key:
            np.testing.assert_allclose(g, value, rtol=0, atol=1e-3 * np.abs(value).max(),
                                       err_msg=key)
        else:
            np.testing.assert_allclose(g, value, rtol=5e-3, atol=1e-3, equal_nan=True,
                                       err_msg=key)


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


def test_tensorboard_pictures_are_written_without_tensorflow(tmp_path):
    """`insilico --tensorboard` logs its PNG pages where TensorFlow cannot be imported."""
    import io

    from PIL import Image
    from tensorboard.compat.proto import event_pb2

    from tfsacnn.insilico.run import log_pictures

    buf = io.BytesIO()
    Image.new("RGB", (7, 5)).save(buf, format="PNG")
    png = {"size_tuning_p01": buf.getvalue()}
    log_pictures(tmp_path, png, 3, "ff_cnn (run)")
    (f,) = tmp_path.glob("events.out.tfevents.*")
    raw, events, pos = f.read_bytes(), [], 0
    while pos < len(raw):                      # TFRecord frames: length, crc, data, crc
        n = int.from_bytes(raw[pos:pos + 8], "little")
        events.append(event_pb2.Event.FromString(raw[pos + 12:pos + 12 + n]))
        pos += 16 + n
    (value,) = [v for e in events for v in e.summary.value]
    assert value.tag == "insilico/size_tuning_p01" and events[-1].step == 3
    assert value.metadata.summary_description == "ff_cnn (run)"
    assert value.tensor.string_val[:2] == [b"7", b"5"]
    assert value.tensor.string_val[2] == png["size_tuning_p01"]
