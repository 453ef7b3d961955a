"""The trainer: one epoch loop for both backends, with the paper's protocol.

- Adam 1e-3, MSE, batch 50, 50 epochs by default (`tfsacnn.config`); Adam's epsilon is
  PyTorch's 1e-8 (the paper's code), not Keras' 1e-7.
- The loss is the per-neuron MSE summed over neurons, so every neuron's network gets
  exactly the gradient it would get if it were trained alone (the paper fits one network
  per neuron). Logs show the mean over neurons.
- After every epoch: CORR / PT_J / PT_S on the selection split; each neuron keeps the
  weights of its best epoch by that CORR (independent core; a shared core keeps the best
  epoch by mean CORR, since its neurons share weights).
- The backend's part is a step object (`steps.TFStep`, `steps.JaxStep`); side jobs are
  callbacks (`callbacks`); chunks of neurons are `chunks.ChunkedTraining`.
- A checkpoint after every epoch (`checkpoint`, variables by name) holds weights,
  optimizer, epoch, best-epoch bookkeeping and the dropout RNG state; `resume=True`
  continues bit-for-bit.
"""
import pathlib
import time

import keras
import numpy as np

from .. import data as data_lib
from .. import models
from ..config import Config
from ..errors import TfsacnnError
from ..evaluation import metrics as metrics_lib
from . import callbacks as cb
from . import checkpoint
from .steps import make_step
from .strategy import has_gpu, is_chief, make_strategy, set_seed
from .transfer import apply_freeze, init_from_run

ADAM_EPSILON = 1e-8       # PyTorch's default, as in the paper's code (Keras' default is 1e-7)
DEFAULT_CPU_CHUNK = 64


class Trainer:
    """Trains one model on one dataset; see the module docstring.

    `cfg`: a `tfsacnn.config.Config` (or the dict `config.load` returns).
    `neurons`: the dataset's neuron indices to train (default: the config's).
    """

    def __init__(self, cfg, run_dir, strategy=None, log=print, neurons=None,
                 checkpoint_name="last.npz", quiet=False):
        self.cfg = cfg = Config.from_dict(cfg)
        self.run_dir = pathlib.Path(run_dir)
        self.strategy = strategy or make_strategy(cfg.train.strategy)
        self.chief = is_chief(self.strategy)
        self.quiet = quiet
        self.log = log if self.chief and not quiet else (lambda *a, **k: None)
        self.data_dir = cfg.data.dir
        self.manifest = data_lib.read_manifest(self.data_dir)
        self.neurons = (list(neurons) if neurons is not None else
                        data_lib.parse_neurons(cfg.data.neurons, self.manifest["n_neurons"]))
        self.splits = {s for s, info in self.manifest["splits"].items() if info["count"]}
        size = cfg.model.overrides.get("image_size", models.IMAGE_SIZE)
        if size != self.manifest["image_size"]:
            s = self.manifest["image_size"]
            raise TfsacnnError(f"{self.data_dir}: images are {s}x{s} but the model takes "
                               f"{size}x{size}; set model.overrides.image_size: {s} (or "
                               f"rebuild the dataset with --size {size})")
        sel, top_k = cfg.eval.selection_split, cfg.eval.top_k
        if sel not in self.splits:
            raise TfsacnnError(f"{self.data_dir}: has no {sel!r} split for epoch selection")
        for s in dict.fromkeys([sel, *cfg.eval.report_splits]):
            count = self.manifest["splits"].get(s, {}).get("count", 0)
            if 0 < count < top_k:
                raise TfsacnnError(f"{self.data_dir}: the {s} split has {count} images, fewer "
                                   f"than eval.top_k={top_k} (PT needs top_k images)")
        self.checkpoint_path = self.run_dir / "checkpoints" / checkpoint_name
        self.tag = ""
        if cfg.train.time_limit_s and type(self.strategy).__name__.startswith("MultiWorker"):
            raise TfsacnnError("train.time_limit_s: not with several workers (each would "
                               "decide alone when to stop); use it on one machine")
        if cfg.train.time_limit_s and self.independent and \
                self.neurons_per_step() < len(self.neurons):
            raise TfsacnnError("train.time_limit_s needs every neuron in one step; set "
                               "train.neurons_per_step: 0")

    @property
    def independent(self):
        return self.cfg.model.core == "independent"

    # ----------------------------------------------------------------- building

    def build_model(self, n_neurons, load_init=True):
        """The configured model; `load_init`: copy `train.init_from` weights into it."""
        m, t = self.cfg.model, self.cfg.train
        overrides = dict(m.overrides)
        overrides.setdefault("seed", t.seed)
        if self.strategy.num_replicas_in_sync > 1 and not hasattr(self.strategy, "devices"):
            overrides.setdefault("synchronized_bn", True)       # tf.distribute replicas
        model = models.build(m.name, n_neurons=n_neurons, core=m.core, **overrides)
        if t.init_from and load_init:
            copied = init_from_run(model, t.init_from, t.init_blocks)
            self.log(f"init_from {t.init_from}: {len(copied)} variables loaded")
        frozen = apply_freeze(model, t.freeze, t.frozen_bn)
        if frozen:
            self.log(f"frozen: {len(frozen)} variables ({', '.join(t.freeze)}), "
                     f"BatchNorm mode {t.frozen_bn}")
        return model

    def make_optimizer(self):
        t = self.cfg.train
        kind = keras.optimizers.AdamW if t.optimizer == "adamw" else keras.optimizers.Adam
        extra = {"weight_decay": t.weight_decay} if t.optimizer == "adamw" else {}
        return kind(t.learning_rate, epsilon=ADAM_EPSILON, **extra)

    def predict(self, model, images):
        """`model`'s inference-mode predictions `(N, n)` for images `(N, S, S, 1)`.

        One compiled step per model, so every report split reuses it."""
        cached = getattr(self, "_predict_step", None)
        if cached is None or cached.model is not model:
            cached = self._predict_step = make_step(self, model, self.make_optimizer())
        return cached.predict(images)

    # --------------------------------------------------------------------- fit

    def neurons_per_step(self):
        """`train.neurons_per_step`, with null resolved: 64 on CPU (64 ff+sa-CNNs at
        batch 50 peak at ~3.7 GB, `python -m tfsacnn.bench train`), all on GPU; 0 = all."""
        chunk = self.cfg.train.neurons_per_step
        if chunk is None:
            chunk = 0 if has_gpu() else DEFAULT_CPU_CHUNK
        return chunk or len(self.neurons)

    def fit(self, resume=False, callbacks=()):
        """Train all configured neurons; returns (model, history, best_epoch per neuron).

        `callbacks`: extra `callbacks.Callback`s (e.g. `TensorBoardLogger`).
        """
        from .chunks import ChunkedTraining

        chunk = self.neurons_per_step()
        if self.independent and chunk < len(self.neurons):
            return ChunkedTraining(self, chunk).fit(resume, callbacks)
        return self.fit_neurons(resume, callbacks)

    def default_callbacks(self, best, steps):
        t = self.cfg.train
        out = [best, cb.NaNGuard(),
               cb.ProgressBar(steps, t.epochs, t.batch_size,       # None: on a terminal
                              disable=True if not self.chief or self.quiet else None),
               cb.EpochLog(t.epochs, self.log)]
        if self.chief:
            out.append(cb.Checkpoint(t.checkpoint_every, t.epochs, best))
        return out

    def fit_neurons(self, resume=False, callbacks=(), init=None):
        """Train `self.neurons` together. `init=(model, start)`: start them from that
        model's neurons start, start+1, ... (chunks); else from `train.init_from`."""
        t, e = self.cfg.train, self.cfg.eval
        n = len(self.neurons)
        set_seed(t.seed)
        with self.strategy.scope():
            model = self.build_model(n, load_init=init is None)
            if init is not None:
                full, start = init
                for j in range(n):
                    models.set_neuron_weights(model, j, models.neuron_weights(full, start + j))
            optimizer = self.make_optimizer()
            optimizer.build(model.trainable_variables)
        self.model, self.optimizer, self.history = model, optimizer, []
        best = self.best = cb.BestWeights(self.independent)
        self.stopped_early = None
        steps = -(-self.manifest["splits"]["train"]["count"] // t.batch_size)
        all_callbacks = self.default_callbacks(best, steps) + list(callbacks)
        for c in all_callbacks:
            c.set_trainer(self)
            c.on_train_begin()
        step = make_step(self, model, optimizer)
        x_sel, y_sel = data_lib.load_numpy(self.data_dir, e.selection_split,
                                           neurons=self.neurons, verify=False)
        start_epoch = 0
        if resume and self.checkpoint_path.exists():
            start_epoch, self.history = checkpoint.load(self.checkpoint_path, model,
                                                        optimizer, best)
            self.log(f"resumed {self.tag or 'run'} after epoch {start_epoch}")
        started = time.monotonic()
        try:
            for epoch in range(start_epoch + 1, t.epochs + 1):
                self.run_epoch(epoch, step, all_callbacks, x_sel, y_sel)
                if self.out_of_time(started, epoch - start_epoch, epoch):
                    break
        finally:
            for c in all_callbacks:
                c.on_train_end()
        best.restore()
        return model, self.history, best.epoch

    def out_of_time(self, started, done, epoch):
        """True when another epoch would pass `train.time_limit_s` (the mean epoch so far)."""
        limit = self.cfg.train.time_limit_s
        if not limit or epoch >= self.cfg.train.epochs:
            return False
        elapsed = time.monotonic() - started
        if elapsed + elapsed / done <= limit:
            return False
        self.stopped_early = (f"train.time_limit_s={limit:g}: stopped after epoch {epoch} of "
                              f"{self.cfg.train.epochs}")
        self.log(self.stopped_early)
        if self.chief:                  # the last epoch is checkpointed: --resume goes on
            checkpoint.save(self.checkpoint_path, self.model, self.optimizer,
                            self.best, epoch, self.history)
        return True

    def run_epoch(self, epoch, step, callbacks, x_sel, y_sel):
        """Train one epoch, evaluate on the selection split, run the callbacks."""
        t0 = time.perf_counter()
        for c in callbacks:
            c.on_epoch_begin(epoch)
        losses = []
        for i, batch in enumerate(step.batches(epoch)):
            losses.append(step(batch) / len(self.neurons))
            for c in callbacks:
                c.on_train_batch_end(i, {"loss": losses[-1]})
        step.end_epoch()
        pred = step.predict(x_sel)
        scores = metrics_lib.evaluate(y_sel, pred, top_k=self.cfg.eval.top_k)
        self.evaluation = {"scores": scores, "y_true": y_sel, "y_pred": pred,
                           "neurons": self.neurons}
        summary = metrics_lib.summarize(scores)
        record = {"epoch": epoch, "loss": float(np.mean(losses)),
                  "val_loss": float(np.mean((pred - y_sel) ** 2)),
                  **{f"val_{k}": summary[k] for k in metrics_lib.REPORTED},
                  "seconds": time.perf_counter() - t0}
        self.history.append(record)
        for c in callbacks:                      # BestWeights first: it adds "improved"
            c.on_epoch_end(epoch, record)
