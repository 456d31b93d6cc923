"""Alert delivery, a Dagster resource: every alert is logged (the Dagster context log of the
sensor tick) and, when a webhook is configured (HTD_ALERT_WEBHOOK_URL), POSTed to it as JSON
with a short timeout and a bounded number of attempts. A webhook that cannot be reached is
logged, never raised: alerting must not break the sensor that raises the alert."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from htd_pipelines.alerts import Alert

TIMEOUT_SECONDS = 5.0

ATTEMPTS = 3

BACKOFF_SECONDS = 0.5  # before attempt n+1: BACKOFF_SECONDS * 2**(n-1)


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
