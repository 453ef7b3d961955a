"""Most exciting images (MEIs) and most / least exciting surrounds, for all neurons at once.

Every quantity is defined in docs/insilico_mei.md. Images live in the source images' space:
`(H, W)` pixels on the dataset's pixel scale, background at the dataset's mean grey `g`;
the twin's preprocessing takes them to the model. A batch is `(b, n, H, W)`: neuron j sees
image `[:, j]` only, so one gradient call ascends every neuron at once.

MEI (Walker et al. 2019): from Gaussian noise, `steps` steps of

    grad  = blur_sigma(t)(d response_j / d x_j)                  Gaussian-blur preconditioning
    x    += lr(t) * rms * grad / mean|grad|                      rms = norm / sqrt(H W)
    x     = project(x)                                           ||x - g|| = norm, x in range

with sigma(t) and lr(t) decaying linearly from their start to their end value. `project`
scales the contrast `x - g` so that its L2 norm is the target norm (the dataset's typical
one) after clipping to the pixel range (`project`).

Surround MEI (Fu et al. 2023): the MEI is kept inside a disc (the neuron's CRF or GSF disc),
and the surround outside it ascends (most exciting surround) or descends (least exciting
surround) the response, under the same steps, at the fixed surround norm.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..models.variants import IMAGE_SIZE
from .gradients import value_and_grad


@dataclass(frozen=True)
class MEIConfig:
    """Settings of the MEI and surround-MEI ascent (defaults after Walker et al. 2019).

    steps, seeds        ascent steps; random starts per neuron (the best one is the MEI)
    seed                base seed; neuron `i`'s start `s` is drawn from `(seed, s, i)`
    lr_start, lr_end    step size in units of the target's per-pixel RMS contrast
    sigma_start/_end    blur of the gradient, in model-input pixels (50 x 50 grid)
    norm                contrast L2 norm in source units; None: the dataset's typical norm
    surround_steps      steps of the surround ascent/descent; None: `steps`
    surround_norm       contrast norm of the surround; None: norm * sqrt(surround share)
    surround_disc       the fixed centre: "gsf" (size tuning's GSF) or "crf" (RF map)
    """
    steps: int = 1000
    seeds: int = 4
    seed: int = 0
    lr_start: float = 0.3
    lr_end: float = 0.0125
    sigma_start: float = 1.5
    sigma_end: float = 0.01
    norm: float | None = None
    surround_steps: int | None = None
    surround_norm: float | None = None
    surround_disc: str = "gsf"

    def __post_init__(self):
        for key in ("steps", "seeds"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"mei: {key} must be an integer >= 1, got {v!r}")
        if self.surround_steps is not None and (
                isinstance(self.surround_steps, bool) or not isinstance(self.surround_steps, int)
                or self.surround_steps < 1):
            raise ConfigError(f"mei: surround_steps must be an integer >= 1, got "
                              f"{self.surround_steps!r}")
        for key in ("lr_start", "lr_end", "sigma_start", "sigma_end"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ConfigError(f"mei: {key} must be a number >= 0, got {v!r}")
        for key in ("norm", "surround_norm"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not v > 0):
                raise ConfigError(f"mei: {key} must be a number > 0, got {v!r}")
        if self.surround_disc not in ("gsf", "crf"):
            raise ConfigError(f"mei: surround_disc must be 'gsf' or 'crf', got "
                              f"{self.surround_disc!r}")

    @classmethod
    def from_dict(cls, d, where="mei"):
        """A config from a mapping; unknown keys are refused with one line naming them."""
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(known))})")
        return cls(**d)


@dataclass
class MEIResult:
    """MEIs of n neurons.

    images (seeds, n, H, W)   every seed's final image;  activation (seeds, n) its response
    mei (n, H, W)             the best seed's image;     response (n,) its response
    relative (n,)             response / the neuron's best response over the dataset's images
    norm                      the target contrast norm (source units)
    """
    images: np.ndarray
    activation: np.ndarray
    mei: np.ndarray
    response: np.ndarray
    relative: np.ndarray
    norm: float


@dataclass
class SurroundResult:
    """Most (raise) and least (lower) exciting surrounds around each neuron's fixed MEI centre.

    centre (n, H, W)          the MEI inside the disc, grey outside; centre_response (n,)
    raise_image, lower_image (n, H, W) and raise_response, lower_response (n,)
    mei_response (n,)         the full MEI's response
    inside (n, H, W) bool     the fixed disc;  surround_norm (n,) the surround's target norm
    """
    centre: np.ndarray
    centre_response: np.ndarray
    raise_image: np.ndarray
    raise_response: np.ndarray
    lower_image: np.ndarray
    lower_response: np.ndarray
    mei_response: np.ndarray
    inside: np.ndarray
    surround_norm: np.ndarray


def blur(grad, sigma):
    """Gaussian blur (std `sigma` pixels, reflecting edges) of `(..., H, W)` over H and W."""
    if sigma <= 0.05:  # the kernel is a delta to float32 precision
        return grad
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(grad, sigma=(0,) * (grad.ndim - 2) + (sigma, sigma), mode="reflect")


def project(x, free, target, grey, lo, hi, iters=8, rtol=1e-4):
    """`x` with its free pixels' contrast scaled to L2 norm `target` after clipping to [lo, hi].

    x (b, n, H, W); free bool broadcastable to x; target broadcastable to (b, n). The fixed
    pixels are returned unchanged. The scale s solves ||clip(g + s d) - g|| = target over the
    free pixels (d = x - g) by an active-set iteration from s = target/||d||: with the pixels
    clipped at s held clipped, s^2 D + C = target^2 (D: the unclipped pixels' sum of d^2, C:
    the clipped ones' squared contrast) gives the next s. It rises to the solution from below
    (clipping only removes contrast); where even saturation cannot reach the target, every
    pixel ends saturated and the norm stays below it.
    """
    free = np.broadcast_to(free, x.shape)
    d = np.where(free, x - grey, 0.0).astype(np.float32)
    target = np.broadcast_to(np.asarray(target, np.float32), x.shape[:2])[..., None, None]
    d2 = d * d
    s = target / np.maximum(np.sqrt(np.sum(d2, axis=(-2, -1), keepdims=True)), 1e-12)
    for _ in range(iters):
        y = grey + s * d
        clipped = (y < lo) | (y > hi)
        c = np.clip(y, lo, hi) - grey
        big_c = np.sum(np.where(clipped, c * c, 0.0), axis=(-2, -1), keepdims=True)
        big_d = np.sum(np.where(clipped, 0.0, d2), axis=(-2, -1), keepdims=True)
        nrm2 = s * s * big_d + big_c
        if np.all(nrm2 >= (target * (1 - rtol)) ** 2):
            break
        saturated = big_d <= 0
        s = np.where(saturated, s, np.sqrt(np.maximum(target ** 2 - big_c, 0.0)
                                           / np.where(saturated, 1.0, big_d)))
        if np.all(saturated | (nrm2 >= (target * (1 - rtol)) ** 2)):
            break
    out = np.clip(grey + s * d, lo, hi)
    return np.where(free, out, x).astype(np.float32)


def contrast_norm(x, grey, free=True):
    """L2 norm of `x - grey` over the free pixels: `(..., H, W) -> (...)`."""
    d = np.where(np.broadcast_to(free, x.shape), x - grey, 0.0)
    return np.sqrt(np.sum(d * d, axis=(-2, -1)))


def initial_noise(neurons, seeds, shape, seed):
    """Standard normal starts `(seeds, n, H, W)`; start s of neuron i from `(seed, s, i)`.

    A neuron's start does not depend on which other neurons share the batch.
    """
    out = np.empty((seeds, len(neurons)) + tuple(shape), np.float32)
    for s in range(seeds):
        for j, i in enumerate(neurons):
            out[s, j] = np.random.default_rng([int(seed), s, int(i)]).standard_normal(shape)
    return out


def ascend(vg, x0, weights, free, target, grey, pixel_range, steps, cfg, pixel_scale=1.0):
    """`steps` preconditioned, projected gradient steps from `x0` `(b, n, H, W)`.

    weights (b, n): +1 ascends the response, -1 descends it. free (1 or b, n, H, W) bool:
    the pixels that move (the rest keep x0's values). target: the free pixels' contrast norm,
    broadcastable to (b, n). pixel_scale: source pixels per model-input pixel (for sigma).
    Returns the final images `(b, n, H, W)`.
    """
    lo, hi = pixel_range
    free = np.broadcast_to(free, x0.shape)
    count = np.maximum(free.sum(axis=(-2, -1)), 1)
    rms = np.broadcast_to(np.asarray(target, np.float32), x0.shape[:2]) / np.sqrt(count)
    rms = rms[..., None, None].astype(np.float32)
    x = project(x0, free, target, grey, lo, hi)
    for t in range(steps):
        frac = t / max(steps - 1, 1)
        sigma = (cfg.sigma_start + (cfg.sigma_end - cfg.sigma_start) * frac) * pixel_scale
        lr = cfg.lr_start + (cfg.lr_end - cfg.lr_start) * frac
        _, grad = vg(x, weights)
        grad = np.where(free, blur(grad, sigma), 0.0)
        mean_abs = np.sum(np.abs(grad), axis=(-2, -1), keepdims=True) / count[..., None, None]
        x = x + lr * rms * grad / np.maximum(mean_abs, 1e-20)
        x = project(x.astype(np.float32), free, target, grey, lo, hi)
    return x


def _target_norm(twin, cfg):
    norm = cfg.norm if cfg.norm is not None else twin.norm
    if not (norm is not None and np.isfinite(norm) and norm > 0):
        raise ConfigError(f"mei: the image norm must be > 0, got {norm!r} (set mei.norm)")
    return float(norm)


def _pixel_scale(twin):
    return float(twin.image_shape[0]) / IMAGE_SIZE


def twin_value_and_grad(twin):
    """`gradients.value_and_grad` of the twin's per-neuron response, its weights as inputs."""
    model = getattr(twin, "model", None)
    return value_and_grad(twin.response_fn(), model.variables if model is not None else ())


def relative_to_best(response, best_response):
    """response / best response over the dataset's images, per neuron (NaN where best <= 0
    or unknown)."""
    if best_response is None:
        return np.full(np.shape(response), np.nan)
    best = np.asarray(best_response, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(best > 0, np.asarray(response, np.float64) / best, np.nan)


def compute_meis(twin, cfg=None, vg=None):
    """MEIs of all of `twin`'s neurons at once: `cfg.seeds` starts each -> `MEIResult`."""
    cfg = cfg or MEIConfig()
    vg = vg or twin_value_and_grad(twin)
    norm = _target_norm(twin, cfg)
    grey = float(twin.mean_grey)
    noise = initial_noise(twin.neurons, cfg.seeds, twin.image_shape, cfg.seed)
    x0 = grey + noise * (norm / np.sqrt(noise[0, 0].size))
    weights = np.ones(x0.shape[:2], np.float32)
    images = ascend(vg, x0, weights, True, norm, grey, twin.pixel_range, cfg.steps, cfg,
                    _pixel_scale(twin))
    activation = np.asarray(twin.predict_own(images), np.float64)
    best = np.argmax(activation, axis=0)
    cols = np.arange(images.shape[1])
    response = activation[best, cols]
    return MEIResult(images=images, activation=activation, mei=images[best, cols],
                     response=response, relative=relative_to_best(response, twin.best_response),
                     norm=norm)


def disc(shape, centres, diameters):
    """Inside of discs `(n, H, W)` bool; centres (n, 2) as (row, col) pixels, diameters (n,)."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    c = np.asarray(centres, np.float64).reshape(-1, 2)
    r = np.asarray(diameters, np.float64).reshape(-1) / 2
    return ((rows - c[:, :1, None]) ** 2 + (cols - c[:, 1:, None]) ** 2) <= r[:, None, None] ** 2


def compute_surround_meis(twin, mei, centres, diameters, cfg=None, vg=None):
    """Most and least exciting surrounds around the fixed MEI centres -> `SurroundResult`.

    mei (n, H, W); centres (n, 2) (row, col) and diameters (n,) of the fixed discs, in source
    pixels. Each direction runs `cfg.seeds` starts; the best start per neuron is kept.
    """
    cfg = cfg or MEIConfig()
    vg = vg or twin_value_and_grad(twin)
    mei = np.asarray(mei, np.float32)
    n, shape, grey = mei.shape[0], mei.shape[1:], float(twin.mean_grey)
    inside = disc(shape, centres, diameters)
    if np.any(inside.sum(axis=(1, 2)) == 0) or np.any(inside.all(axis=(1, 2))):
        raise ConfigError("surround_mei: a centre disc is empty or covers the whole image")
    free = ~inside
    if cfg.surround_norm is not None:
        surround_norm = np.full(n, float(cfg.surround_norm))
    else:
        share = free.sum(axis=(1, 2)) / free[0].size
        surround_norm = _target_norm(twin, cfg) * np.sqrt(share)
    centre = np.where(inside, mei, grey).astype(np.float32)
    seeds = cfg.seeds
    noise = initial_noise(twin.neurons, 2 * seeds, shape, cfg.seed + 1)
    x0 = np.where(free, grey + noise, centre[None]).astype(np.float32)
    weights = np.repeat(np.array([1.0, -1.0], np.float32), seeds)[:, None] * np.ones(n, np.float32)
    steps = cfg.surround_steps or cfg.steps
    x = ascend(vg, x0, weights, free[None], surround_norm, grey, twin.pixel_range, steps, cfg,
               _pixel_scale(twin))
    y = np.asarray(twin.predict_own(x), np.float64)
    cols = np.arange(n)
    up, down = np.argmax(y[:seeds], axis=0), seeds + np.argmin(y[seeds:], axis=0)
    base = np.asarray(twin.predict_own(np.stack([centre, mei])), np.float64)
    return SurroundResult(centre=centre, centre_response=base[0], raise_image=x[up, cols],
                          raise_response=y[up, cols], lower_image=x[down, cols],
                          lower_response=y[down, cols], mei_response=base[1], inside=inside,
                          surround_norm=surround_norm)


def closed_loop(truth, mei, truth_best):
    """Walker et al. 2019's inception loop in silico: the true neurons shown the model's MEIs.

    truth: the simulator's noise-free neurons, with `predict_own` `(b, n, H, W) -> (b, n)`;
    mei (n, H, W) the model's MEIs; truth_best (n,) each true neuron's best response over
    the dataset's images. Returns `(true_response (n,), relative (n,))`, relative =
    true_response / truth_best (> 1: the MEI drives the true neuron more than any image).
    """
    true_response = np.asarray(truth.predict_own(np.asarray(mei, np.float32)[None]),
                               np.float64)[0]
    return true_response, relative_to_best(true_response, truth_best)


# --------------------------------------------------------------------- experiments
DEFAULTS = {f.name: f.default for f in dataclasses.fields(MEIConfig)}
NO_GRADIENT = "the simulator has no gradient: its side is the closed loop (truth_side)"


def mei_experiment(ctx):
    """Experiment "mei": the model's MEIs (`compute_meis`) with `ctx.settings["mei"]`."""
    if ctx.system is not ctx.twin:
        return {"per_neuron": {}, "skipped": NO_GRADIENT}
    res = compute_meis(ctx.twin, MEIConfig.from_dict(ctx.settings["mei"], "settings: mei"))
    return {"per_neuron": {"mei_response": res.response, "mei_relative": res.relative,
                           "mei_seed_min": res.activation.min(0)},
            "curves": {"mei": res.mei, "mei_activation": res.activation},
            "axes": {"mei": ["neuron", "row", "col"], "mei_activation": ["seed", "neuron"]},
            "values": {"mei_norm": np.array([res.norm])},
            "method": "gradient ascent, Gaussian-blur preconditioning, fixed norm, clipping "
                      "(Walker et al. 2019)"}


def surround_discs(results, which="gsf"):
    """Centres (n, 2) as (row, col) and diameters (n,) of the fixed centre discs, from the
    "grating" centre and the "size" GSF ("gsf"; the RF diameter where it is NaN) or the
    "rf" map's diameter ("crf")."""
    g = results["grating"]["per_neuron"]
    rf = results["rf"]["per_neuron"]["rf_diameter"]
    if which == "gsf":
        gsf = results["size"]["per_neuron"]["gsf"]
        diam = np.where(np.isfinite(gsf), gsf, rf)
    else:
        diam = np.asarray(rf, np.float64)
    return np.stack([g["centre_y"], g["centre_x"]], axis=1), diam


def surround_mei_experiment(ctx):
    """Experiment "surround_mei": most / least exciting surrounds around the model's MEIs."""
    if ctx.system is not ctx.twin:
        return {"per_neuron": {}, "skipped": NO_GRADIENT}
    cfg = MEIConfig.from_dict(ctx.settings["mei"], "settings: mei")
    centres, diameters = surround_discs(ctx.results, cfg.surround_disc)
    s = compute_surround_meis(ctx.twin, ctx.results["mei"]["curves"]["mei"], centres,
                              diameters, cfg)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio_up = s.raise_response / s.centre_response
        ratio_down = s.lower_response / s.centre_response
    return {"per_neuron": {"surround_disc_diameter": diameters, "surround_centre_response":
                           s.centre_response, "surround_raise_response": s.raise_response,
                           "surround_lower_response": s.lower_response,
                           "surround_raise_ratio": ratio_up, "surround_lower_ratio": ratio_down},
            "curves": {"surround_centre": s.centre, "surround_raise": s.raise_image,
                       "surround_lower": s.lower_image},
            "axes": {k: ["neuron", "row", "col"] for k in ("surround_centre", "surround_raise",
                                                           "surround_lower")},
            "method": "the MEI fixed inside the centre disc, the surround optimised up and "
                      "down (Fu et al. 2023)"}


def truth_side(twin, model):
    """The true neurons shown the model's MEI images -> {experiment: {"per_neuron": ...}}.

    "mei": `mei_response`, `mei_relative` (the closed loop, `truth.closed_loop`);
    "surround_mei": the true responses to the model's centre, raise and lower images.
    """
    from .truth import closed_loop as loop

    out = {}
    if "mei" in model:
        cl = loop(twin, model["mei"]["curves"]["mei"])
        out["mei"] = {"per_neuron": {"mei_response": cl["truth_response"],
                                     "mei_relative": cl["relative"]}}
    if "surround_mei" in model:
        c = model["surround_mei"]["curves"]
        y = twin.truth.predict_own(np.stack([c["surround_centre"], c["surround_raise"],
                                             c["surround_lower"]]).astype(np.float32))
        with np.errstate(invalid="ignore", divide="ignore"):
            out["surround_mei"] = {"per_neuron": {
                "surround_centre_response": y[0], "surround_raise_response": y[1],
                "surround_lower_response": y[2], "surround_raise_ratio": y[1] / y[0],
                "surround_lower_ratio": y[2] / y[0]}}
    return out


def closed_loop_summary(model, truth):
    """Across-neuron closed-loop numbers (medians over finite neurons)."""
    out = {}
    if "mei" in truth and "mei_relative" in truth["mei"]["per_neuron"]:
        rel = np.asarray(truth["mei"]["per_neuron"]["mei_relative"], np.float64)
        ok = np.isfinite(rel)
        out["closed_loop_relative_median"] = float(np.median(rel[ok])) if ok.any() else np.nan
        out["closed_loop_fraction_above_1"] = float(np.mean(rel[ok] > 1)) if ok.any() else np.nan
    if "surround_mei" in truth and "surround_raise_response" in truth["surround_mei"]["per_neuron"]:
        t = truth["surround_mei"]["per_neuron"]
        out["surround_truth_raise_gt_lower"] = float(np.mean(
            np.asarray(t["surround_raise_response"]) > np.asarray(t["surround_lower_response"])))
    return out


def register_experiments():
    """Add "mei" and "surround_mei" to the experiment registry and their settings."""
    from . import experiments

    experiments.DEFAULTS.setdefault("mei", dict(DEFAULTS))
    experiments.SECTION_CHECKS["mei"] = lambda d: MEIConfig.from_dict(d, "settings: mei")
    experiments.register("mei", mei_experiment)
    experiments.register("surround_mei", surround_mei_experiment,
                         requires=("mei", "rf", "grating", "size"))
