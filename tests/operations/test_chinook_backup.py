"""A third-party schema (Chinook) through the registry contract: back up a customer with its
invoices and invoice lines, delete it, and nothing else in the database changes."""

from __future__ import annotations

import pytest

from htd_pipelines.api import list_backups, load_backup
from htd_pipelines.cli.launch import failure_message
from htd_pipelines.store.catalog import CATALOG_TABLES
from tests.support.chinook import CHINOOK_NAMES, chinook_relations_yaml, snapshot_database
from tests.support.env import make_env

CUSTOMER = 54  # Edinburgh, with a trailing space in its city: exactness matters


@pytest.fixture
def chinook_env(monkeypatch, chinook_url, dialect, tmp_path):
    registry = tmp_path / "chinook.yaml"
    registry.write_text(chinook_relations_yaml(dialect))
    return make_env(monkeypatch, chinook_url, tmp_path, str(registry))


def test_customer_backup_deletes_exactly_its_rows(chinook_env, dialect) -> None:
    n = CHINOOK_NAMES[dialect]
    before = snapshot_database(chinook_env.url, exclude=CATALOG_TABLES)
    result = chinook_env.run_backup([CUSTOMER], type_name="customer")
    assert result.success, failure_message(result)
    after = snapshot_database(chinook_env.url, exclude=CATALOG_TABLES)

    [record] = list_backups("customer", CUSTOMER)
    rows = {t.table: t.rows for t in record.manifest.tables}
    assert rows == {n["customer"]: 1, n["invoice"]: 7, n["invoice_line"]: 38}

    frames = load_backup("customer", CUSTOMER)
    invoice_ids = set(frames[n["invoice"]][n["invoice_id"]].tolist())
    assert len(invoice_ids) == 7
    changed = {t for t in before if before[t] != after[t]}
    assert changed == {n["customer"], n["invoice"], n["invoice_line"]}
    for table, count in rows.items():
        removed = [r for r in before[table] if r not in after[table]]
        assert len(removed) == count == len(before[table]) - len(after[table])
        assert all(r in before[table] for r in after[table])
    # the removed rows are the customer's own, byte for byte in the snapshot
    city = frames[n["customer"]]["City" if dialect != "postgresql" else "city"].tolist()
    assert city == ["Edinburgh "]
