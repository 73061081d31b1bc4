"""nnplug's built-in layers, registered through the ``nnplug`` entry-point group exactly as a
third party's plugin would be. They use only nnplug's public API."""

from __future__ import annotations

import nnplug
from nnplug_layers.activations import LeakyReLU, ReLU, Sigmoid, Tanh
from nnplug_layers.conv2d import Conv2D
from nnplug_layers.dense import Dense
from nnplug_layers.losses import MSE, SoftmaxCrossEntropy
from nnplug_layers.pooling import AvgPool2D, GlobalAvgPool, MaxPool2D
from nnplug_layers.structure import Add, Concat, Flatten

LAYERS: list[type] = [Dense, ReLU, LeakyReLU, Sigmoid, Tanh, Flatten, Add, Concat,
                      Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool]
LOSSES: list[type] = [SoftmaxCrossEntropy, MSE]


@nnplug.hookimpl
def nnplug_register_layers() -> list[type]:
    return LAYERS + LOSSES
