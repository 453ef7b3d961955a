"""Per-epoch TensorBoard logging: losses, mean CORR/PT_J/PT_S (and TOP / peak height,
the two parts of PT), a histogram of per-neuron CORR, rank-ordered tuning curves, and the
config in the hparams plugin.

Tags: `loss/train`, `loss/val`, `val/corr`, `val/pt_j`, `val/pt_s`, `val/top_overlap`,
`val/peak_height`, `val/corr_per_neuron` (histogram), `val/tuning_curves` (image).
"""
import pathlib

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from ..evaluation.metrics import REPORTED

TAGS = ("loss/train", "loss/val", *(f"val/{k}" for k in REPORTED), "val/corr_per_neuron",
        "val/tuning_curves")


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


class TensorBoardLogger:
    """Callable per epoch by `training.Trainer`; one event directory per neuron chunk."""

    def __init__(self, logdir, cfg, n_curves=4):
        self.logdir = pathlib.Path(logdir)
        self.cfg = cfg
        self.n_curves = n_curves
        self.writers = {}

    def writer(self, tag):
        if tag not in self.writers:
            sub = tag.replace(" ", "_").replace(".", "") if tag else ""
            w = tf.summary.create_file_writer(str(self.logdir / sub))
            with w.as_default():
                hp.hparams(flatten(self.cfg), trial_id=self.cfg["model"]["name"])
            self.writers[tag] = w
        return self.writers[tag]

    def __call__(self, epoch, record, scores, y_true, y_pred, neurons, tag=""):
        from ..evaluation.plots import figure_to_png, png_to_tf_image, tuning_curve_figure

        with self.writer(tag).as_default(step=epoch):
            tf.summary.scalar("loss/train", record["loss"])
            tf.summary.scalar("loss/val", record["val_loss"])
            for k in REPORTED:
                tf.summary.scalar(f"val/{k}", record[f"val_{k}"])
            corr = scores["corr"][np.isfinite(scores["corr"])]
            tf.summary.histogram("val/corr_per_neuron", corr)
            if self.n_curves:
                fig = tuning_curve_figure(y_true, y_pred, [str(i) for i in neurons],
                                          max_neurons=self.n_curves, population=True)
                tf.summary.image("val/tuning_curves", png_to_tf_image(figure_to_png(fig)))
        self.writer(tag).flush()

    def close(self):
        for w in self.writers.values():
            w.close()
