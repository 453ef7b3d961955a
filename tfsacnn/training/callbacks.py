"""The trainer's side jobs as Keras callbacks (`keras.callbacks.Callback` hooks).

`Trainer` calls `on_train_begin`, `on_epoch_begin`, `on_train_batch_end(batch, logs)`
(`logs["loss"]`: mean over neurons) and `on_epoch_end(epoch, logs)` (`logs`: the epoch's
record) on each, in order. A callback reads the trainer's state through `self.trainer`:
`model`, `optimizer`, `best`, `history`, `checkpoint_path`, `tag`, and after each epoch
`evaluation` (`scores`, `y_true`, `y_pred`, `neurons` on the selection split).

- `BestWeights`: each neuron keeps the weights of its best epoch by selection CORR.
- `Checkpoint`: named variables, optimizer, best weights and history every N epochs.
- `NaNGuard`: stops with one line when the loss becomes NaN or inf (as `TerminateOnNaN`).
- `ProgressBar`, `EpochLog`: progress within an epoch; one line per epoch.
- `TensorBoardLogger`: event files written without TensorFlow (the `tensorboard`
  package's protos), so the same under both backends.

TensorBoard tags: `loss/train`, `loss/val`, `val/corr`, `val/pt_j`, `val/pt_s`,
`val/top_overlap`, `val/peak_height`, `val/corr_per_neuron` (histogram),
`val/tuning_curves` (image); the config in the hparams plugin.
"""
import pathlib
import time

import keras
import numpy as np

from ..errors import TfsacnnError
from ..evaluation.metrics import REPORTED
from ..progress import progress_bar
from . import checkpoint

TAGS = ("loss/train", "loss/val", *(f"val/{k}" for k in REPORTED), "val/corr_per_neuron",
        "val/tuning_curves")


class NaNLossError(TfsacnnError):
    """The loss became NaN or inf."""


class Callback(keras.callbacks.Callback):
    """A Keras callback that also sees the `Trainer` driving it (`self.trainer`)."""

    trainer = None

    def set_trainer(self, trainer):
        self.trainer = trainer
        self.set_model(trainer.model)


def _mean(scores):
    finite = scores[np.isfinite(scores)]
    return finite.mean() if len(finite) else -np.inf


class BestWeights(Callback):
    """Per-neuron best-epoch bookkeeping: numpy copies of every model variable.

    Independent core: neuron i keeps its slice of every per-neuron variable from its best
    epoch by selection CORR. Shared core: the whole model moves together, judged by the
    mean CORR. `restore()` writes the kept weights back into the model.
    """

    def __init__(self, independent):
        super().__init__()
        self.independent = independent

    def on_train_begin(self, logs=None):
        from .. import models

        model = self.trainer.model
        self.n = model.output_shape[-1]
        self.values = [np.array(v.numpy()) for v in model.variables]
        self.score = np.full(self.n, -np.inf)
        self.epoch = np.zeros(self.n, dtype=int)
        axis_of = {}
        for layer in model.layers:
            for v in layer.variables:
                axis_of[id(v)] = models.neuron_axis(layer, models.var_name(layer, v))
        self.axes = [axis_of.get(id(v)) for v in model.variables]

    def on_epoch_end(self, epoch, logs=None):
        logs["improved"] = self.update(self.trainer.evaluation["scores"]["corr"], epoch)

    def update(self, scores, epoch):
        """Keep the current weights of every neuron whose score improved. Returns count."""
        scores = np.where(np.isnan(scores), -np.inf, scores)
        if self.independent:
            better = scores > self.score
        else:
            better = np.full(self.n, _mean(scores) > _mean(self.score))
        idx = np.flatnonzero(better)
        if not len(idx):
            return 0
        for k, v in enumerate(self.trainer.model.variables):
            axis = self.axes[k] if self.independent else None
            if axis is None:
                if better.all():
                    self.values[k] = np.array(v.numpy())
                continue
            cur = np.moveaxis(v.numpy(), axis, 0)
            size = cur.shape[0] // self.n
            rows = (idx[:, None] * size + np.arange(size)).ravel()
            np.moveaxis(self.values[k], axis, 0)[rows] = cur[rows]
        self.score[idx] = scores[idx]
        self.epoch[idx] = epoch
        return len(idx)

    def restore(self):
        for v, value in zip(self.trainer.model.variables, self.values):
            v.assign(value)


class Checkpoint(Callback):
    """`checkpoint.save` every `every` epochs and at the last one (chief only)."""

    def __init__(self, every, epochs, best):
        super().__init__()
        self.every, self.epochs, self.best = every, epochs, best

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every == 0 or epoch == self.epochs:
            t = self.trainer
            checkpoint.save(t.checkpoint_path, t.model, t.optimizer, self.best, epoch,
                            t.history)


class NaNGuard(Callback):
    """Stop at the first NaN or inf loss, naming the epoch, step and the kept checkpoint."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = logs["loss"]
        if not np.isfinite(loss):
            path = self.trainer.checkpoint_path
            kept = (f"the last good checkpoint is kept in {path}" if path.exists()
                    else "no checkpoint was written yet")
            raise NaNLossError(f"loss is {loss} at epoch {self.epoch} step {batch + 1}; "
                               f"{kept}")


class ProgressBar(Callback):
    """A tqdm bar per epoch with the running loss and neuron-images/s."""

    def __init__(self, steps, epochs, batch_size, disable=False):
        super().__init__()
        self.steps, self.epochs, self.batch_size, self.disable = (
            steps, epochs, batch_size, disable)

    def on_epoch_begin(self, epoch, logs=None):
        desc = f"epoch {epoch}/{self.epochs} {self.trainer.tag}".strip()
        self.bar = progress_bar(total=self.steps, desc=desc, disable=self.disable)
        self.t0, self.losses = time.perf_counter(), []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(logs["loss"])
        n = len(self.trainer.neurons)
        rate = len(self.losses) * self.batch_size * n / (time.perf_counter() - self.t0)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{np.mean(self.losses):.4f}", neuron_img_s=f"{rate:.0f}",
                             refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        self.bar.close()

    def on_train_end(self, logs=None):
        bar = getattr(self, "bar", None)
        if bar is not None:
            bar.close()


class EpochLog(Callback):
    """One line per epoch: losses, mean CORR, PT_J and PT_S (%), neurons improved."""

    def __init__(self, epochs, log=print):
        super().__init__()
        self.epochs, self.log = epochs, log

    def on_epoch_end(self, epoch, logs=None):
        r, n = logs, len(self.trainer.neurons)
        self.log(f"epoch {epoch}/{self.epochs} {self.trainer.tag} loss {r['loss']:.4f} "
                 f"val_loss {r['val_loss']:.4f} corr {r['val_corr']:.3f} "
                 f"PT_J {100 * r['val_pt_j']:.1f}% PT_S {100 * r['val_pt_s']:.1f}% "
                 f"best-updated {r['improved']}/{n} ({r['seconds']:.1f}s)".replace("  ", " "))


def flatten(cfg, prefix=""):
    """Nested config -> {"train.epochs": 50, ...} with scalar values (lists as text)."""
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


class EventWriter:
    """TensorBoard event files without TensorFlow: `Event` protos from the `tensorboard`
    package, framed as TFRecords by `tfsacnn.data.records.frame`.

    `scalar(tag, value, step)`, `histogram(tag, values, step)`, `image(tag, png, step,
    description="")` (PNG bytes), `hparams(flat_config, trial_id)`.
    """

    def __init__(self, logdir):
        import os
        import socket

        from tensorboard.compat.proto import event_pb2

        logdir = pathlib.Path(logdir)
        logdir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.0f}.{socket.gethostname()}.{os.getpid()}"
        self.file = open(logdir / name, "ab")
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event):
        from ..data.records import frame

        self.file.write(frame(event.SerializeToString()))

    def _add(self, summary, step):
        from tensorboard.compat.proto import event_pb2

        self._write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def scalar(self, tag, value, step):
        from tensorboard.plugins.scalar.summary_v2 import scalar_pb

        self._add(scalar_pb(tag, float(value)), step)

    def histogram(self, tag, values, step):
        from tensorboard.plugins.histogram.summary_v2 import histogram_pb

        self._add(histogram_pb(tag, np.asarray(values, np.float64)), step)

    def image(self, tag, png, step, description=""):
        from PIL import Image
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.plugins.image import metadata
        from tensorboard.util import tensor_util

        import io

        with Image.open(io.BytesIO(png)) as im:
            width, height = im.size
        tensor = tensor_util.make_tensor_proto(
            np.array([str(width).encode(), str(height).encode(), png], dtype=object))
        value = summary_pb2.Summary.Value(
            tag=tag, tensor=tensor, metadata=metadata.create_summary_metadata(
                display_name=tag, description=description, converted_to_tensor=True))
        self._add(summary_pb2.Summary(value=[value]), step)

    def hparams(self, config, trial_id):
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb

        self._add(hparams_pb(config, trial_id=trial_id), 0)

    def flush(self):
        self.file.flush()

    def close(self):
        self.file.close()


class TensorBoardLogger(Callback):
    """Per-epoch TensorBoard logging; one event directory per neuron chunk (`tag`)."""

    def __init__(self, logdir, cfg, n_curves=4):
        super().__init__()
        self.logdir = pathlib.Path(logdir)
        self.cfg = cfg
        self.n_curves = n_curves
        self.writers = {}

    def writer(self, tag):
        if tag not in self.writers:
            sub = tag.replace(" ", "_").replace(".", "") if tag else ""
            w = EventWriter(self.logdir / sub)
            w.hparams(flatten(self.cfg), trial_id=self.cfg["model"]["name"])
            self.writers[tag] = w
        return self.writers[tag]

    def on_epoch_end(self, epoch, logs=None):
        from ..evaluation.plots import figure_to_png, tuning_curve_figure

        ev, w = self.trainer.evaluation, self.writer(self.trainer.tag)
        w.scalar("loss/train", logs["loss"], epoch)
        w.scalar("loss/val", logs["val_loss"], epoch)
        for k in REPORTED:
            w.scalar(f"val/{k}", logs[f"val_{k}"], epoch)
        corr = ev["scores"]["corr"]
        w.histogram("val/corr_per_neuron", corr[np.isfinite(corr)], epoch)
        if self.n_curves:
            fig = tuning_curve_figure(ev["y_true"], ev["y_pred"],
                                      [str(i) for i in ev["neurons"]],
                                      max_neurons=self.n_curves, population=True)
            w.image("val/tuning_curves", figure_to_png(fig), epoch)
        w.flush()

    def close(self):
        for w in self.writers.values():
            w.close()
