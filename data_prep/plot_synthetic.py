"""Picture of the simulated V1 site: example stimuli, tuning curves, statistics vs real data.

    python -m data_prep.plot_synthetic --out docs/synthetic_examples.png
    python -m data_prep.plot_synthetic --out site.png --data DATA/synth   # a written site

Without --data, a site is simulated in memory (data_prep.synthesize.generate_site with
--neurons, --val and --seed; no TensorFlow needed). The figure shows
1. example stimuli with the receptive fields (CRF) of the plotted neurons;
2. for three surround neurons and one control, noise-free responses to gratings at the
   preferred spatial frequency (best of 8 phases): orientation tuning in the CRF, size
   tuning (grating disc radius; suppression beyond the CRF), and the contextual
   effect of an iso- or orthogonal surround annulus and of collinear flankers;
3. the val response distribution and the statistics table next to the real sample.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from data_prep import stimuli, v1_model
from data_prep.synthesize import REAL_RANGES, statistics_summary
from tfsacnn.errors import OneLineParser

REAL_SAMPLE = Path(__file__).resolve().parent / "reference" / "m1s1_val_responses_sample.npy"  # see its README.md
PHASES = np.linspace(0, 2 * np.pi, 8, endpoint=False)


def _best_phase(params, j, make):
    """Max over phases of neuron j's noise-free response to make(phase) -> (S,S) image(s)."""
    stack = np.stack([make(ph) for ph in PHASES])
    return float(v1_model.responses(stack, params)[:, j].max())


def tuning(params, j, size, contrast=0.6):
    """Orientation, size and context tuning of neuron j (dict of x / y arrays)."""
    p = {k: np.asarray(v)[j] for k, v in params.items() if k != "image_size"}
    c, th, sf, r0 = (p["x0"], p["y0"]), p["theta"], p["sf"], p["crf_radius"]
    out = {}
    oris = th + np.linspace(-np.pi / 2, np.pi / 2, 13)
    rel = (np.degrees(oris - th) + 90) % 180 - 90
    order = np.argsort(rel)
    ori_y = np.array([_best_phase(params, j, lambda ph, o=o: stimuli.grating_patch(
        size, o, sf, ph, c, r0, contrast)) for o in oris])
    out["ori_x"], out["ori_y"] = rel[order], ori_y[order]
    radii = np.linspace(1, 0.45 * size, 14)
    out["size_x"] = radii
    out["size_y"] = np.array([_best_phase(params, j, lambda ph, r=r: stimuli.grating_patch(
        size, th, sf, ph, c, r, contrast)) for r in radii])

    def context(kind):
        def make(ph):
            img = stimuli.grating_patch(size, th, sf, ph, c, r0, contrast)
            if kind in ("iso", "orth"):
                o = th if kind == "iso" else th + np.pi / 2
                ring = stimuli.grating_patch(size, o, sf, ph, c, None, contrast,
                                             annulus=(r0 + 1, 0.45 * size))
                img = np.where(ring != 0.5, ring, img)
            elif kind == "collinear":
                # two discs of the same (phase-continuous) grating along the bar axis
                full = stimuli.grating_patch(size, th, sf, ph, c, None, contrast)
                yy, xx = np.mgrid[0:size, 0:size]
                bx, by = -np.sin(th), np.cos(th)
                for sgn in (-1, 1):
                    fx, fy = c[0] + sgn * 2.2 * r0 * bx, c[1] + sgn * 2.2 * r0 * by
                    img = np.where(np.hypot(xx - fx, yy - fy) <= 0.9 * r0, full, img)
            return img
        return _best_phase(params, j, make)

    out["ctx_x"] = ["centre", "+iso\nsurround", "+orth\nsurround", "+collinear\nflankers"]
    out["ctx_y"] = np.array([context(k) for k in ("centre", "iso", "orth", "collinear")])
    return out


def _pick_neurons(params, k=3):
    has = np.asarray(params["has_surround"], bool)
    sur = np.nonzero(has)[0]
    sur = sur[np.argsort(-np.asarray(params["surround_strength"])[sur])][:k]
    ctl = np.nonzero(~has)[0][:1]
    return [int(x) for x in list(sur) + list(ctl)]


def _load_site(data):
    from tfsacnn.errors import DataError

    if not Path(data).is_dir():
        raise DataError(f"{data}: no such site directory")
    if not (Path(data) / "ground_truth.npz").is_file():
        raise DataError(f"{data}: not a synthetic site (no ground_truth.npz)")
    from tfsacnn.data import load_numpy
    images, responses = load_numpy(data, "val")
    return images[..., 0], responses, v1_model.load_params(Path(data) / "ground_truth.npz")


def _load_real(real):
    """The real (n_images, n_neurons) sample, or None if `real` is None or the default
    sample is absent. DataError names the file if it cannot be read."""
    from tfsacnn.errors import DataError

    if real is None:
        return None
    real = Path(real)
    if not real.exists():
        if real == REAL_SAMPLE:
            return None
        raise DataError(f"{real}: no such file")
    try:
        a = np.load(real, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DataError(f"{real}: not a readable .npy file (truncated or corrupt?): {first}") from None
    if not isinstance(a, np.ndarray) or a.ndim != 2 or not np.issubdtype(a.dtype, np.number):
        raise DataError(f"{real}: expected a numeric (n_images, n_neurons) array, got "
                        f"{getattr(a, 'shape', type(a).__name__)}")
    return a


def plot(out, data=None, neurons=8, val=1000, seed=0, real=REAL_SAMPLE, dpi=75):
    """Write the figure to ``out`` (PNG); returns the path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    real_r = _load_real(real)
    if data is None:
        from data_prep.synthesize import generate_site
        site = generate_site(neurons=neurons, train=1, val=val, seed=seed)
        images, responses, params = (site["splits"]["val"]["images"], site["splits"]["val"]["responses"],
                                     site["params"])
    else:
        images, responses, params = _load_site(data)
    size = images.shape[-1]
    picks = _pick_neurons(params)

    fig = plt.figure(figsize=(12, 11))
    gs = fig.add_gridspec(5, 8, height_ratios=[1.1, 1.1, 1.1, 1.1, 1.3], hspace=0.55, wspace=0.6)
    top = gs[0, :].subgridspec(1, 8, wspace=0.04)
    colors = plt.cm.tab10(np.arange(len(picks)))
    for i in range(8):
        ax = fig.add_subplot(top[0, i])
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=1)
        for col, j in zip(colors, picks):
            ax.add_patch(Circle((params["x0"][j], params["y0"][j]), params["crf_radius"][j], fill=False,
                                lw=0.8, ec=col))
        ax.set_xticks([])
        ax.set_yticks([])
        if i == 0:
            ax.set_title("example stimuli (circles: CRFs of the neurons below)", fontsize=10, loc="left")

    for col_i, (j, col) in enumerate(zip(picks, colors)):
        t = tuning(params, j, size)
        kind = (f"surround (strength {params['surround_strength'][j]:.2f})"
                if params["has_surround"][j] else "control (no surround)")
        ax = fig.add_subplot(gs[1, 2 * col_i:2 * col_i + 2])
        ax.plot(t["ori_x"], t["ori_y"], "o-", color=col, ms=3)
        ax.set_title(f"n{j:03d}: {kind}", fontsize=9)
        ax.set_xlabel("orientation - preferred (deg)", fontsize=8)
        if col_i == 0:
            ax.set_ylabel("response (dF/F)\norientation", fontsize=8)
        ax = fig.add_subplot(gs[2, 2 * col_i:2 * col_i + 2])
        ax.plot(t["size_x"], t["size_y"], "o-", color=col, ms=3)
        ax.axvline(params["crf_radius"][j], color="k", ls=":", lw=1)
        ax.set_xlabel("grating radius (px); dotted: CRF", fontsize=8)
        if col_i == 0:
            ax.set_ylabel("response (dF/F)\nsize", fontsize=8)
        ax = fig.add_subplot(gs[3, 2 * col_i:2 * col_i + 2])
        base = params["baseline"][j]
        ev = t["ctx_y"] - base
        ax.bar(range(4), ev / ev[0] if ev[0] > 0 else ev, color=col)
        ax.axhline(1.0, color="k", lw=0.6)
        ax.set_xticks(range(4))
        ax.set_xticklabels(t["ctx_x"], fontsize=7)
        if col_i == 0:
            ax.set_ylabel("evoked / centre alone\ncontext", fontsize=8)
        for a in fig.axes[-3:]:
            a.tick_params(labelsize=7)

    ax = fig.add_subplot(gs[4, :4])
    bins = np.linspace(-0.2, 1.6, 61)
    ax.hist(responses.ravel(), bins=bins, density=True, histtype="step", lw=1.5,
            label="synthetic val (mean of repeats)")
    if real_r is not None:
        ax.hist(real_r.ravel(), bins=bins, density=True, histtype="step", lw=1.5, label="real M1S1 sample")
    ax.set_yscale("log")
    ax.set_xlabel("response (dF/F), all neurons", fontsize=8)
    ax.legend(fontsize=8)
    ax.tick_params(labelsize=7)
    ax = fig.add_subplot(gs[4, 4:])
    ax.set_axis_off()
    syn = statistics_summary(responses)
    rs = statistics_summary(real_r) if real_r is not None else {k: np.nan for k in syn}
    rows = [[k, f"{rs[k]:.3g}", f"{syn[k]:.3g}", f"{lo:g} - {hi:g}"] for k, (lo, hi) in REAL_RANGES.items()]
    tab = ax.table(cellText=rows, colLabels=["median over neurons", "real (10)", f"synthetic ({responses.shape[1]})",
                                             "target"], loc="center", cellLoc="center",
                   colWidths=[0.4, 0.17, 0.2, 0.2])
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    tab.scale(1, 1.5)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = OneLineParser(prog="python -m data_prep.plot_synthetic", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("docs/synthetic_examples.png"), help="PNG to write")
    p.add_argument("--data", type=Path, default=None, help="a site written by data_prep.synthesize "
                                                            "(default: simulate one in memory)")
    p.add_argument("--neurons", type=int, default=8, help="neurons of the in-memory site (default 8)")
    p.add_argument("--val", type=int, default=1000, help="val images of the in-memory site (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the in-memory site (default 0)")
    p.add_argument("--real", type=Path, default=REAL_SAMPLE, help="real (n_images, n_neurons) .npy to compare")
    p.add_argument("--dpi", type=int, default=75, help="resolution (default 75: a ~170 KB PNG)")
    args = p.parse_args(argv)
    try:
        out = plot(args.out, args.data, args.neurons, args.val, args.seed, args.real, args.dpi)
    except Exception as e:  # one line, like the other CLIs
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    main()
