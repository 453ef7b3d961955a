"""Recompute a run's metrics from its exported SavedModel.

`python -m tfsacnn.evaluate --run RUN_DIR [--data DIR] [--split SPLIT] [--out FILE.json]
[--save]`

The split defaults to `test` when the dataset has one, else `val`; the printed line names it.

`--save` records the result in `RUN_DIR/metrics.json` (creating it for runs that have
none, such as imported PyTorch checkpoints), so `tfsacnn.compare` can use the run; scores
on another dataset named with `--data` go to `RUN_DIR/metrics_<dataset name>.json`,
never into metrics.json. A run whose own dataset has changed since it was trained (its
manifest.json sha256 is not the one recorded) is refused, as is a `saved_model/` older
than `model.keras`.

Loads `RUN_DIR/saved_model` with plain TensorFlow (the `serve_preprocessed` endpoint;
`serve` for SavedModels written before it existed), predicts the
split of the dataset (default: the run's own `data.dir`, and its neurons), and prints the
mean CORR, PT_J, PT_S, TOP (percent) and peak height (`tfsacnn.metrics.evaluate`; the JSON from
`--out` also has FEV and the noise ceiling when the split has repeats).
"""
import json
import os
import pathlib
import sys
from contextlib import nullcontext

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from ..errors import (OneLineParser, TfsacnnError, add_output_flags, int_at_least,  # noqa: E402
                      run_cli, split_name)
from ..files import check_writable, read_json, read_yaml, write_text  # noqa: E402
from ..export import check_stamp  # noqa: E402
from ..runs import RunLock, check_data, metrics_file, save_metrics  # noqa: E402


def run_neurons(run):
    """The dataset neuron indices of a run's output columns (metrics.json or config)."""
    m = run / "metrics.json"
    if m.exists():
        metrics = read_json(m)
        if "neurons" not in metrics:
            raise TfsacnnError(f"{m}: has no 'neurons'")
        return metrics["neurons"]
    return (read_yaml(run / "config.yaml").get("data") or {}).get("neurons")


def default_split(splits):
    """The split a report shows by default: "test" when `splits` (a manifest's or a
    metrics.json's `splits`) has a non-empty one, else "val"."""
    test = splits.get("test") or {}
    return "test" if test.get("count", test.get("n_images")) else "val"


def evaluate_run(run, data=None, split=None, top_k=10, batch_size=500):
    """Metrics dict (`tfsacnn.fit.split_entry` format) of the run's SavedModel on a split
    (None: `default_split`), and {"data", "neurons", "manifest", "split", "same_data"}.

    Refuses a SavedModel older than RUN/model.keras, and the run's own dataset changed
    since training (`tfsacnn.runs.check_data`); `same_data` is False for another dataset
    named by `data`."""
    import tensorflow as tf

    from .. import data as data_lib
    from . import metrics as metrics_lib
    from ..runs import split_entry

    run = pathlib.Path(run)
    if not run.is_dir():
        raise TfsacnnError(f"{run}: no such run directory")
    sm = run / "saved_model"
    if not (sm / "saved_model.pb").exists():
        raise TfsacnnError(f"{sm}: no SavedModel here (`tfsacnn export --run {run}` "
                           f"writes it from model.keras)")
    check_stamp(run)
    if data is None:
        cfg_path = run / "config.yaml"
        if not cfg_path.exists():
            raise TfsacnnError(f"{cfg_path}: missing; pass --data DIR")
        if not (read_yaml(cfg_path).get("data") or {}).get("dir"):
            raise TfsacnnError(f"{cfg_path}: has no data.dir; pass --data DIR")
    data, same = check_data(run, data)
    manifest = data_lib.read_manifest(data)
    split = split or default_split(manifest["splits"])
    if split not in manifest["splits"] or not manifest["splits"][split]["count"]:
        raise TfsacnnError(f"{data}: has no {split!r} split")
    neurons = data_lib.parse_neurons(run_neurons(run), manifest["n_neurons"])
    x, y, reps = data_lib.load_numpy(data, split, neurons=neurons, with_repeats=True)
    loaded = tf.saved_model.load(str(sm))  # keep a reference: it owns the variables
    serve = getattr(loaded, "serve_preprocessed", None) or loaded.serve
    spec = (getattr(serve, "input_signature", None) or [None])[0]
    size = None if spec is None else spec.shape[1]
    if size is not None and x.shape[1] != size:
        raise TfsacnnError(f"{data}: images are {x.shape[1]}x{x.shape[2]}, but {sm} takes "
                           f"{size}x{size} (wrong dataset?)")
    pred = np.concatenate([serve(tf.constant(x[i:i + batch_size])).numpy()
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
    return split_entry(scores, len(y)), {"data": data, "neurons": neurons, "manifest": manifest,
                                         "split": split, "same_data": same}


def run(args):
    from ..progress import score_line
    from ..errors import require_tensorflow
    from ..quiet import quiet_tensorflow

    require_tensorflow("tfsacnn evaluate (it runs RUN/saved_model)")
    if args.out:
        check_writable(args.out)            # before the work (and before --save writes)
    quiet_tensorflow(args.verbose)
    with RunLock(args.run) if args.save and pathlib.Path(args.run).is_dir() else nullcontext():
        entry, info = evaluate_run(args.run, args.data, args.split, args.top_k,
                                   args.batch_size)
        split = info["split"]
        if args.save:
            target = metrics_file(args.run, info["data"], info["same_data"])
            save_metrics(args.run, {split: entry}, info, path=target)
    if not args.quiet:
        print(f"{args.run} [split: {split}, {entry['n_images']} images]: {score_line(entry['mean'])}")
        if args.save:
            print(f"saved in {target}" + ("" if info["same_data"] else
                                          f" ({info['data']} is not the run's dataset)"))
    if args.out:
        pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_text(args.out, json.dumps(entry, indent=1))


def build_parser():
    p = OneLineParser(prog="python -m tfsacnn.evaluate", description=__doc__)
    add_output_flags(p)
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="run directory with saved_model/")
    p.add_argument("--data", metavar="DIR", help="dataset directory (default: the run's data.dir)")
    p.add_argument("--split", default=None, type=split_name,
                   help="split to evaluate (default: test when the dataset has one, else val)")
    p.add_argument("--top-k", type=int_at_least(1), default=10, help="peak-tuning top_k")
    p.add_argument("--batch-size", type=int_at_least(1), default=500,
                   help="images per SavedModel call")
    p.add_argument("--out", metavar="FILE.json", help="also write the result as JSON here")
    p.add_argument("--save", action="store_true",
                   help="record the result in RUN_DIR/metrics.json (for compare); on "
                        "another dataset (--data), in RUN_DIR/metrics_<dataset name>.json")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(run, args, path=args.out or args.run)


if __name__ == "__main__":
    sys.exit(main())
