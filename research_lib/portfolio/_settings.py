"""The portfolio's parameter sections (``params: portfolio``) and the run's default risk limits.

They live beside the optimizers they configure, as `research_lib.risk.RiskLimits` lives in
``risk/``; `research_lib.config` assembles them into the run's parameters.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from research_lib.params import StrictModel
from research_lib.portfolio._constraints import PortfolioConstraints
from research_lib.portfolio._types import Method, RebalanceFrequency, ReturnsModel, RiskModel, SignalSource
from research_lib.risk import RiskLimits


class VolTargetConfig(StrictModel):
    """Scale each rebalance's weights to a target volatility (research_lib.risk.volatility_target)."""

    target_vol: float = Field(gt=0, description="annualized volatility aimed at, e.g. 0.12")
    lookback_days: int = Field(63, ge=2, description="sessions of trailing returns the volatility is measured on")
    max_leverage: float = Field(1.0, gt=0, description="largest multiplier (1: never leverage up)")


class CircuitBreakerConfig(StrictModel):
    """Go to cash after a drawdown (research_lib.risk.drawdown_circuit_breaker)."""

    max_drawdown: float = Field(gt=0, lt=1, description="drawdown from peak that trips it, e.g. 0.2")
    cooldown_days: int = Field(21, ge=1, description="sessions in cash after a trip")


class PortfolioConfig(StrictModel):
    """Signals to target weights (05_build_portfolio, research_lib.portfolio); used by strategy ``portfolio``."""

    signal: SignalSource = Field("blend", description="scores behind expected returns and views: ml, llm, "
                                 "their blend, or 12-1 momentum")
    ml_weight: float = Field(0.5, ge=0, le=1, description="weight of the ML score in the blend (the analyst's: 1 - it)")
    method: Method = Field("black_litterman", description="optimizer")
    returns_model: ReturnsModel = Field("signals", description="expected returns for max_sharpe and efficient_*")
    risk_model: RiskModel = Field("ledoit_wolf", description="covariance estimator")
    lookback_days: int = Field(252, ge=20, description="sessions of returns each estimate uses")
    rebalance: RebalanceFrequency = "monthly"
    constraints: PortfolioConstraints = PortfolioConstraints(max_weight=0.2)
    target_volatility: float | None = Field(None, gt=0, description="annualized, for method efficient_risk")
    target_return: float | None = Field(None, description="annualized, for method efficient_return")
    risk_free_rate: float = Field(0.0, description="annualized, for the Sharpe ratio and Black-Litterman")
    signal_spread: float = Field(0.05, gt=0, description="cross-sectional std of the annual returns a signal implies")
    base_return: float = Field(0.05, description="cross-sectional mean of the annual returns a signal implies")
    model_confidence: float = Field(0.2, ge=0, le=1, description="Idzorek confidence of ML and momentum views "
                                    "(the analyst's views carry their own)")
    max_signal_age_sessions: int = Field(21, ge=0, description="a score older than this is ignored")
    capital: float = Field(1_000_000.0, gt=0, description="account value the risk layer sizes orders with")
    fractional_shares: bool = Field(False, description="discrete allocation in fractional shares")
    vol_target: VolTargetConfig | None = None
    circuit_breaker: CircuitBreakerConfig | None = None
    solver: str = Field("CLARABEL", description="cvxpy solver")

    @model_validator(mode="after")
    def _method_inputs(self) -> PortfolioConfig:
        if self.method == "efficient_risk" and self.target_volatility is None:
            raise ValueError("method 'efficient_risk' needs portfolio.target_volatility (annualized, e.g. 0.15)")
        if self.method == "efficient_return" and self.target_return is None:
            raise ValueError("method 'efficient_return' needs portfolio.target_return (annualized, e.g. 0.08)")
        if self.method == "hrp" and self.constraints != PortfolioConstraints(net_exposure=self.constraints.net_exposure):
            raise ValueError("method 'hrp' takes no weight bounds, shorts or penalties; leave portfolio.constraints "
                             "at its defaults except net_exposure (e.g. constraints: {max_weight: 1.0})")
        if self.vol_target is not None and self.vol_target.lookback_days > self.lookback_days:
            raise ValueError(f"vol_target.lookback_days ({self.vol_target.lookback_days}) exceeds lookback_days "
                             f"({self.lookback_days}); shorten it or lengthen lookback_days")
        if self.constraints.turnover_penalty and self.method in ("max_sharpe", "black_litterman"):
            raise ValueError(f"constraints.turnover_penalty cannot be used with method {self.method!r} "
                             "(PyPortfolioOpt's max Sharpe variable change breaks it); use l2_gamma, or efficient_risk")
        return self

    @property
    def mu_free(self) -> bool:
        """Whether the method needs no expected returns (min_volatility, hrp)."""
        return self.method in ("min_volatility", "hrp")

    @property
    def uses_signals(self) -> bool:
        """Whether the weights depend on the signal scores (else on prices alone)."""
        return self.method == "black_litterman" or (self.method in ("max_sharpe", "efficient_risk", "efficient_return")
                                                    and self.returns_model == "signals")


DEFAULT_RISK_LIMITS = RiskLimits(
    max_weight=0.25, max_gross_exposure=1.02, max_net_exposure=1.02, max_order_notional=300_000.0,
    max_adv_fraction=0.05, fat_finger_band=0.05, max_price_age_seconds=900.0, max_open_orders=50,
    max_daily_orders=100, daily_loss_limit=0.05, drawdown_stop=0.25)
