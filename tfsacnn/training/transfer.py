"""The incremental protocol's parts: freezing blocks and copying weights from an earlier run."""
import pathlib

import keras

from .. import models
from ..errors import TfsacnnError


def apply_freeze(model, entries, frozen_bn="update_stats"):
    """Freeze blocks (`alpha_cpb1`) or single variables (`readout.center_kernel`).

    `frozen_bn="update_stats"` (the paper's code): frozen BatchNorm layers keep updating
    their running statistics in training, only gamma/beta stop learning.
    `"inference"` (the Keras convention): frozen BatchNorm layers run on their running
    statistics and never update them.
    Returns the names of the frozen variables.
    """
    frozen = []
    for entry in entries:
        layer_part, _, var_part = entry.partition(".")
        matched = False
        for layer in model.layers:
            if var_part:
                if layer.name != layer_part:
                    continue
            elif models.block_of(layer.name) != layer_part:
                continue
            for v in layer.weights:
                name = models.var_name(layer, v)
                if var_part and name != var_part:
                    continue
                v.trainable = False
                frozen.append(f"{layer.name}.{name}")
                matched = True
            if not var_part and frozen_bn == "inference" and isinstance(
                    layer, keras.layers.BatchNormalization):
                layer.trainable = False
        if not matched:
            raise TfsacnnError(f"freeze: {entry!r} matches no weights of {model.name}")
    return frozen


def init_from_run(model, run_dir, blocks=None):
    """Copy weights from `run_dir/model.keras` into `model`, layer by layer, by name.

    Only variables with the same layer name, variable name and shape are copied (a CTL's
    `center_kernel` becomes an FC1's centre branch). `blocks`: restrict to these blocks.
    Returns the copied `layer.variable` names.
    """
    src = keras.saving.load_model(pathlib.Path(run_dir) / "model.keras", compile=False)
    if src.output_shape[-1] != model.output_shape[-1]:
        raise TfsacnnError(f"{run_dir}: has {src.output_shape[-1]} neurons, this run "
                           f"{model.output_shape[-1]}")
    copied = []
    for layer in model.layers:
        if blocks is not None and models.block_of(layer.name) not in blocks:
            continue
        try:
            other = src.get_layer(layer.name)
        except ValueError:
            continue
        theirs = {models.var_name(other, v): v for v in other.weights}
        for v in layer.weights:
            name = models.var_name(layer, v)
            if name in theirs and tuple(theirs[name].shape) == tuple(v.shape):
                v.assign(theirs[name].numpy())
                copied.append(f"{layer.name}.{name}")
    if not copied:
        raise TfsacnnError(f"{run_dir}: no weights fit {model.name}")
    return copied
