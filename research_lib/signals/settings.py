"""The ML signal's parameters (``params: ml``): which models, which label, which walk-forward."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from research_lib.params import StrictModel

ModelName = Literal["ridge", "hgbr"]


class MLConfig(StrictModel):
    """Walk-forward models of 03_fit_ml_signals (research_lib.signals.models)."""

    models: list[ModelName] = Field(["ridge", "hgbr"], min_length=1, description="models fitted and evaluated")
    signal_model: ModelName = Field("hgbr", description="model whose scores become signals_ml.parquet")
    label: Literal["excess", "raw"] = Field("excess", description="forward return in excess of the cross-section, or raw")
    horizon_days: int = Field(21, ge=1, description="label horizon in sessions")
    test_days: int = Field(252, ge=5, description="sessions per walk-forward test block")
    min_train_days: int = Field(1260, ge=60, description="sessions of history before the first test block")
    embargo_days: int = Field(5, ge=0, description="extra sessions between training labels and the test block")
    train_step_days: int = Field(5, ge=1, description="train on every n-th date (overlapping labels are redundant)")
    inner_splits: int = Field(1, ge=1, description="walk-forward validation blocks inside each training window for tuning")
    random_state: int = 0
    n_jobs: int = Field(2, description="processes fitting walk-forward blocks (-1: one per core); speed only")

    @model_validator(mode="after")
    def _signal_model_is_fitted(self) -> MLConfig:
        if self.signal_model not in self.models:
            raise ValueError(f"signal_model {self.signal_model!r} is not in models {self.models}; add it there")
        return self
