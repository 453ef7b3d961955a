"""The digital twin: a trained run's neurons answering stimuli drawn in the data's own space.

`load_twin(run_dir, data_dir=None, neurons=None) -> Twin`

Stimuli are raw images `(b, H, W)` float32 on the *source* pixel scale (the scale of the
files the dataset was built from; white = the recorded `pixel_max`). `Twin.preprocess`
runs the dataset's recorded pipeline on them, the same as the SavedModel's `serve`
(tfsacnn.export): centre crop, centre square, PIL's antialiased bilinear resize,
/ pixel_max, standardise. It is written with `keras.ops`, so it is differentiable
under TensorFlow and JAX. A dataset without a recorded pipeline (written by
`write_dataset` from arrays) has no source space: its stored images are the source,
and `preprocess` only adds the channel axis.

Two ways to ask the twin:
- `predict(raw (b, H, W)) -> (b, n)`: every neuron sees the same image;
- `predict_own(raw (b, n, H, W)) -> (b, n)`: neuron j sees `raw[:, j]` (stimuli centred
  on each neuron's own RF). In an independent core every neuron's first convolution
  reads its own image: the n images go in as n channels of one depthwise convolution
  whose kernel is the first layer's `(k, k, 1, n*C)` kernel seen as `(k, k, n, C)`,
  the same work as one shared image. A shared core runs the b*n images through the
  core and keeps each neuron's own column (n times the work; a shared core is small).

`Truth` is the same interface on the simulator's noise-free neurons
(data_prep.v1_model) of a simulated site, fed the same raw stimuli through the
dataset's pipeline up to (not including) the normalisation, which is what the
simulator saw.
"""
from __future__ import annotations

import pathlib

import numpy as np

from ..errors import TfsacnnError

ACTIVATION_BUDGET = 2048     # images x neurons per forward batch (as tfsacnn.analyze)


class InsilicoError(TfsacnnError):
    """The run, data or request cannot be used; the message is `<what>: <problem>`."""


# --------------------------------------------------------------------- preprocessing
def pil_bilinear_matrix(n_in, size):
    """`(size, n_in)` float64 matrix of PIL's antialiased bilinear resize (numpy).

    Pillow's `precompute_coeffs` with the triangle filter (the numbers of
    `tfsacnn.export.pil_bilinear_weights`, without TensorFlow).
    """
    scale = n_in / size
    support = max(scale, 1.0)
    center = (np.arange(size) + 0.5) * scale
    lo = np.maximum(np.floor(center - support + 0.5), 0)[:, None]
    hi = np.minimum(np.floor(center + support + 0.5), n_in)[:, None]
    j = np.arange(n_in)[None, :]
    w = np.maximum(1.0 - np.abs((j - center[:, None] + 0.5) / support), 0.0)
    w = np.where((j >= lo) & (j < hi), w, 0.0)
    return w / w.sum(1, keepdims=True)


class Pipeline:
    """The recorded preprocessing for source images of one shape, as keras.ops.

    `recipe`: `data_prep.preprocess.recipe` numbers, or None (stored images are the
    source). `shape`: (H, W) of the source images. `visible`: (top, left, side), the
    source square the model sees (after the crops).
    """

    def __init__(self, recipe, shape, size):
        from data_prep.preprocess import crop_side

        self.recipe, self.shape, self.size = recipe, tuple(int(s) for s in shape), int(size)
        h, w = self.shape
        if recipe is None:
            if self.shape != (self.size, self.size):
                raise InsilicoError(f"image shape {self.shape}: the dataset records no "
                                    f"preprocessing, so stimuli must be {size}x{size}")
            self.visible, self.matrix = (0, 0, self.size), None
            return
        try:
            side = crop_side((h, w), recipe["crop"])
        except ValueError as e:
            raise InsilicoError(f"image shape {self.shape}: {e}") from None
        top, left = 0, 0
        if side is not None:
            top, left, h, w = (h - side) // 2, (w - side) // 2, side, side
        sq = min(h, w)
        top, left = top + (h - sq) // 2, left + (w - sq) // 2
        self.visible = (top, left, sq)
        self.matrix = (None if sq == self.size else
                       pil_bilinear_matrix(sq, self.size).astype(np.float32))

    def to_unit(self, raw):
        """raw `(b, H, W)` -> `(b, S, S)` resized and / pixel_max, not standardised."""
        from keras import ops

        top, left, side = self.visible
        x = ops.convert_to_tensor(raw, "float32")[:, top:top + side, left:left + side]
        if self.matrix is not None:
            m = ops.convert_to_tensor(self.matrix)
            x = ops.einsum("bhw,tw->bht", x, m)          # horizontal, then vertical (PIL)
            x = ops.einsum("sh,bht->bst", m, x)
        if self.recipe is not None:
            x = x / self.recipe["pixel_max"]
        return x

    def __call__(self, raw):
        """raw `(b, H, W)` -> model input `(b, S, S, 1)` float32."""
        x = self.to_unit(raw)
        r = self.recipe
        if r is not None and r["mean"] is not None:
            x = (x - r["mean"]) / r["std"]
        return x[..., None]

    def to_source(self, stored):
        """Stored (model-input) images `(N, S, S)` -> source pixel units (numpy), for the
        statistics of the dataset's images."""
        x = np.asarray(stored, np.float64)
        r = self.recipe
        if r is None:
            return x
        if r["mean"] is not None:
            x = x * r["std"] + r["mean"]
        return x * r["pixel_max"]


# --------------------------------------------------------------------- compiled calls
def compile_fn(fn):
    """`fn` compiled for the backend: `tf.function` (TensorFlow) or `jax.jit` (JAX)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        return _tf_compile(fn)
    if keras.backend.backend() == "jax":
        return _jax_compile(fn)
    return fn


def _tf_compile(fn):
    import tensorflow as tf

    return tf.function(fn, autograph=False, reduce_retracing=True)


def _jax_compile(fn):
    import jax

    return jax.jit(fn)


def batched(fn, x, batch):
    """`fn` over the first axis of numpy `x` in batches of `batch`; a short batch is
    padded (copies of its first row) to `batch`, or below it to the next power of two,
    so a compiled `fn` sees few shapes -> numpy."""
    n = len(x)
    out = []
    for s in range(0, n, batch):
        chunk = x[s:s + batch]
        k = len(chunk)
        size = batch if n > batch else min(batch, 1 << (k - 1).bit_length())
        if k < size:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], size - k, axis=0)])
        out.append(np.asarray(fn(chunk))[:k])
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


# --------------------------------------------------------------------- the twin
class Twin:
    """A trained run's neurons as stimulus -> response functions (see the module docstring).

    Attributes: `model` (keras.Model for the `n` selected neurons, `(B, S, S, 1)` ->
    `(B, n)`), `neurons` (dataset neuron indices), `n`, `image_shape` (H, W) of source
    images, `mean_grey` (the dataset's mean pixel, source units), `pixel_range` (lo, hi),
    `norm` (median over the dataset's images of ||image - mean_grey||_2 in source units),
    `truth` (`Truth` or None), `best_response` `(n,)` (the model's largest response over
    the dataset's images of `split`), `independent` (bool), `pipeline`, `run_dir`,
    `data_dir`, `split`, `neuron_ids`, `dataset_images` `(N, H, W)` (the split's images
    in source units).
    """

    def __init__(self, model, neurons, pipeline, mean_grey, pixel_range, norm,
                 best_response=None, truth=None, batch_size=None, **info):
        self.model = model
        self.neurons = np.asarray(neurons, np.int64)
        self.n = int(len(self.neurons))
        self.pipeline = pipeline
        self.image_shape = pipeline.shape
        self.mean_grey = float(mean_grey)
        self.pixel_range = (float(pixel_range[0]), float(pixel_range[1]))
        self.norm = float(norm)
        self.truth = truth
        self.independent = not model.get_layer("readout").shared_core
        self.batch_size = batch_size
        self.best_response = best_response
        self.dataset_images, self._dataset_responses = None, None
        for k, v in info.items():
            setattr(self, k, v)
        self._compiled = {}

    # raw -> model input
    def preprocess(self, raw):
        """raw `(b, H, W)` float32 source pixels -> model input `(b, S, S, 1)` (keras.ops)."""
        return self.pipeline(raw)

    # the differentiable functions
    def _shared_fn(self, raw):
        return self.model(self.preprocess(raw), training=False)

    def _own_fn(self, raw):
        """raw `(b, n, H, W)` -> `(b, n)`, neuron j on image j (keras.ops)."""
        from keras import ops

        h, w = self.image_shape
        n, s = self.n, self.pipeline.size
        b = ops.shape(raw)[0]
        x = self.preprocess(ops.reshape(raw, (-1, h, w)))               # (b*n, S, S, 1)
        if not self.independent:
            y = ops.reshape(self.model(x, training=False), (b, n, n))
            return ops.diagonal(y, axis1=1, axis2=2)
        x = ops.transpose(ops.reshape(x, (b, n, s, s)), (0, 2, 3, 1))  # (b, S, S, n)
        first = self.model.layers[0]
        k = first.kernel_size
        kernel = ops.reshape(first.kernel, (k, k, n, first.filters))
        x = ops.cast(x, kernel.dtype)
        y = ops.depthwise_conv(x, kernel, 1, "valid") + first.bias    # (b, .., n*C)
        for layer in self.model.layers[1:]:
            y = layer(y, training=False)
        return y

    def dataset_responses(self):
        """`(N, n)` responses to the dataset's images of `split` (`dataset_images`)."""
        if getattr(self, "_dataset_responses", None) is None:
            self._dataset_responses = self.predict(self.dataset_images)
        return self._dataset_responses

    def response_fn(self):
        """keras.ops function raw `(b, n, H, W)` -> `(b, n)` (neuron j sees image j),
        uncompiled, for gradients with respect to the images."""
        return self._own_fn

    # numpy calls
    def _batch(self, per_item):
        if self.batch_size:
            return int(self.batch_size)
        return max(1, min(256, ACTIVATION_BUDGET // per_item))

    def _fn(self, name):
        if name not in self._compiled:
            self._compiled[name] = compile_fn(self._own_fn if name == "own" else self._shared_fn)
        return self._compiled[name]

    def predict(self, raw):
        """raw `(b, H, W)` -> `(b, n)` numpy, every neuron on the same images."""
        raw = self._check(raw, 3)
        return batched(self._fn("shared"), raw, self._batch(self.n)).reshape(-1, self.n)

    def predict_own(self, raw):
        """raw `(b, n, H, W)` -> `(b, n)` numpy, neuron j on `raw[:, j]`."""
        raw = self._check(raw, 4)
        per = self.n if self.independent else self.n * self.n
        return batched(self._fn("own"), raw, self._batch(per)).reshape(-1, self.n)

    def _check(self, raw, ndim):
        raw = np.asarray(raw, np.float32)
        want = ((self.n,) if ndim == 4 else ()) + tuple(self.image_shape)
        if raw.ndim != ndim or raw.shape[1:] != want:
            raise InsilicoError(f"stimuli: expected shape (b, {', '.join(map(str, want))}), "
                                f"got {raw.shape}")
        return raw


class Truth:
    """The simulator's noise-free neurons (data_prep.v1_model) for a twin's neurons.

    `params`: their calibrated parameters; `to_unit`: raw `(b, H, W)` -> the simulator's
    `(b, S, S)` images; `best_response (n,)`: the largest noise-free response over the
    dataset's images of the twin's split. `context=False`: the surround terms fixed at
    their calibration means (`v1_model.combine(..., context=False)`). `dataset_images`:
    the twin's `(N, H, W)` source images (for `dataset_responses`).
    """

    def __init__(self, params, to_unit, best_response, context=True, chunk=500,
                 dataset_images=None):
        self.params, self.to_unit, self.best_response = params, to_unit, best_response
        self.context, self.chunk = bool(context), int(chunk)
        self.n = len(params["x0"])
        self.has_surround = np.asarray(params["has_surround"], bool)
        self.dataset_images = dataset_images
        self._dataset_responses = None

    def without_context(self):
        """The same neurons with their surround switched off."""
        return Truth(self.params, self.to_unit, self.best_response, False, self.chunk,
                     self.dataset_images)

    def dataset_responses(self):
        """`(N, n)` noise-free responses to the twin's dataset images."""
        if self._dataset_responses is None:
            self._dataset_responses = self.predict(self.dataset_images)
        return self._dataset_responses

    def _unit(self, raw):
        return np.asarray(self.to_unit(np.asarray(raw, np.float32)), np.float32)

    def predict(self, raw, params=None):
        """raw `(b, H, W)` -> `(b, n)` float64 noise-free responses."""
        from data_prep import v1_model

        params = self.params if params is None else params
        raw = np.asarray(raw, np.float32)
        out = [v1_model.responses(self._unit(raw[s:s + self.chunk]), params,
                                  chunk=self.chunk, context=self.context)
               for s in range(0, len(raw), self.chunk)]
        return np.concatenate(out) if out else np.zeros((0, len(params["x0"])))

    def predict_own(self, raw):
        """raw `(b, n, H, W)` -> `(b, n)`, neuron j on `raw[:, j]`."""
        from data_prep import v1_model

        raw = np.asarray(raw, np.float32)
        cols = [self.predict(raw[:, j], v1_model.select_neurons(self.params, [j]))[:, 0]
                for j in range(self.n)]
        return np.stack(cols, axis=1) if cols else np.zeros((len(raw), 0))


# --------------------------------------------------------------------- loading
def subset_model(model, columns):
    """A copy of `model` predicting only its output `columns` (same weights), or `model`
    itself when that is all of them. Independent core: every per-neuron layer is cut
    down (less work); shared core: only the readout."""
    import keras

    from .. import models

    n = int(model.output_shape[-1])
    columns = [int(c) for c in columns]
    if columns == list(range(n)):
        return model
    shared = model.get_layer("readout").shared_core
    cfg = model.get_config()
    for lc in cfg["layers"]:
        lc.pop("build_config", None)          # shapes are rebuilt for the new width
        c = lc.get("config", {})
        if "n_neurons" in c and (not shared or c.get("name") == "readout"):
            c["n_neurons"] = len(columns)
    sub = keras.Sequential.from_config(cfg)
    for old, new in zip(model.layers, sub.layers):
        per_neuron = not shared or old.name == "readout"
        for v_old, v_new in zip(old.weights, new.weights):
            a = np.asarray(v_old.numpy())
            axis = models.neuron_axis(old, models.var_name(old, v_old)) if per_neuron else None
            if axis is not None:
                size = a.shape[axis] // n
                idx = np.concatenate([np.arange(c * size, (c + 1) * size) for c in columns])
                a = np.take(a, idx, axis=axis)
            v_new.assign(a)
    return sub


def _source_shape(recipe, size, image_shape):
    if image_shape is not None:
        return tuple(int(s) for s in image_shape)
    if recipe is None or recipe["crop"] is None:
        return (size, size)
    crop = recipe["crop"]
    side = int(crop) if crop >= 1 else int(np.ceil(size / crop))
    return (side, side)


def load_twin(run_dir, data_dir=None, neurons=None, split="val", image_shape=None,
              batch_size=None):
    """The run's model and its dataset as a `Twin` (see the class).

    `neurons`: dataset neuron indices ("0:8", "1,5", or a list; default all the run's);
    each must be one the run was trained on. `split`: the dataset's images that give
    `mean_grey`, `norm`, `pixel_range` and `best_response`. `image_shape` (H, W): the
    source images' shape (default: the model's size, or the crop's side when the
    dataset's pipeline crops; datasets do not record their files' shape).
    Raises a TfsacnnError (one line) for a run without a dataset, neurons the run was
    not trained on, or a dataset that does not match the run.
    """
    from .. import data as tdata
    from ..evaluation.analyze import check_run_neurons, load_run, select_neurons
    from ..export import serving_preprocessing

    run = load_run(run_dir)
    data_dir = data_dir or run["data_dir"]
    if data_dir is None:
        raise InsilicoError(f"{run['dir']}: no dataset in config.yaml or metrics.json; "
                            f"pass --data DIR")
    data_dir = pathlib.Path(data_dir)
    manifest = tdata.read_manifest(data_dir)
    run_neurons = check_run_neurons(run, data_dir, manifest)
    if isinstance(neurons, (list, tuple, np.ndarray)):
        neurons = ",".join(str(int(i)) for i in neurons)
    selected = select_neurons(neurons, run_neurons, manifest["n_neurons"])
    if split not in manifest["splits"]:
        raise InsilicoError(f"{data_dir}: has no split {split!r} "
                            f"(has {', '.join(manifest['splits'])})")
    model = subset_model(run["model"], [run_neurons.index(i) for i in selected])
    recipe = serving_preprocessing(manifest)
    size = int(model.input_shape[1])
    pipeline = Pipeline(recipe, _source_shape(recipe, size, image_shape), size)

    images, _ = tdata.load_numpy(data_dir, split, neurons=selected)
    if len(images) == 0:
        raise InsilicoError(f"{data_dir}: split {split!r} has no images")
    src = pipeline.to_source(images[..., 0])
    mean_grey = float(src.mean())
    if recipe is None:
        pixel_range = (float(src.min()), float(src.max()))
    else:
        pixel_range = (0.0, float(recipe["pixel_max"]))
    scale = pipeline.visible[2] / size            # source pixels per model pixel
    norm = float(np.median(np.sqrt(((src - mean_grey) ** 2).sum((1, 2))))) * scale
    ids = [str(manifest["neuron_ids"][i]) for i in selected]
    twin = Twin(model, selected, pipeline, mean_grey, pixel_range, norm,
                batch_size=batch_size, run_dir=run["dir"], data_dir=data_dir, split=split,
                neuron_ids=ids, model_name=model.name)
    twin.dataset_images = _resample_to_source(src, pipeline)
    twin.best_response = twin.dataset_responses().max(0)
    twin.truth = load_truth(data_dir, selected, pipeline, split, twin.dataset_images)
    return twin


def _resample_to_source(src, pipeline):
    """Dataset images in source units `(N, S, S)` placed on the source grid `(N, H, W)`
    (the visible square, nearest-neighbour, mean grey outside): exactly the stored
    images when the source is the model's size, which is the usual case."""
    h, w = pipeline.shape
    top, left, side = pipeline.visible
    n, s = src.shape[0], src.shape[1]
    if (h, w) == (s, s):
        return src.astype(np.float32)
    out = np.full((n, h, w), src.mean(), np.float32)
    idx = np.minimum((np.arange(side) * s) // side, s - 1)
    out[:, top:top + side, left:left + side] = src[:, idx][:, :, idx]
    return out


def load_truth(data_dir, selected, pipeline, split="val", dataset_images=None):
    """`Truth` for a simulated site (DATA/ground_truth.npz), else None."""
    from data_prep import v1_model

    path = pathlib.Path(data_dir) / "ground_truth.npz"
    if not path.is_file():
        return None
    try:
        params = v1_model.select_neurons(v1_model.load_params(path), list(selected))
        with np.load(path, allow_pickle=False) as z:
            key = f"{split}_noise_free"
            best = z[key][:, list(selected)].max(0) if key in z.files else None
    except (KeyError, OSError, ValueError) as e:
        raise InsilicoError(f"{path}: {e}") from None
    if "image_size" in params and params["image_size"] != pipeline.size:
        raise InsilicoError(f"{path}: simulates {params['image_size']}-px images, but the "
                            f"dataset's are {pipeline.size}")
    return Truth(params, pipeline.to_unit, best, dataset_images=dataset_images)
