"""Layers of the paper's networks, written for many independent neurons at once.

Layout convention ("neuron-major channels"): the feature map of an independent core with
`n` neurons of `C` channels each is one tensor `(B, H, W, n*C)`; channel `i*C + c` is
channel `c` of neuron `i`. Channel-wise layers (MaxPool, BatchNorm, sigmoid,
SpatialDropout) are then per neuron for free, and only the layers that mix channels need
to know about neurons. A shared core is the special case `n_neurons=1`.

Every layer that holds per-neuron weights lists, in `neuron_axes`, the axis of each of its
weights that indexes neurons (the axis has length `n` or `n*C`). `tfsacnn.models` uses it
to copy one neuron's weights in and out of a model.

Backends: every layer is written with `keras.ops` and runs under TensorFlow and JAX.
TensorFlow-only fast paths (fused BatchNorm, a `tf.map_fn` per-neuron conv, native grouped
convs) are small named methods `_tf_*`, used only under the TensorFlow backend, which
import TensorFlow there; nothing here imports it otherwise.
"""
import os

import keras
from keras import ops

from ..errors import ConfigError

# The paper's BatchNorm is PyTorch's: eps 1e-5, running-average momentum 0.1.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def backend_is_tensorflow():
    return keras.backend.backend() == "tensorflow"


def device_has_gpu():
    """True if the Keras backend computes on a GPU by default (TensorFlow or JAX)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU"))
    if backend == "jax":
        import jax

        return jax.default_backend() == "gpu"
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


CONV_IMPLEMENTATION_ENV = "TFSACNN_CONV_IMPLEMENTATION"


def auto_conv_implementation():
    """What NeuronConv2D's `"auto"` runs: $TFSACNN_CONV_IMPLEMENTATION if set, else
    `"grouped"` on a GPU and `"map"` on a CPU."""
    chosen = os.environ.get(CONV_IMPLEMENTATION_ENV, "")
    if chosen:
        if chosen not in ("grouped", "map"):
            raise ConfigError(f"{CONV_IMPLEMENTATION_ENV}={chosen}: expected grouped or map")
        return chosen
    return "grouped" if device_has_gpu() else "map"


def _split_neurons(x, n):
    """(B, ..., n*C) -> (B, ..., n, C)."""
    shape = ops.shape(x)
    return ops.reshape(x, tuple(shape[:-1]) + (n, shape[-1] // n))


def _merge_neurons(x):
    """(B, ..., n, C) -> (B, ..., n*C)."""
    shape = ops.shape(x)
    return ops.reshape(x, tuple(shape[:-2]) + (shape[-2] * shape[-1],))


@keras.saving.register_keras_serializable("tfsacnn")
class BatchNorm(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` over the last axis, with the paper's eps/momentum.

    In training on 4-D inputs `(B, H, W, C)`, as in PyTorch, the running variance is
    updated with the unbiased batch variance (Keras' own layer uses the biased one); the
    output is normalised with the biased one. Under TensorFlow this runs as one fused
    kernel (FusedBatchNormV3, `_tf_fused`), about 2x faster on CPU than unfused moments;
    elsewhere it is written with `keras.ops`. Weights, names and inference are those of
    `BatchNormalization`.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("epsilon", BN_EPSILON)
        kwargs.setdefault("momentum", BN_MOMENTUM)
        super().__init__(**kwargs)

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or self.synchronized or len(inputs.shape) != 4 \
                or self.axis not in (-1, 3):
            return super().call(inputs, training=training, mask=mask)
        if backend_is_tensorflow():
            y, mean, var = self._tf_fused(inputs)
        else:
            y, mean, var = self._batch_normalize(inputs)
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + mean * (1 - m))
        self.moving_variance.assign(self.moving_variance * m + var * (1 - m))
        return y

    def _batch_normalize(self, inputs):
        """-> (normalised inputs, batch mean, unbiased batch variance), stats in float32."""
        x = ops.cast(inputs, "float32")
        mean, var = ops.moments(x, axes=(0, 1, 2))
        count = ops.cast(ops.prod(ops.shape(x)[:3]), "float32")
        y = (x - mean) * ops.rsqrt(var + self.epsilon)
        y = y * ops.cast(self.gamma, "float32") + ops.cast(self.beta, "float32")
        unbiased = var * count / ops.maximum(count - 1.0, 1.0)
        return ops.cast(y, inputs.dtype), mean, unbiased

    def _tf_fused(self, inputs):
        import tensorflow as tf

        return tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)[:3]


@keras.saving.register_keras_serializable("tfsacnn")
class MaxPool2D(keras.layers.MaxPooling2D):
    """`keras.layers.MaxPooling2D(2)` ("valid", stride 2), `(B, H, W, C)` -> `(B, H//2, W//2, C)`.

    Under TensorFlow it is Keras' layer (MaxPool). Elsewhere it is written as a reshape to
    `(B, H//2, 2, W//2, 2, C)` and a max over the two window axes: the same values, and
    under JAX on CPU its gradient is ~3x faster than that of `reduce_window` (XLA's
    select-and-scatter). Ties (equal values in a window) share the gradient under JAX
    and go to one element under TensorFlow; with real-valued maps they do not occur.
    """

    def __init__(self, pool_size=2, **kwargs):
        kwargs.pop("strides", None)
        kwargs.pop("padding", None)
        if pool_size not in (2, (2, 2), [2, 2]):
            raise ValueError(f"MaxPool2D: only pool_size 2, got {pool_size!r}")
        super().__init__(pool_size=2, strides=2, padding="valid", **kwargs)

    def call(self, inputs):
        if backend_is_tensorflow():
            return super().call(inputs)
        s = ops.shape(inputs)
        h, w = s[1] // 2, s[2] // 2
        x = inputs[:, :2 * h, :2 * w]
        return ops.max(ops.reshape(x, (s[0], h, 2, w, 2, s[3])), axis=(2, 4))


@keras.saving.register_keras_serializable("tfsacnn")
class NeuronConv2D(keras.layers.Layer):
    """Per-neuron convolution, "valid" padding, stride 1.

    Each of `n_neurons` neurons has its own kernel `(k, k, c_in, filters)`, stored together
    as `kernel (k, k, c_in, n*filters)`: the layout of `Conv2D(groups=n)`.

    Input `(B, H, W, n*c_in)`, or `(B, H, W, c_in)` with `shared_input=True` (the first
    conv: every neuron sees the same image). Output `(B, H-k+1, W-k+1, n*filters)`.

    `implementation` picks how a grouped (per-neuron) conv runs, all with the same weights:
    - `"grouped"`: one convolution whose input has `n` times the kernel's input channels,
      run as a grouped convolution (`feature_group_count=n` under JAX; `tf.nn.conv2d`
      under TensorFlow). Native and fastest on GPU. On CPU, TensorFlow trains it only
      under XLA, ~45x slower (DESIGN.md), and JAX's CPU gradient of a grouped conv is
      ~10x slower than separate convs, so it is not used there.
    - `"map"`: one dense `(k, k, c_in, filters)` conv per neuron on a cache-sized map.
      Under TensorFlow a `tf.map_fn` (one `While` op, `_tf_map_conv`); elsewhere a loop
      over neurons unrolled when the function is traced (`_split_conv`; under JAX on CPU
      this trains ~5x faster than `jax.lax.map` and ~10x faster than grouped).
      Fastest on CPU.
    - `"auto"` (default): the environment variable `TFSACNN_CONV_IMPLEMENTATION` (`grouped`
      or `map`, e.g. the choice of the timed trial `tfsacnn bench conv`) when set, else
      `"grouped"` when the backend computes on a GPU, else `"map"`.
    A 1x1 kernel is always one batched matmul (einsum), and a shared input is one plain conv.
    """

    neuron_axes = {"kernel": -1, "bias": 0}

    def __init__(self, filters, kernel_size, n_neurons=1, shared_input=False,
                 implementation="auto", **kwargs):
        super().__init__(**kwargs)
        if implementation not in ("auto", "grouped", "map"):
            raise ValueError(f"NeuronConv2D: unknown implementation {implementation!r}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.n_neurons = int(n_neurons)
        self.shared_input = bool(shared_input)
        self.implementation = implementation

    def build(self, input_shape):
        c_total = int(input_shape[-1])
        self.c_in = c_total if self.shared_input else c_total // self.n_neurons
        if not self.shared_input and self.c_in * self.n_neurons != c_total:
            raise ValueError(f"{self.name}: {c_total} input channels do not split into "
                             f"{self.n_neurons} neurons")
        k = self.kernel_size
        self.kernel = self.add_weight(name="kernel",
                                      shape=(k, k, self.c_in, self.n_neurons * self.filters),
                                      initializer=_torch_uniform(k * k * self.c_in))
        self.bias = self.add_weight(name="bias", shape=(self.n_neurons * self.filters,),
                                    initializer=_torch_uniform(k * k * self.c_in))

    def _impl(self):
        if self.implementation != "auto":
            return self.implementation
        return auto_conv_implementation()

    def call(self, x):
        n, k = self.n_neurons, self.kernel_size
        if self.shared_input or n == 1:
            y = ops.conv(x, self.kernel, 1, "valid")
        elif k == 1:
            w = ops.reshape(self.kernel, (self.c_in, n, self.filters))
            y = _merge_neurons(ops.einsum("bhwnc,cnf->bhwnf", _split_neurons(x, n), w))
        elif self._impl() == "grouped":
            y = self._tf_grouped_conv(x) if backend_is_tensorflow() else \
                ops.conv(x, self.kernel, 1, "valid")
        elif backend_is_tensorflow():
            y = self._tf_map_conv(x)
        else:
            y = self._split_conv(x)
        return y + self.bias

    def _split_conv(self, x):
        """One dense conv per neuron, `n` ops in the traced graph, concatenated."""
        c, f = self.c_in, self.filters
        kernel = self.kernel
        ys = [ops.conv(x[..., i * c:(i + 1) * c], kernel[..., i * f:(i + 1) * f], 1, "valid")
              for i in range(self.n_neurons)]
        return ops.concatenate(ys, axis=-1)

    def _tf_grouped_conv(self, x):
        import tensorflow as tf

        return tf.nn.conv2d(x, self.kernel, 1, "VALID")

    def _tf_map_conv(self, x):
        import tensorflow as tf

        n, k, f = self.n_neurons, self.kernel_size, self.filters
        shape = tf.shape(x)
        b, h, w = shape[0], shape[1], shape[2]
        xs = tf.transpose(tf.reshape(x, (b, h, w, n, self.c_in)), (3, 0, 1, 2, 4))
        ws = tf.transpose(tf.reshape(self.kernel, (k, k, self.c_in, n, f)), (3, 0, 1, 2, 4))
        ys = tf.map_fn(lambda t: tf.nn.conv2d(t[0], t[1], 1, "VALID"), (xs, ws),
                       fn_output_signature=x.dtype,
                       parallel_iterations=None if tf.executing_eagerly() else 4)
        ys = tf.transpose(ys, (1, 2, 3, 0, 4))
        return tf.reshape(ys, (b, h - k + 1, w - k + 1, n * f))

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        k = self.kernel_size
        dim = lambda d: None if d is None else d - k + 1  # noqa: E731
        return (b, dim(h), dim(w), self.n_neurons * self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "n_neurons": self.n_neurons,
                "shared_input": self.shared_input, "implementation": self.implementation}


def _torch_uniform(fan_in):
    """PyTorch's default init for conv/linear weights and biases: U(-1/sqrt(fan_in), ...)."""
    bound = 1.0 / float(fan_in) ** 0.5
    return keras.initializers.RandomUniform(-bound, bound)


@keras.saving.register_keras_serializable("tfsacnn")
class SelfAttention2D(keras.layers.Layer):
    """The paper's self-attention block over the positions of a feature map, per neuron.

    Input `x (B, H, W, n*C)`; output `(B, H, W, n*C)`, and with `return_attention=True`
    also the attention `(B, n, heads, H*W, H*W)` (rows: query positions, softmax over keys).

    For each neuron and head: q = x Wq + bq, k = x Wk + bk (1x1 convs C -> key_dim),
    A = softmax_keys(q k^T), attended = A v, out = gamma * attended + x, gamma starts at 0.
    - `value_mapping=True`: v = x Wv + bv (C -> value_dim per head), and the heads'
      results go back to C channels through a 1x1 conv `Wo, bo`.
    - `value_mapping=False`: v is x itself; with several heads, head h attends over the
      h-th group of C/heads channels, so the output keeps C channels.

    Scaling: this layer uses the paper's formulation, **no 1/sqrt(key_dim)**. Keras'
    `MultiHeadAttention` always multiplies by 1/sqrt(key_dim); a learned query projection
    absorbs that factor (Wq' = sqrt(d) Wq), so both describe the same function class and
    differ only at initialisation. The layer is written with einsums rather than
    `MultiHeadAttention` because it must hold n independent attention modules in one op
    (MHA has one set of weights) and must support the identity value path
    (`value_mapping=False`), which MHA cannot express.
    """

    def __init__(self, n_neurons=1, key_dim=5, value_dim=5, num_heads=1, value_mapping=True,
                 **kwargs):
        super().__init__(**kwargs)
        self.n_neurons = int(n_neurons)
        self.key_dim = int(key_dim)
        self.value_dim = int(value_dim)
        self.num_heads = int(num_heads)
        self.value_mapping = bool(value_mapping)

    @property
    def neuron_axes(self):
        return {name: 0 for name in ("query_kernel", "query_bias", "key_kernel", "key_bias",
                                     "value_kernel", "value_bias", "output_kernel",
                                     "output_bias", "gamma")}

    def build(self, input_shape):
        n, h = self.n_neurons, self.num_heads
        c = int(input_shape[-1]) // n
        self.channels = c
        if not self.value_mapping and c % h:
            raise ValueError(f"{self.name}: {c} channels do not split into {h} heads")
        init = _torch_uniform(c)
        add = lambda name, shape, ini=init: self.add_weight(name=name, shape=shape,  # noqa
                                                           initializer=ini)
        self.query_kernel = add("query_kernel", (n, c, h * self.key_dim))
        self.query_bias = add("query_bias", (n, h * self.key_dim))
        self.key_kernel = add("key_kernel", (n, c, h * self.key_dim))
        self.key_bias = add("key_bias", (n, h * self.key_dim))
        if self.value_mapping:
            self.value_kernel = add("value_kernel", (n, c, h * self.value_dim))
            self.value_bias = add("value_bias", (n, h * self.value_dim))
            out_init = _torch_uniform(h * self.value_dim)
            self.output_kernel = add("output_kernel", (n, h * self.value_dim, c), out_init)
            self.output_bias = add("output_bias", (n, c), out_init)
        self.gamma = add("gamma", (n,), "zeros")

    def _project(self, x, kernel, bias, dim):
        """x (B, P, n, C) -> (B, P, n, heads, dim)."""
        y = ops.einsum("bpnc,ncd->bpnd", x, kernel) + bias
        s = ops.shape(y)
        return ops.reshape(y, (s[0], s[1], s[2], self.num_heads, dim))

    def call(self, x, return_attention=False):
        s = ops.shape(x)
        b, hgt, wid, n, c = s[0], s[1], s[2], self.n_neurons, self.channels
        xp = ops.reshape(x, (b, hgt * wid, n, c))
        q = self._project(xp, self.query_kernel, self.query_bias, self.key_dim)
        k = self._project(xp, self.key_kernel, self.key_bias, self.key_dim)
        attention = ops.softmax(ops.einsum("bpnhd,bqnhd->bnhpq", q, k), axis=-1)
        if self.value_mapping:
            v = self._project(xp, self.value_kernel, self.value_bias, self.value_dim)
            attended = ops.einsum("bnhpq,bqnhd->bpnhd", attention, v)
            attended = ops.reshape(attended, (b, hgt * wid, n, self.num_heads * self.value_dim))
            attended = ops.einsum("bpnd,ndc->bpnc", attended, self.output_kernel)
            attended = attended + self.output_bias
        else:
            v = ops.reshape(xp, (b, hgt * wid, n, self.num_heads, c // self.num_heads))
            attended = ops.einsum("bnhpq,bqnhd->bpnhd", attention, v)
        attended = ops.reshape(attended, (b, hgt, wid, n * c))
        gamma = ops.repeat(self.gamma, c)  # (n*C,)
        out = gamma * attended + x
        return (out, attention) if return_attention else out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "n_neurons": self.n_neurons, "key_dim": self.key_dim,
                "value_dim": self.value_dim, "num_heads": self.num_heads,
                "value_mapping": self.value_mapping}


@keras.saving.register_keras_serializable("tfsacnn")
class MultiHeadSelfAttention2D(keras.layers.Layer):
    """The SA block of a shared core, on `keras.layers.MultiHeadAttention` (value mapping).

    Input `x (B, H, W, C)`; output `(B, H, W, C)`, and with `return_attention=True` also the
    attention `(B, 1, heads, H*W, H*W)` (the layout of `SelfAttention2D` with one group).
    out = gamma * MHA(x, x) + x over the H*W positions (`attention_axes=(1,)` on
    `(B, H*W, C)`), gamma a learnable scalar that starts at 0. MHA's query, key and value
    projections C -> (heads, key_dim | value_dim) and its output projection back to C
    (all with biases) are the paper's value-mapping 1x1 convs.

    Scaling: this layer uses Keras' formulation, softmax(q k^T / sqrt(key_dim)). It is the
    paper's unscaled `SelfAttention2D` with the query projection (kernel and bias)
    multiplied by sqrt(key_dim), the same function class (tested exactly in
    tests/test_models.py); only the initialisation differs (MHA's glorot/zeros).
    Without value mapping (v = x) MHA has no equivalent, and the shared core keeps
    `SelfAttention2D`.
    """

    neuron_axes = {}  # one core: no per-neuron weights

    def __init__(self, key_dim=5, value_dim=5, num_heads=1, **kwargs):
        super().__init__(**kwargs)
        self.key_dim = int(key_dim)
        self.value_dim = int(value_dim)
        self.num_heads = int(num_heads)
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=self.num_heads, key_dim=self.key_dim, value_dim=self.value_dim,
            attention_axes=(1,), dtype=self.dtype_policy, name="attention")

    def build(self, input_shape):
        c = int(input_shape[-1])
        seq = (input_shape[0], None, c)
        self.attention.build(seq, seq)
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")

    def call(self, x, return_attention=False):
        s = ops.shape(x)
        xp = ops.reshape(x, (s[0], s[1] * s[2], s[3]))
        if not return_attention:  # lets MHA use the backend's fused attention
            return self.gamma * ops.reshape(self.attention(xp, xp), s) + x
        attended, attention = self.attention(xp, xp, return_attention_scores=True)
        return self.gamma * ops.reshape(attended, s) + x, ops.expand_dims(attention, 1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "key_dim": self.key_dim, "value_dim": self.value_dim,
                "num_heads": self.num_heads}


@keras.saving.register_keras_serializable("tfsacnn")
class Readout(keras.layers.Layer):
    """The paper's readouts, per neuron or over a shared core.

    `kind`:
    - `"fcl"`: dense over the whole flattened map -> 1 (FCL).
    - `"ctl"`: dense over the centre hypercolumn only -> 1 (CTL).
    - `"fc1"`: a centre branch (CTL), a surround branch (dense over the other H*W-1
      positions) and a 2 -> 1 combination (FC1).

    Input `(B, H, W, n*C)` when `shared_core=False` (each neuron reads its own channels),
    or `(B, H, W, C)` when `shared_core=True` (every neuron reads the same core).
    Output `(B, n)`. The centre is position `(H//2, W//2)`; (4, 4) of the 9x9 map.

    Kernels keep the neuron axis where `neuron_axes` says. Flattening order is (H, W, C)
    (channels-last); PyTorch's is (C, H, W), which `tfsacnn.interop` converts.
    """

    def __init__(self, kind="fcl", n_neurons=1, shared_core=False, **kwargs):
        super().__init__(**kwargs)
        if kind not in ("fcl", "ctl", "fc1"):
            raise ValueError(f"Readout: unknown kind {kind!r} (fcl, ctl, fc1)")
        self.kind = kind
        self.n_neurons = int(n_neurons)
        self.shared_core = bool(shared_core)

    @property
    def neuron_axes(self):
        # independent: kernels (..., n, C); shared: kernels (..., C, n)
        k = -2 if not self.shared_core else -1
        axes = {"kernel": k, "center_kernel": k, "surround_kernel": k,
                "bias": 0, "center_bias": 0, "surround_bias": 0, "combine_kernel": 0,
                "combine_bias": 0}
        return axes

    def _kshape(self, *lead):
        n, c = self.n_neurons, self.channels
        return lead + ((c, n) if self.shared_core else (n, c))

    def build(self, input_shape):
        h, w, c_total = int(input_shape[1]), int(input_shape[2]), int(input_shape[3])
        self.channels = c_total if self.shared_core else c_total // self.n_neurons
        self.map_size = (h, w)
        n, c = self.n_neurons, self.channels
        center = (h // 2) * w + w // 2
        self.center_index = center
        self.surround_index = [p for p in range(h * w) if p != center]

        def add(name, shape, fan_in):
            return self.add_weight(name=name, shape=shape, initializer=_torch_uniform(fan_in))

        if self.kind == "fcl":
            self.kernel = add("kernel", self._kshape(h, w), h * w * c)
            self.bias = add("bias", (n,), h * w * c)
        else:
            self.center_kernel = add("center_kernel", self._kshape(), c)
            self.center_bias = add("center_bias", (n,), c)
        if self.kind == "fc1":
            s = len(self.surround_index)
            self.surround_kernel = add("surround_kernel", self._kshape(s), s * c)
            self.surround_bias = add("surround_bias", (n,), s * c)
            self.combine_kernel = add("combine_kernel", (n, 2), 2)
            self.combine_bias = add("combine_bias", (n,), 2)

    def _dot(self, x, kernel, lead):
        """x (B, *lead, [n,] C) . kernel -> (B, n), summing over lead and C."""
        idx = "pqr"[:lead]
        if self.shared_core:
            return ops.einsum(f"b{idx}c,{idx}cn->bn", x, kernel)
        return ops.einsum(f"b{idx}nc,{idx}nc->bn", x, kernel)

    def _positions(self, x):
        """(B, H, W, n*C) -> (B, H*W, [n,] C)."""
        s = ops.shape(x)
        tail = (self.channels,) if self.shared_core else (self.n_neurons, self.channels)
        return ops.reshape(x, (s[0], s[1] * s[2]) + tail)

    def contributions(self, x):
        """The prediction split into parts that sum to it exactly. Each part `(B, n)`.

        - fcl: `center` (the centre hypercolumn's terms), `surround` (all other
          positions), `bias`.
        - ctl: `center`, `bias`.
        - fc1: `center_branch` and `surround_branch` (each already weighted by the
          combination), `bias` (the combination bias).
        """
        p = self._positions(x)
        if self.kind == "fcl":
            kp = ops.reshape(self.kernel, (-1,) + tuple(self.kernel.shape[2:]))
            center = self._dot(p[:, self.center_index], kp[self.center_index], 0)
            total = self._dot(p, kp, 1)
            return {"center": center, "surround": total - center,
                    "bias": ops.broadcast_to(self.bias, ops.shape(center))}
        center = self._dot(p[:, self.center_index], self.center_kernel, 0)
        if self.kind == "ctl":
            return {"center": center,
                    "bias": ops.broadcast_to(self.center_bias, ops.shape(center))}
        center = center + self.center_bias
        surround = ops.take(p, self.surround_index, axis=1)
        surround = self._dot(surround, self.surround_kernel, 1) + self.surround_bias
        return {"center_branch": center * self.combine_kernel[:, 0],
                "surround_branch": surround * self.combine_kernel[:, 1],
                "bias": ops.broadcast_to(self.combine_bias, ops.shape(center))}

    def call(self, x):
        parts = self.contributions(x)
        out = parts.pop("bias")
        for v in parts.values():
            out = out + v
        return out

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n_neurons)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "n_neurons": self.n_neurons,
                "shared_core": self.shared_core}
