"""Train one config: `python -m tfsacnn.fit [--config C] [--data DIR] [--out RUN_DIR] ...`.

With no arguments it runs the embedded demo: synthesises `data/demo` if it is absent,
trains a small ff_sa_cnn (`configs/demo.yaml`), evaluates, exports, and prints where the
TensorBoard logs are.

RUN_DIR receives config.yaml, metrics.json, metrics.csv, tensorboard/, model.keras,
saved_model/ and checkpoints/ (see docs/internals.md).
"""
import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .. import config as config_lib  # noqa: E402
from ..errors import OneLineParser, TfsacnnError, add_output_flags, run_cli  # noqa: E402
from ..progress import score_line  # noqa: E402
from ..quiet import quiet_tensorflow  # noqa: E402

DEMO_CONFIG = "demo"            # a shipped config (tfsacnn/configs/demo.yaml)
DEMO_DATA = pathlib.Path("data/demo")
DEMO_SITE = dict(neurons=8, train=2000, val=500, test=500, repeats=10, seed=0)  # epochs chosen
#                                                  on val, the result reported on test


def build_parser():
    p = OneLineParser(prog="python -m tfsacnn.fit", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="a shipped config's name (ff_sa_cnn, incremental/1_rf_cnn, "
                                    "...) or a YAML file (default: the demo)")
    p.add_argument("--data", help="dataset directory (overrides data.dir; default: the "
                                  "config's, or the demo site data/demo)")
    p.add_argument("--out", help="run directory (default: runs/<model>-<time>)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key, value parsed as YAML (repeatable; default: "
                        "none)")
    p.add_argument("--neurons", help="neuron subset, e.g. 0:64 or 1,5,7 (overrides "
                                     "data.neurons; default: all)")
    p.add_argument("--strategy", choices=["auto", "default", "mirrored", "multiworker"],
                   help="tf.distribute strategy, or keras.distribution under JAX (overrides "
                        "train.strategy; default: auto)")
    p.add_argument("--resume", action="store_true",
                   help="continue RUN_DIR from its last complete epoch (default: off)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in RUN_DIR (default: off)")
    add_output_flags(p)
    return p


def cli_sets(args):
    """--set items plus --data, --neurons and --strategy as --set items."""
    sets = list(args.set)
    if args.data:
        sets.append(f"data.dir={json.dumps(args.data)}")
    if args.neurons is not None:
        sets.append(f"data.neurons={json.dumps(args.neurons)}")
    if args.strategy:
        sets.append(f"train.strategy={args.strategy}")
    return sets


def resolve_config(args):
    sets = cli_sets(args)
    path = args.config
    demo = path is None
    if demo:
        path = DEMO_CONFIG
        if not args.data:
            if not (DEMO_DATA / "manifest.json").exists():
                config_lib.load(path, sets)  # refuse a bad --set before any work
                ensure_demo_data()
            sets.insert(0, f"data.dir={DEMO_DATA}")
    cfg = config_lib.load(path, sets)
    if cfg["data"]["dir"] is None:
        raise TfsacnnError(f"{path}: data.dir is not set (use --data DIR)")
    cfg["data"]["dir"] = str(pathlib.Path(cfg["data"]["dir"]).resolve())
    return cfg


def ensure_demo_data():
    from data_prep.synthesize import synthesize

    print(f"synthesising the demo site into {DEMO_DATA} ...", flush=True)
    DEMO_DATA.parent.mkdir(parents=True, exist_ok=True)
    synthesize(DEMO_DATA, **DEMO_SITE)


# what --resume may change
RESUMABLE = {("train", "epochs"), ("train", "strategy"), ("train", "time_limit_s")}


def _flat(cfg, path=()):
    for k, v in cfg.items():
        if isinstance(v, dict) and path + (k,) not in config_lib.FREE_FORM:
            yield from _flat(v, path + (k,))
        else:
            yield path + (k,), v


def resume_config(args, saved):
    """RUN/config.yaml plus the command line; refuses a change other than RESUMABLE's."""
    sets = cli_sets(args)
    cfg = config_lib.load(args.config or saved, sets, where=str(args.config or saved))
    if cfg["data"]["dir"] is not None:
        cfg["data"]["dir"] = str(pathlib.Path(cfg["data"]["dir"]).resolve())
    old, new = dict(_flat(config_lib.load(saved))), dict(_flat(cfg))
    diff = [f"{'.'.join(k)} to {v!r} (the run has {old.get(k)!r})"
            for k, v in new.items() if k not in RESUMABLE and v != old.get(k)]
    if diff:
        raise TfsacnnError(f"{saved}: --resume cannot change {'; '.join(diff)}: only "
                           f"train.epochs, train.strategy and train.time_limit_s may change "
                           f"(or use --overwrite)")
    return cfg


def run(args):
    if args.resume and args.overwrite:
        raise TfsacnnError(f"{args.out or '--out'}: --resume and --overwrite contradict each "
                           f"other (continue the run, or replace it); nothing was changed")
    if args.data and not (pathlib.Path(args.data) / "manifest.json").is_file():
        raise TfsacnnError(f"{args.data}: not a dataset (no manifest.json); --data names a "
                           f"directory written by `tfsacnn data build` or `data synthesize`")
    saved = pathlib.Path(args.out) / "config.yaml" if args.out else None
    if args.resume and (saved is None or not saved.is_file()):
        raise TfsacnnError(f"{args.out or '--out'}: nothing to resume (no config.yaml); "
                           f"--resume continues the run in --out")
    if args.resume:
        cfg = resume_config(args, saved)   # the run's own config, no demo set-up
    else:
        cfg = resolve_config(args)
    if args.neurons and cfg["data"]["dir"] is not None:
        from ..data import parse_neurons_flag, read_manifest

        parse_neurons_flag(args.neurons, read_manifest(cfg["data"]["dir"])["n_neurons"])
    from ..training.run import train

    out = args.out or f"runs/{cfg['model']['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    metrics = train(cfg, out, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet)
    if metrics is None or args.quiet:       # not the chief worker, or --quiet
        return metrics
    out = pathlib.Path(out)
    for split, entry in metrics["splits"].items():
        print(f"{split}, each neuron at its best epoch on {metrics['selection_split']}: "
              f"{score_line(entry['mean'])}  ({len(metrics['neurons'])} neurons)")
    print(f"run directory: {out}\nTensorBoard:   tensorboard --logdir {out / 'tensorboard'}")
    return metrics


def quiet_backend(verbose):
    """Hide TensorFlow's start-up lines (`--verbose` shows them), also under JAX, where
    Keras' saving imports TensorFlow later if it is installed."""
    quiet_tensorflow(verbose)


def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_backend(args.verbose)
    return run_cli(run, args, path=args.out)


if __name__ == "__main__":
    sys.exit(main())
