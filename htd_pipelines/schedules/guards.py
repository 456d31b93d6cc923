"""Schedule helpers: skip a tick while the same job is still running."""

from __future__ import annotations

from dagster import DagsterRunStatus, RunsFilter, ScheduleEvaluationContext, SkipReason

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
