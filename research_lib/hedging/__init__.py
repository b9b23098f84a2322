"""Options hedging in research: protective puts and collars on an index over a strategy.

The option prices here are MODELLED with Black-Scholes on the VIX close (where one is
known) or on realized volatility plus a premium; they are not traded quotes: no skew, no
bid-ask beyond ``cost_bps``, no early exercise. Every result carries `MODELLED_LABEL`.

Conventions: returns are simple daily returns on exchange session dates; P&L, premiums and
costs are fractions of the strategy's equity (which starts at 1.0); index levels, strikes
and option prices are in index points; strikes in `HedgeConfig` are fractions of the index
close at purchase; volatility, rates and yields are annualized fractions (VIX / 100),
rates continuously compounded; time is ``sessions / sessions_per_year`` years. Point in
time: what is done at the close of ``t`` uses only data known at that close. Its drawdown,
Sharpe and cost with and without the hedge: `research_lib.validation.metrics.hedge_summary`.
"""

from research_lib.hedging._black_scholes import (OPTION_KINDS, HedgeInputError, OptionKind, black_scholes_delta,
                                                 black_scholes_price)
from research_lib.hedging._overlay import (MODELLED_LABEL, ROLL_COLUMNS, VOLATILITY_SOURCES, HedgeConfig, HedgeResult,
                                           hedge_overlay)

__all__ = ["MODELLED_LABEL", "OPTION_KINDS", "ROLL_COLUMNS", "VOLATILITY_SOURCES", "HedgeConfig", "HedgeInputError",
           "HedgeResult", "OptionKind", "black_scholes_delta", "black_scholes_price", "hedge_overlay"]
