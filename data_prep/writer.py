"""Write a dataset directory: GZIP TFRecord shards + manifest.json (schema_version 1).

Layout and features are fixed in docs/internals.md. Everything is written into
`OUT.tmp-<random>/` next to OUT and renamed at the end (`tfsacnn.files.atomic_dir`), so OUT
is either absent, the old dataset, or the complete new one, and a failure leaves nothing.
"""
from __future__ import annotations

import datetime
import json
import math
import re
import shlex
import sys
from pathlib import Path

import numpy as np

from tfsacnn.errors import DataError

SCHEMA_VERSION = 1
SPLIT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
NOISE_CEILING_METHOD = "split_half_spearman_brown"
# GZIP level 0 (stored): float32 pixels barely compress (level 1 saves ~15% of the size,
# level 6 <1% more), while reading stored GZIP is ~2-3x faster and writing ~3-6x faster
# (`python -m tfsacnn.bench data`). The reader needs >= 20k examples/s on 2 cores.
COMPRESSION_LEVEL = 0


# --------------------------------------------------------------------------- tf.train.Example bytes
# Hand-encoded protobuf (about 10x faster than building tf.train.Example objects).
# Example{features=1: Features{feature=1: map<string, Feature>}};
# Feature{bytes_list=1: BytesList{value=1}, float_list=2: FloatList{value=1 (packed)}}.

def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _entry(key: bytes, feature: bytes) -> bytes:
    return _field(1, _field(1, key) + _field(2, feature))


def encode_example(image: np.ndarray, response: np.ndarray, repeats: np.ndarray | None = None) -> bytes:
    """Serialized tf.train.Example. image (S,S) float32; response (n,); repeats (R,n) or None."""
    feats = _entry(b"image", _field(1, _field(1, np.ascontiguousarray(image, "<f4").tobytes())))
    feats += _entry(b"response", _field(2, _field(1, np.ascontiguousarray(response, "<f4").tobytes())))
    if repeats is not None:
        feats += _entry(b"repeats", _field(2, _field(1, np.ascontiguousarray(repeats, "<f4").tobytes())))
    return _field(1, feats)


# --------------------------------------------------------------------------- validation
def _validate(splits: dict) -> tuple[int, int]:
    """Check names, shapes, dtypes, finiteness; return (image_size, n_neurons)."""
    if not isinstance(splits, dict) or not splits:
        raise DataError("splits: need at least one split, e.g. {'train': {...}}")
    size = n = None
    for name, s in splits.items():
        where = f"splits[{name!r}]"
        if not isinstance(name, str) or not SPLIT_NAME.match(name):
            raise DataError(f"{where}: split names must be lower-case identifiers")
        unknown = set(s) - {"images", "responses", "repeats"}
        if unknown or "images" not in s or "responses" not in s:
            raise DataError(f"{where}: needs 'images' and 'responses' (optional 'repeats'); got {sorted(s)}")
        im, rsp, rep = np.asarray(s["images"]), np.asarray(s["responses"]), s.get("repeats")
        if im.ndim != 3 or im.shape[1] != im.shape[2] or im.shape[0] == 0:
            raise DataError(f"{where}['images']: expected shape (N,S,S) with N>0, got {im.shape}")
        if rsp.ndim != 2 or rsp.shape[0] != im.shape[0] or rsp.shape[1] == 0:
            raise DataError(f"{where}['responses']: expected shape ({im.shape[0]}, n), got {rsp.shape}")
        for key, arr in (("images", im), ("responses", rsp)):
            if not np.issubdtype(arr.dtype, np.number):
                raise DataError(f"{where}[{key!r}]: dtype {arr.dtype} is not numeric")
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            if bad:
                raise DataError(f"{where}[{key!r}]: {bad} non-finite values (NaN/inf)")
        if rep is not None:
            rep = np.asarray(rep)
            if rep.ndim != 3 or rep.shape[0] != im.shape[0] or rep.shape[2] != rsp.shape[1] or rep.shape[1] < 1:
                raise DataError(f"{where}['repeats']: expected shape ({im.shape[0]}, R, {rsp.shape[1]}), "
                                f"got {rep.shape}")
            if np.isinf(rep).any():
                raise DataError(f"{where}['repeats']: contains inf (use NaN for a missing trial)")
        if size is None:
            size, n = im.shape[1], rsp.shape[1]
        elif (im.shape[1], rsp.shape[1]) != (size, n):
            raise DataError(f"{where}: image size {im.shape[1]} / {rsp.shape[1]} neurons differ from "
                            f"the first split ({size} / {n})")
    return int(size), int(n)


# --------------------------------------------------------------------------- statistics
def _json_float(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _floats(a) -> list:
    return [_json_float(v) for v in np.asarray(a, np.float64).ravel()]


def response_stats(responses: np.ndarray) -> dict:
    """Per-neuron stats of (N,n) responses: mean, std, min, max, excess kurtosis, frac above half peak."""
    r = np.asarray(responses, np.float64)
    mean, std = r.mean(0), r.std(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        kurt = ((r - mean) ** 4).mean(0) / std ** 4 - 3.0
        half = (r > 0.5 * r.max(0)).mean(0)
    return {"mean": _floats(mean), "std": _floats(std), "min": _floats(r.min(0)), "max": _floats(r.max(0)),
            "excess_kurtosis": _floats(kurt), "frac_above_half_peak": _floats(half)}


def split_half_ceiling(repeats: np.ndarray) -> np.ndarray:
    """Per-neuron noise ceiling of (N,R,n) repeats (NaN = missing trial).

    Pearson r between the mean of even and odd trials over images, Spearman-Brown
    corrected to the full number of trials: 2r / (1 + r). NaN where R < 2.
    """
    rep = np.asarray(repeats, np.float64)
    if rep.shape[1] < 2:
        return np.full(rep.shape[2], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"), _quiet_nanmean():
        a, b = np.nanmean(rep[:, 0::2], 1), np.nanmean(rep[:, 1::2], 1)
        ok = np.isfinite(a) & np.isfinite(b)
        out = np.full(rep.shape[2], np.nan)
        for j in range(rep.shape[2]):
            x, y = a[ok[:, j], j], b[ok[:, j], j]
            if len(x) > 2 and x.std() > 0 and y.std() > 0:
                r = np.corrcoef(x, y)[0, 1]
                out[j] = 2 * r / (1 + r)
    return out


class _quiet_nanmean:
    """Silence 'Mean of empty slice' for images where every trial is missing."""

    def __enter__(self):
        import warnings
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


# --------------------------------------------------------------------------- writing
from tfsacnn.files import atomic_dir, check_out, sha256 as _sha256  # noqa: E402
from tfsacnn.progress import progress_bar  # noqa: E402


def tensorflow_writer():
    """TensorFlow's GZIP TFRecord writer class, or None where TensorFlow is not installed."""
    try:
        import tensorflow as tf  # deferred: import costs seconds
    except ImportError:
        return None
    options = tf.io.TFRecordOptions(compression_type="GZIP", compression_level=COMPRESSION_LEVEL)
    return lambda path: tf.io.TFRecordWriter(str(path), options)


class GzipRecordWriter:
    """GZIP TFRecord shards without TensorFlow (machines with JAX only): each record framed
    by `tfsacnn.data.records.frame` (length, masked CRC-32C, data, masked CRC-32C) in a
    GZIP stream of level COMPRESSION_LEVEL. tf.data reads them like TensorFlow's own."""

    def __init__(self, path):
        import gzip

        self.file = gzip.GzipFile(path, "wb", compresslevel=max(COMPRESSION_LEVEL, 0), mtime=0)

    def write(self, record: bytes):
        from tfsacnn.data.records import frame

        self.file.write(frame(record))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def _write_split(tmp: Path, name: str, split: dict, shard_size: int, bar) -> list[dict]:
    """Write one split's shards; return [{file, sha256, count}]."""
    open_shard = tensorflow_writer() or GzipRecordWriter
    images = np.asarray(split["images"], np.float32)
    responses = np.asarray(split["responses"], np.float32)
    repeats = split.get("repeats")
    repeats = None if repeats is None else np.asarray(repeats, np.float32)
    n_ex = len(images)
    n_shards = max(1, math.ceil(n_ex / shard_size))
    shards = []
    for i in range(n_shards):
        lo, hi = i * n_ex // n_shards, (i + 1) * n_ex // n_shards
        fname = f"{name}-{i:05d}-of-{n_shards:05d}.tfrecord.gz"
        with open_shard(tmp / fname) as w:
            for k in range(lo, hi):
                w.write(encode_example(images[k], responses[k], None if repeats is None else repeats[k]))
                bar.update(1)
        shards.append({"file": fname, "sha256": _sha256(tmp / fname), "count": hi - lo})
    return shards


def _manifest(splits, shards, size, n, neuron_ids, preprocessing, normalization, sources, command):
    split_info, ceiling = {}, {"method": NOISE_CEILING_METHOD,
                               "description": "Pearson r of even- vs odd-trial means, Spearman-Brown "
                                              "corrected (2r/(1+r)); per neuron, per split with repeats",
                               "splits": {}}
    for name, s in splits.items():
        rep = s.get("repeats")
        split_info[name] = {"count": int(len(s["images"])), "shards": shards[name],
                            "n_repeats": None if rep is None else int(np.shape(rep)[1])}
        if rep is not None:
            nc = split_half_ceiling(rep)
            ceiling["splits"][name] = {"per_neuron": _floats(nc), "mean": _json_float(np.nanmean(nc))
                                       if np.isfinite(nc).any() else None}
    return {
        "schema_version": SCHEMA_VERSION,
        "image_size": size,
        "n_neurons": n,
        "neuron_ids": neuron_ids,
        "splits": split_info,
        "compression": {"type": "GZIP", "level": COMPRESSION_LEVEL},
        "preprocessing": preprocessing or {},
        "normalization": normalization or {},
        "response_stats": {name: response_stats(s["responses"]) for name, s in splits.items()},
        "noise_ceiling": ceiling if ceiling["splits"] else None,
        "sources": sources or {},
        "command": command if command is not None else shlex.join(sys.argv),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


DATASET_FILES = ("manifest.json", "ground_truth.npz", "image_index.csv")
_SHARD = re.compile(r"^[A-Za-z0-9_]+-\d{5}-of-\d{5}\.tfrecord(\.gz)?$")


def check_dataset_out(out, overwrite) -> None:
    """Refuse an output dataset directory `out` that exists without `overwrite`, that is
    no dataset, or that holds anything a dataset does not write (a run trained into it,
    the user's notes): --overwrite replaces the whole directory, so it would delete them."""
    check_out(out, overwrite, "manifest.json", "dataset", DataError)
    out = Path(out)
    if not (out / "manifest.json").is_file():
        return
    foreign = sorted(p.name for p in out.iterdir()
                     if p.name not in DATASET_FILES and not _SHARD.match(p.name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise DataError(f"{out}: holds {shown}, not part of the dataset; --overwrite would "
                        f"delete it (move it out first)")


def write_dataset(out, splits, *, neuron_ids=None, preprocessing=None, normalization=None, sources=None,
                  command=None, shard_size=10000, overwrite=False, extra_manifest=None, extra_files=None,
                  progress=True) -> Path:
    """Write `splits` as a dataset directory at `out`; return its Path.

    splits: {"train": {"images": (N,S,S) float32, "responses": (N,n) float32,
             "repeats": optional (N,R,n) with NaN = missing trial}, "val": ..., "test": ...}.
    extra_files: {"name": callable(path)} called inside the temporary directory.
    extra_manifest: extra top-level manifest keys (may not replace the standard ones).
    Raises DataError for invalid arrays or an existing `out` without overwrite=True.
    """
    out = Path(out)
    size, n = _validate(splits)
    if neuron_ids is None:
        neuron_ids = [f"n{j:03d}" for j in range(n)]
    neuron_ids = [str(x) for x in neuron_ids]
    if len(neuron_ids) != n or len(set(neuron_ids)) != n:
        raise DataError(f"neuron_ids: need {n} unique ids, got {len(neuron_ids)} ({len(set(neuron_ids))} unique)")
    if int(shard_size) < 1:
        raise DataError(f"shard_size: must be >= 1, got {shard_size}")
    if extra_manifest:
        clash = set(extra_manifest) & set(_manifest({}, {}, size, n, neuron_ids, None, None, None, ""))
        if clash:
            raise DataError(f"extra_manifest: keys {sorted(clash)} are reserved")
    check_dataset_out(out, overwrite)

    def write(tmp: Path) -> None:
        tmp.mkdir()
        total = sum(len(s["images"]) for s in splits.values())
        with progress_bar(total=total, desc=f"writing {out.name}", unit="ex",
                          disable=not progress) as bar:
            shards = {name: _write_split(tmp, name, s, int(shard_size), bar) for name, s in splits.items()}
        for fname, write_extra in (extra_files or {}).items():
            write_extra(tmp / fname)
        manifest = _manifest(splits, shards, size, n, neuron_ids, preprocessing, normalization, sources, command)
        manifest.update(extra_manifest or {})
        with open(tmp / "manifest.json", "w") as f:
            json.dump(manifest, f, indent=1, allow_nan=False)
            f.write("\n")

    atomic_dir(out, write)
    return out
