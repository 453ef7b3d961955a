"""Configs: every shipped YAML resolves, names match the registry, bad keys are refused."""
import pytest

from tests.conftest import REPO
from tfsacnn import config, models
from tfsacnn.errors import ConfigError

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_resolve(path):
    cfg = config.load(path)
    if path.stem != "demo":
        assert cfg["model"]["name"] == path.stem  # one file per variant, named as the registry
        t = cfg["train"]  # the paper's protocol
        assert (t["optimizer"], t["learning_rate"], t["loss"], t["batch_size"], t["epochs"]) \
            == ("adam", 0.001, "mse", 50, 50)


def test_every_variant_has_a_config():
    assert {p.stem for p in CONFIGS} >= set(models.names())


def test_set_overrides_and_yaml_values():
    cfg = config.load(None, ["train.epochs=3", "model.overrides={num_heads: 2}",
                             "data.neurons=0:8", "train.freeze=[alpha_cpb1]"])
    assert cfg["train"]["epochs"] == 3 and cfg["model"]["overrides"] == {"num_heads": 2}
    assert cfg["data"]["neurons"] == "0:8" and cfg["train"]["freeze"] == ["alpha_cpb1"]


@pytest.mark.parametrize("sets, message", [
    (["trian.epochs=3"], "unknown key 'trian'"),
    (["train.epochs=3.5"], "train.epochs must be int"),
    (["train.learning_rate=fast"], "train.learning_rate must be number"),
    (["model.core=both"], "model.core must be one of"),
    (["model.name=resnet"], "model.name must be one of"),
    (["train.freeze=[gamma_cpb]"], "is not a block"),
    (["train.epochs"], "expected section.key=value"),
    (["model.overrides=3"], "model.overrides must be a mapping"),
])
def test_bad_values_refused(sets, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        config.load(None, sets)


def test_bad_files_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="invalid YAML"):
        config.load(bad)
    with pytest.raises(ConfigError, match="cannot read config"):
        config.load(tmp_path / "missing.yaml")
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        config.load(bad)


def test_dump_round_trip(tmp_path):
    cfg = config.load(REPO / "configs/incremental/1_rf_cnn.yaml")
    config.dump(cfg, tmp_path / "c.yaml")
    assert config.load(tmp_path / "c.yaml") == cfg
