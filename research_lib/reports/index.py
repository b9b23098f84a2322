"""``reports/index.html``: the dashboard, a static page rendered from ``templates/index.html.j2``.

The page opens from disk: every link is relative and points at a file that exists, the charts
are inline SVG (`research_lib.reports._charts`), there is no script and no network request.
`dashboard` builds the page's data model from the workspace's files, one section at a time;
a missing file gives a "none yet" note and an unreadable one a note naming it, never a
failed page. Sections and their sources:

- runs: ``reports/runs/*/manifest.json`` (status, the gate's verdict, headline metrics, links);
- promoted strategies: ``params/promoted/*.yaml``;
- paper trading, per strategy: the latest ``reports/paper/<strategy>/<session>/cycle.json``
  (positions, account, drift against the backtest) and the ledger in ``data/spartan.sqlite``
  (equity history, recent orders, kill switch), against the promoted ``risk`` limits
  (`research_lib.reports.dashboard_paper`);
- LLM spend by run date and data freshness: the manifests' ``llm`` and ``data`` records;
- the schedule: ``reports/schedule.json`` (written by `spartan schedule`);
- recent alerts: ``reports/alerts.jsonl`` (one JSON object per line).

Fractions stay fractions in the model (0.25 is 25 %); the template formats them.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import yaml

from research_lib._io import atomic_write_bytes
from research_lib.reports._reading import PROBLEMS, href, number, parse_time, problem
from research_lib.reports._templates import environment
from research_lib.reports.dashboard_paper import SLIPPAGE_TARGET_BPS, paper_trading
from research_lib.validation.promotion import promoted_strategies

_HEADLINE = ("cagr", "sharpe", "max_drawdown", "win_rate")
RECENT_ALERTS = 10
RECENT_JOB_HISTORY = 10
FRESH_DAYS, STALE_DAYS = 5, 30  # data older than these (calendar days) is shown as ageing, then stale
ALERTS_TAIL_BYTES = 1 << 20  # only the end of a long alerts.jsonl is read
_OFFLINE_MARK = "not Claude"  # in the offline analyst's label (research_lib.llm.OFFLINE_LABEL)


# ---------------------------------------------------------------- small helpers


def relative_time(value, now: dt.datetime) -> str:
    """``"in 3 h"``, ``"2 d ago"``... for an ISO time (empty when it cannot be read)."""
    when = parse_time(value)
    if when is None:
        return ""
    seconds = (when - now).total_seconds()
    size = abs(seconds)
    amount = (f"{size / 86400:.0f} d" if size >= 86400 * 2 else f"{size / 3600:.0f} h" if size >= 5400
              else f"{size / 60:.0f} min")
    return f"in {amount}" if seconds >= 0 else f"{amount} ago"


# ---------------------------------------------------------------- runs


def collect_runs(reports_dir: str | Path) -> list[dict]:
    """One summary per ``reports/runs/*/manifest.json``, newest first.

    A manifest that cannot be read is listed with status ``unreadable`` (and ``problem``)
    rather than hiding the run. Links are relative to ``reports_dir`` and only to files that exist.
    """
    reports_dir = Path(reports_dir)
    runs = []
    for manifest_path in sorted(reports_dir.glob("runs/*/manifest.json")):
        folder = manifest_path.parent
        try:
            runs.append(_run_summary(reports_dir, folder, json.loads(manifest_path.read_text())))
        except PROBLEMS as err:
            runs.append({"run_id": folder.name, "status": "unreadable", "created_at": "", "scenario": "",
                         "description": "", "error": None, "commit": "", "metrics": dict.fromkeys(_HEADLINE),
                         "ml": {}, "llm": {}, "gate": {}, "data": {},
                         "links": [("manifest", href) for href in [href(reports_dir, "runs", folder.name,
                                                                          "manifest.json")] if href],
                         "problem": problem(manifest_path, reports_dir, err)})
    return sorted(runs, key=lambda r: str(r["created_at"]), reverse=True)


def _run_summary(reports_dir: Path, folder: Path, manifest: dict) -> dict:
    if not isinstance(manifest, dict):
        raise ValueError(f"a manifest is a JSON object, not {type(manifest).__name__}")
    strategy = (manifest.get("metrics") or {}).get("strategy") or {}
    ml = manifest.get("ml") or {}
    llm = manifest.get("llm") or {}
    gate = manifest.get("validation") or {}
    names = [("tearsheet", "tearsheet.html"), ("validation", "validation.html")]
    names += [(str(s.get("name", "stage")), Path(str(s["html"])).name) for s in manifest.get("stages") or []
              if isinstance(s, dict) and s.get("html")]
    links = [(label, href(reports_dir, "runs", folder.name, name)) for label, name in names]
    links.append(("manifest", href(reports_dir, "runs", folder.name, "manifest.json")))
    return {
        "run_id": str(manifest.get("run_id") or folder.name),
        "created_at": str(manifest.get("created_at") or ""),
        "scenario": str(manifest.get("scenario") or ""),
        "description": str(manifest.get("description") or ""),
        "status": str(manifest.get("status") or "unknown"),
        "error": manifest.get("error"),
        "commit": str((manifest.get("code") or {}).get("commit") or "")[:8],
        "metrics": {k: number(strategy.get(k)) for k in _HEADLINE},
        "ml": {"model": ml.get("model"), "horizon_days": ml.get("horizon_days"), "rank_ic": number(ml.get("rank_ic")),
               "rank_ic_t": number(ml.get("rank_ic_t"))} if ml else {},
        "llm": {**llm, "analyst": str(llm.get("analyst") or "unknown analyst"), "cost_usd": number(llm.get("cost_usd")),
                "offline": _is_offline(llm)} if llm else {},
        "gate": {"passed": bool(gate.get("passed")), "failed": [str(f) for f in gate.get("failed") or []],
                 "deflated_sharpe": number(gate.get("deflated_sharpe")), "pbo": number(gate.get("pbo")),
                 "n_trials": gate.get("n_trials")} if gate else {},
        "data": manifest.get("data") if isinstance(manifest.get("data"), dict) else {},
        "links": [(label, href) for label, href in links if href],
        "problem": None,
    }


def _is_offline(llm: dict) -> bool:
    sources = llm.get("sources")
    if isinstance(sources, dict) and sources:
        return set(sources) == {"offline"}
    return _OFFLINE_MARK in str(llm.get("analyst", ""))


def llm_spend(runs: list[dict]) -> dict:
    """Dollars spent on the LLM analyst by run date (UTC day of the run), the total, and which
    runs used the offline analyst ($0, not Claude)."""
    by_day: dict[str, dict] = {}
    for run in sorted(runs, key=lambda r: r["created_at"]):
        llm = run.get("llm") or {}
        if not llm:
            continue
        day = by_day.setdefault(run["created_at"][:10] or "unknown date",
                                {"cost_usd": 0.0, "runs": 0, "offline_runs": 0, "unpriced_runs": 0})
        day["runs"] += 1
        day["offline_runs"] += bool(llm.get("offline"))
        if llm.get("cost_usd") is None:
            day["unpriced_runs"] += 1
        else:
            day["cost_usd"] += llm["cost_usd"]
    days = [{"day": d, **v, "note": ", ".join(filter(None, (
        f"{v['runs']} run{'s' if v['runs'] != 1 else ''}",
        f"{v['offline_runs']} offline analyst, not Claude" if v["offline_runs"] else "",
        f"{v['unpriced_runs']} without a cost" if v["unpriced_runs"] else "")))} for d, v in by_day.items()]
    return {"days": days, "total_usd": sum(d["cost_usd"] for d in days), "runs": sum(d["runs"] for d in days),
            "offline_runs": sum(d["offline_runs"] for d in days),
            "unpriced_runs": sum(d["unpriced_runs"] for d in days)}


def data_freshness(runs: list[dict], today: dt.date) -> dict:
    """The price data the runs used, one row per snapshot (sha256), newest prices first, with
    the age of their last date in calendar days against ``today``."""
    snapshots: dict[str, dict] = {}
    for run in sorted(runs, key=lambda r: r["created_at"]):
        data = run.get("data") or {}
        if not data:
            continue
        key = str(data.get("sha256") or f"{data.get('source')}:{data.get('last_date')}")
        row = snapshots.setdefault(key, {"source": str(data.get("source") or "unknown"),
                                         "sha256": str(data.get("sha256") or "")[:12],
                                         "symbols": len(data["symbols"]) if isinstance(data.get("symbols"), list)
                                         else None,
                                         "first_date": str(data.get("first_date") or ""),
                                         "last_date": str(data.get("last_date") or ""),
                                         "retrieved_at": str(data.get("retrieved_at") or ""), "runs": 0})
        row["runs"] += 1
        row["latest_run"] = run["run_id"]
        try:
            row["age_days"] = (today - dt.date.fromisoformat(row["last_date"])).days
        except ValueError:
            row["age_days"] = None
        age = row["age_days"]
        row["freshness"] = ("unknown" if age is None else "fresh" if age <= FRESH_DAYS else
                            "ageing" if age <= STALE_DAYS else "stale")
    rows = sorted(snapshots.values(), key=lambda r: r["last_date"], reverse=True)
    return {"rows": rows, "newest": rows[0] if rows else None, "today": f"{today:%Y-%m-%d}"}


# ---------------------------------------------------------------- schedule and alerts


def read_schedule(reports_dir: str | Path, now: dt.datetime) -> dict:
    """``reports/schedule.json``: the jobs by next run time, and the last runs, newest first."""
    path = Path(reports_dir) / "schedule.json"
    out = {"present": path.is_file(), "problem": None, "jobs": [], "history": [], "updated_at": "",
           "updated": "", "exchange": "", "timezone": ""}
    if not out["present"]:
        return out
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict) or not isinstance(raw.get("jobs", []), list):
            raise ValueError('expected an object with "jobs": [...]')
        jobs = [{k: "" if j.get(k) is None else str(j.get(k)) for k in
                 ("id", "name", "next_run", "last_run", "last_status", "last_error")}
                for j in raw.get("jobs") or [] if isinstance(j, dict)]
        for job in jobs:
            job["next"], job["last"] = relative_time(job["next_run"], now), relative_time(job["last_run"], now)
        jobs.sort(key=lambda j: (parse_time(j["next_run"]) is None, str(parse_time(j["next_run"]) or "")))
        history = [h for h in raw.get("history") or [] if isinstance(h, dict)][-RECENT_JOB_HISTORY:]
        out.update(jobs=jobs, updated_at=str(raw.get("updated_at") or ""), exchange=str(raw.get("exchange") or ""),
                   timezone=str(raw.get("timezone") or ""),
                   history=[{k: "" if h.get(k) is None else str(h.get(k)) for k in ("job", "at", "status", "detail")}
                            for h in reversed(history)])
        out["updated"] = relative_time(out["updated_at"], now)
    except PROBLEMS as err:
        out["problem"] = problem(path, Path(reports_dir), err)
    return out


def read_alerts(reports_dir: str | Path, limit: int = RECENT_ALERTS) -> dict:
    """The last ``limit`` alerts of ``reports/alerts.jsonl``, newest first; unreadable lines counted."""
    path = Path(reports_dir) / "alerts.jsonl"
    out = {"present": path.is_file(), "problem": None, "alerts": [], "bad_lines": 0}
    if not out["present"]:
        return out
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - ALERTS_TAIL_BYTES))
            lines = handle.read().decode("utf-8", errors="replace").splitlines()
        if path.stat().st_size > ALERTS_TAIL_BYTES:
            lines = lines[1:]  # the first line read may be cut
    except OSError as err:
        out["problem"] = problem(path, Path(reports_dir), err)
        return out
    alerts = []
    for line in filter(str.strip, lines):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            out["bad_lines"] += 1
            continue
        fields = record.get("fields")
        alerts.append({"at": str(record.get("at") or ""), "kind": str(record.get("kind") or ""),
                       "message": str(record.get("message") or ""),
                       "fields": ", ".join(f"{k}={v}" for k, v in fields.items()) if isinstance(fields, dict)
                       else "" if fields is None else str(fields),
                       "delivered": _delivered(record.get("delivered")),
                       "undelivered": _undelivered(record.get("delivered"))})
    out["alerts"] = list(reversed(alerts[-limit:]))
    return out


def _undelivered(value) -> bool:
    """Whether a channel failed (``research_lib.alerts`` records ``{channel: "ok" | "error: ..." | ...}``)."""
    if isinstance(value, dict):
        return any(str(v).startswith("error") for v in value.values())
    return value is False


def _delivered(value) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: ""}[value]
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "no"
    return str(value)


# ---------------------------------------------------------------- the page


def dashboard(reports_dir: str | Path, now: dt.datetime | None = None) -> dict:
    """The dashboard's data model (see the module docstring); ``now`` defaults to the clock."""
    reports_dir = Path(reports_dir)
    now = now or dt.datetime.now(dt.timezone.utc)
    runs = collect_runs(reports_dir)
    promoted = promoted_strategies()
    return {"built_at": now.isoformat(timespec="seconds"), "runs": runs, "promoted": promoted,
            "slippage_target_bps": SLIPPAGE_TARGET_BPS,
            "paper": paper_trading(reports_dir, promoted), "llm": llm_spend(runs),
            "data": data_freshness(runs, now.astimezone().date()), "schedule": read_schedule(reports_dir, now),
            "alerts": read_alerts(reports_dir)}


def build_index(reports_dir: str | Path, now: dt.datetime | None = None) -> Path:
    """Render ``reports_dir/index.html`` from the workspace's files; return its path."""
    reports_dir = Path(reports_dir)
    env = environment()
    html = env.get_template("index.html.j2").render(**dashboard(reports_dir, now))
    target = reports_dir / "index.html"
    atomic_write_bytes(target, html.encode())
    return target
