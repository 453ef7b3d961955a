"""A dataset's manifest (schema, splits, shards and their sha256) and neuron selection.

No TensorFlow: shared by the tf.data reader and the reader without TensorFlow.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError

SCHEMA_VERSION = 1
REQUIRED_KEYS = {"schema_version": int, "image_size": int, "n_neurons": int, "neuron_ids": list, "splits": dict}
_verified: dict = {}           # (path, size, mtime_ns) -> (sha256, records): once per process


# --------------------------------------------------------------------------- manifest
def read_manifest(directory) -> dict:
    """Load and validate DIR/manifest.json; raise DataError naming the problem."""
    path = Path(directory) / "manifest.json"
    if not path.is_file():
        raise DataError(f"{path}: not found (is {directory} a dataset directory?)")
    try:
        m = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(m, dict):
        raise DataError(f"{path}: expected a JSON object")
    version = m.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise DataError(f"{path}: schema_version {version} is newer than this tfsacnn reads "
                        f"({SCHEMA_VERSION}); upgrade tfsacnn")
    for key, typ in REQUIRED_KEYS.items():
        if not isinstance(m.get(key), typ) or isinstance(m.get(key), bool):
            raise DataError(f"{path}: missing or invalid {key!r}")
    if version != SCHEMA_VERSION:
        raise DataError(f"{path}: unsupported schema_version {version!r}")
    if len(m["neuron_ids"]) != m["n_neurons"] or m["image_size"] < 1 or m["n_neurons"] < 1:
        raise DataError(f"{path}: neuron_ids / n_neurons / image_size are inconsistent")
    for name, s in m["splits"].items():
        try:
            ok = (s["count"] == sum(int(sh["count"]) for sh in s["shards"])
                  and all(isinstance(sh["file"], str) and "/" not in sh["file"] and len(sh["sha256"]) == 64
                          for sh in s["shards"]))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok or (s.get("n_repeats") is not None and s["n_repeats"] < 1):
            raise DataError(f"{path}: split {name!r} is malformed (count, shards or n_repeats)")
    return m




def shard_files(directory: Path, split_info: dict, verify: bool) -> list[str]:
    """Paths of a split's shards.

    With verify, each must match its manifest sha256, and hold as many records as the
    manifest says (a framing-only pass over the same bytes: a manifest whose counts
    disagree with its shards is refused). Both are computed once per file per process.
    """
    files = []
    for sh in split_info["shards"]:
        path = directory / sh["file"]
        if not path.is_file():
            raise DataError(f"{path}: shard missing")
        if verify:
            digest, count = _verify(path)
            if digest != sh["sha256"]:
                raise DataError(f"{path}: sha256 mismatch (shard truncated or modified); rebuild the dataset")
            if count is None:
                raise DataError(f"{path}: not a readable GZIP TFRecord shard; rebuild the dataset")
            if count != int(sh["count"]):
                raise DataError(f"{path}: holds {count} records but manifest.json says {sh['count']}; "
                                f"rebuild the dataset")
        files.append(str(path))
    return files


def _verify(path: Path) -> tuple[str, int | None]:
    """(sha256, number of records) of a shard; records None if it does not decompress."""
    from .records import count_records

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        try:
            count = count_records(path, raw)
        except DataError:
            count = None  # only reported if the sha256 matches
        _verified[key] = (digest, count)
    return _verified[key]


# --------------------------------------------------------------------------- neurons
def parse_neurons(spec, n_total: int) -> list[int]:
    """Neuron indices from None (all), an int, "0:64", "1,5,7", "0:10,20" or a list of ints."""
    if spec is None:
        return list(range(n_total))
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        parts = [int(spec)]
    elif isinstance(spec, str):
        if not spec.strip():
            raise ConfigError(f"neurons: {spec!r} selects no neurons (omit it for all neurons)")
        parts = []
        for tok in (t.strip() for t in spec.split(",")):
            if ":" in tok:
                try:
                    bounds = [int(b) if b.strip() else None for b in tok.split(":")]
                    parts.extend(range(n_total)[slice(*bounds)])
                except (ValueError, TypeError):
                    raise ConfigError(f"neurons: bad range {tok!r} (use e.g. '0:64')") from None
                if any(b is not None and not 0 <= b <= n_total for b in bounds[:2]):
                    raise ConfigError(f"neurons: range {tok!r} is out of range for "
                                      f"{n_total} neurons")
            else:
                try:
                    parts.append(int(tok))
                except ValueError:
                    raise ConfigError(f"neurons: bad index {tok!r} in {spec!r}") from None
    else:
        try:
            items = list(spec)
        except TypeError:
            raise ConfigError(f"neurons: expected indices, got {spec!r}") from None
        bad = [x for x in items if isinstance(x, bool) or not isinstance(x, (int, np.integer))]
        if bad:
            raise ConfigError(f"neurons: {bad[0]!r} is not an integer index (in {spec!r})")
        parts = [int(x) for x in items]
    if not parts:
        raise ConfigError(f"neurons: {spec!r} selects no neurons")
    bad = [i for i in parts if not 0 <= i < n_total]
    if bad:
        raise ConfigError(f"neurons: index {bad[0]} out of range for {n_total} neurons")
    if len(set(parts)) != len(parts):
        raise ConfigError(f"neurons: {spec!r} repeats an index")
    return parts


def parse_neurons_flag(spec, n_total, flag="--neurons"):
    """`parse_neurons` for a command-line flag: its errors name the flag, `--neurons 7: ...`."""
    try:
        return parse_neurons(spec, n_total)
    except ConfigError as e:
        shown = spec if str(spec).strip() else repr(spec)
        raise ConfigError(f"{flag} {shown}: {str(e).removeprefix('neurons: ')}") from None
