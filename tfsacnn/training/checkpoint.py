"""Training checkpoints with every variable stored under its name (`.npz`, no pickle).

Keys:
- `model/<layer>/<variable>` (e.g. `model/alpha_cpb1_conv/kernel`,
  `model/alpha_cpb1_dropout/seed_generator_state`: the dropout RNG);
- `optimizer/<variable>` (e.g. `optimizer/iteration`,
  `optimizer/ff_sa_cnn_alpha_cpb1_conv_kernel_momentum`);
- `best/<layer>/<variable>`: each neuron's best-epoch weights; `best_score`, `best_epoch`;
- `epoch`, `history` (JSON bytes).

Names, not positions: a checkpoint whose names or shapes differ from the model's is refused
with one line, so a reordered or renamed layer cannot load silently into the wrong weights.
The format is numpy's, so a checkpoint written under TensorFlow resumes under JAX.
"""
import json
import os
import pathlib
import zipfile

import numpy as np

from ..errors import TfsacnnError
from ..files import temporary


def model_names(model):
    """`<layer>/<variable>` for each of `model.variables`, in that order."""
    from ..models import var_name

    by_id = {}
    for layer in model.layers:
        for v in layer.variables:
            by_id.setdefault(id(v), f"{layer.name}/{var_name(layer, v)}")
    names = [by_id.get(id(v), v.path) for v in model.variables]
    if len(set(names)) != len(names):
        raise TfsacnnError(f"{model.name}: variable names are not unique; cannot checkpoint")
    return names


def optimizer_names(optimizer):
    """The optimizer's variable names without its own prefix (`adam/`)."""
    return [v.path.split("/", 1)[-1] for v in optimizer.variables]


def save(path, model, optimizer, best, epoch, history):
    """Write the checkpoint through a temporary file and a rename."""
    path = pathlib.Path(path)
    arrays = {}
    for name, v in zip(model_names(model), model.variables):
        arrays[f"model/{name}"] = np.asarray(v.numpy())
    for name, v in zip(optimizer_names(optimizer), optimizer.variables):
        arrays[f"optimizer/{name}"] = np.asarray(v.numpy())
    for name, value in zip(model_names(model), best.values):
        arrays[f"best/{name}"] = value
    arrays.update(best_score=best.score, best_epoch=best.epoch, epoch=np.array(epoch),
                  history=np.frombuffer(json.dumps(history).encode(), dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    with temporary(path, ".npz") as tmp:   # also Ctrl-C: no partial file left behind
        np.savez(tmp, **arrays)
        os.replace(tmp, path)


def load(path, model, optimizer, best):
    """Restore `model`, `optimizer` and `best` from `path`; returns (epoch, history).

    TfsacnnError (one line) for a corrupt file or names/shapes that do not match.
    """
    path = pathlib.Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise TfsacnnError(f"{path}: corrupt checkpoint ({e}); use --overwrite to start "
                           f"again") from None
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    names = model_names(model)
    groups = {"model": (names, model.variables),
              "optimizer": (optimizer_names(optimizer), optimizer.variables),
              "best": (names, None)}
    for group, (want, variables) in groups.items():
        have = sorted(k.split("/", 1)[1] for k in stored if k.startswith(group + "/"))
        if have != sorted(want):
            missing = sorted(set(want) - set(have))
            extra = sorted(set(have) - set(want))
            detail = "; ".join(filter(None, [
                f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
                if missing else "",
                f"unknown {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}"
                if extra else ""]))
            raise TfsacnnError(f"{path}: the checkpoint's {group} variables do not match "
                               f"this model ({detail}); use --overwrite to start again")
        for name, v in zip(want, variables or ()):
            value = stored[f"{group}/{name}"]
            if tuple(value.shape) != tuple(v.shape):
                raise TfsacnnError(f"{path}: {group}/{name} has shape {value.shape}, the "
                                   f"model {tuple(v.shape)}; use --overwrite to start again")
            v.assign(value)
    try:
        best.values = [stored[f"best/{name}"] for name in names]
        best.score, best.epoch = stored["best_score"], stored["best_epoch"]
        return int(stored["epoch"]), json.loads(bytes(stored["history"]).decode())
    except (KeyError, ValueError) as e:
        raise TfsacnnError(f"{path}: corrupt checkpoint ({e}); use --overwrite to start "
                           f"again") from None
