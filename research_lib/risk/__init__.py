"""Pre-trade risk: pure checks of proposed orders, the kill switch, portfolio-level controls.

Conventions: quantities are shares (negative: short); weights and exposures are position
values at reference prices as fractions of account equity; loss limits are positive
fractions of equity. No function here reads a clock, a file or the network: ``now``, the
book and the prices are passed in, and the same inputs always give the same decision.

The rule the sizing limits hold, order by order (`check_orders`, and `clamp_weights` for
research rebalances):

- An order that reduces its symbol's position towards zero without flipping it (the new
  position has the old one's sign or is zero, and is no larger) is never refused or clamped
  by the weight, gross or net exposure limits: it cannot raise a weight or the gross, and
  the kill switch's REDUCING state, which allows only such orders, can always flatten a
  book. When it leaves net exposure beyond its limit where the strict rule below would not
  (net grew, or went through zero, beyond it), it is sent with a `RiskNote` saying so.
- Every risk-increasing quantity follows the strict rule: after the order, the symbol's
  weight, the gross and the net exposure are each within their limit or, when one already
  was beyond it, it moved towards the limit without changing sign and without growing. The
  part of an order beyond zero (a flip) is a new position, checked against the book as it is
  once the old position is closed; so a flip is clamped at the limit on the other side.
- Every order stays within the per-order caps (notional, quantity), the share of ADV (of
  the symbol's orders together), the order counts and the kill switch; with ``allow_short``
  false a sell never takes the position less open sells below zero, exactly.
- Round-off: a limit may be exceeded by at most ``1e-12`` of the traded symbol's own sizes
  (the order, its position, its open sells, its earlier orders in the batch), never of the
  book's; the no-short and REDUCING bounds allow none. An order, as given or as clamped, of
  fewer than `MIN_ORDER_QUANTITY` shares is never sent: it is rejected with a reason.
- Shares of a notional order are counted at the price that gives the most shares it can
  take: a buy's at the lower of its reference and limit price, a sell's at its limit price.
"""

from research_lib.risk._checks import check_orders
from research_lib.risk._kill_switch import KillSwitch, next_state, resume, trading_state
from research_lib.risk._limits import RiskInputError, RiskLimits
from research_lib.risk._orders import (MIN_ORDER_QUANTITY, ClampedOrder, Order, ReferencePrice, RejectedOrder,
                                       RiskDecision, RiskNote, Side)
from research_lib.risk._portfolio_controls import (drawdown_circuit_breaker, follow_multiplier, volatility_multiplier,
                                                   volatility_target)
from research_lib.risk._research import EVENT_COLUMNS, UNKNOWN_VOLUME, clamp_weights

__all__ = ["EVENT_COLUMNS", "MIN_ORDER_QUANTITY", "UNKNOWN_VOLUME", "ClampedOrder", "KillSwitch", "Order", "ReferencePrice", "RejectedOrder",
           "RiskDecision", "RiskInputError", "RiskLimits", "RiskNote", "Side", "check_orders", "clamp_weights",
           "drawdown_circuit_breaker", "follow_multiplier", "next_state", "resume", "trading_state",
           "volatility_multiplier", "volatility_target"]
