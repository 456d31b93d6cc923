"""Shared fixtures: ``dialect`` (sqlite / postgresql / mariadb) and ``db_url`` (a fresh database).

A dialect whose server is unreachable is skipped, except under CI (``CI=true`` or ``CI=1``) where
it is a failure: CI must provide every server.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Make the helper modules next to this file (dbs.py, chinook.py) importable as top-level modules
# regardless of the import mode or whether tests/ becomes a package.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from dbs import DIALECTS, drop_database, new_database, server_available  # noqa: E402

_AVAILABILITY: dict[str, tuple[bool, str]] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a slow test (deselect with -m 'not slow')")


def running_under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def require_server(dialect: str) -> None:
    """Skip (or, under CI, fail) the current test when ``dialect``'s server is unreachable."""
    if dialect not in _AVAILABILITY:
        _AVAILABILITY[dialect] = server_available(dialect)
    ok, reason = _AVAILABILITY[dialect]
    if ok:
        return
    if running_under_ci():
        pytest.fail(f"{dialect} server required under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(params=list(DIALECTS), ids=list(DIALECTS))
def dialect(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db_url(dialect: str, tmp_path: Path) -> Iterator[str]:
    """URL of a new, empty database of ``dialect``; dropped after the test."""
    require_server(dialect)
    url = new_database(dialect, tmp_path)
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture
def chinook_url(db_url: str) -> str:
    """``db_url`` with the Chinook sample database loaded (see tests/chinook.py)."""
    from chinook import load_chinook

    load_chinook(db_url)
    return db_url
