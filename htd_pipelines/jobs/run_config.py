"""Run config and tags of the jobs, built the same way by the CLI, the sensors and the
schedules (pure functions: no instance, no definitions)."""

from __future__ import annotations


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
    return f"{type_name}:{relation_id}"


def backup_tags(type_name: str, relation_ids: list, uid: str | None) -> dict[str, str]:
    tags = {"htd/type": type_name, "htd/relation_ids": ",".join(str(r) for r in relation_ids)}
    if len(relation_ids) == 1:
        tags["htd/relation_id"] = str(relation_ids[0])
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
