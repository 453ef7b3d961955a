"""Datasets written by `data_prep`: the manifest (`manifest`), the tf.data reader (`tfdata`)
and the reader without TensorFlow (`records`, numpy only).

`load` is tf.data's (`tfdata.load`); `numpy_batches` is `records.load` (numpy batches
without TensorFlow, for the JAX trainer); `load_numpy` reads with tf.data under Keras'
TensorFlow backend and with `records` under any other (JAX), the same arrays either way.
Readers are imported on first use, so reading a manifest needs no TensorFlow.
"""
from .manifest import (SCHEMA_VERSION, parse_neurons, parse_neurons_flag,  # noqa: F401
                       read_manifest, shard_files)

_TFDATA = ("load", "SHUFFLE_BUFFER", "READ_BUFFER")


def load_numpy(directory, split, neurons=None, verify=True, with_repeats=False):
    """Whole split in file order: (images (N,S,S,1), responses (N,n)[, repeats (N,R,n) or None]).

    tf.data under the TensorFlow backend, else `records` (no TensorFlow).
    """
    import keras

    if keras.backend.backend() == "tensorflow":
        from . import tfdata as reader
    else:
        from . import records as reader
    return reader.load_numpy(directory, split, neurons=neurons, verify=verify,
                             with_repeats=with_repeats)


def numpy_batches(directory, split, batch_size, shuffle=False, seed=0, repeat=False, neurons=None,
                  verify=True, drop_remainder=False):
    """`records.Batches` of (images (B,S,S,1), responses (B,n)) float32, no TensorFlow.

    Re-iterable (one epoch per iteration); the split is read once and kept in memory.
    """
    from . import records

    return records.load(directory, split, batch_size, shuffle=shuffle, seed=seed, repeat=repeat,
                        neurons=neurons, verify=verify, drop_remainder=drop_remainder)


def __getattr__(name):
    if name in _TFDATA:
        from . import tfdata
        return getattr(tfdata, name)
    raise AttributeError(f"module 'tfsacnn.data' has no attribute {name!r}")
