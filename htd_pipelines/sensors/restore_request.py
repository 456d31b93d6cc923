"""restore_request_sensor: launch restore_job for requested backups whose is_reback is 0."""

import datetime as dt
import json

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from htd_pipelines.jobs.run_config import SESSION_TAG, session_tag
from htd_pipelines.registry.relation_ids import tag_value
from htd_pipelines.resources import AppDatabase
from htd_pipelines.store import catalog

BATCH = 50


def _cursor(raw: str | None) -> tuple[dt.datetime, int] | None:
    if not raw:
        return None
    doc = json.loads(raw)
    return dt.datetime.fromisoformat(doc["requested_at"]), int(doc["id"])


@sensor(
    job_name="restore_job",  # by name: Definitions binds the job its resources
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.STOPPED,
    description="Launches restore_job for backups requested for restore (`htd-pipelines "
    "request-restore ID`, or back_up.restore_requested_at written by the application) whose "
    "is_reback is 0: one run per request (run_key), already restored ones skipped with a reason. "
    "The cursor is the last (requested_at, id) seen, so a burst drains without duplicates.",
)
def restore_request_sensor(
    context: SensorEvaluationContext, database: AppDatabase
) -> SensorResult:
    engine = database.engine()
    catalog.ensure_catalog(engine)
    with engine.connect() as conn:
        requests = catalog.restore_requests_after(conn, _cursor(context.cursor), BATCH)
    if not requests:
        return SensorResult(skip_reason=SkipReason("no new restore requests"))
    runs, skipped = [], []
    for r in requests:
        if r.is_reback:
            skipped.append(f"backup {r.id} ({r.type} {r.relation_id}) is already restored")
            continue
        runs.append(
            RunRequest(
                run_key=f"restore:{r.id}:{r.restore_requested_at.isoformat()}",
                run_config={
                    "ops": {
                        "check_backup": {
                            "config": {"backup_id": r.id, "uid": r.restore_requested_by}
                        }
                    }
                },
                tags={
                    "htd/type": r.type,
                    "htd/relation_id": tag_value(r.relation_id),
                    "htd/backup_id": str(r.id),
                    SESSION_TAG: session_tag(r.type, r.relation_id),
                    **({"htd/uid": r.restore_requested_by} if r.restore_requested_by else {}),
                },
            )
        )
    last = requests[-1]
    cursor = json.dumps({"requested_at": last.restore_requested_at.isoformat(), "id": last.id})
    for reason in skipped:
        context.log.info(f"skipped: {reason}")
    if not runs:
        return SensorResult(cursor=cursor, skip_reason=SkipReason("; ".join(skipped)))
    return SensorResult(run_requests=runs, cursor=cursor)
