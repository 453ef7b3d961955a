"""Registry and builder of every model variant of the paper, from one set of blocks.

`build(name, n_neurons=1, core="independent", **overrides) -> keras.Sequential`

Every variant is the same chain of blocks, configured by `VARIANTS`:

    alpha_cpb1, alpha_cpb2     Conv k5 (valid) -> MaxPool 2 -> BatchNorm -> sigmoid -> SpatialDropout
    [self_attention]           SA -> BatchNorm -> sigmoid -> SpatialDropout   (SA variants)
    beta_cpb1, beta_cpb2       Conv k -> BatchNorm -> sigmoid, SpatialDropout between them
    readout                    FCL | CTL | FC1

Layer names are `<block>_<part>` (e.g. `alpha_cpb1_conv`, `self_attention_bn`), so a
block is frozen or loaded by its name.

`core="independent"`: every neuron has its own network; the layers hold all neurons'
weights side by side (see `tfsacnn.nn`), so n neurons run as a few large ops.
`core="shared"`: one core of `channels` channels, and one readout per neuron; its SA
block with value mapping is `keras.layers.MultiHeadAttention` (`MultiHeadSelfAttention2D`,
Keras' 1/sqrt(key_dim) scaling), without value mapping the paper's `SelfAttention2D`.
"""
import keras
import numpy as np

from ..nn.layers import (BatchNorm, MaxPool2D, MultiHeadSelfAttention2D, NeuronConv2D,
                         Readout, SelfAttention2D)
from .variants import CORES, resolve



def build(name, n_neurons=1, core="independent", **overrides):
    """Build variant `name` for `n_neurons` neurons.

    Input `(B, 50, 50, 1)` float32 images, output `(B, n_neurons)` responses.
    `overrides`: any key of `OPTIONS`, e.g. `channels=30`, `dropout=0.0`, `num_heads=2`.
    """
    if core not in CORES:
        raise ValueError(f"core must be one of {CORES}, got {core!r}")
    o = resolve(name, **overrides)
    n = int(n_neurons)
    if n < 1:
        raise ValueError("n_neurons must be >= 1")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(o["precision"])
    try:
        return _build(name, o, n, core)
    finally:
        keras.config.set_dtype_policy(previous)


def _build(name, o, n, core):
    g = n if core == "independent" else 1  # neuron groups inside the core
    c = o["channels"]
    seed = o["seed"]
    layers = [keras.Input((o["image_size"], o["image_size"], 1), name="images")]

    def seeded(i):
        return None if seed is None else seed + i

    def bn_act_drop(block, drop=True):
        out = [BatchNorm(synchronized=o["synchronized_bn"], name=f"{block}_bn"),
               keras.layers.Activation("sigmoid", name=f"{block}_act")]
        if drop:
            out.append(keras.layers.SpatialDropout2D(o["dropout"], seed=seeded(len(layers)),
                                                     name=f"{block}_dropout"))
        return out

    def conv(block, k, shared_input=False):
        return NeuronConv2D(c, k, n_neurons=g, shared_input=shared_input,
                            implementation=o["conv_implementation"], name=f"{block}_conv")

    for i, block in enumerate(("alpha_cpb1", "alpha_cpb2")):
        layers.append(conv(block, 5, shared_input=(i == 0)))
        layers.append(MaxPool2D(2, name=f"{block}_pool"))
        layers += bn_act_drop(block)
    if o["attention"] == "value_mapping" and core == "shared":
        layers.append(MultiHeadSelfAttention2D(key_dim=o["key_dim"], value_dim=o["value_dim"],
                                               num_heads=o["num_heads"], name="self_attention"))
    elif o["attention"]:
        layers.append(SelfAttention2D(g, key_dim=o["key_dim"], value_dim=o["value_dim"],
                                      num_heads=o["num_heads"],
                                      value_mapping=o["attention"] == "value_mapping",
                                      name="self_attention"))
    if o["attention"]:
        layers += bn_act_drop("self_attention")
    layers.append(conv("beta_cpb1", o["beta_kernel"]))
    layers += bn_act_drop("beta_cpb1")  # the SpatialDropout between the two betaCPBs
    layers.append(conv("beta_cpb2", o["beta_kernel"]))
    layers += bn_act_drop("beta_cpb2", drop=False)
    # the readout computes in float32 whatever the precision, so responses are float32
    layers.append(Readout(o["readout"], n_neurons=n, shared_core=(core == "shared"),
                          dtype="float32", name="readout"))
    return keras.Sequential(layers, name=name)


def count_trainable(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))


# ---------------------------------------------------------------- per-neuron weights


def neuron_axis(layer, name):
    """The axis of `layer`'s weight `name` that indexes neurons, or None if shared."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return 0
    axes = getattr(layer, "neuron_axes", None)
    return None if axes is None else axes.get(name)


def var_name(layer, v):
    """`v`'s name inside `layer`: `kernel`, `attention/query/kernel` in a sublayer, or the
    last part of its path (a dropout layer's `seed_generator_state`). Unique per layer:
    checkpoints, `init_from` and `train.freeze` address variables as `<layer>/<name>`."""
    prefix = f"{layer.path}/" if layer.path else None
    if prefix and v.path.startswith(prefix):
        return v.path[len(prefix):]
    return v.path.split("/")[-1]


def neuron_weights(model, i):
    """Neuron `i`'s weights of an independent-core model: {layer: {var: array}}."""
    n = model.output_shape[-1]
    out = {}
    for layer in model.layers:
        ws = {}
        for v in layer.weights:
            axis = neuron_axis(layer, var_name(layer, v))
            a = np.asarray(v.numpy())
            if axis is not None:
                size = a.shape[axis] // n
                a = np.take(a, range(i * size, (i + 1) * size), axis=axis)
            ws[var_name(layer, v)] = a
        if ws:
            out[layer.name] = ws
    return out


def set_neuron_weights(model, i, weights):
    """Write one neuron's weights (as from `neuron_weights`) into slot `i` of `model`."""
    n = model.output_shape[-1]
    for layer in model.layers:
        for v in layer.weights:
            name = var_name(layer, v)
            if layer.name not in weights or name not in weights[layer.name]:
                raise KeyError(f"missing weight {layer.name}/{name}")
            new = np.asarray(weights[layer.name][name], dtype=v.dtype)
            axis = neuron_axis(layer, name)
            if axis is None:
                v.assign(new)
                continue
            a = np.array(v.numpy())
            size = a.shape[axis] // n
            idx = [slice(None)] * a.ndim
            idx[axis] = slice(i * size, (i + 1) * size)
            if a[tuple(idx)].shape != new.shape:
                raise ValueError(f"{layer.name}/{name}: shape {new.shape}, expected "
                                 f"{a[tuple(idx)].shape}")
            a[tuple(idx)] = new
            v.assign(a)


# ------------------------------------------------------------------ looking inside


def features(model, images, upto="readout", training=False):
    """Run `model`'s layers before the layer named `upto` on `images (B, 50, 50, 1)`."""
    x = images
    for layer in model.layers:
        if layer.name == upto:
            return x
        x = layer(x, training=training)
    raise ValueError(f"{model.name} has no layer {upto!r}")


def attention_maps(model, images):
    """Attention of SA models, `(B, n, heads, P, P)` with P = 81 positions of the 9x9 map."""
    sa = model.get_layer("self_attention") if has_attention(model) else None
    if sa is None:
        raise ValueError(f"{model.name} has no self_attention layer")
    _, attention = sa(features(model, images, upto="self_attention"), return_attention=True)
    return attention


def readout_contributions(model, images):
    """The readout's additive parts (see `Readout.contributions`), each `(B, n)`."""
    return model.get_layer("readout").contributions(features(model, images))


def has_attention(model):
    return any(layer.name == "self_attention" for layer in model.layers)
