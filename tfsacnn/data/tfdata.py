"""The tf.data reader of datasets written by data_prep.writer (vectorised parsing).

Examples (see docs/internals.md): `image` raw little-endian float32 (S,S), `response`
float_list (n,), `repeats` float_list (R*n,) in splits with repeats.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from .manifest import parse_neurons, read_manifest, shard_files

SHUFFLE_BUFFER = 8192          # examples (about 11 kB each at 50x50 + 300 neurons)
READ_BUFFER = 4 << 20          # bytes of GZIP read buffer per shard


# --------------------------------------------------------------------------- tf.data
def _parser(size: int, n: int, neurons, n_repeats=None):
    """Batch parser: serialized (B,) -> (images (B,S,S,1), responses (B,n')[, repeats (B,R,n')])."""
    import tensorflow as tf

    spec = {"image": tf.io.FixedLenFeature([], tf.string), "response": tf.io.FixedLenFeature([n], tf.float32)}
    if n_repeats:
        spec["repeats"] = tf.io.FixedLenFeature([n_repeats * n], tf.float32)
    idx = None if neurons is None else tf.constant(neurons, tf.int32)

    def parse(serialized):
        f = tf.io.parse_example(serialized, spec)
        images = tf.reshape(tf.io.decode_raw(f["image"], tf.float32, little_endian=True), [-1, size, size, 1])
        responses = f["response"] if idx is None else tf.gather(f["response"], idx, axis=1)
        if not n_repeats:
            return images, responses
        repeats = tf.reshape(f["repeats"], [-1, n_repeats, n])
        return images, responses, (repeats if idx is None else tf.gather(repeats, idx, axis=2))

    return parse


def _records(files: list[str], shuffle: bool, seed: int, input_context):
    """Serialized examples of the shards, sharded for `input_context` (by file when possible)."""
    import tensorflow as tf

    n_pipes = input_context.num_input_pipelines if input_context is not None else 1
    pipe = input_context.input_pipeline_id if input_context is not None else 0
    by_file = n_pipes > 1 and len(files) >= n_pipes
    ds = tf.data.Dataset.from_tensor_slices(files)
    if by_file:
        ds = ds.shard(n_pipes, pipe)
    n_files = len(files) // n_pipes if by_file else len(files)
    if shuffle and n_files > 1:
        # every pipeline must draw the same file order when sharding by example below
        file_seed = seed if seed is not None or by_file or n_pipes == 1 else 0
        ds = ds.shuffle(len(files), seed=file_seed, reshuffle_each_iteration=True)
    # Unshuffled reads keep the writer's order (shard after shard); shuffled ones read
    # several shards at once.
    cycle = max(1, min(n_files, os.cpu_count() or 1, 8)) if shuffle else 1
    # (`deterministic` only with `num_parallel_calls`: tf.data warns about it otherwise)
    parallel = dict(num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) if cycle > 1 else {}
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP", buffer_size=READ_BUFFER),
        cycle_length=cycle, block_length=16, **parallel)
    return ds, (n_pipes if n_pipes > 1 and not by_file else 1), pipe


def _dataset(directory, split, batch_size, *, shuffle, seed, repeat, neurons, verify, input_context,
             drop_remainder, with_repeats):
    import tensorflow as tf

    directory = Path(directory)
    m = read_manifest(directory)
    if split not in m["splits"]:
        raise DataError(f"{directory}: no split {split!r} (has: {', '.join(m['splits'])})")
    info = m["splits"][split]
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size: must be >= 1, got {batch_size}")
    files = shard_files(directory, info, verify)
    idx = None if neurons is None else parse_neurons(neurons, m["n_neurons"])
    n_repeats = info.get("n_repeats") if with_repeats else None
    ds, n_split, pipe = _records(files, shuffle, seed, input_context)
    if n_split > 1 and seed is None:
        seed = 0  # every pipeline must draw the same order
    if shuffle:
        ds = ds.shuffle(min(SHUFFLE_BUFFER, max(1, info["count"])), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    bs = int(batch_size)
    if n_split > 1:
        # Fewer shards than pipelines: every pipeline reads the same seeded stream, cuts it
        # into global batches (a final partial one is dropped, so all workers take the same
        # number of steps) and keeps its own slice; a global batch is then exactly the one a
        # single device would see.
        ds = ds.batch(bs * n_split, drop_remainder=True)
    else:
        ds = ds.batch(bs, drop_remainder=drop_remainder)
    ds = ds.map(_parser(m["image_size"], m["n_neurons"], idx, n_repeats), num_parallel_calls=tf.data.AUTOTUNE)
    if n_split > 1:
        ds = ds.map(lambda *t: tuple(a[pipe * bs:(pipe + 1) * bs] for a in t))
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # Already sharded for input_context; otherwise let tf.distribute shard by example (works with
    # fewer shards than workers, where FILE sharding would fail).
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF if input_context is not None
        else tf.data.experimental.AutoShardPolicy.DATA)
    return ds.with_options(options)


def load(directory, split, batch_size, shuffle=False, seed=0, repeat=False, neurons=None, verify=True,
         input_context=None, drop_remainder=False):
    """tf.data.Dataset of (images (B,S,S,1) float32, responses (B,n) float32).

    neurons: parse_neurons spec (columns are gathered in that order). batch_size is the batch
    this pipeline yields (with an input_context, pass the per-replica batch size).
    input_context: tf.distribute.InputContext; shards by file when there are at least as
    many shards as pipelines, else by example. Raises DataError on a bad manifest or shard.
    """
    return _dataset(directory, split, batch_size, shuffle=shuffle, seed=seed, repeat=repeat, neurons=neurons,
                    verify=verify, input_context=input_context, drop_remainder=drop_remainder, with_repeats=False)


def load_numpy(directory, split, neurons=None, verify=True, with_repeats=False):
    """Whole split in file order: (images (N,S,S,1), responses (N,n)[, repeats (N,R,n) or None]).

    repeats is None when the split has none; NaN marks a missing trial.
    """
    import tensorflow as tf

    ds = _dataset(directory, split, 1024, shuffle=False, seed=0, repeat=False, neurons=neurons, verify=verify,
                  input_context=None, drop_remainder=False, with_repeats=with_repeats)
    parts = []
    try:
        for batch in ds.as_numpy_iterator():
            parts.append(batch)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        raise DataError(f"{directory}: split {split!r} could not be read ({e.message.splitlines()[0]})") from None
    m = read_manifest(directory)
    n = len(parse_neurons(neurons, m["n_neurons"]))
    s = m["image_size"]
    images = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, s, s, 1), np.float32)
    responses = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, n), np.float32)
    if not with_repeats:
        return images, responses
    has = m["splits"][split].get("n_repeats")
    repeats = np.concatenate([p[2] for p in parts]) if has and parts else None
    return images, responses, repeats
