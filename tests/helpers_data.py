"""Tiny input files for tests/test_data.py, and an independent statement of the preprocessing."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

KINDS = ["png_rgb", "png_l", "png_1bit", "png_palette", "jpg", "bmp", "tif"]
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def make_image_dir(root: Path, n: int = 40, shape=(30, 36), seed: int = 0) -> list[str]:
    """Write n images (H,W)=shape of every KIND into nested folders.

    Returns their relative paths in natural sort order (a/deep/* < a/* < b/*; img2 < img10).
    """
    rng = np.random.default_rng(seed)
    dirs = ["a/deep", "a", "b"]
    rel = []
    for d_i, d in enumerate(dirs):
        count = n // 3 + (1 if d_i < n % 3 else 0)
        for i in range(1, count + 1):
            kind = KINDS[len(rel) % len(KINDS)]
            ext = {"jpg": "jpg", "bmp": "bmp", "tif": "tif"}.get(kind, "png")
            rel.append(f"{d}/img{i}.{ext}")
            _save(root / rel[-1], kind, rng, shape)
    return rel


def _save(path: Path, kind: str, rng, shape) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = shape
    # smooth-ish content so JPEG is not pure noise
    base = np.cumsum(rng.integers(-20, 21, (h, w, 3)), axis=1) % 256
    rgb = base.astype(np.uint8)
    if kind == "png_l":
        Image.fromarray(rgb[..., 0]).save(path)
    elif kind == "png_1bit":
        Image.fromarray(rgb[..., 0] > 127).convert("1").save(path)
    elif kind == "png_palette":
        Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(path)
    elif kind == "jpg":
        Image.fromarray(rgb).save(path, quality=90)
    else:  # png_rgb, bmp, tif
        Image.fromarray(rgb).save(path)


def decode_gray(path: Path) -> np.ndarray:
    """What PIL decodes, as (H,W) float32 gray on 0..255 (documented grayscale step)."""
    with Image.open(path) as im:
        if im.mode in ("1", "L"):
            return np.asarray(im.convert("L"), np.float32)
        return np.asarray(im.convert("RGB"), np.float32) @ LUMA


def expected_image(gray: np.ndarray, size: int, crop=None, pixel_max: float = 255.0) -> np.ndarray:
    """Documented steps: centre crop, square centre crop, PIL bilinear resize, / pixel_max."""
    def centre(img, side):
        top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
        return img[top:top + side, left:left + side]
    if crop is not None:
        gray = centre(gray, int(round(crop * min(gray.shape))) if crop < 1 else int(crop))
    gray = centre(gray, min(gray.shape))
    if gray.shape != (size, size):
        gray = np.asarray(Image.fromarray(gray.astype(np.float32)).resize((size, size), Image.Resampling.BILINEAR),
                          np.float32)
    return gray.astype(np.float32) / np.float32(pixel_max)


def standardize(splits: dict) -> dict:
    """{'train': (N,S,S), ...} -> standardised with the train mean/std (float64 stats, float32 maths)."""
    train = splits["train"].astype(np.float64)
    mean, std = np.float32(train.mean()), np.float32(train.std())
    return {k: (v - mean) / std for k, v in splits.items()}


def read_index(out: Path) -> dict:
    """image_index.csv -> {split: [image id, ...]}."""
    index: dict = {}
    with open(out / "image_index.csv") as f:
        for row in csv.DictReader(f):
            index.setdefault(row["split"], []).append(row["image"])
    return index
