"""`python -m tfsacnn.bench data`: write + read speed of the TFRecord pipeline.

Writes a synthetic dataset (random images, sparse non-negative responses) into a
temporary directory, then reads it with `tfsacnn.data.load(..., verify=False)` (batch,
then `tf.io.parse_example`) and, as a baseline in the same run, with per-example
`tf.io.parse_single_example` before batching. Each read is timed after one warm-up pass.
Prints one JSON line.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from tfsacnn.errors import int_at_least


def add_arguments(parser) -> None:
    """Flags of the `data` subcommand."""
    pos = int_at_least(1)
    parser.add_argument("--examples", type=pos, default=20000, help="examples to write")
    parser.add_argument("--neurons", type=pos, default=300, help="neurons per example")
    parser.add_argument("--size", type=pos, default=50, help="image side in pixels")
    parser.add_argument("--batch-size", type=pos, default=256, help="read batch size")
    parser.add_argument("--shard-size", type=pos, default=2500, help="examples per shard")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the synthetic images and responses")


def _synthetic(n: int, size: int, neurons: int, seed: int):
    """images (n,S,S) float32 ~ N(0,1); responses (n,neurons) float32, sparse and >= -0.1."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, size, size), dtype=np.float32)
    responses = np.maximum(rng.standard_normal((n, neurons), dtype=np.float32) - 1.5, -0.1)
    return images, responses


def _rate(ds, n: int) -> float:
    """Examples/s of one full pass after one warm-up pass."""
    for _ in ds:
        pass
    t = time.perf_counter()
    count = 0
    for images, _ in ds:
        count += int(images.shape[0])
    elapsed = time.perf_counter() - t
    assert count == n, (count, n)
    return n / elapsed


def _per_example_dataset(directory: Path, split: str, size: int, neurons: int, batch_size: int):
    """Baseline reader: parse_single_example on each record, then batch."""
    import tensorflow as tf

    from tfsacnn.data import read_manifest

    files = [str(directory / s["file"]) for s in read_manifest(directory)["splits"][split]["shards"]]
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "response": tf.io.FixedLenFeature([neurons], tf.float32)}

    def parse(record):
        f = tf.io.parse_single_example(record, spec)
        return tf.reshape(tf.io.decode_raw(f["image"], tf.float32), [size, size, 1]), f["response"]

    ds = tf.data.TFRecordDataset(files, compression_type="GZIP", num_parallel_reads=tf.data.AUTOTUNE)
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def main(args) -> dict:
    """Run the benchmark for parsed `args`; print and return the result dict."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from data_prep.writer import write_dataset
    from tfsacnn.data import load

    images, responses = _synthetic(args.examples, args.size, args.neurons, args.seed)
    with tempfile.TemporaryDirectory(prefix="tfsacnn-bench-data-") as tmp:
        out = Path(tmp) / "ds"
        t = time.perf_counter()
        write_dataset(out, {"train": {"images": images, "responses": responses}}, shard_size=args.shard_size,
                      command="tfsacnn.bench data", progress=False)
        write_rate = args.examples / (time.perf_counter() - t)
        size_mb = sum(p.stat().st_size for p in out.iterdir()) / 1e6
        read_rate = _rate(load(out, "train", args.batch_size, verify=False), args.examples)
        base_rate = _rate(_per_example_dataset(out, "train", args.size, args.neurons, args.batch_size),
                          args.examples)
    result = {"examples": args.examples, "neurons": args.neurons, "image_size": args.size,
              "batch_size": args.batch_size, "shards": -(-args.examples // args.shard_size),
              "dataset_mb": round(size_mb, 1), "cpu_count": os.cpu_count(),
              "write_examples_per_s": round(write_rate), "read_examples_per_s": round(read_rate),
              "read_per_example_examples_per_s": round(base_rate), "speedup": round(read_rate / base_rate, 2)}
    print(json.dumps(result), flush=True)
    return result
