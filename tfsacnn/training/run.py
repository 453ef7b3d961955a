"""Train a resolved config into a run directory: the library's `fit` (the CLI's core).

`train(cfg, out)` checks the run directory, the data and the neurons, trains with
`Trainer`, then writes config.yaml, metrics.json / metrics.csv, model.keras, saved_model/
and tensorboard/ (see `tfsacnn.runs`). Studies call this, not the CLI.
"""
import json
import os
import pathlib
import shutil

from .. import config as config_lib
from ..errors import TfsacnnError
from ..runs import check_run_dir, metrics_csv, report


def train(cfg, out, *, resume=False, overwrite=False):
    """Train `cfg` (a dict from `tfsacnn.config.load`) into run directory `out`.

    `resume`: continue `out` from its last checkpoint; `overwrite`: replace a run there.
    Returns the metrics.json dict (None on a non-chief worker of a multi-worker run).
    """
    import tensorflow as tf

    from . import Trainer, is_chief, make_strategy

    out = pathlib.Path(out)
    strategy = make_strategy(cfg["train"]["strategy"])
    chief = is_chief(strategy)
    if chief:
        replace = check_run_dir(out, resume, overwrite)
    else:  # other workers write their (identical) state to a scratch directory
        out = pathlib.Path(f"{out}.worker-tmp-{os.getpid()}")
    from .. import data as data_lib
    from ..export import export_saved_model, save_keras
    from ..files import write_text
    from .callbacks import TensorBoardLogger

    trainer = Trainer(cfg, out, strategy=strategy)   # checks the data and neurons
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
        model, history, best_epoch = trainer.fit(resume=resume,
                                                 callbacks=[tb] if chief else [])
    except tf.errors.DataLossError as e:
        raise TfsacnnError(f"{cfg['data']['dir']}: a corrupt or truncated TFRecord shard "
                           f"({e.message.splitlines()[0]}); data.verify=true names it") from None
    finally:
        tb.close()
    metrics = report(model, trainer, best_epoch)
    if not chief:
        shutil.rmtree(out, ignore_errors=True)
        return None
    save_keras(model, out / "model.keras")
    export_saved_model(model, out / "saved_model")
    write_text(out / "metrics.csv", metrics_csv(metrics))
    write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    return metrics
