"""The paper's incremental chain (configs/incremental) on a tiny site: frozen weights do
not move, and each stage starts from the one before."""
import keras
import numpy as np
import pytest

import tfsacnn.nn.layers  # noqa: F401
from tests.conftest import REPO
from tfsacnn.cli import fit

pytestmark = pytest.mark.slow

SMALL = ["--set", "train.epochs=1", "--set", "eval.tuning_curve_neurons=0"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory, monkeypatch_module):
    from data_prep.synthesize import synthesize

    root = tmp_path_factory.mktemp("chain")
    synthesize(root / "site", neurons=2, train=100, val=60, repeats=2, seed=2, progress=False)
    monkeypatch_module.chdir(root)  # the configs name runs/incremental/<stage>
    stages = ["1_rf_cnn", "2_rf_sa_cnn_star", "3_ff_sa_cnn_star_fc2", "3_ff_sa_cnn_star_fc1"]
    for stage in stages:
        code = fit.main(["--config", str(REPO / "configs/incremental" / f"{stage}.yaml"),
                         "--data", "site", "--out", f"runs/incremental/{stage}",
                         "--set", "model.overrides={channels: 6}", *SMALL])
        assert code == 0, stage
    return {s: keras.saving.load_model(root / "runs/incremental" / s / "model.keras")
            for s in stages}


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _vars(model, layer):
    return {v.path.split("/")[-1]: v.numpy() for v in model.get_layer(layer).weights}


def _same(a, b, layers, names=None):
    for layer in layers:
        wa, wb = _vars(a, layer), _vars(b, layer)
        for k in names or wa:
            np.testing.assert_array_equal(wa[k], wb[k], err_msg=f"{layer}.{k}")


ALPHA = ["alpha_cpb1_conv", "alpha_cpb2_conv"]
ALPHA_BN = ["alpha_cpb1_bn", "alpha_cpb2_bn"]
SA_BETA = ["self_attention", "self_attention_bn", "beta_cpb1_conv", "beta_cpb1_bn",
           "beta_cpb2_conv", "beta_cpb2_bn"]


def test_stage2_keeps_frozen_alpha_cpbs(chain):
    s1, s2 = chain["1_rf_cnn"], chain["2_rf_sa_cnn_star"]
    _same(s1, s2, ALPHA)
    _same(s1, s2, ALPHA_BN, ["gamma", "beta"])
    # update_stats (the paper's behaviour): the frozen BN's running statistics moved
    assert not np.allclose(_vars(s1, "alpha_cpb1_bn")["moving_mean"],
                           _vars(s2, "alpha_cpb1_bn")["moving_mean"])
    # the learned part did learn (it did not come from stage 1)
    assert not np.allclose(_vars(s1, "beta_cpb1_conv")["kernel"],
                           _vars(s2, "beta_cpb1_conv")["kernel"])


def test_stage3_fc2_learns_only_the_readout(chain):
    s2, fc2 = chain["2_rf_sa_cnn_star"], chain["3_ff_sa_cnn_star_fc2"]
    _same(s2, fc2, ALPHA + ["self_attention", "beta_cpb1_conv", "beta_cpb2_conv"])
    _same(s2, fc2, ALPHA_BN + ["self_attention_bn", "beta_cpb1_bn", "beta_cpb2_bn"],
          ["gamma", "beta"])
    assert fc2.get_layer("readout").kind == "fcl"


def test_stage3_fc1_keeps_ctl_as_frozen_centre_branch(chain):
    s2, fc1 = chain["2_rf_sa_cnn_star"], chain["3_ff_sa_cnn_star_fc1"]
    _same(s2, fc1, ALPHA + ["self_attention", "beta_cpb1_conv", "beta_cpb2_conv"])
    ro2, ro1 = _vars(s2, "readout"), _vars(fc1, "readout")
    np.testing.assert_array_equal(ro2["center_kernel"], ro1["center_kernel"])
    np.testing.assert_array_equal(ro2["center_bias"], ro1["center_bias"])
    assert "surround_kernel" in ro1 and "combine_kernel" in ro1


def test_frozen_bn_inference_mode_keeps_running_statistics(chain, tmp_path):
    from tfsacnn import models, training

    s1 = chain["1_rf_cnn"]
    m = models.build("rf_sa_cnn_star", n_neurons=2, channels=6)
    training.init_from_run(m, "runs/incremental/1_rf_cnn", ["alpha_cpb1", "alpha_cpb2"])
    frozen = training.apply_freeze(m, ["alpha_cpb1", "alpha_cpb2"], "inference")
    assert "alpha_cpb1_bn.moving_mean" in frozen
    before = _vars(m, "alpha_cpb1_bn")["moving_mean"].copy()
    m(np.random.default_rng(0).normal(size=(8, 50, 50, 1)).astype("float32"), training=True)
    np.testing.assert_array_equal(before, _vars(m, "alpha_cpb1_bn")["moving_mean"])
    np.testing.assert_array_equal(before, _vars(s1, "alpha_cpb1_bn")["moving_mean"])
    with pytest.raises(Exception, match="matches no weights"):
        training.apply_freeze(m, ["readout.nonexistent"])
