"""The run directory: its format, the guards on writing it, and metrics.json (one owner).

A run directory holds `config.yaml` (resolved), `metrics.json` and `metrics.csv`
(per-neuron and mean scores on each evaluated split, each neuron's best epoch),
`tensorboard/`, `model.keras`, `saved_model/` and `checkpoints/` (docs/internals.md).
"""
import csv
import hashlib
import io
import json
import os
import pathlib
import re
import sys
import time

from .errors import TfsacnnError
from .files import read_json, read_yaml, remove_stale, write_text


def check_run_dir(out, resume, overwrite):
    """Refuse an --out that must not be written or replaced; True: replace it (--overwrite)."""
    out = pathlib.Path(out)
    if out.exists() and not out.is_dir():
        raise TfsacnnError(f"{out}: is a file, not a run directory")
    if (out / "manifest.json").exists():
        raise TfsacnnError(f"{out}: is a dataset (manifest.json), not a run directory; --out "
                           f"names the run to write")
    if resume and overwrite:
        raise TfsacnnError(f"{out}: resume and overwrite contradict each other; nothing was "
                           f"changed")
    if resume:
        if not (out / "config.yaml").exists():
            raise TfsacnnError(f"{out}: nothing to resume (no config.yaml)")
        return False
    if not out.exists() or not any(c.name != LOCK for c in out.iterdir()):
        return False
    if not any((out / f).exists() for f in ("config.yaml", "metrics.json", "checkpoints")):
        raise TfsacnnError(f"{out}: not empty and not a run directory; refusing to write into "
                           f"or delete it (use another --out)")
    if (out / "metrics.json").exists() and not overwrite:
        raise TfsacnnError(f"{out}: a finished run is already there (use --overwrite, "
                           f"or another --out)")
    if (out / "model.keras").exists() and not overwrite:
        raise TfsacnnError(f"{out}: a run is already there (use --overwrite, or another --out)")
    if (out / "checkpoints").exists() and not overwrite:
        raise TfsacnnError(f"{out}: an unfinished run is there (use --resume to continue "
                           f"it, or --overwrite)")
    return overwrite


def run_file(run_dir, name, error=TfsacnnError, hint=""):
    """RUN/name as a Path; `error` (one line) if RUN is no directory or the file is missing."""
    run = pathlib.Path(run_dir)
    if not run.is_dir():
        raise error(f"{run}: no such run directory")
    path = run / name
    if not path.is_file():
        raise error(f"{path}: not found{hint}")
    return path


LOCK = ".tfsacnn.lock"


class RunLock:
    """Exclusive lock on a run directory while one process writes it (`flock`).

    Every command that writes into a run (fit, evaluate --save, export, analyze and
    insilico into the run, import-torch --overwrite) holds it; a second writer is refused
    with one line naming the holder. The kernel drops the lock when its process ends,
    however it ends, so a killed run never blocks a later `--resume`. The (empty) lock
    file stays in the run directory. Once locked, the temporaries a killed writer left in
    the run (and its checkpoints/) are deleted.
    """

    def __init__(self, run_dir):
        self.path = pathlib.Path(run_dir) / LOCK
        self.fd = None

    def __enter__(self):
        import fcntl
        import os

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise TfsacnnError(f"{self.path.parent}: is being written by {holder}; wait for "
                               f"it, or use another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()}".encode())
        self.fd = fd
        for d in (self.path.parent, self.path.parent / "checkpoints"):
            remove_stale(d)
        pause("locked", self.path.parent)
        return self

    def __exit__(self, *exc):
        import os

        os.ftruncate(self.fd, 0)   # the file stays: deleting it would let a process that
        os.close(self.fd)          # opened it just before lock a file no one else sees
        self.fd = None


def clear(run_dir):
    """Delete a run directory's contents (its lock aside): `--overwrite` of a run."""
    import shutil

    for child in pathlib.Path(run_dir).iterdir():
        if child.name == LOCK:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


_pause_hook = None     # tests: a function(point, run_dir) called at each pause point


def pause(point, run_dir):
    """Test hook at a point of a writer ("before-lock", "locked"): calls `_pause_hook`, or
    with TFSACNN_TEST_PAUSE=<point>:<DIR> creates DIR/<point>.reached and waits (60 s at
    most) until DIR/<point>.go exists. Does nothing otherwise."""
    if _pause_hook is not None:
        _pause_hook(point, pathlib.Path(run_dir))
        return
    spec = os.environ.get("TFSACNN_TEST_PAUSE", "")
    name, _, folder = spec.partition(":")
    if name != point or not folder:
        return
    folder = pathlib.Path(folder)
    (folder / f"{point}.reached").write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not (folder / f"{point}.go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def manifest_sha256(data_dir):
    """Hex sha256 of DIR/manifest.json: the identity of a dataset (it lists every shard's
    sha256)."""
    return hashlib.sha256((pathlib.Path(data_dir) / "manifest.json").read_bytes()).hexdigest()


def recorded_data(run):
    """(data dir, manifest sha256) that RUN records (config.yaml's `data`, else
    metrics.json's); None for what it does not record."""
    run = pathlib.Path(run)
    found = {"dir": None, "manifest_sha256": None}
    for name, read in (("config.yaml", read_yaml), ("metrics.json", read_json)):
        if not (run / name).is_file():
            continue
        entry = read(run / name).get("data")
        if isinstance(entry, dict):
            for key in found:
                if found[key] is None and isinstance(entry.get(key), str):
                    found[key] = entry[key]
    return found["dir"], found["manifest_sha256"]


def _same_path(a, b):
    return pathlib.Path(a).resolve() == pathlib.Path(b).resolve()


def check_data(run, data=None, note=None):
    """The dataset a command on RUN uses, checked against the one the run was trained on.

    `data`: the --data a user gave (None: the run's own). Returns (data dir, same): `same`
    is False only for another dataset named explicitly (its scores are not the run's:
    `metrics_file`). Refuses (one line) when the run's own dataset has changed since (its
    manifest sha256 differs from the recorded one). A run that records no sha256 (made
    before it was recorded) is accepted with a note (`note`, default stderr).
    """
    run = pathlib.Path(run)
    rec_dir, rec_sha = recorded_data(run)
    explicit = data is not None and rec_dir is not None and not _same_path(data, rec_dir)
    if data is None:
        data = rec_dir
    if data is None or not (pathlib.Path(data) / "manifest.json").is_file():
        return data, True                  # the caller names the missing dataset
    if rec_sha is None:
        if rec_dir is not None and not explicit:
            (note or _note)(f"note: {run}: records no manifest sha256 (a run made before it "
                            f"was recorded); not checked that {data} is the data it was "
                            f"trained on")
        return data, not explicit
    current = manifest_sha256(data)
    if current == rec_sha:
        return data, True
    if explicit:
        return data, False
    raise TfsacnnError(f"{pathlib.Path(data) / 'manifest.json'}: the dataset has changed since "
                       f"{run} was trained on it (sha256 {current[:12]}, the run records "
                       f"{rec_sha[:12]}); restore that data, or pass --data DIR to name another "
                       f"dataset (scored separately)")


def metrics_file(run, data, same):
    """RUN/metrics.json for the run's own dataset, RUN/metrics_<dataset name>.json for
    another one (never metrics.json)."""
    if same:
        return pathlib.Path(run) / "metrics.json"
    return pathlib.Path(run) / f"metrics_{dataset_name(data)}.json"


def dataset_name(data):
    """A dataset directory's name, safe in a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", pathlib.Path(data).resolve().name) or "data"


def _note(line):
    print(line, file=sys.stderr)


def epochs_done(history):
    """The last epoch in a history (a list of epoch records, or one list per chunk)."""
    epochs = [r["epoch"] for h in history for r in (h if isinstance(h, list) else [h])
              if isinstance(r, dict) and "epoch" in r]
    return max(epochs, default=0)


def report(model, trainer, best_epoch):
    """Metrics of the best-epoch model on every report split present: metrics.json dict."""
    from . import data as data_lib
    from .evaluation import metrics as metrics_lib

    cfg = trainer.cfg
    out = {
        "model": cfg.model.name, "core": cfg.model.core,
        "trainable_params_per_neuron": trainable_per_neuron(model),
        "neurons": trainer.neurons,
        "neuron_ids": [trainer.manifest["neuron_ids"][i] for i in trainer.neurons],
        "data": {"dir": str(cfg.data.dir), "manifest_sha256": manifest_sha256(cfg.data.dir)},
        "selection_split": cfg.eval.selection_split,
        "best_epoch": [int(e) for e in best_epoch],
        "splits": {},
    }
    if getattr(trainer, "stopped_early", None):
        out["stopped_early"] = trainer.stopped_early
    for split in cfg.eval.report_splits:
        if split not in trainer.splits:
            continue
        x, y, reps = data_lib.load_numpy(cfg.data.dir, split, neurons=trainer.neurons,
                                         verify=False, with_repeats=True)
        pred = trainer.predict(model, x)
        scores = metrics_lib.evaluate(y, pred, top_k=cfg.eval.top_k, repeats=reps)
        out["splits"][split] = split_entry(scores, len(y))
    return out


def split_entry(scores, n_images):
    import numpy as np

    from .evaluation import metrics as metrics_lib

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
    from .evaluation.metrics import REPORTED

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


def save_metrics(run, entries, info, path=None, **fields):
    """Add `entries` ({split: entry}) to the splits of `path` (default RUN/metrics.json;
    created if absent, or if it scores another dataset than `info["data"]`) and set its
    top-level `fields`, in one write (temporary file, then rename)."""
    import keras

    run = pathlib.Path(run)
    path = pathlib.Path(path) if path is not None else run / "metrics.json"
    metrics = read_json(path) if path.exists() else None
    if (metrics is not None and path.name != "metrics.json"
            and (metrics.get("data") or {}).get("manifest_sha256")
            != manifest_sha256(info["data"])):
        metrics = None                  # that dataset was rebuilt: its old scores go
    if metrics is None:
        cfg = read_yaml(run / "config.yaml")
        model = keras.saving.load_model(run / "model.keras", compile=False)
        metrics = {
            "model": cfg.get("model", {}).get("name", model.name),
            "core": cfg.get("model", {}).get("core", "independent"),
            "trainable_params_per_neuron": trainable_per_neuron(model),
            "neurons": info["neurons"],
            "neuron_ids": [info["manifest"]["neuron_ids"][i] for i in info["neurons"]],
            "data": {"dir": str(pathlib.Path(info["data"]).resolve()),
                     "manifest_sha256": manifest_sha256(info["data"])},
            "selection_split": None, "best_epoch": [None] * len(info["neurons"]),
            "splits": {},
        }
    if not isinstance(metrics.get("splits"), dict):
        raise TfsacnnError(f"{path}: has no 'splits' mapping")
    metrics["splits"].update(entries)
    metrics.update(fields)
    write_text(path, json.dumps(metrics, indent=1))
