"""Units every floor shares: sessions in a year, and dollars as every page shows them."""

import math
import numbers

SESSIONS_PER_YEAR = 252
"""Trading sessions in a year (US equities): annualizes returns, volatility and daily rates."""


def check_sessions_per_year(value: object) -> int:
    """``value``, a calendar's sessions in a year (252 New York, 365 crypto, 260 forex), if it is a
    positive whole number; a ValueError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"sessions_per_year must be a positive whole number (got {value!r}), e.g. 252 for New York, "
                         "365 for crypto.")
    return int(value)


def format_usd(amount: float) -> str:
    """Dollars with enough digits to be true: cents, or three significant digits below a dollar
    (``$0.001``, never ``$0.00`` for a cost that is not zero)."""
    if not math.isfinite(amount) or amount == 0:
        return f"${amount:.2f}"
    decimals = max(2, 2 - math.floor(math.log10(abs(amount))))
    text = f"{amount:,.{decimals}f}"
    while text.endswith("0") and len(text.rsplit(".", 1)[1]) > 2:
        text = text[:-1]
    return f"${text}"


def format_drawdown(fraction: float | None) -> str:
    """A drawdown as every page and message shows it: a loss in percent, negative, one decimal
    (``-48.1%``), whether it was stored as a loss (-0.481) or as its size (0.481)."""
    if fraction is None or isinstance(fraction, bool) or not math.isfinite(fraction):
        return "n/a"
    shown = f"{-abs(fraction):.1%}"
    return "0.0%" if shown == "-0.0%" else shown


FEW_SESSIONS = 63
"""Statistics from fewer sessions than this (a quarter) are shown with :func:`few_sessions_caveat`."""


def few_sessions_caveat(sessions: int | None) -> str:
    """``""``, or a caveat to print after a statistic estimated from fewer than `FEW_SESSIONS` sessions."""
    if sessions is None or isinstance(sessions, bool) or not sessions == sessions or not 0 <= sessions < FEW_SESSIONS:
        return ""  # unknown (None, NaN), not a count, or enough
    sessions = int(sessions)
    return f"from only {sessions} session{'s' if sessions != 1 else ''}, too few to judge; needs {FEW_SESSIONS}"


__all__ = ["FEW_SESSIONS", "SESSIONS_PER_YEAR", "few_sessions_caveat", "format_drawdown", "format_usd"]
