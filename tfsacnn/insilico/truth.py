"""The same experiments on the simulator's noise-free neurons, and how well a twin recovers them.

`run_truth(twin, names, settings)` runs the experiments on `twin.truth` with the twin's
stimulus space (the same stimuli; each system's own optimum and centre, found by the
same protocol). `recovery(model, truth, has_surround)` sets per-neuron values side by
side and summarises across neurons:

- `corr_ssi`, `corr_cmi`, `corr_gsf`: Pearson r over neurons (finite pairs only);
- `orientation_error_deg`: mean circular error of the preferred orientation,
  |((a - b + 90) mod 180) - 90| (orientation is 180-degree periodic);
- `rf_centre_error_px`: mean Euclidean distance of the RF centres (source pixels);
- `sf_error_octaves`: mean |log2(model / truth)| of the preferred SF;
- `closed_loop` (with MEIs): `closed_loop(twin, meis)`.
"""
from __future__ import annotations

import numpy as np

from .experiments import run_experiments
from .forward import InsilicoError

# (experiment, quantity) pairs set side by side per neuron
PAIRED = [("rf", "rf_x"), ("rf", "rf_y"), ("rf", "rf_diameter"),
          ("grating", "centre_x"), ("grating", "centre_y"),
          ("grating", "pref_orientation_deg"), ("grating", "pref_sf"), ("grating", "osi"),
          ("size", "ssi"), ("size", "gsf"), ("size", "surround_diameter"),
          ("contrast_surround", "suppression_iso"), ("contrast_surround", "suppression_cross"),
          ("contrast_surround", "cmi")]


def run_truth(twin, names=None, settings=None, log=None):
    """The experiments on the simulator's neurons (`twin.truth`), or None without one."""
    if twin.truth is None:
        return None
    return run_experiments(twin, twin.truth, names, settings, label="truth", log=log)


def circular_error_deg(a, b, period=180.0):
    """|a - b| on a circle of `period` degrees, in [0, period / 2]."""
    d = np.mod(np.asarray(a, np.float64) - np.asarray(b, np.float64) + period / 2, period)
    return np.abs(d - period / 2)


def pearson(a, b):
    """Pearson r over the finite pairs (NaN with fewer than 3 or no variance)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _nanmean(x):
    x = np.asarray(x, np.float64)
    return float(np.mean(x[np.isfinite(x)])) if np.isfinite(x).any() else float("nan")


def per_neuron_errors(model, truth):
    """Per-neuron recovery errors `{name: (n,)}` of two experiment-result dicts."""
    out = {}
    if "grating" in model and "grating" in truth:
        m, t = model["grating"]["per_neuron"], truth["grating"]["per_neuron"]
        out["orientation_error_deg"] = circular_error_deg(m["pref_orientation_deg"],
                                                          t["pref_orientation_deg"])
        out["rf_centre_error_px"] = np.hypot(m["centre_x"] - t["centre_x"],
                                             m["centre_y"] - t["centre_y"])
        with np.errstate(invalid="ignore", divide="ignore"):
            out["sf_error_octaves"] = np.abs(np.log2(m["pref_sf"] / t["pref_sf"]))
    if "rf" in model and "rf" in truth:
        m, t = model["rf"]["per_neuron"], truth["rf"]["per_neuron"]
        out["rf_map_centre_error_px"] = np.hypot(m["rf_x"] - t["rf_x"], m["rf_y"] - t["rf_y"])
    for exp, q in (("size", "ssi"), ("contrast_surround", "cmi")):
        if exp in model and exp in truth:
            out[f"{q}_error"] = np.abs(model[exp]["per_neuron"][q] - truth[exp]["per_neuron"][q])
    return out


def recovery(model, truth, has_surround=None):
    """Across-neuron summary of how well `model` results recover `truth` results."""
    errs = per_neuron_errors(model, truth)
    out = {k: _nanmean(v) for k, v in errs.items()}
    for exp, q in (("size", "ssi"), ("contrast_surround", "cmi"), ("size", "gsf")):
        if exp in model and exp in truth:
            out[f"corr_{q}"] = pearson(model[exp]["per_neuron"][q], truth[exp]["per_neuron"][q])
    if has_surround is not None and "size" in truth:
        has = np.asarray(has_surround, bool)
        ssi = truth["size"]["per_neuron"]["ssi"]
        out["truth_ssi_surround"] = _nanmean(ssi[has])
        out["truth_ssi_control"] = _nanmean(ssi[~has])
        out["model_ssi_surround"] = _nanmean(model["size"]["per_neuron"]["ssi"][has])
        out["model_ssi_control"] = _nanmean(model["size"]["per_neuron"]["ssi"][~has])
    return out


def closed_loop(twin, meis):
    """The inception loop in silico (Walker et al. 2019): each true neuron's noise-free
    response to the model's MEI for it, relative to its best response over the
    dataset's images. `meis (n, H, W)` source-pixel images, neuron j's MEI at j.
    -> {"truth_response", "truth_best", "relative" (each (n,)),
        "model_response", "model_best", "model_relative"}."""
    if twin.truth is None:
        raise InsilicoError(f"{twin.data_dir}: no ground_truth.npz: the closed loop needs "
                            f"a simulated site")
    meis = np.asarray(meis, np.float32)
    if meis.shape != (twin.n,) + tuple(twin.image_shape):
        raise InsilicoError(f"meis: expected shape ({twin.n}, {twin.image_shape[0]}, "
                            f"{twin.image_shape[1]}), got {meis.shape}")
    truth = twin.truth.predict_own(meis[None])[0]
    model = twin.predict_own(meis[None])[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = truth / twin.truth.best_response
        mrel = model / twin.best_response
    return {"truth_response": truth, "truth_best": np.asarray(twin.truth.best_response),
            "relative": rel, "model_response": model,
            "model_best": np.asarray(twin.best_response), "model_relative": mrel}
