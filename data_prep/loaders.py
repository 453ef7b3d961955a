"""Read stimuli and responses from user files; every problem is a DataError naming the file.

Images: a directory (searched recursively; JPEG, PNG incl. 1-bit/palette, BMP, TIFF; in
natural order of the relative path ignoring case, then by the exact text: `image_order`),
a text file listing image paths (one per line, relative to the list), or a `.npy`
array (N,H,W) / (N,H,W,1|3). Responses: `.npy` (N,n) or (N,R,n), `.csv` / `.parquet`
(neuron columns, optional id column), `.mat` (a named variable). Refused: a `.npy` whose
header disagrees with its size, complex values, finite values beyond float32's range.
Each image is decoded to float32 grayscale on its source scale (`Images.pixel_max`: 255 for
image files and uint8 arrays, the dtype maximum for other integer arrays, and for float
arrays 1.0 if their maximum is <= 1 else 255)
and passed through `prepare(img, name)` at once, so full-size images are never all in memory.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfsacnn.errors import DataError

TABLES = (".csv", ".parquet", ".pq")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601-2, PIL's "L" weights


@dataclass
class Images:
    """Loaded stimuli: `array` (N,S,S) float32, the output of `prepare` for every image."""
    array: np.ndarray
    ids: list            # relative paths (directory/list) or "0".."N-1" (.npy)
    source: str          # path shown in error messages
    pixel_max: float     # value of white on the source scale (255 for 8-bit files)


@dataclass
class Responses:
    """Loaded responses: `values` (N,n) or (N,R,n) float32; `ids` from the id column or None."""
    values: np.ndarray
    ids: list | None
    neuron_ids: list | None
    source: str


def natural_key(text: str) -> list:
    """Sort key that orders 'img2' before 'img10', ignoring case."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def image_order(text: str) -> tuple:
    """Total order of image paths: natural order ignoring case (`natural_key`), ties (names
    that differ only in case or in leading zeros) broken by the exact text, so 'A.png' comes
    before 'a.png' whatever order the file system lists them in."""
    return natural_key(text), text


# --------------------------------------------------------------------------- images
def gray(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) -> (...) float32 luma (0.299 R + 0.587 G + 0.114 B, no rounding)."""
    return np.asarray(rgb, np.float32) @ LUMA


def read_image_file(path: Path) -> np.ndarray:
    """Decode one image file to (H,W) float32 grayscale on a 0-255 scale.

    1-bit -> 0/255; palette -> its RGB(A) colours; RGB(A) -> luma (alpha ignored);
    16-bit grayscale -> divided by 257.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "1":
                return np.asarray(im.convert("L"), np.float32)
            if mode in ("L", "LA", "La"):
                return np.asarray(im.getchannel(0), np.float32)
            if mode.startswith("I;16"):
                return np.asarray(im, np.float32) / 257.0
            if mode in ("I", "F"):
                return np.asarray(im, np.float32)
            if mode in ("P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
                return gray(np.asarray(im.convert("RGB")))  # palette -> its colours; alpha dropped
            raise DataError(f"{path}: unsupported image mode {mode!r}")
    except DataError:
        raise
    except Exception as e:  # PIL raises many types (OSError, ValueError, SyntaxError, DecompressionBombError)
        raise DataError(f"{path}: unreadable or corrupt image ({type(e).__name__}: {e})") from None


def _image_paths(root: Path) -> list[Path]:
    """Image files under root (recursive), in natural order of their relative path."""
    paths = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not paths:
        raise DataError(f"{root}: no image files found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, recursively)")
    return sorted(paths, key=lambda p: image_order(p.relative_to(root).as_posix()))


def _listed_paths(listing: Path) -> list[Path]:
    lines = [ln.strip() for ln in listing.read_text().splitlines()]
    paths = [listing.parent / ln for ln in lines if ln and not ln.startswith("#")]
    if not paths:
        raise DataError(f"{listing}: the image list is empty")
    return paths


def _npy_header(path: Path):
    """(shape, dtype) from a .npy header, checked against the file's size before any array
    is allocated (a header may claim any shape); DataError naming the file otherwise."""
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise DataError(f"{path}: not a .npy file (no NumPy header)")
        f.seek(0)
        try:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(f, max_header_size=1 << 20)
        except (ValueError, SyntaxError, TypeError, EOFError) as e:
            raise DataError(f"{path}: unreadable .npy header ({e})") from None
        data_bytes = path.stat().st_size - f.tell()
    if dtype.hasobject:
        return shape, dtype
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need != data_bytes:
        raise DataError(f"{path}: the header says shape {tuple(shape)} of {dtype} ({need} bytes) but "
                        f"the file holds {data_bytes} bytes of data (truncated or corrupt)")
    return shape, dtype


def as_float32(arr: np.ndarray, source: str, what: str) -> np.ndarray:
    """`arr` as float32 after `check_float32`."""
    check_float32(arr, source, what)
    return arr.astype(np.float32)


def check_float32(arr: np.ndarray, source: str, what: str) -> None:
    """Refuse complex values and finite values beyond float32's range (they would become
    inf) in `arr`; NaN and inf pass (the caller's policy handles them)."""
    if np.iscomplexobj(arr):
        raise DataError(f"{source}: {what} are complex ({arr.dtype}); save the real values "
                        f"(e.g. np.abs or .real) as a float array")
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4:
        big = np.isfinite(arr) & (np.abs(arr) > np.finfo(np.float32).max)
        if big.any():
            at = np.unravel_index(int(np.flatnonzero(big)[0]), arr.shape)
            raise DataError(f"{source}: {what} hold {int(big.sum())} finite values beyond "
                            f"float32's range (±3.4e38), e.g. {arr[at]:.3g} at index "
                            f"{tuple(int(i) for i in at)}; rescale them")


def _npy(path: Path) -> np.ndarray:
    """np.load without pickle; a DataError names the file on any problem."""
    _npy_header(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DataError(f"{path}: holds an object array that needs pickle; save a numeric array") from None
        raise DataError(f"{path}: unreadable .npy ({e})") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: unreadable .npy ({e})") from None
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"{path}: dtype {arr.dtype} is not numeric")
    return arr


def _stack(images, names, prepare, source) -> np.ndarray:
    from tfsacnn.progress import progress_bar

    out = None
    with progress_bar(total=len(names), desc=f"reading {Path(source).name}", unit="img",
                      leave=False) as bar:
        for i, (img, name) in enumerate(zip(images, names)):
            x = prepare(img() if callable(img) else img, name)
            if out is None:
                out = np.empty((len(names),) + x.shape, np.float32)
            out[i] = x
            bar.update(1)
    return out


def _npy_images(path: Path, prepare) -> Images:
    arr = _npy(path)
    check_float32(arr, str(path), "images")
    if arr.ndim == 4 and arr.shape[-1] == 3:
        arr = gray(arr)
    elif arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise DataError(f"{path}: expected images of shape (N,H,W) or (N,H,W,1|3), got {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        pixel_max = float(np.iinfo(arr.dtype).max)
    elif arr.dtype == bool:
        pixel_max = 1.0
    else:
        if not np.isfinite(arr).all():
            raise DataError(f"{path}: images contain NaN/inf")
        pixel_max = 1.0 if float(np.max(arr)) <= 1.0 else 255.0
    ids = [str(i) for i in range(len(arr))]
    images = (a.astype(np.float32) for a in arr)
    return Images(_stack(images, [f"{path}[{i}]" for i in ids], prepare, str(path)), ids, str(path), pixel_max)


def load_images(path, prepare) -> Images:
    """Images from a directory, an image-list .txt, or a .npy file (see module docstring).

    prepare(img (H,W) float32, name: str) -> (S,S) float32 runs on every image as it is read;
    `name` is the file (or `file.npy[i]`) to name in an error.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found")
    if path.suffix.lower() == ".npy":
        return _npy_images(path, prepare)
    if path.is_dir():
        paths, root = _image_paths(path), path
    elif path.suffix.lower() in (".txt", ".lst"):
        paths, root = _listed_paths(path), path.parent
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        raise DataError(f"{path}: pass the directory that holds the images, not one image")
    else:
        raise DataError(f"{path}: expected an image directory, a .txt list of images, or a .npy array")
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p}: listed in {path} but not found")
    ids = [p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p) for p in paths]
    decoders = [lambda p=p: read_image_file(p) for p in paths]
    return Images(_stack(decoders, [str(p) for p in paths], prepare, str(path)), ids, str(path), 255.0)


# --------------------------------------------------------------------------- responses
def _table(path: Path, id_column: str | None) -> Responses:
    import pandas as pd

    try:
        df = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except Exception as e:  # pandas raises many types for malformed files
        raise DataError(f"{path}: unreadable table ({type(e).__name__}: {e})") from None
    ids = None
    if id_column is not None:
        if id_column not in df.columns:
            raise DataError(f"{path}: no id column {id_column!r} (columns: {', '.join(map(str, df.columns[:10]))})")
        ids = [str(x) for x in df[id_column]]
        if len(set(ids)) != len(ids):
            raise DataError(f"{path}: id column {id_column!r} has duplicate values")
        df = df.drop(columns=[id_column])
    if df.shape[1] == 0 or df.shape[0] == 0:
        raise DataError(f"{path}: no neuron columns / rows")
    for col in df.columns:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{path}: non-numeric value {df[col].iloc[row]!r} in column {col!r}, row {row + 1}")
        df[col] = values
    return Responses(as_float32(df.to_numpy(np.float64), str(path), "responses"), ids,
                     [str(c) for c in df.columns], str(path))


def _mat(path: Path, variable: str | None) -> np.ndarray:
    import scipy.io

    if not variable:
        raise DataError(f"{path}: a .mat file needs the variable name (--mat-variable / --val-mat-variable)")
    try:
        names = [name for name, _, _ in scipy.io.whosmat(path)]
    except NotImplementedError:
        raise DataError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; save with -v7") from None
    except Exception as e:
        raise DataError(f"{path}: unreadable .mat ({e})") from None
    if variable not in names:
        raise DataError(f"{path}: no variable {variable!r} (has: {', '.join(names) or 'none'})")
    arr = scipy.io.loadmat(path, variable_names=[variable])[variable]
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{path}: variable {variable!r} is not a numeric array ({arr.dtype})")
    return arr


def load_responses(path, *, id_column: str | None = None, mat_variable: str | None = None) -> Responses:
    """Responses (N,n) or, with repeats, (N,R,n) float32 (a 1-D array is one neuron)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found")
    suffix = path.suffix.lower()
    if suffix in TABLES:
        return _table(path, id_column)
    if suffix == ".npy":
        arr = _npy(path)
    elif suffix == ".mat":
        arr = _mat(path, mat_variable)
    else:
        raise DataError(f"{path}: unsupported response format (use .npy, .csv, .parquet or .mat)")
    if id_column is not None:
        raise DataError(f"{path}: --id-column needs a .csv or .parquet response table")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim not in (2, 3) or 0 in arr.shape:
        raise DataError(f"{path}: expected responses of shape (N,n) or (N,R,n), got {arr.shape}")
    return Responses(as_float32(arr, str(path), "responses"), None, None, str(path))

