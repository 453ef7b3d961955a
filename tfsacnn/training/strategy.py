"""Where training runs: tf.distribute strategies (TensorFlow) or keras.distribution (JAX).

- TensorFlow: `auto` picks multiworker when TF_CONFIG is set, mirrored with several GPUs,
  else default. Training uses a custom `strategy.run` loop: Keras 3 `fit` fails under
  MultiWorkerMirroredStrategy (keras-team/keras#20585).
- JAX: `auto` and `mirrored` use `keras.distribution.DataParallel` over every local device
  when there are several; `default` one device; `multiworker` is TensorFlow's only.
"""
import os

import keras

from ..errors import ConfigError


def backend():
    """The Keras backend in use: "tensorflow" or "jax"."""
    return keras.backend.backend()


def make_strategy(name):
    """A tf.distribute strategy (TensorFlow) or a `JaxDevices` (JAX) for `train.strategy`."""
    if backend() == "jax":
        return JaxDevices(name)
    import tensorflow as tf

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
        if not os.environ.get("TF_CONFIG"):
            raise ConfigError("train.strategy: multiworker needs TF_CONFIG (the cluster's "
                              "workers and this one's index) in the environment; on one "
                              "machine use auto, default or mirrored")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"train.strategy: unknown strategy {name!r}")


class JaxDevices:
    """The JAX counterpart of a strategy: the local devices and their data-parallel layout.

    `num_replicas_in_sync` devices; `scope()` installs `keras.distribution.DataParallel`
    while models are built, so variables are replicated and batches split over devices.
    """

    def __init__(self, name):
        import jax

        if name == "multiworker":
            raise ConfigError("train.strategy: multiworker is TensorFlow's (tf.distribute); "
                              "under JAX use auto or mirrored")
        devices = jax.devices()
        self.devices = devices if name in ("auto", "mirrored") else devices[:1]
        self.num_replicas_in_sync = len(self.devices)
        self.distribution = (keras.distribution.DataParallel(devices=self.devices)
                             if len(self.devices) > 1 else None)

    def scope(self):
        import contextlib

        if self.distribution is None:
            return contextlib.nullcontext()
        return self.distribution.scope()


def is_chief(strategy):
    """Whether this process writes the run (always, but for non-chief TF workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


def has_gpu():
    """Whether the backend sees a GPU."""
    if backend() == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def set_seed(seed):
    """`keras.utils.set_random_seed` without importing TensorFlow under JAX.

    Keras' own function also seeds `tf.random` whenever TensorFlow is installed, which
    would import it into a JAX process; under JAX the same Keras state (the global seed
    and its SeedGenerator) is set here, with Python's and NumPy's generators.
    """
    if backend() != "jax":
        keras.utils.set_random_seed(seed)
        return
    import random

    import numpy as np
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)
