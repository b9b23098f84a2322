"""Market data: one canonical, validated price frame from any source.

``load_prices`` is the entry point. Sources: ``bundled`` (real history shipped in PyPI
packages, offline, the default), ``yfinance`` (stocks, crypto ``BTC-USD``, forex ``EURUSD=X``),
``alpaca`` (stocks, keys from the environment; crypto pairs ``BTC/USD``), ``polygon``
(``POLYGON_API_KEY`` from the environment),
``file`` (your own CSV or parquet, see ``_files``) and ``synthetic`` (a seeded factor-model
market for scale and known-answer tests, labelled as such on every page, see ``_synthetic``). Every load is validated (its
dates must be sessions of the exchange calendar that have closed), then saved as a
parquet snapshot with its provenance under ``data/snapshots/``; later loads of the same
request reuse the snapshot, so a run can be repeated exactly.

A symbol's market decides its calendar (``_markets``): stocks the exchange of ``calendar``,
crypto every day (``24/7``), forex weekdays (``24/5``). A universe on one calendar is loaded on
it; a mixed one is loaded per calendar, each part validated on its own, then aligned point in
time on the universe's calendar (a value is used only once it is published).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, get_args

import pandas as pd

from research_lib import paths
from research_lib._io import now_utc, package_versions
from research_lib.params import closest
from research_lib.data._bundled import BUNDLED_START, BUNDLED_SYMBOLS, DEFAULT_UNIVERSE, bundled_prices
from research_lib.data._calendar import calendar_error, calendar_sessions, session_problems
from research_lib.data._crypto import fetch_alpaca_crypto
from research_lib.data._files import READER_VERSION, file_bytes, read_price_file
from research_lib.data._frame import FIELDS, canonical_frame, select, symbols_of
from research_lib.data._fx import convert_prices, convert_returns, rate_on_sessions
from research_lib.data._markets import (ASSET_CLASSES, CRYPTO_QUOTES, AssetClass, align_point_in_time, asset_class,
                                        publication_times, sessions_per_year, symbol_calendar, universe_calendar)
from research_lib.data._polygon import fetch_polygon
from research_lib.data._synthetic import (CONTEXT_ROLES, DEFAULT_END, DEFAULT_START, GENERATOR_VERSION, SyntheticConfig,
                                          market_label, synthetic_market, synthetic_symbols)
from research_lib.data._snapshot import read_provenance, read_snapshot, sha256_of, write_snapshot
from research_lib.data._sources import fetch_alpaca, fetch_yfinance, from_alpaca, from_yfinance
from research_lib.data._validate import validate_index, validate_prices
from research_lib.errors import DataValidationError, SpartanError

__all__ = [
    "ASSET_CLASSES", "AssetClass", "BUNDLED_START", "BUNDLED_SYMBOLS", "CRYPTO_QUOTES", "DataSource",
    "DEFAULT_UNIVERSE", "FIELDS", "SyntheticConfig", "align_point_in_time", "asset_class", "calendar_error",
    "calendar_sessions", "canonical_frame", "convert_prices", "convert_returns", "fetch_alpaca",
    "fetch_alpaca_crypto", "fetch_polygon", "from_alpaca", "from_yfinance", "load_prices", "market_label",
    "publication_times", "rate_on_sessions", "read_provenance", "read_snapshot", "select", "sessions_per_year",
    "sha256_of", "symbol_calendar", "symbols_of", "synthetic_symbols", "universe_calendar", "validate_prices",
    "write_snapshot",
]

DataSource = Literal["bundled", "yfinance", "alpaca", "polygon", "file", "synthetic"]
SOURCES = get_args(DataSource)


def load_prices(
    source: str = "bundled",
    symbols: list[str] | None = None,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    *,
    path: str | Path | None = None,
    refresh: bool = False,
    snapshot_dir: str | Path | None = None,
    max_stale_sessions: int = 10,
    max_daily_price_ratio: float = 3.0,
    calendar: str | None = "XNYS",
    context: Mapping[str, str] | None = None,
    now: dt.datetime | None = None,
    synthetic: SyntheticConfig | None = None,
    markets: Mapping[str, AssetClass] | None = None,
) -> pd.DataFrame:
    """Load validated daily prices as the canonical frame.

    Parameters
    ----------
    source : ``"bundled"``, ``"yfinance"``, ``"alpaca"``, ``"polygon"``, ``"file"`` or ``"synthetic"``.
    symbols : symbols in the order wanted; ``None`` for the 20 bundled US large caps (synthetic:
        every generated stock).
    start, end : first and last session wanted (inclusive); ``None`` for all (bundled: from
        ``BUNDLED_START``, the first session from which every bundled series passes validation).
    path : the CSV or parquet file, for ``source="file"``.
    refresh : fetch again even if a snapshot of this request exists.
    snapshot_dir : where snapshots live; default ``data/snapshots`` in the workspace.
    max_stale_sessions, max_daily_price_ratio : validation limits, see ``validate_prices``.
    calendar : ``exchange_calendars`` code of the stocks' exchange, whose sessions their dates
        must be (``"XNYS"``: New York); crypto symbols follow ``"24/7"``, forex ``"24/5"``
        whatever it says; ``None`` checks no calendar for any symbol. Whatever the calendar, a
        date whose session has not closed at ``now`` is refused.
    context : series loaded besides ``symbols`` (the benchmark, the VIX), each mapped to
        the parameter that names it, which a refusal quotes; loaded even when ``symbols``
        is ``None`` (a file's every symbol).
    now : the time of the load (time-zone-aware; naive is UTC); default: the clock.
    synthetic : the generated market's parameters, for ``source="synthetic"`` (default
        `SyntheticConfig()`); its dates default to ``DEFAULT_START``..``DEFAULT_END``.
    markets : asset class (``stock``, ``crypto``, ``forex``) of symbols whose spelling does not
        say it (see `asset_class`).

    Returns
    -------
    DataFrame
        sessions x ``(field, symbol)``; ``attrs["provenance"]`` holds the snapshot record
        (source, symbols, dates, retrieval time, sha256, snapshot path).

    Raises
    ------
    DataValidationError
        when the source or file lacks a symbol, the range is empty, a date is not a session,
        or any check fails. Nothing is written in that case.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; valid sources: {list(SOURCES)}")
    if calendar is not None and (reason := calendar_error(calendar)):
        raise ValueError(f"calendar {calendar!r} {reason}")
    context = dict(context or {})
    synthetic = (synthetic or SyntheticConfig()) if source == "synthetic" else None
    default = synthetic_symbols(synthetic.n_symbols) if synthetic else DEFAULT_UNIVERSE
    symbols = list(symbols) if symbols else (None if source == "file" else list(default))
    if symbols is not None:
        symbols += [s for s in context if s not in symbols]
    if symbols is None and source == "file" and path is not None and calendar is not None:
        in_file = symbols_of(read_price_file(Path(path), file_bytes(Path(path)))[0])
        if len(_by_calendar(in_file, calendar, markets)) > 1:  # a file spanning calendars: its every symbol
            symbols = in_file + [s for s in context if s not in in_file]
    if symbols is not None and calendar is not None:
        groups = _by_calendar(symbols, calendar, markets)
        if len(groups) > 1:
            return _load_mixed(groups, calendar, dict(markets or {}), source=source, start=start, end=end, path=path,
                               refresh=refresh, snapshot_dir=snapshot_dir, context=context, now=now,
                               synthetic=synthetic, limits={"max_stale_sessions": max_stale_sessions,
                                                            "max_daily_price_ratio": max_daily_price_ratio})
        calendar = next(iter(groups))  # a crypto universe follows 24/7, a forex one 24/5
    if start is None and source == "bundled":
        start = BUNDLED_START
    if synthetic:
        start, end = start or DEFAULT_START, end or DEFAULT_END
    start = pd.Timestamp(start).date() if start is not None else None
    end = pd.Timestamp(end).date() if end is not None else None
    if start and end and end < start:
        raise DataValidationError([f"data.start {start} is after data.end {end}; swap them."])
    request = {"source": source, "symbols": symbols, "start": str(start) if start else None,
               "end": str(end) if end else None}
    if symbols is None and context:  # a file's every symbol, which must include the context
        request["required"] = sorted(context)
    content = None
    if source == "file":
        content = file_bytes(Path(path)) if path is not None else None
        request["path"] = str(Path(path).resolve()) if path else None
        request["file_sha256"] = hashlib.sha256(content).hexdigest() if content is not None else None
        request["reader"] = READER_VERSION  # a snapshot read by an older reader is read again
    if synthetic:
        request.update(synthetic=synthetic.model_dump(), generator=GENERATOR_VERSION, calendar=calendar,
                       context=context)
    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]
    snapshot = Path(snapshot_dir or paths.data_dir() / "snapshots") / f"{source}-{key}.parquet"
    limits = {"max_stale_sessions": max_stale_sessions, "max_daily_price_ratio": max_daily_price_ratio}
    label = source if source != "file" else f"file {path}"
    if snapshot.is_file() and read_provenance(snapshot) is not None and not refresh:
        prices = read_snapshot(snapshot, **limits)
        prices.attrs["provenance"]["snapshot"] = str(snapshot)
        _refuse_off_calendar(prices, calendar, label, now)  # the snapshot may have been made under another calendar
        return prices

    prices, splits = _fetch(source, symbols, start, end, path, content, context, synthetic, calendar)
    validate_index(prices, label)  # slicing by date needs sorted, unique dates
    prices = select(prices, None, start, end)
    if prices.empty:
        asked = f" for {symbols}" if symbols else ""
        raise DataValidationError([f"{label} returned no sessions{asked} between {start or 'the start'} and {end or 'the end'}; "
                                   "check the symbols and widen data.start/data.end."])
    _refuse_off_calendar(prices, calendar, label, now)
    validate_prices(prices, label, splits=splits, **limits)
    record = write_snapshot(prices, snapshot, {**request, "symbols": symbols_of(prices), "retrieved_at": now_utc(),
                                               "versions": _source_versions(source)})
    prices.attrs["provenance"] = {**record, "snapshot": str(snapshot)}
    return prices


def _by_calendar(symbols: list[str], calendar: str, markets) -> dict[str, list[str]]:
    """The symbols grouped by the calendar their market trades on, in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for symbol in symbols:
        groups.setdefault(symbol_calendar(symbol, calendar, markets), []).append(symbol)
    return groups


def _load_mixed(groups: dict[str, list[str]], calendar: str, markets: dict, *, source, start, end, path, refresh,
                snapshot_dir, context, now, synthetic, limits) -> pd.DataFrame:
    """A universe spanning calendars: each part loaded and validated on its own calendar, then put on
    the universe's calendar point in time (`align_point_in_time`) and saved as one snapshot. When a
    part or the whole is refused, the snapshots its parts wrote are removed: nothing is left written."""
    folder = Path(snapshot_dir or paths.data_dir() / "snapshots")
    before = set(folder.glob(f"{source}-*")) if folder.is_dir() else set()
    symbols = [s for group in groups.values() for s in group]
    target = universe_calendar(symbols, calendar, markets)
    try:
        parts = [(load_prices(source, part_symbols, start, end, path=path, refresh=refresh, snapshot_dir=folder,
                              calendar=part_calendar, context={s: p for s, p in context.items() if s in part_symbols},
                              now=now, synthetic=synthetic, markets=markets, **limits), part_calendar)
                 for part_calendar, part_symbols in groups.items()]
        first, last = min(p.index[0] for p, _ in parts), max(p.index[-1] for p, _ in parts)
        sessions = calendar_sessions(target, first.date(), last.date())
        prices = select(align_point_in_time(parts, sessions, target), symbols)
        validate_prices(prices, f"{source} (aligned on {target})", **limits)
    except (DataValidationError, SpartanError, ValueError):
        for made in set(folder.glob(f"{source}-*")) - before:
            made.unlink(missing_ok=True)
        raise
    request = {"source": source, "calendar": target, "groups": groups,
               "parts": [p.attrs["provenance"]["sha256"] for p, _ in parts]}
    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]
    snapshot = folder / f"{source}-aligned-{key}.parquet"
    record = write_snapshot(prices, snapshot, {**request, "symbols": symbols, "retrieved_at": now_utc(),
                                               "aligned": "point in time: each row holds what was published by "
                                                          f"the close of its {target} session"})
    prices.attrs["provenance"] = {**record, "snapshot": str(snapshot)}
    return prices


def _refuse_off_calendar(prices: pd.DataFrame, calendar: str | None, label: str, now: dt.datetime | None) -> None:
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    problems = session_problems(prices.index, calendar, label, now if now.tzinfo else now.tz_localize("UTC"))
    if problems:
        raise DataValidationError(problems)


def _fetch(source, symbols, start, end, path, content, context, synthetic, calendar):
    if source == "synthetic":
        return _synthetic(synthetic, symbols, start, end, context, calendar), None
    if source == "bundled":
        _refuse_unknown(symbols, BUNDLED_SYMBOLS, "bundled", context)
        return select(bundled_prices(), symbols), None
    if source == "yfinance":
        return fetch_yfinance(symbols, start, end)
    if source == "alpaca":
        if symbols and all(asset_class(s) == "crypto" for s in symbols):
            return fetch_alpaca_crypto(symbols, start, end)
        return fetch_alpaca(symbols, start, end)
    if source == "polygon":
        return fetch_polygon(symbols, start, end)
    if path is None:
        raise DataValidationError(["data.source 'file' needs data.path, the CSV or parquet file to read."])
    prices, splits = read_price_file(Path(path), content)
    _refuse_unknown(symbols or list(context), symbols_of(prices), f"file {path}", context)
    if not symbols:
        return prices, splits
    chosen = select(prices, symbols)
    if set(symbols_of(prices)) - set(symbols):  # rows only other symbols have (a stock on a crypto weekend)
        chosen = chosen.loc[chosen["close"].notna().any(axis=1)]
    return chosen, splits


def _synthetic(config: SyntheticConfig, symbols, start, end, context, calendar) -> pd.DataFrame:
    """The generated market on the calendar's sessions, with the context series by their role."""
    unknown_roles = {s: p for s, p in context.items() if p not in CONTEXT_ROLES}
    if unknown_roles:
        raise DataValidationError([f"the synthetic market has no series for {p} ({s!r}); it generates only "
                                   f"{', '.join(CONTEXT_ROLES)}. Set {p} to null or use another source."
                                   for s, p in unknown_roles.items()])
    generated = synthetic_symbols(config.n_symbols)
    _refuse_unknown([s for s in symbols if s not in context], generated, "the synthetic market", context)
    sessions = calendar_sessions(calendar, start, end)
    fields = synthetic_market(config, sessions, context)
    return canonical_frame({name: frame.reindex(columns=symbols) for name, frame in fields.items()})


def _refuse_unknown(symbols: list[str], available, label: str, context: Mapping[str, str]) -> None:
    """Refuse the symbols not ``available``, naming the parameter that asked for each (``context``,
    else ``data.symbols``) and listing every available symbol, with the closest one whatever its case."""
    unknown = [s for s in symbols if s not in available]
    if not unknown:
        return
    hints = [f"{s!r} -> did you mean {name!r}?" for s in unknown if (name := closest(s, available, fold=str.casefold))]
    hint = (" " + " ".join(hints)) if hints else ""
    fix = " and ".join(dict.fromkeys(context.get(s, "data.symbols") for s in unknown))
    raise DataValidationError([
        f"{label} has no symbols {unknown}.{hint} Available: {', '.join(available)}. Fix {fix}."
    ])


def _source_versions(source: str) -> dict[str, str]:
    packages = {"bundled": ("skfolio", "arch"), "yfinance": ("yfinance",), "alpaca": ("alpaca-py",),
                "polygon": ("polygon-api-client",), "file": (),
                "synthetic": ("numpy",)}[source]
    return package_versions(packages)
