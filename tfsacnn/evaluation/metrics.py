"""Per-neuron evaluation metrics of the paper (pure numpy; no TensorFlow).

Every per-neuron metric takes ``y_true`` and ``y_pred`` of shape
``(n_images, n_neurons)`` and returns a float64 array of shape ``(n_neurons,)``.

- ``corr``: Pearson r of the tuning curve (NaN where either column is constant).
- ``partial_corr``: Pearson r after removing a control's linear part from both. It is not
  a measure of the surround: a prediction built from the CRF alone can score well above
  0 against the CRF-only truth of a simulated site (use
  ``tfsacnn.evaluation.analyze.causal_surround`` for that).
- ``peak_tuning_joint`` (PT_J) and ``peak_tuning_separate`` (PT_S): fractions in
  [0, 1] (reports show them as %). Let ``thr`` be the ``top_k``-th largest true
  response of a neuron.

  * PT_J: take the ``top_k`` images by *true* response; the fraction of them whose
    *prediction* is >= thr. (Real and predicted curves sorted jointly by the real one.)
  * PT_S: take the ``top_k`` largest *predictions* over all images; the fraction of
    those *predicted values* that are >= thr. (Real and predicted curves each sorted
    separately.) This is the reading of the reference code of Lin et al. (ICLR 2025),
    ``analysis/main_analysis.ipynb``, cell "pt_s": both curves are sorted on their
    own and the top predicted values are compared with the real threshold. It also
    implies PT_S >= PT_J for every neuron, as in every row of the paper's Table 1.
    Note that PT_S then depends only on the value distributions, not on which
    image is which: it asks "does the model predict peaks as high as the real ones?".

Two scores split PT into its parts (not in the paper; they say *why* PT changes):

- ``top_overlap`` (TOP): the fraction of the ``top_k`` images by true response that are
  also among the ``top_k`` images by prediction: *which* images are the peaks, whatever
  the predictions' scale.
- ``peak_height``: (mean prediction over the ``top_k`` images by true response - mean
  prediction over all images) / (the same for the true responses): *how high* the
  predicted peaks stand above the mean, 1 = as high as the real ones. MSE training under
  trial noise shrinks it below 1, and PT (a threshold on the predicted values) falls with it.

Ties, deterministic: the top_k images by true response are taken with a stable sort,
so among equal true responses the lower image index wins; thresholds are inclusive
(>=). thr itself does not depend on the tie rule. A neuron with any NaN in its true
or predicted column gets NaN for every metric.
"""
from __future__ import annotations

import numpy as np

# the per-neuron scores a run reports (metrics.json "mean", metrics.csv), in this order
REPORTED = ("corr", "pt_j", "pt_s", "top_overlap", "peak_height")

__all__ = [
    "corr", "peak_tuning_joint", "peak_tuning_separate", "top_overlap", "peak_height",
    "fev", "corr_ceiling", "normalized_corr", "partial_corr", "summarize", "evaluate",
]


def _pair(y_true, y_pred):
    """Validate and cast a (n_images, n_neurons) pair to float64."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.ndim != 2 or p.ndim != 2:
        raise ValueError(
            f"y_true and y_pred must be 2-D (n_images, n_neurons); got shapes {t.shape} and {p.shape}")
    if t.shape != p.shape:
        raise ValueError(f"shape mismatch: y_true {t.shape} vs y_pred {p.shape}")
    if t.shape[0] == 0:
        raise ValueError("no images (n_images == 0)")
    return t, p


def _check_top_k(top_k, n_images):
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    if top_k > n_images:
        raise ValueError(f"top_k={top_k} is larger than the number of images ({n_images})")


def _nan_columns(t, p):
    """(n_neurons,) bool: columns with a NaN in either array."""
    return np.isnan(t).any(axis=0) | np.isnan(p).any(axis=0)


def corr(y_true, y_pred):
    """Pearson r per neuron. (n_images, n_neurons) x2 -> (n_neurons,).

    A constant column (zero variance) in either array gives NaN, without a warning.
    """
    t, p = _pair(y_true, y_pred)
    tc = t - t.mean(axis=0)
    pc = p - p.mean(axis=0)
    denom = np.sqrt((tc * tc).sum(axis=0) * (pc * pc).sum(axis=0))
    num = (tc * pc).sum(axis=0)
    out = np.full(t.shape[1], np.nan)
    ok = np.isfinite(denom) & (denom > 0)
    out[ok] = np.clip(num[ok] / denom[ok], -1.0, 1.0)
    return out


def partial_corr(y_true, y_pred, control):
    """Pearson r of y_true and y_pred per neuron after removing from each its linear
    dependence on `control` (all (n_images, n_neurons)) -> (n_neurons,).

    Not a surround measure: the CRF-only truth of a simulated neuron holds the surround at
    its mean, so surround-blind predictions need not score 0 against it.
    NaN where a residual is constant.
    """
    t, p = _pair(y_true, y_pred)
    _, c = _pair(y_true, control)
    c = c - c.mean(axis=0)
    cc = (c * c).sum(axis=0)
    safe = np.where(cc > 0, cc, 1.0)

    def residual(a):
        a = a - a.mean(axis=0)
        r = a - c * np.where(cc > 0, (a * c).sum(axis=0) / safe, 0.0)
        # an affine function of the control leaves rounding error only: call it constant
        return np.where((r * r).sum(axis=0) <= 1e-20 * (a * a).sum(axis=0), 0.0, r)

    return corr(residual(t), residual(p))


def _top_true(t, top_k):
    """Indices (top_k, n) of the top_k images by true response (stable) and thr (n,)."""
    order = np.argsort(-t, axis=0, kind="stable")[:top_k]
    thr = np.take_along_axis(t, order[-1:], axis=0)[0]
    return order, thr


def peak_tuning_joint(y_true, y_pred, top_k=10):
    """PT_J per neuron. (n_images, n_neurons) x2 -> (n_neurons,) in [0, 1].

    Fraction of the top_k images by true response whose prediction is >= thr,
    thr = the top_k-th largest true response. Ties among true responses: the
    lower image index wins.
    """
    t, p = _pair(y_true, y_pred)
    _check_top_k(top_k, t.shape[0])
    order, thr = _top_true(t, top_k)
    hits = np.take_along_axis(p, order, axis=0) >= thr
    out = hits.mean(axis=0)
    out[_nan_columns(t, p)] = np.nan
    return out


def peak_tuning_separate(y_true, y_pred, top_k=10):
    """PT_S per neuron. (n_images, n_neurons) x2 -> (n_neurons,) in [0, 1].

    Fraction of the top_k largest predicted values (over all images) that are
    >= thr, thr = the top_k-th largest true response (see the module docstring
    for why the predicted values, not their images' true responses, are compared).
    """
    t, p = _pair(y_true, y_pred)
    _check_top_k(top_k, t.shape[0])
    _, thr = _top_true(t, top_k)
    top_pred = np.sort(p, axis=0)[-top_k:]
    out = (top_pred >= thr).mean(axis=0)
    out[_nan_columns(t, p)] = np.nan
    return out


def top_overlap(y_true, y_pred, top_k=10):
    """TOP per neuron. (n_images, n_neurons) x2 -> (n_neurons,) in [0, 1].

    Fraction of the top_k images by true response that are among the top_k images by
    prediction (both stable sorts: the lower image index wins ties).
    """
    t, p = _pair(y_true, y_pred)
    _check_top_k(top_k, t.shape[0])
    member = np.zeros(t.shape, dtype=bool)
    np.put_along_axis(member, _top_true(t, top_k)[0], True, axis=0)
    top_pred = np.argsort(-p, axis=0, kind="stable")[:top_k]
    out = np.take_along_axis(member, top_pred, axis=0).mean(axis=0)
    out[_nan_columns(t, p)] = np.nan
    return out


def peak_height(y_true, y_pred, top_k=10):
    """Predicted peak height relative to the true one. (n_images, n_neurons) x2 -> (n_neurons,).

    (mean of y_pred over the top_k images by true response - mean of y_pred) /
    (mean of y_true over those images - mean of y_true); NaN where the denominator is 0.
    """
    t, p = _pair(y_true, y_pred)
    _check_top_k(top_k, t.shape[0])
    order, _ = _top_true(t, top_k)
    rise_t = np.take_along_axis(t, order, axis=0).mean(axis=0) - t.mean(axis=0)
    rise_p = np.take_along_axis(p, order, axis=0).mean(axis=0) - p.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(rise_t > 0, rise_p / np.where(rise_t > 0, rise_t, 1.0), np.nan)
    out[_nan_columns(t, p)] = np.nan
    return out


def _repeats(repeats):
    r = np.asarray(repeats, dtype=np.float64)
    if r.ndim != 3:
        raise ValueError(f"repeats must be 3-D (n_images, n_repeats, n_neurons); got shape {r.shape}")
    return r


def _trial_noise(r):
    """Per-image across-trial variance (ddof=1) and trial counts, NaN-aware.

    r: (N, R, n) -> var (N, n) (NaN where < 2 trials), count (N, n).
    """
    count = np.sum(~np.isnan(r), axis=1)
    mean = np.nansum(r, axis=1) / np.maximum(count, 1)
    ss = np.nansum((r - mean[:, None, :]) ** 2, axis=1)
    var = np.where(count >= 2, ss / np.maximum(count - 1, 1), np.nan)
    return var, count


def _nanmean0(x, axis=0):
    """nanmean without the all-NaN warning."""
    n = np.sum(~np.isnan(x), axis=axis)
    s = np.nansum(x, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def fev(repeats):
    """Fraction of explainable variance of single trials, per neuron.

    repeats: (n_images, n_repeats, n_neurons), NaN = missing trial -> (n_neurons,).

    FEV = (Var[y] - s2_noise) / Var[y] (Cadena et al. 2019, PLoS Comput Biol), where
    Var[y] is the variance (ddof=1) of all valid single trials of the neuron and
    s2_noise the mean over images (with >= 2 trials) of the across-trial variance
    (ddof=1). It is an estimate: it can be slightly negative for very noisy neurons.
    NaN where the neuron has no variance or no image with 2 trials.
    """
    r = _repeats(repeats)
    var_i, _ = _trial_noise(r)
    noise = _nanmean0(var_i)
    flat = r.reshape(-1, r.shape[2])
    n = np.sum(~np.isnan(flat), axis=0)
    m = np.nansum(flat, axis=0) / np.maximum(n, 1)
    total = np.nansum((flat - m) ** 2, axis=0) / np.maximum(n - 1, 1)
    out = np.full(r.shape[2], np.nan)
    ok = (n >= 2) & (total > 0) & np.isfinite(noise)
    out[ok] = (total[ok] - noise[ok]) / total[ok]
    return out


def corr_ceiling(repeats):
    """Noise ceiling of Pearson r against the trial-averaged response, per neuron.

    repeats: (n_images, n_repeats, n_neurons), NaN = missing trial -> (n_neurons,).

    CC_max of Schoppe et al. (2016, Front Comput Neurosci), in its per-image form
    that tolerates missing trials:
        SP  = Var_i(mean_i) - mean_i(s2_i / R_i)      (signal power)
        CC_max = sqrt(SP / Var_i(mean_i))
    with mean_i the repeat mean of image i, s2_i its across-trial variance (ddof=1)
    and R_i its number of valid trials; Var over images with ddof=1. SP is unbiased
    when trial noise is independent across images, as is Schoppe's inter-trial
    covariance form; unlike that form it also counts trial-wide offsets (drift) as
    noise, so it is slightly conservative. NaN where SP <= 0 or the mean is constant.
    """
    r = _repeats(repeats)
    var_i, count = _trial_noise(r)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.nansum(r, axis=1) / count
    means[count == 0] = np.nan
    noise = _nanmean0(var_i / np.where(count > 0, count, 1))
    n_img = np.sum(~np.isnan(means), axis=0)
    mu = _nanmean0(means)
    var_m = np.nansum((means - mu) ** 2, axis=0) / np.maximum(n_img - 1, 1)
    sp = var_m - noise
    out = np.full(r.shape[2], np.nan)
    ok = (n_img >= 2) & (var_m > 0) & (sp > 0)
    out[ok] = np.sqrt(sp[ok] / var_m[ok])
    return out


def normalized_corr(y_true, y_pred, repeats):
    """CORR divided by its noise ceiling, per neuron: corr / corr_ceiling(repeats).

    y_true, y_pred: (n_images, n_neurons); y_true should be the repeat mean.
    repeats: (n_images, n_repeats, n_neurons). -> (n_neurons,).
    The ceiling is Schoppe et al.'s CC_max (see ``corr_ceiling``). Not clipped: an
    estimate can exceed 1. NaN where corr or the ceiling is NaN.
    """
    t, p = _pair(y_true, y_pred)
    r = _repeats(repeats)
    if r.shape[0] != t.shape[0] or r.shape[2] != t.shape[1]:
        raise ValueError(
            f"shape mismatch: repeats {r.shape} vs y_true {t.shape} (expected ({t.shape[0]}, R, {t.shape[1]}))")
    return corr(t, p) / corr_ceiling(r)


def summarize(per_neuron):
    """Means over neurons with NaN excluded.

    per_neuron: {metric: (n_neurons,)} -> {metric: float mean (NaN if all NaN), ...,
    "n_nan": number of neurons with NaN in at least one metric}. Each metric's mean
    excludes only its own NaNs. ``None`` entries are skipped.
    """
    out = {}
    any_nan = None
    for name, values in per_neuron.items():
        if values is None:
            continue
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        nan = np.isnan(v)
        any_nan = nan if any_nan is None else (any_nan | nan)
        out[name] = float(v[~nan].mean()) if (~nan).any() else float("nan")
    out["n_nan"] = int(any_nan.sum()) if any_nan is not None else 0
    return out


def evaluate(y_true, y_pred, top_k=10, repeats=None):
    """All per-neuron metrics. (n_images, n_neurons) x2 -> {name: (n_neurons,)}.

    Keys: corr, pt_j, pt_s, top_overlap, peak_height; with repeats (n_images,
    n_repeats, n_neurons) also fev, corr_ceiling and normalized_corr.
    """
    out = {
        "corr": corr(y_true, y_pred),
        "pt_j": peak_tuning_joint(y_true, y_pred, top_k),
        "pt_s": peak_tuning_separate(y_true, y_pred, top_k),
        "top_overlap": top_overlap(y_true, y_pred, top_k),
        "peak_height": peak_height(y_true, y_pred, top_k),
    }
    if repeats is not None:
        out["fev"] = fev(repeats)
        out["corr_ceiling"] = corr_ceiling(repeats)
        out["normalized_corr"] = normalized_corr(y_true, y_pred, repeats)
    return out
