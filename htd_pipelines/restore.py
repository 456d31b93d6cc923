"""Restore, free of Dagster: verify a backup, then in one transaction claim it, insert parents
first, read the rows back and compare them with the snapshot. All of it, or nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from htd_pipelines.backup import coerce_ids
from htd_pipelines.dialects.arrow_rows import align_by_key, differences, sort_by_key
from htd_pipelines.dialects.engine import quoted, same_database
from htd_pipelines.dialects.write import SentRows, insert_rows, read_rows, same_as_sent
from htd_pipelines.registry.arrow_types import TAGGED, untag
from htd_pipelines.registry.resolved import ResolvedType, TablePlan, resolve_type
from htd_pipelines.registry.spec import Registry
from htd_pipelines.store import catalog, session_claims
from htd_pipelines.store.catalog import BackupRecord, back_up
from htd_pipelines.store.manifest import Manifest
from htd_pipelines.store.snapshots import SnapshotError, SnapshotStore


class RestoreRefused(RuntimeError):
    """The restore was refused before anything was written (or was rolled back whole)."""


@dataclass
class RestorePreview:
    backup_id: int
    type: str
    relation_id: str
    version: int
    target: str
    rows: dict[str, int] = field(default_factory=dict)
    conflicts: dict[str, list] = field(default_factory=dict)
    missing_parents: dict[str, list] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # files, schema, catalog state

    @property
    def ok(self) -> bool:
        return not (self.conflicts or self.missing_parents or self.problems)

    def as_dict(self) -> dict:
        return {
            "backup_id": self.backup_id,
            "type": self.type,
            "relation_id": self.relation_id,
            "version": self.version,
            "target": self.target,
            "rows": self.rows,
            "conflicts": self.conflicts,
            "missing_parents": self.missing_parents,
            "problems": self.problems,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class RestoreResult:
    backup_id: int
    relation_id: str
    rows: dict[str, int]
    corrected: dict[str, int]  # cells put back after a trigger/default changed them
    target: str
    claimed: bool


def _open_checked(store: SnapshotStore, manifest: Manifest, name: str) -> pq.ParquetFile:
    """One table's file, its bytes checked (sha256, decrypted), its footer against the manifest
    (row count, columns). Any mismatch raises SnapshotError naming the file and table."""
    t = manifest.table(name)
    path = f"{manifest.location}/{t.file}"
    data = store.read_checked(path, t)  # sha256 + size of the stored bytes; decrypted
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise SnapshotError(f"snapshot file {store.full(path)} is not readable: {exc}") from exc
    rows = parquet.metadata.num_rows
    if rows != t.rows:
        raise SnapshotError(
            f"snapshot file {store.full(path)} of table {t.table} has {rows} rows, "
            f"the manifest says {t.rows}"
        )
    names = [c["name"] for c in t.columns]
    if parquet.schema_arrow.names != names:
        raise SnapshotError(
            f"snapshot file {store.full(path)} of table {t.table} has columns "
            f"{parquet.schema_arrow.names}, the manifest says {names}"
        )
    return parquet


def read_snapshot_table(store: SnapshotStore, manifest: Manifest, name: str) -> pa.Table:
    """One table's rows, from a file checked as `_open_checked` does."""
    parquet = _open_checked(store, manifest, name)
    try:
        return parquet.read()
    except (pa.ArrowException, OSError) as exc:
        path = store.full(f"{manifest.location}/{manifest.table(name).file}")
        raise SnapshotError(f"snapshot file {path} is not readable: {exc}") from exc


def load_snapshot(store: SnapshotStore, manifest: Manifest) -> dict[str, pa.Table]:
    """Every table of the snapshot, each file read and checked (read_snapshot_table)."""
    return {t.table: read_snapshot_table(store, manifest, t.table) for t in manifest.tables}


def check_snapshot(store: SnapshotStore, manifest: Manifest) -> None:
    """Check every file of the snapshot (bytes, footer, row count, columns) before anything is
    written, keeping none of them in memory; the rows are decoded when they are inserted."""
    for t in manifest.tables:
        _open_checked(store, manifest, t.table)


def check_schema(manifest: Manifest, rtype: ResolvedType) -> list[str]:
    """The registry's tables and the live columns still match what was backed up."""
    problems = []
    backed_up = [t.table for t in manifest.tables]
    current = [t.name for t in rtype.tables]
    for name in sorted(set(backed_up) - set(current)):
        problems.append(f"table {name} is in the backup but no longer in the registry type")
    for name in sorted(set(current) - set(backed_up)):
        problems.append(f"table {name} is in the registry type but not in the backup")
    for t in manifest.tables:
        if t.table not in current:
            continue
        live = {c.name: c for c in rtype.table(t.table).columns}
        for col in t.columns:
            if col["name"] not in live:
                problems.append(f"table {t.table}: column {col['name']} no longer exists")
            elif str(live[col["name"]].arrow) != col["arrow_type"]:
                problems.append(
                    f"table {t.table}: column {col['name']} was {col['arrow_type']} "
                    f"and is now {live[col['name']].arrow}"
                )
        for name, spec in live.items():
            if name not in {c["name"] for c in t.columns} and not spec.nullable:
                problems.append(
                    f"table {t.table}: new column {name} is NOT NULL and not in the backup"
                )
    return problems


def _key_rows(table: pa.Table, key: list[str]) -> list[tuple]:
    return list(zip(*[table.column(c).to_pylist() for c in key], strict=True))


def find_conflicts(conn: Connection, tplan: TablePlan, rows: pa.Table, limit: int = 20) -> list:
    """Keys of the snapshot that already exist in the database."""
    key = list(tplan.primary_key)
    found: list = []
    keys = _key_rows(rows, key)
    cols = [tplan.table.c[c] for c in key]
    expr = cols[0] if len(cols) == 1 else sa.tuple_(*cols)
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        values = [k[0] for k in chunk] if len(cols) == 1 else chunk
        hits = conn.execute(sa.select(*cols).where(expr.in_(values)).limit(limit)).all()
        found += [r[0] if len(cols) == 1 else dict(zip(key, r, strict=True)) for r in hits]
        if len(found) >= limit:
            break
    return found[:limit]


def find_missing_parents(
    conn: Connection, rtype: ResolvedType, tables: dict[str, pa.Table], limit: int = 20
) -> dict[str, list]:
    """Foreign-key values of the snapshot that neither the snapshot nor the database holds."""
    missing: dict[str, list] = {}
    by_fullname = {t.table.fullname: t for t in rtype.tables}
    for tplan in rtype.tables:
        rows = tables[tplan.name]
        for fk in tplan.table.foreign_key_constraints:
            if len(fk.column_keys) != 1:
                continue
            col = fk.column_keys[0]
            target_table = fk.elements[0].target_fullname.rsplit(".", 1)[0]
            target_col = fk.elements[0].target_fullname.rsplit(".", 1)[1]
            if col not in rows.column_names:
                continue
            wanted = {v for v in rows.column(col).to_pylist() if v is not None}
            parent = by_fullname.get(target_table)
            if parent is not None and target_col in tables[parent.name].column_names:
                wanted -= set(tables[parent.name].column(target_col).to_pylist())
            if not wanted:
                continue
            ref = sa.table(target_table.split(".")[-1], sa.column(target_col))
            if "." in target_table:
                ref.schema = target_table.split(".")[0]
            present: set = set()
            values = sorted(wanted, key=str)
            for start in range(0, len(values), 1000):
                chunk = values[start : start + 1000]
                present |= set(
                    conn.execute(
                        sa.select(ref.c[target_col]).where(ref.c[target_col].in_(chunk))
                    ).scalars()
                )
            lost = [v for v in values if v not in present]
            if lost:
                missing[f"{tplan.name}.{col} -> {target_table}.{target_col}"] = lost[:limit]
    return missing


def _claim(conn: Connection, record: BackupRecord, uid: str | None, run_id: str | None) -> None:
    """is_reback 0 -> 1, conditionally: of two restores started together, one wins."""
    result = conn.execute(
        back_up.update()
        .where(back_up.c.id == record.id, back_up.c.is_reback == 0)
        .values(is_reback=1, restored_by=uid, restored_at=catalog.utcnow(), restore_run_id=run_id)
    )
    if result.rowcount != 1:
        raise RestoreRefused(
            f"backup {record.id} ({record.type} {record.relation_id} v{record.version}) "
            "is already restored (or being restored by another run); nothing was written"
        )


def _not_full(record: BackupRecord) -> str:
    return (
        f"backup {record.id} is an incremental version of a live session ({record.type} "
        f"{record.relation_id} v{record.version}): restore it with `htd-pipelines versions "
        f"restore --type {record.type} {record.relation_id} --version {record.version}`"
    )


def _refuse_if_restored(record: BackupRecord) -> None:
    if record.is_reback:
        raise RestoreRefused(
            f"backup {record.id} ({record.type} {record.relation_id} v{record.version}) was "
            f"already restored at {record.restored_at} by {record.restored_by}; "
            "a backup is restored at most once"
        )


def verify_rows(conn: Connection, tplan: TablePlan, expected: pa.Table, ids: list) -> int:
    """Compare the rows now in the database with the snapshot; put back values that a trigger
    or default changed; return how many cells were corrected. Raises if they still differ.

    Each differing row gets one UPDATE that sets every differing column, and on MariaDB also
    every ON UPDATE column to its backed-up value (else the server would stamp it with the
    time of the correction). On PostgreSQL, the table's BEFORE UPDATE row triggers are
    switched off for the corrections, inside the transaction, when the role may (it owns the
    table): a trigger that stamps a column on update would defeat the correction. A change
    that cannot be undone this way (a MariaDB BEFORE UPDATE trigger, SQLite triggers) is
    refused by the second comparison; the backup's delete rehearses the restore, so that
    refusal comes before anything is deleted."""
    key = list(tplan.primary_key)
    expected, actual = align_by_key(expected, read_rows(conn, tplan, ids), key)
    diffs = differences(expected, actual, key, limit=10_000)
    if not diffs:
        return 0
    if diffs[0][1] == "*":
        raise RestoreRefused(
            f"table {tplan.name}: {diffs[0][3]} rows after restore, the backup has "
            f"{diffs[0][2]}; rolled back"
        )
    rows: dict[tuple, dict[str, object]] = {}
    for k, column, value, _ in diffs:
        rows.setdefault(tuple(k.items()), {})[column] = value
    tagged = {c.name for c in tplan.columns if c.kind == TAGGED}  # SQLite: any storage class
    stamped = on_update_columns(conn, tplan)
    if stamped:
        _add_stamped_values(rows, expected, key, stamped)
    with _before_update_triggers_off(conn, tplan):
        for k, values in rows.items():
            values = {c: untag(v) if c in tagged else v for c, v in values.items()}  # noqa: PLW2901
            target = sa.table(
                tplan.table.name,
                *[sa.column(c) for c in dict.fromkeys([*values, *key])],
                schema=tplan.table.schema,
            )
            cond = sa.and_(*[target.c[c] == (untag(v) if c in tagged else v) for c, v in k])
            conn.execute(target.update().where(cond).values(values))
    expected, actual = align_by_key(expected, read_rows(conn, tplan, ids), key)
    still = differences(expected, actual, key)
    if still:
        k, column, value, got = still[0]
        raise RestoreRefused(
            f"table {tplan.name}: column {column} of row {k} is {got!r} after restore, "
            f"the backup has {value!r} (a trigger or default changes it and the correction "
            "could not put it back); rolled back"
        )
    return len(diffs)


def on_update_columns(conn: Connection, tplan: TablePlan) -> list[str]:
    """MariaDB/MySQL columns the server stamps on every UPDATE (ON UPDATE CURRENT_TIMESTAMP)."""
    if conn.dialect.name not in ("mysql", "mariadb"):
        return []
    found = conn.execute(
        sa.text(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = COALESCE(:s, DATABASE()) AND TABLE_NAME = :t "
            "AND LOWER(EXTRA) LIKE '%on update%'"
        ),
        {"s": tplan.table.schema, "t": tplan.table.name},
    ).scalars()
    names = {c.name for c in tplan.columns}
    return [c for c in found if c in names]


def _add_stamped_values(
    rows: dict[tuple, dict[str, object]], expected: pa.Table, key: list[str], stamped: list[str]
) -> None:
    """Each corrected row also sets its ON UPDATE columns, to their backed-up values."""
    keys = list(zip(*[expected.column(c).to_pylist() for c in key], strict=True))
    where = {k: i for i, k in enumerate(keys)}
    for k, values in rows.items():
        i = where[tuple(v for _, v in k)]
        for c in stamped:
            values.setdefault(c, expected.column(c)[i].as_py())


@contextmanager
def _before_update_triggers_off(conn: Connection, tplan: TablePlan) -> Iterator[None]:
    """PostgreSQL: the table's enabled BEFORE UPDATE row triggers off for the block, back on
    after it, all inside the caller's transaction (ALTER TABLE ... DISABLE TRIGGER is
    transactional: a rollback or a crash leaves them as they were). A trigger the role may
    not switch off (it does not own the table) stays on."""
    if conn.dialect.name != "postgresql":
        yield
        return
    name, _ = quoted(conn, tplan)
    triggers = conn.execute(
        sa.text(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = CAST(:t AS regclass) "
            "AND NOT tgisinternal AND tgenabled IN ('O', 'A') AND (tgtype & 19) = 19"
        ),
        {"t": name},
    ).scalars()
    prep = conn.dialect.identifier_preparer
    off = []
    for trigger in triggers:
        try:
            with conn.begin_nested():
                conn.exec_driver_sql(f"ALTER TABLE {name} DISABLE TRIGGER {prep.quote(trigger)}")
            off.append(trigger)
        except sa.exc.DBAPIError:  # not the owner: the second comparison will tell
            continue
    yield
    for trigger in off:
        conn.exec_driver_sql(f"ALTER TABLE {name} ENABLE TRIGGER {prep.quote(trigger)}")


CACHE_ROWS = 50_000  # tables up to this size are read once per restore or proof


@dataclass
class RestoreContext:
    """What one restore (or one rehearsal) writes: the snapshot of one or more sessions of one
    type (a backup run's sessions are rehearsed together before their delete)."""

    record: BackupRecord | None
    manifests: tuple[Manifest, ...]
    rtype: ResolvedType
    store: SnapshotStore
    ids: list

    @property
    def manifest(self) -> Manifest:
        return self.manifests[0]

    @property
    def label(self) -> str:
        if self.record is not None:
            return f"backup {self.record.id}"
        m = self.manifest
        rids = ", ".join(x.relation_id for x in self.manifests)
        return f"the backup of {m.type} {rids}"

    def table(self, name: str) -> pa.Table:
        """One table's rows, read (and checked) when needed. A table of up to CACHE_ROWS rows
        is kept once read: a delete's proof and a restore use each table up to three times
        (compare, insert, read-back), and a batch of small sessions is many small files."""
        cache = self.__dict__.setdefault("_cache", {})
        if name in cache:
            return cache[name]
        if len(self.manifests) == 1:
            table = read_snapshot_table(self.store, self.manifest, name)
        else:  # a batch: many small files; reading, hashing and decoding release the GIL
            with ThreadPoolExecutor(max_workers=4, thread_name_prefix="htd-read") as pool:
                parts = pool.map(lambda m: read_snapshot_table(self.store, m, name), self.manifests)
                table = pa.concat_tables(list(parts))
        if table.num_rows <= CACHE_ROWS:
            cache[name] = table
        return table

    def manifest_record(self) -> BackupRecord:
        """The catalog record of a single-backup restore (prepare() made this context)."""
        if self.record is None:
            raise RuntimeError("this restore context holds no catalog record")
        return self.record

    def tables(self) -> dict[str, pa.Table]:
        return {t.name: self.table(t.name) for t in self.rtype.tables}

    def sorted_table(self, tplan: TablePlan) -> pa.Table:
        """One table's rows in key order, the order they are inserted in (load.sort_by_key)."""
        return sort_by_key(self.table(tplan.name), list(tplan.primary_key))

    def tables_read_ahead(self) -> Iterator[tuple[TablePlan, pa.Table]]:
        """Each table of the type with its rows in key order, parents first. While the caller
        inserts one (the database's work: the client mostly waits), the next table's file is
        read, checked, decoded and sorted in a worker thread. A restore holds at most two
        tables of the snapshot in memory, not the whole session."""
        plans = list(self.rtype.tables)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="htd-read-ahead") as pool:
            ahead: Future[pa.Table] | None = None
            for i, tplan in enumerate(plans):
                data = ahead.result() if ahead is not None else self.sorted_table(tplan)
                ahead = pool.submit(self.sorted_table, plans[i + 1]) if i + 1 < len(plans) else None
                yield tplan, data
                del data


def prepare(
    catalog_engine: Engine,
    target_engine: Engine,
    registry: Registry,
    backup_id: int,
    store: SnapshotStore | None = None,
) -> RestoreContext:
    """Everything checked before a single write: catalog state, files, registry and schema."""
    catalog.ensure_catalog(catalog_engine)
    with catalog_engine.connect() as conn:
        record = catalog.get_backup(conn, backup_id)
    manifest = record.manifest
    if manifest.kind != "full":
        raise RestoreRefused(_not_full(record))
    store = store or SnapshotStore(manifest.snapshot_uri)
    check_snapshot(store, manifest)
    rtype = resolve_type(target_engine, registry.get(manifest.type), registry.path)
    problems = check_schema(manifest, rtype)
    if problems:
        raise RestoreRefused(
            f"backup {backup_id} no longer matches the registry or the schema: "
            + "; ".join(problems)
        )
    ids = coerce_ids(rtype, [manifest.relation_id])
    return RestoreContext(record, (manifest,), rtype, store, ids)


def _label(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def preview_restore(
    catalog_engine: Engine,
    target_engine: Engine,
    registry: Registry,
    backup_id: int,
    store: SnapshotStore | None = None,
    *,
    deep: bool = True,
) -> RestorePreview:
    """What a restore would do, writing nothing: rows, key conflicts, missing parents (when
    `deep`), and every catalog, file or schema problem that would refuse it."""
    catalog.ensure_catalog(catalog_engine)
    with catalog_engine.connect() as conn:
        record = catalog.get_backup(conn, backup_id)
    preview = RestorePreview(
        backup_id, record.type, record.relation_id, record.version, _label(target_engine)
    )
    same = same_database(catalog_engine, target_engine)
    if record.is_reback and same:
        preview.problems.append(f"already restored at {record.restored_at} by {record.restored_by}")
    manifest = record.manifest
    if manifest.kind != "full":
        preview.problems.append(_not_full(record))
        return preview
    store = store or SnapshotStore(manifest.snapshot_uri)
    try:
        tables = load_snapshot(store, manifest)
    except SnapshotError as exc:
        preview.problems.append(str(exc))
        return preview
    rtype = resolve_type(target_engine, registry.get(manifest.type), registry.path)
    preview.problems += check_schema(manifest, rtype)
    preview.rows = {name: t.num_rows for name, t in tables.items()}
    if preview.problems or not deep:
        return preview
    with target_engine.connect() as conn:
        for tplan in rtype.tables:
            hits = find_conflicts(conn, tplan, tables[tplan.name])
            if hits:
                preview.conflicts[tplan.name] = hits
        preview.missing_parents = find_missing_parents(conn, rtype, tables)
    del tables
    if preview.ok:  # the restore itself, rolled back: a dry run predicts the real outcome
        ctx = RestoreContext(
            record, (manifest,), rtype, store, coerce_ids(rtype, [record.relation_id])
        )
        try:
            with target_engine.connect() as conn, conn.begin() as transaction:
                rehearse(conn, ctx)
                transaction.rollback()
        except (RestoreRefused, SnapshotError, sa.exc.DBAPIError) as exc:
            preview.problems.append(f"the rehearsed restore failed: {exc}")
    return preview


def restore_backup(
    catalog_engine: Engine,
    registry: Registry,
    backup_id: int,
    *,
    uid: str | None,
    run_id: str | None,
    target_engine: Engine | None = None,
    store: SnapshotStore | None = None,
    rehearsal: bool = False,
) -> RestoreResult:
    """Restore one backup: all rows or none, exactly the values backed up, at most once.

    With `rehearsal` (a dry run, or a verification's "test restore") everything is done, read
    back and compared, then rolled back: nothing is claimed or kept.

    Into the catalog's own database the backup is claimed (is_reback 0 -> 1) in the same
    transaction. With `target_engine` (a staging copy) the catalog is not claimed.
    """
    target = target_engine or catalog_engine
    # into the catalog's own database (however its URL is spelled) the backup is claimed
    claiming = not rehearsal and (
        target_engine is None or same_database(target_engine, catalog_engine)
    )
    ctx = prepare(catalog_engine, target, registry, backup_id, store)
    record = ctx.manifest_record()
    if rehearsal:
        with target.connect() as conn, conn.begin() as transaction:
            rows, corrected = rehearse(conn, ctx)
            transaction.rollback()
        return RestoreResult(backup_id, record.relation_id, rows, corrected, _label(target), False)
    if claiming:
        _refuse_if_restored(record)
        holder = run_id or f"restore-{uuid.uuid4()}"
        try:
            session_claims.claim_all(
                catalog_engine, record.type, [record.relation_id], holder, "restore"
            )
        except session_claims.SessionBusy as exc:
            raise RestoreRefused(str(exc)) from None
        try:
            return _restore_claimed(catalog_engine, target, ctx, backup_id, uid, run_id, claiming)
        finally:
            session_claims.release(catalog_engine, record.type, [record.relation_id], holder)
    return _restore_claimed(catalog_engine, target, ctx, backup_id, uid, run_id, claiming)


def _restore_claimed(
    catalog_engine: Engine,
    target: Engine,
    ctx: RestoreContext,
    backup_id: int,
    uid: str | None,
    run_id: str | None,
    claiming: bool,
) -> RestoreResult:
    """restore_backup once the session is held (see there)."""
    record = ctx.manifest_record()
    try:
        with target.begin() as conn:
            if claiming:
                _claim(conn, record, uid, run_id)
            rows, sent = _insert_tables(conn, ctx)
            corrected = _read_back(conn, ctx, sent)
            if claiming:
                catalog.log_operation(
                    conn,
                    action="restore",
                    uid=uid,
                    type_name=record.type,
                    relation_ids=[record.relation_id],
                    backup_ids=[backup_id],
                    counts=rows,
                    run_id=run_id,
                    message=f"corrected cells: {corrected}" if corrected else None,
                )
    except Exception as exc:
        catalog.log_operation_now(
            catalog_engine,
            action="restore",
            status="failed",
            uid=uid,
            type_name=record.type,
            relation_ids=[record.relation_id],
            backup_ids=[backup_id],
            run_id=run_id,
            message=str(exc),
        )
        raise
    if not claiming:
        catalog.log_operation_now(
            catalog_engine,
            action="restore_to_target",
            uid=uid,
            type_name=record.type,
            relation_ids=[record.relation_id],
            backup_ids=[backup_id],
            counts=rows,
            run_id=run_id,
            message=f"restored into {_label(target)}",
        )
    return RestoreResult(backup_id, record.relation_id, rows, corrected, _label(target), claiming)


def rehearse(conn: Connection, ctx: RestoreContext) -> tuple[dict[str, int], dict[str, int]]:
    """The restore's own writes, read-back and corrections, in a savepoint of the caller's open
    transaction that is then rolled back: (rows per table, corrected cells per table), or the
    RestoreRefused the restore would raise. What the rehearsal proves, the restore will do:
    the same insert path, the same triggers, defaults and conversions, the same comparison.
    The backup's delete runs it after its DELETEs (the keys are free again) and before it
    commits; a dry run runs it in a transaction of its own."""
    savepoint = conn.begin_nested()
    try:
        rows, sent = _insert_tables(conn, ctx)
        corrected = _read_back(conn, ctx, sent)
    finally:
        savepoint.rollback()
    return rows, corrected


def _insert_tables(
    conn: Connection, ctx: RestoreContext
) -> tuple[dict[str, int], dict[str, SentRows | None]]:
    """Insert every table of the backup, parents first, in the caller's transaction: rows
    inserted and what was sent, per table. A key that already exists or a missing parent
    raises RestoreRefused (the caller's transaction rolls back: nothing is written)."""
    rows: dict[str, int] = {}
    sent: dict[str, SentRows | None] = {}
    integrity = (sa.exc.IntegrityError, conn.dialect.dbapi.IntegrityError)
    for tplan, data in ctx.tables_read_ahead():  # parents first
        if tplan.rule.primary_key:  # declared key: no constraint guards duplicates
            hits = find_conflicts(conn, tplan, data)
            if hits:
                raise RestoreRefused(
                    f"{ctx.label}: rows with these keys already exist "
                    f"({tplan.name}: {hits}); nothing was written"
                )
        try:
            with conn.begin_nested():  # a failed insert leaves the transaction usable
                sent[tplan.name] = insert_rows(conn, tplan, data)
        except integrity as exc:
            raise _integrity_refusal(conn, ctx, tplan, exc) from exc
        except sa.exc.DBAPIError as exc:
            raise RestoreRefused(
                f"{ctx.label}: inserting into {tplan.name} failed "
                f"({str(exc.orig).strip()}); nothing was written"
            ) from exc
        rows[tplan.name] = data.num_rows
        del data
    return rows, sent


def _read_back(
    conn: Connection, ctx: RestoreContext, sent: dict[str, SentRows | None]
) -> dict[str, int]:
    """Read every table back after every insert (and trigger), in the caller's transaction:
    cells that differ from the backup are corrected. Corrected cells per table."""
    corrected: dict[str, int] = {}
    for tplan in ctx.rtype.tables:
        was = sent.get(tplan.name)
        if was is not None and same_as_sent(conn, tplan, ctx.ids, was):
            continue  # byte for byte what was written: every value as backed up
        fixed = verify_rows(conn, tplan, ctx.table(tplan.name), ctx.ids)
        if fixed:
            corrected[tplan.name] = fixed
    return corrected


def _integrity_refusal(
    conn: Connection, ctx: RestoreContext, tplan: TablePlan, exc: Exception
) -> RestoreRefused:
    """Turn a failed insert into the list of conflicts / missing parents (the failed insert
    was rolled back to its savepoint; the whole transaction is rolled back after this)."""
    tables = ctx.tables()
    # the tables before this one were inserted by this very transaction: only this one's
    # keys can conflict with rows that were there before
    hits = find_conflicts(conn, tplan, tables[tplan.name])
    conflicts = {tplan.name: hits} if hits else {}
    missing = find_missing_parents(conn, ctx.rtype, tables)
    if conflicts:
        listed = "; ".join(f"{t}: {keys}" for t, keys in conflicts.items())
        return RestoreRefused(
            f"{ctx.label}: rows with these keys already exist ({listed}); nothing was written"
        )
    if missing:
        listed = "; ".join(f"{fk}: {vals}" for fk, vals in missing.items())
        return RestoreRefused(
            f"{ctx.label}: parent rows are missing ({listed}); nothing was written"
        )
    return RestoreRefused(
        f"{ctx.label}: inserting into {tplan.name} failed "
        f"({str(getattr(exc, 'orig', exc)).strip()}); nothing was written"
    )
