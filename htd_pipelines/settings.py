"""The environment contract: variable names and the embedded defaults that serve the demo."""

from __future__ import annotations

import os
from pathlib import Path

DATABASE_URL_ENV = "HTD_DATABASE_URL"
RELATIONS_FILE_ENV = "HTD_RELATIONS_FILE"
SNAPSHOT_URI_ENV = "HTD_SNAPSHOT_URI"
HOME_ENV = "HTD_HOME"

DEMO_RELATIONS_FILE = Path(__file__).with_name("relations.yaml")


def htd_home() -> Path:
    """Folder of the embedded defaults (demo SQLite database, local snapshots): `.htd/`."""
    return Path(os.environ.get(HOME_ENV) or Path.cwd() / ".htd").resolve()


def default_database_url() -> str:
    return f"sqlite:///{htd_home() / 'demo.sqlite'}"


def default_snapshot_uri() -> str:
    return str(htd_home() / "snapshots")


def database_url() -> str:
    return os.environ.get(DATABASE_URL_ENV) or default_database_url()


def relations_file() -> str:
    return os.environ.get(RELATIONS_FILE_ENV) or str(DEMO_RELATIONS_FILE)


def snapshot_uri() -> str:
    return os.environ.get(SNAPSHOT_URI_ENV) or default_snapshot_uri()


# deletion_marker_sensor tuning (read at evaluation time)
def marker_batch_size() -> int:
    """Sessions per backup run launched by the sensor (HTD_MARKER_BATCH_SIZE, default 100)."""
    return int(os.environ.get("HTD_MARKER_BATCH_SIZE", "100"))


def marker_max_batches() -> int:
    """Runs launched per tick at most (HTD_MARKER_MAX_BATCHES, default 20)."""
    return int(os.environ.get("HTD_MARKER_MAX_BATCHES", "20"))


def marker_retry_minutes() -> float:
    """A marker still there this long after its run is retried (HTD_MARKER_RETRY_MINUTES)."""
    return float(os.environ.get("HTD_MARKER_RETRY_MINUTES", "15"))


def marker_max_attempts() -> int:
    """Attempts per marker before it is abandoned and reported (HTD_MARKER_MAX_ATTEMPTS)."""
    return int(os.environ.get("HTD_MARKER_MAX_ATTEMPTS", "3"))
