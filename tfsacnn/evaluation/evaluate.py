"""Recompute a run's metrics from its exported SavedModel.

`python -m tfsacnn.evaluate --run RUN_DIR [--data DIR] [--split val|test] [--out FILE.json]
[--save]`

`--save` records the result in `RUN_DIR/metrics.json` (creating it for runs that have
none, such as imported PyTorch checkpoints), so `tfsacnn.compare` can use the run.

Loads `RUN_DIR/saved_model` with plain TensorFlow (the `serve` endpoint), predicts the
split of the dataset (default: the run's own `data.dir`, and its neurons), and prints the
mean CORR, PT_J, PT_S, TOP and peak height (`tfsacnn.metrics.evaluate`; the JSON from
`--out` also has FEV and the noise ceiling when the split has repeats).
"""
import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from ..errors import OneLineParser, TfsacnnError, int_at_least, run_cli  # noqa: E402
from ..files import read_json, read_yaml, write_text  # noqa: E402
from ..runs import save_metrics  # noqa: E402,F401


def run_neurons(run):
    """The dataset neuron indices of a run's output columns (metrics.json or config)."""
    m = run / "metrics.json"
    if m.exists():
        metrics = read_json(m)
        if "neurons" not in metrics:
            raise TfsacnnError(f"{m}: has no 'neurons'")
        return metrics["neurons"]
    return (read_yaml(run / "config.yaml").get("data") or {}).get("neurons")


def evaluate_run(run, data=None, split="val", top_k=10, batch_size=500):
    """Metrics dict (`tfsacnn.fit.split_entry` format) of the run's SavedModel on a split."""
    import tensorflow as tf

    from .. import data as data_lib
    from . import metrics as metrics_lib
    from ..runs import split_entry

    run = pathlib.Path(run)
    if not run.is_dir():
        raise TfsacnnError(f"{run}: no such run directory")
    sm = run / "saved_model"
    if not (sm / "saved_model.pb").exists():
        raise TfsacnnError(f"{sm}: no SavedModel here")
    if data is None:
        cfg_path = run / "config.yaml"
        if not cfg_path.exists():
            raise TfsacnnError(f"{cfg_path}: missing; pass --data DIR")
        data = (read_yaml(cfg_path).get("data") or {}).get("dir")
        if not data:
            raise TfsacnnError(f"{cfg_path}: has no data.dir; pass --data DIR")
    manifest = data_lib.read_manifest(data)
    if split not in manifest["splits"] or not manifest["splits"][split]["count"]:
        raise TfsacnnError(f"{data}: has no {split!r} split")
    neurons = data_lib.parse_neurons(run_neurons(run), manifest["n_neurons"])
    x, y, reps = data_lib.load_numpy(data, split, neurons=neurons, with_repeats=True)
    loaded = tf.saved_model.load(str(sm))  # keep a reference: it owns the variables
    pred = np.concatenate([loaded.serve(tf.constant(x[i:i + batch_size])).numpy()
                           for i in range(0, len(x), batch_size)])
    if pred.shape[1] != y.shape[1]:
        raise TfsacnnError(f"{sm}: predicts {pred.shape[1]} neurons, {data} selection has "
                           f"{y.shape[1]}")
    bad = ~np.isfinite(pred).all(axis=0)
    if bad.any():
        raise TfsacnnError(f"{sm}: predicts NaN or inf for {int(bad.sum())} neuron(s) on the "
                           f"{split} split (first: column {int(np.argmax(bad))})")
    if len(y) < top_k:
        raise TfsacnnError(f"{data}: the {split} split has {len(y)} images, fewer than "
                           f"top_k={top_k} (PT needs top_k images)")
    scores = metrics_lib.evaluate(y, pred, top_k=top_k, repeats=reps)
    return split_entry(scores, len(y)), {"data": data, "neurons": neurons, "manifest": manifest}


def run(args):
    entry, info = evaluate_run(args.run, args.data, args.split, args.top_k)
    if args.save:
        save_metrics(args.run, {args.split: entry}, info)
    m = entry["mean"]
    fmt = lambda v, s=1: "nan" if v is None else f"{v * s:.3f}"  # noqa: E731
    print(f"{args.run} [{args.split}, {entry['n_images']} images]: corr {fmt(m['corr'])}  "
          f"PT_J {fmt(m['pt_j'], 100)}%  PT_S {fmt(m['pt_s'], 100)}%  "
          f"TOP {fmt(m['top_overlap'], 100)}%  peak height {fmt(m['peak_height'])}  "
          f"({m['n_nan']} NaN)")
    if args.out:
        pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_text(args.out, json.dumps(entry, indent=1))


def main(argv=None):
    p = OneLineParser(prog="python -m tfsacnn.evaluate", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run directory with saved_model/")
    p.add_argument("--data", help="dataset directory (default: the run's data.dir)")
    p.add_argument("--split", default="val", help="split to evaluate (val, test, ...)")
    p.add_argument("--top-k", type=int_at_least(1), default=10, help="peak-tuning top_k (default 10)")
    p.add_argument("--out", help="also write the result as JSON here")
    p.add_argument("--save", action="store_true",
                   help="record the result in RUN_DIR/metrics.json (for compare)")
    return run_cli(run, p.parse_args(argv), path=None)


if __name__ == "__main__":
    sys.exit(main())
