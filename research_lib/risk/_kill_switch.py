"""The kill switch: ACTIVE, REDUCING (position-reducing orders only), HALTED (cancels only).

Automatic transitions only tighten: the daily loss limit moves ACTIVE to REDUCING, the
drawdown stop moves any state to HALTED. Loosening needs :func:`resume` with a reason.
"""

from __future__ import annotations

import math
from enum import Enum

from research_lib.risk._limits import RiskInputError, RiskLimits
from research_lib.units import format_drawdown


class KillSwitch(Enum):
    """Trading state, from least to most restrictive."""

    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"

    @property
    def rank(self) -> int:
        """0 for ACTIVE, 1 for REDUCING, 2 for HALTED."""
        return _RANK[self]


_RANK = {KillSwitch.ACTIVE: 0, KillSwitch.REDUCING: 1, KillSwitch.HALTED: 2}
_MEANING = {KillSwitch.ACTIVE: "kill switch not engaged",
            KillSwitch.REDUCING: "kill switch engaged: only orders that reduce positions",
            KillSwitch.HALTED: "kill switch engaged: no new orders, cancels only"}


def trading_state(state: KillSwitch | str) -> str:
    """What the kill switch means for trading, as every page and message says it:
    ``trading: ACTIVE (kill switch not engaged)``, ``trading: HALTED (kill switch engaged: ...)``."""
    try:
        state = state if isinstance(state, KillSwitch) else KillSwitch(str(state).strip().lower())
    except ValueError:
        return f"trading: state unknown ({state!r} is not a kill switch state)"
    return f"trading: {state.name} ({_MEANING[state]})"


def _as_state(state: object, name: str) -> KillSwitch:
    if not isinstance(state, KillSwitch):
        raise RiskInputError(f"{name} is {state!r}; pass one of {[s for s in KillSwitch]}")
    return state


def next_state(state: KillSwitch, daily_pnl_frac: float, drawdown_frac: float,
               limits: RiskLimits) -> tuple[KillSwitch, str | None]:
    """Tighten the kill switch when the daily loss limit or the drawdown stop is reached.

    Parameters
    ----------
    state : KillSwitch
        Current state.
    daily_pnl_frac : float
        Today's profit and loss / equity at the start of the day (a loss is negative).
    drawdown_frac : float
        Current drawdown from peak equity as a positive fraction (0.1: 10 % below peak).
    limits : RiskLimits

    Returns
    -------
    (KillSwitch, str or None)
        The new state, never less restrictive than ``state``, and the reason when it
        changed (None otherwise). A non-finite input halts (fail closed).
    """
    state = _as_state(state, "state")
    if not (math.isfinite(daily_pnl_frac) and math.isfinite(drawdown_frac)):
        target, why = KillSwitch.HALTED, (f"daily_pnl_frac {daily_pnl_frac} or drawdown_frac {drawdown_frac} "
                                          "is not finite; the loss limits cannot be verified")
    elif drawdown_frac < 0:
        raise RiskInputError(f"drawdown_frac is {drawdown_frac}; pass the drawdown as a positive fraction "
                             "below the peak (0.1 for 10 % down)")
    elif drawdown_frac >= limits.drawdown_stop:
        target, why = KillSwitch.HALTED, (f"drawdown_stop: drawdown {format_drawdown(drawdown_frac)} reached the "
                                          f"stop at {format_drawdown(limits.drawdown_stop)}")
    elif daily_pnl_frac <= -limits.daily_loss_limit:
        target, why = KillSwitch.REDUCING, (f"daily_loss_limit: daily loss {-daily_pnl_frac:.2%} >= limit "
                                            f"{limits.daily_loss_limit:.2%}")
    else:
        return state, None
    if target.rank <= state.rank:
        return state, None
    return target, f"{state.name} -> {target.name}: {why}"


def resume(state: KillSwitch, to: KillSwitch, reason: str) -> tuple[KillSwitch, str]:
    """Loosen the kill switch explicitly (the only way to leave REDUCING or HALTED).

    Parameters
    ----------
    state, to : KillSwitch
        Current state and the less restrictive state to move to.
    reason : str
        Why trading may resume (who decided, what was checked); logged by the caller.

    Returns
    -------
    (KillSwitch, str)
        ``to`` and a log line naming both states and the reason.
    """
    state, to = _as_state(state, "state"), _as_state(to, "to")
    if not isinstance(reason, str) or not reason.strip():
        raise RiskInputError(f"reason is {reason!r}; say why trading may resume (a non-empty string)")
    if to.rank >= state.rank:
        raise RiskInputError(f"to is {to.name} but state is {state.name}; resume only loosens, "
                             "tightening happens through next_state")
    return to, f"{state.name} -> {to.name} (manual resume): {reason.strip()}"
