"""Spartan's shared research library.

Conventions, stated once for every module:

- Dates are exchange-local session dates (tz-naive ``DatetimeIndex`` named ``date``).
- Prices are adjusted closes unless a field says otherwise; returns are simple daily
  returns (``close[t] / close[t-1] - 1``), never percentages.
- Weights are fractions of net asset value; a long-only fully invested book sums to 1.
- Anything computed for date ``t`` uses only data known at the close of ``t``.
"""

from research_lib import _moved
from research_lib.errors import ConfigError, DataValidationError, SpartanError

_moved.install()  # old module names (before issue 14) still import, with a DeprecationWarning

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataValidationError", "SpartanError", "__version__"]
