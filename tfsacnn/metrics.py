"""`tfsacnn.metrics`: the paper's per-neuron metrics (`tfsacnn.evaluation.metrics`).

Each takes numpy arrays `(n_images, n_neurons)` and returns `(n_neurons,)`.
"""
from .evaluation.metrics import *  # noqa: F401,F403
from .evaluation.metrics import REPORTED, __all__  # noqa: F401
