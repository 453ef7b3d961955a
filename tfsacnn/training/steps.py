"""The backend-specific part of training: one small step object per backend.

`make_step(trainer, model, optimizer)` returns a step with
- `batches(epoch)`: the epoch's shuffled training batches;
- `__call__(batch) -> float`: one optimisation step; the loss is the per-neuron MSE
  summed over neurons (every neuron's network gets the gradient it would get alone);
- `end_epoch()`: make the model's variables current (JAX keeps them as arrays meanwhile);
- `predict(images (N, S, S, 1)) -> (N, n)` numpy, inference mode, in `eval.batch_size`.

TensorFlow: a `tf.function` over `strategy.run` (tf.distribute: Mirrored, MultiWorker).
JAX: a `jax.jit` step over Keras' stateless APIs (`stateless_call`,
`optimizer.stateless_apply`), data parallel over `keras.distribution` devices.
"""
import numpy as np

from .. import data as data_lib
from .strategy import backend


def make_step(trainer, model, optimizer):
    return (JaxStep if backend() == "jax" else TFStep)(trainer, model, optimizer)


class _Step:
    def __init__(self, trainer, model, optimizer):
        self.trainer, self.model, self.optimizer = trainer, model, optimizer
        self.cfg = trainer.cfg

    def predict(self, images):
        bs = self.cfg.eval.batch_size
        out = [np.asarray(self._predict(images[i:i + bs])) for i in range(0, len(images), bs)]
        if not out:
            return np.zeros((0, self.model.output_shape[-1]), np.float32)
        return np.concatenate(out, axis=0)

    def end_epoch(self):
        pass


class TFStep(_Step):
    """tf.distribute: `strategy.run` in a `tf.function`; the loss normalised by the
    global batch, so replicas sum to the single-device gradient."""

    def __init__(self, trainer, model, optimizer):
        import tensorflow as tf

        super().__init__(trainer, model, optimizer)
        strategy = trainer.strategy

        def replica_step(x, y):
            count = tf.cast(tf.shape(x)[0], tf.float32)
            total = tf.distribute.get_replica_context().all_reduce("sum", count)
            with tf.GradientTape() as tape:
                pred = model(x, training=True)
                sq = tf.reduce_sum(tf.square(pred - y)) / total
            grads = tape.gradient(sq, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return sq

        @tf.function
        def step(batch):
            x, y = batch
            per_replica = strategy.run(replica_step, args=(x, y))
            return strategy.reduce("sum", per_replica, axis=None)

        self._step = step
        self._predict_fn = tf.function(lambda x: model(x, training=False),
                                       reduce_retracing=True)

    def _predict(self, x):
        import tensorflow as tf

        return self._predict_fn(tf.constant(x))

    def batches(self, epoch):
        t, strategy = self.cfg.train, self.trainer.strategy

        def fn(ctx):
            return data_lib.load(self.cfg.data.dir, "train",
                                 ctx.get_per_replica_batch_size(t.batch_size), shuffle=t.shuffle,
                                 seed=t.seed * 1000 + epoch, neurons=self.trainer.neurons,
                                 verify=False, input_context=ctx)
        return strategy.distribute_datasets_from_function(fn)

    def __call__(self, batch):
        return float(self._step(batch))


class JaxStep(_Step):
    """`jax.jit` over Keras' stateless APIs; the state lives in arrays during an epoch."""

    def __init__(self, trainer, model, optimizer):
        import jax

        super().__init__(trainer, model, optimizer)
        self.distribution = trainer.strategy.distribution

        def loss_fn(trainable, non_trainable, x, y):
            pred, non_trainable = model.stateless_call(trainable, non_trainable, x,
                                                       training=True)
            return jax.numpy.sum(jax.numpy.square(pred - y)) / x.shape[0], non_trainable

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def step(state, x, y):
            trainable, non_trainable, opt_vars = state
            (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
            trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
            return loss, (trainable, non_trainable, opt_vars)

        def predict(trainable, non_trainable, x):
            return model.stateless_call(trainable, non_trainable, x, training=False)[0]

        self._step = jax.jit(step, donate_argnums=0)
        self._predict_jit = jax.jit(predict)
        self.state = None

    def _read_state(self):
        m, o = self.model, self.optimizer
        return ([v.value for v in m.trainable_variables],
                [v.value for v in m.non_trainable_variables], [v.value for v in o.variables])

    def _put(self, x):
        """Split a batch over the devices; one that does not divide evenly is replicated
        (each device computes all of it: the same result, without padding)."""
        if self.distribution is None:
            return x
        import jax
        import keras

        if x.shape[0] % self.trainer.strategy.num_replicas_in_sync:
            layout = keras.distribution.TensorLayout([None] * x.ndim,
                                                     self.distribution.device_mesh)
        else:
            layout = self.distribution.get_data_layout(x.shape)
        return jax.device_put(x, layout.backend_layout)

    def batches(self, epoch):
        t = self.cfg.train
        self.state = self._read_state()
        return data_lib.numpy_batches(self.cfg.data.dir, "train", t.batch_size, shuffle=t.shuffle,
                                      seed=t.seed * 1000 + epoch, neurons=self.trainer.neurons,
                                      verify=False)

    def __call__(self, batch):
        x, y = batch
        loss, self.state = self._step(self.state, self._put(x), self._put(y))
        return float(loss)

    def end_epoch(self):
        if self.state is None:
            return
        trainable, non_trainable, opt_vars = self.state
        m, o = self.model, self.optimizer
        for v, a in zip(m.trainable_variables, trainable):
            v.assign(a)
        for v, a in zip(m.non_trainable_variables, non_trainable):
            v.assign(a)
        for v, a in zip(o.variables, opt_vars):
            v.assign(a)
        self.state = None

    def _predict(self, x):
        m = self.model
        return self._predict_jit([v.value for v in m.trainable_variables],
                                 [v.value for v in m.non_trainable_variables], self._put(x))
