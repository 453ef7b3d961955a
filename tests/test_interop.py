"""Parity of imported PyTorch checkpoints (tfsacnn.interop, tfsacnn.import_torch).

The torch networks below are written here from the paper's published architecture (not
taken from the reference code); only their attribute names follow the reference modules,
so that their state_dicts have the reference checkpoints' keys.
"""
import os
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import require

torch = require("torch")                       # a failure, not a skip, when CI is set
nn = torch.nn

from tfsacnn import errors, interop, models  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
N_IMAGES = 4


# --------------------------------------------------------------- torch reference nets


def alpha_cpb(c_in, c):
    """Conv k5 -> MaxPool 2 -> BN -> sigmoid -> Dropout2d (5 modules)."""
    return [nn.Conv2d(c_in, c, 5), nn.MaxPool2d(2), nn.BatchNorm2d(c), nn.Sigmoid(),
            nn.Dropout2d(0.3)]


def beta_cpbs(c, k):
    """Conv k -> BN -> sigmoid, Dropout2d, Conv k -> BN -> sigmoid (7 modules)."""
    return [nn.Conv2d(c, c, k), nn.BatchNorm2d(c), nn.Sigmoid(), nn.Dropout2d(0.3),
            nn.Conv2d(c, c, k), nn.BatchNorm2d(c), nn.Sigmoid()]


class SelfAttention(nn.Module):
    """The paper's SA block: A = softmax_keys(q^T k) (no scaling), out = g * A v + x."""

    def __init__(self, c, d, value_mapping):
        super().__init__()
        self.value_mapping = value_mapping
        self.query_conv = nn.Conv2d(c, d, 1)
        self.key_conv = nn.Conv2d(c, d, 1)
        # The reference module always owns the value/out convs, used or not.
        self.value_conv = nn.Conv2d(c, d, 1)
        self.o_proj = nn.Conv2d(d, c, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.shape
        q = self.query_conv(x).flatten(2)              # (B, d, P)
        k = self.key_conv(x).flatten(2)
        a = torch.softmax(torch.einsum("bdp,bdq->bpq", q, k), dim=-1)
        self.attention_map = a                         # (B, P queries, P keys)
        if self.value_mapping:
            v = self.value_conv(x).flatten(2)
            out = self.o_proj(torch.einsum("bpq,bdq->bdp", a, v).reshape(b, -1, h, w))
        else:
            out = torch.einsum("bpq,bcq->bcp", a, x.flatten(2)).reshape(b, c, h, w)
        return self.gamma * out + x


class CNN(nn.Module):
    """ff-CNN (k=3, FCL) / rf-CNN (k=1, CTL); readout named `Linear` as in the reference."""

    def __init__(self, c, k, readout):
        super().__init__()
        self.readout = readout
        self.layers = nn.Sequential(*alpha_cpb(1, c), *alpha_cpb(c, c), *beta_cpbs(c, k))
        s = 9 - 2 * (k - 1)
        self.Linear = nn.Linear(c * s * s if readout == "fcl" else c, 1)

    def forward(self, x):
        x = self.layers(x)
        x = x.flatten(1) if self.readout == "fcl" else x[:, :, 4, 4]
        return self.Linear(x)


class SACNN(nn.Module):
    """The SA variants: a_cpbs, attention, layers_sa_reg, b_cpbs, fcl | ctl | FC1."""

    def __init__(self, c, k, readout, value_mapping, d=5):
        super().__init__()
        self.readout = readout
        self.a_cpbs = nn.Sequential(*alpha_cpb(1, c), *alpha_cpb(c, c))
        self.attention = SelfAttention(c, d, value_mapping)
        self.layers_sa_reg = nn.Sequential(nn.BatchNorm2d(c), nn.Sigmoid(), nn.Dropout2d(0.3))
        self.b_cpbs = nn.Sequential(*beta_cpbs(c, k))
        s = 9 - 2 * (k - 1)
        if readout == "fcl":
            self.fcl = nn.Linear(c * s * s, 1)
        elif readout == "ctl":
            self.ctl = nn.Linear(c, 1)
        else:
            self.fcl_center = nn.Linear(c, 1)
            self.fcl_surr = nn.Linear(c * (s * s - 1), 1)
            self.fcl_comb = nn.Linear(2, 1)

    def forward(self, x):
        x = self.b_cpbs(self.layers_sa_reg(self.attention(self.a_cpbs(x))))
        if self.readout == "fcl":
            return self.fcl(x.flatten(1))
        if self.readout == "ctl":
            return self.ctl(x[:, :, 4, 4])
        p = x.flatten(2)                                   # (B, C, 81)
        surround = torch.cat([p[:, :, :40], p[:, :, 41:]], dim=2).flatten(1)
        return self.fcl_comb(torch.cat([self.fcl_center(p[:, :, 40]),
                                        self.fcl_surr(surround)], dim=1))


class Site(nn.Module):
    """Independent networks side by side; its state_dict is an avg_*.pth."""

    def __init__(self, nets):
        super().__init__()
        self.models = nn.ModuleList(nets)

    def forward(self, x):
        return torch.cat([m(x) for m in self.models], dim=1)


def make_net(name, channels=None):
    o = models.resolve(name)
    c = channels or o["channels"]
    if o["attention"] is None:
        return CNN(c, o["beta_kernel"], o["readout"])
    return SACNN(c, o["beta_kernel"], o["readout"], o["attention"] == "value_mapping")


def randomize(net, seed):
    """Random weights and non-trivial BN statistics (so a layout bug cannot hide)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(t, lo, hi):
        t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=g))

    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                gain = 8.0 if isinstance(m, nn.Linear) else 2.0  # readouts: visible spread
                bound = gain / m.weight[0].numel() ** 0.5
                rnd(m.weight, -bound, bound)
                rnd(m.bias, -0.5, 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                rnd(m.weight, 0.5, 2.0)
                rnd(m.bias, -0.5, 0.5)
                rnd(m.running_mean, -0.3, 0.3)
                rnd(m.running_var, 0.05, 0.5)
                m.num_batches_tracked.fill_(123)
        for m in net.modules():  # after the convs' own draw (modules() is pre-order)
            if isinstance(m, SelfAttention):
                rnd(m.gamma, 0.8, 1.5)
                m.query_conv.weight.mul_(4.0)   # peaky attention (max ~0.3, not ~1/81),
                m.key_conv.weight.mul_(4.0)     # so a 1/sqrt(d) scaling error shows
    return net.eval()


def images(seed=0):
    return np.random.default_rng(seed).normal(size=(N_IMAGES, 50, 50, 1)).astype(np.float32)


def torch_out(net, x):
    with torch.no_grad():
        return net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().reshape(len(x), -1)


def keras_out(model, x):
    return np.asarray(model(x, training=False))


def save(obj, path):
    torch.save(obj.state_dict() if isinstance(obj, nn.Module) else obj, path)
    return path


# ------------------------------------------------------------------------ parity


@pytest.mark.parametrize("name,channels", [
    ("ff_cnn", None), ("ff_sa_cnn", None), ("rf_cnn", None), ("rf_sa_cnn", None),
    ("ff_sa_cnn_star", None), ("rf_sa_cnn_star", None), ("ff_sa_cnn_star_fc1", None),
    ("rf_cnn", 30),  # the incremental protocol's 30-channel rf-CNN: channels come from shapes
])
def test_parity_per_neuron_files(tmp_path, name, channels):
    nets = [randomize(make_net(name, channels), seed=10 + i) for i in range(2)]
    paths = [save(net, tmp_path / f"neuron_{i}.pth") for i, net in enumerate(nets)]
    model = interop.load_sacnn_checkpoints(name, paths)
    x = images()
    want = np.concatenate([torch_out(net, x) for net in nets], axis=1)
    got = keras_out(model, x)
    assert got.shape == (N_IMAGES, 2)
    assert want.std(axis=0).min() > 2e-3, "degenerate test: outputs do not vary"
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    if models.has_attention(model):
        att = np.asarray(models.attention_maps(model, x))        # (B, n, heads, P, P)
        for i, net in enumerate(nets):
            np.testing.assert_allclose(att[:, i, 0], net.attention.attention_map.numpy(),
                                       atol=1e-5, rtol=0)
    if channels:
        assert model.get_layer("alpha_cpb1_conv").filters == channels


def test_parity_site_checkpoint_three_neurons(tmp_path):
    site = Site([randomize(make_net("ff_sa_cnn"), seed=20 + i) for i in range(3)]).eval()
    path = save(site, tmp_path / "avg_0_3.pth")
    assert any(k.startswith("models.2.attention.o_proj") for k in torch.load(path))
    model = interop.load_sacnn_checkpoints("ff_sa_cnn", path)
    x = images(1)
    np.testing.assert_allclose(keras_out(model, x), torch_out(site, x), atol=1e-4, rtol=0)


def test_rf_sa_cnn_without_unused_value_convs(tmp_path):
    net = randomize(make_net("rf_sa_cnn"), seed=3)
    state = {k: v for k, v in net.state_dict().items()
             if not k.startswith(("attention.value_conv", "attention.o_proj"))}
    model = interop.load_sacnn_checkpoints("rf_sa_cnn", save(state, tmp_path / "neuron_0.pth"))
    x = images(2)
    np.testing.assert_allclose(keras_out(model, x), torch_out(net, x), atol=1e-4, rtol=0)


# ------------------------------------------------------------------------ errors


@pytest.fixture(scope="module")
def ff_sa_state():
    return randomize(make_net("ff_sa_cnn"), seed=5).state_dict()


def _error(tmp_path, name, state_or_path):
    path = state_or_path
    if not isinstance(path, pathlib.Path):
        path = save(state_or_path, tmp_path / "neuron_0.pth")
    with pytest.raises(errors.DataError) as e:
        interop.load_sacnn_checkpoints(name, [path])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path) + ":"), msg
    return msg


def test_wrong_variant_names_key_and_guess(tmp_path):
    cnn = randomize(make_net("ff_cnn"), seed=6).state_dict()
    msg = _error(tmp_path, "ff_sa_cnn", cnn)
    assert "'a_cpbs.0.weight'" in msg and "ff_cnn" in msg


def test_wrong_variant_by_shape(tmp_path, ff_sa_state):
    msg = _error(tmp_path, "ff_sa_cnn_star", ff_sa_state)
    assert "'b_cpbs.0.weight'" in msg and "(30, 30, 3, 3)" in msg and "ff_sa_cnn" in msg


def test_missing_key(tmp_path, ff_sa_state):
    state = {k: v for k, v in ff_sa_state.items() if k != "attention.gamma"}
    assert "missing key 'attention.gamma'" in _error(tmp_path, "ff_sa_cnn", state)


def test_unexpected_key(tmp_path, ff_sa_state):
    state = {**ff_sa_state, "attention.extra.weight": torch.zeros(3)}
    assert "unexpected key 'attention.extra.weight'" in _error(tmp_path, "ff_sa_cnn", state)


def test_shape_mismatch(tmp_path, ff_sa_state):
    state = {**ff_sa_state, "fcl.weight": torch.zeros(1, 700)}
    msg = _error(tmp_path, "ff_sa_cnn", state)
    assert "'fcl.weight'" in msg and "(1, 700)" in msg and "(1, 750)" in msg


def test_truncated_and_missing_files(tmp_path, ff_sa_state):
    good = save(ff_sa_state, tmp_path / "good.pth")
    bad = tmp_path / "neuron_7.pth"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "truncated or corrupt" in _error(tmp_path, "ff_sa_cnn", bad)
    assert "no such file" in _error(tmp_path, "ff_sa_cnn", tmp_path / "absent.pth")


def _cli_error(tmp_path, pth, capsys, model="ff_sa_cnn"):
    """import_torch on one file: exit 2, one `error: <pth>: ...` line, no run written."""
    from tfsacnn.cli import import_torch

    out = tmp_path / "run"
    rc = import_torch.main(["--model", model, "--pth", str(pth), "--out", str(out)])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"error: {pth}: "), err
    assert not out.exists() and not list(tmp_path.glob("run.tmp-*"))
    return lines[0]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_weights_are_refused(tmp_path, ff_sa_state, capsys, value):
    w = ff_sa_state["b_cpbs.0.weight"].clone()
    w[0, 0, 0, 0] = value
    pth = save({**ff_sa_state, "b_cpbs.0.weight": w}, tmp_path / "neuron_0.pth")
    assert _cli_error(tmp_path, pth, capsys).endswith(
        "key 'b_cpbs.0.weight' has NaN or inf values")


def test_shape_error_names_the_inconsistent_key(tmp_path, ff_sa_state):
    """A value_conv weight cut to 2 rows: value_dim is read from the tensors most of them
    agree on (5), so the cut weight, not its consistent bias, is named."""
    state = {**ff_sa_state,
             "attention.value_conv.weight": ff_sa_state["attention.value_conv.weight"][:2]}
    msg = _error(tmp_path, "ff_sa_cnn", state)
    assert "key 'attention.value_conv.weight' has shape (2, 30, 1, 1)" in msg, msg
    assert "(5, 30, 1, 1)" in msg
    state = {**ff_sa_state, "a_cpbs.0.weight": ff_sa_state["a_cpbs.0.weight"][:7]}
    assert "key 'a_cpbs.0.weight' has shape (7, 1, 5, 5)" in _error(tmp_path, "ff_sa_cnn", state)


def test_files_that_are_not_checkpoints(tmp_path, capsys):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    npy = tmp_path / "weights.npy"
    np.save(npy, np.zeros((2, 3), np.float32))
    npz = tmp_path / "weights.npz"
    np.savez(npz, w=np.zeros(3))
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=2))
    for pth in (text, npy, npz, empty, plain):
        assert "not a PyTorch checkpoint" in _cli_error(tmp_path, pth, capsys), pth


def test_cli_writes_run_and_saved_model(tmp_path):
    import tensorflow as tf
    import yaml

    from tfsacnn.cli import import_torch

    nets = [randomize(make_net("rf_sa_cnn"), seed=30 + i) for i in range(2)]
    paths = [str(save(net, tmp_path / f"neuron_{i + 4}.pth")) for i, net in enumerate(nets)]
    out = tmp_path / "run"
    assert import_torch.main(["--model", "rf_sa_cnn", "--pth", *paths, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "model.keras", "saved_model"]
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"] == {"name": "rf_sa_cnn", "core": "independent", "overrides": {}}
    assert cfg["data"]["dir"] is None and cfg["data"]["neurons"] == [4, 5]
    assert {"train", "eval"} <= set(cfg) and len(cfg["source"]["pth"]) == 2

    x = images(3)
    want = np.concatenate([torch_out(net, x) for net in nets], axis=1)
    served = tf.saved_model.load(str(out / "saved_model"))
    np.testing.assert_allclose(served.serve(tf.constant(x)).numpy(), want, atol=1e-4, rtol=0)
    assert tuple(served.attention(tf.constant(x)).shape) == (N_IMAGES, 2, 1, 81, 81)
    import keras
    reloaded = keras.saving.load_model(out / "model.keras")
    np.testing.assert_allclose(keras_out(reloaded, x), want, atol=1e-4, rtol=0)
    # An existing run is kept unless --overwrite; --overwrite replaces runs only
    assert import_torch.main(["--model", "rf_sa_cnn", "--pth", *paths, "--out", str(out)]) == 2
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "lab_notes.txt").write_text("keep me")
    assert import_torch.main(["--model", "rf_sa_cnn", "--pth", *paths, "--out", str(notes),
                              "--overwrite"]) == 2
    assert [p.name for p in notes.iterdir()] == ["lab_notes.txt"]


def test_cli_error_is_one_line_exit_2(tmp_path, ff_sa_state, capsys):
    from tfsacnn.cli import import_torch

    assert import_torch.SUPPORTED == interop.SUPPORTED
    cnn = save(randomize(make_net("rf_cnn"), seed=8), tmp_path / "neuron_0.pth")
    rc = import_torch.main(["--model", "rf_sa_cnn", "--pth", str(cnn), "--out",
                            str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith(f"error: {cnn}: missing key")
    assert not (tmp_path / "run").exists()


def test_package_does_not_import_torch_and_cli_exit_code(tmp_path, ff_sa_state):
    """In a fresh interpreter: importing tfsacnn (models, interop, the CLI) leaves torch
    unimported; the CLI on a truncated file exits 2 with one `error: <file>:` line."""
    good = save(ff_sa_state, tmp_path / "good.pth")
    bad = tmp_path / "neuron_0.pth"
    bad.write_bytes(good.read_bytes()[:1000])
    code = ("import sys; import tfsacnn.models, tfsacnn.nn.layers, tfsacnn.interop, "
            "tfsacnn.import_torch as cli; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "sys.exit(cli.main(sys.argv[1:]))")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run([sys.executable, "-c", code, "--model", "ff_sa_cnn", "--pth", str(bad),
                        "--out", str(tmp_path / "run")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: "), r.stderr


def test_imported_run_answers_insilico_on_the_neurons_its_files_name(tmp_path, site):
    """An imported run has no metrics.json: the dataset neurons come from config.yaml's
    `data.neurons` (neuron_1, neuron_2 -> 1, 2), so `insilico --data` scores those."""
    import json

    from tfsacnn.cli import import_torch
    from tfsacnn.cli import main as cli

    nets = [randomize(make_net("ff_cnn"), seed=40 + i) for i in range(2)]
    paths = [str(save(net, tmp_path / f"neuron_{i + 1}.pth")) for i, net in enumerate(nets)]
    run = tmp_path / "run"
    assert import_torch.main(["--model", "ff_cnn", "--pth", *paths, "--out", str(run)]) == 0
    assert cli.main(["insilico", "--run", str(run), "--data", str(site), "--experiments", "rf",
                     "--quiet"]) == 0
    res = json.loads((run / "insilico" / "insilico.json").read_text())
    assert res["neurons"] == [1, 2]
    assert cli.main(["insilico", "--run", str(run), "--data", str(site), "--neurons", "0",
                     "--experiments", "rf", "--quiet", "--out", str(tmp_path / "o")]) == 2
