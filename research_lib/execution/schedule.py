"""Execution schedules: a parent order split into child slices over a session's bars.

``market`` sends the parent at once in the window's first bar, with no participation cap: today's
behaviour, the baseline the others are measured against. ``twap`` shares it equally over the bars
of the window, ``vwap`` in proportion to the expected volume of each bar (`intraday.volume_profile`,
from past sessions only), ``iceberg`` shows ``display_fraction`` of the parent at a time, refreshed
each bar until done. Every slice:

- is a whole number of lots, and the slices sum to the parent exactly (largest remainders);
- (but market's) is at most ``participation_cap`` of the expected volume of the bars it works over
  (``bars_per_slice`` bars for twap and vwap, one for an iceberg's refresh): what the cap leaves over at the
  end of the window is, by ``end_policy``, either worked in the bars after the window up to the close
  (``cross``: marketable at the band's edge, still under the cap) or left unfilled and reported
  (``leave``);
- carries a limit price inside ``limit_band`` of the arrival price (a buy at most arrival x (1 +
  band), a sell at least arrival x (1 - band)), and ``limit_band`` may not exceed the risk layer's
  fat-finger band, so every slice can pass the pre-trade checks;
- has the client order id `child_order_id(parent_id, k)`, derived from the parent's alone.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from research_lib.execution.ids import MAX_CLIENT_ORDER_ID, check_client_order_id
from research_lib.config import ExecutionConfig
from research_lib.execution.intraday import share_out

ALGORITHMS = ("market", "twap", "vwap", "iceberg")  # ExecutionConfig.algorithm's values
MAX_SLICES = 999  # child ids end in a three-digit slice number
MAX_LOTS = 2**53  # lots are counted exactly as integers (and as floats, up to here)


@dataclass(frozen=True)
class ChildSlice:
    """One child order of a schedule: its id, the bar it works in, its size and limit price."""

    client_order_id: str
    index: int
    bar: int
    lots: int
    lot_size: float
    limit_price: float
    phase: str  # "window", or "after window" for what end_policy "cross" works up to the close
    bars: int = 1  # the bars it works over, evenly, from ``bar``

    @property
    def quantity(self) -> float:
        return self.lots * self.lot_size


def child_order_id(parent_id: str, index: int) -> str:
    """``<parent>.<k>`` with a three-digit slice number, at most 48 characters: a parent id too long
    for the suffix is cut and ends in ``~`` and 12 hex digits of its sha256 (two such parents share
    child ids only if their hashes' first 48 bits agree)."""
    if not 0 <= index <= MAX_SLICES:
        raise ValueError(f"slice number {index} is outside 0..{MAX_SLICES}")
    room = MAX_CLIENT_ORDER_ID - 4
    base = parent_id if len(parent_id) <= room else (
        parent_id[: room - 13] + "~" + hashlib.sha256(parent_id.encode()).hexdigest()[:12])
    return check_client_order_id(f"{base}.{index:03d}")


def plan_schedule(parent_id: str, side: str, quantity: float, arrival_price: float, expected_volume,
                  config: ExecutionConfig, *, lot_size: float = 1.0, fat_finger_band: float | None = None,
                  ) -> tuple[list[ChildSlice], float]:
    """The child slices of a parent order and the quantity the cap leaves unplanned (0 when the
    schedule completes it).

    ``expected_volume`` is the expected volume of each bar of the session (shares; its length is
    the number of bars). ``quantity`` is rounded down to whole lots of ``lot_size``.

    Raises
    ------
    ValueError
        for a side other than buy or sell, a non-finite or negative quantity, a non-positive arrival
        price, expected volumes that are not finite and non-negative, a window beyond the session,
        or a ``limit_band`` wider than ``fat_finger_band``.
    """
    if side not in ("buy", "sell"):
        raise ValueError(f"side is {side!r}; pass 'buy' or 'sell'")
    if not (math.isfinite(quantity) and quantity >= 0):
        raise ValueError(f"quantity is {quantity}; pass a finite quantity >= 0")
    if not (math.isfinite(arrival_price) and arrival_price > 0):
        raise ValueError(f"arrival_price is {arrival_price}; pass a finite price > 0")
    if not (math.isfinite(lot_size) and lot_size > 0):
        raise ValueError(f"lot_size is {lot_size}; pass a finite size > 0")
    volume = np.asarray(expected_volume, dtype=float)
    if volume.ndim != 1 or not np.isfinite(volume).all() or (volume < 0).any():
        raise ValueError("expected_volume must be finite, non-negative volumes, one per bar")
    if config.window_end_bar > len(volume):
        raise ValueError(f"the window ends at bar {config.window_end_bar} but the session has {len(volume)} bars")
    if fat_finger_band is not None and config.limit_band > fat_finger_band:
        raise ValueError(f"execution.limit_band {config.limit_band} is wider than risk.fat_finger_band "
                         f"{fat_finger_band}: every slice would be refused; narrow it")
    ratio = quantity / lot_size  # whole lots, up to float error: 0.3 / 0.1 (2.9999999999999996) is 3; 0.9999999995 is 0
    whole = round(ratio) if abs(ratio - round(ratio)) <= 1e-12 * max(1.0, ratio) else math.floor(ratio)
    if whole > MAX_LOTS:
        raise ValueError(f"quantity / lot_size is {whole:.3g} lots, more than {MAX_LOTS:.3g}: use a larger lot_size")
    lots = int(whole)
    band = config.limit_band * (1 - 1e-9)  # a hair inside, so that a band equal to the fat-finger band passes its check
    limit = arrival_price * (1 + band if side == "buy" else 1 - band)
    # A bar never needs room for more than the whole parent (and int64 must hold it).
    caps = np.minimum(np.floor(config.participation_cap * volume / lot_size * (1 + 1e-12)), lots).astype(np.int64)
    window = np.arange(config.window_start_bar, config.window_end_bar)
    planned = _window_lots(lots, window, volume, caps, config)
    left = lots - int(planned.sum())
    if left and config.end_policy == "cross":
        after = np.arange(config.window_end_bar, len(volume))
        extra = _capped(np.r_[left, np.zeros(len(after) - 1, dtype=np.int64)], caps[after]) if len(after) else after
        planned = np.r_[planned, extra]
        window = np.r_[window, after]
        left -= int(extra.sum())
    if config.algorithm in ("twap", "vwap") and config.bars_per_slice > 1:
        window, planned, spans = _grouped(window, planned, config)
    else:
        spans = np.ones(len(window), dtype=np.int64)
    slices, k = [], 0
    for bar, n, span in zip(window, planned, spans):
        if n <= 0:
            continue
        if k > MAX_SLICES:
            raise ValueError(f"more than {MAX_SLICES + 1} slices: a narrower window or a larger participation cap")
        phase = "window" if bar < config.window_end_bar else "after window"
        slices.append(ChildSlice(child_order_id(parent_id, k), k, int(bar), int(n), lot_size, limit, phase, int(span)))
        k += 1
    return slices, left * lot_size


def _grouped(bars: np.ndarray, lots: np.ndarray, config: ExecutionConfig) -> tuple[np.ndarray, ...]:
    """Consecutive bars in groups of ``bars_per_slice`` (counted from the window's start, and again
    from its end for the bars after it), each group one child: its first bar, its lots (the sum of
    its bars', so under the cap of the group's volume) and how many bars it spans."""
    after = bars >= config.window_end_bar
    group = np.where(after, (bars - config.window_end_bar) // config.bars_per_slice + config.window_end_bar,
                     (bars - config.window_start_bar) // config.bars_per_slice)
    keys, first = np.unique(group, return_index=True)
    sums = np.array([lots[group == key].sum() for key in keys], dtype=np.int64)
    spans = np.array([(group == key).sum() for key in keys], dtype=np.int64)
    return bars[first], sums, spans


def _window_lots(lots: int, window: np.ndarray, volume: np.ndarray, caps: np.ndarray,
                 config: ExecutionConfig) -> np.ndarray:
    """Lots per bar of the window by the algorithm, each at most its bar's cap."""
    if config.algorithm == "market":  # all at once: the baseline has no cap
        planned = np.zeros(len(window), dtype=np.int64)
        planned[0] = lots
        return planned
    if config.algorithm == "iceberg":  # the shown quantity, refreshed each bar: never more than shown at once
        shown = max(1, int(math.ceil(config.display_fraction * lots)))
        blocks = np.minimum(shown, np.maximum(0, lots - shown * np.arange(len(window), dtype=np.int64)))
        return _capped(np.r_[blocks[:-1], lots - blocks[:-1].sum()] if len(blocks) else blocks,
                       np.minimum(caps[window], shown))
    weights = np.ones(len(window)) if config.algorithm == "twap" else volume[window]
    target = weights if weights.sum() > 0 else np.ones(len(window))
    return _capped(share_out(lots, target), caps[window])


def _capped(wanted: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """``wanted`` lots per bar, none above its cap: what a bar cannot take moves on to the next bars
    (a schedule never works ahead of itself); what is left after the last bar is not planned."""
    out, carry = np.zeros_like(wanted), 0
    for i, (want, cap) in enumerate(zip(wanted, caps)):
        out[i] = min(int(want) + carry, int(cap))
        carry += int(want) - int(out[i])
    return out
