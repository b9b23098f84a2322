"""An intraday market for the simulated broker: bars inside a session, and the volume profile.

Offline there are no minute bars, so a session's bars are simulated: a seeded Brownian bridge from
the day's open to its close, stretched so that its highest point is the day's high and its lowest
the day's low, and volume shared out over the bars on the usual U shape (heavy at the open and the
close) with seeded noise, summing to the day's volume exactly. The same (symbol, session, seed)
gives the same bars on every run. They are a model, not a record: every report that uses them says
so.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

BARS_PER_SESSION = 78  # 5-minute bars from 09:30 to 16:00 (a full NYSE session)
BAR_MINUTES = 5


def _seed(symbol: str, session: pd.Timestamp, seed: int) -> int:
    key = f"{symbol}|{pd.Timestamp(session):%Y-%m-%d}|{seed}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little")


def u_shape(n_bars: int = BARS_PER_SESSION) -> np.ndarray:
    """The typical share of a session's volume in each bar: high at the open and the close, low at
    midday (a parabola 3:1 from the ends to the middle), summing to 1."""
    x = np.linspace(-1.0, 1.0, n_bars)
    weights = 1.0 + 2.0 * x**2
    return weights / weights.sum()


def intraday_bars(open_: float, high: float, low: float, close: float, volume: float, *, symbol: str,
                  session, seed: int = 0, n_bars: int = BARS_PER_SESSION) -> pd.DataFrame:
    """``n_bars`` bars (open, high, low, close, volume) of one session, consistent with its daily bar:
    the first open is ``open_``, the last close ``close``, the highest high ``high``, the lowest low
    ``low`` and the volumes (whole shares) sum to ``volume``.

    Raises
    ------
    ValueError
        for a daily bar that cannot exist (a non-finite or non-positive price, ``low`` above the
        open or close, ``high`` below them, negative volume), naming the symbol and session.
    """
    prices = np.array([open_, high, low, close], dtype=float)
    where = f"{symbol} on {pd.Timestamp(session):%Y-%m-%d}"
    if not np.isfinite(prices).all() or (prices <= 0).any():
        raise ValueError(f"{where}: open, high, low and close must be finite and positive, got {prices.tolist()}")
    if not (low <= min(open_, close) and high >= max(open_, close)):
        raise ValueError(f"{where}: the daily bar is impossible (open {open_}, high {high}, low {low}, close {close})")
    if not np.isfinite(volume) or not 0 <= volume <= 2**62:
        raise ValueError(f"{where}: volume must be finite, >= 0 and at most 2**62, got {volume}")
    if n_bars < 4:
        raise ValueError(f"n_bars is {n_bars}; a session needs at least 4 bars")
    rng = np.random.default_rng(_seed(symbol, session, seed))
    path = _stretched_bridge(rng, open_, high, low, close, n_bars)
    bars = pd.DataFrame({"open": path[:-1], "close": path[1:]})
    bars["high"] = bars[["open", "close"]].max(axis=1)
    bars["low"] = bars[["open", "close"]].min(axis=1)
    bars["volume"] = share_out(int(round(volume)), u_shape(n_bars) * rng.lognormal(0.0, 0.25, n_bars))
    start = pd.Timestamp(session).normalize() + pd.Timedelta(hours=9, minutes=30)
    bars.index = pd.DatetimeIndex([start + pd.Timedelta(minutes=BAR_MINUTES * i) for i in range(n_bars)], name="time")
    return bars[["open", "high", "low", "close", "volume"]]


def _stretched_bridge(rng: np.random.Generator, open_: float, high: float, low: float, close: float,
                      n_bars: int) -> np.ndarray:
    """``n_bars + 1`` prices from ``open_`` to ``close`` whose maximum is ``high`` and minimum ``low``."""
    steps = rng.normal(0.0, 1.0, n_bars).cumsum()
    t = np.arange(1, n_bars + 1) / n_bars
    bridge = np.r_[0.0, steps - t * steps[-1]]  # 0 at both ends
    path = open_ + (close - open_) * np.r_[0.0, t] + bridge * (high - low) / max(np.ptp(bridge), 1e-12)
    top, bottom = max(open_, close), min(open_, close)
    for bound, beyond, is_high in ((high, top, True), (low, bottom, False)):
        outside = path > beyond if is_high else path < beyond
        outside[[0, -1]] = False
        if bound == beyond:  # the day never went past its open/close on this side
            path = np.minimum(path, beyond) if is_high else np.maximum(path, beyond)
            continue
        if not outside.any():  # reach the bound once, at a seeded interior point still between open and close
            interior = np.arange(1, n_bars)
            inside = interior[(path[interior] >= bottom) & (path[interior] <= top)]
            if not inside.size:  # every interior point is past the other bound: keep that side's extreme
                inside = interior[(interior != path.argmin()) & (interior != path.argmax())]
            outside[rng.choice(inside)] = True
            nudge = max(abs(beyond) * 1e-9, 1e-12)  # above the float spacing at any price
            path[outside] = beyond + (nudge if is_high else -nudge)
        extreme_at = np.flatnonzero(outside)[np.argmax(path[outside]) if is_high else np.argmin(path[outside])]
        extreme = path[extreme_at]
        path[outside] = beyond + (path[outside] - beyond) * (bound - beyond) / (extreme - beyond)
        path[extreme_at] = bound  # exactly, not to within rounding
    path[0], path[-1] = open_, close
    return path


def share_out(total: int, weights: np.ndarray) -> np.ndarray:
    """Whole numbers proportional to ``weights`` (non-negative, not all zero) summing to ``total``
    exactly (largest remainders)."""
    if total == 0:
        return np.zeros(len(weights), dtype=np.int64)
    if not weights.sum() > 0:
        raise ValueError(f"cannot share {total} out by weights that sum to {weights.sum()}")
    exact = total * weights / weights.sum()
    whole = np.floor(exact).astype(np.int64)
    short = total - int(whole.sum())
    whole[np.argsort(-(exact - whole), kind="stable")[:short]] += 1
    return whole


def volume_profile(intraday_volume: pd.DataFrame, asof, lookback_sessions: int = 20) -> pd.Series:
    """The expected share of a session's volume in each bar for the session ``asof``, from the
    ``lookback_sessions`` sessions before it only (point in time: the session itself and later ones
    are never read).

    ``intraday_volume`` has a row per session (a DatetimeIndex) and a column per bar. A session
    with no volume, a NaN or a negative volume counts for nothing; with no usable past session the
    profile is `u_shape`.
    """
    history = intraday_volume.sort_index()  # the latest sessions before asof, whatever the rows' order
    past = history.loc[history.index < pd.Timestamp(asof)].tail(lookback_sessions)
    values = past.to_numpy(dtype=float)
    totals = values.sum(axis=1, keepdims=True)
    usable = np.isfinite(values).all(axis=1) & (values >= 0).all(axis=1) & (totals[:, 0] > 0)
    if not usable.any():
        return pd.Series(u_shape(intraday_volume.shape[1]), index=intraday_volume.columns, name="volume_share")
    shares = (values[usable] / totals[usable]).mean(axis=0)
    return pd.Series(shares / shares.sum(), index=intraday_volume.columns, name="volume_share")


RANGE_BEYOND = 0.4  # how far past the open/close a day's high and low reach, in daily standard deviations


def modelled_daily_bars(close: pd.Series, volume: float = 1_000_000.0, window: int = 21) -> pd.DataFrame:
    """Daily bars (open, high, low, close, volume) for a symbol that has closes only, as the bundled
    stocks do: the open is the previous close, the high and low reach `RANGE_BEYOND` daily standard
    deviations (trailing ``window`` sessions, to the previous session) past the open and close, the
    volume is ``volume`` every day (orders sized as a share of it make results scale-free). A model
    of the day, point in time; sessions before ``window`` returns are left out."""
    close = close.dropna().sort_index()
    if close.index.has_duplicates or (close <= 0).any():
        raise ValueError(f"{close.name}: closes must be positive, one per session (duplicated dates or a close <= 0)")
    sigma = np.log(close).diff().rolling(window).std().shift(1)
    frame = pd.DataFrame({"open": close.shift(1), "close": close, "sigma": sigma}).dropna()
    top, bottom = frame[["open", "close"]].max(axis=1), frame[["open", "close"]].min(axis=1)
    frame["high"] = top * np.exp(RANGE_BEYOND * frame["sigma"])
    frame["low"] = bottom * np.exp(-RANGE_BEYOND * frame["sigma"])
    frame["volume"] = float(volume)
    return frame[["open", "high", "low", "close", "volume", "sigma"]]


def session_bars(close: pd.Series, session, *, volume: float | None = None, seed: int = 0,
                 window: int = 21) -> pd.DataFrame:
    """The intraday bars of ``session`` for a symbol with closes only (the simulated broker's market):
    its daily bar modelled by `modelled_daily_bars` from the closes up to the session, then
    `intraday_bars`. With fewer than ``window`` earlier returns the day runs from the previous close
    to the close with no range beyond them. ``volume`` None: the model's 1,000,000 shares (the
    volume's shape matters, not its level, when the prices have none)."""
    stamp = pd.Timestamp(session)
    history = close.loc[:stamp].dropna()
    if history.empty or history.index[-1] != stamp:
        raise ValueError(f"{close.name} has no close on {stamp:%Y-%m-%d}: no intraday market that day")
    day_volume = 1_000_000.0 if volume is None or not np.isfinite(volume) or volume < 0 else float(volume)
    modelled = modelled_daily_bars(history.tail(window + 2), volume=day_volume, window=window)
    if stamp in modelled.index:
        day = modelled.loc[stamp]
        bar = (day["open"], day["high"], day["low"], day["close"])
    else:
        previous = float(history.iloc[-2]) if len(history) > 1 else float(history.iloc[-1])
        last = float(history.iloc[-1])
        bar = (previous, max(previous, last), min(previous, last), last)
    return intraday_bars(*bar, day_volume, symbol=str(close.name), session=stamp, seed=seed)
