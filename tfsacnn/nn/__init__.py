"""Layers of the paper's networks, written for many independent neurons at once."""
from .layers import BatchNorm, NeuronConv2D, Readout, SelfAttention2D  # noqa: F401
