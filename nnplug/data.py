"""Datasets: the embedded digits set and ``.npz`` files."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DataConfig(BaseModel):
    """The ``data`` section of a model file."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)

    source: Literal["digits", "npz"]
    path: str | None = None
    validation: float = Field(0.2, ge=0.0, lt=1.0)
