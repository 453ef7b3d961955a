"""The paper's model variants: the table (`variants`, no backend import) and the builder.

`build(name, n_neurons=1, core="independent", **overrides) -> keras.Sequential`, images
`(B, 50, 50, 1)` float32 -> responses `(B, n_neurons)`. The builder (and so Keras) is
imported on first use, so `tfsacnn.models.names()` and `resolve()` stay light.
"""
from .variants import (ATTENTION, BLOCKS, CONV_IMPLEMENTATIONS, CORES, DEFAULTS, IMAGE_SIZE,  # noqa: F401
                       OPTIONS, PAPER_PARAM_COUNTS, PRECISIONS, READOUTS, VARIANTS, block_of,
                       names, resolve)

_BUILDER = ("build", "count_trainable", "neuron_axis", "neuron_weights", "set_neuron_weights",
            "var_name",
            "features", "attention_maps", "readout_contributions", "has_attention")


def __getattr__(name):
    if name in _BUILDER:
        from . import builder
        return getattr(builder, name)
    raise AttributeError(f"module 'tfsacnn.models' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_BUILDER))
