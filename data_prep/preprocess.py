"""Image preprocessing: centre crop -> square -> resize -> float32, then normalisation.

Steps, in this order, for each (H,W) grayscale image on its source scale:
1. crop: `crop` >= 1 cuts a crop x crop square from the centre; 0 < crop < 1 cuts a square
   of side round(crop * min(H, W)); None skips it.
2. square: a non-square image is centre-cropped to min(H, W) x min(H, W).
   (Centre offsets are (H - side) // 2 and (W - side) // 2.)
3. resize to size x size with PIL's antialiased bilinear filter on float32 ("F" mode);
   skipped when the image already has that size.
Then every split is divided by its source's pixel_max (white = 1; 255 for 8-bit files), and
normalised (float32 arithmetic, in this order):
- "unit": nothing more; values are on the fixed [0, 1] scale.
- "standardize": (x - mean) / std, one scalar mean and std over every train pixel (float64).
"""
from __future__ import annotations

import numpy as np

from tfsacnn.errors import DataError

RESAMPLE = "bilinear"
DEFAULT_SIZE = 50


def centre_crop(img: np.ndarray, side: int) -> np.ndarray:
    """(H,W) -> (side,side) cut from the centre."""
    h, w = img.shape
    top, left = (h - side) // 2, (w - side) // 2
    return img[top:top + side, left:left + side]


def crop_side(shape, crop) -> int | None:
    """Side of the centre crop for an (H,W) image, or None for no crop."""
    if crop is None:
        return None
    h, w = shape
    side = int(round(crop * min(h, w))) if crop < 1 else int(crop)
    if side < 1 or side > min(h, w):
        raise ValueError(f"crop {crop} does not fit a {h}x{w} image")
    return side


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """(H,W) float32 -> (size,size) float32 (PIL bilinear, antialiased when shrinking)."""
    from PIL import Image

    if img.shape == (size, size):
        return img.astype(np.float32, copy=False)
    pil = Image.fromarray(np.ascontiguousarray(img, np.float32))  # mode "F"
    return np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR), np.float32)


def preprocess_image(img: np.ndarray, size: int, crop=None) -> np.ndarray:
    """One (H,W) image -> (size,size) float32 (steps 1-3 of the module docstring)."""
    side = crop_side(img.shape, crop)
    if side is not None:
        img = centre_crop(img, side)
    img = centre_crop(img, min(img.shape))
    return resize(img, size)


class Preprocessor:
    """`prepare(img, name)` for loaders.load_images: (H,W) -> (size,size) float32.

    size=None means "--size not given": every image (over all splits) must then have the
    same original size, and they are resized to the default 50. Mixed sizes are refused
    rather than silently resized; pass --size (even --size 50) to accept them.
    """

    def __init__(self, size: int | None = None, crop=None):
        self.size, self.crop, self.first = size, crop, None

    def __call__(self, img: np.ndarray, name: str) -> np.ndarray:
        if self.size is None:
            if self.first is None:
                self.first = (name, img.shape)
            elif img.shape != self.first[1]:
                raise DataError(f"{name}: image size {img.shape[0]}x{img.shape[1]} differs from "
                                f"{self.first[1][0]}x{self.first[1][1]} ({self.first[0]}); "
                                "pass --size to resize images of mixed sizes")
        try:
            return preprocess_image(img, self.size or DEFAULT_SIZE, self.crop)
        except ValueError as e:
            raise DataError(f"{name}: {e}") from None


def describe(size: int, crop, pixel_max: dict) -> dict:
    """Manifest 'preprocessing' entry (`recipe()` reads its numbers back)."""
    from data_prep.loaders import LUMA

    return {"steps": ["grayscale (0.299 R + 0.587 G + 0.114 B, float32)",
                      "centre crop" if crop is not None else "no crop",
                      "centre square crop to min(H, W) if not square",
                      f"resize to {size}x{size} ({RESAMPLE}, PIL, antialiased)",
                      "float32", "divide by pixel_max"],
            "grayscale": "itu-r 601-2 luma", "luma": [float(w) for w in LUMA],
            "crop": crop, "square": "centre", "size": size, "resample": RESAMPLE,
            "pixel_max": pixel_max}


def recipe(manifest: dict, source: str = "manifest.json") -> dict | None:
    """The numbers that re-run this module's pipeline on raw images (`tfsacnn.export`).

    Returns {"size", "crop", "luma" (3 weights), "pixel_max" (of the train source), "mean",
    "std" (None for "unit")}, or None when the manifest records no raw-image pipeline (an
    empty `preprocessing`, as `write_dataset` writes without one). Manifests written before
    "luma"/"square" were recorded used the same weights and the same square crop.
    """
    from data_prep.loaders import LUMA

    p, norm = manifest.get("preprocessing") or {}, manifest.get("normalization") or {}
    pixel_max = p.get("pixel_max")
    if not isinstance(pixel_max, dict) or not pixel_max or "size" not in p:
        return None
    if p.get("resample", RESAMPLE) != RESAMPLE or p.get("square", "centre") != "centre":
        raise DataError(f"{source}: preprocessing resample {p.get('resample')!r} / square "
                        f"{p.get('square')!r} is not this version's ({RESAMPLE!r}, 'centre')")
    method = norm.get("method", "unit")
    if method == "standardize":
        mean, std = norm.get("mean"), norm.get("std")
        if not isinstance(mean, (int, float)) or not isinstance(std, (int, float)) or not std > 0:
            raise DataError(f"{source}: normalization 'standardize' needs a number mean and a "
                            f"positive std, got {mean!r} / {std!r}")
    elif method == "unit":
        mean = std = None
    else:
        raise DataError(f"{source}: unknown normalization method {method!r}")
    crop = p.get("crop")
    if crop is not None and not (isinstance(crop, (int, float)) and crop > 0):
        raise DataError(f"{source}: preprocessing crop must be a positive number or null, got {crop!r}")
    luma = p.get("luma", [float(w) for w in LUMA])
    scale = float(pixel_max.get("train", next(iter(pixel_max.values()))))
    return {"size": int(p["size"]), "crop": crop, "luma": [float(w) for w in luma],
            "pixel_max": scale, "mean": mean, "std": std}


def normalize(splits: dict, method: str, source: str = "train images") -> dict:
    """Normalise {'train': (N,S,S) on a [0,1] scale, ...} in place; return the manifest entry.

    Images arrive already divided by their source's pixel_max (white = 1).
    """
    if method == "unit":
        return {"method": "unit", "formula": "x / pixel_max (white = 1)"}
    if method == "standardize":
        train = splits["train"].astype(np.float64)
        mean, std = float(train.mean()), float(train.std())
        if not std > 0:
            raise DataError(f"{source}: all train pixels are equal; cannot standardize (use --normalize unit)")
        for arr in splits.values():
            arr -= np.float32(mean)
            arr /= np.float32(std)
        return {"method": "standardize", "mean": mean, "std": std, "computed_on": "train",
                "formula": "(x / pixel_max - mean) / std"}
    raise DataError(f"--normalize: unknown method {method!r} (standardize or unit)")
