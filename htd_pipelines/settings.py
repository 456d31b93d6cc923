"""The environment contract: every HTD_* variable, its default and what it does, in one place.

Each variable is read when it is needed (never at import), through the typed accessors below;
`VARIABLES` lists them all for the documentation and for the test that no other module reads
an HTD_* variable of its own. Secrets (database passwords, keys, webhook tokens) are read
here and go nowhere else: not into run config, logs or the catalog.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEMO_RELATIONS_FILE = Path(__file__).parent / "demo" / "relations.yaml"


@dataclass(frozen=True)
class Variable:
    """One environment variable of the contract."""

    name: str
    default: str | None
    doc: str
    secret: bool = False

    def text(self) -> str | None:
        """The value, stripped; the default when unset or blank."""
        value = (os.environ.get(self.name) or "").strip()
        return value or self.default

    def value(self) -> str:
        """The value, or the default when unset or blank: for a variable that has a default."""
        text = self.text()
        if text is None:
            raise ValueError(f"{self.name} has no default: read it with text()")
        return text

    def is_set(self) -> bool:
        return bool((os.environ.get(self.name) or "").strip())


def _var(name: str, default: str | None, doc: str, secret: bool = False) -> Variable:
    variable = Variable(name, default, doc, secret)
    VARIABLES[name] = variable
    return variable


VARIABLES: dict[str, Variable] = {}

# -- where things are -----------------------------------------------------------------------------
HOME = _var("HTD_HOME", None, "folder of the embedded defaults (default ./.htd)")
DATABASE_URL = _var(
    "HTD_DATABASE_URL",
    None,
    "SQLAlchemy URL of the application database (default: the demo SQLite file in HTD_HOME)",
    secret=True,
)
RELATIONS_FILE = _var(
    "HTD_RELATIONS_FILE", None, "the relation registry YAML (default: the demo's registry)"
)
SNAPSHOT_URI = _var(
    "HTD_SNAPSHOT_URI", None, "folder or URI of the snapshot store (default HTD_HOME/snapshots)"
)
SCHEDULES_FILE = _var(
    "HTD_SCHEDULES_FILE",
    None,
    "declared schedules YAML (default: the packaged imported.yaml)",
)

# -- how the work is done -------------------------------------------------------------------------
FAST_PATH = _var(
    "HTD_FAST_PATH", "1", "0 switches the dialect fast paths off (portable path only)"
)
CONNECT_TIMEOUT_S = _var(
    "HTD_CONNECT_TIMEOUT_S", "10", "seconds to wait for a database connection to open"
)
LOCK_TIMEOUT_S = _var(
    "HTD_LOCK_TIMEOUT_S",
    "30",
    "seconds a statement waits for a lock the application holds before it fails (PostgreSQL "
    "lock_timeout, MariaDB innodb_lock_wait_timeout and lock_wait_timeout, SQLite busy timeout)",
)
STATEMENT_TIMEOUT_S = _var(
    "HTD_STATEMENT_TIMEOUT_S",
    "3600",
    "seconds one statement may run (PostgreSQL statement_timeout; MariaDB/MySQL: the client's "
    "read/write timeout, so a server that stops answering ends there too); 0: none",
)
ZSTD_LEVEL = _var("HTD_ZSTD_LEVEL", None, "zstd level of Parquet files, 1-22 (default 1)")
ENCRYPTION_KEYS = _var(
    "HTD_ENCRYPTION_KEYS",
    None,
    "encryption keys, keyid:base64key,... (unset: no encryption)",
    secret=True,
)
ENCRYPTION_KEY_ID = _var(
    "HTD_ENCRYPTION_KEY_ID", None, "the key id new snapshot files are encrypted with"
)
CHANGE_COLUMN = _var(
    "HTD_CHANGE_COLUMN",
    None,
    "change-tracking column of incremental versions, e.g. updated_at (unset: row digests)",
)

# -- deletion_marker_sensor -----------------------------------------------------------------------
MARKER_BATCH_SIZE = _var("HTD_MARKER_BATCH_SIZE", "100", "sessions per run launched by the sensor")
MARKER_MAX_BATCHES = _var("HTD_MARKER_MAX_BATCHES", "20", "runs launched per sensor tick at most")
MARKER_RETRY_MINUTES = _var(
    "HTD_MARKER_RETRY_MINUTES", "15", "a marker still there this long after its run is retried"
)
MARKER_MAX_ATTEMPTS = _var(
    "HTD_MARKER_MAX_ATTEMPTS", "3", "attempts per marker before it is abandoned and reported"
)

CLAIM_STALE_SECONDS = _var(
    "HTD_CLAIM_STALE_SECONDS",
    "60",
    "a session claim (one backup or restore of a session at a time) whose heartbeat (refreshed "
    "every third of this by the process holding it) is older than this is taken over",
)

# -- alerts ----------------------------------------------------------------------------------------
ALERT_WEBHOOK_URL = _var(
    "HTD_ALERT_WEBHOOK_URL", None, "URL that receives each alert as a JSON POST", secret=True
)
UI_URL = _var("HTD_UI_URL", "http://127.0.0.1:3000", "base URL of the Dagster UI in alerts")
ALERT_MARKER_DELAY_MINUTES = _var(
    "HTD_ALERT_MARKER_DELAY_MINUTES", "60", "a deletion marker still there this long is alerted"
)

# -- schedules (cron and timezone of each; read when the definitions are built) --------------------
DEFAULT_TIMEZONE = "Asia/Shanghai"
CLEANUP_CRON = _var("HTD_CLEANUP_CRON", "0 3 * * *", "cron of test_session_cleanup")
CLEANUP_TIMEZONE = _var("HTD_CLEANUP_TIMEZONE", DEFAULT_TIMEZONE, "its timezone")
TEST_SESSION_MAX_AGE_DAYS = _var(
    "HTD_TEST_SESSION_MAX_AGE_DAYS", "7", "test sessions older than this are cleaned"
)
VERIFY_CRON = _var("HTD_VERIFY_CRON", "0 4 * * *", "cron of verify_backups_schedule")
VERIFY_TIMEZONE = _var("HTD_VERIFY_TIMEZONE", DEFAULT_TIMEZONE, "its timezone")
RETENTION_CRON = _var("HTD_RETENTION_CRON", "30 4 * * 0", "cron of retention_schedule")
RETENTION_TIMEZONE = _var("HTD_RETENTION_TIMEZONE", DEFAULT_TIMEZONE, "its timezone")
PROTECTIVE_CRON = _var("HTD_PROTECTIVE_CRON", "0 1 * * *", "cron of protective_backup_schedule")
PROTECTIVE_TIMEZONE = _var("HTD_PROTECTIVE_TIMEZONE", DEFAULT_TIMEZONE, "its timezone")
PROTECTIVE_TYPE = _var("HTD_PROTECTIVE_TYPE", "inst", "registry type of protective versions")
PROTECTIVE_MAX_SESSIONS = _var(
    "HTD_PROTECTIVE_MAX_SESSIONS", "100", "sessions per protective_backup_job run"
)
DATA_TABLE_CRON = _var("HTD_DATA_TABLE_CRON", "0 2 * * *", "cron of data_table_backup_schedule")
DATA_TABLE_TIMEZONE = _var("HTD_DATA_TABLE_TIMEZONE", DEFAULT_TIMEZONE, "its timezone")
DATASET_TYPE = _var("HTD_DATASET_TYPE", "dataset", "registry type of the data-table backups")

# the names as they were exported before the contract held every variable
DATABASE_URL_ENV = DATABASE_URL.name
RELATIONS_FILE_ENV = RELATIONS_FILE.name
SNAPSHOT_URI_ENV = SNAPSHOT_URI.name
HOME_ENV = HOME.name


def htd_home() -> Path:
    """Folder of the embedded defaults (demo SQLite database, local snapshots): `.htd/`."""
    return Path(HOME.text() or Path.cwd() / ".htd").resolve()


def default_database_url() -> str:
    return f"sqlite:///{htd_home() / 'demo.sqlite'}"


def default_snapshot_uri() -> str:
    return str(htd_home() / "snapshots")


def database_url() -> str:
    return DATABASE_URL.text() or default_database_url()


def relations_file() -> str:
    return RELATIONS_FILE.text() or str(DEMO_RELATIONS_FILE)


def snapshot_uri() -> str:
    return SNAPSHOT_URI.text() or default_snapshot_uri()


def _seconds(variable: Variable) -> float:
    text = variable.value()
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{variable.name}={text!r} is not a number of seconds") from None
    if value < 0:
        raise ValueError(f"{variable.name}={text!r} must not be negative")
    return value


def connect_timeout_s() -> float:
    return _seconds(CONNECT_TIMEOUT_S)


def lock_timeout_s() -> float:
    return _seconds(LOCK_TIMEOUT_S)


def statement_timeout_s() -> float:
    return _seconds(STATEMENT_TIMEOUT_S)


def fast_path_enabled() -> bool:
    return FAST_PATH.value().lower() not in ("0", "false", "no")


def change_column() -> str | None:
    """The change-tracking column (e.g. updated_at); None: row digests everywhere."""
    return CHANGE_COLUMN.text()


def marker_batch_size() -> int:
    return int(MARKER_BATCH_SIZE.value())


def marker_max_batches() -> int:
    return int(MARKER_MAX_BATCHES.value())


def marker_retry_minutes() -> float:
    return float(MARKER_RETRY_MINUTES.value())


def marker_max_attempts() -> int:
    return int(MARKER_MAX_ATTEMPTS.value())


def claim_stale_seconds() -> int:
    return int(CLAIM_STALE_SECONDS.value())


def alert_webhook_url() -> str | None:
    return ALERT_WEBHOOK_URL.text()


def ui_url() -> str:
    """Base URL of the Dagster UI (read at evaluation time)."""
    return UI_URL.value().rstrip("/")


def alert_marker_delay_minutes() -> float:
    return float(ALERT_MARKER_DELAY_MINUTES.value())


def test_session_max_age_days() -> float:
    return float(TEST_SESSION_MAX_AGE_DAYS.value())


def protective_type() -> str:
    return PROTECTIVE_TYPE.value()


def protective_max_sessions() -> int:
    return int(PROTECTIVE_MAX_SESSIONS.value())


def dataset_type() -> str:
    return DATASET_TYPE.value()


def schedules_file() -> Path | None:
    """HTD_SCHEDULES_FILE when set."""
    text = SCHEDULES_FILE.text()
    return Path(text) if text else None
