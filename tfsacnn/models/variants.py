"""The paper's model variants as a table, and the options each accepts (no TensorFlow).

`VARIANTS` configures one chain of blocks (`tfsacnn.models.builder`); `resolve` checks a
variant's options, so configs can be validated without importing a backend.
"""


IMAGE_SIZE = 50

# The paper's variants. `attention`: None, or the SA block's value-mapping switch.
VARIANTS = {
    "ff_cnn": dict(channels=32, attention=None, beta_kernel=3, readout="fcl"),
    "ff_sa_cnn": dict(channels=30, attention="value_mapping", beta_kernel=3, readout="fcl"),
    "rf_cnn": dict(channels=32, attention=None, beta_kernel=1, readout="ctl"),
    "rf_sa_cnn": dict(channels=30, attention="identity_value", beta_kernel=1, readout="ctl"),
    "ff_sa_cnn_star": dict(channels=30, attention="value_mapping", beta_kernel=1,
                           readout="fcl"),
    "rf_sa_cnn_star": dict(channels=30, attention="value_mapping", beta_kernel=1,
                           readout="ctl"),
    "ff_sa_cnn_star_fc1": dict(channels=30, attention="value_mapping", beta_kernel=1,
                               readout="fc1"),
}

# Trainable parameters of one neuron's network, as counted in the paper's reference code.
PAPER_PARAM_COUNTS = {
    "ff_cnn": 46017, "ff_sa_cnn": 41267, "rf_cnn": 28865, "rf_sa_cnn": 25812,
    "ff_sa_cnn_star": 28547, "rf_sa_cnn_star": 26147, "ff_sa_cnn_star_fc1": 28551,
}

DEFAULTS = dict(dropout=0.3, key_dim=5, value_dim=5, num_heads=1, image_size=IMAGE_SIZE,
                conv_implementation="auto", seed=None, synchronized_bn=False,
                precision="float32")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
OPTIONS = set(DEFAULTS) | {"channels", "attention", "beta_kernel", "readout"}
ATTENTION = (None, "value_mapping", "identity_value")
READOUTS = ("fcl", "ctl", "fc1")
CONV_IMPLEMENTATIONS = ("auto", "grouped", "map")
BLOCKS = ("alpha_cpb1", "alpha_cpb2", "self_attention", "beta_cpb1", "beta_cpb2", "readout")
CORES = ("independent", "shared")


def names():
    """The registered variant names."""
    return sorted(VARIANTS)


def resolve(name, **overrides):
    """The full option dict of a variant with `overrides` applied (unknown keys refused)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(names())}")
    unknown = set(overrides) - OPTIONS
    if unknown:
        raise ValueError(f"unknown model option(s) {sorted(unknown)}; known: {sorted(OPTIONS)}")
    opts = {**DEFAULTS, **VARIANTS[name], **overrides}
    for k in ("channels", "key_dim", "value_dim", "num_heads", "beta_kernel", "image_size"):
        if not _is_int(opts[k]) or opts[k] < 1:
            raise ValueError(f"{k} must be a positive integer, got {opts[k]!r}")
    d = opts["dropout"]
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d < 1:
        raise ValueError(f"dropout must be a number in [0, 1), got {d!r}")
    if opts["seed"] is not None and not _is_int(opts["seed"]):
        raise ValueError(f"seed must be an integer or null, got {opts['seed']!r}")
    if not isinstance(opts["synchronized_bn"], bool):
        raise ValueError(f"synchronized_bn must be true or false, got {opts['synchronized_bn']!r}")
    for k, allowed in (("attention", ATTENTION), ("precision", PRECISIONS),
                       ("readout", READOUTS), ("conv_implementation", CONV_IMPLEMENTATIONS)):
        if opts[k] not in allowed:
            raise ValueError(f"{k} must be one of {allowed}, got {opts[k]!r}")
    return opts


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def block_of(layer_name):
    """The block a layer belongs to (`alpha_cpb1_bn` -> `alpha_cpb1`), or None."""
    for b in BLOCKS:
        if layer_name == b or layer_name.startswith(b + "_"):
            return b
    return None
