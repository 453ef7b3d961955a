"""Figures of tuning curves, readout decompositions and attention maps (matplotlib, no TF).

Every `*_figure` function returns a `matplotlib.figure.Figure` built without pyplot (no
global state, so it is safe inside a training callback and never opens a window).
`figure_to_png(fig) -> bytes` renders and releases it; `png_to_tf_image(png)` turns the
PNG into the `(1, H, W, 4)` uint8 array that `tf.summary.image` takes.

Conventions, as in the paper (Lin et al., ICLR 2025, Figs. 7, 8 and 10):
- A neuron's *tuning curve* is its responses with the images ranked by the **real**
  response, largest first; the prediction is shown in the same image order.
- The *population average* curve averages the rank-ordered curves over neurons after
  dividing each neuron's curves (real and predicted alike) by the peak of its real
  response, so every neuron's real curve starts at 1. Neurons whose real peak is not
  positive are left out (their count is returned).
"""
from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

REAL_COLOR = "black"
PRED_COLOR = "tab:red"
PART_COLORS = {"center": "tab:blue", "center_branch": "tab:blue",
               "surround": "tab:orange", "surround_branch": "tab:orange", "bias": "0.5"}
PART_LABELS = {"center": "centre hypercolumn", "surround": "surround (other 80 positions)",
               "center_branch": "centre branch", "surround_branch": "surround branch",
               "bias": "bias"}


# ----------------------------------------------------------------------------- numbers
def _as_2d(a, name):
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name}: expected (n_images, n_neurons), got shape {a.shape}")
    return a


def rank_order(y_true):
    """Per neuron, the image indices sorted by real response, largest first (NaN last).

    `y_true (N, n)` -> `(N, n)` int array; column j orders neuron j's images.
    """
    t = _as_2d(y_true, "y_true")
    key = np.where(np.isnan(t), np.inf, -t)          # descending, NaN last
    return np.argsort(key, axis=0, kind="stable")


def rank_ordered(y_true, *others):
    """`y_true` and each of `others` (same shape) with every column reordered by `rank_order`."""
    t = _as_2d(y_true, "y_true")
    order = rank_order(t)
    out = [np.take_along_axis(t, order, axis=0)]
    for o in others:
        o = _as_2d(o, "array")
        if o.shape != t.shape:
            raise ValueError(f"shape {o.shape} does not match y_true {t.shape}")
        out.append(np.take_along_axis(o, order, axis=0))
    return out


def population_average(y_true, *others, normalize=True):
    """The population average of rank-ordered curves (the paper's Fig. 8).

    Returns `(curves, n_used)`: `curves` is a list `[real, *others]` of `(N,)` arrays, the
    mean over neurons of the rank-ordered curves; with `normalize`, each neuron's curves
    are divided by its real peak first, and neurons whose peak is not positive (or that
    have NaN) are left out. `n_used` is the number of neurons averaged.
    """
    curves = rank_ordered(y_true, *others)
    peak = curves[0][0]
    keep = np.all([np.all(np.isfinite(c), axis=0) for c in curves], axis=0)
    if normalize:
        keep &= peak > 0
    n_used = int(keep.sum())
    if n_used == 0:
        return [np.full(curves[0].shape[0], np.nan) for _ in curves], 0
    scale = peak[keep] if normalize else 1.0
    return [(c[:, keep] / scale).mean(axis=1) for c in curves], n_used


def corr_columns(y_true, y_pred):
    """Pearson r per column (NaN where a column is constant)."""
    t, p = _as_2d(y_true, "y_true"), _as_2d(y_pred, "y_pred")
    t = t - t.mean(0)
    p = p - p.mean(0)
    den = np.sqrt((t * t).sum(0) * (p * p).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (t * p).sum(0) / den, np.nan)


def upsample_map(maps, size):
    """Bilinear upsampling of `(..., h, w)` maps to `(..., size, size)` (half-pixel centres,
    edges clamped, as `tf.image.resize(method="bilinear")`). Pure numpy."""
    maps = np.asarray(maps, dtype=np.float64)
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))

    def weights(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = src - lo
        w = np.zeros((n_out, n_in))
        w[np.arange(n_out), lo] += 1 - frac
        w[np.arange(n_out), hi] += frac
        return w

    wy = weights(maps.shape[-2], size[0])
    wx = weights(maps.shape[-1], size[1])
    return np.einsum("yh,...hw,xw->...yx", wy, maps, wx)


# ----------------------------------------------------------------------------- figures
def _figure(figsize):
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _grid(n_panels, max_cols=4):
    cols = min(max_cols, max(1, n_panels))
    rows = -(-n_panels // cols)
    return rows, cols


def tuning_curve_figure(y_true, y_pred, neuron_labels=None, *, max_neurons=8, population=True,
                        title=None, top=None):
    """Rank-ordered tuning curves, real vs predicted, of a few neurons plus the population.

    `y_true`, `y_pred`: `(n_images, n_neurons)`. One panel per neuron for the first
    `max_neurons` columns (label from `neuron_labels`, with the neuron's CORR), then, with
    `population=True`, a panel with the population average over *all* columns, each
    neuron normalised by its real peak (Fig. 8). `top`: show only the first `top` ranks
    (None: all images). Returns a Figure.
    """
    t, p = _as_2d(y_true, "y_true"), _as_2d(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ")
    n = t.shape[1]
    labels = [str(x) for x in (neuron_labels if neuron_labels is not None else range(n))]
    if len(labels) != n:
        raise ValueError(f"{len(labels)} neuron labels for {n} neurons")
    shown = list(range(min(n, max_neurons)))
    rows, cols = _grid(len(shown) + bool(population))
    fig = _figure((3.2 * cols, 2.5 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    rt, rp = rank_ordered(t[:, shown], p[:, shown])
    r = corr_columns(t[:, shown], p[:, shown])
    k = t.shape[0] if top is None else min(int(top), t.shape[0])
    x = np.arange(1, k + 1)
    for i, j in enumerate(shown):
        ax = axes[i]
        ax.plot(x, rt[:k, i], color=REAL_COLOR, lw=1.2, label="real")
        ax.plot(x, rp[:k, i], color=PRED_COLOR, lw=0.8, alpha=0.8, label="predicted")
        ax.set_title(f"neuron {labels[j]}  r={r[i]:.2f}", fontsize=9)
        ax.tick_params(labelsize=7)
        if i % cols == 0:
            ax.set_ylabel("response", fontsize=8)
    if population:
        ax = axes[len(shown)]
        (real, pred), used = population_average(t, p)
        ax.plot(x, real[:k], color=REAL_COLOR, lw=1.2, label="real")
        ax.plot(x, pred[:k], color=PRED_COLOR, lw=1.0, label="predicted")
        ax.set_title(f"population average ({used} neurons)", fontsize=9)
        ax.set_ylabel("response / real peak", fontsize=8)
        ax.tick_params(labelsize=7)
    used_panels = len(shown) + bool(population)
    for ax in axes[used_panels:]:
        ax.set_visible(False)
    for ax in axes[:used_panels]:
        ax.set_xlabel("rank by real response", fontsize=7)
    axes[0].legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def population_tuning_figure(y_true, y_pred, *, title=None, top=50):
    """The population average tuning curve (Fig. 8): all ranks, and the first `top` ranks.

    `y_pred`: an `(N, n)` array, or `{label: array}` to overlay several models.
    """
    preds = y_pred if isinstance(y_pred, dict) else {"predicted": y_pred}
    fig = _figure((9, 3.4))
    axes = fig.subplots(1, 2)
    curves, used = population_average(y_true, *preds.values())
    n_img = curves[0].shape[0]
    colors = [PRED_COLOR, "tab:blue", "tab:green", "tab:purple", "tab:brown"]
    for ax, k in zip(axes, (n_img, min(top, n_img))):
        x = np.arange(1, k + 1)
        ax.plot(x, curves[0][:k], color=REAL_COLOR, lw=1.5, label="real")
        for c, (label, curve) in enumerate(zip(preds, curves[1:])):
            ax.plot(x, curve[:k], color=colors[c % len(colors)], lw=1.1, label=label)
        ax.set_xlabel("image rank (by real response)")
        ax.axhline(0, color="0.8", lw=0.5)
    axes[0].set_ylabel("response / real peak")
    axes[0].set_title(f"all {n_img} images", fontsize=9)
    axes[1].set_title(f"top {min(top, n_img)} images", fontsize=9)
    axes[0].legend(fontsize=8)
    fig.suptitle(title or f"population average tuning curve ({used} neurons)", fontsize=10)
    return fig


def decomposition_figure(y_true, parts, *, title=None, top=50):
    """The readout's additive parts as rank-ordered curves averaged over neurons (Fig. 7).

    `parts`: `{name: (N, n)}` whose sum is the prediction (e.g. center, surround, bias).
    Images are ranked per neuron by the real response; curves are averaged over neurons in
    response units (no normalisation, so the parts still add up to the prediction curve).
    Left: all ranks; right: the first `top` ranks.
    """
    t = _as_2d(y_true, "y_true")
    names = list(parts)
    arrays = [_as_2d(parts[k], k) for k in names]
    pred = np.sum(arrays, axis=0)
    ordered = rank_ordered(t, pred, *arrays)
    avg = [np.nanmean(c, axis=1) for c in ordered]
    fig = _figure((9, 3.6))
    axes = fig.subplots(1, 2)
    n_img = t.shape[0]
    for ax, k in zip(axes, (n_img, min(top, n_img))):
        x = np.arange(1, k + 1)
        ax.plot(x, avg[0][:k], color=REAL_COLOR, lw=1.5, label="real")
        ax.plot(x, avg[1][:k], color=PRED_COLOR, lw=1.2, label="prediction (sum)")
        for name, curve in zip(names, avg[2:]):
            ax.plot(x, curve[:k], color=PART_COLORS.get(name), lw=1.1,
                    ls="--" if name == "bias" else "-", label=PART_LABELS.get(name, name))
        ax.axhline(0, color="0.8", lw=0.5)
        ax.set_xlabel("image rank (by real response)")
    axes[0].set_ylabel("mean over neurons")
    axes[0].set_title(f"all {n_img} images", fontsize=9)
    axes[1].set_title(f"top {min(top, n_img)} images", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle(title or f"readout decomposition, average of {t.shape[1]} neurons",
                 fontsize=10)
    return fig


def attention_figure(images, maps, row_labels=None, cell_labels=None, *, center="middle",
                     alpha=0.8, cmap="inferno", title=None):
    """Attention highlighting (Fig. 10): attention maps overlaid on their images.

    `images`: `(R, K, H, W)`, one row per neuron, K images each (non-finite images are
    left blank). `maps`: `(R, K, h, w)` attention over the feature-map positions (e.g. the
    9x9 centre-hypercolumn rows), upsampled here to `(H, W)` with `upsample_map`.
    `center`: `(y, x)` in map coordinates of the query position, marked with a cross;
    `"middle"` = `(h // 2, w // 2)`, None = no mark.
    Each map is divided by its own maximum; colour and opacity both follow the value, so
    the image shows through where the attention is low. A uniform map (1/(h*w)
    everywhere) therefore covers the image evenly. Each cell's title gives the map's
    peak relative to a uniform map ("peak 1.0x uniform" = flat), assuming the map is a
    distribution over the h*w positions (sums to 1).
    """
    from matplotlib import colormaps

    images = np.asarray(images, dtype=np.float64)
    maps = np.asarray(maps, dtype=np.float64)
    if images.ndim != 4 or maps.ndim != 4 or maps.shape[:2] != images.shape[:2]:
        raise ValueError(f"images (R, K, H, W) and maps (R, K, h, w) expected, got "
                         f"{images.shape} and {maps.shape}")
    r, k, h, w = images.shape
    mh, mw = maps.shape[-2:]
    big = upsample_map(maps, (h, w)) if (mh, mw) != (h, w) else maps
    if isinstance(center, str):
        center = (mh // 2, mw // 2)
    colors = colormaps[cmap]
    fig = _figure((1.9 * k + 0.6, 1.95 * r + 0.4))
    axes = fig.subplots(r, k, squeeze=False)
    for i in range(r):
        for j in range(k):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            img = images[i, j]
            if not np.all(np.isfinite(img)):
                ax.set_axis_off()
                continue
            lo, hi = np.min(img), np.max(img)
            ax.imshow((img - lo) / (hi - lo if hi > lo else 1.0), cmap="gray", vmin=0, vmax=1)
            m = big[i, j]
            m = np.clip(m / (m.max() if m.max() > 0 else 1.0), 0, 1)
            overlay = colors(m)
            overlay[..., 3] = alpha * m
            ax.imshow(overlay)
            if center is not None:
                cy = (center[0] + 0.5) * h / mh - 0.5
                cx = (center[1] + 0.5) * w / mw - 0.5
                ax.plot([cx], [cy], marker="+", color="cyan", ms=9, mew=1.5)
            # how peaked the map is: its maximum relative to a uniform map (1 = flat)
            peaked = f"peak {maps[i, j].max() * mh * mw:.1f}x uniform"
            label = peaked if cell_labels is None else f"{cell_labels[i][j]}\n{peaked}"
            ax.set_title(label, fontsize=7)
        if row_labels is not None:
            axes[i, 0].set_ylabel(str(row_labels[i]), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# ----------------------------------------------------------------------------- output
def figure_to_png(fig, dpi=100) -> bytes:
    """Render `fig` as PNG bytes and release its memory."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    fig.clear()
    return buf.getvalue()


def png_to_tf_image(png: bytes) -> np.ndarray:
    """PNG bytes -> `(1, H, W, 4)` uint8 RGBA array, ready for `tf.summary.image`."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGBA"), dtype=np.uint8)[None]
