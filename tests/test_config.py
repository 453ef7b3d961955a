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
    (["train.learning_rate=.nan"], "train.learning_rate must be a finite number > 0"),
    (["train.learning_rate=.inf"], "train.learning_rate must be a finite number > 0"),
    (["train.weight_decay=-1.0"], "train.weight_decay must be a finite number >= 0"),
    (["train.checkpoint_every=0"], "train.checkpoint_every must be >= 1"),
    (["eval.batch_size=0"], "eval.batch_size must be >= 1"),
    (["eval.tuning_curve_neurons=-1"], "eval.tuning_curve_neurons must be >= 0"),
    (["model.overrides={channels: four}"], "channels must be a positive integer, got 'four'"),
    (["model.overrides={channels: 0}"], "channels must be a positive integer, got 0"),
    (["model.overrides={dropout: 1.5}"], "dropout must be a number in"),
    (["model.overrides={readout: fcn}"], "readout must be one of"),
    (["model.overrides={synchronized_bn: 1}"], "synchronized_bn must be true or false"),
])
def test_bad_values_refused(sets, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        config.load(None, sets)


def test_bad_files_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)
    with pytest.raises(ConfigError, match="cannot read config"):
        config.load(tmp_path / "missing.yaml")
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        config.load(bad)
    bad.write_text("")                  # an empty file is a mistake, not "all defaults"
    with pytest.raises(ConfigError, match="the config is empty"):
        config.load(bad)
    bad.write_text("{}\n")
    assert config.load(bad) == config.load(None)


def test_dump_round_trip(tmp_path):
    cfg = config.load(REPO / "configs/incremental/1_rf_cnn.yaml")
    config.dump(cfg, tmp_path / "c.yaml")
    assert config.load(tmp_path / "c.yaml") == cfg


def test_errors_name_the_set_or_the_file_that_gave_the_value(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {batch_size: 0}\n")
    with pytest.raises(ConfigError) as e:
        config.load(path)
    assert str(e.value) == f"{path}: train.batch_size must be >= 1"
    path.write_text("train: {epochs: 3}\n")
    with pytest.raises(ConfigError) as e:
        config.load(path, ["train.batch_size=0"])
    assert str(e.value) == "--set train.batch_size=0: train.batch_size must be >= 1"
    with pytest.raises(ConfigError) as e:
        config.load(path, ["model.overrides.channels=0"])
    assert str(e.value).startswith("--set model.overrides.channels=0: model.overrides: channels")


def test_overrides_merge_key_by_key():
    path = REPO / "configs/incremental/1_rf_cnn.yaml"
    base = config.load(path)["model"]["overrides"]
    assert base["channels"] == 30
    got = config.load(path, ["model.overrides.num_heads=2"])["model"]["overrides"]
    assert got == {**base, "num_heads": 2}                  # channels: 30 is kept
    got = config.load(path, ["model.overrides={channels: 8}", "model.overrides.dropout=0.1"])
    assert got["model"]["overrides"] == {**base, "channels": 8, "dropout": 0.1}
    with pytest.raises(ConfigError, match="model.overrides must be a mapping"):
        config.load(path, ["model.overrides=3"])


def _pyproject():
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_pyproject_pins_one_tensorflow_wheel_and_gpu_extra():
    project = _pyproject()["project"]
    tf = [r for r in project["dependencies"] if r.split("==")[0] in ("tensorflow", "tensorflow-cpu")]
    assert tf == ["tensorflow==2.21.0"]
    assert "tensorboard==2.21.0" in project["dependencies"]
    assert "keras==3.15.1" in project["dependencies"]
    assert project["optional-dependencies"]["gpu"] == ["tensorflow[and-cuda]==2.21.0"]
    assert project["optional-dependencies"]["jax"] == ["jax==0.10.2"]
    assert project["scripts"] == {"tfsacnn": "tfsacnn.cli.main:main"}
    assert not any("addons" in r for r in project["dependencies"])


def test_two_tensorflow_wheels_are_reported(monkeypatch):
    import tfsacnn

    assert tfsacnn.tensorflow_wheels() == ["tensorflow"]            # this environment
    monkeypatch.setattr(tfsacnn.metadata, "version", lambda name: "2.21.0")
    assert tfsacnn.tensorflow_wheels() == ["tensorflow-cpu", "tensorflow"]


def test_shipped_configs_by_name():
    shipped = config.shipped()
    assert {"demo", "ff_sa_cnn", "incremental/1_rf_cnn"} <= set(shipped)
    by_name = config.load("ff_cnn")
    assert by_name == config.load(REPO / "configs" / "ff_cnn.yaml")
    assert config.load("ff_cnn.yaml") == by_name
    with pytest.raises(ConfigError, match="no shipped config of that name"):
        config.load("no_such_model")


def test_shipped_configs_from_a_source_checkout(monkeypatch):
    """Run from the repository root with the wheel installed, the checkout's tfsacnn/
    shadows the installed one and has no `tfsacnn.configs`: the checkout's configs/ serve."""
    real = config.resources.files

    def files(package):
        if package == "tfsacnn.configs":
            raise ModuleNotFoundError("No module named 'tfsacnn.configs'")
        return real(package)

    monkeypatch.setattr(config.resources, "files", files)
    shipped = config.shipped()
    assert {"demo", "ff_cnn", "incremental/1_rf_cnn"} <= set(shipped)
    assert shipped["ff_cnn"] == REPO / "configs" / "ff_cnn.yaml"
    assert config.load("ff_cnn") == config.load(REPO / "configs" / "ff_cnn.yaml")


def test_variant_configs_hold_only_what_differs_from_the_defaults():
    import yaml

    for name in models.names():
        raw = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
        assert raw == {"model": {"name": name}}, name
        assert config.load(name) == config.load(sets=[f"model.name={name}"])


BOMB = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 10)}]\n" for a, b in zip("abcdef", "bcdefg"))


@pytest.mark.parametrize("text,message", [
    ("train: {epochs: 2}\ntrain: {batch_size: 4}\n", r"key 'train' appears twice in one mapping "
                                                      r"\(lines 1 and 2\)"),
    ("train:\n  epochs: 2\n  epochs: 3\n", r"key 'epochs' appears twice .*lines 2 and 3"),
    ("model: {overrides: {channels: 8, channels: 9}}\n", "key 'channels' appears twice"),
    (BOMB, "aliases expand to more than 100000 YAML nodes"),
    ("train: &t {freeze: [*t]}\n", "recursive alias"),
])
def test_configs_are_read_strictly(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^{path}: .*{message}"):
        config.load(path)
    with pytest.raises(ConfigError, match=r"^--set model.overrides=\{a: 1, a: 2\}: key 'a' "):
        config.load(None, ["model.overrides={a: 1, a: 2}"])


def test_small_aliases_and_merge_keys_still_read(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("eval: {top_k: &k 3, batch_size: *k}\n"
                    "model: {overrides: {<<: {channels: 8, dropout: 0.5}, dropout: 0.1}}\n")
    cfg = config.load(path)
    assert cfg["eval"]["top_k"] == cfg["eval"]["batch_size"] == 3
    assert cfg["model"]["overrides"] == {"channels": 8, "dropout": 0.1}


def test_a_config_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("train:\n  epochs: 3   # café\n".encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        config.load(path)
    assert str(e.value) == f"{path}: not UTF-8 text (byte 0xe9 at offset 26); save it as UTF-8"


def test_a_file_typo_is_blamed_on_the_file_not_on_a_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: ff_sa_cnn, overrides: {num_headz: 2}}\n")
    with pytest.raises(ConfigError, match=f"^{path}: model.overrides: .*num_headz"):
        config.load(path, ["model.overrides.num_heads=2"])
    with pytest.raises(ConfigError, match=f"^{path}: model.overrides: .*num_headz"):
        config.load(path, ["model.name=ff_cnn", "train.epochs=2"])
    path.write_text("train: {epochs: 0}\n")   # a --set that fixes the file's value is fine
    assert config.load(path, ["train.epochs=2"])["train"]["epochs"] == 2
    with pytest.raises(ConfigError, match=r"^--set train.epochs=0: train.epochs must be >= 1"):
        config.load(None, ["train.epochs=3", "train.epochs=0"])


def test_a_local_directory_does_not_hide_a_shipped_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ff_cnn").mkdir()
    assert config.load("ff_cnn") == config.load(REPO / "configs" / "ff_cnn.yaml")
    (tmp_path / "mine").mkdir()
    with pytest.raises(ConfigError, match="^mine: is a directory, not a config file"):
        config.load("mine")
