"""The classic V1 experiments on a twin (or on the simulator's neurons), docs/insilico.md.

Every experiment is a function `fn(ctx) -> dict` registered in `EXPERIMENTS` with the
experiments it needs (`REQUIRES`); `run_experiments(twin, system, names, settings)`
runs them in order. A result has `per_neuron` ({quantity: (n,) array}), `curves`
({name: array}, axes named in `axes`) and the stimulus parameters used.

- `rf`: RF centre and extent by reverse correlation of the responses to the dataset's
  images with their local contrast energy;
- `grating`: optimal grating over orientation x SF x phase in a disc at the RF centre,
  then orientation and SF tuning curves through the optimum;
- `size`: size tuning at the optimal grating: SSI, GSF and surround diameter
  (Cavanaugh et al. 2002; Brain-Score's `calc_size_tuning` definitions);
- `contrast_surround`: a centre grating at the GSF with an iso-oriented, cross-oriented
  or blank annulus: suppression under each and CMI = (cross - iso) / (cross + iso).

A "system" is anything with `predict(raw (b, H, W)) -> (b, n)`, `predict_own(raw (b, n,
H, W)) -> (b, n)` and `dataset_responses() -> (N, n)`: a `Twin` or a `Truth`. The
stimulus space (shape, grey, pixel range, dataset images) always comes from the twin,
so model and truth see the same stimuli. Angles are radians internally; results report
orientations in degrees in [0, 180) (the direction of the wave vector, bars at +90).
"""
from __future__ import annotations

import copy

import numpy as np

from . import stimuli
from .forward import InsilicoError

DEFAULTS = {
    "contrast": 0.5,              # grating amplitude / largest in-range amplitude
    "rf": {"sigma": 1.0,          # Gaussian smoothing of the energy maps (model pixels)
           "level": 0.5,          # the RF is where the map is >= level * its peak
           "min_diameter": 4.0},  # floor of the RF diameter (model pixels)
    "grating": {"orientations": 8, "sfs": 6, "phases": 4,
                "sf_range": [0.04, 0.32],     # cycles per model pixel
                "diameter_factor": 1.0,       # disc = factor x RF diameter
                "scan_diameter": 10.0,        # position scans: patch diameter,
                "scan_radius": 8.0,           # +- this far from the map's centre,
                "scan_step": 2.0},            # in these steps (model pixels)
    "orientation_tuning": {"orientations": 16},
    "sf_tuning": {"sfs": 10},
    "size": {"diameters": 14, "min_diameter": 2.0,   # model pixels; up to the whole image
             "ssi_threshold": 0.1},          # surround diameter only above this SSI
    "contrast_surround": {"gap": 1.0,        # model pixels between centre and annulus
                          "surround_phases": 4},
    "batch": 64,                  # stimulus conditions per call
}


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def _count(low):
    return (f"an integer >= {low}",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low)


def _within(text, ok):
    return (f"a number {text}", lambda v: _number(v) and ok(v))


_POSITIVE = _within("> 0", lambda v: v > 0)
_NONNEGATIVE = _within(">= 0", lambda v: v >= 0)
# every setting of DEFAULTS but the registered sections: (what it must be, test)
LIMITS = {
    "contrast": _within("in (0, 1]", lambda v: 0 < v <= 1),
    "rf.sigma": _POSITIVE, "rf.level": _within("in [0, 1)", lambda v: 0 <= v < 1),
    "rf.min_diameter": _POSITIVE,
    "grating.orientations": _count(1), "grating.sfs": _count(1), "grating.phases": _count(1),
    "grating.sf_range": ("[low, high] with 0 < low <= high <= 0.5 (cycles per pixel; 0.5 is "
                         "the Nyquist limit)",
                         lambda v: isinstance(v, (list, tuple)) and len(v) == 2
                         and all(_number(x) for x in v) and 0 < v[0] <= v[1] <= 0.5),
    "grating.diameter_factor": _POSITIVE, "grating.scan_diameter": _POSITIVE,
    "grating.scan_radius": _NONNEGATIVE, "grating.scan_step": _POSITIVE,
    "orientation_tuning.orientations": _count(2), "sf_tuning.sfs": _count(2),
    "size.diameters": _count(2), "size.min_diameter": _POSITIVE,
    "size.ssi_threshold": _within("in [0, 1]", lambda v: 0 <= v <= 1),
    "contrast_surround.gap": _NONNEGATIVE, "contrast_surround.surround_phases": _count(1),
    "batch": _count(1),
}
SECTION_CHECKS = {}       # section -> check(mapping), raising one line (registered ones)


def check_settings(settings):
    """Refuse (InsilicoError, one line) a setting of the wrong type or out of range."""
    for path, (want, ok) in LIMITS.items():
        v = settings
        for key in path.split("."):
            v = v[key]
        if not ok(v):
            raise InsilicoError(f"settings: {path} must be {want}, got {v!r}")
    for section, check in SECTION_CHECKS.items():
        if section in settings:
            check(settings[section])


def merge_settings(overrides=None, base=None):
    """`DEFAULTS` (or `base`) with `overrides` (nested dicts) applied; unknown keys and
    values of the wrong type or out of range (`LIMITS`, `SECTION_CHECKS`) refused."""
    out = copy.deepcopy(DEFAULTS if base is None else base)

    def apply(dst, src, where):
        for k, v in (src or {}).items():
            if k not in dst:
                raise InsilicoError(f"settings: unknown key {where}{k!r} "
                                    f"(known: {', '.join(map(str, dst))})")
            if isinstance(dst[k], dict):
                if not isinstance(v, dict):
                    raise InsilicoError(f"settings: {where}{k!r} must be a mapping")
                apply(dst[k], v, f"{where}{k}.")
            else:
                dst[k] = v
    apply(out, overrides, "")
    check_settings(out)
    return out


class Context:
    """What an experiment sees: the stimulus space (`twin`), the `system` that answers,
    its `settings`, and the results of the experiments run before on that system."""

    def __init__(self, twin, system, settings, label="model"):
        self.twin, self.system, self.settings, self.label = twin, system, settings, label
        self.results = {}
        self.shape = tuple(twin.image_shape)
        self.grey = twin.mean_grey
        self.scale = twin.pipeline.visible[2] / twin.pipeline.size   # source px / model px
        self.amp = stimuli.amplitude(self.grey, twin.pixel_range, settings["contrast"])
        self.n = twin.n

    def respond(self, conditions, draw):
        """Responses `(c, n)` to `c` conditions: `draw(index array) -> (k, n, H, W)`."""
        out, step = [], int(self.settings["batch"])
        for s in range(0, conditions, step):
            out.append(self.system.predict_own(draw(np.arange(s, min(s + step, conditions)))))
        return np.concatenate(out, axis=0)

    def blank(self):
        """Response `(n,)` to the mean-grey image."""
        if "_blank" not in self.results:
            grey = np.full((1,) + self.shape, self.grey, np.float32)
            self.results["_blank"] = np.asarray(self.system.predict(grey))[0]
        return self.results["_blank"]

    def gratings(self, cond, **params):
        """`(k, n, H, W)` stimuli: `params` broadcast over conditions (k, 1) and neurons
        (1, n) (arrays of shape (k, n), (k, 1) or (1, n))."""
        k = len(cond)
        p = {key: np.broadcast_to(np.asarray(v, np.float64), (k, self.n)).ravel()
             for key, v in params.items()}
        img = stimuli.grating(self.shape, self.grey, self.amp, **p)
        return img.reshape((k, self.n) + self.shape)


# --------------------------------------------------------------------- RF map
def energy_maps(images, grey, sigma):
    """Local contrast energy `(N, H, W)`: Gaussian(sigma) * (image - grey)^2."""
    from scipy.ndimage import gaussian_filter

    e = (np.asarray(images, np.float64) - grey) ** 2
    return gaussian_filter(e, (0, sigma, sigma), mode="nearest")


def correlation_maps(responses, maps):
    """Pearson r over images of each neuron's response with each pixel: `(n, H, W)`."""
    r = np.asarray(responses, np.float64)
    r = r - r.mean(0)
    m = maps.reshape(len(maps), -1)
    m = m - m.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = (r.T @ m) / np.sqrt((r ** 2).sum(0)[:, None] * (m ** 2).sum(0)[None, :])
    return np.nan_to_num(c).reshape((r.shape[1],) + maps.shape[1:])


def rf_from_map(cmap, level, min_diameter):
    """Centre (x, y) and diameter of each map `(n, H, W)`, from the weights
    w = max(map - level x peak, 0): their centroid, and the diameter of the uniform disc
    with their second moment, 2 sqrt(2 E_w[r^2]) (at least `min_diameter`). Both move
    continuously with the map. A map without a positive peak gives NaN."""
    n = len(cmap)
    h, w = cmap.shape[1:]
    y, x = np.mgrid[0:h, 0:w]
    cx, cy, d = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    for j in range(n):
        peak = cmap[j].max()
        if not peak > 0:
            continue
        wt = np.maximum(cmap[j] - level * peak, 0.0)
        cx[j], cy[j] = (wt * x).sum() / wt.sum(), (wt * y).sum() / wt.sum()
        r2 = (wt * ((x - cx[j]) ** 2 + (y - cy[j]) ** 2)).sum() / wt.sum()
        d[j] = max(2 * np.sqrt(2 * r2), min_diameter)
    return cx, cy, d


def rf_map(ctx):
    """RF centre and extent by reverse correlation with local contrast energy.

    For each neuron, the Pearson correlation over the dataset's images between its
    response and the local contrast energy at each pixel, G_sigma * (image - grey)^2.
    Centre: the centroid of w = max(map - level x peak, 0); extent: the diameter of the
    uniform disc with w's second moment. No positive correlation: the image centre.
    """
    s = ctx.settings["rf"]
    images = ctx.twin.dataset_images
    maps = energy_maps(images, ctx.grey, s["sigma"] * ctx.scale)
    cmap = correlation_maps(ctx.system.dataset_responses(), maps)
    cx, cy, d = rf_from_map(cmap, s["level"], s["min_diameter"] * ctx.scale)
    found = np.isfinite(cx)
    h, w = ctx.shape
    cx, cy = np.where(found, cx, (w - 1) / 2), np.where(found, cy, (h - 1) / 2)
    d = np.where(found, d, ctx.twin.pipeline.visible[2] / 4)
    return {"per_neuron": {"rf_x": cx, "rf_y": cy, "rf_diameter": d,
                           "rf_found": found.astype(float),
                           "rf_peak_corr": cmap.reshape(len(cmap), -1).max(1)},
            "curves": {"rf_map": cmap.astype(np.float32)},
            "axes": {"rf_map": ["neuron", "y", "x"]},
            "method": "reverse correlation of responses with local contrast energy"}


# --------------------------------------------------------------------- gratings
def _sf_values(ctx, count):
    lo, hi = ctx.settings["grating"]["sf_range"]
    return np.geomspace(lo, hi, int(count)) / ctx.scale          # cycles per source px


def preferred_orientation(theta, curve):
    """Vector-average preferred orientation (radians, [0, pi)) and OSI of tuning
    `curve (O, n)` at orientations `theta (O,)`: the curve minus its minimum, doubled
    angles (orientation is 180-degree periodic)."""
    r = curve - curve.min(0, keepdims=True)
    z = (r * np.exp(2j * theta)[:, None]).sum(0)
    total = r.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        osi = np.where(total > 0, np.abs(z) / total, 0.0)
    return np.mod(np.angle(z) / 2, np.pi), osi


def _scan_centre(ctx, cx, cy, theta, sf, phs, blank):
    """Refined RF centre `(n,)` x, y and the scans' mean width: a disc of
    `scan_diameter` of the optimal grating moved along x, then y, through (cx, cy);
    each profile (best phase per position, relative to the blank) gives the centroid
    of w = max(profile - half its peak, 0) over the positions (no positive peak: the
    centre stays) and the width sqrt(12 var_w) + step of a flat top with w's spread."""
    g = ctx.settings["grating"]
    step = g["scan_step"] * ctx.scale
    offs = np.arange(-g["scan_radius"] * ctx.scale, g["scan_radius"] * ctx.scale + step / 2,
                     step)
    grid = np.stack(np.meshgrid([0, 1], offs, phs, indexing="ij"), -1).reshape(-1, 3)

    def draw(idx):
        t = grid[idx]
        ax, off = t[:, :1], t[:, 1:2]
        return ctx.gratings(idx, cx=cx[None] + off * (ax == 0), cy=cy[None] + off * (ax == 1),
                            theta=theta[None], sf=sf[None], phase=t[:, 2:3],
                            diameter=g["scan_diameter"] * ctx.scale)

    r = (ctx.respond(len(grid), draw) - blank).reshape(2, len(offs), len(phs), ctx.n).max(2)
    out, widths = [], []
    for a, c in enumerate((cx, cy)):
        prof = r[a]                                                  # (positions, n)
        peak = prof.max(0)
        w = np.maximum(prof - 0.5 * peak, 0.0) * (peak > 0)
        tot = w.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            shift = np.where(tot > 0, (w * offs[:, None]).sum(0) / tot, 0.0)
            var = np.where(tot > 0, (w * (offs[:, None] - shift) ** 2).sum(0) / tot, np.nan)
        out.append(c + shift)
        widths.append(np.sqrt(12 * var) + step)      # a flat top's width, one step per sample
    return out[0], out[1], np.mean(widths, axis=0)


def optimal_grating(ctx):
    """Optimal grating in a disc at the RF centre, and orientation / SF tuning curves.

    Grid: `orientations` x `sfs` (log-spaced over `sf_range`) x `phases`; the disc is
    `diameter_factor` x the RF diameter. The optimum is the grid's largest response.
    The RF centre is then refined by position scans of the optimum (`_scan_centre`);
    the tuning curves, and the later experiments, are centred there.
    Orientation curve: `orientation_tuning.orientations` orientations at the optimal SF,
    the best phase at each; preferred orientation = its vector average. SF curve:
    `sf_tuning.sfs` SFs at the optimal orientation, best phase at each; preferred SF =
    its argmax. Responses are relative to the blank (mean-grey) image.
    """
    g = ctx.settings["grating"]
    rf = ctx.results["rf"]["per_neuron"]
    cx, cy = rf["rf_x"][None], rf["rf_y"][None]
    diam = (g["diameter_factor"] * rf["rf_diameter"])[None]
    ths = np.arange(g["orientations"]) * np.pi / g["orientations"]
    sfs = _sf_values(ctx, g["sfs"])
    phs = np.arange(g["phases"]) * 2 * np.pi / g["phases"]
    grid = np.stack(np.meshgrid(ths, sfs, phs, indexing="ij"), -1).reshape(-1, 3)
    blank = ctx.blank()

    def draw(idx, table):
        t = table[idx]
        return ctx.gratings(idx, cx=cx, cy=cy, theta=t[:, :1], sf=t[:, 1:2],
                            phase=t[:, 2:3], diameter=diam)

    r = ctx.respond(len(grid), lambda i: draw(i, grid)) - blank
    r = r.reshape(len(ths), len(sfs), len(phs), ctx.n)
    best = r.reshape(-1, ctx.n).argmax(0)
    bo, bs, bp = np.unravel_index(best, r.shape[:3])
    theta0, sf0, phase0 = ths[bo], sfs[bs], phs[bp]

    # position scans of a patch of the optimal grating along x and y: the RF centre
    cx, cy, extent = _scan_centre(ctx, cx[0], cy[0], theta0, sf0, phs, blank)
    cx, cy = cx[None], cy[None]

    # orientation curve at the optimal SF
    o_ths = np.arange(ctx.settings["orientation_tuning"]["orientations"]) * np.pi / \
        ctx.settings["orientation_tuning"]["orientations"]
    o_grid = np.stack(np.meshgrid(o_ths, phs, indexing="ij"), -1).reshape(-1, 2)

    def draw_o(idx):
        t = o_grid[idx]
        return ctx.gratings(idx, cx=cx, cy=cy, theta=t[:, :1], sf=sf0[None],
                            phase=t[:, 1:2], diameter=diam)

    ro = (ctx.respond(len(o_grid), draw_o) - blank).reshape(len(o_ths), len(phs), ctx.n)
    o_curve = ro.max(1)
    pref_theta, osi = preferred_orientation(o_ths, o_curve)

    # SF curve at the optimal orientation
    f_sfs = _sf_values(ctx, ctx.settings["sf_tuning"]["sfs"])
    f_grid = np.stack(np.meshgrid(f_sfs, phs, indexing="ij"), -1).reshape(-1, 2)

    def draw_f(idx):
        t = f_grid[idx]
        return ctx.gratings(idx, cx=cx, cy=cy, theta=theta0[None], sf=t[:, :1],
                            phase=t[:, 1:2], diameter=diam)

    rf_ = (ctx.respond(len(f_grid), draw_f) - blank).reshape(len(f_sfs), len(phs), ctx.n)
    f_curve = rf_.max(1)
    pref_sf = f_sfs[f_curve.argmax(0)]
    return {"per_neuron": {"centre_x": cx[0], "centre_y": cy[0], "scan_extent": extent,
                           "opt_orientation_deg": np.degrees(theta0),
                           "opt_sf": sf0, "opt_phase_deg": np.degrees(phase0),
                           "opt_response": r.reshape(-1, ctx.n).max(0),
                           "pref_orientation_deg": np.degrees(pref_theta), "osi": osi,
                           "pref_sf": pref_sf, "disc_diameter": diam[0],
                           "blank_response": blank},
            "curves": {"grid": r.astype(np.float32), "orientation_curve": o_curve,
                       "sf_curve": f_curve},
            "axes": {"grid": ["orientation", "sf", "phase", "neuron"],
                     "orientation_curve": ["orientation", "neuron"],
                     "sf_curve": ["sf", "neuron"]},
            "values": {"orientation_deg": np.degrees(ths), "sf": sfs,
                       "phase_deg": np.degrees(phs),
                       "orientation_curve_deg": np.degrees(o_ths), "sf_curve": f_sfs}}


# --------------------------------------------------------------------- size tuning
def size_measures(diameters, curve, ssi_threshold=0.1):
    """SSI, GSF and surround diameter of size-tuning `curve (D, n)` at `diameters (D,)`
    (responses relative to the blank), as Brain-Score's `calc_size_tuning`:
    SSI = (peak - plateau) / peak with plateau the response at the largest diameter;
    GSF = the smallest diameter with >= 95 % of the peak; surround diameter = the
    smallest diameter beyond the peak's with a response <= plateau + 5 % |plateau|
    (only where SSI > `ssi_threshold`, else NaN). Peak <= 0: all NaN."""
    d = np.asarray(diameters, np.float64)
    n = curve.shape[1]
    ssi, gsf, sur = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    for j in range(n):
        c = curve[:, j]
        peak, plateau, at = c.max(), c[-1], int(c.argmax())
        if not peak > 0:
            continue
        ssi[j] = (peak - plateau) / peak
        gsf[j] = d[np.nonzero(c >= 0.95 * peak)[0][0]]
        if ssi[j] > ssi_threshold:
            beyond = np.nonzero((c <= plateau + 0.05 * abs(plateau)) & (d > d[at]))[0]
            sur[j] = d[beyond[0]] if len(beyond) else np.nan
    return ssi, gsf, sur


def size_tuning(ctx):
    """Size tuning at the optimal grating (orientation, SF) in discs of `diameters`
    log-spaced from `min_diameter` to the whole image, best phase at each diameter."""
    s = ctx.settings["size"]
    g = ctx.results["grating"]["per_neuron"]
    cx, cy = g["centre_x"], g["centre_y"]
    full = stimuli.full_field_diameter(ctx.shape, cx, cy).max()
    diams = np.geomspace(s["min_diameter"] * ctx.scale, full, int(s["diameters"]))
    phs = np.arange(ctx.settings["grating"]["phases"]) * 2 * np.pi / \
        ctx.settings["grating"]["phases"]
    grid = np.stack(np.meshgrid(diams, phs, indexing="ij"), -1).reshape(-1, 2)
    theta, sf = np.radians(g["pref_orientation_deg"]), g["pref_sf"]

    def draw(idx):
        t = grid[idx]
        return ctx.gratings(idx, cx=cx[None], cy=cy[None], theta=theta[None], sf=sf[None],
                            phase=t[:, 1:2], diameter=t[:, :1])

    r = (ctx.respond(len(grid), draw) - ctx.blank()).reshape(len(diams), len(phs), ctx.n)
    curve = r.max(1)
    best_phase = phs[r.argmax(1)]                                  # (D, n)
    ssi, gsf, sur = size_measures(diams, curve, s["ssi_threshold"])
    return {"per_neuron": {"ssi": ssi, "gsf": gsf, "surround_diameter": sur,
                           "size_peak": curve.max(0), "size_plateau": curve[-1]},
            "curves": {"size_curve": curve, "size_best_phase": best_phase},
            "axes": {"size_curve": ["diameter", "neuron"],
                     "size_best_phase": ["diameter", "neuron"]},
            "values": {"diameter": diams}}


# --------------------------------------------------------------------- orientation contrast
def contrast_surround(ctx):
    """Orientation-contrast surround: the optimal grating in a disc at the GSF (the RF
    diameter where there is none), at its best phase there, alone (blank annulus) or with
    an annulus from GSF + 2 gap to the whole image of the same SF at the preferred
    orientation (iso) or 90 deg from it (cross), averaged over `surround_phases`.
    Responses R relative to the blank image; suppression = 1 - R / R_blank-annulus;
    CMI = (R_cross - R_iso) / (R_cross + R_iso)."""
    s = ctx.settings["contrast_surround"]
    rf = ctx.results["rf"]["per_neuron"]
    g = ctx.results["grating"]["per_neuron"]
    sz = ctx.results["size"]
    cx, cy = g["centre_x"], g["centre_y"]
    gsf = np.where(np.isfinite(sz["per_neuron"]["gsf"]), sz["per_neuron"]["gsf"],
                   rf["rf_diameter"])
    diams = sz["values"]["diameter"]
    at = np.abs(diams[:, None] - gsf[None]).argmin(0)
    phase = sz["curves"]["size_best_phase"][at, np.arange(ctx.n)]
    theta, sf = np.radians(g["pref_orientation_deg"]), g["pref_sf"]
    gap = s["gap"] * ctx.scale
    outer = stimuli.full_field_diameter(ctx.shape, cx, cy)
    sphs = np.arange(s["surround_phases"]) * 2 * np.pi / s["surround_phases"]
    # conditions: 0 blank annulus; then iso x phases; then cross x phases
    kinds = np.array([0] + [1] * len(sphs) + [2] * len(sphs))
    sph = np.concatenate([[0.0], sphs, sphs])

    def draw(idx):
        out = []
        for i in idx:
            st = None if kinds[i] == 0 else theta + (np.pi / 2 if kinds[i] == 2 else 0.0)
            out.append(stimuli.centre_surround(
                ctx.shape, ctx.grey, ctx.amp, cx, cy, theta, sf, phase, gsf, gap, outer,
                surround_theta=st, surround_phase=sph[i]))
        return np.stack(out)

    r = ctx.respond(len(kinds), draw) - ctx.blank()
    centre, iso, cross = r[0], r[kinds == 1].mean(0), r[kinds == 2].mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sup_iso = np.where(centre > 0, 1 - iso / centre, np.nan)
        sup_cross = np.where(centre > 0, 1 - cross / centre, np.nan)
        cmi = np.where(np.abs(cross + iso) > 0, (cross - iso) / (cross + iso), np.nan)
    return {"per_neuron": {"centre_diameter": gsf, "r_centre": centre, "r_iso": iso,
                           "r_cross": cross, "suppression_iso": sup_iso,
                           "suppression_cross": sup_cross, "cmi": cmi},
            "curves": {"responses": np.stack([centre, iso, cross])},
            "axes": {"responses": ["blank/iso/cross", "neuron"]}}


# --------------------------------------------------------------------- registry
EXPERIMENTS = {"rf": rf_map, "grating": optimal_grating, "size": size_tuning,
               "contrast_surround": contrast_surround}
REQUIRES = {"rf": (), "grating": ("rf",), "size": ("grating",),
            "contrast_surround": ("rf", "grating", "size")}


def register(name, fn, requires=()):
    """Add an experiment `fn(ctx) -> dict` that needs the experiments `requires`."""
    EXPERIMENTS[name] = fn
    REQUIRES[name] = tuple(requires)


def resolve(names):
    """Experiment names (a list or a comma-separated string; None: all) with what they
    need, in running order. Unknown name: InsilicoError naming it."""
    if names is None:
        names = list(EXPERIMENTS)
    elif isinstance(names, str):
        names = [x.strip() for x in names.split(",") if x.strip()]
    if not names:
        raise InsilicoError("--experiments: no experiment named")
    for x in names:
        if x not in EXPERIMENTS:
            raise InsilicoError(f"--experiments: unknown experiment {x!r} "
                                f"(known: {', '.join(EXPERIMENTS)})")
    order = []

    def add(x):
        for dep in REQUIRES.get(x, ()):
            add(dep)
        if x not in order:
            order.append(x)
    for x in names:
        add(x)
    return order


def run_experiments(twin, system, names=None, settings=None, label="model", log=None):
    """Run `names` (and what they need) on `system` in `twin`'s stimulus space.
    -> {name: result}."""
    ctx = Context(twin, system, merge_settings(settings), label)
    for name in resolve(names):
        if log:
            log(f"{label}: {name}")
        ctx.results[name] = EXPERIMENTS[name](ctx)
    return {k: v for k, v in ctx.results.items() if not k.startswith("_")}
