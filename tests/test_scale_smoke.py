"""A 500-name run of the whole chain in CI-sized form: 500 synthetic stocks (late listings and early
delistings included) over four years, light models, the offline analyst in chunks. It must finish,
never hold a stock where it has no price, and say SYNTHETIC MARKET on every page."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from research_lib.cli import main
from research_lib.data import synthetic_symbols

OVERRIDES = {
    "data.synthetic.n_symbols": 500, "data.start": "2017-01-03", "data.end": "2020-12-31",
    "features.names": "[ret_5d, ret_21d, ret_63d, momentum_12_1, reversal_5d, vol_63d, index_trend_200d]",
    "features.vix_symbol": "null", "features.dtype": "float32", "llm.inputs": "[momentum_12_1, reversal_5d, vol_63d]",
    "ml.models": "[ridge]", "ml.signal_model": "ridge", "ml.min_train_days": 378, "ml.test_days": 252,
    "llm.provider": "offline", "llm.max_symbols": 200, "report.tearsheet": "true",
}


@pytest.mark.notebook
def test_a_500_name_synthetic_run_completes_holds_only_priced_stocks_and_says_synthetic(workspace, capfd):
    args = ["run", str(workspace / "params" / "synthetic.yaml")]
    for key, value in OVERRIDES.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0, capfd.readouterr().err[-3000:]
    out = capfd.readouterr().out
    assert "SYNTHETIC MARKET" in out and "500 stocks" in out
    (run,) = (workspace / "reports" / "runs").iterdir()

    close = pd.read_parquet(run / "prices.parquet")["close"]
    stocks = synthetic_symbols(500)
    assert set(stocks) <= set(close.columns)
    assert close[stocks].iloc[-1].isna().sum() > 0 and close[stocks].iloc[0].isna().sum() > 0, \
        "the market has delistings and late listings"

    weights = pd.read_parquet(run / "weights.parquet")
    held = weights.fillna(0.0).ne(0.0)
    unpriced = close.reindex(index=weights.index, columns=weights.columns).isna()
    assert not (held & unpriced).any().any(), "a weight on a stock with no price at its decision date"
    assert held.any(axis=1).mean() > 0.5

    for page in ["validation.html", "tearsheet.html", *(p.name for p in run.glob("0*.html"))]:
        assert "SYNTHETIC MARKET" in (run / page).read_text(), f"{page} does not say the market is synthetic"
    assert "synthetic market" in (workspace / "reports" / "index.html").read_text()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["data"]["source"] == "synthetic"
    assert np.isfinite(manifest["metrics"]["strategy"]["sharpe"])
    portfolio = json.loads((run / "portfolio_report.json").read_text())
    assert portfolio["left_out"]["no_price"] > 0 and portfolio["left_out"]["short_history"] > 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["delisting_events"]["counts"].get("delisted", 0) > 0, "a held stock delisted in four years"
