"""Alerts reach a real webhook and a real SMTP server on 127.0.0.1; a channel that fails is
recorded and never raises; repeats are suppressed; settings are strict and hold no password."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import socket
import time

import pytest
import yaml

from research_lib import alerts
from research_lib.alerts import ALERT_KINDS, alert, load_alerts_config
from research_lib.errors import ConfigError
from tests.conftest import REPO
from tests.servers.smtp import SmtpServer
from tests.servers.webhook import WebhookServer
from tests.test_logs import restore_logging  # noqa: F401  (autouse: logging left as found)

USER = "spartan@example.com"
PASSWORD = "smtp-" + "canary-password-0123456789"  # a fake secret, split so scanners see no secret
API_KEY = "sk-ant-" + "canary-alerts-0123456789"


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(alerts, "RETRY_PAUSE_S", 0.01)


@pytest.fixture
def hook():
    with WebhookServer() as server:
        yield server


@pytest.fixture
def smtp(monkeypatch):
    monkeypatch.setenv("SPARTAN_SMTP_PASSWORD", PASSWORD)
    with SmtpServer(credentials=(USER, PASSWORD)) as server:
        yield server


def write_settings(workspace, **settings) -> None:
    """Replace the workspace's params/alerts.yaml (a link to the repository's) with ``settings``."""
    path = workspace / "params" / "alerts.yaml"
    path.unlink(missing_ok=True)
    path.write_text(yaml.safe_dump(settings))


def both_channels(hook, smtp, **webhook) -> dict:
    return {"webhook": {"url": hook.url, "timeout_s": 1, **webhook},
            "smtp": {"host": smtp.host, "port": smtp.port, "from": USER, "to": ["ops@example.com", "me@example.com"],
                     "starttls": False, "username": USER, "timeout_s": 2}}


def recorded(workspace) -> list[dict]:
    return [json.loads(line) for line in (workspace / "reports" / "alerts.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", ALERT_KINDS)
def test_each_kind_reaches_the_webhook_and_the_smtp_server(workspace, hook, smtp, caplog, kind):
    write_settings(workspace, **both_channels(hook, smtp))
    record = alert(kind, f"{kind} on smoke: 0.031 > 0.02", key="smoke", strategy="smoke", value=0.031, limit=0.02)

    assert record["delivered"] == {"webhook": "ok", "smtp": "ok"}
    assert recorded(workspace) == [record]
    assert set(record) == {"at", "kind", "key", "cause", "message", "fields", "delivered"}
    assert record["cause"] == f"{kind} on smoke: # > #", "no cause given: the message, its measurements masked"

    [request] = hook.requests
    assert request.headers["content-type"] == "application/json"
    assert request.body == {"kind": kind, "message": f"{kind} on smoke: 0.031 > 0.02", "at": record["at"],
                            "fields": {"strategy": "smoke", "value": 0.031, "limit": 0.02},
                            "workspace": str(workspace)}

    assert smtp.logins == [USER], "logged in with the password from SPARTAN_SMTP_PASSWORD"
    [mail] = smtp.messages
    assert smtp.envelopes == [(USER, ["ops@example.com", "me@example.com"])]
    assert mail["Subject"] == f"[Spartan] {kind}: {kind} on smoke: 0.031 > 0.02"
    body = mail.get_content()
    assert f"{kind} on smoke: 0.031 > 0.02" in body and "value: 0.031" in body and "limit: 0.02" in body

    [line] = [r for r in caplog.records if r.name == "spartan.alerts"]
    assert line.levelno == logging.ERROR and line.alert == kind
    assert line.fields == {"strategy": "smoke", "value": 0.031, "limit": 0.02}


def test_the_default_settings_send_nothing_but_log_and_record(workspace, caplog):
    assert load_alerts_config(REPO / "params" / "alerts.yaml") == alerts.AlertsConfig(), "shipped: no channels"
    assert load_alerts_config() == alerts.AlertsConfig()
    record = alert("kill_switch", "smoke halted: drawdown 26% > 25%", strategy="smoke")
    assert record["delivered"] == {"webhook": "not configured", "smtp": "not configured"}
    assert recorded(workspace) == [record]
    assert [r.levelno for r in caplog.records if r.name == "spartan.alerts"] == [logging.ERROR]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("failure, outcome, requests", [
    ("500", "error: HTTP 500 Internal Server Error (attempt 2 of 2)", 2),
    ("refused", "error: connection refused (attempt 2 of 2)", 0),
    ("timeout", "error: no answer within 0.3 s (attempt 2 of 2)", 2),
    ("404", "error: HTTP 404 Not Found", 1),  # a refusal another attempt cannot fix: one attempt
    ("500 once", "ok", 2),
])
def test_a_failing_webhook_is_recorded_and_never_raises(workspace, hook, smtp, caplog, failure, outcome, requests):
    settings = both_channels(hook, smtp, timeout_s=0.3)
    if failure == "refused":
        settings["webhook"]["url"] = f"http://127.0.0.1:{closed_port()}/hook"
    elif failure == "timeout":
        hook.delay_next(2.0, times=2)
    else:
        hook.fail_next(int(failure.split()[0]), times=1 if failure in ("404", "500 once") else 2)
    write_settings(workspace, **settings)

    started = time.monotonic()
    record = alert("reconciliation_mismatch", "broker holds 10 KO, ledger 0", key="smoke", symbol="KO")
    assert time.monotonic() - started < 2 * 0.3 + 1.5, "bounded: two attempts of timeout_s at most"
    assert record["delivered"] == {"webhook": outcome, "smtp": "ok"}, "the other channel still delivers"
    assert recorded(workspace)[-1]["delivered"]["webhook"] == outcome
    assert len(hook.requests) == requests
    failures = [r.getMessage() for r in caplog.records if r.name == "spartan.alerts" and r.levelno == logging.WARNING]
    expected = [] if outcome == "ok" else [f"alert reconciliation_mismatch not delivered by webhook: {outcome}"]
    assert failures == expected


@pytest.mark.parametrize("case, outcome", [
    ("wrong password", r"error: SMTPAuthenticationError: \(535, b'5.7.8 Authentication credentials invalid'\)"),
    ("no password", r"error: smtp.username is set but SPARTAN_SMTP_PASSWORD is not in the environment"),
    ("starttls", r"error: SMTPNotSupportedError: STARTTLS extension not supported by server"),
    ("rejected", r"error: SMTPDataError: \(554, b'5.7.1 Rejected'\)"),
    ("try again", r"ok"),
])
def test_a_failing_smtp_server_is_recorded_and_never_raises(workspace, hook, smtp, monkeypatch, case, outcome):
    settings = both_channels(hook, smtp)
    if case == "wrong password":
        monkeypatch.setenv("SPARTAN_SMTP_PASSWORD", "not-the-password")
    elif case == "no password":
        monkeypatch.delenv("SPARTAN_SMTP_PASSWORD")
    elif case == "starttls":
        settings["smtp"]["starttls"] = True
    else:
        smtp.reject_next("554 5.7.1 Rejected" if case == "rejected" else "451 4.3.0 Try again later")
    write_settings(workspace, **settings)
    record = alert("llm_budget", "LLM budget $5.00 reached at $5.02", key="2026-01", budget_usd=5.0, spent_usd=5.02)
    assert record["delivered"]["webhook"] == "ok"
    assert re.match(outcome, record["delivered"]["smtp"]), record["delivered"]["smtp"]
    assert len(smtp.messages) == (1 if outcome == "ok" else 0)


DRIFT = "tracking error above tolerance"


def test_the_same_kind_key_and_cause_is_not_resent_within_the_window(workspace, hook, smtp):
    write_settings(workspace, dedupe_minutes=10, **both_channels(hook, smtp))
    first = alert("drift", "smoke tracking error 3.1% > 2%", key="smoke", cause=DRIFT, tracking_error=0.031)
    again = alert("drift", "smoke tracking error 3.4% > 2%", key="smoke", cause=DRIFT, tracking_error=0.034)
    assert again["delivered"] == {"webhook": "suppressed", "smtp": "suppressed"}
    assert again["suppressed_since"] == {"webhook": first["at"], "smtp": first["at"]}
    assert alert("drift", "momentum tracking error 2.5% > 2%", key="momentum", cause=DRIFT)["delivered"]["webhook"] \
        == "ok", "another key"
    assert alert("kill_switch", "smoke halted", key="smoke", cause=DRIFT)["delivered"]["webhook"] == "ok", \
        "another kind"
    assert alert("drift", "smoke has no backtest to track", key="smoke", cause="no backtest")["delivered"] == \
        {"webhook": "ok", "smtp": "ok"}, "another cause: a different failure is never silenced"
    assert [body["kind"] for body in hook.bodies] == ["drift", "drift", "kill_switch", "drift"]
    assert len(smtp.messages) == 4
    assert len(recorded(workspace)) == 5, "a suppressed alert is still recorded (and logged)"

    # Eleven minutes later the same drift is sent again.
    path = workspace / "reports" / "alerts.jsonl"
    eleven_minutes_ago = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=11)).isoformat(timespec="seconds")
    path.write_text(path.read_text().replace(first["at"], eleven_minutes_ago))
    assert alert("drift", "smoke tracking error 3.5% > 2%", key="smoke", cause=DRIFT)["delivered"]["webhook"] == "ok"
    assert len(hook.requests) == 5


def test_a_failed_delivery_does_not_silence_the_next_identical_alert(workspace, hook, smtp):
    write_settings(workspace, dedupe_minutes=10, **both_channels(hook, smtp))
    hook.fail_next(500, times=2)
    smtp.reject_next("554 5.7.1 Rejected")
    failed = alert("run_failed", "Scheduled job daily failed: disk full", key="schedule:daily")
    assert [failed["delivered"][c][:6] for c in ("webhook", "smtp")] == ["error:", "error:"]
    again = alert("run_failed", "Scheduled job daily failed: disk full", key="schedule:daily")
    assert again["delivered"] == {"webhook": "ok", "smtp": "ok"} and "suppressed_since" not in again
    third = alert("run_failed", "Scheduled job daily failed: disk full", key="schedule:daily")
    assert third["delivered"] == {"webhook": "suppressed", "smtp": "suppressed"}
    assert third["suppressed_since"] == {"webhook": again["at"], "smtp": again["at"]}


def test_a_channel_that_failed_alone_is_the_only_one_that_resends(workspace, hook, smtp):
    write_settings(workspace, dedupe_minutes=10, **both_channels(hook, smtp))
    smtp.reject_next("554 5.7.1 Rejected")
    first = alert("kill_switch", "smoke halted: drawdown 26% > 25%", key="smoke:halted", cause="max_drawdown")
    assert first["delivered"]["webhook"] == "ok" and first["delivered"]["smtp"].startswith("error: SMTPDataError")
    again = alert("kill_switch", "smoke halted: drawdown 27% > 25%", key="smoke:halted", cause="max_drawdown")
    assert again["delivered"] == {"webhook": "suppressed", "smtp": "ok"}
    assert again["suppressed_since"] == {"webhook": first["at"]}
    assert len(hook.requests) == 1 and len(smtp.messages) == 1


def test_an_unknown_kind_is_refused(workspace):
    with pytest.raises(ValueError, match=r"Unknown alert kind 'kill'; valid kinds: \['run_failed', 'kill_switch', "
                                         r"'reconciliation_mismatch', 'drift', 'llm_budget'\]"):
        alert("kill", "?")
    assert not (workspace / "reports" / "alerts.jsonl").exists()


@pytest.mark.parametrize("settings, message", [
    ({"webhook": {"url": "hooks.example.com/spartan"}},
     r"Invalid alert settings in .*alerts.yaml:\n- webhook.url: Value error, must be an http\(s\) URL such as "
     r"https://hooks.example.com/spartan \(got 'hooks.example.com/spartan'\)"),
    ({"webhook": {"urll": "https://hooks.example.com"}},
     r"- webhook.urll: unknown key; valid keys here: \['timeout_s', 'url'\]. Did you mean 'url'\?"),
    ({"smtp": {"host": "smtp.example.com", "from": "spartan", "to": ["me@example.com"]}},
     r"- smtp.from: Value error, \['spartan'\] are not e-mail addresses \(name@example.com\)"),
    ({"smtp": {"host": "smtp.example.com", "from": "a@example.com", "to": ["me@example.com"], "password": "x"}},
     r"key 'smtp.password' holds a password. The SMTP password is read only from the environment variable "
     r"SPARTAN_SMTP_PASSWORD \(or a git-ignored .env\); remove the key"),
    ({"webhook": {"url": "https://hooks.example.com", "api_token": "x"}},
     r"key 'webhook.api_token' looks like a secret"),
    ({"dedupe_minutes": -1}, r"- dedupe_minutes: Input should be greater than or equal to 0 \(got -1\)"),
    ({"dedupe_minutes": float("inf")}, r"- dedupe_minutes: Input should be less than or equal to 10080"),
    ({"dedupe_minutes": 1e10}, r"- dedupe_minutes: Input should be less than or equal to 10080"),
])
def test_bad_settings_are_refused_naming_the_key_and_the_fix(workspace, settings, message):
    write_settings(workspace, **settings)
    with pytest.raises(ConfigError, match=message):
        load_alerts_config()
    record = alert("drift", "drift on smoke")  # an alert with bad settings is still logged and recorded
    assert record["delivered"]["webhook"].startswith("error: ") and recorded(workspace) == [record]


def test_the_webhook_url_may_come_from_the_environment(workspace, hook, monkeypatch):
    monkeypatch.setenv("SPARTAN_ALERT_WEBHOOK_URL", hook.url)
    assert alert("drift", "drift on smoke")["delivered"] == {"webhook": "ok", "smtp": "not configured"}
    monkeypatch.setenv("SPARTAN_ALERT_WEBHOOK_URL", "not a url")
    with pytest.raises(ConfigError, match=r"SPARTAN_ALERT_WEBHOOK_URL must be an http\(s\) URL"):
        load_alerts_config()


def test_secrets_never_leave_in_alerts_logs_or_messages(workspace, hook, smtp, monkeypatch):
    from research_lib import logs

    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    monkeypatch.setenv("SPARTAN_ALERT_WEBHOOK_URL", hook.url + "?token=" + "canary-token-0123456789")
    logs.configure()
    write_settings(workspace, smtp=both_channels(hook, smtp)["smtp"])
    record = alert("llm_budget", f"request with key {API_KEY} refused", error=f"401 for {API_KEY}")
    assert record["delivered"] == {"webhook": "ok", "smtp": "ok"} and smtp.logins == [USER]
    hook.fail_next(500, times=2)
    alert("run_failed", "another", key="x")  # a failing delivery logs the error: without the URL's token
    reports = workspace / "reports"
    outputs = [(reports / "alerts.jsonl").read_text(), (reports / "logs" / "spartan.jsonl").read_text(),
               json.dumps(hook.bodies), *(m.as_string() for m in smtp.messages)]
    for text in outputs:
        assert PASSWORD not in text and API_KEY not in text and "canary-token" not in text
    assert hook.bodies[0]["message"] == "request with key *** refused"
    assert hook.bodies[0]["fields"]["error"] == "401 for ***"


def test_a_failed_run_raises_a_run_failed_alert(workspace, hook, tmp_path):
    from research_lib.pipeline import StageFailed, run_pipeline

    write_settings(workspace, webhook={"url": hook.url})
    chain = tmp_path / "chain"
    chain.mkdir()
    (chain / "01_broken_json.ipynb").write_text("{ not a notebook")
    with pytest.raises(StageFailed):
        run_pipeline(REPO / "params" / "smoke.yaml", notebooks_dir=chain, run_dir=tmp_path / "run-broken")
    [body] = hook.bodies
    assert body["kind"] == "run_failed" and body["message"].startswith("Run run-broken failed: ")
    assert body["fields"]["run_id"] == "run-broken" and body["fields"]["stage"] == "01_broken_json"
    assert body["fields"]["scenario"] == "smoke" and "Error" in body["fields"]["error"]
    assert recorded(workspace)[0]["delivered"] == {"webhook": "ok", "smtp": "not configured"}


def test_odd_lines_in_alerts_jsonl_never_stop_an_alert(workspace):
    path = workspace / "reports" / "alerts.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('[1, 2]\n{"kind": "drift", "key": "k", "at": "2026-01-01T00:00:00"}\n'
                    '{"kind": "drift", "key": "k"}\nnot json\n')
    record = alert("drift", "paper drifts", key="k")
    assert record["delivered"] == {"webhook": "not configured", "smtp": "not configured"}


def test_repeats_from_the_real_callers_are_suppressed_and_other_failures_are_not(workspace, hook):
    """The callers pass no cause: a repeat whose only change is a measured value (a spend, a
    time-out) is the same failure; another error, symbol or limit is a different one."""
    from research_lib.llm._cost import Budget, BudgetExceeded
    from research_lib.scheduler.record import alert_job_failed as scheduler_alert

    write_settings(workspace, dedupe_minutes=10, webhook={"url": hook.url, "timeout_s": 1})
    budget = Budget(cap_usd=0.01)
    for spent in (0.0095, 0.0099, 0.00995):
        budget.spent_usd = spent
        with pytest.raises(BudgetExceeded):
            budget.check(0.0013)
    for error in ("TimeoutError: no answer after 30.1 s", "TimeoutError: no answer after 30.4 s",
                  "KeyError: 'AAPL'", "KeyError: 'MSFT'", "KeyError: 'MSFT'"):
        scheduler_alert("research", error, None)
    sent = [request.body["message"] for request in hook.requests]
    assert len(sent) == 4, sent
    assert sent[0].startswith("LLM budget: spent $0.0095") and "30.1 s" in sent[1]
    assert sent[2:] == ["Scheduled job research failed: KeyError: 'AAPL'",
                        "Scheduled job research failed: KeyError: 'MSFT'"]


@pytest.mark.parametrize("message, cause", [
    ("spent $0.0132 of $0.01", "spent $# of $#"),
    ("tracking error 3.1% above 2%", "tracking error # above #"),
    ("no answer after 1,234.5 s", "no answer after # s"),
    ("Stage 03_ml_signals failed: cell 5 raised KeyError: 'AAPL'", "Stage 03_ml_signals failed: cell 5 raised KeyError: 'AAPL'"),
    ("session 2022-01-31: 17 orders", "session 2022-01-31: 17 orders"),
])
def test_the_default_cause_masks_measurements_only(message, cause):
    assert alerts.measurements_masked(message) == cause
