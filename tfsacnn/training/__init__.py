"""Training: the trainer (one epoch loop, a small step per backend), its callbacks,
strategies, and the incremental protocol's freezing and weight transfer."""
from .trainer import (ADAM_EPSILON, BestWeights, NaNLossError, Trainer, apply_freeze,  # noqa: F401
                      init_from_run, is_chief, make_strategy)
from .run import train  # noqa: F401,E402
