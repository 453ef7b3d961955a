"""Look inside a trained run: tuning curves, the readout's centre/surround split, attention.

    python -m tfsacnn.analyze --run RUN_DIR [--data DIR] [--split val|test] [--neurons 0:8]
        [--top 4] [--out DIR] [--tensorboard LOGDIR] [--step N] [--batch-size B]

A run whose own dataset has changed since training (manifest sha256) is refused. Writes
into `--out` (default `RUN_DIR/analysis/<split>`; for another dataset than the run's,
named with `--data`, `RUN_DIR/analysis/<dataset name>/<split>`), holding the run's lock
when that is inside the run:
- `tuning_curves_pNN.png`: per neuron, the images ranked by real response, real vs
  predicted (16 neurons a page);
- `population_tuning.png`: the population average of those curves, each neuron divided by
  its real peak (the paper's Fig. 8);
- FCL readouts: `decomposition.png` + `decomposition.npz`: the prediction split into the
  centre hypercolumn's contribution, the surround's (the other 80 positions) and the bias,
  which sum exactly to the prediction, as rank-ordered curves averaged over neurons
  (Fig. 7). FC1 readouts report their centre and surround branches (each weighted by the
  2 -> 1 combination) and the combination bias. CTL readouts have no surround: a note,
  nothing written;
- SA models: `attention_pNN.png` + `attention.npz`: for each neuron's `--top` images by
  real response, the centre hypercolumn's attention row (query position (4, 4) of the
  9x9 map, a softmax over the 81 keys; heads averaged), bilinearly upsampled to the image
  size and overlaid on it (Fig. 10), 8 neurons a page; analysis.json says how selective
  those rows are (entropy / log 81: 1 = uniform; mean largest weight, 1/81 = uniform);
- simulated sites (DATA/ground_truth.npz): the causal surround test,
  `causal_surround.npz` and analysis.json `causal_surround`. Per neuron, composites
  take the CRF disc from one image and the surround from another (smooth 2-px seam);
  the model's predicted change from the swap is compared with the noise-free truth's:
  `corr` and `slope` of the changes (surround neurons), and `change_rms` (r.m.s. change
  / the model's response s.d.): for controls, whose true change is 0, the *false surround*.
  200 pairs per neuron, fewer when neurons x pairs would pass 20,000 composites (the
  model predicts every neuron on each);
- `analysis.json`: what was analysed, per-neuron CORR, the files written.
`--tensorboard LOGDIR` logs the same pictures with `tf.summary.image` under `analyze/<name>`.

`--neurons` takes dataset neuron indices ("0:8", "1,5,7"), as `tfsacnn.fit` does; each must
be one the run was trained on (`metrics.json` `neurons`). Default: all of the run's neurons.
Errors are one line, `error: <path>: <problem>`, exit status 2.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys
import zipfile

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from tfsacnn.evaluation import plots  # noqa: E402
from tfsacnn.errors import (ConfigError, OneLineParser, TfsacnnError,  # noqa: E402
                            require_tensorflow, run_cli)
from tfsacnn.files import (check_writable, read_json, read_yaml, write_bytes,  # noqa: E402
                           write_npz, write_text)
from tfsacnn.runs import RunLock, check_data, dataset_name  # noqa: E402

TUNING_PER_PAGE = 16
ATTENTION_PER_PAGE = 8
ACTIVATION_BUDGET = 2048     # images x neurons per forward batch (~0.5 GB of activations)


class AnalyzeError(TfsacnnError):
    """The run or data cannot be analysed; the message is `<path>: <problem>`."""


# --------------------------------------------------------------------------- the run
def _read_json(path):
    return read_json(path, AnalyzeError)


def _read_yaml(path):
    return read_yaml(path, AnalyzeError)


def _use_runnable_convs(model):
    """A model saved with `implementation="grouped"` cannot run eagerly on CPU; the
    `"map"` implementation uses the same weights, so switch to it there."""
    from tfsacnn.nn.layers import NeuronConv2D, device_has_gpu

    if device_has_gpu():
        return
    for layer in model.layers:
        if isinstance(layer, NeuronConv2D) and layer.implementation == "grouped":
            layer.implementation = "map"


def load_run(run_dir):
    """Load RUN/model.keras, config.yaml and metrics.json.

    -> {"dir", "model", "config", "metrics", "neurons" (list of dataset indices from
    metrics.json, else config.yaml's `data.neurons` list as import-torch writes it; None
    when neither says), "neuron_ids" (or None), "data_dir" (or None)}.
    Raises AnalyzeError.
    """
    from ..runs import run_file

    run = pathlib.Path(run_dir)
    model_path = run_file(run, "model.keras", AnalyzeError,
                          f" (is {run} a trained run directory?)")
    config = _read_yaml(run / "config.yaml") if (run / "config.yaml").is_file() else {}
    metrics = _read_json(run / "metrics.json") if (run / "metrics.json").is_file() else {}

    import keras

    import tfsacnn.nn.layers  # noqa: F401  (registers the custom layers)

    # keras says "File not found" for a file that is there but not a zip archive.
    if not zipfile.is_zipfile(model_path):
        raise AnalyzeError(f"{model_path}: corrupt or truncated .keras file (not a zip archive)")
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as e:  # noqa: BLE001  (keras raises many kinds for a bad file)
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise AnalyzeError(f"{model_path}: cannot load ({type(e).__name__}: {first})") from None
    if not any(layer.name == "readout" for layer in model.layers):
        raise AnalyzeError(f"{model_path}: not a tfsacnn model (no 'readout' layer)")
    _use_runnable_convs(model)
    n_out = int(model.output_shape[-1])

    neurons, source = metrics.get("neurons"), run / "metrics.json"
    listed = (config.get("data") or {}).get("neurons") if isinstance(config, dict) else None
    if neurons is None and isinstance(listed, list):   # import-torch: config.yaml names them
        neurons, source = listed, run / "config.yaml"
    if neurons is not None:
        if (not isinstance(neurons, list) or not neurons or len(set(neurons)) != len(neurons)
                or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                           for i in neurons)):
            raise AnalyzeError(f"{source}: 'neurons' must be a list of distinct "
                               f"dataset neuron indices")
        if len(neurons) != n_out:
            raise AnalyzeError(f"{source}: lists {len(neurons)} neurons, but "
                               f"{model_path} predicts {n_out}")
    ids = metrics.get("neuron_ids")
    if not (isinstance(ids, list) and neurons is not None and len(ids) == len(neurons)):
        ids = None
    data_dir = None
    for source in (metrics.get("data"), config.get("data")):
        if isinstance(source, dict) and isinstance(source.get("dir"), str):
            data_dir = source["dir"]
            break
    return {"dir": run, "model": model, "config": config, "metrics": metrics,
            "neurons": neurons, "neuron_ids": ids, "data_dir": data_dir}


def check_run_neurons(run, data_dir, manifest):
    """Refuse a dataset that does not match the run; return the run's neuron indices."""
    model = run["model"]
    model_path = run["dir"] / "model.keras"
    n_data = manifest["n_neurons"]
    size = model.input_shape[1]
    if size is not None and manifest["image_size"] != size:
        raise AnalyzeError(f"{data_dir}: images are {manifest['image_size']}x"
                           f"{manifest['image_size']}, but {model_path} takes {size}x{size}")
    neurons = run["neurons"]
    n_out = int(model.output_shape[-1])
    if neurons is None:
        if n_out != n_data:
            raise AnalyzeError(f"{data_dir}: has {n_data} neurons, but {model_path} predicts "
                               f"{n_out} and {run['dir'] / 'metrics.json'} does not list which")
        neurons = list(range(n_data))
    if max(neurons) >= n_data:
        raise AnalyzeError(f"{data_dir}: has {n_data} neurons, but the run was trained on "
                           f"neuron index {max(neurons)} (wrong dataset?)")
    if run["neuron_ids"] is not None:
        for i, rid in zip(neurons, run["neuron_ids"]):
            if str(manifest["neuron_ids"][i]) != str(rid):
                raise AnalyzeError(f"{data_dir}: neuron {i} is {manifest['neuron_ids'][i]!r} "
                                   f"here but {rid!r} in the run (wrong dataset?)")
    return neurons


def select_neurons(spec, run_neurons, n_data):
    """Dataset neuron indices chosen by `--neurons` (default: all of the run's)."""
    from tfsacnn.data import parse_neurons_flag

    if spec is None:
        return list(run_neurons)
    chosen = parse_neurons_flag(spec, n_data)
    known = set(run_neurons)
    for i in chosen:
        if i not in known:
            span = (f"{min(run_neurons)}..{max(run_neurons)}" if len(run_neurons) > 3
                    else ", ".join(map(str, run_neurons)))
            raise ConfigError(f"--neurons: neuron {i} is not one the run was trained on "
                              f"({len(run_neurons)} neurons: {span})")
    return chosen


# --------------------------------------------------------------------------- forward
def readout_kind(model):
    return model.get_layer("readout").kind


def center_attention(model, images):
    """The centre hypercolumn's attention row: `(B, n_groups, heads, P)`, P = 81 keys.

    Uses `models.attention_maps` (`(B, n, heads, P, P)`, rows = queries) and takes the
    row of the centre position (index 40 = (4, 4) of the 9x9 map); each row sums to 1.
    """
    from tfsacnn import models

    att = np.asarray(models.attention_maps(model, images))
    side = int(round(att.shape[-1] ** 0.5))
    return att[:, :, :, (side // 2) * side + side // 2, :]


def attention_selectivity(rows):
    """How far attention rows `(..., P)` (each summing to 1) are from uniform.

    Returns {"entropy_over_uniform": mean H(row) / log P (1 = uniform, 0 = one key),
    "max_weight": mean largest weight (1/P = uniform)}.
    """
    rows = np.asarray(rows, np.float64)
    p = rows.shape[-1]
    h = -np.sum(np.where(rows > 0, rows * np.log(np.maximum(rows, 1e-300)), 0.0), axis=-1)
    return {"entropy_over_uniform": float(np.mean(h) / np.log(p)),
            "max_weight": float(rows.max(-1).mean()), "uniform_max_weight": 1.0 / p}


def forward(model, images, batch_size=None, attention_images=None, attention_columns=None):
    """One pass over `images (N, S, S, 1)` that collects what the analysis needs.

    Returns {"prediction": (N, n), "parts": {name: (N, n)} (the readout's additive parts,
    `Readout.contributions`), "attention": (m, k, heads, P) or None, "map_shape": (h, w)}.
    The prediction is the readout applied to the same features as the parts, i.e. exactly
    `model(images)` in inference mode.
    `attention_images (m, k)` image indices and `attention_columns (m,)` model output
    columns: for an SA model, the centre hypercolumn's attention row of column
    `attention_columns[a]`'s network on image `attention_images[a, b]` (a shared core has
    one attention for every column). Any Keras backend; TensorFlow's fast path runs the
    step in graph mode.
    """
    import keras

    n = int(model.output_shape[-1])
    n_img = len(images)
    if batch_size is None:
        batch_size = max(1, min(256, ACTIVATION_BUDGET // n))
    readout = model.get_layer("readout")
    if model.layers[-1] is not readout:
        raise AnalyzeError(f"{model.name}: the readout is not the last layer")
    want_att = attention_images is not None and any(layer.name == "self_attention"
                                                    for layer in model.layers)
    map_shape = []

    def step(x):
        att = None
        for layer in model.layers:
            if layer is readout:
                break
            if layer.name == "self_attention" and want_att:
                h, w = int(x.shape[1]), int(x.shape[2])
                map_shape[:] = [h, w]
                x, att = layer(x, training=False, return_attention=True)
                att = att[:, :, :, (h // 2) * w + w // 2, :]          # (B, g, heads, P)
            else:
                x = layer(x, training=False)
        return readout(x), readout.contributions(x), att

    if keras.backend.backend() == "tensorflow":   # fast path: graph mode, the per-neuron
        import tensorflow as tf                     # map_fn runs in parallel

        step = tf.function(step)
    numpy = keras.ops.convert_to_numpy
    prediction = np.zeros((n_img, n), np.float32)
    parts = {}
    att_out = None
    if want_att:
        idx = np.asarray(attention_images, dtype=np.int64)
        cols = np.broadcast_to(np.asarray(attention_columns, dtype=np.int64)[:, None], idx.shape)
    for start in range(0, n_img, batch_size):
        x = np.asarray(images[start:start + batch_size], np.float32)
        stop = start + len(x)
        if len(x) < batch_size and start > 0:      # pad the last batch: one trace only
            x = np.concatenate([x, np.zeros((batch_size - len(x),) + x.shape[1:], x.dtype)])
        pred, got, att = step(keras.ops.convert_to_tensor(x))
        prediction[start:stop] = numpy(pred)[:stop - start]
        for name, value in got.items():
            parts.setdefault(name, np.zeros((n_img, n), np.float32))[start:stop] = \
                numpy(value)[:stop - start]
        if want_att:
            att = numpy(att)
            if att_out is None:
                att_out = np.full(idx.shape + att.shape[2:], np.nan, np.float32)
            inside = (idx >= start) & (idx < stop)
            g = att.shape[1]
            att_out[inside] = att[idx[inside] - start, cols[inside] if g > 1 else 0]
    map_shape = tuple(map_shape) or None
    return {"prediction": prediction, "parts": parts, "attention": att_out,
            "map_shape": map_shape}


# --------------------------------------------------------------------------- causal surround test
SEAM_PX = 2.0          # width of the raised-cosine seam just outside the CRF disc (pixels)
SURROUND_PAIRS = 200   # (centre image, surround image) pairs per neuron in `analyze`
SURROUND_COMPOSITES = 20000   # at most this many composites in `analyze` (fewer pairs for
                              # many neurons: the model predicts every neuron on each one)


def crf_weights(size, x0, y0, radius, seam=SEAM_PX):
    """(n, size, size) float64 weight of the centre image: 1 on each neuron's CRF disc
    (distance <= radius[j] from (x0[j], y0[j])), a raised cosine down to 0 at radius + seam,
    0 beyond. x0, y0, radius: (n,) in pixels (x = column, y = row)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    x0, y0, radius = (np.asarray(v, np.float64)[:, None, None] for v in (x0, y0, radius))
    r = np.hypot(x - x0, y - y0)
    t = np.clip((r - radius) / seam, 0.0, 1.0) if seam > 0 else (r > radius).astype(np.float64)
    return np.where(r <= radius, 1.0, 0.5 * (1.0 + np.cos(np.pi * t)))


def crf_composite(centre, surround, weight):
    """Images with `centre`'s CRF and `surround`'s surround: (B, S, S[, 1]) each, weight
    (S, S) from `crf_weights`. Pixels with weight 1 are `centre`'s exactly, weight 0
    `surround`'s exactly; a smooth blend between."""
    centre = np.asarray(centre)
    surround = np.asarray(surround)
    w = weight.reshape(weight.shape + (1,) * (centre.ndim - 3)).astype(np.float64)
    mix = surround + w * (centre.astype(np.float64) - surround)
    return np.where(w == 1.0, centre, np.where(w == 0.0, surround, mix)).astype(centre.dtype)


def swap_pairs(n_images, n_pairs, seed=0):
    """(n_pairs, 2) int64 (centre image, surround image) index pairs, the two different,
    drawn with a fixed seed (the same for every model)."""
    if n_images < 2:
        raise AnalyzeError(f"the causal surround test needs >= 2 images, got {n_images}")
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n_images, n_pairs)
    b = (a + rng.integers(1, n_images, n_pairs)) % n_images
    return np.stack([a, b], axis=1).astype(np.int64)


def surround_changes(predict, images, weights, pairs, columns=None):
    """Response change from swapping the surround, per neuron: (n_pairs, n) float64.

    predict: images (B, S, S, 1) -> (B, n_out); images (N, S, S, 1); weights (n, S, S)
    from `crf_weights`; pairs (n_pairs, 2) from `swap_pairs`; columns: the output
    column of each neuron (default 0..n-1). Neuron j's change on pair (a, b) is
    predict(composite(a's CRF, b's surround))[col_j] - predict(image a)[col_j].
    """
    columns = np.arange(len(weights)) if columns is None else np.asarray(columns)
    centre, surround = images[pairs[:, 0]], images[pairs[:, 1]]
    comps = [crf_composite(centre, surround, w) for w in weights]
    pred = np.asarray(predict(np.concatenate([centre] + comps)), np.float64)   # one call
    p = len(pairs)
    base = pred[:p, columns]
    return np.stack([pred[p * (j + 1):p * (j + 2), col] for j, col in enumerate(columns)],
                    axis=1) - base


def surround_score(model_change, true_change, scale):
    """Compare a model's surround-swap changes with the noise-free truth's, per neuron.

    model_change, true_change: (n_pairs, n); scale: (n,) the model's response s.d. on the
    unchanged images. -> dict of (n,) float64:
    `corr` (Pearson r of the changes over pairs; NaN where either is constant),
    `slope` (least-squares slope of model change on true change; NaN where the true
    change is constant, e.g. controls),
    `change_rms` (r.m.s. model change / scale: for controls, whose true change is 0 by
    construction, this is the model's *false surround*).
    """
    m = np.asarray(model_change, np.float64)
    t = np.asarray(true_change, np.float64)
    mc, tc = m - m.mean(0), t - t.mean(0)
    vm, vt = (mc * mc).sum(0), (tc * tc).sum(0)
    cov = (mc * tc).sum(0)
    tiny = 1e-12 * np.maximum(1.0, np.abs(t).max(0)) ** 2 * len(t)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where((vm > 0) & (vt > tiny), cov / np.sqrt(vm * vt), np.nan)
        slope = np.where(vt > tiny, cov / vt, np.nan)
        rms = np.sqrt((m * m).mean(0)) / np.asarray(scale, np.float64)
    return {"corr": corr, "slope": slope, "change_rms": rms}


def causal_surround(predict, images, params, n_pairs=SURROUND_PAIRS, seed=0, columns=None,
                    seam=SEAM_PX):
    """The causal surround test of a model on a simulated site's images.

    predict: images (B, S, S, 1) -> (B, n_out); images (N, S, S, 1); params: the
    site's model neurons (`data_prep.v1_model.load_params`, already restricted to the
    n neurons analysed); columns: each neuron's output column (default 0..n-1).
    -> {"pairs", "model_change", "true_change" ((n_pairs, n) each), "has_surround" (n,),
    and `surround_score`'s corr, slope, change_rms}.
    """
    size = images.shape[1]
    weights = crf_weights(size, params["x0"], params["y0"], params["crf_radius"], seam)
    pairs = swap_pairs(len(images), n_pairs, seed)
    model, truth, scale = model_and_true_changes(surround_changes, predict, images, params,
                                                 weights, pairs, columns)
    return {"pairs": pairs, "model_change": model, "true_change": truth,
            "has_surround": np.asarray(params["has_surround"], bool),
            **surround_score(model, truth, scale)}


def model_and_true_changes(changes, predict, images, params, weights, design, columns=None):
    """`changes(system, images, weights, design[, columns])` of the model and of the
    site's noise-free neurons -> (model change, true change, the model's response s.d.
    over `images` per neuron (n,))."""
    from data_prep import v1_model

    truth = changes(lambda x: v1_model.responses(x[..., 0], params), images, weights, design)
    model = changes(predict, images, weights, design, columns)
    cols = np.arange(len(weights)) if columns is None else np.asarray(columns)
    scale = np.asarray(predict(images), np.float64)[:, cols].std(0)
    return model, truth, scale


def causal_summary(result):
    """Group means of `causal_surround`'s scores: {"surround": {corr, slope, change_rms,
    n}, "control": {false_surround (mean change_rms), n}} (NaN-free means; None if empty)."""
    has = result["has_surround"]

    def mean(x):
        x = x[np.isfinite(x)]
        return float(x.mean()) if len(x) else None

    return {"surround": {"n": int(has.sum()), "corr": mean(result["corr"][has]),
                         "slope": mean(result["slope"][has]),
                         "change_rms": mean(result["change_rms"][has])},
            "control": {"n": int((~has).sum()), "false_surround": mean(result["change_rms"][~has])}}


CENTRE_FRACTION = 0.2   # centres of the triple test: each neuron's top 20 % driving images


def swap_triples(drivers, n_images, n_triples, seed=0):
    """(n_triples, 3) int64 (centre a, surround b, surround c) index triples, a drawn
    from `drivers` (the neuron's driving images), b and c two different images, both
    different from a; fixed seed (the same for every model)."""
    drivers = np.asarray(drivers, np.int64)
    if n_images < 3 or len(drivers) == 0:
        raise AnalyzeError(f"the causal triple test needs >= 3 images and >= 1 driving "
                           f"image, got {n_images} and {len(drivers)}")
    rng = np.random.default_rng(seed)
    a = drivers[rng.integers(0, len(drivers), n_triples)]
    s1 = rng.integers(1, n_images, n_triples)                # b = a + s1, s1 in [1, N-1]
    s2 = rng.integers(1, n_images - 1, n_triples)            # s2 in [1, N-1] without s1
    s2 = s2 + (s2 >= s1)
    b, c = (a + s1) % n_images, (a + s2) % n_images
    return np.stack([a, b, c], axis=1).astype(np.int64)


def driving_images(clean, fraction=CENTRE_FRACTION):
    """Per neuron, the indices of its top `fraction` images by noise-free response:
    clean (N, n) -> list of n int64 arrays (at least 1 image each)."""
    clean = np.asarray(clean, np.float64)
    k = max(1, int(round(fraction * len(clean))))
    order = np.argsort(-clean, axis=0, kind="stable")
    return [order[:k, j].astype(np.int64) for j in range(clean.shape[1])]


def triple_responses(predict, images, weights, triples, columns=None):
    """R(a|b) and R(a|c) per neuron: (2, n_triples, n) float64, with R(a|b) the response of
    each neuron's column to the composite of a's CRF and b's surround.

    predict: images (B, S, S, 1) -> (B, n_out); images (N, S, S, 1); weights (n, S, S)
    from `crf_weights`; triples: list of n (p, 3) arrays from `swap_triples`; columns:
    each neuron's output column (default 0..n-1). One predict call.
    """
    columns = np.arange(len(weights)) if columns is None else np.asarray(columns)
    batches = []
    for w, t in zip(weights, triples):
        batches += [crf_composite(images[t[:, 0]], images[t[:, 1]], w),
                    crf_composite(images[t[:, 0]], images[t[:, 2]], w)]
    pred = np.asarray(predict(np.concatenate(batches)), np.float64)
    out, s = [], 0
    for col, t in zip(columns, triples):
        p = len(t)
        out.append(np.stack([pred[s:s + p, col], pred[s + p:s + 2 * p, col]]))
        s += 2 * p
    return np.stack(out, axis=2)


def triple_changes(predict, images, weights, triples, columns=None):
    """R(a|b) - R(a|c) per neuron: (n_triples, n) float64 (`triple_responses`' difference).
    Both terms carry a foreign surround on the same centre, so the change does not mix in
    "remove a's own surround". Arguments as `triple_responses`.
    """
    r = triple_responses(predict, images, weights, triples, columns)
    return r[0] - r[1]


def causal_scores(model_change, true_change, scale):
    """Per-neuron scores of a model's triple changes against the truth's.

    model_change, true_change: (p, n); scale: (n,) the model's response s.d. -> dict of
    (n,) float64: `corr` (Pearson r; 0 where either change is constant, never NaN),
    `fve` (fraction of the true change's variance explained, 1 - sum((m' - t')^2) /
    sum(t'^2) with m', t' the changes minus their means over triples (the mean of
    R(a|b) - R(a|c) is 0 by symmetry): 1 for the truth, 0 for a constant change, < 0 for a
    wrong one, 0.75 for the right change at half its size; NaN only where the true change
    is constant, e.g. controls),
    `change_rms` (r.m.s. model change / scale: a control's false surround).
    """
    m = np.asarray(model_change, np.float64)
    t = np.asarray(true_change, np.float64)
    mc, tc = m - m.mean(0), t - t.mean(0)
    vm, vt = (mc * mc).sum(0), (tc * tc).sum(0)
    tiny = 1e-12 * np.maximum(1.0, np.abs(t).max(0)) ** 2 * len(t)
    tiny_m = 1e-12 * np.maximum(1.0, np.abs(m).max(0)) ** 2 * len(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where((vm > tiny_m) & (vt > tiny), (mc * tc).sum(0) / np.sqrt(vm * vt), 0.0)
        fve = np.where(vt > tiny, 1.0 - ((mc - tc) ** 2).sum(0) / vt, np.nan)
        rms = np.sqrt((m * m).mean(0)) / np.asarray(scale, np.float64)
    return {"corr": corr, "fve": fve, "change_rms": rms}


def triple_design(images, params, n_triples=SURROUND_PAIRS, seed=0, seam=SEAM_PX,
                  fraction=CENTRE_FRACTION):
    """The causal triple test's stimuli on `images` (N, S, S, 1) of a simulated site, from
    the images and the simulator's `params` only (no recorded response): -> (weights (n, S, S)
    from `crf_weights`, triples: list of n (n_triples, 3) from `swap_triples`, centres from
    each neuron's driving images of the noise-free truth, seed + neuron)."""
    from data_prep import v1_model

    size = images.shape[1]
    weights = crf_weights(size, params["x0"], params["y0"], params["crf_radius"], seam)
    clean = v1_model.responses(images[..., 0], params)
    triples = [swap_triples(d, len(images), n_triples, seed + j)
               for j, d in enumerate(driving_images(clean, fraction))]
    return weights, triples


def causal_triples(predict, images, params, n_triples=SURROUND_PAIRS, seed=0, columns=None,
                   seam=SEAM_PX, fraction=CENTRE_FRACTION):
    """The unconfounded causal surround test of a model on a simulated site's images.

    Per neuron: the stimuli of `triple_design`, the change R(a|b) - R(a|c) of the model
    and of the truth, scored by `causal_scores`.
    predict, images, params, columns as `causal_surround`.
    -> {"triples" (list of (p, 3)), "model_change", "true_change" ((p, n) each),
    "has_surround" (n,), and `causal_scores`' corr, fve, change_rms}.
    """
    weights, triples = triple_design(images, params, n_triples, seed, seam, fraction)
    model, truth, scale = model_and_true_changes(triple_changes, predict, images, params,
                                                 weights, triples, columns)
    return {"triples": triples, "model_change": model, "true_change": truth,
            "has_surround": np.asarray(params["has_surround"], bool),
            **causal_scores(model, truth, scale)}


def model_predictor(model, batch_size=None):
    """images (B, S, S, 1) -> (B, n) numpy predictions of a loaded model (inference mode):
    `forward` under TensorFlow, `model.predict` under another Keras backend (JAX)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return lambda x: np.asarray(model.predict(np.asarray(x, np.float32),
                                                  batch_size=batch_size or 256, verbose=0))
    return lambda x: forward(model, np.asarray(x, np.float32), batch_size=batch_size)["prediction"]


# --------------------------------------------------------------------------- analysis
def _pages(items, per_page):
    return [items[i:i + per_page] for i in range(0, len(items), per_page)]


def _write_png(out, name, fig, pictures):
    png = plots.figure_to_png(fig)
    path = out / f"{name}.png"
    write_bytes(path, png)
    pictures[name] = png
    return path


def _check_logdir(path):
    """Refuse a --tensorboard LOGDIR that cannot become a directory, before any work."""
    path = pathlib.Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise ConfigError(f"{p}: not a directory (--tensorboard needs a log directory)")
            if not os.access(p, os.W_OK | os.X_OK):
                raise ConfigError(f"{p}: not writable (--tensorboard)")
            return


def analyze(run_dir, data_dir=None, split="val", neurons=None, top=4, out=None,
            tensorboard=None, step=0, batch_size=None, log=print, surround_pairs=SURROUND_PAIRS):
    """Analyse a run on one split; write pictures and numbers into `out`. -> summary dict.

    On a simulated site (DATA/ground_truth.npz), also the causal surround test
    (`causal_surround`, `surround_pairs` pairs per neuron; 0 skips it).
    Raises TfsacnnError subclasses (AnalyzeError, DataError, ConfigError).
    """
    from tfsacnn import data as tdata

    if int(top) < 1:
        raise ConfigError(f"--top: must be >= 1, got {top}")
    if batch_size is not None and int(batch_size) < 1:
        raise ConfigError(f"--batch-size: must be >= 1, got {batch_size}")
    if tensorboard is not None:
        _check_logdir(tensorboard)
    run = load_run(run_dir)
    data_dir, same = check_data(run["dir"], data_dir)    # refuses the run's data changed
    data_dir = data_dir or run["data_dir"]
    if data_dir is None:
        raise AnalyzeError(f"{run['dir']}: no data directory in config.yaml or metrics.json; "
                           f"pass --data DIR")
    if out is None:             # another dataset's pictures apart from the run's own
        out = run["dir"] / "analysis" / (split if same else f"{dataset_name(data_dir)}/{split}")
    out = pathlib.Path(out)
    inside = run["dir"].resolve() in (out.resolve(), *out.resolve().parents)
    with RunLock(run["dir"]) if inside else contextlib.nullcontext():
        return _analyze(run, data_dir, split, neurons, top, out, tensorboard, step,
                        batch_size, log, surround_pairs)


def _analyze(run, data_dir, split, neurons, top, out, tensorboard, step, batch_size, log,
             surround_pairs):
    """`analyze` on a loaded run and a checked dataset, into `out` (locked if in the run)."""
    from tfsacnn import data as tdata

    model = run["model"]
    manifest = tdata.read_manifest(data_dir)
    run_neurons = check_run_neurons(run, data_dir, manifest)
    selected = select_neurons(neurons, run_neurons, manifest["n_neurons"])
    columns = [run_neurons.index(i) for i in selected]
    images, y = tdata.load_numpy(data_dir, split, neurons=selected)
    if len(images) == 0:
        raise AnalyzeError(f"{data_dir}: split {split!r} has no images")
    ids = [str(manifest["neuron_ids"][i]) for i in selected]
    labels = [f"{i} ({nid})" for i, nid in zip(selected, ids)]
    top = min(int(top), len(images))
    kind = readout_kind(model)
    has_sa = any(layer.name == "self_attention" for layer in model.layers)
    top_images = plots.rank_order(y)[:top].T                       # (m, top)

    fw = forward(model, images, batch_size=batch_size,
                 attention_images=top_images if has_sa else None,
                 attention_columns=columns)
    pred = fw["prediction"][:, columns]
    parts = {k: v[:, columns] for k, v in fw["parts"].items()}
    sum_error = float(np.max(np.abs(np.sum(list(parts.values()), axis=0) - pred)))

    out.mkdir(parents=True, exist_ok=True)
    what = f"{model.name} ({run['dir'].name}), {split}"
    pictures, files, notes = {}, [], []

    # tuning curves
    pages = _pages(list(range(len(selected))), TUNING_PER_PAGE)
    for p, page in enumerate(pages, 1):
        fig = plots.tuning_curve_figure(y[:, page], pred[:, page], [labels[j] for j in page],
                                        max_neurons=TUNING_PER_PAGE, population=False,
                                        title=f"{what}: tuning curves "
                                              f"(page {p}/{len(pages)})")
        files.append(_write_png(out, f"tuning_curves_p{p:02d}", fig, pictures))
    fig = plots.population_tuning_figure(
        y, {model.name: pred},
        title=f"{what}: population average tuning curve ({len(selected)} neurons)")
    files.append(_write_png(out, "population_tuning", fig, pictures))

    # readout decomposition
    decomposition = None
    if kind == "ctl":
        notes.append("readout is CTL (centre hypercolumn only): it has no surround, so there "
                     "is no centre/surround decomposition")
    else:
        fig = plots.decomposition_figure(
            y, parts, title=f"{what}: {kind.upper()} readout decomposition, "
                            f"average of {len(selected)} neurons")
        files.append(_write_png(out, "decomposition", fig, pictures))
        (_, *avg), _ = plots.population_average(y, pred, *parts.values(), normalize=False)
        npz = out / "decomposition.npz"
        write_npz(npz, dict(readout=kind, neurons=np.array(selected),
                            neuron_ids=np.array(ids), responses=y, prediction=pred,
                            part_names=np.array(list(parts)), rank_order=plots.rank_order(y),
                            max_abs_sum_error=sum_error, avg_prediction=avg[0], **parts,
                            **{f"avg_{k}": a for k, a in zip(parts, avg[1:])}))
        files.append(npz)
        decomposition = {"readout": kind, "parts": list(parts),
                         "max_abs_sum_error": sum_error,
                         "mean": {k: float(v.mean()) for k, v in parts.items()}}

    # attention
    attention = None
    if not has_sa:
        notes.append("model has no self-attention layer: no attention maps")
    else:
        rows = fw["attention"]                                    # (m, top, heads, P)
        h, w = fw["map_shape"]
        maps9 = rows.mean(axis=2).reshape(len(selected), top, h, w)
        size = images.shape[1:3]
        maps = plots.upsample_map(maps9, size).astype(np.float32)
        shown = images[top_images, :, :, 0]                       # (m, top, S, S)
        resp = np.take_along_axis(y, top_images.T, axis=0).T      # (m, top)
        for p, page in enumerate(_pages(list(range(len(selected))), ATTENTION_PER_PAGE), 1):
            cells = [[f"#{b + 1} img {top_images[j, b]}  resp {resp[j, b]:.2f}"
                      for b in range(top)] for j in page]
            fig = plots.attention_figure(
                shown[page], maps9[page], [labels[j] for j in page], cells,
                title=f"{what}: centre hypercolumn's attention on each neuron's top images")
            files.append(_write_png(out, f"attention_p{p:02d}", fig, pictures))
        npz = out / "attention.npz"
        write_npz(npz, dict(neurons=np.array(selected), neuron_ids=np.array(ids),
                            image_index=top_images, responses=resp, center_rows=rows,
                            center_index=(h // 2) * w + w // 2, maps=maps))
        files.append(npz)
        attention = {"heads": int(rows.shape[2]), "positions": int(rows.shape[3]),
                     "top": top, "center_index": (h // 2) * w + w // 2,
                     **attention_selectivity(rows)}

    # causal surround test (simulated sites only)
    causal = None
    gt_path = pathlib.Path(data_dir) / "ground_truth.npz"
    if int(surround_pairs) > 0 and gt_path.is_file():
        from data_prep import v1_model

        try:
            params = v1_model.select_neurons(v1_model.load_params(gt_path), selected)
        except (KeyError, OSError, ValueError) as e:
            raise AnalyzeError(f"{gt_path}: {e}") from None
        n_pairs = max(2, min(int(surround_pairs), SURROUND_COMPOSITES // len(selected)))
        res = causal_surround(lambda x: forward(model, x, batch_size)["prediction"], images,
                              params, n_pairs, columns=columns)
        npz = out / "causal_surround.npz"
        write_npz(npz, dict(neurons=np.array(selected), neuron_ids=np.array(ids), **res))
        files.append(npz)
        causal = {"pairs": n_pairs, "seam_px": SEAM_PX,
                  "per_neuron": {k: [None if not np.isfinite(v) else round(float(v), 6)
                                     for v in res[k]] for k in ("corr", "slope", "change_rms")},
                  **causal_summary(res)}

    corr = plots.corr_columns(y, pred)
    summary = {
        "run": str(run["dir"]), "model": model.name, "readout": kind, "data": str(data_dir),
        "split": split, "n_images": int(len(images)), "neurons": selected, "neuron_ids": ids,
        "corr": [None if np.isnan(c) else round(float(c), 6) for c in corr],
        "mean_corr": None if np.all(np.isnan(corr)) else float(np.nanmean(corr)),
        "decomposition": decomposition, "attention": attention, "causal_surround": causal,
        "notes": notes,
        "files": [p.name for p in files],
    }
    write_text(out / "analysis.json", json.dumps(summary, indent=1) + "\n")

    if tensorboard is not None:
        import tensorflow as tf

        writer = tf.summary.create_file_writer(str(tensorboard))
        with writer.as_default():
            for name, png in pictures.items():
                tf.summary.image(f"analyze/{name}", plots.png_to_tf_image(png), step=int(step),
                                 description=what)
        writer.flush()
        writer.close()
        summary["tensorboard"] = str(tensorboard)

    for note in notes:
        log(f"note: {note}")
    mean_corr = summary["mean_corr"]
    log(f"{what}: {len(selected)} neurons, {len(images)} images, mean CORR "
        f"{'n/a' if mean_corr is None else f'{mean_corr:.4f}'}")
    log(f"wrote {len(files) + 1} files to {out}"
        + (f"; logged {len(pictures)} images to {tensorboard}" if tensorboard else ""))
    return summary


# --------------------------------------------------------------------------- CLI
def _parser():
    from tfsacnn.errors import DeprecatedAlias, add_output_flags, int_at_least, split_name

    p = OneLineParser(
        prog="python -m tfsacnn.analyze",
        description="Tuning curves, centre/surround readout decomposition and attention maps "
                    "of a trained run.")
    p.add_argument("--run", required=True, metavar="RUN_DIR",
                   help="run directory (holds model.keras)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="dataset directory (default: the run's data.dir)")
    p.add_argument("--split", default=None, type=split_name,
                   help="split to analyse (default: test when the dataset has one, else val)")
    p.add_argument("--neurons", default=None,
                   help="dataset neuron indices, e.g. 0:8 or 1,5,7 (default: all of the run's)")
    p.add_argument("--top-k", type=int_at_least(1), default=4,
                   help="images per neuron for the attention pictures")
    p.add_argument("--top", dest="top_k", type=int_at_least(1), new="--top-k",
                   action=DeprecatedAlias)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output directory (default: RUN_DIR/analysis/SPLIT)")
    p.add_argument("--tensorboard", default=None, metavar="LOGDIR",
                   help="also log the pictures as TensorBoard images here")
    p.add_argument("--step", type=int_at_least(0), default=0, help="TensorBoard step")
    p.add_argument("--batch-size", type=int_at_least(1), default=None,
                   help="images per forward batch (default: from the neuron count)")
    add_output_flags(p)
    return p


def main(argv=None):
    from tfsacnn.quiet import quiet_tensorflow

    from .evaluate import default_split

    args = _parser().parse_args(argv)

    def split_of():
        """test when the run's dataset has it, else val (analyze() names a bad dataset)."""
        from tfsacnn.data import read_manifest

        data = args.data
        for name in ("config.yaml", "metrics.json") if data is None else ():
            f = pathlib.Path(args.run) / name
            if f.is_file():
                entry = (read_yaml(f) if name == "config.yaml" else read_json(f)).get("data")
                data = data or (entry or {}).get("dir")
        try:
            return "val" if data is None else default_split(read_manifest(data)["splits"])
        except TfsacnnError:
            return "val"

    def run():
        if args.out:
            check_writable(args.out, directory=True)    # before the long work
        require_tensorflow("tfsacnn analyze")
        quiet_tensorflow(args.verbose)
        analyze(args.run, data_dir=args.data, split=args.split or split_of(),
                neurons=args.neurons, top=args.top_k, out=args.out,
                tensorboard=args.tensorboard, step=args.step, batch_size=args.batch_size,
                log=(lambda *a, **k: None) if args.quiet else print)

    return run_cli(run, path=args.out or args.run)


if __name__ == "__main__":
    sys.exit(main())
