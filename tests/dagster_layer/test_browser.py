"""The UI, in a real browser: launch backup_job from the launchpad of a real dagster-webserver,
see it succeed, and find the backup's metadata on the backup_catalog asset page.

Headless Debian chromium (/usr/bin/chromium, or HTD_TEST_CHROMIUM) driven by Playwright; no
browser download. Without chromium the test is skipped, except under CI where it must run.
Screenshot: artifacts/browser/backup_catalog.png.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from htd_pipelines import settings
from htd_pipelines.demo.schema import create_demo_schema
from htd_pipelines.demo.seed import seed_demo
from htd_pipelines.dialects.engine import dispose_engines, get_engine
from tests.support.daemon import REPO_ROOT, WORKSPACE, Service, free_port, running, tool, wait_until
from tests.support.dbs import new_database, running_under_ci

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("HTD_TEST_CHROMIUM") or "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = REPO_ROOT / "artifacts" / "browser" / "backup_catalog.png"
LOCATION = "htd_pipelines"

# A plain local instance: SQLite storage under DAGSTER_HOME; runs launched by the webserver
# itself (no daemon needed); no telemetry, no first-visit dialog over the launchpad.
LOCAL_INSTANCE = """\
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
telemetry:
  enabled: false
nux:
  enabled: false
"""


def _require_browser() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} not found (apt-get install chromium, or set HTD_TEST_CHROMIUM)"
    if running_under_ci():
        pytest.fail(f"chromium required under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class Webserver:
    url: str
    service: Service
    session_id: int

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            doc = json.load(response)
        assert not doc.get("errors"), doc["errors"]
        return doc["data"]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


LOCATION_STATUS = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


@pytest.fixture
def webserver(tmp_path: Path) -> Iterator[Webserver]:
    _require_browser()
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(LOCAL_INSTANCE)
    app_url = new_database("sqlite", tmp_path)
    engine = get_engine(app_url)
    create_demo_schema(engine)
    session_id = seed_demo(engine, 3, seed=21, test_fraction=0)[1]
    dispose_engines()
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        settings.DATABASE_URL_ENV: app_url,
        settings.SNAPSHOT_URI_ENV: str(tmp_path / "snapshots"),
        settings.RELATIONS_FILE_ENV: str(settings.DEMO_RELATIONS_FILE),
        settings.HOME_ENV: str(tmp_path / "htd_home"),
        "PYTHONUNBUFFERED": "1",
    }
    argv = [tool("dagster-webserver"), "-w", str(WORKSPACE), "-h", "127.0.0.1", "-p", str(port)]
    url = f"http://127.0.0.1:{port}"
    with running("dagster-webserver", argv, env, tmp_path / "webserver.log") as service:
        server = Webserver(url, service, session_id)
        wait_until(lambda: _answers(url), timeout=60, what="the webserver", service=service)

        def location_loaded() -> dict | None:
            entries = server.graphql(LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
            entry = next((e for e in entries if e["name"] == LOCATION), None)
            return entry if entry and entry["loadStatus"] == "LOADED" else None

        entry = wait_until(location_loaded, timeout=60, what="the code location", service=service)
        assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry
        yield server


RUN_STATUS = "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"
RUN_CONFIG = """\
ops:
  plan_backup:
    config:
      type: inst
      relation_ids: ["{id}"]
      uid: browser
"""


def test_launch_backup_from_the_launchpad_and_see_the_catalog(
    webserver: Webserver, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright  # a test dependency

    relation_id = str(webserver.session_id)
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh user-data-dir
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1600},  # the asset page scrolls inside
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)

            # the launchpad: replace the scaffolded config with one session's run config
            page.goto(f"{webserver.url}/locations/{LOCATION}/jobs/backup_job/playground")
            editor = page.locator(".CodeMirror").first
            editor.wait_for()
            editor.click()
            page.keyboard.press("Control+A")
            page.keyboard.press("Delete")
            page.keyboard.insert_text(RUN_CONFIG.format(id=relation_id))
            launch = page.get_by_role("button", name="Launch Run")
            expect(launch).to_be_enabled()
            launch.click()

            # the run page: wait for the run's last event
            page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
            run_id = page.url.rstrip("/").rsplit("/", 1)[-1]
            end = page.get_by_text(re.compile(r"^RUN_(SUCCESS|FAILURE)$"))
            end.first.wait_for(timeout=60_000)
            status = webserver.graphql(RUN_STATUS, {"id": run_id})["runOrError"]
            assert status == {"__typename": "Run", "status": "SUCCESS"}, (
                status,
                webserver.service.log_tail(),
            )
            expect(page.get_by_text("Success", exact=True).first).to_be_visible()

            # the asset page shows the latest materialization's metadata
            page.goto(f"{webserver.url}/assets/backup_catalog")
            metadata = page.locator("tr", has=page.get_by_text("rows_per_table", exact=True))
            expect(metadata.first).to_be_visible()
            expect(metadata.first).to_contain_text("process_session")
            relation = page.locator("tr", has=page.get_by_text("relation_id", exact=True))
            expect(relation.first).to_contain_text(relation_id)
            uid = page.locator("tr", has=page.get_by_text("uid", exact=True))
            expect(uid.first).to_contain_text("browser")

            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
