"""Experiment configs: YAML with `model`, `data`, `train` and `eval` sections.

Every key has a default and a type here; unknown keys, bad types and missing files are
refused (ConfigError) before any work starts. `--set section.key=value` overrides a key,
the value parsed as YAML (`--set train.epochs=5`, `--set model.overrides.num_heads=2`).
`model.overrides` is merged key by key (a file's or `--set`'s keys add to, or replace,
those before them), so one override does not drop the others.

`--config NAME` names a shipped config (`shipped()`: `ff_sa_cnn`, `incremental/1_rf_cnn`,
...; installed with the package and read with importlib.resources), `--config PATH` a file.
"""
import copy
import dataclasses
import math
import pathlib
from importlib import resources
from typing import Any, Optional

import yaml

from . import models
from .errors import ConfigError
from .files import load_yaml, parse_yaml


def _field(default):
    """A dataclass field whose default is a fresh copy of `default`."""
    return dataclasses.field(default_factory=lambda: copy.deepcopy(default))

@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = "ff_sa_cnn"           # a name of tfsacnn.models
    core: str = "independent"         # independent | shared
    overrides: dict = _field({})      # tfsacnn.models options, e.g. channels, num_heads


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dir: Optional[str] = None         # dataset written by data_prep (manifest.json inside)
    neurons: Any = None               # null = all, "0:64", or a list of indices
    verify: bool = True               # check shard sha256 and record counts before reading
    manifest_sha256: Optional[str] = None  # written by fit: sha256 of DIR/manifest.json,
                                      # the identity of the data the run was trained on


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 50
    batch_size: int = 50
    optimizer: str = "adam"           # adam | adamw
    learning_rate: float = 1e-3
    weight_decay: float = 0.0         # adamw only
    loss: str = "mse"
    seed: int = 0
    shuffle: bool = True              # false: every epoch reads the train split in file order
    strategy: str = "auto"            # auto | default | mirrored | multiworker (TF); JAX:
                                      # auto | default | mirrored (keras.distribution)
    neurons_per_step: Optional[int] = None  # independent neurons trained together (memory
                                      # bound); null = auto: 64 on CPU, all on GPU; 0 = all
    init_from: Optional[str] = None   # RUN_DIR of an earlier stage (incremental protocol)
    init_blocks: Optional[list] = None  # blocks to load from init_from (null = all that fit)
    freeze: list = _field([])         # block names, or layer.variable names
    frozen_bn: str = "update_stats"   # update_stats (paper) | inference (Keras convention)
    checkpoint_every: int = 1         # epochs
    time_limit_s: Optional[float] = None  # stop at the last epoch boundary before this many
                                      # seconds of training (a job's wall-clock limit);
                                      # the run ends finished, with the epochs done
    epochs_trained: Optional[int] = None  # written by fit when the run finishes: the
                                      # epochs actually trained (< epochs after a time limit)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    top_k: int = 10
    selection_split: str = "val"      # per-neuron best epoch chosen on this split
    report_splits: list = _field(["val", "test"])  # those present in the dataset are reported
    tuning_curve_neurons: int = 4     # neurons drawn in TensorBoard each epoch
    batch_size: int = 500


@dataclasses.dataclass(frozen=True)
class Config:
    """A resolved, validated config: `Config.from_dict(load(...))`; `to_dict()` for YAML."""
    model: ModelConfig = _field(ModelConfig())
    data: DataConfig = _field(DataConfig())
    train: TrainConfig = _field(TrainConfig())
    source: dict = _field({})         # free-form provenance (e.g. imported .pth files)
    eval: EvalConfig = _field(EvalConfig())

    @classmethod
    def from_dict(cls, cfg):
        """From a dict as `load` returns it (already validated)."""
        if isinstance(cfg, Config):
            return cfg
        c = copy.deepcopy(cfg)
        return cls(model=ModelConfig(**c["model"]), data=DataConfig(**c["data"]),
                   train=TrainConfig(**c["train"]), source=c["source"],
                   eval=EvalConfig(**c["eval"]))

    def to_dict(self):
        return dataclasses.asdict(self)


DEFAULTS = Config().to_dict()


CHOICES = {
    ("model", "core"): models.CORES,
    ("model", "name"): tuple(models.names()),
    ("train", "optimizer"): ("adam", "adamw"),
    ("train", "loss"): ("mse",),
    ("train", "strategy"): ("auto", "default", "mirrored", "multiworker"),
    ("train", "frozen_bn"): ("update_stats", "inference"),
}
# Keys whose default is None: the types they accept.
FREE_FORM = {("model", "overrides"), ("source",)}  # mappings whose keys are not checked here
NULLABLE = {
    ("data", "dir"): (str,),
    ("data", "neurons"): (str, list, int),
    ("data", "manifest_sha256"): (str,),
    ("train", "epochs_trained"): (int,),
    ("train", "neurons_per_step"): (int,),
    ("train", "time_limit_s"): (int, float),
    ("train", "init_from"): (str,),
    ("train", "init_blocks"): (list,),
}


def _check_type(where, value, default, key):
    if value is None and key in NULLABLE:
        return
    if key in NULLABLE:
        ok = isinstance(value, NULLABLE[key]) and not isinstance(value, bool)
        expected = " or ".join(t.__name__ for t in NULLABLE[key])
    elif isinstance(default, bool):
        ok, expected = isinstance(value, bool), "bool"
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        expected = "number"
    elif isinstance(default, int):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "int"
    else:
        ok, expected = isinstance(value, type(default)), type(default).__name__
    if not ok:
        raise ConfigError(f"{where}: {'.'.join(key)} must be {expected}, got {value!r}")
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{where}: {'.'.join(key)} must be one of "
                          f"{', '.join(map(str, CHOICES[key]))}; got {value!r}")


def _merge(where, base, new, path=()):
    for k, v in new.items():
        key = path + (k,)
        if k not in base:
            known = ", ".join(sorted(base))
            raise ConfigError(f"{where}: unknown key {'.'.join(key)!r} (known: {known})")
        if isinstance(base[k], dict) and key not in FREE_FORM:
            if not isinstance(v, dict):
                raise ConfigError(f"{where}: {'.'.join(key)} must be a mapping")
            _merge(where, base[k], v, key)
        elif key in FREE_FORM:        # merged key by key: --set model.overrides.num_heads=2
            if not isinstance(v, dict):
                raise ConfigError(f"{where}: {'.'.join(key)} must be a mapping")
            base[k] = {**base[k], **copy.deepcopy(v)}
        else:
            _check_type(where, v, base[k], key)
            base[k] = copy.deepcopy(v)


def parse_set(item):
    """`section.key=value` -> ({section: {key: value}}) with value parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected section.key=value")
    path, raw = item.split("=", 1)
    value = parse_yaml(raw, f"--set {item}", ConfigError) if raw else None
    for part in reversed(path.split(".")):
        value = {part: value}
    return value


def _configs_root():
    """The shipped configs' folder: the package data `tfsacnn.configs` of an installed
    tfsacnn, else (a source checkout on sys.path, e.g. run from the repository root, where
    the checkout's `tfsacnn/` shadows an installed wheel) the checkout's `configs/`."""
    try:
        return resources.files("tfsacnn.configs")
    except ModuleNotFoundError:
        checkout = pathlib.Path(__file__).resolve().parent.parent / "configs"
        if (checkout / "ff_sa_cnn.yaml").is_file():
            return checkout
        raise ConfigError(f"tfsacnn.configs: the shipped configs are missing (not installed, "
                          f"and no {checkout})") from None


def shipped():
    """Names of the configs installed with tfsacnn: {"ff_sa_cnn": Traversable, ...}."""
    root = _configs_root()
    out = {}
    for folder in (root, root / "incremental"):
        prefix = "" if folder is root else "incremental/"
        for f in folder.iterdir():
            if f.name.endswith(".yaml"):
                out[prefix + f.name[:-len(".yaml")]] = f
    return dict(sorted(out.items()))


def locate(name):
    """`name` as a path to a YAML file, or the shipped config of that name (".yaml" optional).

    A file of that name comes first; otherwise a shipped config of that name (a directory
    of that name does not hide it). A shipped config is returned as its package resource
    (readable with `read_text`).
    """
    path = pathlib.Path(name)
    if path.is_file():
        return path
    key = str(name).removesuffix(".yaml").removeprefix("configs/")
    found = shipped()
    if key in found:
        return found[key]
    if path.is_dir():
        raise ConfigError(f"{name}: is a directory, not a config file (shipped configs: "
                          f"{', '.join(found)})")
    raise ConfigError(f"{name}: cannot read config (no such file, and no shipped config of "
                      f"that name; shipped: {', '.join(found)})")


def load(path=None, sets=(), where=None):
    """Resolved config dict from a YAML file or shipped config name (or the defaults)
    plus `--set` overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = locate(path)
        raw = load_yaml(path, ConfigError)
        if raw is None:
            raise ConfigError(f"{path}: the config is empty (a config without changes is "
                              f"'{{}}')")
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a config must be a mapping of sections")
        _merge(str(path), cfg, raw)
    sources = [where or str(path or "config")]   # the file (or the defaults), then each --set
    states = [copy.deepcopy(cfg)]
    for item in sets:
        _merge(f"--set {item}", cfg, parse_set(item))
        sources.append(f"--set {item}")
        states.append(copy.deepcopy(cfg))
    problem = _problem(cfg)
    if problem is not None:
        # blame the source after which this key's problem appeared and stayed
        j = len(states) - 1
        while j > 0 and (_problem(states[j - 1]) or (None,))[0] == problem[0]:
            j -= 1
        raise ConfigError(f"{sources[j]}: {problem[0]}{problem[1]}")
    return cfg


def validate(cfg, where):
    """Checks that need more than one key, and the model overrides.

    `where`: the error's prefix, or a function of the key ("train.epochs") that gives it.
    """
    at = where if callable(where) else (lambda key: where)
    problem = _problem(cfg)
    if problem is not None:
        raise ConfigError(f"{at(problem[0])}: {problem[0]}{problem[1]}")


class _Problem(Exception):
    pass


def _problem(cfg):
    """The first problem `validate` finds: (key, text after the key), or None."""
    try:
        _check(cfg)
    except _Problem as e:
        return e.args
    return None


def _check(cfg):
    def fail(key, problem):
        raise _Problem(key, problem) from None

    m = cfg["model"]
    try:
        models.resolve(m["name"], **m["overrides"])
    except (ValueError, TypeError) as e:
        fail("model.overrides", f": {e}")
    t = cfg["train"]
    for k in ("epochs", "batch_size", "checkpoint_every"):
        if t[k] < 1:
            fail(f"train.{k}", " must be >= 1")
    if not 0 < t["learning_rate"] < math.inf:
        fail("train.learning_rate", " must be a finite number > 0")
    if not 0 <= t["weight_decay"] < math.inf:
        fail("train.weight_decay", " must be a finite number >= 0")
    if t["time_limit_s"] is not None and not 0 < t["time_limit_s"] < math.inf:
        fail("train.time_limit_s", " must be a finite number of seconds > 0")
    if t["neurons_per_step"] is not None and t["neurons_per_step"] < 0:
        fail("train.neurons_per_step", " must be >= 0")
    if not 0 <= t["seed"] < 2**32:
        fail("train.seed", " must be in [0, 2**32)")   # the backends' seed range
    for entry in t["freeze"]:
        if not isinstance(entry, str):
            fail("train.freeze", f" entries must be strings, got {entry!r}")
        if models.block_of(entry.split(".")[0]) is None:
            fail("train.freeze", f": {entry!r} is not a block ({', '.join(models.BLOCKS)}) "
                                 f"or layer.variable name")
    for entry in t["init_blocks"] or []:
        if entry not in models.BLOCKS:
            fail("train.init_blocks", f": unknown block {entry!r}")
    if t["init_from"] is not None and not (pathlib.Path(t["init_from"]) / "model.keras").exists():
        fail("train.init_from", f": {t['init_from']}/model.keras not found")
    d = cfg["data"]
    if d["dir"] is not None and not (pathlib.Path(d["dir"]) / "manifest.json").exists():
        fail("data.dir", f": {d['dir']}/manifest.json not found")
    for k, lo in (("top_k", 1), ("batch_size", 1), ("tuning_curve_neurons", 0)):
        if cfg["eval"][k] < lo:
            fail(f"eval.{k}", f" must be >= {lo}")


def dump(cfg, path):
    """Write `cfg` as YAML atomically."""
    from .files import write_text

    write_text(path, yaml.safe_dump(cfg, sort_keys=False))
