"""The alert sink: every alert is logged (the Dagster context log of the sensor tick) and, when a
webhook is configured (HTD_ALERT_WEBHOOK_URL), POSTed to it as JSON with a short timeout and a
bounded number of attempts. A webhook that cannot be reached is logged, never raised: alerting
must not break the sensor that raises the alert."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

WEBHOOK_URL_ENV = "HTD_ALERT_WEBHOOK_URL"
UI_URL_ENV = "HTD_UI_URL"
DEFAULT_UI_URL = "http://127.0.0.1:3000"
MARKER_DELAY_ENV = "HTD_ALERT_MARKER_DELAY_MINUTES"
DEFAULT_MARKER_DELAY_MINUTES = 60.0

TIMEOUT_SECONDS = 5.0
ATTEMPTS = 3
BACKOFF_SECONDS = 0.5  # before attempt n+1: BACKOFF_SECONDS * 2**(n-1)

# alert kinds
RUN_FAILURE = "run_failure"
RESTORE_TWICE = "restore_twice"
MARKER_OVERDUE = "marker_overdue"
SCHEDULE_OVERDUE = "schedule_overdue"
VERIFY_FAILED = "verify_failed"


def utcnow_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def ui_url() -> str:
    """Base URL of the Dagster UI (HTD_UI_URL, read at evaluation time)."""
    return (os.environ.get(UI_URL_ENV) or DEFAULT_UI_URL).rstrip("/")


def run_url(run_id: str | None) -> str | None:
    return f"{ui_url()}/runs/{run_id}" if run_id else None


def marker_delay_minutes() -> float:
    """A deletion marker still there this long is alerted (HTD_ALERT_MARKER_DELAY_MINUTES)."""
    return float(os.environ.get(MARKER_DELAY_ENV) or DEFAULT_MARKER_DELAY_MINUTES)


@dataclass(frozen=True)
class Alert:
    kind: str  # run_failure | restore_twice | marker_overdue | schedule_overdue | verify_failed
    title: str
    type: str | None = None
    relation_id: str | None = None
    backup_id: str | None = None
    run_id: str | None = None
    run_url: str | None = None
    error: str | None = None
    at: str = field(default_factory=utcnow_iso)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def payload(self) -> dict[str, Any]:
        """The webhook body: the alert's fields, plus `text` (what chat webhooks display)."""
        return {**self.as_dict(), "source": "htd_pipelines", "text": self.line()}

    def line(self) -> str:
        """One line for the log: kind, title, what it is about, the error, the run link."""
        text = f"[{self.kind}] {self.title}"
        about = [
            f"{name} {value}"
            for name, value in (
                ("type", self.type),
                ("relation_id", self.relation_id),
                ("backup_id", self.backup_id),
            )
            if value
        ]
        if about:
            text += f" ({', '.join(about)})"
        if self.error:
            text += f": {self.error}"
        if self.run_url:
            text += f" {self.run_url}"
        return text


def _where(url: str) -> str:
    """The webhook's scheme and host only: its path or query may hold a token."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "the webhook"
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")


def _post(url: str, body: bytes, timeout: float) -> int:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "htd-pipelines-alerts"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()
        return response.status


def send_alert(
    alert: Alert,
    webhook_url: str | None,
    log: logging.Logger | Any,
    *,
    attempts: int = ATTEMPTS,
    timeout: float = TIMEOUT_SECONDS,
) -> bool:
    """Log the alert and, with a webhook, POST it. True when delivered (or nothing to deliver);
    False when the webhook could not take it (logged). Never raises."""
    log.warning(f"ALERT {alert.line()}")
    if not webhook_url:
        return True
    try:
        body = json.dumps(alert.payload(), default=str).encode()
    except (TypeError, ValueError) as exc:  # pragma: no cover - the fields are plain values
        log.error(f"alert not delivered: cannot encode it as JSON ({exc})")
        return False
    where = _where(webhook_url)
    last = ""
    for attempt in range(1, max(1, attempts) + 1):
        try:
            status = _post(webhook_url, body, timeout)
            if 200 <= status < 300:
                return True
            last = f"HTTP {status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code} {exc.reason}"
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                break  # the webhook refuses this request: another try will not help
        except Exception as exc:  # noqa: BLE001 - a webhook failure must never stop the caller
            reason = getattr(exc, "reason", None) or exc
            last = f"{type(exc).__name__}: {reason}"
        if attempt < attempts:
            time.sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
    log.error(
        f"alert not delivered to {where} after {attempt} attempt(s): {last} "
        f"(the alert is in this log: [{alert.kind}] {alert.title})"
    )
    return False


class AlertSink(ConfigurableResource):
    """Where alerts go: always the sensor's log; and the webhook in HTD_ALERT_WEBHOOK_URL when
    it is set (read at run time through EnvVar; the URL may carry a token)."""

    webhook_url: str | None = Field(
        default=None, description="URL that receives each alert as a JSON POST; unset: log only"
    )

    def send(self, alert: Alert, log: logging.Logger | Any, *, attempts: int = ATTEMPTS) -> bool:
        return send_alert(alert, self.webhook_url, log, attempts=attempts)
