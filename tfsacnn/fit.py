"""Train one config: `python -m tfsacnn.fit [--config C] [--data DIR] [--out RUN_DIR] ...`.

With no arguments it runs the embedded demo: synthesises `data/demo` if it is absent,
trains a small ff_sa_cnn (`configs/demo.yaml`), evaluates, exports, and prints where the
TensorBoard logs are.

RUN_DIR receives config.yaml, metrics.json, metrics.csv, tensorboard/, model.keras,
saved_model/ and checkpoints/ (see docs/internals.md).
"""
import argparse
import csv
import hashlib
import io
import json
import os
import pathlib
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from . import config as config_lib  # noqa: E402
from .errors import OneLineParser, TfsacnnError, run_cli  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
DEMO_DATA = pathlib.Path("data/demo")
DEMO_SITE = dict(neurons=8, train=2000, val=500, test=0, repeats=10, seed=0)


def build_parser():
    p = OneLineParser(prog="python -m tfsacnn.fit", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (default: the demo config)")
    p.add_argument("--data", help="dataset directory (overrides data.dir)")
    p.add_argument("--out", help="run directory (default: runs/<model>-<time>)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key, value parsed as YAML (repeatable)")
    p.add_argument("--neurons", help="neuron subset, e.g. 0:64 or 1,5,7 (overrides data.neurons)")
    p.add_argument("--strategy", choices=["auto", "default", "mirrored", "multiworker"],
                   help="tf.distribute strategy (overrides train.strategy)")
    p.add_argument("--resume", action="store_true",
                   help="continue RUN_DIR from its last complete epoch")
    p.add_argument("--overwrite", action="store_true", help="replace a finished RUN_DIR")
    return p


def cli_sets(args):
    """--set items plus --data, --neurons and --strategy as --set items."""
    sets = list(args.set)
    if args.data:
        sets.append(f"data.dir={json.dumps(args.data)}")
    if args.neurons:
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


RESUMABLE = {("train", "epochs"), ("train", "strategy")}  # what --resume may change


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
                           f"train.epochs and train.strategy may change (or use --overwrite)")
    return cfg


def check_run_dir(out, resume, overwrite):
    """Refuse an --out that must not be written or replaced; True: replace it (--overwrite)."""
    out = pathlib.Path(out)
    if out.exists() and not out.is_dir():
        raise TfsacnnError(f"{out}: is a file, not a run directory")
    if (out / "manifest.json").exists():
        raise TfsacnnError(f"{out}: is a dataset (manifest.json), not a run directory; --out "
                           f"names the run to write")
    if resume:
        if not (out / "config.yaml").exists():
            raise TfsacnnError(f"{out}: nothing to resume (no config.yaml)")
        return False
    if not out.exists() or not any(out.iterdir()):
        return False
    if not any((out / f).exists() for f in ("config.yaml", "metrics.json", "checkpoints")):
        raise TfsacnnError(f"{out}: not empty and not a run directory; refusing to write into "
                           f"or delete it (use another --out)")
    if (out / "metrics.json").exists() and not overwrite:
        raise TfsacnnError(f"{out}: a finished run is already there (use --overwrite, "
                           f"or another --out)")
    if (out / "checkpoints").exists() and not overwrite:
        raise TfsacnnError(f"{out}: an unfinished run is there (use --resume to continue "
                           f"it, or --overwrite)")
    return overwrite


def manifest_sha256(data_dir):
    return hashlib.sha256((pathlib.Path(data_dir) / "manifest.json").read_bytes()).hexdigest()


def report(model, trainer, best_epoch):
    """Metrics of the best-epoch model on every report split present: metrics.json dict."""
    from . import data as data_lib
    from . import metrics as metrics_lib

    cfg = trainer.cfg
    predict = trainer._make_predict(model)
    out = {
        "model": cfg["model"]["name"], "core": cfg["model"]["core"],
        "trainable_params_per_neuron": trainable_per_neuron(model),
        "neurons": trainer.neurons,
        "neuron_ids": [trainer.manifest["neuron_ids"][i] for i in trainer.neurons],
        "data": {"dir": str(cfg["data"]["dir"]),
                 "manifest_sha256": manifest_sha256(cfg["data"]["dir"])},
        "selection_split": cfg["eval"]["selection_split"],
        "best_epoch": [int(e) for e in best_epoch],
        "splits": {},
    }
    for split in cfg["eval"]["report_splits"]:
        if split not in trainer.splits:
            continue
        x, y, reps = data_lib.load_numpy(cfg["data"]["dir"], split, neurons=trainer.neurons,
                                         verify=False, with_repeats=True)
        pred = trainer.predict(predict, x)
        scores = metrics_lib.evaluate(y, pred, top_k=cfg["eval"]["top_k"],
                                      repeats=reps)
        out["splits"][split] = split_entry(scores, len(y))
    return out


def split_entry(scores, n_images):
    import numpy as np

    from . import metrics as metrics_lib

    def clean(a):
        return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, float)]

    summary = metrics_lib.summarize({k: scores[k] for k in metrics_lib.REPORTED if k in scores})
    return {"n_images": int(n_images),
            "per_neuron": {k: clean(v) for k, v in scores.items()},
            "mean": {k: (None if v is None or not np.isfinite(v) else float(v))
                     if k != "n_nan" else int(v) for k, v in summary.items()}}


def trainable_per_neuron(model):
    """Trainable parameters / neurons: one network each (independent), or the shared core
    spread over the neurons plus each neuron's readout (shared)."""
    from . import models

    return round(models.count_trainable(model) / model.output_shape[-1])


def metrics_csv(metrics):
    from .metrics import REPORTED

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["split", "neuron", "neuron_id", *REPORTED, "best_epoch"])
    for split, entry in metrics["splits"].items():
        pn, m = entry["per_neuron"], entry["mean"]
        for j, n in enumerate(metrics["neurons"]):
            w.writerow([split, n, metrics["neuron_ids"][j],
                        *[pn[k][j] if k in pn else "" for k in REPORTED], metrics["best_epoch"][j]])
        w.writerow([split, "mean", "", *[m.get(k, "") for k in REPORTED], ""])
    return buf.getvalue()


def run(args):
    saved = pathlib.Path(args.out) / "config.yaml" if args.out else None
    if args.resume and saved is not None and saved.is_file():
        cfg = resume_config(args, saved)   # the run's own config, no demo set-up
    else:
        cfg = resolve_config(args)
    import tensorflow as tf

    from . import training

    out = pathlib.Path(args.out or f"runs/{cfg['model']['name']}-{time.strftime('%Y%m%d-%H%M%S')}")
    strategy = training.make_strategy(cfg["train"]["strategy"])
    chief = training.is_chief(strategy)
    if chief:
        replace = check_run_dir(out, args.resume, args.overwrite)
    else:  # other workers write their (identical) state to a scratch directory
        out = pathlib.Path(f"{out}.worker-tmp-{os.getpid()}")
    from . import data as data_lib
    from .callbacks import TensorBoardLogger
    from .export import export_saved_model, save_keras
    from .files import write_text

    trainer = training.Trainer(cfg, out, strategy=strategy)   # checks the data and neurons
    if cfg["data"]["verify"]:  # sha256 of every shard, once, before any work
        for split in trainer.splits:
            data_lib.load(cfg["data"]["dir"], split, 1, verify=True)
    if chief and replace:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    if chief:
        config_lib.dump(cfg, out / "config.yaml")
    tb = TensorBoardLogger(out / "tensorboard", cfg, cfg["eval"]["tuning_curve_neurons"])
    print(f"training {cfg['model']['name']} ({cfg['model']['core']} core) on "
          f"{len(trainer.neurons)} neurons of {cfg['data']['dir']} with "
          f"{strategy.num_replicas_in_sync} replica(s); run dir {out}", flush=True)
    try:
        model, history, best_epoch = trainer.fit(resume=args.resume,
                                                 callbacks=[tb] if chief else [])
    except tf.errors.DataLossError as e:
        raise TfsacnnError(f"{cfg['data']['dir']}: a corrupt or truncated TFRecord shard "
                           f"({e.message.splitlines()[0]}); data.verify=true names it") from None
    finally:
        tb.close()
    metrics = report(model, trainer, best_epoch)
    if not chief:
        shutil.rmtree(out, ignore_errors=True)
        return metrics
    save_keras(model, out / "model.keras")
    export_saved_model(model, out / "saved_model")
    write_text(out / "metrics.csv", metrics_csv(metrics))
    write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    for split, entry in metrics["splits"].items():
        m = entry["mean"]
        print(f"{split}: corr {fmt(m['corr'])}  PT_J {fmt(m['pt_j'], 100)}%  "
              f"PT_S {fmt(m['pt_s'], 100)}%  TOP {fmt(m['top_overlap'], 100)}%  "
              f"peak height {fmt(m['peak_height'])}  ({len(metrics['neurons'])} neurons, "
              f"{m['n_nan']} NaN)")
    print(f"run directory: {out}\nTensorBoard:   tensorboard --logdir {out / 'tensorboard'}")
    return metrics


def fmt(v, scale=1.0):
    return "nan" if v is None else f"{v * scale:.3f}" if scale == 1 else f"{v * scale:.1f}"


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(run, args, path=args.out)


if __name__ == "__main__":
    sys.exit(main())
