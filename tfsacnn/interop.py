"""Import the paper's trained PyTorch checkpoints (reference code: lucanren/sacnn).

    model = load_sacnn_checkpoints("ff_sa_cnn", ["neuron_0.pth", "neuron_1.pth"])
    model = load_sacnn_checkpoints("ff_sa_cnn", "avg_0_50.pth")

The reference code trains one small network per neuron and saves
- `neuron_{i}.pth`: one network's `state_dict()` (keys `a_cpbs.0.weight`, ...);
- `avg_{start}_{end}.pth`: the whole site's `state_dict()`, the same keys prefixed
  `models.{i}.` (i = 0 .. end-start-1).
Both become an independent-core tfsacnn model, one neuron per network, in the order given.

What is converted, per network (see `torch_layout` for the full key table):
- convolutions: PyTorch `(out, in, k, k)` (OIHW) -> Keras `(k, k, in, out)` (HWIO);
- BatchNorm: weight/bias/running_mean/running_var -> gamma/beta/moving_mean/
  moving_variance. Both sides use eps = 1e-5 (PyTorch's default; the state_dict does not
  store eps). `num_batches_tracked` is ignored;
- self-attention: the 1x1 convs `(d, C, 1, 1)` -> kernels `(C, d)`; `gamma (1,)` -> the
  neuron's gamma. The reference and `tfsacnn.nn.layers.SelfAttention2D` both use softmax(q k^T)
  with no 1/sqrt(d) scaling, so nothing is folded into the query projection;
- readouts: PyTorch flattens `(C, H, W)`, tfsacnn `(H, W, C)`; the FCL weight `(1, C*H*W)`
  is reordered to `(H, W, C)`. The CTL reads position 40 = (4, 4) of the 9x9 map on both
  sides. FC1's surround weight `(1, C*80)` is reordered to `(80, C)`.

rf_sa_cnn networks (value mapping off) still own `attention.value_conv` and
`attention.o_proj` in the reference code, so their checkpoints hold those weights although
the forward pass never uses them; they are accepted and ignored. Note that this makes an
rf_sa_cnn and an rf_sa_cnn_star checkpoint indistinguishable by their keys and shapes: the
variant name given decides whether the value mapping is used.

Channels, key_dim and value_dim are read from the checkpoint's shapes; values other than
the registry's defaults (e.g. the 30-channel rf-CNN of the incremental protocol) become
`models.build` overrides.

torch is imported only inside these functions; `pip install tfsacnn[torch]`.
Any problem with a checkpoint raises `DataError("<file>: <problem>")` (one line).
"""
import contextlib
import copy
import os
import pathlib
import re

import numpy as np

from . import models
from .errors import DataError, TfsacnnError
from .files import atomic_dir, sha256

# Variants whose reference module we map (the variant's name in tfsacnn.models).
SUPPORTED = ("ff_cnn", "ff_sa_cnn", "rf_cnn", "rf_sa_cnn", "ff_sa_cnn_star",
             "rf_sa_cnn_star", "ff_sa_cnn_star_fc1")

_MAP_SIZE = 9  # the map after two alpha-CPBs of a 50x50 image
_BN_VARS = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
            ("running_var", "moving_variance"))
_SA_CONVS = (("query_conv", "query"), ("key_conv", "key"), ("value_conv", "value"),
             ("o_proj", "output"))


# ------------------------------------------------------------------- key layout


def torch_layout(name, channels=None, key_dim=None, value_dim=None):
    """The reference module's state_dict for variant `name`, one network.

    -> (entries, optional), where `entries` is a list of
    `(torch_key, torch_shape, layer_name, var_name, kind)` and `optional` the set of keys
    that may be present and are ignored (besides `*.num_batches_tracked`).
    `kind` says how the tensor is converted (see `_convert`).
    """
    if name not in SUPPORTED:
        raise ValueError(f"cannot import {name!r} checkpoints; supported: {', '.join(SUPPORTED)}")
    o = models.resolve(name)
    c = int(channels or o["channels"])
    dk = int(key_dim or o["key_dim"])
    dv = int(value_dim or o["value_dim"])
    kb = o["beta_kernel"]
    sa = o["attention"] is not None
    entries, optional = [], set()

    def conv(key, layer, c_in, k):
        entries.append((f"{key}.weight", (c, c_in, k, k), layer, "kernel", "conv"))
        entries.append((f"{key}.bias", (c,), layer, "bias", "copy"))

    def bn(key, layer):
        for t, k in _BN_VARS:
            entries.append((f"{key}.{t}", (c,), layer, k, "copy"))

    seq = "a_cpbs" if sa else "layers"  # nn.Sequential of the alpha-CPBs
    conv(f"{seq}.0", "alpha_cpb1_conv", 1, 5)  # Conv, MaxPool, BN, Sigmoid, Dropout2d
    bn(f"{seq}.2", "alpha_cpb1_bn")
    conv(f"{seq}.5", "alpha_cpb2_conv", c, 5)
    bn(f"{seq}.7", "alpha_cpb2_bn")
    if sa:
        a = "attention"
        for t, k in _SA_CONVS:
            d_out, d_in = {"query": (dk, c), "key": (dk, c), "value": (dv, c),
                           "output": (c, dv)}[k]
            keys = (f"{a}.{t}.weight", f"{a}.{t}.bias")
            if k in ("value", "output") and o["attention"] != "value_mapping":
                optional.update(keys)  # unused without value mapping
                continue
            entries.append((keys[0], (d_out, d_in, 1, 1), "self_attention", f"{k}_kernel",
                            "sa_conv"))
            entries.append((keys[1], (d_out,), "self_attention", f"{k}_bias", "lead1"))
        entries.append((f"{a}.gamma", (1,), "self_attention", "gamma", "copy"))
        bn("layers_sa_reg.0", "self_attention_bn")  # BN, Sigmoid, Dropout2d
        beta = ("b_cpbs.0", "b_cpbs.1", "b_cpbs.4", "b_cpbs.5")
    else:  # alpha ... Dropout2d (9), Conv (10), BN (11), Sigmoid, Dropout2d, Conv (14), BN (15)
        beta = ("layers.10", "layers.11", "layers.14", "layers.15")
    conv(beta[0], "beta_cpb1_conv", c, kb)
    bn(beta[1], "beta_cpb1_bn")
    conv(beta[2], "beta_cpb2_conv", c, kb)
    bn(beta[3], "beta_cpb2_bn")

    s = _MAP_SIZE - 2 * (kb - 1)
    readout = o["readout"]
    if not sa:
        head = {"fcl": "Linear", "ctl": "Linear"}[readout]
    else:
        head = {"fcl": "fcl", "ctl": "ctl", "fc1": None}[readout]
    if readout == "fcl":
        entries.append((f"{head}.weight", (1, c * s * s), "readout", "kernel", "fcl"))
        entries.append((f"{head}.bias", (1,), "readout", "bias", "copy"))
    elif readout == "ctl":
        entries.append((f"{head}.weight", (1, c), "readout", "center_kernel", "copy"))
        entries.append((f"{head}.bias", (1,), "readout", "center_bias", "copy"))
    else:  # fc1: fcl_center (centre), fcl_surr (the other 80 positions), fcl_comb (2 -> 1)
        p = s * s - 1
        entries += [("fcl_center.weight", (1, c), "readout", "center_kernel", "copy"),
                    ("fcl_center.bias", (1,), "readout", "center_bias", "copy"),
                    ("fcl_surr.weight", (1, c * p), "readout", "surround_kernel", "surround"),
                    ("fcl_surr.bias", (1,), "readout", "surround_bias", "copy"),
                    ("fcl_comb.weight", (1, 2), "readout", "combine_kernel", "copy"),
                    ("fcl_comb.bias", (1,), "readout", "combine_bias", "copy")]
    return entries, optional


def _convert(kind, a, channels):
    """One torch tensor (numpy) -> the single-neuron layout of `models.neuron_weights`."""
    if kind == "conv":  # (out, in, k, k) -> (k, k, in, out)
        return a.transpose(2, 3, 1, 0)
    if kind == "sa_conv":  # (d_out, d_in, 1, 1) -> (1, d_in, d_out)
        return a[:, :, 0, 0].T[None]
    if kind == "lead1":  # (d,) -> (1, d)
        return a[None]
    if kind == "fcl":  # (1, C*H*W), flattened (C, H, W) -> (H, W, 1, C)
        s = int(round((a.shape[1] // channels) ** 0.5))
        return a.reshape(channels, s, s).transpose(1, 2, 0)[:, :, None, :]
    if kind == "surround":  # (1, C*P) flattened (C, P) -> (P, 1, C)
        return a.reshape(channels, -1).T[:, None, :]
    return a  # "copy"


# ------------------------------------------------------------------ reading files


def _torch():
    try:
        import torch
    except ImportError:
        raise DataError("reading .pth checkpoints needs PyTorch: "
                        "pip install 'tfsacnn[torch]'") from None
    return torch


def _one_line(e):
    text = str(e).strip().splitlines()
    text = text[0] if text else type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# torch.save's legacy (non-zip) format: a pickle stream that starts with this number.
_LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _check_format(path):
    """Refuse a file that is not in either of torch.save's formats (a zip archive holding
    `*/data.pkl`, or the legacy pickle stream): "<path>: not a PyTorch checkpoint"."""
    import zipfile

    with open(path, "rb") as f:
        head = f.read(32)
    if not head:
        raise DataError(f"{path}: not a PyTorch checkpoint (empty file)")
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            return  # a truncated archive: torch.load says what is wrong
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            raise DataError(f"{path}: not a PyTorch checkpoint (a zip archive without "
                            f"data.pkl, e.g. an .npz file)")
        return
    if not (head[:1] == b"\x80" and _LEGACY_MAGIC in head):
        what = (" (a NumPy .npy file)" if head.startswith(b"\x93NUMPY")
                else " (a pickle without torch's magic number)" if head[:1] == b"\x80" else "")
        raise DataError(f"{path}: not a PyTorch checkpoint{what}")


def _load_file(path):
    """torch.load one file -> {key: float32 ndarray}. DataError names the file."""
    torch = _torch()
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    _check_format(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one clear error
        if "weights only load failed" in str(e).lower():
            raise DataError(f"{path}: holds objects other than tensors (a pickled module?); "
                            f"only state_dicts are read (torch.save(net.state_dict(), ...))"
                            ) from None
        raise DataError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): "
                        f"{_one_line(e)}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise DataError(f"{path}: not a state_dict (expected a mapping of parameter names "
                        f"to tensors, got {type(obj).__name__})")
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise DataError(f"{path}: key {k!r} is not a tensor entry; not a state_dict")
        if k.endswith("num_batches_tracked"):
            continue
        if not v.is_floating_point():
            raise DataError(f"{path}: key {k!r} has dtype {v.dtype}, expected floats")
        a = v.detach().to(device="cpu", dtype=torch.float32).numpy()
        if not np.isfinite(a).all():
            raise DataError(f"{path}: key {k!r} has NaN or inf values")
        out[k] = a
    return out


_MODELS_KEY = re.compile(r"^models\.(\d+)\.(.+)$")


def _split_site(path, state):
    """A `seperate_core_model` state_dict (`models.{i}.` keys) -> [per-network dicts]."""
    nets = {}
    for k, v in state.items():
        m = _MODELS_KEY.match(k)
        if m is None:
            raise DataError(f"{path}: key {k!r} lacks the 'models.{{i}}.' prefix that the "
                            f"other keys of this site checkpoint have")
        nets.setdefault(int(m.group(1)), {})[m.group(2)] = v
    n = len(nets)
    if sorted(nets) != list(range(n)):
        missing = sorted(set(range(max(nets) + 1)) - set(nets))
        raise DataError(f"{path}: network indices are not 0..{n - 1} (missing "
                        f"'models.{missing[0]}.*')")
    return [nets[i] for i in range(n)]


def _global_neurons(path, count):
    """Dataset neuron indices from the reference file names, or None."""
    stem = pathlib.Path(path).stem
    m = re.fullmatch(r"neuron_(\d+)", stem)
    if m and count == 1:
        return [int(m.group(1))]
    m = re.fullmatch(r"avg_(\d+)_(\d+)", stem)
    if m and int(m.group(2)) - int(m.group(1)) == count:
        return list(range(int(m.group(1)), int(m.group(2))))
    return None


def _as_list(paths):
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    return list(paths)


def _read_files(paths):
    """-> [(path, [(label, state), ...])], one entry per file."""
    paths = _as_list(paths)
    if not paths:
        raise DataError("no checkpoint given")
    files = []
    for p in paths:
        state = _load_file(p)
        if any(k.startswith("models.") for k in state):
            nets = [(f"{p} [models.{i}]", s) for i, s in enumerate(_split_site(p, state))]
        else:
            nets = [(str(p), state)]
        files.append((p, nets))
    return files


def read_checkpoints(paths):
    """Read `neuron_*.pth` / `avg_*.pth` files.

    -> list of `(label, state)`, one per network in file order, where `label` names the
    file (and `models.{i}` inside a site checkpoint) for error messages and `state` is
    `{torch_key: float32 ndarray}` without `num_batches_tracked`.
    """
    return [net for _, nets in _read_files(paths) for net in nets]


def neuron_indices(paths_and_counts):
    """Dataset neuron indices implied by the reference file names, or None.

    `neuron_{i}.pth` -> [i]; `avg_{start}_{end}.pth` -> start .. end-1 (the reference
    trains `resp[:, start:end]`). None unless every file has such a name and no index
    repeats.
    """
    out = []
    for path, count in paths_and_counts:
        ids = _global_neurons(path, count)
        if ids is None:
            return None
        out += ids
    return out if len(set(out)) == len(out) else None


# -------------------------------------------------------------------- conversion


def _vote(state, sources):
    """The size most of `sources` ((key, ndim, axis) triples) agree on, or None.

    Several tensors carry each dimension, so one mis-shaped tensor is outvoted and then
    blamed by `_check`, rather than making its consistent neighbours look wrong. Ties go
    to the earliest source.
    """
    sizes = [state[k].shape[axis] for k, ndim, axis in sources
             if k in state and state[k].ndim == ndim]
    if not sizes:
        return None
    return max(dict.fromkeys(sizes), key=sizes.count)


def _infer_dims(name, state):
    """channels, key_dim, value_dim from the tensors' shapes (None where absent)."""
    o = models.resolve(name)
    sa = o["attention"] is not None
    seq = "a_cpbs" if sa else "layers"
    channels = [(f"{seq}.0.weight", 4, 0), (f"{seq}.0.bias", 1, 0)]
    channels += [(f"{seq}.2.{t}", 1, 0) for t, _ in _BN_VARS]
    channels += [(f"{seq}.5.weight", 4, 0), (f"{seq}.5.weight", 4, 1), (f"{seq}.5.bias", 1, 0)]
    dims = {"channels": _vote(state, channels), "key_dim": None, "value_dim": None}
    a = "attention"
    if sa:
        dims["key_dim"] = _vote(state, [(f"{a}.query_conv.weight", 4, 0),
                                        (f"{a}.query_conv.bias", 1, 0),
                                        (f"{a}.key_conv.weight", 4, 0),
                                        (f"{a}.key_conv.bias", 1, 0)])
    if o["attention"] == "value_mapping":
        dims["value_dim"] = _vote(state, [(f"{a}.value_conv.weight", 4, 0),
                                          (f"{a}.value_conv.bias", 1, 0),
                                          (f"{a}.o_proj.weight", 4, 1)])
    return dims


def _matches(name, state):
    """True if `state` is a complete, consistent checkpoint of variant `name`."""
    try:
        _check(name, state, "", _infer_dims(name, state))
    except DataError:
        return False
    return True


def _guess(name, state):
    others = [v for v in SUPPORTED if v != name and _matches(v, state)]
    if not others:
        return ""
    return f" (the checkpoint matches {' or '.join(others)})"


def _check(name, state, where, dims, hint=False):
    """Missing, unexpected and mis-shaped keys -> DataError naming the key."""
    entries, optional = torch_layout(name, **dims)
    expected = {e[0]: e[1] for e in entries}
    guess = (lambda: _guess(name, state)) if hint else (lambda: "")
    for key in expected:
        if key not in state:
            raise DataError(f"{where}: missing key {key!r} for model {name}{guess()}")
    for key in state:
        if key not in expected and key not in optional:
            raise DataError(f"{where}: unexpected key {key!r} for model {name}{guess()}")
    for key, shape in expected.items():
        if tuple(state[key].shape) != tuple(shape):
            raise DataError(f"{where}: key {key!r} has shape {tuple(state[key].shape)}, model "
                            f"{name} needs {tuple(shape)}{guess()}")
    return entries


def convert_state_dict(name, state, where="checkpoint"):
    """One reference network's state_dict -> (weights, dims).

    `weights` is `{layer_name: {var_name: ndarray}}` in the single-neuron layout of
    `models.neuron_weights`; `dims` is `{channels, key_dim, value_dim}` read from shapes.
    """
    if name not in SUPPORTED:
        raise DataError(f"{where}: cannot import {name!r} checkpoints; supported: "
                        f"{', '.join(SUPPORTED)}")
    dims = _infer_dims(name, state)
    entries = _check(name, state, where, dims, hint=True)
    c = dims["channels"]
    weights = {}
    for key, _, layer, var, kind in entries:
        weights.setdefault(layer, {})[var] = _convert(kind, state[key], c)
    return weights, dims


def _overrides(name, dims):
    o = models.resolve(name)
    return {k: int(v) for k, v in dims.items() if v is not None and int(v) != o[k]}


def _key_of(name, dims):
    entries, _ = torch_layout(name, **dims)
    return {(e[2], e[3]): e[0] for e in entries}


def load_sacnn_checkpoints(name, paths):
    """Build an independent-core `name` model holding the reference networks in `paths`.

    `paths`: `neuron_{i}.pth` files (one network each) and/or `avg_*.pth` site
    checkpoints (`models.{i}.` keys, one network per index), in neuron order.
    Returns a `keras.Model` with one output per network. Raises `DataError`.
    """
    return _load(name, paths)[0]


def _load(name, paths):
    if name not in SUPPORTED:
        raise DataError(f"{name}: cannot import this variant; supported: {', '.join(SUPPORTED)}")
    files = _read_files(paths)
    converted, dims0, where0 = [], None, None
    for where, state in (net for _, nets in files for net in nets):
        weights, dims = convert_state_dict(name, state, where)
        if dims0 is None:
            dims0, where0 = dims, where
        elif dims != dims0:
            diff = [k for k in dims if dims[k] != dims0[k]][0]
            raise DataError(f"{where}: {diff} {dims[diff]} differs from {dims0[diff]} in "
                            f"{where0}; all networks of one model must have the same shape")
        converted.append(weights)
    overrides = _overrides(name, dims0)
    model = models.build(name, n_neurons=len(converted), core="independent", **overrides)
    _assign(model, converted, _key_of(name, dims0), where0)
    return model, overrides, neuron_indices((p, len(nets)) for p, nets in files)


def _assign(model, converted, key_of, where):
    """Stack the networks' weights along each variable's neuron axis and assign once."""
    n = len(converted)
    template = models.neuron_weights(model, 0)
    for layer in model.layers:
        if layer.name not in template:
            continue
        for v in layer.weights:
            var = v.path.split("/")[-1]
            if var not in template[layer.name]:
                continue
            single = template[layer.name][var].shape
            parts = []
            for w in converted:
                if layer.name not in w or var not in w[layer.name]:
                    raise DataError(f"{where}: nothing in the checkpoint maps to "
                                    f"{layer.name}/{var}")
                a = w[layer.name][var]
                if a.shape != single:
                    key = key_of.get((layer.name, var), f"{layer.name}/{var}")
                    raise DataError(f"{where}: key {key!r} converts to shape {a.shape}, "
                                    f"{layer.name}/{var} needs {single}")
                parts.append(a)
            full = tuple(v.shape)
            if n == 1:
                value = parts[0].reshape(full)
            else:
                axis = [i for i, (f, s) in enumerate(zip(full, single)) if f != s]
                if len(axis) != 1 or full[axis[0]] != n * single[axis[0]]:
                    raise RuntimeError(f"{layer.name}/{var}: no unique neuron axis "
                                       f"({full} vs {single})")
                value = np.concatenate(parts, axis=axis[0])
            v.assign(value.astype(v.dtype))


# ------------------------------------------------------------------- run directory


def run_config(name, paths, overrides, neurons=None):
    """The run's config.yaml content: a training run's sections plus `source`.

    `data.neurons` is set to the dataset neuron indices that the reference file names
    imply (`neuron_indices`), when they do; `data.dir` is null.
    """
    from . import config as _config

    cfg = copy.deepcopy(_config.DEFAULTS)
    cfg["model"] = {**cfg["model"], "name": name, "core": "independent",
                    "overrides": dict(overrides)}
    cfg["data"] = {**cfg["data"], "dir": None}
    if neurons is not None:
        cfg["data"]["neurons"] = list(neurons)
    cfg["source"] = {"pth": [str(pathlib.Path(p).resolve()) for p in paths]}
    return cfg


def write_run(name, paths, out, overwrite=False):
    """Import `paths` as variant `name` and write a run directory at `out`.

    Writes `model.keras`, `saved_model/` (endpoints `serve`, and `attention` for SA models)
    and `config.yaml`, in a temporary directory renamed to `out` at the end.
    No `metrics.json`: `tfsacnn.evaluate` computes it. Returns `out` as a Path.
    """
    import yaml

    from . import export

    from .runs import RunLock, check_run_dir

    out = pathlib.Path(out)
    try:
        check_run_dir(out, resume=False, overwrite=overwrite)
    except TfsacnnError as e:
        raise DataError(str(e)) from None
    paths = [pathlib.Path(p) for p in _as_list(paths)]
    model, overrides, neurons = _load(name, paths)
    cfg = run_config(name, paths, overrides, neurons)

    def write(tmp):
        tmp.mkdir()
        model.save(tmp / "model.keras")
        export.export_saved_model(model, tmp / "saved_model", stamp=sha256(tmp / "model.keras"))
        (tmp / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    with RunLock(out) if out.is_dir() else contextlib.nullcontext():  # --overwrite of a run
        atomic_dir(out, write)
    return out
