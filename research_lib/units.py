"""Units every floor shares: sessions in a year, and dollars as every page shows them."""

import math

SESSIONS_PER_YEAR = 252
"""Trading sessions in a year (US equities): annualizes returns, volatility and daily rates."""


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


__all__ = ["SESSIONS_PER_YEAR", "format_usd"]
