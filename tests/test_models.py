"""Model zoo: parameter counts, independence, shared core, SA semantics, serialisation."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.conftest import randomize_statistics
import tensorflow as tf

from tfsacnn import models
from tfsacnn.nn.layers import (MaxPool2D, MultiHeadSelfAttention2D, NeuronConv2D, Readout,
                               SelfAttention2D)


def _images(b=4, seed=0):
    return np.random.default_rng(seed).normal(size=(b, 50, 50, 1)).astype("float32")


def _randomize_bn(model, seed=0):
    """Non-trivial BatchNorm statistics and SA gamma, so inference mode is a real test."""
    randomize_statistics(model, seed)


def spread_weights(model):
    """Weights x3 (query and key x4; FC1's combination kept): outputs of order 1 that vary
    over images, and peaky attention, so that a layout or scaling error shows."""
    for v in model.trainable_variables:
        gain = (1.0 if "combine" in v.path else 4.0 if "query" in v.path or "key" in v.path
                else 3.0)
        v.assign(np.asarray(v) * gain)


@pytest.mark.parametrize("name", sorted(models.PAPER_PARAM_COUNTS))
def test_trainable_params_match_paper(name):
    one = models.build(name)
    assert models.count_trainable(one) == models.PAPER_PARAM_COUNTS[name]
    five = models.build(name, n_neurons=5)
    assert models.count_trainable(five) == 5 * models.PAPER_PARAM_COUNTS[name]
    assert one.input_shape == (None, 50, 50, 1)
    assert five.output_shape == (None, 5)


def test_rf_sa_cnn_with_unused_value_convs_counts_26147():
    # The paper's 26,147 for rf_sa_cnn counts the value/out convs it keeps but does not use.
    m = models.build("rf_sa_cnn", attention="value_mapping")
    assert models.count_trainable(m) == 26147


@pytest.mark.parametrize("name", sorted(models.VARIANTS))
@pytest.mark.parametrize("impl", ["map", "grouped"])
def test_independent_core_equals_single_neuron_models(name, impl):
    """Neuron i's weights in a 1-neuron model reproduce output column i exactly."""
    n = 3
    big = models.build(name, n_neurons=n, dropout=0.0, conv_implementation=impl)
    _randomize_bn(big, seed=1)
    x = _images()
    # On CPU the grouped conv (the GPU path) only runs under XLA, so check it jit-compiled.
    on_cpu = not tf.config.list_logical_devices("GPU")
    run = tf.function(big, jit_compile=True) if impl == "grouped" and on_cpu else big
    for training in (False, True):
        y = np.asarray(run(x, training=training))
        for i in range(n):
            one = models.build(name, dropout=0.0)
            models.set_neuron_weights(one, 0, models.neuron_weights(big, i))
            yi = np.asarray(one(x, training=training))[:, 0]
            np.testing.assert_allclose(yi, y[:, i], atol=1e-5, err_msg=f"{training=} {i=}")


def test_neuron_weight_round_trip():
    big = models.build("ff_sa_cnn", n_neurons=3)
    w1 = models.neuron_weights(big, 1)
    other = models.build("ff_sa_cnn", n_neurons=3)
    models.set_neuron_weights(other, 2, w1)
    w2 = models.neuron_weights(other, 2)
    for layer, ws in w1.items():
        for k, v in ws.items():
            np.testing.assert_array_equal(v, w2[layer][k])
    with pytest.raises(ValueError, match="shape"):
        models.set_neuron_weights(models.build("ff_cnn", n_neurons=2), 0,
                                  models.neuron_weights(models.build("ff_cnn", channels=8), 0))


@pytest.mark.parametrize("name", ["ff_sa_cnn", "rf_cnn", "ff_sa_cnn_star_fc1"])
def test_shared_core(name):
    m = models.build(name, n_neurons=7, core="shared", channels=16)
    assert m.output_shape == (None, 7)
    conv = m.get_layer("alpha_cpb2_conv")
    assert conv.kernel.shape == (5, 5, 16, 16)  # one core for all neurons
    readout = m.get_layer("readout")
    assert readout.shared_core and readout.n_neurons == 7
    # Readout parameters grow per neuron, the core does not.
    m2 = models.build(name, n_neurons=8, core="shared", channels=16)
    per_neuron = models.count_trainable(m2) - models.count_trainable(m)
    assert per_neuron == sum(int(np.prod(v.shape)) for v in readout.trainable_weights) // 7
    y = m(_images(), training=False)
    assert y.shape == (4, 7)


def test_unknown_names_and_options_refused():
    with pytest.raises(ValueError, match="unknown model"):
        models.build("resnet")
    with pytest.raises(ValueError, match="unknown model option"):
        models.build("ff_cnn", chanels=3)
    with pytest.raises(ValueError, match="core"):
        models.build("ff_cnn", core="both")


# ----------------------------------------------------------------------- SA semantics


def test_sa_is_identity_when_gamma_is_zero():
    sa = SelfAttention2D(n_neurons=2, value_mapping=True)
    x = np.random.default_rng(0).normal(size=(3, 9, 9, 60)).astype("float32")
    np.testing.assert_array_equal(np.asarray(sa(x)), x)
    sa2 = SelfAttention2D(n_neurons=2, value_mapping=False, num_heads=3)
    np.testing.assert_array_equal(np.asarray(sa2(x)), x)


def test_sa_single_position_without_value_mapping_scales_input():
    """With one position the softmax is 1, so attended = x and out = (1 + gamma) x."""
    sa = SelfAttention2D(n_neurons=2, value_mapping=False)
    x = np.random.default_rng(1).normal(size=(4, 1, 1, 10)).astype("float32")
    sa.build(x.shape)
    sa.gamma.assign(np.array([0.5, -2.0], "float32"))
    out, att = sa(x, return_attention=True)
    expected = x.copy()
    expected[..., :5] *= 1.5
    expected[..., 5:] *= -1.0
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(att), 1.0)


def test_sa_matches_paper_formula_without_scaling():
    """out = gamma * Wo(softmax(q k^T) v) + x, no 1/sqrt(d), per neuron."""
    rng = np.random.default_rng(2)
    sa = SelfAttention2D(n_neurons=1, value_mapping=True)
    x = rng.normal(size=(2, 3, 3, 6)).astype("float32")
    sa.build(x.shape)
    for v in sa.weights:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    out, att = sa(x, return_attention=True)
    xp = x.reshape(2, 9, 6).astype("float64")
    w = {k: np.asarray(getattr(sa, k))[0] for k in
         ("query_kernel", "query_bias", "key_kernel", "key_bias", "value_kernel",
          "value_bias", "output_kernel", "output_bias")}
    q = xp @ w["query_kernel"] + w["query_bias"]
    k = xp @ w["key_kernel"] + w["key_bias"]
    e = q @ k.transpose(0, 2, 1)
    a = np.exp(e - e.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    v = xp @ w["value_kernel"] + w["value_bias"]
    ref = np.asarray(sa.gamma)[0] * ((a @ v) @ w["output_kernel"] + w["output_bias"]) + xp
    np.testing.assert_allclose(np.asarray(att)[:, 0, 0], a, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out).reshape(2, 9, 6), ref, rtol=1e-4, atol=1e-4)


def test_attention_maps_and_heads():
    m = models.build("ff_sa_cnn", n_neurons=2, num_heads=2)
    att = np.asarray(models.attention_maps(m, _images(3)))
    assert att.shape == (3, 2, 2, 81, 81)
    np.testing.assert_allclose(att.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["ff_sa_cnn", "rf_cnn", "ff_sa_cnn_star_fc1"])
def test_readout_contributions_sum_to_prediction(name):
    m = models.build(name, n_neurons=3)
    _randomize_bn(m)
    x = _images()
    parts = models.readout_contributions(m, x)
    total = sum(np.asarray(v) for v in parts.values())
    np.testing.assert_allclose(total, np.asarray(m(x, training=False)), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------- serialisation


@pytest.mark.parametrize("layer", [
    NeuronConv2D(4, 3, n_neurons=2, implementation="map", name="c"),
    SelfAttention2D(n_neurons=2, key_dim=3, num_heads=2, value_mapping=False, name="s"),
    Readout("fc1", n_neurons=3, shared_core=True, name="r"),
    MultiHeadSelfAttention2D(key_dim=3, value_dim=4, num_heads=2, name="m"),
    MaxPool2D(2, name="p"),
])
def test_layer_config_round_trip(layer):
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("core", ["independent", "shared"])
def test_keras_file_round_trip_in_a_fresh_process(tmp_path, core):
    m = models.build("ff_sa_cnn_star_fc1", n_neurons=2, num_heads=1, core=core)
    _randomize_bn(m)
    x = _images()
    path = tmp_path / "m.keras"
    m.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.asarray(m(x, training=False)))
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(again(x, training=False)),
                               np.load(tmp_path / "y.npy"), atol=1e-6)
    code = (
        "import numpy as np, keras, tfsacnn.nn.layers, sys\n"
        f"m = keras.saving.load_model(r'{path}')\n"
        f"x = np.load(r'{tmp_path / 'x.npy'}')\n"
        f"y = np.asarray(m(x, training=False))\n"
        f"np.testing.assert_allclose(y, np.load(r'{tmp_path / 'y.npy'}'), atol=1e-6)\n"
        "print('OK', m.name)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "OK ff_sa_cnn_star_fc1" in out.stdout


def test_mixed_bfloat16_precision_is_close_to_float32():
    """precision="mixed_bfloat16" computes in bf16 with float32 weights and responses."""
    x = _images()
    m32 = models.build("ff_sa_cnn", n_neurons=2)
    _randomize_bn(m32)
    m16 = models.build("ff_sa_cnn", n_neurons=2, precision="mixed_bfloat16")
    m16.set_weights(m32.get_weights())
    assert all(v.dtype == "float32" for v in m16.weights)
    assert m16.get_layer("alpha_cpb2_conv").compute_dtype == "bfloat16"
    y16 = m16(x, training=False)
    assert y16.dtype == "float32"
    np.testing.assert_allclose(np.asarray(y16), np.asarray(m32(x, training=False)),
                               atol=0.05, rtol=0.05)
    with pytest.raises(ValueError, match="precision"):
        models.build("ff_cnn", precision="float8")


# ------------------------------------------- shared core: keras.layers.MultiHeadAttention


def mha_weights_from_sa(sa):
    """A 1-group `SelfAttention2D` (value mapping) -> the `MultiHeadSelfAttention2D` weights
    of the same function: kernels reshaped to MHA's (C, heads, d) / (heads, d, C), and
    the query kernel and bias multiplied by sqrt(key_dim), which cancels MHA's
    1/sqrt(key_dim)."""
    h, d, dv = sa.num_heads, sa.key_dim, sa.value_dim
    w = {k: np.asarray(getattr(sa, k))[0] for k in
         ("query_kernel", "query_bias", "key_kernel", "key_bias", "value_kernel",
          "value_bias", "output_kernel", "output_bias")}
    c = w["query_kernel"].shape[0]
    scale = np.float32(np.sqrt(d))
    return {"gamma": np.asarray(sa.gamma),
            "attention/query/kernel": scale * w["query_kernel"].reshape(c, h, d),
            "attention/query/bias": scale * w["query_bias"].reshape(h, d),
            "attention/key/kernel": w["key_kernel"].reshape(c, h, d),
            "attention/key/bias": w["key_bias"].reshape(h, d),
            "attention/value/kernel": w["value_kernel"].reshape(c, h, dv),
            "attention/value/bias": w["value_bias"].reshape(h, dv),
            "attention/attention_output/kernel": w["output_kernel"].reshape(h, dv, c),
            "attention/attention_output/bias": w["output_bias"]}


def _assign_by_name(layer, weights):
    prefix = layer.path + "/"
    for v in layer.weights:
        v.assign(weights[v.path[len(prefix):]])


@pytest.mark.parametrize("num_heads", [1, 2])
def test_multi_head_attention_is_the_paper_block_with_sqrt_d_folded_into_the_query(num_heads):
    """Keras' MHA (scaled by 1/sqrt(key_dim)) with the query projection multiplied by
    sqrt(key_dim) computes exactly the paper's unscaled block, attention included."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 9, 9, 6)).astype("float32")
    sa = SelfAttention2D(n_neurons=1, num_heads=num_heads, value_mapping=True)
    sa.build(x.shape)
    for v in sa.weights:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    mha = MultiHeadSelfAttention2D(num_heads=num_heads)
    mha.build(x.shape)
    _assign_by_name(mha, mha_weights_from_sa(sa))
    out, att = sa(x, return_attention=True)
    out_mha, att_mha = mha(x, return_attention=True)
    assert att.shape == att_mha.shape == (3, 1, num_heads, 81, 81)
    assert np.asarray(att).max() > 0.5, "degenerate test: flat attention"
    np.testing.assert_allclose(np.asarray(att_mha), np.asarray(att), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(out_mha), np.asarray(out), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(mha(x)), np.asarray(out), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["ff_sa_cnn", "ff_sa_cnn_star_fc1"])
def test_shared_core_with_one_neuron_is_the_independent_network(name):
    """With one neuron the shared core (MHA) and the independent core (SelfAttention2D)
    compute the same function when the weights are mapped (MHA weights as above)."""
    keras.utils.set_random_seed(2)  # initial weights whose outputs vary over images
    ind = models.build(name, dropout=0.0)
    _randomize_bn(ind, seed=4)
    spread_weights(ind)
    shared = models.build(name, core="shared", dropout=0.0)
    assert isinstance(shared.get_layer("self_attention"), MultiHeadSelfAttention2D)
    assert models.count_trainable(shared) == models.count_trainable(ind)
    for a, b in zip(ind.layers, shared.layers):
        if a.name == "self_attention":
            _assign_by_name(b, mha_weights_from_sa(a))
        else:
            for va, vb in zip(a.weights, b.weights):
                vb.assign(np.asarray(va).reshape(vb.shape))
    x = _images()
    want = np.asarray(ind(x, training=False))
    assert want.std() > 5e-4, "degenerate test: outputs do not vary"
    np.testing.assert_allclose(np.asarray(shared(x, training=False)), want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(models.attention_maps(shared, x)),
                               np.asarray(models.attention_maps(ind, x)), atol=1e-5, rtol=0)


def test_shared_core_without_value_mapping_keeps_the_paper_block():
    """MHA cannot express v = x, so rf_sa_cnn's shared core keeps SelfAttention2D."""
    m = models.build("rf_sa_cnn", n_neurons=3, core="shared", num_heads=2)
    sa = m.get_layer("self_attention")
    assert type(sa) is SelfAttention2D and sa.n_neurons == 1 and not sa.value_mapping
    assert np.asarray(models.attention_maps(m, _images(2))).shape == (2, 1, 2, 81, 81)
    assert type(models.build("rf_sa_cnn_star", core="shared").get_layer("self_attention")) \
        is MultiHeadSelfAttention2D


def test_import_tfsacnn_registers_the_layers_without_importing_a_backend(tmp_path):
    """docs/internals.md: RUN/model.keras loads with `keras.saving.load_model` after
    `import tfsacnn` (the layers register when Keras is imported, not before)."""
    from tests.conftest import REPO

    model = models.build("ff_sa_cnn", n_neurons=2)
    randomize_statistics(model)
    model.save(tmp_path / "model.keras")
    x = np.random.default_rng(0).normal(size=(2, 50, 50, 1)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = ("import sys\nimport numpy as np\nimport tfsacnn\n"
            "assert not {'keras', 'tensorflow', 'jax'} & set(sys.modules), sorted(sys.modules)\n"
            "import keras\n"
            f"m = keras.saving.load_model({str(tmp_path / 'model.keras')!r}, compile=False)\n"
            f"print(np.asarray(m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0))"
            ".tolist())\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"},
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    np.testing.assert_allclose(eval(r.stdout.strip().splitlines()[-1]),
                               model.predict(x, verbose=0), atol=1e-5)
