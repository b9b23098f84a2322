"""Alerts: the events someone must look at, logged, recorded and sent.

``alert(kind, message, key=..., **fields)``:

1. logs at ERROR on the ``spartan.alerts`` logger (the run id and stage come with the line);
2. sends to the channels of ``params/alerts.yaml``: a webhook (HTTP POST of JSON
   ``{kind, message, fields, at, workspace}``) and/or e-mail over SMTP;
3. appends ``{at, kind, key, cause, message, fields, delivered[, suppressed_since]}`` to
   ``reports/alerts.jsonl``, the file the dashboard reads (``read_alerts``). ``delivered`` says
   per channel ``"ok"``, ``"error: ..."``, ``"not configured"`` or ``"suppressed"``;
   ``suppressed_since`` says, per suppressed channel, when it delivered the same alert.

A delivery failure never raises into the caller (trading must not stop because a webhook is
down): each channel gets at most two attempts, each bounded by its ``timeout_s``, and the
failure is logged and recorded.

De-duplication, so a scheduler loop cannot flood the channels: a channel does not send an
alert when it delivered (``"ok"``) an alert of the same ``(kind, key, cause)`` within the last
``dedupe_minutes``. Only a delivery counts: an alert that failed, was not configured or was
itself suppressed silences nothing, and an alert with another cause (a different failure of
the same job) is always sent. A suppressed alert is still logged and recorded.

Secrets: the SMTP password comes only from ``SPARTAN_SMTP_PASSWORD`` and the webhook URL may
come from ``SPARTAN_ALERT_WEBHOOK_URL`` (a URL holding a token is a secret); both, and the API
keys, are redacted from what is logged, recorded and sent.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import os
import re
import smtplib
import socket
import ssl
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import ConfigDict, Field, ValidationError, field_validator

from research_lib import paths
from research_lib.errors import ConfigError
from research_lib.logs import SMTP_PASSWORD_ENV, WEBHOOK_URL_ENV, redact
from research_lib.params import StrictModel, describe_errors, read_mapping, refuse_secrets

AlertKind = Literal["run_failed", "kill_switch", "reconciliation_mismatch", "drift", "llm_budget"]
ALERT_KINDS: tuple[str, ...] = get_args(AlertKind)
ALERTS_FILE = "alerts.jsonl"  # under reports/
MAX_ATTEMPTS = 2
RETRY_PAUSE_S = 0.5
_TAIL_BYTES = 1_000_000  # how much of alerts.jsonl the dedupe reads back

log = logging.getLogger("spartan.alerts")


class _Strict(StrictModel):
    model_config = ConfigDict(populate_by_name=True)


class WebhookChannel(_Strict):
    """An HTTP(S) endpoint that receives each alert as a JSON POST."""

    url: str = Field(description="http(s) URL; or set SPARTAN_ALERT_WEBHOOK_URL (for URLs holding a token)")
    timeout_s: float = Field(5.0, gt=0, le=60, description="per attempt")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _check_url(value)


class SmtpChannel(_Strict):
    """E-mail through an SMTP server; the password is read from SPARTAN_SMTP_PASSWORD."""

    host: str = Field(min_length=1)
    port: int = Field(587, ge=1, le=65535)
    sender: str = Field(alias="from", min_length=3, description="the From address")
    to: list[str] = Field(min_length=1, description="recipients")
    starttls: bool = Field(True, description="upgrade the connection with STARTTLS before logging in")
    username: str | None = Field(None, description="log in as this user (password: SPARTAN_SMTP_PASSWORD)")
    timeout_s: float = Field(5.0, gt=0, le=60, description="per attempt")

    @field_validator("sender", "to")
    @classmethod
    def _addresses(cls, value: str | list[str]) -> str | list[str]:
        bad = [a for a in ([value] if isinstance(value, str) else value) if "@" not in a]
        if bad:
            raise ValueError(f"{bad} are not e-mail addresses (name@example.com)")
        return value


class AlertsConfig(_Strict):
    """``params/alerts.yaml``: where alerts go. No channel: logged and recorded only."""

    webhook: WebhookChannel | None = None
    smtp: SmtpChannel | None = None
    dedupe_minutes: float = Field(10.0, ge=0, le=7 * 24 * 60, description="the same kind, key and cause is not re-sent within this "
                                  "window after a successful delivery")


def alerts_file() -> Path:
    return paths.reports_dir() / ALERTS_FILE


def load_alerts_config(path: str | Path | None = None) -> AlertsConfig:
    """Read and validate ``params/alerts.yaml`` (a missing file means no channels), then apply
    ``SPARTAN_ALERT_WEBHOOK_URL`` when it is set.

    Raises
    ------
    ConfigError
        naming the file, the key, the value and the fix; a password key is refused.
    """
    path = Path(path) if path is not None else paths.workspace_root() / "params" / "alerts.yaml"
    raw: Any = {}
    if path.is_file():
        raw = read_mapping(path, "Alert settings")
    for dotted in _keys(raw):
        if "pass" in dotted.rsplit(".", 1)[-1].lower():
            raise ConfigError(f"{path}: key {dotted!r} holds a password. The SMTP password is read only from the "
                              f"environment variable {SMTP_PASSWORD_ENV} (or a git-ignored .env); remove the key.")
    refuse_secrets(raw, path)
    env_url = os.environ.get(WEBHOOK_URL_ENV)
    if env_url:
        try:
            _check_url(env_url)
        except ValueError as err:
            raise ConfigError(f"{WEBHOOK_URL_ENV} {err}.") from None
        webhook = raw.get("webhook") if isinstance(raw.get("webhook"), dict) else {}
        raw = {**raw, "webhook": {**webhook, "url": env_url}}
    try:
        return AlertsConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(describe_errors(err, f"Invalid alert settings in {path}:", AlertsConfig, show=redact)) from None


def _keys(raw: dict, prefix: str = "") -> list[str]:
    found = []
    for key, value in raw.items():
        found.append(f"{prefix}{key}")
        if isinstance(value, dict):
            found += _keys(value, f"{prefix}{key}.")
    return found


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL such as https://hooks.example.com/spartan")
    return value


def alert(kind: AlertKind, message: str, *, key: str | None = None, cause: str | None = None, **fields: Any) -> dict:
    """Log, send and record an alert; return the record appended to ``reports/alerts.jsonl``.

    Parameters
    ----------
    kind : one of ``ALERT_KINDS``.
    message : one line a person can act on.
    key : what the alert is about (a strategy, a run id). Default: the message.
    cause : what went wrong, in words that stay the same while the failure does (an error's
        text, a limit's name), without the numbers that change at every repeat. A channel
        that delivered the same kind, key and cause within ``dedupe_minutes`` does not send
        it again; another cause is always sent. Default: the message with its measurements
        (decimal numbers and percentages, e.g. a spend or a time-out) masked, so that a repeat
        whose only change is a measured value counts as the same cause, while names, dates and
        counts still tell failures apart.
    **fields : JSON-able details (``run_id``, ``strategy``, values and limits...).

    Raises
    ------
    ValueError
        for an unknown ``kind`` (nothing else: delivery problems are recorded, not raised).
    """
    if kind not in ALERT_KINDS:
        raise ValueError(f"Unknown alert kind {kind!r}; valid kinds: {list(ALERT_KINDS)}.")
    message, fields = redact(message), redact(fields)
    key = redact(str(key)) if key is not None else message
    cause = redact(str(cause)) if cause is not None else measurements_masked(message)
    now = dt.datetime.now(dt.timezone.utc)
    try:
        settings, problem = load_alerts_config(), None
    except (ConfigError, OSError) as err:
        settings, problem = AlertsConfig(), f"error: {err}"
    record = {"at": now.isoformat(timespec="seconds"), "kind": kind, "key": key, "cause": cause, "message": message,
              "fields": fields, "delivered": {}}
    history = _tail(alerts_file()) if settings.dedupe_minutes > 0 else []
    channels = (("webhook", settings.webhook, _post), ("smtp", settings.smtp, _mail))
    suppressed = {} if problem else {
        name: at for name, channel, _ in channels
        if channel is not None and (at := _delivered_within(history, record, name, now, settings.dedupe_minutes))}
    log.error("%s: %s", kind, message, extra={"alert": kind, "key": key, "cause": cause, "fields": fields,
                                               "suppressed": sorted(suppressed)})
    for name, channel, send in channels:
        if problem:
            outcome = problem
        elif channel is None:
            outcome = "not configured"
        elif name in suppressed:
            outcome = "suppressed"
        else:
            outcome = _attempt(send, channel, record)
        record["delivered"][name] = outcome
        if outcome.startswith("error"):
            log.warning("alert %s not delivered by %s: %s", kind, name, outcome, extra={"alert": kind, "key": key})
    if suppressed:
        record["suppressed_since"] = suppressed
    _append(record)
    return record


def _attempt(send, channel, record: dict) -> str:
    """Up to MAX_ATTEMPTS of ``send``; "ok" or "error: ..." (never raises)."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            send(channel, record)
            return "ok"
        except _Permanent as err:
            return f"error: {redact(str(err))}"
        except _FAILURES as err:
            failure = f"error: {redact(_describe(err, channel.timeout_s))} (attempt {attempt} of {MAX_ATTEMPTS})"
        if attempt < MAX_ATTEMPTS:
            time.sleep(RETRY_PAUSE_S)
    return failure


# URLError (refused, DNS), timeouts, TLS, HTTP 5xx, SMTP replies, a garbled HTTP answer, a URL or address
# that cannot be encoded: everything a channel can do wrong is recorded, never raised.
_FAILURES = (OSError, smtplib.SMTPException, http.client.HTTPException, ValueError)


class _Permanent(Exception):
    """A refusal that another attempt cannot fix (HTTP 4xx, SMTP 5xx, a missing password)."""


def _describe(err: BaseException, timeout_s: float) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout_s:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    return f"{type(reason).__name__}: {reason}"


def _payload(record: dict) -> dict:
    return {"kind": record["kind"], "message": record["message"], "fields": record["fields"], "at": record["at"],
            "workspace": str(paths.workspace_root())}


def _post(channel: WebhookChannel, record: dict) -> None:
    body = json.dumps(_payload(record), default=str).encode()
    request = urllib.request.Request(channel.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "spartan-alerts"})
    try:
        with urllib.request.urlopen(request, timeout=channel.timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as err:
        if 400 <= err.code < 500 and err.code not in (408, 429):
            raise _Permanent(_describe(err, channel.timeout_s)) from None
        raise


def _mail(channel: SmtpChannel, record: dict) -> None:
    password = os.environ.get(SMTP_PASSWORD_ENV)
    if channel.username and not password:
        raise _Permanent(f"smtp.username is set but {SMTP_PASSWORD_ENV} is not in the environment; set it there "
                         "(or in a git-ignored .env)")
    payload = _payload(record)
    mail = EmailMessage()
    mail["Subject"] = f"[Spartan] {record['kind']}: {(record['message'].splitlines() or [''])[0][:120]}"
    mail["From"], mail["To"] = channel.sender, ", ".join(channel.to)
    lines = [record["message"], "", *(f"{k}: {v}" for k, v in record["fields"].items()), "",
             f"at: {record['at']}", f"workspace: {payload['workspace']}", "", json.dumps(payload, default=str)]
    mail.set_content("\n".join(lines))
    try:
        with smtplib.SMTP(channel.host, channel.port, timeout=channel.timeout_s) as smtp:
            if channel.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if channel.username:
                smtp.login(channel.username, password)
            smtp.send_message(mail)
    except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused, smtplib.SMTPNotSupportedError) as err:
        if isinstance(err, smtplib.SMTPResponseException) and err.smtp_code < 500:
            raise
        raise _Permanent(f"{type(err).__name__}: {err}") from None


_MEASUREMENT = re.compile(r"\d[\d,]*\.\d+%?|\d+%")


def measurements_masked(message: str) -> str:
    """``message`` with each decimal number and percentage replaced by ``#``: the default cause.

    >>> measurements_masked("spent $0.0132 of $0.01; tracking error 3.1% (limit 2%)")
    'spent $# of $#; tracking error # (limit #)'
    """
    return _MEASUREMENT.sub("#", message)


def _delivered_within(history: list[dict], alert_record: dict, channel: str, now: dt.datetime,
                      window_minutes: float) -> str | None:
    """When ``channel`` last delivered an alert like ``alert_record`` within the window, else None.

    Parameters
    ----------
    history : earlier records of ``alerts.jsonl``, oldest first (any dicts: odd ones never match).
    alert_record : the new alert's ``kind``, ``key`` and ``cause``.
    channel : ``"webhook"`` or ``"smtp"``.
    now : the new alert's time (timezone-aware).
    window_minutes : ``dedupe_minutes``; 0 suppresses nothing.

    Returns
    -------
    str or None
        the ``at`` of the latest record of the same kind, key and cause (a record without a
        cause: its message) that ``channel`` delivered ``"ok"`` at a time in
        ``[now - window, now]``; None when there is none (an unreadable or future time never
        suppresses: better a repeat than a silenced alert).
    """
    if not window_minutes > 0:
        return None
    since = now - dt.timedelta(minutes=window_minutes)
    same = (alert_record["kind"], alert_record["key"], alert_record["cause"])
    for record in reversed(history):
        delivered = record.get("delivered")
        if not isinstance(delivered, dict) or delivered.get(channel) != "ok" \
                or (record.get("kind"), record.get("key"), record.get("cause", record.get("message"))) != same:
            continue
        at = _parse_time(record.get("at"))
        if at is not None and since <= at <= now:
            return record["at"]
    return None


def _parse_time(value: Any) -> dt.datetime | None:
    """An ISO time (UTC when it has no zone), or None when it is not one."""
    try:
        at = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


def _tail(path: Path, tail_bytes: int | None = _TAIL_BYTES) -> list[dict]:
    """The records at the end of ``path`` (all of them for ``tail_bytes=None``; unreadable
    lines skipped)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = 0 if tail_bytes is None else max(0, size - tail_bytes)
            handle.seek(start)
            lines = handle.read().splitlines()[1 if start else 0:]
    except OSError:  # missing (no alert yet) or unreadable: nothing to dedupe against
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):  # anything else is not an alert of ours
            records.append(record)
    return records


def _append(record: dict) -> None:
    path = alerts_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
    except OSError as err:
        log.error("alert %s could not be recorded in %s: %s", record["kind"], path, err)


def read_alerts(limit: int | None = None) -> list[dict]:
    """The recorded alerts, oldest first (only the last ``limit`` ones when given), for the dashboard."""
    records = _tail(alerts_file(), tail_bytes=None)
    return records[-limit:] if limit else records


__all__ = ["ALERT_KINDS", "AlertKind", "AlertsConfig", "SmtpChannel", "WebhookChannel", "alert", "alerts_file",
           "load_alerts_config", "read_alerts"]
