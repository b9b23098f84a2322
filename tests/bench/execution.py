"""`make bench execution`: market, TWAP, VWAP and iceberg on the intraday simulator.

For each bundled stock, the last `SESSIONS` sessions of its history, parents of 0.1 %, 1 % and 5 % of
the day's volume (buys on even sessions, sells on odd ones) worked by each algorithm with the
defaults of `ExecutionConfig` (window 09:45-15:30, cap 10 % of a bar, band 2 %, cross the rest)
and `MarketModel` (spread 5 bps, impact coefficient 0.5). Arrival price: the session's open. The
daily bars are modelled from the closes (the bundled stocks have no open, high, low or volume:
`modelled_daily_bars`) and the intraday bars simulated (`intraday_bars`); VWAP's profile comes from
the symbol's previous 20 simulated sessions. Everything here is simulated: the figures compare the
algorithms under one model of the market, they are not measurements of a real one.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

SESSIONS = 120
SIZES = (0.001, 0.01, 0.05)


def bench_execution() -> dict:
    from research_lib.data._bundled import STOCKS, bundled_prices
    from research_lib.execution import (ALGORITHMS, BARS_PER_SESSION, ExecutionConfig, MarketModel, intraday_bars,
                                        modelled_daily_bars, plan_schedule, simulate_execution, volume_profile)

    start = time.perf_counter()
    close = bundled_prices()["close"]
    model, lookback = MarketModel(), 20
    configs = {a: ExecutionConfig(algorithm=a) for a in ALGORITHMS}
    window = (configs["twap"].window_start_bar, configs["twap"].window_end_bar)
    rows = []
    print(f"execution: {len(STOCKS)} stocks x {SESSIONS} sessions x {len(SIZES)} sizes x {len(ALGORITHMS)} "
          "algorithms on the intraday simulator ...", flush=True)
    for symbol in STOCKS:
        daily = modelled_daily_bars(close[symbol]).tail(SESSIONS + lookback)
        bars = {d: intraday_bars(r.open, r.high, r.low, r.close, r.volume, symbol=symbol, session=d)
                for d, r in daily.iterrows()}
        history = pd.DataFrame({d: b["volume"].to_numpy() for d, b in bars.items()}).T
        for n, (day, r) in enumerate(daily.iloc[lookback:].iterrows()):
            side = "buy" if n % 2 == 0 else "sell"
            profile = volume_profile(history, day, lookback).to_numpy()
            expected = {"vwap": profile * r.volume}
            for size in SIZES:
                quantity = size * r.volume
                for algorithm, config in configs.items():
                    volume = expected.get(algorithm, np.full(BARS_PER_SESSION, r.volume / BARS_PER_SESSION))
                    slices, _ = plan_schedule(f"{symbol}-{day:%Y%m%d}", side, quantity, r.open, volume, config)
                    result = simulate_execution(slices, bars[day], side=side, quantity=quantity, arrival_price=r.open,
                                                daily_volatility=r.sigma, model=model, window=window)
                    rows.append({"symbol": symbol, "session": day, "size": size, "algorithm": algorithm,
                                 **result.shortfall_bps, "filled": result.filled / quantity})
    table = pd.DataFrame(rows)
    summary = table.groupby(["size", "algorithm"]).agg(
        total=("total", "mean"), total_sd=("total", "std"), impact=("impact", "mean"), spread=("spread", "mean"),
        timing=("timing", "mean"), opportunity=("opportunity", "mean"), filled=("filled", "mean"), n=("total", "size"))
    summary["total_se"] = summary["total_sd"] / np.sqrt(summary["n"])
    seconds = time.perf_counter() - start
    print(summary.round(2).to_string())
    large = summary.loc[max(SIZES)]
    lines = []
    for algorithm in ("twap", "vwap"):
        gain = large.loc["market", "total"] - large.loc[algorithm, "total"]
        se = float(np.hypot(large.loc["market", "total_se"], large.loc[algorithm, "total_se"]))
        lines.append(f"{algorithm.upper()} {'beats' if gain > 0 else 'does not beat'} market by {gain:.1f} bps "
                     f"(+- {se:.1f}) on {max(SIZES):.0%}-of-volume orders")
    verdict = ("execution (SIMULATED intraday market): " + "; ".join(lines)
               + f"; market's impact {large.loc['market', 'impact']:.1f} bps vs TWAP's {large.loc['twap', 'impact']:.1f}")
    result = {"simulated": True, "sessions": SESSIONS, "symbols": len(STOCKS), "sizes": list(SIZES),
              "model": {"spread_bps": model.spread_bps, "impact_coefficient": model.impact_coefficient},
              "summary": {f"{s:g}/{a}": {k: float(v) for k, v in row.items()}
                          for (s, a), row in summary.iterrows()}, "seconds": seconds}
    out_rows = [(f"{s:.1%} of volume, {a}: mean shortfall (bps)", float(row["total"]))
                for (s, a), row in summary.iterrows()]
    return {"result": result, "rows": out_rows, "verdict": verdict, "unit": "bps"}
