"""Layers of the paper's networks, written for many independent neurons at once."""
from .layers import (BatchNorm, MaxPool2D, MultiHeadSelfAttention2D, NeuronConv2D,  # noqa: F401
                     Readout, SelfAttention2D)
