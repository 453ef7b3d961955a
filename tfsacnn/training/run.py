"""Train a resolved config into a run directory: the library's `fit` (the CLI's core).

`train(cfg, out)` checks the run directory, the data and the neurons, locks the run,
trains with `Trainer`, then writes config.yaml, metrics.json / metrics.csv, model.keras,
saved_model/ (TensorFlow only; `python -m tfsacnn.export` writes it later for a JAX run)
and tensorboard/ (see `tfsacnn.runs`). Studies call this, not the CLI.
"""
import contextlib
import json
import os
import pathlib
import shutil
import sys

from .. import config as config_lib
from .. import data as data_lib
from ..data.records import check_first_records
from ..errors import DataError, TfsacnnError
from ..export import save_keras
from .. import runs
from ..files import remove_dir, sha256, write_text
from ..runs import RunLock, check_run_dir, clear, epochs_done, metrics_csv, report
from .callbacks import TensorBoardLogger
from .strategy import backend, is_chief, make_strategy
from .trainer import Trainer


def train(cfg, out, *, resume=False, overwrite=False, quiet=False):
    """Train `cfg` (a dict from `tfsacnn.config.load`) into run directory `out`.

    `resume`: continue `out` from its last checkpoint (on the same data: its manifest
    sha256 must be the one the run records); `overwrite`: replace a run there;
    `quiet`: no progress bars or epoch lines.
    Returns the metrics.json dict (None on a non-chief worker of a multi-worker run).
    """
    typed = config_lib.Config.from_dict(cfg)
    cfg = typed.to_dict()
    out = pathlib.Path(out)
    init = typed.train.init_from
    if init and pathlib.Path(init).resolve() == out.resolve():
        raise TfsacnnError(f"{out}: train.init_from names the run being written (it would be "
                           f"replaced before it is read); write the new run to another --out")
    strategy = make_strategy(typed.train.strategy)
    chief = is_chief(strategy)
    if chief:
        check_run_dir(out, resume, overwrite)
    else:  # other workers write their (identical) state to a scratch directory
        out = pathlib.Path(f"{out}.worker-tmp-{os.getpid()}")
    sha = runs.manifest_sha256(typed.data.dir) if typed.data.dir else None
    if resume and chief:
        _check_resume_data(out, typed, sha, quiet)
    cfg["data"]["manifest_sha256"] = sha
    cfg["train"]["epochs_trained"] = None
    trainer = Trainer(typed, out, strategy=strategy, quiet=quiet)  # checks data and neurons
    if "train" not in trainer.splits:
        raise DataError(f"{typed.data.dir}: the train split has no images; nothing to train on")
    m = trainer.manifest
    for split in trainer.splits:  # before any work: with data.verify, sha256 and record
        files = data_lib.shard_files(pathlib.Path(typed.data.dir),   # counts of every shard;
                                     m["splits"][split], verify=typed.data.verify)
        check_first_records(files, m["image_size"], m["n_neurons"])   # feature kinds
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        out.mkdir()
        created = True       # by this process: the only directory it may delete on failure
    except FileExistsError:
        created = False
    runs.pause("before-lock", out)
    lock = RunLock(out) if chief else contextlib.nullcontext()
    with lock:               # refused: nothing deleted (the winner may have written there)
        if chief and check_run_dir(out, resume, overwrite):  # again, now that it is ours
            clear(out)
        try:
            return _train_locked(trainer, typed, cfg, out, resume, chief, quiet)
        except BaseException:  # a refusal, a bug or Ctrl-C
            if created and chief and not (out / "checkpoints").exists():
                shutil.rmtree(out, ignore_errors=True)  # made here, and no epoch was saved
            raise


def _check_resume_data(out, typed, sha, quiet):
    """Refuse --resume on data other than the run's (a dataset rebuilt in place)."""
    recorded = typed.data.manifest_sha256
    if recorded is None:
        _, recorded = runs.recorded_data(out)      # metrics.json of an older run
    if recorded is None:
        if not quiet:
            print(f"note: {out}: records no manifest sha256 (a run made before it was "
                  f"recorded); not checked that {typed.data.dir} is the data it was "
                  f"trained on", file=sys.stderr)
    elif sha != recorded:
        raise TfsacnnError(f"{typed.data.dir}/manifest.json: the dataset has changed since "
                           f"{out} was trained on it (sha256 {sha[:12]}, the run records "
                           f"{recorded[:12]}); --resume continues only on the same data "
                           f"(restore it, or use --overwrite to start again)")


def _train_locked(trainer, typed, cfg, out, resume, chief, quiet):
    if chief:
        config_lib.dump(cfg, out / "config.yaml")
    tb = TensorBoardLogger(out / "tensorboard", cfg, typed.eval.tuning_curve_neurons)
    say = (lambda *a, **k: None) if quiet else print
    say(f"training {typed.model.name} ({typed.model.core} core) on "
          f"{len(trainer.neurons)} neurons of {typed.data.dir} with "
          f"{trainer.strategy.num_replicas_in_sync} replica(s), {backend()} backend; "
          f"run dir {out}", flush=True)
    try:
        model, history, best_epoch = trainer.fit(resume=resume,
                                                 callbacks=[tb] if chief else [])
    except Exception as e:
        if type(e).__name__ == "DataLossError":          # tf.errors.DataLossError
            raise TfsacnnError(f"{typed.data.dir}: a corrupt or truncated TFRecord shard "
                               f"({e.message.splitlines()[0]}); data.verify=true names it"
                               ) from None
        raise
    finally:
        tb.close()
    metrics = report(model, trainer, best_epoch)
    if not chief:
        shutil.rmtree(out, ignore_errors=True)
        return None
    save_keras(model, out / "model.keras")
    if backend() == "tensorflow":
        from ..export import export_saved_model

        export_saved_model(model, out / "saved_model", preprocessing=trainer.manifest,
                           stamp=sha256(out / "model.keras"))
    elif (out / "saved_model").exists():        # exported from the model.keras replaced
        remove_dir(out / "saved_model")
        say(f"removed {out / 'saved_model'}: it was exported from the previous model.keras "
            f"(`tfsacnn export --run {out}` writes it again, with TensorFlow)")
    cfg["train"]["epochs_trained"] = epochs_done(history)
    config_lib.dump(cfg, out / "config.yaml")  # states what was trained
    write_text(out / "metrics.csv", metrics_csv(metrics))
    write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    return metrics
