"""Alert sensors.

- ``htd_alert_on_run_failure``: a run failure sensor on every job of the code location
  (every job of the Definitions); one alert per failed run, with the run link, the run's htd/
  tags and the error. A restore refused because the backup is already restored is kind
  ``restore_twice``.
- ``htd_overdue_alerts``: what did *not* happen: a deletion marker still there after
  HTD_ALERT_MARKER_DELAY_MINUTES, a running schedule whose job has not succeeded for two cron
  intervals, a failed verification (``verify``/``failed`` rows of htd_operation_log). Each is
  alerted once: the cursor keeps the last operation-log id, the markers and the schedules'
  last successes already alerted.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from dagster import (
    DagsterLogManager,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    sensor,
)
from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType
from dagster._utils.schedules import schedule_execution_time_iterator

from htd_pipelines import alerts as alerting
from htd_pipelines import settings
from htd_pipelines.alerts import Alert
from htd_pipelines.dialects.engine import comparable_timestamp
from htd_pipelines.markers import marker_columns
from htd_pipelines.registry.resolved import resolve_type
from htd_pipelines.registry.spec import Registry
from htd_pipelines.resources import AppDatabase, RelationRegistry
from htd_pipelines.resources.alerts import ATTEMPTS, AlertSink
from htd_pipelines.store import catalog

RUN_FAILURE_SENSOR = "htd_alert_on_run_failure"
OVERDUE_SENSOR = "htd_overdue_alerts"

MAX_ALERTS_PER_TICK = 50  # the rest wait for the next tick (markers, operation log)
MARKER_SCAN_LIMIT = 1000  # overdue markers read per type and tick, oldest first
CRON_SAMPLE_DAYS = 8  # the largest gap between ticks over this window is the cron interval
CRON_SAMPLE_TICKS = 3000


# ---------------------------------------------------------------------------------------------
# run failures
# ---------------------------------------------------------------------------------------------


def _error_of(context: RunFailureSensorContext) -> str:
    """The failing step's own error (not Dagster's "Error occurred while..." wrappers)."""
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        error = data.error if data else None
        while (
            error is not None
            and error.cause is not None
            and "Error occurred while" in (error.message or "")
        ):
            error = error.cause
        message = (error.message if error else "").strip()
        if message:
            return f"{event.step_key}: {message}"
    return (context.failure_event.message or "the run failed").strip()


def _op_config(run_config: dict, op_name: str) -> dict:
    ops = (run_config or {}).get("ops") or {}
    return ((ops.get(op_name) or {}).get("config")) or {}


def run_failure_alert(context: RunFailureSensorContext) -> Alert:
    """The alert for one failed run seen by the run-failure sensor."""
    return alert_for_failed_run(context.dagster_run, _error_of(context))


def alert_for_failed_run(run: Any, error: str) -> Alert:
    """The alert for one failed run (a DagsterRun): tags first, the run config where a tag is
    missing. Used by the sensor and by the CLI for the runs it executes in its own process."""
    tags = run.tags
    plan = _op_config(run.run_config, "plan_backup")
    check = _op_config(run.run_config, "check_backup")
    clean = _op_config(run.run_config, "clean_test_sessions")
    type_name = tags.get("htd/type") or plan.get("type") or clean.get("type")
    # the run config holds the ids as they are; tags hold them as tag values
    relation_id = ",".join(str(r) for r in plan.get("relation_ids") or []) or (
        tags.get("htd/relation_ids") or tags.get("htd/relation_id")
    )
    backup_id = tags.get("htd/backup_id") or (
        str(check["backup_id"]) if check.get("backup_id") is not None else None
    )
    if run.job_name == "restore_job" and "already restored" in error:
        kind = alerting.RESTORE_TWICE
        title = f"restore_job: backup {backup_id or '?'} is already restored; restore refused"
    else:
        kind = alerting.RUN_FAILURE
        title = f"{run.job_name} failed"
    return Alert(
        kind=kind,
        title=title,
        type=type_name,
        relation_id=relation_id,
        backup_id=backup_id,
        run_id=run.run_id,
        run_url=alerting.run_url(run.run_id),
        error=error,
    )


def build_run_failure_alert_sensor(jobs: Iterable[Any]) -> SensorDefinition:
    """The run failure sensor on the code location's jobs (all of those given).

    It takes the job definitions themselves (from the list given to Definitions, where
    backup_job is generated from the registry): a run of this code location is matched by job
    name, whatever name the workspace gives the location. A JobSelector would need that name.
    """
    monitored = [j for j in jobs if not j.name.startswith("__")]
    if not monitored:  # an empty monitored_jobs would mean every job: refuse instead
        raise ValueError(f"{RUN_FAILURE_SENSOR}: no jobs to monitor")

    @run_failure_sensor(
        name=RUN_FAILURE_SENSOR,
        monitored_jobs=monitored,
        default_status=DefaultSensorStatus.STOPPED,
        description="Alerts (log + HTD_ALERT_WEBHOOK_URL) when a run of any job of this code "
        f"location fails ({', '.join(j.name for j in monitored)}): run link, htd/type, "
        "relation id(s), backup id and the error. A restore of an already restored backup is "
        "alerted as restore_twice.",
    )
    def htd_alert_on_run_failure(context: RunFailureSensorContext, alerts: AlertSink) -> None:
        alerts.send(run_failure_alert(context), context.log)

    return htd_alert_on_run_failure


# ---------------------------------------------------------------------------------------------
# overdue: markers, schedules, verifications
# ---------------------------------------------------------------------------------------------


def _aware(value: object) -> dt.datetime | None:
    """A marker value as an aware UTC datetime (naive values are UTC); None if it is not one."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if not isinstance(value, dt.datetime):
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def overdue_markers(engine: sa.Engine, rtype: Any, cutoff: dt.datetime) -> tuple[list, bool]:
    """(relation_id, token, marked_at, marked_by) of markers older than cutoff, oldest first;
    and whether the scan was cut at MARKER_SCAN_LIMIT."""
    key, marker, by = marker_columns(rtype)
    cols = [key, marker] + ([by] if by is not None else [])
    stmt = sa.select(*cols).where(marker.is_not(None)).order_by(marker, key)
    if isinstance(marker.type, sa.DateTime):
        stmt = stmt.where(marker < comparable_timestamp(engine, marker.type, cutoff))
    with engine.connect() as conn:
        rows = conn.execute(stmt.limit(MARKER_SCAN_LIMIT)).all()
    found = []
    for row in rows:
        at = _aware(row[1])
        if at is None or at >= cutoff:
            continue
        token = row[1].isoformat() if hasattr(row[1], "isoformat") else str(row[1])
        found.append((str(row[0]), token, at, row[2] if len(row) > 2 else None))
    return found, len(rows) >= MARKER_SCAN_LIMIT


def cron_interval(
    cron: str | Sequence[str], timezone: str | None, now: dt.datetime
) -> dt.timedelta:
    """The largest gap between consecutive ticks over the last CRON_SAMPLE_DAYS (at least two
    gaps): a schedule that skips weekends has a 3-day interval, not a 1-day one."""
    ticks = schedule_execution_time_iterator(
        now.timestamp(), cron, timezone or "UTC", ascending=False
    )
    horizon = now - dt.timedelta(days=CRON_SAMPLE_DAYS)
    previous = next(ticks)
    largest = dt.timedelta(0)
    for count in range(1, CRON_SAMPLE_TICKS):
        tick = next(ticks)
        largest = max(largest, previous - tick)
        previous = tick
        if count >= 2 and tick < horizon:
            break
    return largest


def _schedule_states(context: SensorEvaluationContext) -> dict[str, Any]:
    """Stored schedule states of this code location, by schedule name."""
    location = context.code_location_origin.location_name if context.code_location_origin else None
    states: dict[str, Any] = {}
    if context.instance.schedule_storage is None:  # an ephemeral instance: defaults only
        return states
    for state in context.instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE):
        repo = state.origin.repository_origin
        if location is not None and repo.code_location_origin.location_name != location:
            continue
        if context.repository_name and repo.repository_name != context.repository_name:
            continue
        states[state.origin.instigator_name] = state
    return states


def _is_running(schedule_def: Any, state: Any) -> bool:
    if state is not None and state.status == InstigatorStatus.RUNNING:
        return True
    if state is not None and state.status == InstigatorStatus.STOPPED:
        return False
    return schedule_def.default_status == DefaultScheduleStatus.RUNNING


def _last_success(
    context: SensorEvaluationContext, job_name: str
) -> tuple[str | None, dt.datetime | None]:
    records = context.instance.get_run_records(
        RunsFilter(job_name=job_name, statuses=[DagsterRunStatus.SUCCESS]), limit=1
    )
    if not records:
        return None, None
    record = records[0]
    ended = record.end_time or record.update_timestamp.timestamp()
    return record.dagster_run.run_id, dt.datetime.fromtimestamp(ended, dt.UTC)


def _schedule_alerts(
    context: SensorEvaluationContext, state: dict, now: dt.datetime, log: DagsterLogManager
) -> list[Alert]:
    repo = context.repository_def
    if repo is None:
        return []
    seen: dict = state.setdefault("schedules", {})
    stored = _schedule_states(context)
    found: list[Alert] = []
    names = set()
    for sched in repo.schedule_defs:
        names.add(sched.name)
        entry = seen.setdefault(sched.name, {})
        if not _is_running(sched, stored.get(sched.name)):
            # a stopped schedule owes nothing: its clock starts when it is turned on
            entry.pop("alerted", None)
            entry["since"] = now.isoformat()
            continue
        if "since" not in entry:  # first seen running: when it was turned on is unknown
            entry["since"] = None
        try:
            interval = cron_interval(sched.cron_schedule, sched.execution_timezone, now)
        except Exception as exc:  # noqa: BLE001 - one odd cron string must not stop the rest
            log.warning(f"schedule {sched.name}: cannot compute its interval ({exc})")
            continue
        run_id, ended = _last_success(context, sched.job_name)
        started = dt.datetime.fromisoformat(entry["since"]) if entry["since"] else None
        since = max([t for t in (ended, started) if t is not None], default=None)
        if since is None:  # never succeeded, never seen stopped: start the clock now
            entry["since"] = now.isoformat()
            continue
        if now - since <= 2 * interval:
            continue
        key = run_id or "never"
        if entry.get("alerted") == key:
            continue
        entry["alerted"] = key
        last = f"no successful run since {since.isoformat(timespec='seconds')}"
        if run_id:
            last += f" (last successful run {run_id} ended {ended.isoformat(timespec='seconds')})"
        found.append(
            Alert(
                kind=alerting.SCHEDULE_OVERDUE,
                title=f"schedule {sched.name}: {sched.job_name} is overdue",
                run_id=run_id,
                run_url=alerting.run_url(run_id),
                error=f"{last}; expected every {interval} (cron {sched.cron_schedule!r}, "
                f"{sched.execution_timezone or 'UTC'}), alert after twice that",
            )
        )
    for name in set(seen) - names:  # schedules that are gone
        del seen[name]
    return found


def _marker_alerts(
    engine: sa.Engine, registry: Registry, state: dict, now: dt.datetime, budget: int
) -> list[Alert]:
    delay = settings.alert_marker_delay_minutes()
    cutoff = now - dt.timedelta(minutes=delay)
    alerted = set(state.get("markers", []))
    keep: set[str] = set()
    found: list[Alert] = []
    for btype in registry.types.values():
        if not btype.lifecycle.delete_marker:
            continue
        rtype = resolve_type(engine, btype, registry.path)
        overdue, cut = overdue_markers(engine, rtype, cutoff)
        if cut:  # markers beyond the scan may have been alerted: keep them all
            keep |= {k for k in alerted if k.startswith(f"{btype.name}:")}
        for relation_id, token, at, marked_by in overdue:
            key = f"{btype.name}:{relation_id}:{token}"
            keep.add(key)
            if key in alerted or len(found) >= budget:
                continue  # already alerted; or over this tick's budget: the next tick
            alerted.add(key)
            age = int((now - at).total_seconds() // 60)
            found.append(
                Alert(
                    kind=alerting.MARKER_OVERDUE,
                    title=f"deletion marker of {btype.name} {relation_id} not backed up after "
                    f"{age} min",
                    type=btype.name,
                    relation_id=relation_id,
                    error=f"marked at {token}"
                    + (f" by {marked_by}" if marked_by else "")
                    + f"; still there after {delay:g} min (HTD_ALERT_MARKER_DELAY_MINUTES): "
                    "see deletion_marker_sensor and the operation log",
                )
            )
    state["markers"] = sorted(keep & alerted)
    return found


def _json_list(text: str | None) -> list:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def _verify_alerts(engine: sa.Engine, state: dict, limit: int) -> list[Alert]:
    log_t = catalog.operation_log
    after = int(state.get("oplog_id") or 0)
    with engine.connect() as conn:
        rows = (
            conn.execute(
                sa.select(log_t)
                .where(log_t.c.id > after, log_t.c.action == "verify", log_t.c.status == "failed")
                .order_by(log_t.c.id)
                .limit(limit)
            )
            .mappings()
            .all()
        )
    found = []
    for row in rows:
        relation_ids = [str(r) for r in _json_list(row["relation_ids"])]
        backup_ids = [str(b) for b in _json_list(row["backup_ids"])]
        found.append(
            Alert(
                kind=alerting.VERIFY_FAILED,
                title=f"verification failed for backup {', '.join(backup_ids) or '?'}",
                type=row["type"],
                relation_id=",".join(relation_ids) or None,
                backup_id=",".join(backup_ids) or None,
                run_id=row["run_id"],
                run_url=alerting.run_url(row["run_id"]),
                error=row["message"],
            )
        )
        state["oplog_id"] = int(row["id"])
    return found


@sensor(
    name=OVERDUE_SENSOR,
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.STOPPED,
    description="Alerts (log + HTD_ALERT_WEBHOOK_URL) on what did not happen: a deletion marker "
    "not backed up after HTD_ALERT_MARKER_DELAY_MINUTES (default 60), a running schedule whose "
    "job has not succeeded for twice its cron interval, a failed backup verification "
    "(htd_operation_log verify/failed). Each is alerted once (the cursor remembers).",
)
def htd_overdue_alerts(
    context: SensorEvaluationContext,
    database: AppDatabase,
    relations: RelationRegistry,
    alerts: AlertSink,
) -> SensorResult:
    state = json.loads(context.cursor) if context.cursor else {}
    now = dt.datetime.now(dt.UTC)
    engine = database.engine()
    catalog.ensure_catalog(engine)
    found: list[Alert] = []
    problems: list[str] = []
    checks = (
        ("verifications", lambda: _verify_alerts(engine, state, MAX_ALERTS_PER_TICK)),
        (
            "deletion markers",
            lambda: _marker_alerts(
                engine, relations.load(), state, now, MAX_ALERTS_PER_TICK - len(found)
            ),
        ),
        ("schedules", lambda: _schedule_alerts(context, state, now, context.log)),
    )
    for what, check in checks:
        # one check that cannot run (a registry error, say) must not silence the others; and
        # raising would lose the cursor, so alerts already sent would be sent again
        try:
            found += check()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{what}: {type(exc).__name__}: {exc}")
            context.log.error(f"{OVERDUE_SENSOR}: cannot check {problems[-1]}")
    sent, undelivered = 0, 0
    down = False
    for alert in found:
        # a webhook that failed once this tick gets one attempt per alert, not the full retries
        ok = alerts.send(alert, context.log, attempts=1 if down else ATTEMPTS)
        sent += 1
        if not ok:
            undelivered += 1
            down = True
    cursor = json.dumps(state, sort_keys=True)
    summary = (
        f"{sent} alert(s): " + ", ".join(sorted({a.kind for a in found}))
        if found
        else "nothing overdue"
    )
    if undelivered:
        summary += f"; {undelivered} not delivered to the webhook (logged)"
    if problems:
        summary += "; could not check " + "; ".join(problems)
    return SensorResult(skip_reason=SkipReason(summary), cursor=cursor)


def alert_sensors(jobs: Iterable[Any]) -> list[SensorDefinition]:
    """Both alert sensors, for Definitions(sensors=[...])."""
    return [build_run_failure_alert_sensor(jobs), htd_overdue_alerts]
