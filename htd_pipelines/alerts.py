"""Alerts, as the core reports them: what happened (kind, title, the session or backup, the
run and its link in the UI). Delivery (the log and the webhook) is the Dagster layer's
(resources/alerts.py)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from htd_pipelines import settings

WEBHOOK_URL_ENV = settings.ALERT_WEBHOOK_URL.name
UI_URL_ENV = settings.UI_URL.name
MARKER_DELAY_ENV = settings.ALERT_MARKER_DELAY_MINUTES.name

# alert kinds
RUN_FAILURE = "run_failure"

RESTORE_TWICE = "restore_twice"

MARKER_OVERDUE = "marker_overdue"

SCHEDULE_OVERDUE = "schedule_overdue"

VERIFY_FAILED = "verify_failed"


def utcnow_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def run_url(run_id: str | None) -> str | None:
    return f"{settings.ui_url()}/runs/{run_id}" if run_id else None


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
