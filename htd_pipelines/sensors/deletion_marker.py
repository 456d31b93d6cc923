"""deletion_marker_sensor: back up and delete sessions the application marked for deletion
(replaces ProcessBatchOperate's batch delete)."""

import contextlib
import datetime as dt
import json

import sqlalchemy as sa
from dagster import (
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from htd_pipelines import settings
from htd_pipelines.dialects.engine import comparable_timestamp, get_engine
from htd_pipelines.jobs.run_config import backup_run_config, backup_tags
from htd_pipelines.markers import Marker, abandon, claims_for, new_markers, stale_markers
from htd_pipelines.registry.relation_ids import tag_value
from htd_pipelines.registry.resolved import ResolvedType, resolve_type
from htd_pipelines.resources import AppDatabase, RelationRegistry
from htd_pipelines.schedules.guards import IN_FLIGHT
from htd_pipelines.store import catalog


def _decode(value: list | None) -> tuple[object, object] | None:
    if value is None:
        return None
    at, key = value
    if isinstance(at, str):
        with contextlib.suppress(ValueError):
            at = dt.datetime.fromisoformat(at)
    return at, key


def _encode(m: Marker) -> list:
    return [m.token, m.key]


def _in_flight(context: SensorEvaluationContext, type_name: str) -> set[str]:
    """Sessions that a queued or running backup_job already holds, as their tag values
    (`tag_value` of the relation id: compare `tag_value(m.relation_id)`)."""
    held: set[str] = set()
    for record in context.instance.get_run_records(
        RunsFilter(job_name="backup_job", statuses=IN_FLIGHT, tags={"htd/type": type_name})
    ):
        held |= set(record.dagster_run.tags.get("htd/relation_ids", "").split(","))
    return held


def _request(type_name: str, markers: list[Marker], run_key: str) -> RunRequest:
    ids = [m.relation_id for m in markers]
    askers = {m.marked_by for m in markers if m.marked_by}
    uid = askers.pop() if len(askers) == 1 else "deletion_marker_sensor"
    config = backup_run_config(type_name, ids, uid, keep_source=False)
    config["ops"]["plan_backup"]["config"]["from_markers"] = True
    return RunRequest(
        run_key=run_key,
        run_config=config,
        tags={**backup_tags(type_name, ids, uid), "htd/trigger": "deletion_marker"},
    )


def _retries(
    context: SensorEvaluationContext,
    engine: sa.Engine,
    rtype: ResolvedType,
    after: tuple[object, object] | None,
    retry_minutes: float,
    max_attempts: int,
    limit: int,
) -> list[RunRequest]:
    """Markers already launched whose session is still there: their run failed or never
    started. Retried one session per run, spaced by the retry delay, at most max_attempts
    runs per marker; then abandoned and reported once."""
    type_name = rtype.btype.name
    now = dt.datetime.now(dt.UTC)
    cutoff = now - dt.timedelta(minutes=retry_minutes)
    marker_col = rtype.root.table.c[rtype.btype.lifecycle.delete_marker]
    candidates = stale_markers(
        engine, rtype, after, comparable_timestamp(engine, marker_col.type, cutoff), limit
    )
    held = _in_flight(context, type_name)
    claims = claims_for(engine, type_name, candidates)
    runs = []
    for m in candidates:
        if tag_value(m.relation_id) in held:
            continue
        claim = claims.get((m.relation_id, m.token))
        attempts = claim["attempts"] if claim else 0
        if claim is not None:
            if claim["status"] != "claimed":
                continue
            if attempts >= max_attempts:
                if abandon(engine, type_name, m, attempts):
                    context.log.warning(
                        f"{type_name} {m.relation_id}: marker abandoned after {attempts} attempts"
                    )
                continue
            if claim["claimed_at"].replace(tzinfo=dt.UTC) > cutoff:
                continue
        # run keys hold ids as tag values: ':' or ',' in an id cannot make two keys one
        key = f"marker-retry:{type_name}:{tag_value(m.relation_id)}:{m.token}:{attempts}"
        runs.append(_request(type_name, [m], key))
    return runs


@sensor(
    job_name="backup_job",
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.STOPPED,
    description="Launches backup_job for sessions whose root row carries the registry's "
    "lifecycle delete_marker: new markers in batches (HTD_MARKER_BATCH_SIZE) after a "
    "(marked_at, key) cursor, one run_key per batch; markers still there after "
    "HTD_MARKER_RETRY_MINUTES are retried one session per run, at most "
    "HTD_MARKER_MAX_ATTEMPTS times. Each run claims its markers, so one marker never "
    "produces two backups.",
)
def deletion_marker_sensor(
    context: SensorEvaluationContext, database: AppDatabase, relations: RelationRegistry
) -> SensorResult:
    registry = relations.load()
    engine = get_engine(database.url)
    catalog.ensure_catalog(engine)
    cursor = json.loads(context.cursor) if context.cursor else {}
    batch, max_batches = settings.marker_batch_size(), settings.marker_max_batches()
    retry_minutes, max_attempts = settings.marker_retry_minutes(), settings.marker_max_attempts()
    runs: list[RunRequest] = []
    for btype in registry.types.values():
        if not btype.lifecycle.delete_marker:
            continue
        rtype = resolve_type(engine, btype, registry.path)
        after = _decode(cursor.get(btype.name))
        fresh = new_markers(engine, rtype, after, batch * max_batches)
        for start in range(0, len(fresh), batch):
            chunk = fresh[start : start + batch]
            key = (
                f"markers:{btype.name}:{chunk[0].token}:{tag_value(chunk[0].key)}:"
                f"{tag_value(chunk[-1].key)}:{len(chunk)}"
            )
            runs.append(_request(btype.name, chunk, key))
        if fresh:
            cursor[btype.name] = _encode(fresh[-1])
            after = _decode(cursor[btype.name])
        runs += _retries(context, engine, rtype, after, retry_minutes, max_attempts, batch)
    new_cursor = json.dumps(cursor, sort_keys=True, default=str)
    if not runs:
        return SensorResult(skip_reason=SkipReason("no new deletion markers"), cursor=new_cursor)
    return SensorResult(run_requests=runs, cursor=new_cursor)
