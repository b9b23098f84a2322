"""features.dtype: float32 halves the stored feature panel and moves its numbers only in the 7th digit."""

from __future__ import annotations

import numpy as np

from research_lib.config import load_config
from research_lib.data import load_prices
from research_lib.stages.features import compute_features
from tests.conftest import REPO


def test_a_float32_panel_is_half_the_memory_and_the_same_numbers_rounded(tmp_path):
    config = load_config(REPO / "params" / "smoke.yaml")
    config = config.model_copy(update={"features": config.features.model_copy(
        update={"names": ["ret_21d", "momentum_12_1", "vol_63d", "rsi_14", "beta_252d", "index_trend_200d"]})})
    single = config.model_copy(update={"features": config.features.model_copy(update={"dtype": "float32"})})
    prices = load_prices("bundled", config.data.symbols + [config.data.benchmark], config.data.start, config.data.end,
                         snapshot_dir=tmp_path)
    wide, narrow = compute_features(config, prices["close"]), compute_features(single, prices["close"])
    assert set(wide.dtypes) == {np.dtype("float64")} and set(narrow.dtypes) == {np.dtype("float32")}
    assert narrow.memory_usage(index=False).sum() * 2 == wide.memory_usage(index=False).sum()
    assert narrow.index.equals(wide.index) and list(narrow.columns) == list(wide.columns)
    np.testing.assert_allclose(narrow.to_numpy(dtype=float), wide.to_numpy(), rtol=1e-6, atol=1e-6)
    assert (narrow.isna() == wide.isna()).all().all()
