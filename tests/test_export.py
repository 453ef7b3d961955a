"""SavedModel export: `serve` on raw image files in plain TensorFlow equals data_prep + model."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, randomize_statistics

SNIPPET_MARKER = "<!-- serving snippet: run by tests/test_export.py -->"
# (H, W) and colour of each stimulus file: odd sizes, RGB, grey and RGBA, one already 50x50
STIMULI = [((37, 61), "RGB"), ((83, 45), "L"), ((50, 50), "RGB"), ((120, 97), "L"),
           ((29, 33), "RGBA"), ((64, 64), "L"), ((71, 52), "RGB"), ((55, 90), "L")]


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO), **extra)
    return env


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Raw PNGs -> dataset (build_tfrecords, crop 0.9, standardised) -> SA model -> SavedModel."""
    from PIL import Image

    from data_prep import build_tfrecords
    from tfsacnn import models
    from tfsacnn.data import load_numpy
    from tfsacnn.export import export_saved_model

    root = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    (root / "stimuli").mkdir()
    for i, ((h, w), mode) in enumerate(STIMULI):
        rgba = rng.integers(0, 256, (h, w, 4)).astype(np.uint8)
        img = Image.fromarray(rgba, "RGBA")
        img = img.convert("L") if mode == "L" else img if mode == "RGBA" else img.convert("RGB")
        img.save(root / "stimuli" / f"{i:04d}.png")
    np.save(root / "rsp.npy", rng.random((len(STIMULI), 2)).astype(np.float32))
    build_tfrecords.main(["--out", str(root / "ds"), "--images", str(root / "stimuli"),
                          "--responses", str(root / "rsp.npy"), "--size", "50", "--crop", "0.9",
                          "--val-fraction", "0.25"])
    model = models.build("ff_sa_cnn", n_neurons=2)
    randomize_statistics(model)
    export_saved_model(model, root / "saved_model", preprocessing=root / "ds")
    expected = {}
    index = (root / "ds" / "image_index.csv").read_text().splitlines()[1:]
    for split in ("train", "val"):
        x, _ = load_numpy(root / "ds", split)
        pred = model.predict(x, verbose=0)
        for row in index:
            s, i, name = row.split(",")
            if s == split:
                expected[name] = (x[int(i)], pred[int(i)])
    return root, model, expected


PLAIN_TF = r"""
import json, pathlib, sys
import numpy as np
import tensorflow as tf

root = pathlib.Path(sys.argv[1])
model = tf.saved_model.load(str(root / "saved_model"))
out = {}
for f in sorted((root / "stimuli").glob("*.png")):
    raw = tf.io.decode_png(tf.io.read_file(str(f)))        # (H, W, C) uint8, as in the file
    out[f.name] = {"uint8": model.serve(raw[None]).numpy()[0].tolist(),
                   "float32": model.serve(tf.cast(raw, tf.float32)[None]).numpy()[0].tolist(),
                   "float64": model.serve(np.asarray(raw, np.float64)[None]).numpy()[0].tolist()}
out["tfsacnn_imported"] = any(m.split(".")[0] in ("tfsacnn", "data_prep") for m in sys.modules)
out["endpoints"] = sorted(model.signatures)
print(json.dumps(out))
"""


def test_serve_raw_files_in_plain_tensorflow(served):
    root, _, expected = served
    r = subprocess.run([sys.executable, "-c", PLAIN_TF, str(root)], capture_output=True,
                       text=True, env=_env(), cwd=root, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got.pop("tfsacnn_imported") is False
    assert got.pop("endpoints") == ["attention", "serve", "serve_preprocessed", "serving_default"]
    assert set(got) == set(expected) and len(got) == len(STIMULI)
    for name, preds in got.items():
        for dtype, pred in preds.items():
            np.testing.assert_allclose(pred, expected[name][1], atol=1e-5, rtol=0,
                                       err_msg=f"{name} as {dtype}")


def test_in_graph_preprocessing_equals_data_prep_pixels(served):
    import tensorflow as tf

    from tfsacnn.export import preprocess_raw, serving_preprocessing

    root, _, expected = served
    recipe = serving_preprocessing(root / "ds")
    assert recipe["crop"] == 0.9 and recipe["pixel_max"] == 255.0 and recipe["std"] > 0
    for name, (pixels, _) in expected.items():
        raw = tf.io.decode_png(tf.io.read_file(str(root / "stimuli" / name)))
        got = preprocess_raw(raw[None], recipe).numpy()[0]
        assert got.shape == pixels.shape == (50, 50, 1)
        np.testing.assert_allclose(got, pixels, atol=2e-6, rtol=0, err_msg=name)


def test_serve_preprocessed_and_attention(served):
    import tensorflow as tf

    from tfsacnn import models

    root, model, expected = served
    loaded = tf.saved_model.load(str(root / "saved_model"))
    x = np.stack([v[0] for v in expected.values()])
    np.testing.assert_allclose(loaded.serve_preprocessed(tf.constant(x)).numpy(),
                               np.stack([v[1] for v in expected.values()]), atol=1e-5, rtol=0)
    np.testing.assert_allclose(loaded.attention(tf.constant(x[:2])).numpy(),
                               np.asarray(models.attention_maps(model, x[:2])), atol=1e-5)


BAD_IMAGES = [  # (endpoint, images, message): serve refuses what it cannot read
    ("serve", np.full((1, 40, 40, 3), np.nan, np.float32), "serve: images contain NaN or inf"),
    ("serve", np.full((2, 40, 40, 1), np.inf, np.float64), "serve: images contain NaN or inf"),
    ("serve", np.zeros((2, 0, 40, 3), np.uint8), r"serve: empty image"),
    ("serve", np.zeros((1, 40, 0, 1), np.float32), r"serve: empty image"),
    ("serve", np.zeros((1, 40, 40, 5), np.uint8), r"serve: images must have 1, 2, 3 or 4 chan"),
    ("serve", np.zeros((1, 40, 40, 0), np.uint16), r"serve: images must have 1, 2, 3 or 4 chan"),
    ("serve_preprocessed", np.full((1, 50, 50, 1), -np.inf, np.float32),
     "serve_preprocessed: images contain NaN or inf"),
    ("attention", np.full((1, 50, 50, 1), np.nan, np.float32), "attention: images contain NaN"),
]


@pytest.mark.parametrize("endpoint,images,message", BAD_IMAGES,
                         ids=[f"{e}-{i}" for i, (e, _, _) in enumerate(BAD_IMAGES)])
def test_endpoints_refuse_images_they_cannot_read(served, endpoint, images, message):
    import tensorflow as tf

    loaded = _loaded(served)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        getattr(loaded, endpoint)(tf.constant(images))
    # one bad image among good ones spoils the call too
    if images.shape[0] == 1 and images.dtype == np.float32 and endpoint == "serve":
        good = np.zeros((2,) + images.shape[1:], np.float32)
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            loaded.serve(tf.constant(np.concatenate([good, images])))


def test_zero_images_give_an_empty_result(served):
    import tensorflow as tf

    loaded = _loaded(served)
    for images in (np.zeros((0, 40, 30, 3), np.uint8), np.zeros((0, 0, 0, 1), np.float32)):
        assert loaded.serve(tf.constant(images)).shape == (0, 2)
    assert loaded.serve_preprocessed(tf.zeros((0, 50, 50, 1))).shape == (0, 2)
    assert tuple(loaded.attention(tf.zeros((0, 50, 50, 1))).shape)[:2] == (0, 2)
    assert loaded.serve(tf.ones((1, 40, 30, 3), tf.uint8)).shape == (1, 2)  # still serves


_LOADED = {}


def _loaded(served):
    """The fixture's SavedModel, loaded once."""
    import tensorflow as tf

    root = served[0]
    if root not in _LOADED:
        _LOADED[root] = tf.saved_model.load(str(root / "saved_model"))
    return _LOADED[root]


def _snippet():
    """The python block after the marker line: README.md if it has the marker, else docs/serving.md."""
    for doc in (REPO / "README.md", REPO / "docs" / "serving.md"):
        text = doc.read_text()
        if SNIPPET_MARKER in text:
            block = re.search(r"```python\n(.*?)```", text.split(SNIPPET_MARKER, 1)[1], re.S)
            assert block, f"{doc}: no ```python block after the serving-snippet marker"
            return doc, block.group(1)
    raise AssertionError("no serving-snippet marker in README.md or docs/serving.md")


def test_serving_snippet_runs(served, tmp_path):
    root, _, expected = served
    doc, code = _snippet()
    paths = re.findall(r'"([^"]+\.png)"', code) + re.findall(r'"([^"]*saved_model)"', code)
    assert len(paths) == 2, f"{doc}: the snippet should name one image and one saved_model"
    image, saved = (tmp_path / p for p in paths)
    image.parent.mkdir(parents=True)
    saved.parent.mkdir(parents=True)
    image.write_bytes((root / "stimuli" / "0000.png").read_bytes())
    saved.symlink_to(root / "saved_model")
    code += "\nimport numpy\nnumpy.save('responses.npy', responses.numpy())\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=_env(), cwd=tmp_path, timeout=300)
    assert r.returncode == 0, f"{doc}: {r.stderr[-2000:]}"
    np.testing.assert_allclose(np.load(tmp_path / "responses.npy")[0], expected["0000.png"][1],
                               atol=1e-5, rtol=0)


def test_no_recorded_preprocessing_keeps_serve_preprocessed(tmp_path):
    import tensorflow as tf

    from tfsacnn import models
    from tfsacnn.export import export_saved_model

    model = models.build("ff_cnn", n_neurons=1)
    export_saved_model(model, tmp_path / "sm", preprocessing={"schema_version": 1,
                                                               "preprocessing": {}})
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    x = np.random.default_rng(0).standard_normal((2, 50, 50, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded.serve(x).numpy(), loaded.serve_preprocessed(x).numpy())
    assert "attention" not in loaded.signatures
    assert [p.name for p in tmp_path.iterdir()] == ["sm"]   # no temporary directory left


@pytest.mark.slow
def test_export_cli_for_a_jax_run(served, tmp_path):
    """A run saved under KERAS_BACKEND=jax exports with `python -m tfsacnn.export` (TF backend)."""
    root, _, expected = served
    run = tmp_path / "run"
    build = (f"import sys; sys.path.insert(0, {str(REPO / 'tests')!r})\n"
             "import keras; assert keras.backend.backend() == 'jax'\n"
             "from tfsacnn import models; from conftest import randomize_statistics\n"
             "m = models.build('rf_cnn', n_neurons=2); randomize_statistics(m)\n"
             f"m.save({str(run / 'model.keras')!r})\n")
    run.mkdir()
    from tfsacnn.runs import manifest_sha256

    (run / "config.yaml").write_text(f"data:\n  dir: {root / 'ds'}\n"
                                     f"  manifest_sha256: {manifest_sha256(root / 'ds')}\n")
    env = _env(KERAS_BACKEND="jax")
    r = subprocess.run([sys.executable, "-c", build], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "tfsacnn.export", "--run", str(run)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == f"wrote {run / 'saved_model'} (serve takes raw images)"
    assert r.stderr == ""                          # no TensorFlow start-up noise either

    import tensorflow as tf

    from tfsacnn.export import load_keras

    model = load_keras(run / "model.keras")
    loaded = tf.saved_model.load(str(run / "saved_model"))
    raw = tf.io.decode_png(tf.io.read_file(str(root / "stimuli" / "0001.png")))
    want = model.predict(expected["0001.png"][0][None], verbose=0)
    np.testing.assert_allclose(loaded.serve(raw[None]).numpy(), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["no_dir", "no_model", "no_config", "bad_model", "no_data"])
def test_export_cli_errors(tmp_path, capsys, case):
    from tfsacnn.export import main

    run = tmp_path / "run"
    if case != "no_dir":
        run.mkdir()
    if case in ("no_config", "bad_model", "no_data"):
        (run / "model.keras").write_text("not a zip")
    if case == "no_data":
        (run / "config.yaml").write_text(f"data:\n  dir: {tmp_path / 'gone'}\n")
        from tfsacnn import models
        models.build("ff_cnn", n_neurons=1).save(run / "model.keras")
    if case == "bad_model":
        (run / "config.yaml").write_text("data:\n  dir: null\n")
    assert main(["--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "None" not in err
    want = {"no_dir": f"{run}: no such run directory",
            "no_model": f"{run / 'model.keras'}: not found",
            "no_config": f"{run / 'config.yaml'}: not found",
            "bad_model": f"{run / 'model.keras'}: corrupt or truncated",
            "no_data": f"{tmp_path / 'gone' / 'manifest.json'}: not found"}[case]
    assert want in err
    assert not (run / "saved_model").exists()


def test_synthetic_site_serve_takes_its_own_images(site, tmp_path):
    """A procedural site records size and pixel_max 1.0, so stored images pass `serve` unchanged."""
    import tensorflow as tf

    from tfsacnn import models
    from tfsacnn.data import load_numpy, read_manifest
    from tfsacnn.export import export_saved_model

    model = models.build("rf_cnn", n_neurons=3)
    export_saved_model(model, tmp_path / "sm", preprocessing=read_manifest(site))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    x, _ = load_numpy(site, "val")
    np.testing.assert_allclose(loaded.serve(tf.constant(x[:5])).numpy(),
                               model.predict(x[:5], verbose=0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("bad, problem", [
    ({"normalization": {"method": "standardize", "mean": 0.1, "std": 0.0}}, "positive std"),
    ({"normalization": {"method": "zscore"}}, "unknown normalization method 'zscore'"),
    ({"preprocessing": {"size": 50, "pixel_max": {"train": 255}, "resample": "lanczos"}},
     "resample 'lanczos'"),
    ({"preprocessing": {"size": 50, "pixel_max": {"train": 255}, "crop": "centre"}},
     "crop must be a positive number"),
])
def test_unusable_recorded_preprocessing_is_one_clear_error(bad, problem):
    from data_prep.preprocess import recipe
    from tfsacnn.errors import DataError

    manifest = {"preprocessing": {"size": 50, "crop": None, "pixel_max": {"train": 255.0}},
                "normalization": {"method": "unit"}}
    manifest.update(bad)
    with pytest.raises(DataError, match=re.escape(f"ds/manifest.json: ") + ".*" + re.escape(problem)):
        recipe(manifest, source="ds/manifest.json")
    assert recipe({"preprocessing": {}, "normalization": {}}) is None     # nothing recorded
