"""Pre-trade risk: pure checks of proposed orders, the kill switch, portfolio-level controls.

Conventions: quantities are shares (negative: short); weights and exposures are position
values at reference prices as fractions of account equity; loss limits are positive
fractions of equity. No function here reads a clock, a file or the network: ``now``, the
book and the prices are passed in, and the same inputs always give the same decision.
"""

from research_lib.risk._checks import check_orders
from research_lib.risk._kill_switch import KillSwitch, next_state, resume
from research_lib.risk._limits import RiskInputError, RiskLimits
from research_lib.risk._orders import ClampedOrder, Order, ReferencePrice, RejectedOrder, RiskDecision, Side
from research_lib.risk._portfolio_controls import (drawdown_circuit_breaker, follow_multiplier, volatility_multiplier,
                                                   volatility_target)
from research_lib.risk._research import clamp_weights

__all__ = ["ClampedOrder", "KillSwitch", "Order", "ReferencePrice", "RejectedOrder", "RiskDecision", "RiskInputError",
           "RiskLimits", "Side", "check_orders", "clamp_weights", "drawdown_circuit_breaker", "follow_multiplier", "next_state",
           "resume", "volatility_multiplier", "volatility_target"]
