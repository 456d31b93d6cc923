"""Versions and retention: which backup versions to prune, and pruning them safely.

Per type (registry `retention:`): keep the newest `keep_last` versions of each relation id
and/or the versions newer than `keep_days`; never prune the newest verified backup of a
relation id, nor a backup that was never restored unless `allow_unrestored`. Pruning removes
the snapshot folder, then the catalog row: an interrupted prune leaves a row whose files are
partly gone, which the next run (same decision) finishes.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from htd_pipelines.registry.spec import Registry
from htd_pipelines.store import catalog
from htd_pipelines.store.snapshots import SnapshotStore
from htd_pipelines.verify import last_verifications


@dataclass(frozen=True)
class PruneDecision:
    backup_id: int
    type: str
    relation_id: str
    version: int
    prune: bool
    reason: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def plan_prune(
    engine: Engine, registry: Registry, type_name: str | None = None, now: dt.datetime | None = None
) -> list[PruneDecision]:
    """The decision for every backup of the types that declare a retention policy."""
    catalog.ensure_catalog(engine)
    now = now or catalog.utcnow()
    with engine.connect() as conn:
        records = catalog.find_backups(conn, type_name=type_name)
    verified = {
        b
        for b, row in last_verifications(engine, [r.id for r in records]).items()
        if row["status"] == "ok"
    }
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for r in records:
        groups[(r.type, r.relation_id)].append(r)
    decisions: list[PruneDecision] = []
    for (tname, _rid), versions in sorted(groups.items()):
        policy = registry.types[tname].retention if tname in registry.types else None
        versions.sort(key=lambda r: r.version, reverse=True)
        newest_verified = next((r.id for r in versions if r.id in verified), None)
        for index, r in enumerate(versions):

            def decide(prune: bool, reason: str, r: catalog.BackupRecord = r) -> None:
                decisions.append(
                    PruneDecision(r.id, r.type, r.relation_id, r.version, prune, reason)
                )

            if policy is None or not policy.active:
                decide(False, "no retention policy for this type")
            elif policy.keep_last is not None and index < policy.keep_last:
                decide(False, f"one of the newest {policy.keep_last} versions")
            elif policy.keep_days is not None and r.created_at > now - dt.timedelta(
                days=policy.keep_days
            ):
                decide(False, f"newer than {policy.keep_days:g} days")
            elif r.id == newest_verified:
                decide(False, "the newest verified backup of this relation id")
            elif not r.is_reback and not policy.allow_unrestored:
                decide(False, "never restored (set allow_unrestored to prune it)")
            else:
                decide(True, "outside the retention policy")
    return _keep_bases(decisions, records)


def _keep_bases(decisions: list[PruneDecision], records: list) -> list[PruneDecision]:
    """A kept incremental version needs its chain: keep every version it is built on."""
    by_key = {(r.type, r.relation_id, r.version): r for r in records}
    keep_for: dict[int, int] = {}
    for d in decisions:
        if d.prune:
            continue
        record = by_key[(d.type, d.relation_id, d.version)]
        manifest = record.manifest
        while manifest.kind != "full" and manifest.base_version is not None:
            base = by_key.get((d.type, d.relation_id, manifest.base_version))
            if base is None:
                break
            keep_for.setdefault(base.id, d.version)
            manifest = base.manifest
    return [
        PruneDecision(
            d.backup_id,
            d.type,
            d.relation_id,
            d.version,
            False,
            f"the base of kept version {keep_for[d.backup_id]}",
        )
        if d.prune and d.backup_id in keep_for
        else d
        for d in decisions
    ]


def prune(
    engine: Engine, decisions: list[PruneDecision], *, uid: str | None, run_id: str | None
) -> list[int]:
    """Remove the backups marked prune: files first, then the catalog row (re-runnable)."""
    pruned = []
    with engine.connect() as conn:
        records = {d.backup_id: catalog.get_backup(conn, d.backup_id) for d in decisions if d.prune}
    for backup_id, record in records.items():
        manifest = record.manifest
        SnapshotStore(manifest.snapshot_uri).delete_dir(manifest.location)
        with engine.begin() as conn:
            conn.execute(catalog.back_up.delete().where(catalog.back_up.c.id == backup_id))
            catalog.log_operation(
                conn,
                action="prune",
                uid=uid,
                type_name=record.type,
                relation_ids=[record.relation_id],
                backup_ids=[backup_id],
                run_id=run_id,
                message=f"version {record.version} removed by the retention policy",
            )
        pruned.append(backup_id)
    return pruned
