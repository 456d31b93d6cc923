"""Shared fixtures: ``dialect`` (sqlite / postgresql / mariadb) and ``db_url`` (a fresh database).

A dialect whose server is unreachable is skipped, except under CI (``CI=true`` or ``CI=1``) where
it is a failure: CI must provide every server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from htd_pipelines.demo.schema import create_demo_schema
from htd_pipelines.demo.seed import seed_demo
from tests.support.dbs import DIALECTS, drop_database, new_database, require_server
from tests.support.env import HtdEnv, make_env


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
    from tests.support.chinook import load_chinook

    load_chinook(db_url)
    return db_url


@pytest.fixture
def seeded_env(
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path
) -> Callable[..., HtdEnv]:
    """Factory of the usual test environment: ``db_url`` configured as the application database
    (HTD_* set, snapshots under ``tmp_path``), the demo schema created and ``sessions`` demo
    sessions seeded (their ids in ``env.ids``)."""

    def make(
        sessions: int = 0,
        *,
        seed: int = 0,
        test_fraction: float | None = None,
        relations_file: str | None = None,
    ) -> HtdEnv:
        env = make_env(monkeypatch, db_url, tmp_path, relations_file)
        create_demo_schema(env.engine)
        if sessions:
            extra = {} if test_fraction is None else {"test_fraction": test_fraction}
            env.ids = seed_demo(env.engine, sessions, seed=seed, **extra)
        return env

    return make
