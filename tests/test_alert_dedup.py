"""Alert de-duplication, against a model of the rule: a channel suppresses an alert only when it
successfully delivered one of the same kind, key AND cause within the last ``dedupe_minutes``.
A failed, unconfigured or suppressed delivery silences nothing; another cause is always sent."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from research_lib import alerts
from research_lib.alerts import alert
from tests.servers.smtp import SmtpServer
from tests.servers.webhook import WebhookServer
from tests.test_alerts import closed_port, quick_retries  # noqa: F401  (autouse: no pause between attempts)

CHANNELS = ("webhook", "smtp")
KINDS = st.sampled_from(["drift", "run_failed"])
KEYS = st.sampled_from(["smoke", "momentum"])
CAUSES = st.sampled_from([None, "disk full", "HTTP 500"])  # None: the message is the cause
MESSAGES = st.sampled_from(["disk full", "job failed"])  # one equals a cause: the default must match it


# --- the rule over whatever alerts.jsonl holds (a pure function; odd and old records included) ----

NOW = dt.datetime(2026, 3, 2, 14, 30, tzinfo=dt.timezone.utc)
UNREADABLE_TIMES = st.sampled_from([None, 17, "", "yesterday", "2026-13-45T00:00:00"])


@st.composite
def past_records(draw, kind: str, key: str, cause: str) -> tuple[dict, dict]:
    """A record of alerts.jsonl, often of the new alert's ``kind, key, cause``, and what the model
    knows of it: its kind, key, effective cause, per-channel outcome and age in minutes (None: no
    readable time)."""
    if draw(st.booleans()):  # the same alert, its cause given or (old records, or the default) its message
        message, cause = draw(st.sampled_from([(cause, cause), (cause, None), (cause, "<absent>"), ("other", cause)]))
    else:
        kind, key, message = draw(KINDS), draw(KEYS), draw(MESSAGES)
        cause = draw(st.one_of(CAUSES, st.just("<absent>")))  # absent: written before causes were recorded
    outcomes = {c: draw(st.sampled_from(["ok", "ok", "error: HTTP 500 Internal Server Error (attempt 2 of 2)",
                                         "suppressed", "not configured", "<absent>"])) for c in CHANNELS}
    age = draw(st.sampled_from([-30.0, -0.01, 0.0, 0.5, 4.0, 9.99, 10.0, 10.01, 60.0, None]))
    if age is None:
        at = draw(UNREADABLE_TIMES)
    else:  # any time zone, or none (then UTC)
        zone = draw(st.sampled_from([dt.timezone.utc, dt.timezone(dt.timedelta(hours=-5)), None]))
        moment = NOW - dt.timedelta(minutes=age)
        at = (moment.astimezone(zone) if zone else moment.replace(tzinfo=None)).isoformat()
    record = {"at": at, "kind": kind, "key": key, "message": message,
              "delivered": {c: o for c, o in outcomes.items() if o != "<absent>"}}
    if draw(st.integers(0, 4)) == 0:  # an odd or legacy "delivered": no delivery by channel known
        record["delivered"] = draw(st.sampled_from([True, "ok", ["ok"], None]))
        outcomes = dict.fromkeys(CHANNELS, "unknown")
    if cause != "<absent>":
        record["cause"] = cause if cause is not None else message
    model = {"kind": kind, "key": key, "cause": message if cause in (None, "<absent>") else cause,
             "outcomes": outcomes, "age": age}
    return record, model


@settings(max_examples=400, deadline=None, derandomize=True)
@given(kind=KINDS, key=KEYS, cause=CAUSES, message=MESSAGES, channel=st.sampled_from(CHANNELS),
       window=st.sampled_from([0.0, 0.5, 10.0]), data=st.data())
def test_only_a_delivery_of_the_same_kind_key_and_cause_within_the_window_suppresses(
        kind, key, cause, message, channel, window, data):
    new = {"kind": kind, "key": key, "cause": cause if cause is not None else message}
    history = data.draw(st.lists(past_records(kind, key, new["cause"]), max_size=8), label="history")
    delivered_in_window = [record["at"] for record, m in history
                           if (m["kind"], m["key"], m["cause"]) == (new["kind"], new["key"], new["cause"])
                           and m["outcomes"][channel] == "ok" and m["age"] is not None and 0 <= m["age"] <= window
                           and window > 0]  # dedupe_minutes 0: de-duplication is off
    found = alerts._delivered_within([record for record, _ in history], new, channel, NOW, window)
    if delivered_in_window:
        assert found in delivered_in_window, "suppressed, naming a delivery that suppresses it"
    else:
        assert found is None, "nothing delivered the same alert in the window: it is sent"


# --- the same rule end to end: real deliveries to a webhook and an SMTP server on 127.0.0.1 --------

# (kind, key, cause, message): the first two have the same cause ("disk full", given or by default),
# the others differ from the first in cause, kind or key only.
ALERTS = [("run_failed", "schedule:daily", None, "disk full"),
          ("run_failed", "schedule:daily", "disk full", "job failed"),
          ("run_failed", "schedule:daily", "HTTP 500", "disk full"),
          ("drift", "schedule:daily", None, "disk full"),
          ("run_failed", "schedule:hourly", None, "disk full")]
WEBHOOK_PLANS = ("ok", "ok", "500", "down", "off")  # off: not configured
SMTP_PLANS = ("ok", "ok", "554", "down", "off")
# Minutes between alerts. With at most 6 alerts no sum of consecutive steps is exactly 10 (the
# window) or 0 unless all are 0, so times recorded to the second cannot land on a boundary.
STEPS = st.sampled_from([0, 0, 4, 11, -3])  # -3: the clock went back, the earlier alert is in the future


def _event(identity: tuple, **plan) -> dict:
    """One alert to raise: its kind, key, cause, message, and the minutes since the previous
    one and how each channel will answer (``plan``)."""
    return {**dict(zip(("kind", "key", "cause", "message"), identity)), **plan}


EVENTS = st.lists(st.builds(_event, st.sampled_from(ALERTS), step=STEPS, webhook=st.sampled_from(WEBHOOK_PLANS),
                            smtp=st.sampled_from(SMTP_PLANS)), min_size=1, max_size=6)


@pytest.fixture
def servers():
    with WebhookServer() as hook, SmtpServer() as smtp:
        yield hook, smtp


def settings_for(event: dict, hook: WebhookServer, smtp: SmtpServer, window: float) -> dict:
    """params/alerts.yaml for one alert: each channel up, down (a closed port) or not configured."""
    out = {"dedupe_minutes": window}
    if event["webhook"] != "off":
        out["webhook"] = {"url": hook.url if event["webhook"] != "down" else f"http://127.0.0.1:{closed_port()}/hook",
                          "timeout_s": 2}
    if event["smtp"] != "off":
        out["smtp"] = {"host": smtp.host, "port": smtp.port if event["smtp"] != "down" else closed_port(),
                       "from": "spartan@example.com", "to": ["ops@example.com"], "starttls": False, "timeout_s": 2}
    return out


def age_records(path, minutes: float) -> None:
    """Move every recorded alert ``minutes`` into the past: as if that much time went by."""
    if minutes and path.exists():
        records = [json.loads(line) for line in path.read_text().splitlines()]
        for record in records:
            record["at"] = (dt.datetime.fromisoformat(record["at"]) - dt.timedelta(minutes=minutes)).isoformat()
        path.write_text("".join(json.dumps(r) + "\n" for r in records))


def expected_outcomes(event: dict, deliveries: list[dict], clock: float, window: float) -> dict[str, str]:
    """The model: per channel "not configured", "suppressed", "ok" or "error"."""
    cause = event["cause"] if event["cause"] is not None else event["message"]
    out = {}
    for channel in CHANNELS:
        if event[channel] == "off":
            out[channel] = "not configured"
        elif window > 0 and any((d["kind"], d["key"], d["cause"], d["channel"]) ==
                                (event["kind"], event["key"], cause, channel)
                                and clock - window <= d["clock"] <= clock for d in deliveries):
            out[channel] = "suppressed"
        else:
            out[channel] = "ok" if event[channel] == "ok" else "error"
    return out


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # state is reset for every example
@given(events=EVENTS, window=st.sampled_from([0, 10, 10]))
def test_alerts_are_suppressed_only_by_an_earlier_delivery_of_the_same_kind_key_and_cause(
        workspace, servers, events, window):
    hook, smtp = servers
    path = workspace / "reports" / "alerts.jsonl"
    path.unlink(missing_ok=True)
    deliveries, clock = [], 0.0
    for number, event in enumerate(events):
        if number:
            age_records(path, event["step"])
            clock += event["step"]
        expected = expected_outcomes(event, deliveries, clock, window)
        if expected["webhook"] == "error" and event["webhook"] == "500":
            hook.fail_next(500, times=2)
        if expected["smtp"] == "error" and event["smtp"] == "554":
            smtp.reject_next("554 5.7.1 Rejected")
        (workspace / "params" / "alerts.yaml").write_text(yaml.safe_dump(settings_for(event, hook, smtp, window)))
        requests, messages = len(hook.requests), len(smtp.messages)

        record = alert(event["kind"], event["message"], key=event["key"], cause=event["cause"])

        got = {c: "error" if outcome.startswith("error: ") else outcome for c, outcome in record["delivered"].items()}
        assert got == expected, f"alert {number} of {events}: {record}"
        assert len(hook.requests) - requests == {"ok": 1, "error": 2 if event["webhook"] == "500" else 0}.get(
            expected["webhook"], 0), "a suppressed or unconfigured channel sends nothing"
        assert len(smtp.messages) - messages == (expected["smtp"] == "ok")
        cause = event["cause"] if event["cause"] is not None else event["message"]
        deliveries += [{"kind": event["kind"], "key": event["key"], "cause": cause, "channel": c, "clock": clock}
                       for c in CHANNELS if expected[c] == "ok"]
    assert len(path.read_text().splitlines()) == len(events), "every alert is recorded, suppressed or not"
