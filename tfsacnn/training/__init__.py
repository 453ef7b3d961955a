"""Training: the trainer (one epoch loop, a small step per backend), its callbacks,
named checkpoints, chunks of neurons, strategies, and the incremental protocol's
freezing and weight transfer. `train(cfg, out)` fits a config into a run directory."""
from .callbacks import NaNLossError  # noqa: F401
from .run import train  # noqa: F401
from .strategy import is_chief, make_strategy  # noqa: F401
from .trainer import ADAM_EPSILON, Trainer  # noqa: F401
from .transfer import apply_freeze, init_from_run  # noqa: F401
