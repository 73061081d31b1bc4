"""nnplug's built-in layers, registered through the ``nnplug`` entry-point group exactly as a
third party's plugin would be. They use only nnplug's public API."""

from __future__ import annotations

import nnplug
from nnplug_layers.activations import LeakyReLU, ReLU, Sigmoid, Tanh
from nnplug_layers.dense import Dense
from nnplug_layers.losses import MSE, SoftmaxCrossEntropy
from nnplug_layers.structure import Add, Concat, Flatten

LAYERS: list[type] = [Dense, ReLU, LeakyReLU, Sigmoid, Tanh, Flatten, Add, Concat]
LOSSES: list[type] = [SoftmaxCrossEntropy, MSE]


@nnplug.hookimpl
def nnplug_register_layers() -> list[type]:
    return LAYERS + LOSSES
