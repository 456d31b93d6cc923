"""The htd/ tags a job's first op puts on its own run.

The CLI and the sensors launch runs with htd/type, htd/relation_id(s), htd/uid (see
`jobs.run_config.backup_tags`); a run launched from the Dagster launchpad has only its run
config. The first op copies what the config says into the run's tags, so the runs list can be
filtered by session and a failure alert names the type and the session either way. Tags the run
already has are kept as they are.
"""

from __future__ import annotations

from collections.abc import Mapping

from dagster import AssetExecutionContext, OpExecutionContext


def add_missing_run_tags(
    context: OpExecutionContext | AssetExecutionContext, tags: Mapping[str, str | None]
) -> dict[str, str]:
    """Add the tags (empty values left out) that the run does not have yet; return them."""
    present = context.run.tags
    missing = {k: str(v) for k, v in tags.items() if v not in (None, "") and k not in present}
    if missing:
        context.instance.add_run_tags(context.run.run_id, missing)
        context.log.info("run tagged " + ", ".join(f"{k}={v}" for k, v in sorted(missing.items())))
    return missing
