"""SavedModel export (raw-image and preprocessed endpoints) and atomic saving of run artefacts.

`export_saved_model(model, path, preprocessing=None)` writes a TF SavedModel with endpoints
- `serve`: raw images `(B, H, W, C)` as the stimulus files hold them -> responses `(B, n)`.
  Any H, W; C = 1 (grey), 3 (RGB), 2 or 4 (alpha ignored); uint8 or uint16 (divided by
  the dtype's maximum), or float32/float64 on the source's scale (divided by the dataset's
  recorded `pixel_max`). It runs data_prep's pipeline in the graph, in data_prep's order
  and arithmetic: luma grey, centre crop, centre square crop, PIL's antialiased bilinear
  resize (two passes, float64 weights, float32 between passes), / pixel_max, standardise.
  Without a recorded pipeline (`preprocessing=None`, or a manifest without one) `serve`
  is the same function as `serve_preprocessed`.
- `serve_preprocessed`: images `(B, S, S, 1)` float32 as stored in the dataset -> `(B, n)`;
- `attention` (SA models only): preprocessed images -> attention `(B, n, heads, P, P)`.
Each endpoint checks its input in the graph (`tf.errors.InvalidArgumentError` naming the
problem: NaN or inf pixels, an empty image, a channel count other than 1-4); a batch of
zero images returns an empty `(0, ...)` result.
All load with plain TensorFlow (`tf.saved_model.load`), without tfsacnn; `serving_default`
(TF Serving) is `serve` for float32 input.
"""
import os
import pathlib
import sys

from .errors import TfsacnnError
from .files import atomic_dir, temporary

RAW_DTYPES = ("float32", "uint8", "float64", "uint16")   # traced dtypes of `serve`; first = signature
CHANNELS = (1, 2, 3, 4)   # grey, grey + alpha, RGB, RGBA


def check_images(images, endpoint, raw):
    """`images` `(B, H, W, C)` unchanged, with in-graph checks that raise InvalidArgumentError.

    Refused: NaN or inf pixels (float input); for raw images (`raw`) also H or W of 0 and
    C not in `CHANNELS`. Call it only for B > 0 (see `nonempty`).
    """
    import tensorflow as tf

    shape = tf.shape(images)
    checks = []
    if raw:
        checks.append(tf.debugging.Assert(
            tf.logical_and(shape[1] > 0, shape[2] > 0),
            [f"{endpoint}: empty image (height or width 0); images (B, H, W, C) have shape",
             shape]))
        checks.append(tf.debugging.Assert(
            tf.reduce_any(tf.equal(shape[3], CHANNELS)),
            [f"{endpoint}: images must have 1, 2, 3 or 4 channels (grey, grey + alpha, RGB, "
             f"RGBA); got", shape[3]]))
    with tf.control_dependencies(checks):
        images = tf.identity(images)
    if images.dtype.is_floating:
        images = tf.debugging.assert_all_finite(
            images, f"{endpoint}: images contain NaN or inf pixels")
    return images


def nonempty(images, fn, empty):
    """`fn(images)` if `images` holds at least one image, else `empty()`: a result of the
    same dtype and trailing shape with no rows (e.g. `fn(one valid image)[:0]`)."""
    import tensorflow as tf

    return tf.cond(tf.shape(images)[0] > 0, lambda: fn(images), empty)


def serving_preprocessing(preprocessing):
    """The recorded pipeline as `data_prep.preprocess.recipe` numbers, or None.

    `preprocessing`: None, a dataset manifest dict, a dataset directory, or a recipe dict.
    """
    from data_prep.preprocess import recipe

    if preprocessing is None:
        return None
    if isinstance(preprocessing, (str, os.PathLike)):
        from .data import read_manifest

        return recipe(read_manifest(preprocessing),
                      source=str(pathlib.Path(preprocessing) / "manifest.json"))
    if "schema_version" in preprocessing or "normalization" in preprocessing:
        return recipe(preprocessing)
    return dict(preprocessing)


def pil_bilinear_weights(n_in, size):
    """`(size, n_in)` float64 resampling matrix of PIL's antialiased bilinear resize.

    Pillow's Resample.c `precompute_coeffs` with the triangle filter: scale = n_in / size,
    support = max(scale, 1), taps floor(center -/+ support + 0.5) clipped to the image,
    weights normalised to sum 1. `n_in` may be a tensor.
    """
    import tensorflow as tf

    n = tf.cast(n_in, tf.float64)
    scale = n / size
    filterscale = tf.maximum(scale, 1.0)
    center = (tf.range(size, dtype=tf.float64) + 0.5) * scale
    lo = tf.maximum(tf.floor(center - filterscale + 0.5), 0.0)[:, None]
    hi = tf.minimum(tf.floor(center + filterscale + 0.5), n)[:, None]
    j = tf.range(n)[None, :]
    w = tf.maximum(1.0 - tf.abs((j - center[:, None] + 0.5) * (1.0 / filterscale)), 0.0)
    w = tf.where((j >= lo) & (j < hi), w, tf.zeros_like(w))
    return w / tf.reduce_sum(w, axis=1, keepdims=True)


def preprocess_raw(images, recipe):
    """Raw images `(B, H, W, C)` -> `(B, S, S, 1)` float32, exactly as data_prep stores them."""
    import tensorflow as tf

    dtype = images.dtype
    pixel_max = float(dtype.max) if dtype.is_integer else recipe["pixel_max"]
    x = tf.cast(images, tf.float32)
    luma = tf.constant(recipe["luma"], tf.float32)
    x = tf.cond(tf.shape(x)[-1] < 3, lambda: x[..., 0],
                lambda: tf.tensordot(x[..., :3], luma, axes=1))     # (B, H, W) on source scale
    crop = recipe["crop"]
    if crop is not None:
        h, w = tf.shape(x)[1], tf.shape(x)[2]
        short = tf.minimum(h, w)
        side = (tf.constant(int(crop)) if crop >= 1 else
                tf.cast(tf.round(crop * tf.cast(short, tf.float64)), tf.int32))  # half to even
        tf.debugging.assert_less_equal(side, short, message=f"crop {crop} does not fit the image")
        tf.debugging.assert_positive(side, message=f"crop {crop} does not fit the image")
        x = _centre(x, side)
    x = _centre(x, tf.minimum(tf.shape(x)[1], tf.shape(x)[2]))
    size = recipe["size"]
    wts = pil_bilinear_weights(tf.shape(x)[1], size)                # square: one matrix
    x = tf.cast(tf.einsum("bhw,tw->bht", tf.cast(x, tf.float64), wts), tf.float32)  # horizontal
    x = tf.cast(tf.einsum("sh,bht->bst", wts, tf.cast(x, tf.float64)), tf.float32)  # vertical
    x = x / tf.constant(pixel_max, tf.float32)
    if recipe["mean"] is not None:
        x = (x - tf.constant(recipe["mean"], tf.float32)) / tf.constant(recipe["std"], tf.float32)
    return x[..., None]


def _centre(x, side):
    """(B, H, W) -> (B, side, side) cut from the centre (offsets (H - side) // 2, (W - side) // 2)."""
    import tensorflow as tf

    top, left = (tf.shape(x)[1] - side) // 2, (tf.shape(x)[2] - side) // 2
    return x[:, top:top + side, left:left + side]


STAMP = "model.keras.sha256"      # inside saved_model/: the model.keras it was exported from


def export_saved_model(model, path, preprocessing=None, stamp=None):
    """Write `model` as a SavedModel at `path` (atomically); endpoints in the module docstring.

    `preprocessing`: the dataset's recorded pipeline (its manifest dict or directory), so
    that `serve` takes raw images; None: `serve` takes preprocessed `(B, S, S, 1)` float32.
    `stamp`: the sha256 of the model.keras `model` was saved as, written to `path/STAMP`
    (`check_stamp` refuses a SavedModel whose model.keras has changed since).
    """
    import keras
    import tensorflow as tf

    from . import models

    recipe = serving_preprocessing(preprocessing)
    size = model.input_shape[1]
    if recipe is not None and recipe["size"] != size:
        raise TfsacnnError(f"{path}: the model takes {size}x{size} images but the dataset's "
                           f"preprocessing makes {recipe['size']}x{recipe['size']}")
    spec = [tf.TensorSpec((None, size, size, 1), tf.float32, name="images")]

    blank = tf.zeros((1, size, size, 1), tf.float32)   # one valid preprocessed image

    def checked(fn, endpoint):
        """fn on preprocessed images `(B, S, S, 1)`, with the endpoint's input checks."""
        return lambda x: nonempty(x, lambda v: fn(check_images(v, endpoint, raw=False)),
                                  lambda: fn(blank)[:0])

    def write(target):
        archive = keras.export.ExportArchive()
        archive.track(model)
        pre = archive.add_endpoint(
            "serve_preprocessed",
            checked(lambda x: model(x, training=False), "serve_preprocessed"),
            input_signature=spec)

        def serve_raw(images):
            """Raw images `(B, H, W, C)` -> `(B, n)` through the recorded preprocessing."""
            return nonempty(
                images, lambda v: pre(preprocess_raw(check_images(v, "serve", True), recipe)),
                lambda: pre(blank)[:0])

        if recipe is None:
            serve = pre
        else:
            serve = tf.function(serve_raw, autograph=False)
            for dtype in RAW_DTYPES:
                serve.get_concrete_function(tf.TensorSpec((None,) * 4, dtype, name="images"))
        archive.add_endpoint("serve", serve)
        archive.add_endpoint("serving_default", serve)
        if models.has_attention(model):
            archive.add_endpoint("attention",
                                 checked(lambda x: models.attention_maps(model, x), "attention"),
                                 input_signature=spec)
        archive.write_out(str(target), verbose=False)
        if stamp is not None:
            (target / STAMP).write_text(stamp + "\n")

    atomic_dir(path, write)


def check_stamp(run):
    """Refuse RUN/saved_model when RUN/model.keras is not the model it was exported from
    (e.g. a --resume replaced it). One without a stamp (an older tfsacnn, or
    `export_saved_model` without `stamp`) cannot be checked and is accepted."""
    from .files import sha256

    run = pathlib.Path(run)
    sm, keras_file = run / "saved_model", run / "model.keras"
    if not keras_file.is_file() or not (sm / STAMP).is_file():
        return
    if (sm / STAMP).read_text().strip() != sha256(keras_file):
        raise TfsacnnError(f"{sm}: stale, exported from another model.keras than {keras_file} "
                           f"(`tfsacnn export --run {run}` writes it again)")


def save_keras(model, path):
    """`model.save(path)` through a temporary file (removed if the save fails)."""
    with temporary(path, ".keras") as tmp:
        model.save(tmp)
        os.replace(tmp, path)


def load_keras(path):
    """A run's model.keras (compile=False, tfsacnn's layers registered); one-line error if bad."""
    import zipfile

    import keras

    import tfsacnn.nn.layers  # noqa: F401  (registers the custom layers)

    path = pathlib.Path(path)
    if not path.is_file():
        raise TfsacnnError(f"{path}: not found")
    if not zipfile.is_zipfile(path):  # keras says "File not found" for a non-zip file
        raise TfsacnnError(f"{path}: corrupt or truncated .keras file (not a zip archive)")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001  (keras raises many kinds for a bad file)
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise TfsacnnError(f"{path}: cannot load ({type(e).__name__}: {first})") from None


def export_run(run, data=None):
    """RUN/saved_model from RUN/model.keras and the dataset's recorded preprocessing
    (`data`, else the run's config.yaml data.dir; none recorded: `serve` = preprocessed).
    Returns (saved_model path, whether `serve` takes raw images)."""
    from .files import read_yaml, sha256
    from .runs import RunLock, check_data, run_file

    run = pathlib.Path(run)
    src = run_file(run, "model.keras")
    if data is None:
        cfg_path = run / "config.yaml"
        if not cfg_path.is_file():
            raise TfsacnnError(f"{cfg_path}: not found; pass --data DIR (the run's dataset)")
        read_yaml(cfg_path)
    with RunLock(run):
        data, _ = check_data(run, data)    # refuses the run's own data changed since
        model = load_keras(src)
        recipe = None if data is None else serving_preprocessing(data)
        if data is None:
            print(f"note: {run / 'config.yaml'}: no data.dir, so `serve` takes preprocessed "
                  f"images; pass --data DIR for raw images", file=sys.stderr)
        out = run / "saved_model"
        export_saved_model(model, out, recipe, stamp=sha256(src))
    return out, recipe is not None


def main(argv=None):
    """`python -m tfsacnn.export --run RUN`: write RUN/saved_model from RUN/model.keras."""
    import argparse

    from .errors import OneLineParser, add_output_flags, run_cli

    p = OneLineParser(prog="python -m tfsacnn.export", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, metavar="RUN_DIR",
                   help="run directory with model.keras (and config.yaml)")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="dataset whose recorded preprocessing `serve` applies "
                        "(default: the run's config.yaml data.dir)")
    add_output_flags(p)
    args = p.parse_args(argv)

    def run():
        from .errors import require_tensorflow
        from .quiet import quiet_tensorflow

        require_tensorflow("tfsacnn export (a SavedModel is TensorFlow's)")
        if "keras" not in sys.modules:   # the SavedModel is TensorFlow's, whatever trained it
            os.environ["KERAS_BACKEND"] = "tensorflow"
        quiet_tensorflow(args.verbose)
        out, raw = export_run(args.run, args.data)
        if not args.quiet:
            print(f"wrote {out} (serve takes {'raw' if raw else 'preprocessed'} images)")

    return run_cli(run, path=args.run)


if __name__ == "__main__":
    sys.exit(main())
