"""The sizing limits of one order: how many shares each of them lets it take.

The order is split into the shares that only reduce its symbol's position (towards zero, at
most all of it), which the weight, gross and net exposure limits never refuse, and the rest,
a new position, which gets what the strict rule leaves it from the book as it is once the old
position is closed: up to the limit, or nothing on a side where the quantity already is at or
beyond it. Rooms are in shares; each comes with the round-off allowed beyond it, a fraction
``_ROUND_OFF`` of the symbol's own sizes (never of the book's), and none for the no-short and
REDUCING bounds, which are computed exactly from the exact position.
"""

from __future__ import annotations

import math
from fractions import Fraction

from research_lib.risk._kill_switch import KillSwitch
from research_lib.risk._limits import RiskLimits
from research_lib.risk._orders import Order, Side

_ROUND_OFF = 1e-12  # relative to the traded symbol's own sizes: a difference below this is float noise


def _floor(value: Fraction) -> float:
    """The largest float not above ``value``."""
    nearest = float(value)
    return math.nextafter(nearest, -math.inf) if Fraction(nearest) > value else nearest


def _room(limit: float, level: float, direction: int) -> float:
    """How far a signed quantity now at ``level`` may move in ``direction`` (+1 or -1): up to
    ``limit`` on that side (so through zero up to the limit on the other side when it starts
    beyond it there), and not at all when it is already at or beyond ``limit`` on that side."""
    return max(limit - direction * level, 0.0)


def _beyond(level: float, limit: float, direction: int, where: str) -> str:
    """What the reason adds when a quantity is already beyond its limit on the order's side."""
    return f" ({level:.4f} {where}: beyond the limit, it may only move towards it)" if direction * level > limit else ""


class Sizing:
    """The sizing limits of one order: how many shares each lets it take.

    ``held`` is the exact position, ``done`` the shares of the symbol sent before in this
    batch, ``per_weight`` the shares worth all of equity and ``others`` the gross and net
    exposure of the other symbols. ``closing`` is the part of the order that only reduces
    the position (towards zero, at most all of it): the exposure limits never refuse it.
    """

    def __init__(self, order: Order, qty: float, held: Fraction, open_sells: float, done: float,
                 per_weight: float, others: tuple[float, float]):
        self.order, self.qty, self.held, self.open_sells, self.done = order, qty, held, open_sells, done
        self.per_weight, (self.others_gross, self.others_net) = per_weight, others
        self.position = float(held)
        self.closing = _floor(abs(held)) if order.side.sign * held < 0 else 0.0
        # Round-off allowance, from the symbol's own sizes only (never the book's).
        self.tolerance = _ROUND_OFF * (qty + abs(self.position) + open_sells + done)

    def bounds(self, volume: float, limits: RiskLimits, state: KillSwitch) -> list[tuple[float, float, str]]:
        """(room in shares, round-off allowed beyond it, reason when it binds) of each sizing limit."""
        sym, side, qty, done, tol = self.order.symbol, self.order.side, self.qty, self.done, self.tolerance
        earlier = f" (with {done:g} sent before it)" if done else ""
        bounds = [(limits.max_adv_fraction * volume - done, tol,
                   f"max_adv_fraction: {sym} order of {qty:g}{earlier} is {(qty + done) / volume:.4f} of ADV "
                   f"{volume:g} > limit {limits.max_adv_fraction:.4f}")]
        if side is Side.SELL and not limits.allow_short:
            sellable = _floor(self.held - Fraction(self.open_sells))
            bounds.append((sellable, 0.0, f"no_short: {sym} sell of {qty:g} exceeds position {self.position:g} less "
                                          f"open sells {self.open_sells:g} = {sellable:g}"))
        if state is KillSwitch.REDUCING:
            bounds.append((self.closing, 0.0, f"kill_switch: state REDUCING: {sym} {side.value} of {qty:g} would "
                                              f"flip position {self.position:g}"))
        return bounds + self._exposure_bounds(limits)

    def _exposure_bounds(self, limits: RiskLimits) -> list[tuple[float, float, str]]:
        """Weight, gross and net: ``closing`` plus what the strict rule leaves the rest of the
        order, from the book once the position is closed (or as it is, if the order adds to it)."""
        sym, sgn, pw = self.order.symbol, self.order.side.sign, self.per_weight
        weight = 0.0 if self.closing else self.position / pw
        after = (self.position + sgn * self.qty) / pw
        where = f"once the {sym} position is closed" if self.closing else "now"
        beyond = ">" if sgn > 0 else "<"
        limited = [(limits.max_weight, weight, sgn,
                    f"max_weight: {sym} weight after the order would be {after:.4f} {beyond} limit "
                    f"{sgn * limits.max_weight:.4f}"),
                   (limits.max_gross_exposure, self.others_gross + abs(weight), 1,
                    f"max_gross_exposure: gross after the order would be {self.others_gross + abs(after):.4f} > "
                    f"limit {limits.max_gross_exposure:.4f}"),
                   (limits.max_net_exposure, self.others_net + weight, sgn,
                    f"max_net_exposure: net after the order would be {self.others_net + after:.4f} {beyond} limit "
                    f"{sgn * limits.max_net_exposure:.4f}")]
        return [(self.closing + _room(limit, level, direction) * pw, self.tolerance,
                 message + _beyond(level, limit, direction, where)) for limit, level, direction, message in limited]

    def net_note(self, shares: float, limit: float) -> str | None:
        """The note for a reducing order of ``shares`` that leaves net exposure beyond ``limit`` where
        the strict rule would not (grown, or through zero): the exemption let it through."""
        if not self.closing:
            return None
        pw = self.per_weight
        before = self.others_net + self.position / pw
        move = self.order.side.sign * shares / pw  # told apart from the totals: it may be below their round-off
        after = before + move
        if abs(after) <= limit + self.tolerance / pw or (move * before < 0 and abs(move) <= abs(before)):
            return None
        return (f"max_net_exposure: net after the order is {after:.4f} {'>' if after > 0 else '<'} limit "
                f"{math.copysign(limit, after):.4f} (it was {before:.4f}); sent: it reduces the "
                f"{self.order.symbol} position {self.position:g}, and no exposure limit refuses a reducing order")
