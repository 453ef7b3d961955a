"""Gratings, discs and annuli on the source pixel scale, on a mean-grey background (numpy).

Coordinates are source pixels, x to the right and y down, pixel (i, j) centred at
(x, y) = (j, i) (as data_prep.v1_model). A grating of orientation `theta` (radians, the
direction of its wave vector, as v1_model's `theta`; the bars run at theta + 90 deg),
spatial frequency `sf` (cycles/pixel) and phase `phase` (radians) centred at (cx, cy):

    pixel = grey + amplitude * cos(2 pi sf ((x - cx) cos theta + (y - cy) sin theta) + phase)

Apertures are anti-aliased: a disc of diameter d weighs a pixel at distance r from the
centre by clip(d/2 - r + 1/2, 0, 1); an annulus (d_in, d_out) is the disc of d_out minus
the disc of d_in. Outside the aperture the image is the grey.
"""
from __future__ import annotations

import numpy as np


def amplitude(grey, pixel_range, contrast):
    """Grating amplitude for a Michelson contrast in (0, 1], relative to the largest
    amplitude that stays inside `pixel_range` around `grey`."""
    lo, hi = pixel_range
    return float(contrast) * max(min(grey - lo, hi - grey), 0.0)


def _grid(shape):
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return x, y


def disc(shape, cx, cy, diameter):
    """Aperture weights `(k, H, W)` in [0, 1] for broadcastable `cx, cy, diameter` (k,)."""
    x, y = _grid(shape)
    cx, cy, d = (np.asarray(v, np.float32).reshape(-1, 1, 1) for v in (cx, cy, diameter))
    r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    return np.clip(d / 2 - r + 0.5, 0.0, 1.0)


def annulus(shape, cx, cy, inner, outer):
    """Annulus weights `(k, H, W)`: disc(outer) - disc(inner)."""
    return np.clip(disc(shape, cx, cy, outer) - disc(shape, cx, cy, inner), 0.0, 1.0)


def carrier(shape, cx, cy, theta, sf, phase):
    """Unit-amplitude full-field gratings `(k, H, W)`, cos(...) of the module docstring."""
    x, y = _grid(shape)
    cx, cy, th, f, ph = (np.asarray(v, np.float32).reshape(-1, 1, 1)
                         for v in np.broadcast_arrays(cx, cy, theta, sf, phase))
    arg = 2 * np.pi * f * ((x - cx) * np.cos(th) + (y - cy) * np.sin(th)) + ph
    return np.cos(arg, dtype=np.float32)


def grating(shape, grey, amp, cx, cy, theta, sf, phase, diameter=None):
    """Gratings `(k, H, W)` float32 on `grey`, in a disc of `diameter` (None: full field)."""
    g = carrier(shape, cx, cy, theta, sf, phase)
    if diameter is not None:
        g = g * disc(shape, cx, cy, diameter)
    return (grey + amp * g).astype(np.float32)


def centre_surround(shape, grey, amp, cx, cy, theta, sf, phase, centre_d, gap,
                    outer_d, surround_theta=None, surround_phase=0.0, surround_amp=None):
    """A centre grating in a disc of `centre_d` and a surround grating in the annulus
    (centre_d + 2 gap, outer_d), `(k, H, W)`. `surround_theta` None: blank annulus (grey).
    """
    c = carrier(shape, cx, cy, theta, sf, phase) * disc(shape, cx, cy, centre_d)
    img = grey + amp * c
    if surround_theta is not None:
        s_amp = amp if surround_amp is None else surround_amp
        s = carrier(shape, cx, cy, surround_theta, sf, surround_phase)
        img = img + s_amp * s * annulus(shape, cx, cy, np.asarray(centre_d) + 2 * gap,
                                        outer_d)
    return np.asarray(img, np.float32)


def full_field_diameter(shape, cx, cy):
    """Diameter `(k,)` of the disc around (cx, cy) that covers the whole image."""
    h, w = shape
    cx, cy = np.asarray(cx, np.float64), np.asarray(cy, np.float64)
    corners = [np.hypot(cx - x, cy - y) for x in (-0.5, w - 0.5) for y in (-0.5, h - 0.5)]
    return 2 * np.max(corners, axis=0) + 1.0
