"""Strategy-aware trainer with the paper's protocol.

- Adam 1e-3, MSE, batch 50, 50 epochs by default (`tfsacnn.config`); Adam's epsilon is
  PyTorch's 1e-8 (the paper's code), not Keras' 1e-7.
- The loss is the per-neuron MSE summed over neurons, so every neuron's network gets
  exactly the gradient it would get if it were trained alone (the paper fits one network
  per neuron). Logs show the mean over neurons.
- After every epoch: validation CORR / PT_J / PT_S; each neuron keeps the weights of its
  best epoch by validation CORR (independent core; a shared core keeps the best epoch by
  mean CORR, since its neurons share weights).
- One custom loop (`strategy.run`) for every strategy: Keras 3 `fit` fails under
  MultiWorkerMirroredStrategy (keras-team/keras#20585).
- A checkpoint after every epoch holds weights, optimizer, epoch, best-epoch bookkeeping and
  the dropout RNG state; `resume=True` continues bit-for-bit.
"""
import json
import os
import pathlib
import time
import zipfile

import keras
import numpy as np
import tensorflow as tf

from .. import data as data_lib
from ..evaluation import metrics as metrics_lib
from .. import models
from ..errors import TfsacnnError
from ..progress import progress_bar


ADAM_EPSILON = 1e-8       # PyTorch's default, as in the paper's code (Keras' default is 1e-7)
DEFAULT_CPU_CHUNK = 64


class NaNLossError(TfsacnnError):
    """The loss became NaN or inf."""


def make_strategy(name):
    """`auto` picks multiworker when TF_CONFIG is set, mirrored with several GPUs, else default."""
    if name == "auto":
        if os.environ.get("TF_CONFIG"):
            name = "multiworker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}")


def is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


# ------------------------------------------------------------------------ freezing


def apply_freeze(model, entries, frozen_bn="update_stats"):
    """Freeze blocks (`alpha_cpb1`) or single variables (`readout.center_kernel`).

    `frozen_bn="update_stats"` (the paper's code): frozen BatchNorm layers keep updating
    their running statistics in training, only gamma/beta stop learning.
    `"inference"` (the Keras convention): frozen BatchNorm layers run on their running
    statistics and never update them.
    Returns the names of the frozen variables.
    """
    frozen = []
    for entry in entries:
        layer_part, _, var_part = entry.partition(".")
        matched = False
        for layer in model.layers:
            if var_part:
                if layer.name != layer_part:
                    continue
            elif models.block_of(layer.name) != layer_part:
                continue
            for v in layer.weights:
                name = v.path.split("/")[-1]
                if var_part and name != var_part:
                    continue
                v.trainable = False
                frozen.append(f"{layer.name}.{name}")
                matched = True
            if not var_part and frozen_bn == "inference" and isinstance(
                    layer, keras.layers.BatchNormalization):
                layer.trainable = False
        if not matched:
            raise TfsacnnError(f"freeze: {entry!r} matches no weights of {model.name}")
    return frozen


def init_from_run(model, run_dir, blocks=None):
    """Copy weights from `run_dir/model.keras` into `model`, layer by layer, by name.

    Only variables with the same layer name, variable name and shape are copied (a CTL's
    `center_kernel` becomes an FC1's centre branch). `blocks`: restrict to these blocks.
    Returns the copied `layer.variable` names.
    """
    src = keras.saving.load_model(pathlib.Path(run_dir) / "model.keras", compile=False)
    if src.output_shape[-1] != model.output_shape[-1]:
        raise TfsacnnError(f"{run_dir}: has {src.output_shape[-1]} neurons, this run "
                           f"{model.output_shape[-1]}")
    copied = []
    for layer in model.layers:
        if blocks is not None and models.block_of(layer.name) not in blocks:
            continue
        try:
            other = src.get_layer(layer.name)
        except ValueError:
            continue
        theirs = {v.path.split("/")[-1]: v for v in other.weights}
        for v in layer.weights:
            name = v.path.split("/")[-1]
            if name in theirs and tuple(theirs[name].shape) == tuple(v.shape):
                v.assign(theirs[name].numpy())
                copied.append(f"{layer.name}.{name}")
    if not copied:
        raise TfsacnnError(f"{run_dir}: no weights fit {model.name}")
    return copied


# ----------------------------------------------------------------------- best epoch


class BestWeights:
    """Per-neuron best-epoch bookkeeping: numpy copies of every model variable."""

    def __init__(self, model, independent):
        self.model = model
        self.independent = independent
        self.n = model.output_shape[-1]
        self.values = [np.array(v.numpy()) for v in model.variables]
        self.score = np.full(self.n, -np.inf)
        self.epoch = np.zeros(self.n, dtype=int)
        self._axes = self._neuron_axes()

    def _neuron_axes(self):
        axes = []
        for layer in self.model.layers:
            for v in layer.variables:
                axes.append(models.neuron_axis(layer, v.path.split("/")[-1]))
        by_path = dict(zip([v.path for layer in self.model.layers for v in layer.variables],
                           axes))
        return [by_path.get(v.path) for v in self.model.variables]

    def update(self, scores, epoch):
        """Keep the current weights of every neuron whose score improved. Returns count."""
        scores = np.where(np.isnan(scores), -np.inf, scores)
        if self.independent:
            better = scores > self.score
        else:  # shared weights: the whole model moves together, judged by mean score
            better = np.full(self.n, _mean(scores) > _mean(self.score))
        idx = np.flatnonzero(better)
        if not len(idx):
            return 0
        for k, v in enumerate(self.model.variables):
            axis = self._axes[k] if self.independent else None
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
        for v, value in zip(self.model.variables, self.values):
            v.assign(value)


# ------------------------------------------------------------------------- trainer


def _mean(scores):
    finite = scores[np.isfinite(scores)]
    return finite.mean() if len(finite) else -np.inf


class Trainer:
    """Trains one model on one dataset; see the module docstring."""

    def __init__(self, cfg, run_dir, strategy=None, log=print):
        self.cfg = cfg
        self.run_dir = pathlib.Path(run_dir)
        self.strategy = strategy or make_strategy(cfg["train"]["strategy"])
        self.chief = is_chief(self.strategy)
        self.log = log if self.chief else (lambda *a, **k: None)
        self.data_dir = cfg["data"]["dir"]
        self.manifest = data_lib.read_manifest(self.data_dir)
        self.neurons = data_lib.parse_neurons(cfg["data"]["neurons"],
                                              self.manifest["n_neurons"])
        self.splits = {s for s, info in self.manifest["splits"].items() if info["count"]}
        sel = cfg["eval"]["selection_split"]
        if sel not in self.splits:
            raise TfsacnnError(f"{self.data_dir}: has no {sel!r} split for epoch selection")
        top_k = cfg["eval"]["top_k"]
        for s in dict.fromkeys([sel, *cfg["eval"]["report_splits"]]):
            count = self.manifest["splits"].get(s, {}).get("count", 0)
            if 0 < count < top_k:
                raise TfsacnnError(f"{self.data_dir}: the {s} split has {count} images, fewer "
                                   f"than eval.top_k={top_k} (PT needs top_k images)")
        self.ckpt_path = self.run_dir / "checkpoints" / "last.npz"

    # ----------------------------------------------------------------- building

    def build_model(self, n_neurons, load_init=True):
        """The configured model; `load_init`: copy `train.init_from` weights into it."""
        m, t = self.cfg["model"], self.cfg["train"]
        overrides = dict(m["overrides"])
        overrides.setdefault("seed", t["seed"])
        if self.strategy.num_replicas_in_sync > 1:
            overrides.setdefault("synchronized_bn", True)
        model = models.build(m["name"], n_neurons=n_neurons, core=m["core"], **overrides)
        if t["init_from"] and load_init:
            copied = init_from_run(model, t["init_from"], t["init_blocks"])
            self.log(f"init_from {t['init_from']}: {len(copied)} variables loaded")
        frozen = apply_freeze(model, t["freeze"], t["frozen_bn"])
        if frozen:
            self.log(f"frozen: {len(frozen)} variables ({', '.join(t['freeze'])}), "
                     f"BatchNorm mode {t['frozen_bn']}")
        return model

    def make_optimizer(self):
        t = self.cfg["train"]
        kind = keras.optimizers.AdamW if t["optimizer"] == "adamw" else keras.optimizers.Adam
        extra = {"weight_decay": t["weight_decay"]} if t["optimizer"] == "adamw" else {}
        return kind(t["learning_rate"], epsilon=ADAM_EPSILON, **extra)

    # ------------------------------------------------------------------ steps

    def _make_train_step(self, model, optimizer):
        strategy = self.strategy

        def replica_step(x, y):
            count = tf.cast(tf.shape(x)[0], tf.float32)
            total = tf.distribute.get_replica_context().all_reduce("sum", count)
            with tf.GradientTape() as tape:
                pred = model(x, training=True)
                # sum over neurons of the per-neuron mean squared error
                sq = tf.reduce_sum(tf.square(pred - y)) / total
            grads = tape.gradient(sq, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return sq

        @tf.function
        def step(batch):
            x, y = batch
            per_replica = strategy.run(replica_step, args=(x, y))
            return strategy.reduce("sum", per_replica, axis=None)

        return step

    def _make_predict(self, model):
        @tf.function(reduce_retracing=True)
        def predict(x):
            return model(x, training=False)
        return predict

    def predict(self, predict_fn, images):
        bs = self.cfg["eval"]["batch_size"]
        out = [np.asarray(predict_fn(tf.constant(images[i:i + bs])))
               for i in range(0, len(images), bs)]
        return np.concatenate(out, axis=0)

    def _train_dataset(self, epoch, neurons):
        t = self.cfg["train"]
        global_bs = t["batch_size"]

        def fn(ctx):
            return data_lib.load(self.data_dir, "train",
                                 ctx.get_per_replica_batch_size(global_bs), shuffle=True,
                                 seed=t["seed"] * 1000 + epoch, neurons=neurons,
                                 verify=False, input_context=ctx)
        return self.strategy.distribute_datasets_from_function(fn)

    # --------------------------------------------------------------- checkpoints

    def _save_checkpoint(self, model, optimizer, best, epoch, history):
        if not self.chief:
            return
        arrays = {f"model_{i}": np.asarray(v.numpy()) for i, v in enumerate(model.variables)}
        arrays.update({f"opt_{i}": np.asarray(v.numpy())
                       for i, v in enumerate(optimizer.variables)})
        arrays.update({f"best_{i}": a for i, a in enumerate(best.values)})
        arrays["best_score"] = best.score
        arrays["best_epoch"] = best.epoch
        arrays["epoch"] = np.array(epoch)
        arrays["history"] = np.frombuffer(json.dumps(history).encode(), dtype=np.uint8)
        self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt_path.with_name("last.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, self.ckpt_path)

    def _load_checkpoint(self, model, optimizer, best):
        try:
            return self._read_checkpoint(model, optimizer, best)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise TfsacnnError(f"{self.ckpt_path}: corrupt checkpoint ({e}); use --overwrite "
                               f"to start again") from None

    def _read_checkpoint(self, model, optimizer, best):
        with np.load(self.ckpt_path, allow_pickle=False) as z:
            for i, v in enumerate(model.variables):
                v.assign(z[f"model_{i}"])
            if not optimizer.built:
                optimizer.build(model.trainable_variables)
            for i, v in enumerate(optimizer.variables):
                v.assign(z[f"opt_{i}"])
            best.values = [z[f"best_{i}"] for i in range(len(best.values))]
            best.score = z["best_score"]
            best.epoch = z["best_epoch"]
            history = json.loads(bytes(z["history"]).decode())
            return int(z["epoch"]), history

    # --------------------------------------------------------------------- fit

    def fit(self, resume=False, callbacks=None):
        """Train all configured neurons; returns (model, history, best_epoch per neuron)."""
        chunk = self.neurons_per_step()
        independent = self.cfg["model"]["core"] == "independent"
        if chunk and independent and chunk < len(self.neurons):
            return self._fit_chunks(chunk, resume, callbacks)
        return self._fit_neurons(self.neurons, resume, callbacks, tag="")

    def neurons_per_step(self):
        """`train.neurons_per_step`, with null resolved: 64 on CPU (64 ff+sa-CNNs at
        batch 50 peak at ~3.7 GB, `python -m tfsacnn.bench train`), all on GPU; 0 = all."""
        chunk = self.cfg["train"]["neurons_per_step"]
        if chunk is None:
            chunk = 0 if tf.config.list_logical_devices("GPU") else DEFAULT_CPU_CHUNK
        return chunk or len(self.neurons)

    def _fit_chunks(self, chunk, resume, callbacks):
        """Independent neurons in chunks of `chunk`: memory bounded by the chunk size."""
        # The whole site's weights are small (activations are what chunks bound): build
        # them once, so every neuron starts from the same initial weights as in one pass.
        keras.utils.set_random_seed(self.cfg["train"]["seed"])
        with self.strategy.scope():
            full = self.build_model(len(self.neurons))
        history, best_epoch = [], []
        for start in range(0, len(self.neurons), chunk):
            part = self.neurons[start:start + chunk]
            tag = f"neurons {part[0]}..{part[-1]}"
            sub = Trainer.__new__(Trainer)
            sub.__dict__.update(self.__dict__)
            sub.ckpt_path = self.run_dir / "checkpoints" / f"chunk{start:05d}.npz"
            model, hist, best = sub._fit_neurons(part, resume, callbacks, tag=tag,
                                                 init=(full, start))
            for j in range(len(part)):
                models.set_neuron_weights(full, start + j, models.neuron_weights(model, j))
            history.append(hist)
            best_epoch.extend(best.tolist())
        return full, history, np.asarray(best_epoch)

    def _fit_neurons(self, neurons, resume, callbacks, tag, init=None):
        """Train `neurons`; `init=(full_model, start)` starts them from its neurons start..."""
        t, e = self.cfg["train"], self.cfg["eval"]
        keras.utils.set_random_seed(t["seed"])
        with self.strategy.scope():
            model = self.build_model(len(neurons), load_init=init is None)
            if init is not None:
                full, start = init
                for j in range(len(neurons)):
                    models.set_neuron_weights(model, j, models.neuron_weights(full, start + j))
            optimizer = self.make_optimizer()
            optimizer.build(model.trainable_variables)
        independent = self.cfg["model"]["core"] == "independent"
        best = BestWeights(model, independent)
        step = self._make_train_step(model, optimizer)
        predict_fn = self._make_predict(model)
        sel = e["selection_split"]
        x_sel, y_sel = data_lib.load_numpy(self.data_dir, sel, neurons=neurons, verify=False)
        n_train = self.manifest["splits"]["train"]["count"]
        steps = -(-n_train // t["batch_size"])
        start_epoch, history = 0, []
        if resume and self.ckpt_path.exists():
            start_epoch, history = self._load_checkpoint(model, optimizer, best)
            self.log(f"resumed {tag or 'run'} after epoch {start_epoch}")
        for epoch in range(start_epoch + 1, t["epochs"] + 1):
            t0 = time.perf_counter()
            bar = progress_bar(total=steps, desc=f"epoch {epoch}/{t['epochs']} {tag}".strip(),
                               disable=not self.chief)
            losses = []
            for batch in self._train_dataset(epoch, neurons):
                loss = float(step(batch)) / len(neurons)
                if not np.isfinite(loss):
                    bar.close()
                    kept = (f"the last good checkpoint is kept in {self.ckpt_path}"
                            if self.ckpt_path.exists() else "no checkpoint was written yet")
                    raise NaNLossError(
                        f"loss is {loss} at epoch {epoch} step {len(losses) + 1}; {kept}")
                losses.append(loss)
                bar.update(1)
                rate = len(losses) * t["batch_size"] * len(neurons) / (time.perf_counter() - t0)
                bar.set_postfix(loss=f"{np.mean(losses):.4f}", neuron_img_s=f"{rate:.0f}",
                                refresh=False)
            bar.close()
            pred = self.predict(predict_fn, x_sel)
            scores = metrics_lib.evaluate(y_sel, pred, top_k=e["top_k"])
            val_loss = float(np.mean((pred - y_sel) ** 2))
            improved = best.update(scores["corr"], epoch)
            summary = metrics_lib.summarize(scores)
            record = {"epoch": epoch, "loss": float(np.mean(losses)), "val_loss": val_loss,
                      **{f"val_{k}": summary[k] for k in metrics_lib.REPORTED},
                      "improved": improved, "seconds": time.perf_counter() - t0}
            history.append(record)
            self.log(f"epoch {epoch}/{t['epochs']} {tag} loss {record['loss']:.4f} "
                     f"val_loss {val_loss:.4f} corr {summary['corr']:.3f} "
                     f"pt_j {summary['pt_j']:.3f} pt_s {summary['pt_s']:.3f} "
                     f"best-updated {improved}/{len(neurons)} "
                     f"({record['seconds']:.1f}s)".replace("  ", " "))
            for cb in callbacks or []:
                cb(epoch=epoch, record=record, scores=scores, y_true=y_sel, y_pred=pred,
                   neurons=neurons, tag=tag)
            if epoch % t["checkpoint_every"] == 0 or epoch == t["epochs"]:
                self._save_checkpoint(model, optimizer, best, epoch, history)
        best.restore()
        return model, history, best.epoch
