"""Procedural natural-like grayscale stimuli for the simulated V1 site (numpy only).

``natural_images(n, size, rng)`` returns ``(n, size, size)`` float32 images in [0, 1]
("unit" normalisation: 0 = black, 1 = white). Every image is built from:

1. a smooth 1/f^2 Gaussian field (shading, the "ground");
2. a dead-leaves layer: occluding ellipses (discs and elongated leaves) whose radii
   follow p(r) ~ r^-3, i.e. a scale-invariant layer with a roughly 1/f^2 power
   spectrum; a quarter of the leaves are filled with an oriented grating texture, so
   textures start and stop at occlusion borders of every size;
3. thin contours (straight lines). With some probability one contour runs through the
   image centre (where the model neurons' receptive fields sit); its length varies, so
   it may stop inside the receptive field or continue far into the surround, and some
   have a gap over the centre (context without centre drive);
4. optical blur, a spatially varying contrast gain, a global luminance and contrast,
   clipping to [0, 1] and a little pixel noise.

Lengths are given for 50-pixel images and scale with ``size``. Everything is
vectorised over chunks of images; the leaf membership test is one matrix product
(an ellipse is a quadratic form in the pixel coordinates).

Also here: ``grating_patch`` (tuning-curve probes for the plots) and
``power_spectrum_slope`` (checks the ~1/f^2 spectrum).
"""
from __future__ import annotations

import numpy as np

__all__ = ["natural_images", "pink_field", "grating_patch", "power_spectrum_slope"]

_REF = 50.0  # lengths below are in pixels of a 50x50 image


def _coords(size):
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return x.ravel(), y.ravel()


def pink_field(n, size, rng, exponent=2.0):
    """(n, size, size) Gaussian random fields with power ~ 1/f^exponent, unit std each."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.sqrt(fx ** 2 + fy ** 2)
    f[0, 0] = 1.0
    amp = f ** (-exponent / 2.0)
    amp[0, 0] = 0.0
    noise = rng.standard_normal((n, size, size)).astype(np.float32)
    field = np.fft.irfft2(np.fft.rfft2(noise) * amp, s=(size, size)).astype(np.float32)
    field /= field.reshape(n, -1).std(axis=1)[:, None, None] + 1e-8
    return field


def _gaussian_blur(img, sigma):
    """Blur each image (n, S, S) with its own Gaussian sigma (n,) in pixels (FFT, periodic)."""
    n, s, _ = img.shape
    fy = np.fft.fftfreq(s)[:, None]
    fx = np.fft.rfftfreq(s)[None, :]
    f2 = (fx ** 2 + fy ** 2)[None]
    h = np.exp(-2.0 * np.pi ** 2 * f2 * (sigma[:, None, None] ** 2))
    return np.fft.irfft2(np.fft.rfft2(img) * h, s=(s, s)).astype(np.float32)


def _dead_leaves(b, size, rng, n_leaves, x, y, scale):
    """Dead-leaves layer: returns (values (b, P), covered (b, P) bool)."""
    rmin, rmax = 1.5 * scale, 0.8 * size
    u = rng.random((b, n_leaves))
    r = (rmin ** -2 - u * (rmin ** -2 - rmax ** -2)) ** -0.5           # p(r) ~ r^-3
    elong = rng.random((b, n_leaves)) < 0.4
    aspect = np.where(elong, np.exp(rng.uniform(0.3, 1.5, (b, n_leaves))), 1.0)
    ra, rb = r * np.sqrt(aspect), r / np.sqrt(aspect)                  # semi-axes
    margin = 0.15 * size
    cx = rng.uniform(-margin, size - 1 + margin, (b, n_leaves))
    cy = rng.uniform(-margin, size - 1 + margin, (b, n_leaves))
    th = rng.uniform(0.0, np.pi, (b, n_leaves))
    c, s = np.cos(th), np.sin(th)
    # (dx c + dy s)^2/ra^2 + (-dx s + dy c)^2/rb^2 = A dx^2 + B dx dy + C dy^2
    A = c ** 2 / ra ** 2 + s ** 2 / rb ** 2
    B = 2.0 * c * s * (1.0 / ra ** 2 - 1.0 / rb ** 2)
    C = s ** 2 / ra ** 2 + c ** 2 / rb ** 2
    coef = np.stack([A, B, C,
                     -2 * A * cx - B * cy,
                     -B * cx - 2 * C * cy,
                     A * cx ** 2 + B * cx * cy + C * cy ** 2], axis=-1).astype(np.float32)
    basis = np.stack([x * x, x * y, y * y, x, y, np.ones_like(x)], axis=0)  # (6, P)
    # a sentinel leaf (index M) covers everything: argmax then finds the topmost leaf
    coef = np.concatenate([coef, np.zeros((b, 1, 6), np.float32)], axis=1)
    m1 = n_leaves + 1
    # one 2-D product (P, b*(M+1)); a batched matmul hits cache conflicts when P = 2^k
    inside = (basis.T @ coef.reshape(b * m1, 6).T).reshape(-1, b, m1) < 1.0
    top = np.ascontiguousarray(np.argmax(inside, axis=2).T)          # (b, P)
    covered = top < n_leaves
    top = np.minimum(top, n_leaves - 1)
    gray = rng.random((b, n_leaves)).astype(np.float32)
    textured = rng.random((b, n_leaves)) < 0.25
    tamp = np.where(textured, rng.uniform(0.1, 0.35, (b, n_leaves)), 0.0)
    tf = rng.uniform(0.07, 0.3, (b, n_leaves)) * (_REF / size)
    tth = rng.uniform(0.0, np.pi, (b, n_leaves))
    tph = rng.uniform(0.0, 2 * np.pi, (b, n_leaves))
    kx = (2 * np.pi * tf * np.cos(tth)).astype(np.float32)
    ky = (2 * np.pi * tf * np.sin(tth)).astype(np.float32)

    def g(a):
        return np.take_along_axis(a.astype(np.float32), top, axis=1)

    val = g(gray) + g(tamp) * np.cos(g(kx) * x[None] + g(ky) * y[None] + g(tph))
    return val, covered


def _contours(b, size, rng, x, y, scale, max_lines=4):
    """Thin straight contours; returns the signed line layer (b, P)."""
    ctr = (size - 1) / 2.0
    n_lines = np.minimum(rng.poisson(1.2, b), max_lines)
    active = np.arange(max_lines)[None, :] < n_lines[:, None]
    f32 = np.float32
    mx = rng.uniform(0, size - 1, (b, max_lines))
    my = rng.uniform(0, size - 1, (b, max_lines))
    # line 0: through the centre with probability 0.45
    central = rng.random(b) < 0.45
    active[:, 0] |= central
    mx[:, 0] = np.where(central, ctr + rng.normal(0, 1.5 * scale, b), mx[:, 0])
    my[:, 0] = np.where(central, ctr + rng.normal(0, 1.5 * scale, b), my[:, 0])
    th = rng.uniform(0, np.pi, (b, max_lines))
    half = 0.5 * np.exp(rng.uniform(np.log(6.0), np.log(90.0), (b, max_lines))) * scale
    gap = np.zeros((b, max_lines))
    gap[:, 0] = np.where(central & (rng.random(b) < 0.2), rng.uniform(3, 8, b) * scale, 0.0)
    width = rng.uniform(0.5, 1.3, (b, max_lines)) * scale
    contrast = rng.uniform(0.15, 0.5, (b, max_lines)) * rng.choice([-1.0, 1.0], (b, max_lines))
    ux, uy = np.cos(th), np.sin(th)
    # along = (x - mx) ux + (y - my) uy, perp = -(x - mx) uy + (y - my) ux: affine in x, y
    la = np.stack([ux, uy, -(mx * ux + my * uy)], -1).astype(f32)
    lp = np.stack([-uy, ux, mx * uy - my * ux], -1).astype(f32)
    basis = np.stack([x, y, np.ones_like(x)], 0)
    along = np.abs(la @ basis)                                         # (b, L, P)
    perp = lp @ basis
    over = np.maximum(along - half[..., None].astype(f32), 0.0)        # beyond the ends
    d2 = perp * perp + over * over
    prof = np.exp(d2 * (-0.5 / width[..., None] ** 2).astype(f32))
    prof *= along >= gap[..., None].astype(f32)
    amp = (active * contrast)[..., None].astype(f32)
    return (prof * amp).sum(axis=1)


def natural_images(n, size=50, rng=None, chunk=100, n_leaves=64):
    """(n, size, size) float32 natural-like images in [0, 1]; deterministic given ``rng``."""
    rng = np.random.default_rng(rng)
    scale = size / _REF
    x, y = _coords(size)
    out = np.empty((n, size, size), np.float32)
    for start in range(0, n, chunk):
        b = min(chunk, n - start)
        ground = 0.5 + 0.18 * pink_field(b, size, rng).reshape(b, -1)
        leaves, covered = _dead_leaves(b, size, rng, n_leaves, x, y, scale)
        img = np.where(covered, leaves, ground)
        img = img + _contours(b, size, rng, x, y, scale)
        img = _gaussian_blur(img.reshape(b, size, size), rng.uniform(0.2, 0.6, b) * scale)
        img = img.reshape(b, -1)
        gain = np.exp(0.35 * pink_field(b, size, rng, exponent=3.0).reshape(b, -1))
        dev = (img - img.mean(axis=1, keepdims=True)) * gain
        lum = rng.uniform(0.3, 0.7, (b, 1))
        con = np.exp(rng.uniform(np.log(0.35), np.log(1.3), (b, 1)))
        img = lum + con * dev + rng.normal(0, 0.01, img.shape)
        out[start:start + b] = np.clip(img, 0.0, 1.0).reshape(b, size, size)
    return out


def grating_patch(size, theta, sf, phase=0.0, center=None, radius=None, contrast=1.0,
                  mean=0.5, annulus=None):
    """One sinusoidal grating, (size, size) float32 in [0, 1].

    ``theta`` is the direction of the wave vector (radians), ``sf`` in cycles/pixel.
    Inside a disc of ``radius`` around ``center`` (whole image if None); with
    ``annulus=(r_in, r_out)`` only in that ring. Outside: uniform ``mean``.
    """
    c = (size - 1) / 2.0
    cx, cy = (c, c) if center is None else center
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    g = np.cos(2 * np.pi * sf * ((x - cx) * np.cos(theta) + (y - cy) * np.sin(theta)) + phase)
    r = np.hypot(x - cx, y - cy)
    m = np.ones_like(r, dtype=bool)
    if radius is not None:
        m &= r <= radius
    if annulus is not None:
        m &= (r > annulus[0]) & (r <= annulus[1])
    return np.where(m, mean + 0.5 * contrast * g, mean).astype(np.float32)


def power_spectrum_slope(images, fmin=0.03, fmax=0.25):
    """Slope of log radial power vs log spatial frequency (about -2 for natural images)."""
    imgs = np.asarray(images, np.float64)
    s = imgs.shape[-1]
    imgs = imgs - imgs.mean(axis=(-2, -1), keepdims=True)
    win = np.hanning(s)[:, None] * np.hanning(s)[None, :]
    p = (np.abs(np.fft.fft2(imgs * win)) ** 2).mean(axis=0)
    f = np.hypot(np.fft.fftfreq(s)[:, None], np.fft.fftfreq(s)[None, :])
    sel = (f >= fmin) & (f <= fmax)
    return float(np.polyfit(np.log(f[sel]), np.log(p[sel]), 1)[0])
