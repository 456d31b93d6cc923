"""Run config and tags of the jobs, built the same way by the CLI, the sensors and the
schedules (pure functions: no instance, no definitions). A relation id goes into the run config
as it is and into a tag as `registry.relation_ids.tag_value` renders it."""

from __future__ import annotations

from htd_pipelines.registry.relation_ids import TAG_LIMIT, tag_value


def backup_run_config(
    type_name: str, relation_ids: list, uid: str | None = None, keep_source: bool = False
) -> dict:
    return {
        "ops": {
            "plan_backup": {
                "config": {
                    "type": type_name,
                    "relation_ids": [str(r) for r in relation_ids],
                    "uid": uid,
                    "keep_source": keep_source,
                }
            }
        }
    }


SESSION_TAG = "htd/session"  # type:relation_id, for one-run-per-session concurrency limits


def session_tag(type_name: str, relation_id: object) -> str:
    """`type:relation_id`, the id as a tag value (see `relation_ids_tag`), 63 characters at
    most in all."""
    return f"{type_name}:{tag_value(relation_id, max(TAG_LIMIT - len(type_name) - 1, 24))}"


def relation_ids_tag(relation_ids: list) -> str:
    """htd/relation_ids: the ids as tag values (an id outside [A-Za-z0-9_.-] or longer than
    63 characters as a readable form plus a hash), joined by ','."""
    return ",".join(tag_value(r) for r in relation_ids)


def backup_tags(type_name: str, relation_ids: list, uid: str | None) -> dict[str, str]:
    tags = {"htd/type": type_name, "htd/relation_ids": relation_ids_tag(relation_ids)}
    if len(relation_ids) == 1:
        tags["htd/relation_id"] = tag_value(relation_ids[0])
        tags[SESSION_TAG] = session_tag(type_name, relation_ids[0])
    if uid:
        tags["htd/uid"] = uid
    return tags


def restore_run_config(
    backup_id: int,
    uid: str | None = None,
    dry_run: bool = False,
    target_env: str | None = None,
) -> dict:
    config: dict = {"backup_id": backup_id, "uid": uid, "dry_run": dry_run}
    if target_env:
        config["target_env"] = target_env
    return {"ops": {"check_backup": {"config": config}}}
