"""In-silico neurophysiology on a trained run: the classic V1 experiments, checked against
the simulator's ground truth on a simulated site (docs/insilico.md).

`load_twin(run_dir, data_dir=None, neurons=None) -> Twin` (tfsacnn.insilico.forward):
a run's neurons answering raw stimuli drawn on the dataset's source pixel scale.
"""
from .forward import InsilicoError, Truth, Twin, load_twin  # noqa: F401
from .mei import register_experiments

register_experiments()          # "mei" and "surround_mei" (tfsacnn.insilico.mei)

__all__ = ["InsilicoError", "Truth", "Twin", "load_twin"]
