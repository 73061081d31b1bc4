"""Optimizers, the training loop and metrics."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class OptimizerConfig(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)

    type: Literal["sgd", "adam"] = "adam"
    lr: float = Field(0.001, gt=0)


class TrainConfig(BaseModel):
    """The ``train`` section of a model file."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    optimizer: OptimizerConfig = OptimizerConfig()
