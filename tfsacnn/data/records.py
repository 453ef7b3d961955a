"""The dataset reader without TensorFlow: data_prep's GZIP TFRecord shards -> numpy.

    images, responses = records.load_numpy(directory, "val")
    for images, responses in records.load(directory, "train", 50, shuffle=True, seed=0): ...

The same API and arrays as the tf.data reader (`tfsacnn.data.tfdata`), for machines
without TensorFlow (GPU machines run Keras on JAX). Only numpy and the standard library.

Framing (TFRecord): each record is `uint64 length, uint32 masked_crc32c(length), data,
uint32 masked_crc32c(data)`, little-endian, the whole shard one GZIP stream. Every
checksum is checked, as tf.data does; a bad one is `DataError("<shard>: ...")`.

Records are `tf.train.Example` protobufs of the fixed schema in docs/internals.md:
`image` bytes_list (raw little-endian float32 (S, S)), `response` float_list (n,),
`repeats` float_list (R*n,) in splits with repeats. They are parsed by hand (the few
protobuf wire types this schema uses; floats packed or not).
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from .manifest import parse_neurons, read_manifest, shard_files

# ---------------------------------------------------------------------------- crc32c
_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected


def _tables():
    """Slicing-by-4 tables (4, 256) uint32."""
    t0 = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t0 = np.where(t0 & 1, (t0 >> 1) ^ np.uint32(_POLY), t0 >> 1).astype(np.uint32)
    tables = [t0]
    for _ in range(3):
        prev = tables[-1]
        tables.append((prev >> 8) ^ t0[prev & 0xFF])
    return np.stack(tables)


_T = _tables()


def crc32c(rows) -> np.ndarray:
    """CRC-32C of each row of `rows (N, L) uint8` (all the same length) -> (N,) uint32.

    Vectorised over rows, four bytes per step (slicing-by-4).
    """
    rows = np.ascontiguousarray(rows, np.uint8)
    n, length = rows.shape
    crc = np.full(n, 0xFFFFFFFF, np.uint32)
    full = length // 4 * 4
    words = np.ascontiguousarray(rows[:, :full].view("<u4").T)  # (L/4, N), one row per step
    t0, t1, t2, t3 = _T
    for w in words:
        crc ^= w
        crc = t3[crc & 0xFF] ^ t2[(crc >> 8) & 0xFF] ^ t1[(crc >> 16) & 0xFF] ^ t0[crc >> 24]
    for col in range(full, length):
        crc = t0[(crc ^ rows[:, col]) & 0xFF] ^ (crc >> 8)
    return crc ^ np.uint32(0xFFFFFFFF)


def masked_crc32c(rows) -> np.ndarray:
    """TFRecord's masked CRC-32C of each row: rotate right by 15, add 0xa282ead8."""
    crc = crc32c(rows).astype(np.uint64)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8).astype(np.uint32)


def frame(record: bytes) -> bytes:
    """One TFRecord frame (length, its masked crc, data, its masked crc) of `record`."""
    length = struct.pack("<Q", len(record))
    crc = masked_crc32c(np.frombuffer(length + record, np.uint8)[None, :8])[0]
    data_crc = masked_crc32c(np.frombuffer(record, np.uint8)[None])[0]
    return length + struct.pack("<I", crc) + record + struct.pack("<I", data_crc)


# --------------------------------------------------------------------------- framing
def _decompress(path, raw: bytes) -> bytes:
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a readable GZIP shard (truncated or corrupt?): {e}") from None


def _offsets(path, buf: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each record's data in an uncompressed shard (framing only).

    A header that leads past the end is blamed on the first bad length checksum so far.
    """
    starts, lengths = [], []
    pos, end = 0, len(buf)
    while pos < end:
        (length,) = struct.unpack_from("<Q", buf, pos) if end - pos >= 8 else (end,)
        if end - pos < 16 or length > end - pos - 16:
            _check_headers(path, buf, np.asarray(starts + [pos + 12], np.int64)
                           if end - pos >= 12 else np.asarray(starts, np.int64))
            raise DataError(f"{path}: truncated record {len(starts)} at byte {pos}")
        starts.append(pos + 12)
        lengths.append(length)
        pos += 16 + length
    return np.asarray(starts, np.int64), np.asarray(lengths, np.int64)


def count_records(path, raw: bytes) -> int:
    """Records in a GZIP TFRecord shard given its bytes (framing only, no checksums)."""
    return len(_offsets(path, _decompress(path, raw))[0])


def _rows(data, starts, length):
    """(N, length) uint8 rows of `data` at `starts`."""
    return data[starts[:, None] + np.arange(length)]


def _check_headers(path, buf, starts) -> None:
    """The length checksum of every record whose data starts at `starts`."""
    if not len(starts):
        return
    data = np.frombuffer(buf, np.uint8)
    stored = _rows(data, starts - 4, 4).copy().view("<u4")[:, 0]
    bad = np.flatnonzero(masked_crc32c(_rows(data, starts - 12, 8)) != stored)
    if len(bad):
        raise DataError(f"{path}: corrupted record {bad[0]} (length checksum mismatch)")


def _check_crcs(path, buf: bytes, starts, lengths) -> None:
    """Every record's length and data checksums; DataError names the first bad record."""
    _check_headers(path, buf, starts)
    data = np.frombuffer(buf, np.uint8)
    for length in np.unique(lengths):
        idx = np.flatnonzero(lengths == length)
        s = starts[idx]
        stored = _rows(data, s + length, 4).copy().view("<u4")[:, 0]
        bad = idx[masked_crc32c(_rows(data, s, length)) != stored]
        if len(bad):
            raise DataError(f"{path}: corrupted record {bad.min()} (data checksum mismatch)")


# ----------------------------------------------------------------- tf.train.Example
def _varint(buf, pos):
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf, pos, end):
    """(field number, wire type, value or (start, end)) of a message in buf[pos:end]."""
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 2:
            n, pos = _varint(buf, pos)
            yield number, wire, (pos, pos + n)
            pos += n
        elif wire == 0:
            v, pos = _varint(buf, pos)
            yield number, wire, v
        elif wire == 5:
            yield number, wire, (pos, pos + 4)
            pos += 4
        elif wire == 1:
            yield number, wire, (pos, pos + 8)
            pos += 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    if pos != end:
        raise ValueError("truncated protobuf message")


def _feature(buf, start, end):
    """Feature message -> bytes (bytes_list) or float32 array (float_list)."""
    for number, wire, span in _fields(buf, start, end):
        if number == 1 and wire == 2:  # bytes_list
            values = [bytes(buf[a:b]) for f, w, (a, b) in _fields(buf, *span) if f == 1]
            return b"".join(values)
        if number == 2 and wire == 2:  # float_list
            parts = [buf[a:b] for f, w, (a, b) in _fields(buf, *span) if f == 1]
            return np.frombuffer(b"".join(parts), "<f4")
        if number == 3:
            raise ValueError("int64_list features are not part of the schema")
    return b""


def parse_example(buf) -> dict:
    """Serialized tf.train.Example -> {key: bytes | float32 array}."""
    buf = memoryview(buf)
    out = {}
    for number, wire, span in _fields(buf, 0, len(buf)):
        if number != 1 or wire != 2:
            continue
        for f, w, entry in _fields(buf, *span):  # Features.feature: map entries
            if f != 1 or w != 2:
                continue
            key = value = None
            for ef, ew, espan in _fields(buf, *entry):
                if ef == 1:
                    key = bytes(buf[espan[0]:espan[1]]).decode()
                elif ef == 2:
                    value = _feature(buf, *espan)
            if key is not None:
                out[key] = value if value is not None else b""
    return out


# ------------------------------------------------------------------------- reading
def read_shard(path, size: int, n: int, n_repeats=None):
    """One shard -> images (N,S,S,1) float32, responses (N,n) float32[, repeats (N,R,n)].

    Checks every record's checksums and features; DataError names the shard.
    """
    with open(path, "rb") as f:
        buf = _decompress(path, f.read())
    starts, lengths = _offsets(path, buf)
    _check_crcs(path, buf, starts, lengths)
    view = memoryview(buf)
    images, responses, repeats = [], [], []
    want = _schema(size, n, n_repeats)
    for i, (s, length) in enumerate(zip(starts.tolist(), lengths.tolist())):
        ex = _checked_example(path, i, view[s:s + length], want)
        images.append(ex["image"])
        responses.append(ex["response"])
        if n_repeats:
            repeats.append(ex["repeats"])
    count = len(starts)
    out = [np.frombuffer(b"".join(images), "<f4").astype(np.float32).reshape(count, size, size, 1),
           np.stack(responses).astype(np.float32) if count else np.zeros((0, n), np.float32)]
    if n_repeats:
        out.append(np.stack(repeats).reshape(count, n_repeats, n).astype(np.float32) if count
                   else np.zeros((0, n_repeats, n), np.float32))
    return tuple(out)


def _schema(size, n, n_repeats=None):
    """{feature: expected length} of one record (image in bytes, the others in floats)."""
    want = {"image": size * size * 4, "response": n}
    if n_repeats:
        want["repeats"] = n_repeats * n
    return want


def _checked_example(path, i, data, want):
    """Record `i` of shard `path` parsed, its features of the schema's kinds and lengths."""
    try:
        ex = parse_example(data)
    except (ValueError, IndexError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: record {i} is not a tf.train.Example ({e})") from None
    for key, count in want.items():
        v = ex.get(key)
        if v is None:
            raise DataError(f"{path}: record {i} has no {key!r} feature")
        kind, unit = (bytes, "bytes") if key == "image" else (np.ndarray, "values")
        if not isinstance(v, kind):
            raise DataError(f"{path}: record {i}: {key!r} is a "
                            f"{'float_list' if kind is bytes else 'bytes_list'}, expected a "
                            f"{'bytes_list' if kind is bytes else 'float_list'} (not a "
                            f"dataset written by data_prep?)")
        if len(v) != count:
            raise DataError(f"{path}: record {i}: {key!r} has {len(v)} {unit}, expected {count}")
    return ex


def check_first_records(files, size, n, n_repeats=None):
    """Check the first record of every shard in `files` against the schema (feature names,
    kinds, lengths), reading only that record: a DataError names the shard. Cheap: run it
    before work starts, so that a dataset of the wrong kind fails at once."""
    want = _schema(size, n, n_repeats)
    for path in files:
        try:
            with gzip.open(path, "rb") as f:
                head = f.read(12)
                if len(head) < 12:
                    continue            # an empty shard (or one read_shard will call truncated)
                (length,) = struct.unpack("<Q", head[:8])
                data = f.read(min(length, 64 << 20))
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: not a readable GZIP shard (truncated or corrupt?): "
                            f"{e}") from None
        if len(data) == length:
            _checked_example(path, 0, data, want)


def _read_split(directory, split, neurons, verify, with_repeats):
    """(manifest, [images, responses(, repeats or None)]) of a whole split, in file order."""
    directory = Path(directory)
    m = read_manifest(directory)
    if split not in m["splits"]:
        raise DataError(f"{directory}: no split {split!r} (has: {', '.join(m['splits'])})")
    info = m["splits"][split]
    files = shard_files(directory, info, verify)
    idx = parse_neurons(neurons, m["n_neurons"])
    n_repeats = info.get("n_repeats") if with_repeats else None
    parts = [read_shard(f, m["image_size"], m["n_neurons"], n_repeats) for f in files]
    s, n = m["image_size"], m["n_neurons"]
    images = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, s, s, 1), np.float32)
    responses = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, n), np.float32)
    arrays = [images, responses[:, idx]]
    if with_repeats:
        arrays.append(np.concatenate([p[2] for p in parts])[:, :, idx] if n_repeats and parts
                      else None)
    return m, arrays


def load_numpy(directory, split, neurons=None, verify=True, with_repeats=False):
    """Whole split in file order: (images (N,S,S,1), responses (N,n)[, repeats (N,R,n) or None]).

    As `tfsacnn.data.tfdata.load_numpy`. repeats is None when the split has none; NaN marks
    a missing trial. Raises DataError on a bad manifest, shard or record.
    """
    return tuple(_read_split(directory, split, neurons, verify, with_repeats)[1])


_CACHE: dict = {}  # the last split read by `load`: {key: arrays}


def _cached_split(directory, split, neurons, verify, with_repeats):
    """`_read_split`'s arrays, kept for the next call with the same split and unchanged
    manifest (a trainer asks for batches every epoch); one split is kept."""
    manifest = Path(directory) / "manifest.json"
    st = manifest.stat() if manifest.is_file() else None
    key = (str(manifest.resolve()), st and st.st_mtime_ns, split,
           None if neurons is None else str(neurons), with_repeats)
    if key in _CACHE:
        if verify:  # sha256 and record counts, computed once per file per process
            m = read_manifest(directory)
            shard_files(Path(directory), m["splits"][split], verify)
        return _CACHE[key]
    arrays = _read_split(directory, split, neurons, verify, with_repeats)[1]
    _CACHE.clear()
    _CACHE[key] = arrays
    return arrays


class Batches:
    """Numpy batches of a split held in memory; each iteration is one epoch.

    Yields `(images (B,S,S,1), responses (B,n))` float32 (and `repeats (B,R,n)` with
    `with_repeats`). With `shuffle`, epoch e is a permutation drawn from `seed` and e
    (reproducible, different every epoch); with `repeat`, iteration never ends.
    """

    def __init__(self, arrays, batch_size, shuffle, seed, repeat, drop_remainder):
        self.arrays = arrays
        self.batch_size = int(batch_size)
        self.shuffle, self.seed, self.repeat = bool(shuffle), seed, bool(repeat)
        self.drop_remainder = bool(drop_remainder)
        self.epoch = 0

    def __len__(self):
        """Batches per epoch."""
        n, b = len(self.arrays[0]), self.batch_size
        return n // b if self.drop_remainder else -(-n // b)

    def _epoch(self):
        n, b = len(self.arrays[0]), self.batch_size
        order = np.arange(n)
        if self.shuffle:
            seed = None if self.seed is None else (int(self.seed), self.epoch)
            order = np.random.default_rng(seed).permutation(n)
        self.epoch += 1
        for lo in range(0, len(self) * b, b):
            i = order[lo:lo + b]
            yield tuple(a[i] for a in self.arrays)

    def __iter__(self):
        while True:
            yield from self._epoch()
            if not self.repeat:
                return


def load(directory, split, batch_size, shuffle=False, seed=0, repeat=False, neurons=None,
         verify=True, drop_remainder=False, with_repeats=False):
    """`Batches` of (images (B,S,S,1) float32, responses (B,n) float32), as `tfdata.load`.

    The split is read into memory once (checksums checked); a shuffle is a full
    permutation per epoch. Raises DataError on a bad manifest, shard or record.
    """
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size: must be >= 1, got {batch_size}")
    arrays = _cached_split(directory, split, neurons, verify, with_repeats)
    if with_repeats and arrays[2] is None:
        raise DataError(f"{directory}: split {split!r} has no repeats")
    return Batches(arrays, batch_size, shuffle, seed, repeat, drop_remainder)
