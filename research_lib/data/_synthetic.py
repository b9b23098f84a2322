"""A seeded synthetic market (``data.source: synthetic``) for scale and known-answer tests.

Not real prices: every page a synthetic market reaches says so (`market_label`). It exists so
that a 500-name universe, listings, delistings and a signal of known strength can be tested
offline; the bundled real history stays the default source.

The model, per session ``t`` and stock ``i`` (simple returns)::

    r[i, t] = beta[i] * market[t] + loading[i] * sector[s(i), t] + idio[i, t]
    idio[i, t] = sigma[i, t] * (z[i, t] + strength * alpha[i, t-1]) / sqrt(1 + strength**2)

- the market factor (7 %/yr drift, 16 %/yr long-run volatility), 11 sector factors (8 %/yr) and
  each stock's idiosyncratic part have GARCH(1,1) volatility (clustering) and Student-t shocks
  with 5 degrees of freedom scaled to unit variance and clipped at 8 (fat tails, yet no volatility
  index that triples in a day, which validation would refuse); a day's return is kept within
  [-60 %, +150 %] so that the default validation (a x3 daily move is an error) passes;
- ``alpha`` is the planted signal: per stock an AR(1) of unit variance with a 63-session
  half-life, known at the close of ``t-1``. Its correlation with the next session's standardized
  idiosyncratic return is ``strength / sqrt(1 + strength**2)`` (about ``signal_strength``), and 0
  when ``signal_strength`` is 0. No price field carries ``alpha``: a model must learn it from the
  returns it leaves behind (a persistent drift, so past returns predict future ones);
- ``listed_late`` of the stocks list after the first session, ``delisted`` of them delist before the
  last (NaN after their last close); each lives at least a year (or half the span, if shorter);
- volume follows a per-stock dollar volume (log-normal across stocks, so liquidity ranks mean
  something) that rises on large moves; open, high and low are drawn around the closes.

Context series, by the parameter that names them: ``data.benchmark`` is the equal-weighted index of
the listed stocks (level 1000 on the first session), ``features.vix_symbol`` the market's
annualized conditional volatility in percent (a VIX stand-in, known at its date).

The same `SyntheticConfig`, dates and calendar give the same market bit for bit; a stock's path
depends on the seed and ``n_symbols`` (a 100-name market is not the first 100 names of a 500-name one).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from pydantic import Field

from research_lib.params import StrictModel

__all__ = ["DEFAULT_END", "DEFAULT_START", "GENERATOR_VERSION", "SyntheticConfig", "market_label",
           "synthetic_market", "synthetic_symbols"]

GENERATOR_VERSION = 2  # part of the snapshot key: a changed model never reuses an old market
DEFAULT_START = dt.date(2000, 1, 3)
DEFAULT_END = dt.date(2022, 12, 30)  # fixed, not today: the same parameters give the same market
N_SECTORS = 11
T_DF = 5  # Student-t degrees of freedom of every shock
MAX_SHOCK = 8.0  # standard deviations: a GARCH volatility then moves at most about x2.5 in a day
SIGNAL_HALF_LIFE = 63  # sessions
RETURN_BOUNDS = (-0.6, 1.5)
CONTEXT_ROLES = {"data.benchmark": "index", "features.vix_symbol": "volatility index"}


class SyntheticConfig(StrictModel):
    """``data.synthetic``: the generated market's size, seed and planted signal (source: synthetic only)."""

    n_symbols: int = Field(100, ge=2, le=5000, description="stocks in the universe")
    seed: int = Field(0, ge=0, description="the same seed gives the same market, bit for bit")
    signal_strength: float = Field(0.0, ge=0.0, le=0.5, description="strength of the planted signal (0: none); "
                                   "about its correlation with the next session's idiosyncratic return")
    listed_late: float = Field(0.25, ge=0.0, le=1.0, description="share of stocks that list after the first session")
    delisted: float = Field(0.2, ge=0.0, le=1.0, description="share of stocks whose prices end before the last session")


def synthetic_symbols(n_symbols: int) -> list[str]:
    """The stocks' names: S0001, S0002, ... (at least four digits)."""
    width = max(4, len(str(n_symbols)))
    return [f"S{i:0{width}d}" for i in range(1, n_symbols + 1)]


def market_label(source: str, synthetic: SyntheticConfig | None = None) -> str | None:
    """The warning every page of a synthetic run carries; None for real prices."""
    if source != "synthetic":
        return None
    config = synthetic or SyntheticConfig()
    signal = (f"a planted signal of strength {config.signal_strength:g}" if config.signal_strength
              else "no planted signal")
    return (f"SYNTHETIC MARKET: generated prices, not real history ({config.n_symbols} stocks, seed {config.seed}, "
            f"{signal})")


def synthetic_market(config: SyntheticConfig, sessions: pd.DatetimeIndex,
                     context: dict[str, str] | None = None) -> dict[str, pd.DataFrame]:
    """The market on ``sessions``: per field (open, high, low, close, volume) a sessions x symbols frame,
    stocks first, then the ``context`` series (symbol -> the parameter naming it, see `CONTEXT_ROLES`)."""
    n_sessions, n = len(sessions), config.n_symbols
    rng = np.random.default_rng([config.seed, n])
    symbols = synthetic_symbols(n)

    # Per stock: exposures, idiosyncratic volatility, liquidity, first price, life span.
    sector = rng.integers(0, N_SECTORS, n)
    beta = rng.uniform(0.5, 1.5, n)
    loading = rng.uniform(0.5, 1.5, n)
    idio_vol = np.clip(0.25 * np.exp(0.35 * rng.standard_normal(n)), 0.10, 0.80)
    dollar_volume = 3e7 * np.exp(rng.standard_normal(n))
    first_price = np.exp(rng.uniform(np.log(10.0), np.log(200.0), n))
    first, last = _life_spans(rng, n, n_sessions, config.listed_late, config.delisted)

    # Shocks and their GARCH volatilities: the market, the sectors, then the stocks, as one block.
    shocks = np.clip(rng.standard_t(T_DF, (n_sessions, 1 + N_SECTORS + n)) * np.sqrt((T_DF - 2) / T_DF),
                     -MAX_SHOCK, MAX_SHOCK)
    annual_vol = np.concatenate([[0.16], np.full(N_SECTORS, 0.08), idio_vol])
    arch = np.r_[np.full(1 + N_SECTORS, 0.08), np.full(n, 0.05)]  # GARCH: weight of yesterday's shock
    garch = np.r_[np.full(1 + N_SECTORS, 0.90), np.full(n, 0.93)]  # and of yesterday's variance
    sigma = _garch_paths(shocks, annual_vol / np.sqrt(252), arch, garch)
    factor = shocks[:, : 1 + N_SECTORS] * sigma[:, : 1 + N_SECTORS]
    market = 0.07 / 252 + factor[:, 0]

    strength = config.signal_strength
    alpha = _ar1_paths(rng, n_sessions, n, 0.5 ** (1 / SIGNAL_HALF_LIFE))
    planted = np.vstack([np.zeros((1, n)), alpha[:-1]])  # alpha known at t-1 moves the return of t
    idio = sigma[:, 1 + N_SECTORS:] * (shocks[:, 1 + N_SECTORS:] + strength * planted) / np.sqrt(1 + strength**2)
    returns = np.clip(beta * market[:, None] + loading * factor[:, 1 + sector] + idio, *RETURN_BOUNDS)

    alive = (np.arange(n_sessions)[:, None] >= first) & (np.arange(n_sessions)[:, None] <= last)
    returns[~alive] = 0.0
    returns[first, np.arange(n)] = 0.0  # the listing session starts at the first price
    close = first_price * np.cumprod(1.0 + returns, axis=0)
    volume = np.maximum(1.0, np.round(dollar_volume / close * np.exp(0.3 * rng.standard_normal(close.shape))
                                      * (0.6 + 0.4 * np.abs(shocks[:, 1 + N_SECTORS:]))))
    previous = np.vstack([close[:1], close[:-1]])
    open_ = previous * np.exp(0.3 * np.log1p(returns) + 0.002 * rng.standard_normal(close.shape))
    open_[first, np.arange(n)] = close[first, np.arange(n)]
    wiggle = 0.5 * sigma[:, 1 + N_SECTORS:]
    high = np.maximum(open_, close) * np.exp(np.abs(wiggle * rng.standard_normal(close.shape)))
    low = np.minimum(open_, close) * np.exp(-np.abs(wiggle * rng.standard_normal(close.shape)))

    fields = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    frames = {name: pd.DataFrame(np.where(alive, values, np.nan), index=sessions, columns=symbols)
              for name, values in fields.items()}
    for symbol, role in (context or {}).items():
        frames["close"][symbol] = _context_series(CONTEXT_ROLES.get(role), np.where(alive, returns, np.nan), sigma[:, 0])
    return frames


def _life_spans(rng: np.random.Generator, n: int, n_sessions: int, listed_late: float, delisted: float):
    """First and last session (row numbers) of each stock: a share list late, a share delist early,
    each living at least ``min_life`` sessions."""
    min_life = max(1, min(252, n_sessions // 2))
    room = n_sessions - min_life  # latest first row that still leaves a full minimum life
    first = np.where(rng.random(n) < listed_late, rng.integers(1, max(2, int(0.8 * room) + 1), n), 0)
    first = np.minimum(first, room)
    ends_early = (rng.random(n) < delisted) & (first + min_life < n_sessions - 1)
    last_draw = first + min_life + (rng.random(n) * np.maximum(0, n_sessions - 2 - first - min_life)).astype(int)
    last = np.where(ends_early, np.minimum(last_draw, n_sessions - 2), n_sessions - 1)
    return first, last


def _garch_paths(shocks: np.ndarray, daily_vol: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """GARCH(1,1) conditional volatility of each column: ``s2[t] = w + a s2[t-1] z[t-1]^2 + b s2[t-1]``,
    with ``w`` setting the long-run variance to ``daily_vol**2``; ``s2[0]`` is the long-run variance."""
    omega = (1.0 - a - b) * daily_vol**2
    variance = np.empty_like(shocks)
    variance[0] = daily_vol**2
    for t in range(1, len(shocks)):  # the recursion is sequential in time, vectorized over columns
        variance[t] = omega + (a * shocks[t - 1] ** 2 + b) * variance[t - 1]
    return np.sqrt(variance)


def _ar1_paths(rng: np.random.Generator, n_sessions: int, n: int, phi: float) -> np.ndarray:
    """Unit-variance AR(1) paths, one per column, started in their stationary distribution."""
    noise = rng.standard_normal((n_sessions, n)) * np.sqrt(1 - phi**2)
    noise[0] = rng.standard_normal(n)
    paths = np.empty_like(noise)
    paths[0] = noise[0]
    for t in range(1, n_sessions):
        paths[t] = phi * paths[t - 1] + noise[t]
    return paths


def _context_series(role: str | None, stock_returns: np.ndarray, market_sigma: np.ndarray) -> np.ndarray:
    if role == "index":  # equal weight over the stocks listed that session
        listed = np.isfinite(stock_returns)
        daily = np.where(listed, stock_returns, 0.0).sum(axis=1) / np.maximum(1, listed.sum(axis=1))
        daily[0] = 0.0
        return 1000.0 * np.cumprod(1.0 + daily)
    if role == "volatility index":
        return 100.0 * np.sqrt(252) * market_sigma
    raise ValueError(f"the synthetic market has no series for the parameter {role!r}")
