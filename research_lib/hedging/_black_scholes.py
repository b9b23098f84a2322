"""Black-Scholes prices and deltas of European options: a pure, vectorized numpy core.

Spot and strike are in the same price units (index points); ``years`` is the time to expiry
in years; ``volatility``, ``rate`` and ``dividend_yield`` are annualized fractions (0.2 for
20 %), the rate and the yield continuously compounded. Every argument broadcasts against
the others; scalars in give a float out.

When there is no uncertainty left (``volatility * sqrt(years) == 0``: at expiry or with zero
volatility) the price is the discounted intrinsic value of the forward,
``max(0, S e^{-qT} - K e^{-rT})`` for a call, which is the intrinsic value at expiry, and the
delta is the step ``e^{-qT}`` (call) or ``-e^{-qT}`` (put) in the money, 0 out of the money,
and half of it when the forward equals the strike (the limit of ``N(d1)`` there).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
from scipy.special import ndtr

from research_lib.errors import SpartanError
from research_lib.params import did_you_mean

OptionKind = Literal["call", "put"]
OPTION_KINDS: tuple[str, ...] = get_args(OptionKind)


class HedgeInputError(SpartanError, ValueError):
    """An input of the hedging layer is malformed; the message names it, shows the value and says the fix."""


# A rate or yield beyond +-100 % a year, or an expiry beyond a century, overflows the exponentials
# (a price of inf or NaN); no market quotes such options.
_RULES = {"positive": ("> 0", lambda a: a <= 0),
          "non-negative": (">= 0", lambda a: a < 0),
          "expiry": ("between 0 and 100 (years)", lambda a: (a < 0) | (a > 100)),
          "annual rate": ("between -1 and 1 (-100 % to +100 % a year)", lambda a: np.abs(a) > 1)}


def _checked(name: str, value: object, rule: str, fix: str) -> np.ndarray:
    """``value`` as a float array, or a HedgeInputError naming ``name``, the first bad value and ``fix``."""
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise HedgeInputError(f"{name} is {value!r}, not a number or an array of numbers; {fix}") from None
    bound, breaks = _RULES[rule]
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(array) | breaks(array)
    if bad.any():
        first = np.argwhere(bad)[0]
        where = ("" if array.ndim == 0 else
                 f" at position {tuple(int(i) for i in first)} ({int(bad.sum())} of {array.size} values bad)")
        shown = float(array[tuple(first)])
        raise HedgeInputError(f"{name} must be finite{' and ' + bound if bound else ''}; got {shown!r}{where}; {fix}")
    return array


def _inputs(spot, strike, years, volatility, rate, dividend_yield, kind) -> tuple[np.ndarray, ...]:
    if kind not in OPTION_KINDS:
        raise HedgeInputError(f"kind is {kind!r}; pass one of {list(OPTION_KINDS)}.{did_you_mean(kind, OPTION_KINDS)}")
    arrays = (
        _checked("spot", spot, "positive", "pass the underlying's price, e.g. drop missing closes with .dropna()"),
        _checked("strike", strike, "positive", "pass the strike in the spot's price units, e.g. 0.95 * spot"),
        _checked("years", years, "expiry", "pass the time to expiry in years (0 at expiry), "
                 "e.g. sessions / 252"),
        _checked("volatility", volatility, "non-negative", "pass an annualized fraction, e.g. 0.2 for 20 % "
                 "(a VIX close divided by 100)"),
        _checked("rate", rate, "annual rate", "pass an annual continuously compounded rate, e.g. 0.03"),
        _checked("dividend_yield", dividend_yield, "annual rate", "pass an annual continuously compounded yield, e.g. 0.015"),
    )
    try:
        return tuple(np.broadcast_arrays(*arrays))
    except ValueError:
        shapes = ", ".join(f"{n} {a.shape}" for n, a in zip(("spot", "strike", "years", "volatility", "rate",
                                                              "dividend_yield"), arrays))
        raise HedgeInputError(f"the arguments' shapes do not broadcast together: {shapes}; pass arrays of one "
                              "shape, or scalars") from None


def _d1_d2(spot, strike, years, volatility, rate, dividend_yield) -> tuple[np.ndarray, np.ndarray]:
    """``d1`` and ``d2``; where ``volatility * sqrt(years)`` is 0, both are +inf, -inf or 0 as the
    forward is above, below or at the strike (so ``N(d)`` is the step, 0.5 at the money)."""
    spread = volatility * np.sqrt(years)
    smooth = spread > 0
    safe = np.where(smooth, spread, 1.0)
    log_moneyness = np.log(spot) - np.log(strike) + (rate - dividend_yield) * years  # log(forward / strike)
    with np.errstate(over="ignore"):
        step = np.where(log_moneyness > 0, np.inf, np.where(log_moneyness < 0, -np.inf, 0.0))
        d1 = np.where(smooth, log_moneyness / safe + 0.5 * safe, step)
        d2 = np.where(smooth, d1 - safe, d1)
    return d1, d2


def _out(value: np.ndarray) -> float | np.ndarray:
    return float(value) if value.ndim == 0 else value


def black_scholes_price(spot, strike, years, volatility, rate=0.0, dividend_yield=0.0,
                        kind: OptionKind = "put") -> float | np.ndarray:
    """Black-Scholes(-Merton) price of a European call or put.

    Parameters
    ----------
    spot : float or array
        Price of the underlying, > 0 (index points).
    strike : float or array
        Strike, > 0, in the spot's units.
    years : float or array
        Time to expiry in years, >= 0 (0: at expiry).
    volatility : float or array
        Annualized volatility, a fraction >= 0 (0.2 for 20 %).
    rate : float or array
        Annual risk-free rate, continuously compounded (fraction).
    dividend_yield : float or array
        Annual dividend yield of the underlying, continuously compounded (fraction).
    kind : {"call", "put"}
        The option's type.

    Returns
    -------
    float or ndarray
        The price in the spot's units per unit of underlying, never negative; the broadcast
        shape of the inputs (a float when all are scalars). At expiry or with zero volatility,
        the discounted intrinsic value of the forward.

    Raises
    ------
    HedgeInputError (a ValueError)
        When an argument is NaN, infinite, negative (or 0 for spot and strike), the shapes do
        not broadcast, or ``kind`` is not "call" or "put".
    """
    spot, strike, years, volatility, rate, dividend_yield = _inputs(spot, strike, years, volatility, rate,
                                                                    dividend_yield, kind)
    d1, d2 = _d1_d2(spot, strike, years, volatility, rate, dividend_yield)
    spot_pv = spot * np.exp(-dividend_yield * years)
    strike_pv = strike * np.exp(-rate * years)
    if kind == "call":
        price = spot_pv * ndtr(d1) - strike_pv * ndtr(d2)
    else:
        price = strike_pv * ndtr(-d2) - spot_pv * ndtr(-d1)
    return _out(np.maximum(price, 0.0))


def black_scholes_delta(spot, strike, years, volatility, rate=0.0, dividend_yield=0.0,
                        kind: OptionKind = "put") -> float | np.ndarray:
    """Black-Scholes delta: the change of the price per unit change of the spot.

    Same parameters and refusals as `black_scholes_price`.

    Returns
    -------
    float or ndarray
        ``e^{-qT} N(d1)`` for a call (between 0 and ``e^{-qT}``), ``-e^{-qT} N(-d1)`` for a put
        (between ``-e^{-qT}`` and 0). At expiry or with zero volatility, the step described in
        the module docstring (half of it when the forward equals the strike).
    """
    spot, strike, years, volatility, rate, dividend_yield = _inputs(spot, strike, years, volatility, rate,
                                                                    dividend_yield, kind)
    d1, _ = _d1_d2(spot, strike, years, volatility, rate, dividend_yield)
    carry = np.exp(-dividend_yield * years)
    return _out(carry * ndtr(d1) if kind == "call" else -carry * ndtr(-d1))
