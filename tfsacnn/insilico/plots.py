"""PNG pages of the in-silico experiments: model (solid) against truth (dashed) per neuron.

Each function returns a matplotlib Figure (no pyplot state); `tfsacnn.evaluation.plots.
figure_to_png` renders it. Curves are each system's responses relative to the blank
image; `truth` is None where the dataset has no ground truth.
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

PER_PAGE = 16


def pages(n, per_page=PER_PAGE):
    """Neuron index lists of each page."""
    return [list(range(s, min(s + per_page, n))) for s in range(0, n, per_page)]


def _axes(k, title, cols=4):
    rows = max(1, int(np.ceil(k / cols)))
    fig = Figure(figsize=(3.0 * cols, 2.3 * rows + 0.6), layout="constrained")
    axs = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axs[k:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    return fig, axs


def curves_page(x, model, truth, labels, idx, title, xlabel, logx=False, marks=None):
    """One small panel per neuron of `idx`: model curve `(len(x), n)` against truth's.
    `marks`: optional {label: ((n,) model, (n,) truth)} vertical lines."""
    fig, axs = _axes(len(idx), title)
    for ax, j in zip(axs, idx):
        ax.plot(x, model[:, j], "-o", ms=2.5, color="C0", label="model")
        if truth is not None:
            ax.plot(x, truth[:, j], "--s", ms=2.5, color="C3", label="truth")
        for (name, (m, t)), color in zip((marks or {}).items(), ("C0", "C3")):
            if np.isfinite(m[j]):
                ax.axvline(m[j], color="C0", lw=0.8, ls=":")
            if t is not None and np.isfinite(t[j]):
                ax.axvline(t[j], color="C3", lw=0.8, ls=":")
        if logx:
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ticks = np.asarray(x)[::max(1, len(x) // 4)]
            ax.set_xticks(ticks, [f"{t:.2g}" for t in ticks])
        ax.axhline(0, color="0.7", lw=0.6)
        ax.set_title(labels[j], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel(xlabel, fontsize=7)
    axs[0].legend(fontsize=7)
    return fig


def contrast_surround_page(model, truth, labels, idx, title):
    """Bars of the responses to centre alone (blank annulus), iso and cross surrounds."""
    fig, axs = _axes(len(idx), title)
    names = ["blank", "iso", "cross"]
    for ax, j in zip(axs, idx):
        x = np.arange(3)
        w = 0.38 if truth is not None else 0.7
        ax.bar(x - (w / 2 if truth is not None else 0), model[:, j], w, color="C0",
               label="model")
        if truth is not None:
            ax.bar(x + w / 2, truth[:, j], w, color="C3", label="truth", alpha=0.8)
        ax.set_xticks(x, names, fontsize=7)
        ax.set_title(labels[j], fontsize=8)
        ax.tick_params(labelsize=7)
    axs[0].legend(fontsize=7)
    return fig


def summary_page(pairs, title):
    """Scatter of model against truth per quantity: `pairs` {name: (model (n,), truth (n,),
    has_surround (n,) bool or None)}."""
    k = len(pairs)
    fig, axs = _axes(k, title, cols=min(4, max(k, 1)))
    for ax, (name, (m, t, has)) in zip(axs, pairs.items()):
        m, t = np.asarray(m, float), np.asarray(t, float)
        ok = np.isfinite(m) & np.isfinite(t)
        if has is None:
            ax.scatter(t[ok], m[ok], s=12, color="C0")
        else:
            has = np.asarray(has, bool)
            ax.scatter(t[ok & has], m[ok & has], s=12, color="C3", label="surround")
            ax.scatter(t[ok & ~has], m[ok & ~has], s=12, color="C0", label="control")
            ax.legend(fontsize=6)
        if ok.any():
            lo, hi = min(t[ok].min(), m[ok].min()), max(t[ok].max(), m[ok].max())
            ax.plot([lo, hi], [lo, hi], color="0.6", lw=0.8)
        ax.set_xlabel("truth", fontsize=7)
        ax.set_ylabel("model", fontsize=7)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    return fig


def model_only_summary(values, title):
    """Histograms of per-neuron quantities `{name: (n,)}` (a run without ground truth)."""
    fig, axs = _axes(len(values), title, cols=min(4, max(len(values), 1)))
    for ax, (name, v) in zip(axs, values.items()):
        v = np.asarray(v, float)
        ax.hist(v[np.isfinite(v)], bins=12, color="C0")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    return fig


def image_grid_page(columns, labels, idx, title, pixel_range, notes=None):
    """Images side by side per neuron of `idx`: `columns` {name: (n, H, W)}, grey scale
    over `pixel_range`; `notes` {name: (n,) numbers} shown under each image."""
    names = list(columns)
    cols = 4 * len(names) if len(names) == 1 else len(names) * 2
    k = len(idx) * len(names)
    fig, axs = _axes(k, title, cols=min(cols, max(k, 1)))
    for a, (j, name) in enumerate((j, name) for j in idx for name in names):
        ax = axs[a]
        ax.imshow(columns[name][j], cmap="gray", vmin=pixel_range[0], vmax=pixel_range[1])
        ax.set_xticks([])
        ax.set_yticks([])
        note = "" if notes is None or name not in notes else f" {notes[name][j]:.3g}"
        ax.set_title(f"{labels[j]} {name}{note}" if len(names) > 1 else f"{labels[j]}{note}",
                     fontsize=7)
    return fig
