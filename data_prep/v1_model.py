"""Model V1 neurons with a classical receptive field (CRF) and contextual modulation.

Each neuron ``n`` (parameters: ``sample_neurons``; all lengths in pixels):

- **CRF drive.** A Gabor quadrature pair (envelope ``sigma``, spatial frequency ``sf``
  in cycles/pixel, wave-vector direction ``theta``) centred at (``x0``, ``y0``) near
  the image centre and *truncated* to the disc ``r <= crf_radius``; the even filter is
  made zero-mean. With linear outputs ``Le``, ``Lo`` and phase ``phase``::

      E = simple_weight * max(cos(phase) Le + sin(phase) Lo, 0)
          + (1 - simple_weight) * sqrt(Le^2 + Lo^2)          (simple/complex mixture)

- **Context** (only where ``has_surround``). A fixed bank of complex Gabor filters
  (``BANK_ORIENTATIONS`` x ``BANK_SF``) gives local orientation energy maps
  ``e_k(x, y)`` over the whole image. Outside the CRF (``r > crf_radius``):

  * suppression pool ``S = sum_k w_sup[k] <a, e_k>``: ``a`` is a Gaussian annulus
    (``surround_sigma``) that excludes the CRF; ``w_sup`` is tuned to the neuron's
    orientation (iso-orientation) and frequency, plus an untuned share
    (``untuned_fraction``);
  * facilitation ``F = sum_k w_fac[k] <c, e_k>``: ``c`` is an association-field-like
    band along the neuron's preferred *bar* axis (the collinear direction, length
    ``facil_length``, width ``facil_width``), also outside the CRF; ``w_fac`` is
    narrowly tuned to the preferred orientation, so it responds to collinear contours
    and edges that run through the receptive field.

  With ``S^ = S / s_norm`` and ``F^ = F / f_norm`` (their calibration means)::

      g = E * (1 + facilitation_weight * F^ / (1 + F^ / 4)) / (1 + suppression_weight * S^)

  Facilitation only multiplies an existing CRF drive (flankers alone do not drive).

- **Gated surround** (``surround_model="gated"``, an option; ``"fixed"`` above is the
  default). The suppression pool is no longer tuned to the neuron's preferred
  orientation but gated by the *relation between centre and surround content*
  (flexible normalization, Coen-Cagli, Kohn & Schwartz 2015; iso-surround suppression
  relative to the centre stimulus, Cavanaugh, Bair & Movshon 2002). With ``c_o`` and
  ``s_o`` the orientation-energy profiles (8 orientations, each summed over the bank's
  frequencies with the neuron's frequency weights) pooled over the CRF disc (Gaussian
  ``sigma``) and over the annulus ``a``, and ``rho`` their Pearson correlation over
  orientations::

      q = 1 / (1 + exp(-(rho - gate_offset) / gate_width))       (gate, in (0, 1))
      S = q * sum_o s_o                                             (gated suppression drive)

  ``q`` is near 1 when the surround's orientations match the centre's (dependent
  centre and surround: normalised by the surround) and near 0 when they differ (the
  suppression is released). ``S^ = S / s_norm`` and ``g`` are as above; the
  facilitation term is unchanged. ``gate_offset`` and ``gate_width`` are fixed
  constants (``GATE_OFFSET``, ``GATE_WIDTH``), not fitted.
  ``suppression_weight`` and ``facilitation_weight`` are ``surround_strength`` times a
  per-neuron mix; control neurons have both = 0 and ``g = E`` exactly.

- **Output nonlinearity** (rectifying and expansive; sparse responses)::

      response = baseline + amplitude * (max(g - threshold, 0) / (g_ref - threshold)) ** exponent

  ``threshold`` and ``g_ref`` are quantiles (``threshold_quantile``, 0.999) of ``g``
  on calibration images (``calibrate``).

- **Trial noise** (``noisy_trials``): multiplicative gain noise on the evoked part and
  additive Gaussian noise (``noise_sd``): two-photon-like single trials. ``baseline``
  plus noise gives the negative dF/F values of real data.

``surround_factor(d, params)`` is ``g / E``, the surround's multiplicative effect.
``responses(images, params)`` gives the noise-free responses of any images from a
parameter dict (e.g. ``load_params(DIR / "ground_truth.npz")``). Control neurons'
responses depend on pixels with ``r <= crf_radius`` only (``crf_mask``), bit for bit.
"""
from __future__ import annotations

import numpy as np
import scipy.fft as sfft

__all__ = [
    "PARAM_NAMES", "MODEL_VERSION", "sample_neurons", "crf_mask", "drives", "combine",
    "calibrate", "responses", "noisy_trials", "load_params", "crf_filters",
    "SURROUND_MODELS", "GATE_PARAM_NAMES", "GATE_OFFSET", "GATE_WIDTH", "surround_model",
    "surround_factor", "select_neurons",
]

MODEL_VERSION = 1
_REF = 50.0
BANK_ORIENTATIONS = 8
BANK_SF = (0.12, 0.2)        # cycles/pixel at 50x50; scaled by 50/size
BANK_BANDWIDTH = 0.45        # sigma_f / f of each bank filter

PARAM_NAMES = (
    "x0", "y0", "sigma", "crf_radius", "theta", "sf", "phase", "simple_weight",
    "has_surround", "surround_strength", "suppression_weight", "facilitation_weight",
    "untuned_fraction", "surround_sigma", "facil_length", "facil_width",
    "threshold_quantile", "amplitude", "exponent", "baseline", "noise_sd", "gain_noise",
    "s_norm", "f_norm", "threshold", "g_ref",
)
_CALIBRATED = ("s_norm", "f_norm", "threshold", "g_ref")
SURROUND_MODELS = ("fixed", "gated")
#: extra per-neuron parameters of a gated site (absent from fixed sites, which stay
#: byte-identical to those written before the option existed)
GATE_PARAM_NAMES = ("gate_offset", "gate_width")
#: Gate constants, fixed before any model was trained on a gated site (docs/synthetic_site.md):
#: rho = 0 (unrelated centre and surround orientations) half-suppresses; the logistic
#: goes from 0.12 to 0.88 between rho = -0.5 and 0.5.
GATE_OFFSET = 0.0
GATE_WIDTH = 0.25


def sample_neurons(n, size=50, rng=None, surround_fraction=0.7, surround_model="fixed"):
    """Draw ``n`` neurons' parameters: dict of (n,) float64 arrays (``has_surround`` bool).

    ``round(surround_fraction * n)`` neurons, chosen at random, get a surround; the
    others are controls. The calibrated entries are NaN until ``calibrate``.
    ``surround_model="gated"`` adds the constant ``GATE_PARAM_NAMES`` arrays (no random
    draws: the other parameters are those of the fixed site of the same ``rng``).
    """
    if surround_model not in SURROUND_MODELS:
        raise ValueError(f"surround_model must be one of {SURROUND_MODELS}, got {surround_model!r}")
    if not 0.0 <= surround_fraction <= 1.0:
        raise ValueError(f"surround_fraction must be in [0, 1], got {surround_fraction}")
    rng = np.random.default_rng(rng)
    sc = size / _REF
    c = (size - 1) / 2.0
    p = {}
    p["x0"] = c + np.clip(rng.normal(0, 1.0, n), -2.5, 2.5) * sc
    p["y0"] = c + np.clip(rng.normal(0, 1.0, n), -2.5, 2.5) * sc
    p["sigma"] = rng.uniform(1.8, 3.0, n) * sc
    p["crf_radius"] = 2.2 * p["sigma"]
    p["theta"] = rng.uniform(0, np.pi, n)
    p["sf"] = rng.uniform(0.33, 0.5, n) / p["sigma"]
    p["phase"] = rng.uniform(0, 2 * np.pi, n)
    p["simple_weight"] = rng.beta(0.6, 0.6, n)
    n_sur = int(round(surround_fraction * n))
    has = np.zeros(n, bool)
    has[rng.permutation(n)[:n_sur]] = True
    p["has_surround"] = has
    strength = np.where(has, rng.uniform(0.3, 1.0, n), 0.0)
    mix = rng.uniform(0.0, 1.0, n)          # 0: all suppression ... 1: all facilitation
    p["surround_strength"] = strength
    p["suppression_weight"] = strength * 6.0 * (1.0 - 0.7 * mix)
    p["facilitation_weight"] = strength * 3.0 * (0.2 + mix)
    p["untuned_fraction"] = rng.uniform(0.1, 0.35, n)
    p["surround_sigma"] = rng.uniform(1.8, 3.0, n) * p["crf_radius"]
    p["facil_length"] = rng.uniform(2.0, 3.5, n) * p["crf_radius"]
    p["facil_width"] = np.full(n, 1.2 * sc)
    p["threshold_quantile"] = rng.uniform(0.4, 0.8, n)
    p["amplitude"] = np.exp(rng.uniform(np.log(0.4), np.log(1.0), n))
    p["exponent"] = rng.uniform(1.1, 1.8, n)
    p["noise_sd"] = rng.uniform(0.08, 0.18, n)
    # baseline 0.7-1.6 SDs of the noise of a 10-repeat mean: ~5-24% of the
    # unresponsive images' repeat means fall below 0 (fewer of all images)
    p["baseline"] = rng.uniform(0.7, 1.6, n) * p["noise_sd"] / np.sqrt(10.0)
    p["gain_noise"] = np.full(n, 0.3)
    for k in _CALIBRATED:
        p[k] = np.full(n, np.nan)
    if surround_model == "gated":
        p["gate_offset"] = np.full(n, GATE_OFFSET)
        p["gate_width"] = np.full(n, GATE_WIDTH)
    return {k: (v if k == "has_surround" else np.asarray(v, np.float64)) for k, v in p.items()}


def _n(params):
    return len(params["x0"])


def surround_model(params):
    """"gated" when ``params`` has the gate parameters, else "fixed"."""
    return "gated" if all(k in params for k in GATE_PARAM_NAMES) else "fixed"


def _dist(params, xs, ys):
    """Per-neuron offsets (n, P) of the points (xs, ys) from the RF centres."""
    dx = xs[None, :] - params["x0"][:, None]
    dy = ys[None, :] - params["y0"][:, None]
    return dx, dy


def _grid(size):
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    return x.ravel(), y.ravel()


def crf_mask(params, size):
    """(n, size, size) bool: the pixels inside each neuron's CRF (r <= crf_radius)."""
    x, y = _grid(size)
    dx, dy = _dist(params, x, y)
    return (np.hypot(dx, dy) <= params["crf_radius"][:, None]).reshape(-1, size, size)


def crf_filters(params, size):
    """(P, 2n) float32 truncated Gabor pairs: columns [even_0..even_n-1, odd_0..odd_n-1]."""
    x, y = _grid(size)
    dx, dy = _dist(params, x, y)
    inside = np.hypot(dx, dy) <= params["crf_radius"][:, None]
    env = np.exp(-(dx ** 2 + dy ** 2) / (2 * params["sigma"][:, None] ** 2)) * inside
    ph = 2 * np.pi * params["sf"][:, None] * (dx * np.cos(params["theta"])[:, None]
                                              + dy * np.sin(params["theta"])[:, None])
    even = env * np.cos(ph)
    even -= env * (even.sum(1, keepdims=True) / env.sum(1, keepdims=True))   # zero DC
    odd = env * np.sin(ph)
    norm = np.sqrt((even ** 2).sum(1, keepdims=True) + (odd ** 2).sum(1, keepdims=True)) + 1e-12
    return np.concatenate([even / norm, odd / norm], axis=0).T.astype(np.float32)


def _fast_even(n):
    """Smallest m >= n that is a multiple of 4 and 5-smooth (fast FFTs of m and m/2)."""
    m = n + (-n) % 4
    while True:
        k = m
        for f in (2, 3, 5):
            while k % f == 0:
                k //= f
        if k == 1:
            return m
        m += 4


class _Bank:
    """Orientation-energy maps of the fixed filter bank, at stride 2, via cropped FFTs."""

    def __init__(self, size):
        self.size = size
        sc = _REF / size
        self.sfs = np.array(BANK_SF) * sc
        self.thetas = np.arange(BANK_ORIENTATIONS) * np.pi / BANK_ORIENTATIONS
        sig_x = 1.0 / (2 * np.pi * BANK_BANDWIDTH * self.sfs.min())
        pad = int(np.ceil(2.5 * sig_x))
        self.N = _fast_even(size + 2 * pad)
        self.off = (self.N - size) // 2
        self.M = self.N // 2
        f = np.fft.fftfreq(self.N)
        fx, fy = f[None, :], f[:, None]
        self.chan = []                                  # (theta, sf, iy, ix, H cropped)
        for sf in self.sfs:
            for th in self.thetas:
                cx, cy = sf * np.cos(th), sf * np.sin(th)
                H = np.exp(-((fx - cx) ** 2 + (fy - cy) ** 2) / (2 * (BANK_BANDWIDTH * sf) ** 2))
                mx, my = int(round(cx * self.N)), int(round(cy * self.N))
                ix = (mx + np.arange(-self.M // 2, self.M // 2)) % self.N
                iy = (my + np.arange(-self.M // 2, self.M // 2)) % self.N
                # the cropped spectrum is indexed by frequency offset; ifft needs
                # offset 0 at index 0 -> roll by M/2
                ix, iy = np.roll(ix, -self.M // 2), np.roll(iy, -self.M // 2)
                self.chan.append((th, sf, iy, ix, H[np.ix_(iy, ix)].astype(np.complex64)))
        # coarse sample positions in image coordinates (stride 2 on the padded grid)
        cs = np.arange(self.M) * 2 - self.off
        keep = (cs >= -0.5) & (cs <= size - 0.5)
        self.keep = np.nonzero(keep)[0]
        cy_, cx_ = np.meshgrid(cs[keep], cs[keep], indexing="ij")
        self.xs, self.ys = cx_.ravel().astype(np.float64), cy_.ravel().astype(np.float64)

    def energy(self, images):
        """(b, K, Pc) float32 energy maps for (b, S, S) images (K = len(self.chan))."""
        b = images.shape[0]
        padded = np.empty((b, self.N, self.N), np.float32)
        padded[:] = images.reshape(b, -1).mean(1)[:, None, None]
        o = self.off
        padded[:, o:o + self.size, o:o + self.size] = images
        X = sfft.fft2(padded, workers=-1)
        out = np.empty((b, len(self.chan), len(self.keep) ** 2), np.float32)
        k = self.keep
        for i, (_, _, iy, ix, H) in enumerate(self.chan):
            sub = X[:, iy][:, :, ix] * H
            r = sfft.ifft2(sub, workers=-1)[:, k][:, :, k] * 0.25
            out[:, i] = (r.real ** 2 + r.imag ** 2).reshape(b, -1)
        return out

    def weights(self, params):
        """Suppression and facilitation weights over bank channels, each (n, K)."""
        th = np.array([c[0] for c in self.chan])[None, :]
        sf = np.array([c[1] for c in self.chan])[None, :]
        d = np.cos(2 * (th - params["theta"][:, None]))
        lf = np.log2(sf / params["sf"][:, None])
        wsf = np.exp(-lf ** 2 / (2 * 0.6 ** 2))
        iso = np.exp(1.5 * (d - 1)) * wsf
        iso /= iso.sum(1, keepdims=True)
        flat = wsf / wsf.sum(1, keepdims=True)
        u = params["untuned_fraction"][:, None]
        w_sup = (1 - u) * iso + u * flat
        fac = np.exp(4.0 * (d - 1)) * wsf
        w_fac = fac / fac.sum(1, keepdims=True)
        return w_sup.astype(np.float32), w_fac.astype(np.float32)

    def frequency_weights(self, params):
        """(n, K) float32: each neuron's spatial-frequency weights over the channels, summing
        to 1 (orientation-untuned; the gated pools use them)."""
        sf = np.array([c[1] for c in self.chan])[None, :]
        lf = np.log2(sf / params["sf"][:, None])
        wsf = np.exp(-lf ** 2 / (2 * 0.6 ** 2))
        return (wsf / wsf.sum(1, keepdims=True)).astype(np.float32)

    def disc(self, params):
        """(Pc, n) float32: the CRF disc pool (Gaussian ``sigma``, r <= crf_radius), sum 1."""
        dx, dy = _dist(params, self.xs, self.ys)
        r2 = dx ** 2 + dy ** 2
        w = (np.exp(-r2 / (2 * params["sigma"][:, None] ** 2))
             * (r2 <= params["crf_radius"][:, None] ** 2))
        w /= w.sum(1, keepdims=True) + 1e-12
        return w.T.astype(np.float32)

    def maps(self, params):
        """Spatial pools at the coarse positions: annulus (Pc, n), collinear band (Pc, n)."""
        dx, dy = _dist(params, self.xs, self.ys)
        r = np.hypot(dx, dy)
        outside = r > params["crf_radius"][:, None]
        ann = np.exp(-r ** 2 / (2 * params["surround_sigma"][:, None] ** 2)) * outside
        # bar axis is perpendicular to the wave vector
        bx, by = -np.sin(params["theta"])[:, None], np.cos(params["theta"])[:, None]
        along = dx * bx + dy * by
        perp = -dx * by + dy * bx
        col = (np.exp(-along ** 2 / (2 * params["facil_length"][:, None] ** 2))
               * np.exp(-perp ** 2 / (2 * params["facil_width"][:, None] ** 2)) * outside)
        ann /= ann.sum(1, keepdims=True) + 1e-12
        col /= col.sum(1, keepdims=True) + 1e-12
        return ann.T.astype(np.float32), col.T.astype(np.float32)


def gate(center, surround, offset, width):
    """Flexible-normalization gate: (..., n) in (0, 1) from orientation profiles
    ``center`` and ``surround`` (..., O, n) (Pearson r over the O orientations, then a
    logistic of ``(r - offset) / width``; a flat profile counts as r = 0)."""
    c = center - center.mean(-2, keepdims=True)
    s = surround - surround.mean(-2, keepdims=True)
    den = np.sqrt((c * c).sum(-2) * (s * s).sum(-2))
    rho = np.where(den > 0, (c * s).sum(-2) / np.where(den > 0, den, 1.0), 0.0)
    return 1.0 / (1.0 + np.exp(-(rho - offset) / width))


def drives(images, params, chunk=500):
    """Raw drives for (N, S, S) images: dict of (N, n) float64 ``crf``, ``sup``, ``fac``.

    ``crf`` is the CRF energy E; ``sup`` and ``fac`` are the unnormalised surround
    pools S and F (0 for control neurons, which skip the bank entirely). A gated site
    (``surround_model(params) == "gated"``) also gives ``gate`` (the gate q; 0 for
    controls), and its ``sup`` is the gated drive ``q * sum_o s_o``.
    """
    images = np.asarray(images, np.float32)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be (N, S, S); got {images.shape}")
    N, size = images.shape[0], images.shape[1]
    if "image_size" in params and int(params["image_size"]) != size:
        raise ValueError(f"params are for {int(params['image_size'])}x{int(params['image_size'])} images; "
                         f"got {size}x{size}")
    n = _n(params)
    filt = crf_filters(params, size)
    lin = (images.reshape(N, -1) @ filt).astype(np.float64)
    le, lo = lin[:, :n], lin[:, n:]
    simple = np.maximum(np.cos(params["phase"]) * le + np.sin(params["phase"]) * lo, 0.0)
    cplx = np.sqrt(le ** 2 + lo ** 2)
    sw = params["simple_weight"]
    out = {"crf": sw * simple + (1 - sw) * cplx,
           "sup": np.zeros((N, n)), "fac": np.zeros((N, n))}
    sur = np.nonzero(np.asarray(params["has_surround"], bool))[0]
    if len(sur) == 0 or N == 0:
        return out
    gated = surround_model(params) == "gated"
    names = PARAM_NAMES + (GATE_PARAM_NAMES if gated else ())
    sub = {k: np.asarray(params[k])[sur] for k in names}
    bank = _Bank(size)
    w_sup, w_fac = bank.weights(sub)
    ann, col = bank.maps(sub)
    m = len(sur)
    if gated:
        out["gate"] = np.zeros((N, n))
        pools = np.concatenate([ann, col, bank.disc(sub)], axis=1)     # (Pc, 3m)
        w_sf = bank.frequency_weights(sub)                             # (m, K)
        n_sf, n_or = len(bank.sfs), len(bank.thetas)
    else:
        pools = np.concatenate([ann, col], axis=1)              # (Pc, 2m)
    for s in range(0, N, chunk):
        e = bank.energy(images[s:s + chunk])               # (b, K, Pc)
        b, K, _ = e.shape
        q = (e.reshape(b * K, -1) @ pools).reshape(b, K, pools.shape[1])
        out["fac"][s:s + b, sur] = np.einsum("bkn,nk->bn", q[..., m:2 * m], w_fac)
        if not gated:
            out["sup"][s:s + b, sur] = np.einsum("bkn,nk->bn", q[..., :m], w_sup)
            continue
        # orientation profiles (b, O, m): channels are ordered sf-major, orientation-minor
        prof = (q.astype(np.float64) * np.concatenate([w_sf.T] * 3, axis=1)[None]
                ).reshape(b, n_sf, n_or, 3 * m).sum(1)
        s_prof, c_prof = prof[..., :m], prof[..., 2 * m:]
        g = gate(c_prof, s_prof, sub["gate_offset"], sub["gate_width"])
        out["gate"][s:s + b, sur] = g
        out["sup"][s:s + b, sur] = g * s_prof.sum(1)
    return out


def surround_factor(d, params):
    """(N, n) float64 ``g / E``: the surround's multiplicative effect on the CRF drive
    (1 for controls; NaN where E = 0), from drives ``d`` and calibrated ``params``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(d["crf"] > 0, _modulated(d, params) / d["crf"], np.nan)


def _modulated(d, params, context=True):
    """g = E * facilitation / suppression, (N, n)."""
    g = d["crf"]
    if not context:
        return g
    has = np.asarray(params["has_surround"], bool)
    s_hat = np.where(has, d["sup"] / np.where(has, params["s_norm"], 1.0), 0.0)
    f_hat = np.where(has, d["fac"] / np.where(has, params["f_norm"], 1.0), 0.0)
    fac = 1.0 + params["facilitation_weight"] * f_hat / (1.0 + f_hat / 4.0)
    sup = 1.0 + params["suppression_weight"] * s_hat
    return np.where(has, g * fac / sup, g)


def calibrate(params, d):
    """Set ``s_norm``, ``f_norm``, ``threshold`` and ``g_ref`` from drives ``d`` of
    calibration images (returns a new dict)."""
    p = dict(params)
    has = np.asarray(p["has_surround"], bool)
    p["s_norm"] = np.where(has, d["sup"].mean(0), 0.0) + np.where(has, 1e-12, 0.0)
    p["f_norm"] = np.where(has, d["fac"].mean(0), 0.0) + np.where(has, 1e-12, 0.0)
    g = _modulated(d, p)
    thr = np.array([np.quantile(g[:, i], p["threshold_quantile"][i]) for i in range(g.shape[1])])
    ref = np.quantile(g, 0.999, axis=0)
    p["threshold"] = thr
    p["g_ref"] = np.maximum(ref, thr + 1e-6)
    return p


def combine(d, params, context=True):
    """Noise-free responses (N, n) float64 from drives; ``context=False`` replaces the
    surround terms by their calibration means (S^ = F^ = 1): the CRF-only prediction."""
    if not context:
        one = {"crf": d["crf"], "sup": np.broadcast_to(params["s_norm"], d["crf"].shape),
               "fac": np.broadcast_to(params["f_norm"], d["crf"].shape)}
        g = _modulated(one, params)
    else:
        g = _modulated(d, params)
    z = np.maximum(g - params["threshold"], 0.0) / (params["g_ref"] - params["threshold"])
    return params["baseline"] + params["amplitude"] * z ** params["exponent"]


def responses(images, params, chunk=500, context=True):
    """Noise-free responses (N, n) float64 of (N, S, S) images from calibrated params."""
    if np.any(~np.isfinite(np.asarray(params["threshold"], float))):
        raise ValueError("params are not calibrated (threshold is NaN); run calibrate()")
    return combine(drives(images, params, chunk=chunk), params, context=context)


def noisy_trials(clean, params, rng, n_trials):
    """(N, n_trials, n) float64 single trials around noise-free ``clean`` (N, n)."""
    rng = np.random.default_rng(rng)
    N, n = clean.shape
    evoked = clean - params["baseline"]
    gn = params["gain_noise"]
    gain = np.exp(gn * rng.standard_normal((N, n_trials, n)) - gn ** 2 / 2)
    add = params["noise_sd"] * rng.standard_normal((N, n_trials, n))
    return params["baseline"] + evoked[:, None, :] * gain + add


def select_neurons(params, index):
    """The parameter dict of the neurons ``index`` (indices or a bool mask) only."""
    return {k: (v if np.ndim(v) == 0 else np.asarray(v)[index]) for k, v in params.items()}


def load_params(source):
    """Parameter dict from a ``ground_truth.npz`` path (or an open NpzFile / dict).

    Holds the ``PARAM_NAMES`` arrays, the ``GATE_PARAM_NAMES`` ones of a gated site,
    plus ``image_size`` when the source has it
    (``drives`` then refuses images of another size)."""
    if isinstance(source, dict):
        src = source
    else:
        with np.load(source, allow_pickle=False) as z:
            src = {k: z[k] for k in z.files}
    missing = [k for k in PARAM_NAMES if k not in src]
    if missing:
        raise KeyError(f"ground truth lacks parameters: {', '.join(missing)}")
    out = {k: (np.asarray(src[k], bool) if k == "has_surround" else np.asarray(src[k], np.float64))
           for k in PARAM_NAMES}
    if all(k in src for k in GATE_PARAM_NAMES):
        out.update({k: np.asarray(src[k], np.float64) for k in GATE_PARAM_NAMES})
    if "image_size" in src:
        out["image_size"] = int(src["image_size"])
    return out
