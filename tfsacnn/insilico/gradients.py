"""Gradients of per-neuron responses with respect to per-neuron images, one small path per backend.

`value_and_grad(fn, variables=())` takes a keras.ops function `fn(x) -> y` with `x` `(b, n, H, W)` float32
(neuron j sees image `x[:, j]`) and `y` `(b, n)`, and returns a numpy function

    vg(x, weights) -> (y, grad)     x (b, n, H, W), weights (b, n) -> y (b, n), grad (b, n, H, W)

where `grad` is the gradient of `sum(weights * fn(x))` with respect to `x`. Because response
j depends only on image j, `grad[:, j]` is neuron j's own gradient, scaled by its weight
(+1 ascends, -1 descends). The path is chosen by `keras.backend.backend()`:

    tensorflow   `_tf_value_and_grad`   a `tf.function` around a `tf.GradientTape`
    jax          `_jax_value_and_grad`  `jax.jit(jax.value_and_grad(...))`

`variables`: the Keras variables `fn` reads (a model's `variables`). Under JAX they enter
the jitted function as arguments (through a `keras.StatelessScope`), so the compiled
function does not hold the weights as constants.
"""
import numpy as np

from ..errors import ConfigError


def value_and_grad(fn, variables=()):
    """The backend's path for `fn` (see the module docstring)."""
    import keras        # here, not at import: `import tfsacnn.insilico` starts no backend

    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tf_value_and_grad(fn)
    if backend == "jax":
        return _jax_value_and_grad(fn, variables)
    raise ConfigError(f"KERAS_BACKEND={backend}: MEIs need the tensorflow or jax backend")


def _tf_value_and_grad(fn):
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def step(x, weights):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.cast(fn(x), tf.float32)
            total = tf.reduce_sum(y * weights)
        return y, tape.gradient(total, x)

    def vg(x, weights):
        y, grad = step(tf.constant(x, tf.float32), tf.constant(weights, tf.float32))
        return y.numpy(), grad.numpy()

    return vg


def _jax_value_and_grad(fn, variables=()):
    import jax
    import keras
    import jax.numpy as jnp

    variables = list(variables)
    values = [v.value for v in variables]

    def total(x, weights, values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            y = jnp.asarray(fn(x), jnp.float32)
        return jnp.sum(y * weights), y

    step = jax.jit(jax.value_and_grad(total, has_aux=True))

    def vg(x, weights):
        (_, y), grad = step(jnp.asarray(x, jnp.float32), jnp.asarray(weights, jnp.float32),
                            values)
        return np.asarray(y), np.asarray(grad)

    return vg
