"""Helpers for end-to-end tests that run Dagster's own processes (dagster-daemon,
dagster-webserver) as subprocesses against a real instance.

Every process is started in a session of its own and stopped by :func:`stop_service`: SIGTERM to
its process group, then SIGKILL to whatever is left of the processes it started (found by
walking /proc from its pid), so that no code server or run worker outlives the test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from dagster import DagsterInstance
from sqlalchemy.engine import make_url

from tests.support.dbs import require_server

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = REPO_ROOT / "workspace.yaml"
DEPLOY_INSTANCE = REPO_ROOT / "deploy" / "dagster.yaml"

T = TypeVar("T")


def tool(name: str) -> str:
    """A console script of the running virtualenv (dagster, dagster-daemon, ...)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} is not installed next to {sys.executable} nor on PATH")
    return found


def require_postgres() -> None:
    """Skip without a PostgreSQL server; under CI (CI=true/1) fail instead (as conftest does)."""
    require_server("postgresql")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# instances
# ---------------------------------------------------------------------------------------------


def pg_storage_env(url: str) -> dict[str, str]:
    """The DAGSTER_PG_* variables deploy/dagster.yaml reads, for a PostgreSQL URL."""
    u = make_url(url)
    return {
        "DAGSTER_PG_HOST": u.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(u.port or 5432),
        "DAGSTER_PG_USER": u.username or "postgres",
        "DAGSTER_PG_PASSWORD": u.password or "",
        "DAGSTER_PG_DB": u.database or "",
    }


def production_home(home: Path) -> Path:
    """A DAGSTER_HOME holding a copy of deploy/dagster.yaml (the production instance)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEPLOY_INSTANCE, home / "dagster.yaml")
    return home


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """os.environ with ``values`` set, restored afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def instance_of(env: dict[str, str]) -> Iterator[DagsterInstance]:
    """``DagsterInstance.get()`` for the DAGSTER_HOME (and storage variables) in ``env``."""
    with environ(env):
        instance = DagsterInstance.get()
    try:
        yield instance
    finally:
        instance.dispose()


# ---------------------------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    def log_tail(self, chars: int = 6000) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return text[-chars:]

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_service(
    name: str, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path = REPO_ROOT
) -> Service:
    log = open(log_path, "wb")  # closed by stop_service
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stop_service signals all of it
    )
    return Service(name, proc, log_path, log)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces and parentheses
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), children first found first."""
    if not Path("/proc").is_dir():
        return []
    tree, out, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop_service(service: Service, timeout: float = 20.0) -> None:
    """SIGTERM the service's process group, wait, then SIGKILL whatever it started."""
    proc = service.proc
    try:
        started = descendants(proc.pid)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                started += descendants(proc.pid)
                _kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # code servers and run workers that moved to sessions of their own
        for pid in dict.fromkeys(started):
            _kill(pid, signal.SIGKILL)
    finally:
        service._log.close()


@contextlib.contextmanager
def running(
    name: str, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path = REPO_ROOT
) -> Iterator[Service]:
    service = start_service(name, argv, env, log_path, cwd)
    try:
        yield service
    finally:
        stop_service(service)


def run_tool(argv: list[str], env: dict[str, str], timeout: float = 120.0) -> str:
    """Run a short CLI command to completion; its output, or AssertionError with the output."""
    done = subprocess.run(
        argv,
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited with {done.returncode}:\n{output}")
    return output


# ---------------------------------------------------------------------------------------------
# waiting
# ---------------------------------------------------------------------------------------------


def wait_until(
    probe: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.5,
    service: Service | None = None,
) -> T:
    """Poll ``probe`` until it returns something truthy; its value. On timeout (or when
    ``service`` died) AssertionError naming ``what``, the last value and the service's log."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if service is not None and not service.alive():
            raise AssertionError(
                f"{service.name} exited ({service.proc.returncode}) while waiting for {what}"
                f"\n--- {service.name} log ---\n{service.log_tail()}"
            )
        if time.monotonic() >= deadline:
            log = f"\n--- {service.name} log ---\n{service.log_tail()}" if service else ""
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}: {last!r}{log}"
            )
        time.sleep(interval)
