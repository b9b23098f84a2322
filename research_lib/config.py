"""Run parameters: layered YAML files validated by strict pydantic models.

A scenario file (``params/daily.yaml``) names the file it builds on with
``inherits: base.yaml``; keys it sets replace the inherited ones (nested sections are
merged key by key). ``--set section.key=value`` overrides are applied last; values are
parsed as YAML, so ``--set data.symbols=[AAPL,MSFT]`` gives a list. Unknown keys are
refused (with a "did you mean" hint) because papermill would only warn about them.

Secrets never live here: API keys come from the environment (see ``research_lib.env``).
"""

from __future__ import annotations

import math

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from research_lib._io import atomic_write_bytes
from research_lib.compute import ComputeConfig
from research_lib.data import (AssetClass, DataSource, SyntheticConfig, asset_class, calendar_error, market_label,
                               sessions_per_year, universe_calendar)
from research_lib.errors import ConfigError
from research_lib.params import StrictModel, describe_errors, did_you_mean, read_mapping, refuse_secrets
from research_lib.features import ALL_FEATURES, CrossSection, FeatureName
from research_lib.hedging import HedgeConfig
from research_lib.portfolio import (DEFAULT_RISK_LIMITS, CircuitBreakerConfig, PortfolioConfig, RebalanceFrequency,
                                    StrategyConfig, VolTargetConfig)
from research_lib.risk import RiskLimits
from research_lib.signals import MLConfig

class DataConfig(StrictModel):
    """Which prices to load and how strictly to check them."""

    source: DataSource = "bundled"
    symbols: list[str] | None = Field(None, description="tradable universe; null: the source's default")
    benchmark: str = Field("SP500", description="index the tearsheet compares against")
    start: dt.date | None = Field(None, description="first session to load (inclusive)")
    end: dt.date | None = Field(None, description="last session to load (inclusive)")
    path: Path | None = Field(None, description="CSV or parquet file, for source: file")
    max_stale_sessions: int = Field(10, ge=1, description="longest run of unchanged closes allowed")
    max_daily_price_ratio: float = Field(3.0, gt=1.0, description="a close more than this multiple (or under its inverse) of the previous one is an error unless a split explains it")
    refresh: bool = Field(False, description="re-fetch from the source instead of reusing the snapshot")
    calendar: str | None = Field("XNYS", description="exchange_calendars code whose sessions the dates must be "
                                 "(XNYS, XLON, 24/7...); null: any day, e.g. crypto")
    synthetic: SyntheticConfig = Field(SyntheticConfig(), description="the generated market, for source: synthetic")
    markets: dict[str, AssetClass] = Field({}, description="asset class (stock, crypto, forex) of symbols whose "
                                           "spelling does not say it; BTC/USD, BTC-USD are crypto, EURUSD=X forex")

    def universe_calendar(self) -> str | None:
        """The calendar the run's rows follow: the stocks' exchange (``calendar``) when the universe
        holds a stock, else 24/5 for forex, 24/7 for crypto (see `research_lib.data.universe_calendar`)."""
        symbols = [*(self.symbols or ["stocks"]), self.benchmark]  # null: the source's default, stocks
        return universe_calendar(symbols, self.calendar, self.markets)

    def market_label(self) -> str | None:
        """The warning every page of a run on generated prices carries (`research_lib.data.market_label`);
        None for real prices."""
        return market_label(self.source, self.synthetic)

    @field_validator("calendar")
    @classmethod
    def _known_calendar(cls, value: str | None) -> str | None:
        reason = calendar_error(value) if value is not None else None
        if reason:
            raise ValueError(reason)
        return value

    @field_validator("symbols")
    @classmethod
    def _symbols_not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(value) == 0:
            raise ValueError("is an empty list; give at least one symbol or null for the source's default universe")
        if value is not None and len(set(value)) != len(value):
            dupes = sorted({s for s in value if value.count(s) > 1})
            raise ValueError(f"lists {dupes} more than once; list each symbol once")
        return value

    @model_validator(mode="after")
    def _check_range_and_path(self) -> DataConfig:
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}; swap them")
        if self.source == "file" and self.path is None:
            raise ValueError("source 'file' needs data.path, the CSV or parquet file to read")
        return self


class FeaturesConfig(StrictModel):
    """Which point-in-time features 02_build_features computes (research_lib.features)."""

    names: list[FeatureName] = Field(list(ALL_FEATURES), min_length=1, description="features to compute")
    cross_section: CrossSection = Field("zscore", description="standardize symbol features across symbols each date")
    vix_symbol: str | None = Field("^VIX", description="VIX series loaded for regime features; null: none")
    garch_refit_days: int = Field(252, ge=1, description="sessions between GARCH(1,1) re-estimations")
    n_jobs: int = Field(2, description="processes for GARCH fits (-1: one per core); speed only")
    dtype: Literal["float64", "float32"] = Field("float64", description="the stored feature panel's precision "
                                                 "(float32: half the memory, numbers move in the 7th digit)")


class ModelPrice(StrictModel):
    """US dollars per million tokens (the Anthropic pricing page); the Batch API halves them."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float = Field(ge=0, description="5-minute prompt-cache write")
    cache_read: float = Field(ge=0, description="prompt-cache hit")


class LLMConfig(StrictModel):
    """Claude as an analyst (04_ask_claude, research_lib.llm)."""

    provider: Literal["auto", "anthropic", "replay", "offline"] = Field(
        "auto", description="auto: Claude if ANTHROPIC_API_KEY is set (cache first), else the offline analyst")
    model: str = Field("claude-sonnet-5-5", description="Anthropic model id")
    max_tokens: int = Field(4096, ge=256, description="answer length cap; a cut-off answer abstains")
    temperature: float | None = Field(None, ge=0, le=1, description="null: the model's default (Sonnet 5.x refuses others)")
    reasoning: bool = Field(False, description="a brief analysis call before the structured answer")
    mask: bool = Field(True, description="anonymous symbols and hidden dates in prompts")
    ablation: bool = Field(False, description="also ask with masking flipped and compare the ICs (doubles cost)")
    rebalance: RebalanceFrequency = Field("monthly", description="dates views are formed on")
    headlines: Literal["none", "alpaca"] = Field("none", description="news headlines in prompts (alpaca: keys needed)")
    headline_lookback_days: int = Field(7, ge=1, description="headlines published this many days before a date")
    max_headlines: int = Field(20, ge=1, le=100, description="most recent headlines per prompt")
    inputs: list[FeatureName] = Field(["ret_21d", "ret_63d", "momentum_12_1", "reversal_5d", "vol_63d",
                                       "drawdown_252d", "rsi_14", "beta_252d"], min_length=1,
                                      description="features shown per symbol (from 02_build_features)")
    batch: bool = Field(False, description="send uncached requests as one Message Batch (half price, slower)")
    budget_usd: float = Field(5.0, ge=0, description="spending cap per run; the call that would pass it is not sent")
    dry_run: bool = Field(False, description="estimate tokens and dollars, send nothing")
    max_symbols: int | None = Field(None, ge=1, description="ask about the most liquid this many symbols each date "
                                    "(ranked by past dollar volume); null: every symbol")
    chunk_symbols: int = Field(50, ge=1, le=500, description="symbols per prompt; a larger universe is asked in chunks")
    max_retries: int = Field(4, ge=0, le=10)
    timeout_s: float = Field(60.0, gt=0, description="HTTP timeout per call")
    knowledge_cutoff: dict[str, dt.date] = Field(default_factory=dict, description="model -> reliable knowledge cutoff")
    prices: dict[str, ModelPrice] = Field(default_factory=dict, description="model -> price per million tokens")

    @model_validator(mode="after")
    def _model_is_described(self) -> LLMConfig:
        if self.batch and self.reasoning:
            raise ValueError("batch and reasoning cannot both be true: reasoning needs two dependent calls per date")
        for table in ("knowledge_cutoff", "prices"):
            if self.provider != "offline" and self.model not in getattr(self, table):
                raise ValueError(f"model {self.model!r} has no entry in llm.{table} (entries: {sorted(getattr(self, table))}); "
                                 f"add one, or choose a listed model")
        return self

    @property
    def cutoff(self) -> dt.date:
        """The model's knowledge cutoff (the far future when none is listed: nothing counts as after it)."""
        return self.knowledge_cutoff.get(self.model, dt.date.max)


class BacktestConfig(StrictModel):
    """The cost model of research_lib.backtest.run_backtest (see its docstring)."""

    cost_bps: float = Field(10.0, ge=0, description="commissions per unit of turnover, in basis points")
    execution_lag_sessions: int = Field(1, ge=1, description="sessions between decision and trade (>= 1: no same-close fills)")
    spread_bps: float = Field(0.0, ge=0, description="half-spread and slippage per unit of turnover, in basis points")
    impact_coefficient: float = Field(0.0, ge=0, description="square-root market impact; needs volume in the data")
    capital: float | None = Field(None, gt=0, description="account value for market impact; null: portfolio.capital")
    borrow_bps_per_year: float = Field(0.0, ge=0, description="fee on the short exposure, basis points a year")
    cash_rate_per_year: float = Field(0.0, description="rate cash earns (and a negative balance pays), a year")
    impact_from_execution: bool = Field(False, description="charge impact as params: execution works each order: "
                                        "the square-root law on each bar's share, as the execution simulator does "
                                        "(impact_coefficient x execution.impact_factor()); false: the whole order at the close")
    delisting_return: float | None = Field(None, ge=-1.0, description="return of a holding whose prices end, from "
                                           "its last close; null: sold at its last close (a return of 0)")

    def model(self, cost_multiple: float = 1.0, capital: float | None = None) -> dict:
        """Keyword arguments for run_backtest; ``cost_multiple`` scales the trading costs
        (commissions, spread, impact) for stress tests."""
        return {"cost_bps": self.cost_bps * cost_multiple, "execution_lag_sessions": self.execution_lag_sessions,
                "spread_bps": self.spread_bps * cost_multiple,
                "impact_coefficient": self.impact_coefficient * cost_multiple,
                "capital": (self.capital or capital) if self.impact_coefficient else None,
                "borrow_bps_per_year": self.borrow_bps_per_year, "cash_rate_per_year": self.cash_rate_per_year,
                **({"delisting_return": self.delisting_return} if self.delisting_return is not None else {})}


class ReportConfig(StrictModel):
    title: str = Field("Spartan", description="the tearsheet title's first part; the headline strategy, scenario "
                       "and analyst follow")
    tearsheet: bool = Field(True, description="write the quantstats HTML tearsheet")


class PaperConfig(StrictModel):
    """Paper trading of a promoted strategy (``spartan trade``, research_lib.trading)."""

    broker: Literal["sim", "alpaca"] = Field("sim", description="sim: the offline simulated broker; alpaca: "
                                             "Alpaca's paper endpoint (keys from the environment)")
    sim_start: dt.date | None = Field(None, description="first session the simulated account trades; null: "
                                      "sim_history_sessions before the end of the run's prices")
    sim_history_sessions: int = Field(252, ge=1, description="sessions the default sim start leaves to replay")
    starting_cash: float | None = Field(None, gt=0, description="the simulated account's cash; null: portfolio.capital")
    max_target_age_sessions: int = Field(31, ge=0, description="refuse to trade on a weights row older than this "
                                         "(re-run the research and promote again)")
    min_trade_value: float = Field(100.0, ge=0, description="smaller trades (and target positions) are skipped, "
                                   "in account currency")
    cash_buffer: float = Field(0.005, ge=0, lt=0.5, description="share of equity left in cash for costs and price "
                               "moves before the fill: long targets are scaled down to at most 1 - cash_buffer")
    adv_sessions: int = Field(20, ge=1, description="sessions in the average daily volume of the share-of-ADV check")
    max_tracking_error: float = Field(0.05, gt=0, description="annualized tracking error of paper against the "
                                      "backtest beyond which the report flags drift")


class ValidationConfig(StrictModel):
    """What 06_validate_strategy judges the headline strategy against, beyond the run's own trials."""

    sweep: str | None = Field(None, min_length=1, description="id of the recorded sweep the headline strategy was "
                              "chosen from (research_lib.validation.registry.list_sweeps); the validation page "
                              "adds PBO and DSR over it. null: none")


class ExecutionConfig(StrictModel):
    """How paper trading works a strategy's orders through the session (``params: execution``;
    `research_lib.execution.plan_schedule`), frozen with the strategy at promotion."""

    algorithm: Literal["market", "twap", "vwap", "iceberg"] = Field(
        "market", description="market: the whole order at once, uncapped (today's behaviour); twap, vwap, iceberg: "
        "sliced over the window under the participation cap")
    # A session has 78 five-minute bars (research_lib.execution.BARS_PER_SESSION), 0 at 09:30.
    window_start_bar: int = Field(3, ge=0, le=77, description="first bar of the window (5-minute bars from 09:30: 3 is "
                                  "09:45)")
    window_end_bar: int = Field(72, ge=1, le=78, description="bar after the window's last (72 is 15:30)")
    participation_cap: float = Field(0.1, gt=0, le=1, description="largest share of a bar's expected volume a slice takes")
    limit_band: float = Field(0.02, gt=0, lt=1, description="slice limit prices within this fraction of the arrival "
                              "price (at most risk.fat_finger_band)")
    end_policy: Literal["cross", "leave"] = Field(
        "cross", description="what the cap leaves at the window's end: cross: work it up to the close, leave: report it")
    display_fraction: float = Field(0.1, gt=0, le=1, description="iceberg: the share of the parent shown at a time")
    bars_per_slice: int = Field(6, ge=1, le=78, description="twap, vwap: bars one child order works over (6: a child every "
                                "30 minutes); each child is an order against risk.max_daily_orders")

    def impact_factor(self, n_bars: int = 78) -> float:
        """The market impact of an order worked this way, as a fraction of the impact of the whole
        order at once, under the execution simulator's law (the quantity a bar trades, ``s`` of the
        order, pays ``coefficient * volatility * sqrt(s * order / daily volume)``), with the
        participation cap not binding: the sum of ``s ** 1.5`` over the bars. 1 at market,
        ``1 / sqrt(bars in the window)`` for twap; vwap follows the intraday U shape
        (`research_lib.execution.intraday.u_shape`, 3:1 from the ends to the middle), each child
        evenly over its bars; an iceberg trades ``display_fraction`` a bar, and what the window
        cannot hold in one bar after it (``cross``) or not at all (``leave``)."""
        window = self.window_end_bar - self.window_start_bar
        if self.algorithm == "market":
            return 1.0
        if self.algorithm == "twap":
            return 1.0 / math.sqrt(window)
        if self.algorithm == "iceberg":
            shown = self.display_fraction
            blocks = math.ceil(1.0 / shown - 1e-12)
            if blocks <= window:
                return (blocks - 1) * shown**1.5 + (1.0 - (blocks - 1) * shown) ** 1.5
            rest = 1.0 - window * shown
            return window * shown**1.5 + (rest**1.5 if self.end_policy == "cross" else 0.0)
        x = [-1.0 + 2.0 * i / (n_bars - 1) for i in range(n_bars)]  # vwap: the U shape over the window
        weights = [1.0 + 2.0 * x[i] ** 2 for i in range(self.window_start_bar, self.window_end_bar)]
        total, factor = sum(weights), 0.0
        for first in range(0, window, self.bars_per_slice):  # each child: its bars' share, evenly over them
            group = weights[first:first + self.bars_per_slice]
            factor += len(group) * (sum(group) / total / len(group)) ** 1.5
        return factor

    @model_validator(mode="after")
    def _window(self):
        if self.window_end_bar <= self.window_start_bar:
            raise ValueError(f"window_end_bar ({self.window_end_bar}) must come after window_start_bar "
                             f"({self.window_start_bar})")
        return self


class RunConfig(StrictModel):
    """Everything one research run needs, saved as ``config.yaml`` in its run folder."""

    scenario: str = Field(..., pattern=r"^[A-Za-z0-9_-]+$", description="short name used in run ids")
    description: str = ""
    data: DataConfig = DataConfig()
    strategy: StrategyConfig = StrategyConfig()
    features: FeaturesConfig = FeaturesConfig()
    ml: MLConfig = MLConfig()
    llm: LLMConfig = LLMConfig(provider="offline")
    portfolio: PortfolioConfig = PortfolioConfig()
    risk: RiskLimits = DEFAULT_RISK_LIMITS
    backtest: BacktestConfig = BacktestConfig()
    report: ReportConfig = ReportConfig()
    paper: PaperConfig = PaperConfig()
    execution: ExecutionConfig = ExecutionConfig()
    validation: ValidationConfig = ValidationConfig()
    hedge: HedgeConfig = Field(HedgeConfig(), description="index options over the headline strategy on the "
                               "validation page: puts (or a collar) on data.benchmark, priced by model on the "
                               "features.vix_symbol close where the source has it, else on realized volatility")
    compute: ComputeConfig = ComputeConfig()

    @model_validator(mode="after")
    def _shorts_allowed(self) -> RunConfig:
        if self.portfolio.constraints.lower_bound < 0 and not self.risk.allow_short:
            raise ValueError("portfolio.constraints allow short positions but risk.allow_short is false, so the "
                             "risk layer would reject every short sale; set risk.allow_short: true")
        return self

    @model_validator(mode="after")
    def _band_inside_fat_finger(self) -> RunConfig:
        if self.execution.limit_band > self.risk.fat_finger_band:
            raise ValueError(f"execution.limit_band {self.execution.limit_band} is wider than risk.fat_finger_band "
                             f"{self.risk.fat_finger_band}: every child order would be refused; narrow limit_band")
        return self

    @model_validator(mode="after")
    def _algorithms_on_new_york_sessions(self) -> RunConfig:
        named = [*(self.data.symbols or []), self.data.benchmark, *self.data.markets]
        if self.execution.algorithm != "market" and any(asset_class(s, self.data.markets) != "stock" for s in named):
            raise ValueError(f"execution.algorithm {self.execution.algorithm!r} works orders over New York's session "
                             "(its five-minute bars); data.symbols, data.benchmark or data.markets name crypto or "
                             "forex, which trade around the clock: use execution.algorithm: market")
        return self

    def tradable(self, symbols) -> list[str]:
        """The given symbols less the benchmark and context series (the VIX): what may be traded."""
        context = {self.data.benchmark, self.features.vix_symbol}
        return [s for s in symbols if s not in context]

    @property
    def sessions_per_year(self) -> int:
        """Sessions in a year on the run's calendar (252 New York, 365 crypto, 260 forex): annualizes
        every return, volatility, Sharpe ratio and daily rate of the run."""
        return sessions_per_year(self.data.universe_calendar())

    def backtest_model(self, cost_multiple: float = 1.0, capital: float | None = None) -> dict:
        """The run's cost model as run_backtest's keyword arguments (trading costs x ``cost_multiple``)."""
        model = self.backtest.model(cost_multiple, capital=capital or self.portfolio.capital)
        model["sessions_per_year"] = self.sessions_per_year
        if self.backtest.impact_from_execution:  # the algorithm's expected impact, as the simulator charges it
            model["impact_coefficient"] *= self.execution.impact_factor()
        return model

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a parameter file (with what it inherits), apply overrides and validate.

    Parameters
    ----------
    path : path to a YAML file, e.g. ``params/daily.yaml``.
    overrides : ``"section.key=value"`` strings, applied in order.

    Raises
    ------
    ConfigError
        naming the file, the key, the value and the valid choices.
    """
    path = Path(path)
    raw = _read_layered(path, seen=())
    for item in overrides:
        _apply_override(raw, item)
    refuse_secrets(raw, path)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, path)) from None


def save_config(config: RunConfig, path: str | Path) -> Path:
    """Write the resolved configuration (no ``inherits``) to ``path``, atomically."""
    atomic_write_bytes(Path(path), config.to_yaml().encode())
    return Path(path)


def _read_layered(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"Parameter file {path} does not exist; pass a YAML file such as params/daily.yaml.")
    if path.resolve() in seen:
        raise ConfigError(f"Parameter file {path} inherits itself through {[str(p) for p in seen]}; break the cycle.")
    raw = read_mapping(path, "Parameter file")
    parent = raw.pop("inherits", None)
    if parent is None:
        return raw
    base = _read_layered(path.parent / parent, seen=(*seen, path.resolve()))
    return _deep_merge(base, raw)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"Override {item!r} is not of the form section.key=value, e.g. backtest.cost_bps=5.")
    *parents, leaf = key.strip().split(".")
    model: type[BaseModel] = RunConfig
    node = raw
    for depth, name in enumerate([*parents, leaf]):
        fields = model.model_fields
        if name not in fields:
            where = ".".join([*parents, leaf][:depth]) or "the top level"
            raise ConfigError(f"Override {item!r}: {name!r} is not a key of {where}; valid keys: {sorted(fields)}."
                              f"{did_you_mean(name, fields)}")
        if name == leaf:
            break
        annotation = fields[name].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            raise ConfigError(f"Override {item!r}: {name!r} is a value, not a section.")
        model = annotation
        if not isinstance(node.get(name), dict):  # missing, or an empty section written as `name:`
            node[name] = {}
        node = node[name]
    try:
        node[leaf] = yaml.safe_load(text)
    except yaml.YAMLError:
        node[leaf] = text


def _describe(err: ValidationError, path: Path) -> str:
    return describe_errors(err, f"Invalid parameters in {path} (after inherits and overrides):", RunConfig)


# The run's parameters and every section of them, wherever the section is defined (a section used
# by one package lives in it: PortfolioConfig in portfolio/, RiskLimits in risk/, MLConfig in signals/,
# HedgeConfig in hedging/).
__all__ = ["DEFAULT_RISK_LIMITS", "BacktestConfig", "CircuitBreakerConfig", "DataConfig", "FeaturesConfig",
           "HedgeConfig", "LLMConfig", "MLConfig", "ModelPrice", "PaperConfig", "PortfolioConfig", "ReportConfig",
           "RiskLimits", "RunConfig", "StrategyConfig", "ValidationConfig", "VolTargetConfig", "load_config",
           "save_config"]
