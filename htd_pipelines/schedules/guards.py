"""Schedule helpers: skip a tick while the same job is still running."""

from __future__ import annotations

from collections.abc import Callable

from dagster import (
    DagsterRunStatus,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from htd_pipelines import settings

IN_FLIGHT = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


def running_skip(context: ScheduleEvaluationContext, job_name: str) -> SkipReason | None:
    """A SkipReason naming the run in flight, or None when the job is idle."""
    runs = context.instance.get_run_records(
        RunsFilter(job_name=job_name, statuses=IN_FLIGHT), limit=1
    )
    if runs:
        run = runs[0].dagster_run
        return SkipReason(
            f"{job_name} is still running (run {run.run_id}, {run.status.value}); tick skipped"
        )
    return None


def guarded_schedule(
    *,
    name: str,
    job_name: str,
    cron: settings.Variable,
    timezone: settings.Variable,
    description: str,
    run_config: Callable[[], dict] | None = None,
) -> ScheduleDefinition:
    """A schedule with an explicit cron and timezone (overridable by environment variables)
    that skips a tick, with the reason, while a run of the same job is in flight."""

    @schedule(
        name=name,
        job_name=job_name,
        cron_schedule=cron.value(),
        execution_timezone=timezone.value(),
        description=description,
    )
    def evaluate(context: ScheduleEvaluationContext) -> SkipReason | RunRequest:
        skip = running_skip(context, job_name)
        if skip:
            return skip
        return RunRequest(
            run_config=run_config() if run_config else {}, tags={"htd/schedule": name}
        )

    return evaluate
