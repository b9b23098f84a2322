"""The names of the portfolio and strategy choices, in a module light enough for `research_lib.config`."""

from typing import Literal

Method = Literal["max_sharpe", "min_volatility", "efficient_risk", "efficient_return", "hrp", "black_litterman"]
ReturnsModel = Literal["mean_historical", "ema_historical", "capm", "signals"]
RiskModel = Literal["sample", "ledoit_wolf", "exp_cov"]
SignalSource = Literal["blend", "ml", "llm", "momentum"]
RebalanceFrequency = Literal["monthly", "weekly"]
StrategyName = Literal["momentum_12_1", "equal_weight", "ml_signal", "llm_signal", "portfolio"]
