"""Alerts: the webhook sink, the run failure sensor and the overdue sensor, against real
databases and a local HTTP server that receives the webhook's JSON."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import socket
import threading

import pytest
from dagster import (
    DagsterInstance,
    DefaultScheduleStatus,
    Definitions,
    ScheduleDefinition,
    build_run_status_sensor_context,
    build_sensor_context,
    instance_for_test,
    job,
    op,
)

from htd_pipelines import alerts
from htd_pipelines.alerts import Alert
from htd_pipelines.api import list_backups
from htd_pipelines.assets.data_tables import data_tables
from htd_pipelines.cli.launch import failure_message
from htd_pipelines.demo.schema import process_session
from htd_pipelines.jobs.run_config import restore_run_config
from htd_pipelines.resources import AppDatabase, RelationRegistry
from htd_pipelines.resources import alerts as alert_delivery
from htd_pipelines.resources.alerts import ATTEMPTS, AlertSink, send_alert
from htd_pipelines.sensors.alerts import (
    OVERDUE_SENSOR,
    RUN_FAILURE_SENSOR,
    build_run_failure_alert_sensor,
    cron_interval,
    htd_overdue_alerts,
)
from htd_pipelines.store import catalog

# ---------------------------------------------------------------------------------------------
# a webhook receiver on 127.0.0.1 (random port), and a port where nothing listens
# ---------------------------------------------------------------------------------------------


class Receiver:
    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[dict] = []
        self.requests = 0
        self.fail_first = fail_first
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests += 1
                if receiver.requests <= receiver.fail_first:
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:  # quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/secret-token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def webhook():
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def dead_url() -> str:
    """A URL on a port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


@pytest.fixture(autouse=True)
def _fast_and_default_ui(monkeypatch) -> None:
    monkeypatch.setattr(alert_delivery, "BACKOFF_SECONDS", 0.01)
    monkeypatch.delenv(alerts.UI_URL_ENV, raising=False)
    monkeypatch.delenv(alerts.WEBHOOK_URL_ENV, raising=False)
    monkeypatch.delenv(alerts.MARKER_DELAY_ENV, raising=False)


class Log:
    """Stands in for a Dagster context log."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def warning(self, msg: str) -> None:
        self.lines.append(("warning", msg))

    def error(self, msg: str) -> None:
        self.lines.append(("error", msg))

    def info(self, msg: str) -> None:
        self.lines.append(("info", msg))


# ---------------------------------------------------------------------------------------------
# the sink
# ---------------------------------------------------------------------------------------------


def test_an_alert_is_logged_and_posted_as_json(webhook) -> None:
    log = Log()
    alert = Alert(kind="run_failure", title="backup_job failed", type="inst", relation_id="7")
    assert send_alert(alert, webhook.url, log)
    assert webhook.received == [alert.payload()]
    body = webhook.received[0]
    assert {k: body[k] for k in ("kind", "title", "type", "relation_id")} == {
        "kind": "run_failure",
        "title": "backup_job failed",
        "type": "inst",
        "relation_id": "7",
    }
    assert body["at"] and "backup_job failed" in body["text"]
    assert log.lines == [("warning", f"ALERT {alert.line()}")]
    # without a webhook: only the log
    assert send_alert(alert, None, log) and len(webhook.received) == 1


def test_a_flaky_webhook_is_retried_a_bounded_number_of_times() -> None:
    flaky = Receiver(fail_first=2)
    try:
        assert send_alert(Alert(kind="k", title="t"), flaky.url, Log())
        assert (flaky.requests, len(flaky.received)) == (3, 1)
    finally:
        flaky.close()
    down = Receiver(fail_first=100)
    try:
        log = Log()
        assert not send_alert(Alert(kind="k", title="t"), down.url, log)
        assert down.requests == ATTEMPTS
        assert "HTTP 503" in log.lines[-1][1]
    finally:
        down.close()


def test_a_dead_webhook_is_logged_never_raised(dead_url) -> None:
    log = Log()
    assert not send_alert(Alert(kind="k", title="disk on fire"), dead_url, log)
    level, message = log.lines[-1]
    assert level == "error" and "not delivered" in message and "disk on fire" in message
    assert f"after {ATTEMPTS} attempt(s)" in message
    assert not send_alert(Alert(kind="k", title="t"), "not a url", Log())
    # the webhook's path (a token, often) never appears in the log
    log = Log()
    send_alert(Alert(kind="k", title="t"), dead_url + "/secret-token", log)
    assert "secret-token" not in log.lines[-1][1]


def test_cron_interval_is_the_largest_gap() -> None:
    now = dt.datetime(2026, 3, 11, 12, 0, tzinfo=dt.UTC)  # a Wednesday
    assert cron_interval("0 3 * * *", "Asia/Shanghai", now) == dt.timedelta(days=1)
    assert cron_interval("*/5 * * * *", None, now) == dt.timedelta(minutes=5)
    assert cron_interval("0 3 * * 1-5", "UTC", now) == dt.timedelta(days=3)
    assert cron_interval(["0 3 * * *", "0 15 * * *"], "UTC", now) == dt.timedelta(hours=12)


# ---------------------------------------------------------------------------------------------
# run failures
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def env(seeded_env, monkeypatch, tmp_path):
    env = seeded_env(4, seed=3, test_fraction=0)
    with DagsterInstance.ephemeral() as instance:  # disposed: its temporary folder too
        env.instance = instance
        yield env


def failure_sensor(env):
    return build_run_failure_alert_sensor(env.defs().resolve_all_job_defs())


def on_failure(env, result, sink: AlertSink) -> None:
    assert not result.success
    context = build_run_status_sensor_context(
        sensor_name=RUN_FAILURE_SENSOR,
        dagster_instance=env.instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={"alerts": sink},
    )
    failure_sensor(env)(context)


def test_a_failed_backup_run_sends_one_alert(env, webhook) -> None:
    result = env.run_backup(["987654"], instance=env.instance)  # no such session
    on_failure(env, result, AlertSink(webhook_url=webhook.url))
    assert len(webhook.received) == 1
    alert = webhook.received[0]
    run_id = result.dagster_run.run_id
    assert alert["kind"] == "run_failure" and alert["title"] == "backup_job failed"
    assert alert["run_id"] == run_id
    assert alert["run_url"] == f"http://127.0.0.1:3000/runs/{run_id}"
    assert (alert["type"], alert["relation_id"], alert["backup_id"]) == ("inst", "987654", None)
    assert "987654" in alert["error"] and alert["error"].startswith("plan_backup:")
    assert alert["error"] == failure_message(result)


def test_the_run_link_follows_htd_ui_url(env, webhook, monkeypatch) -> None:
    monkeypatch.setenv(alerts.UI_URL_ENV, "https://dagster.example.org/")
    result = env.run_backup([str(env.ids[0]), "987654"], instance=env.instance)
    on_failure(env, result, AlertSink(webhook_url=webhook.url))
    alert = webhook.received[0]
    assert alert["run_url"] == f"https://dagster.example.org/runs/{result.dagster_run.run_id}"
    assert alert["relation_id"] == f"{env.ids[0]},987654"  # htd/relation_ids of a batch


def test_a_run_the_cli_executes_alerts_when_it_fails(env, webhook, monkeypatch, capsys) -> None:
    """The CLI runs jobs in its own process (not through the daemon, whose run-failure sensor
    does not see them): a failed one is alerted there, to the same webhook."""
    from htd_pipelines.cli.main import main

    monkeypatch.setenv(alerts.WEBHOOK_URL_ENV, webhook.url)
    monkeypatch.setenv("DAGSTER_HOME", str(env.snapshot_dir.parent / "dagster_home"))
    assert main(["backup", "--type", "inst", "987654", "--uid", "ops"]) == 1
    assert "987654" in capsys.readouterr().err
    (alert,) = webhook.received
    assert (alert["kind"], alert["title"]) == ("run_failure", "backup_job failed")
    assert (alert["type"], alert["relation_id"]) == ("inst", "987654")
    assert "987654" in alert["error"] and alert["run_id"]


def run_restore(env, backup_id: int, **tags):
    job_def = env.defs().resolve_job_def("restore_job")
    return job_def.execute_in_process(
        run_config=restore_run_config(backup_id, "ops"),
        instance=env.instance,
        tags=tags,
        raise_on_error=False,
    )


def test_restoring_an_already_restored_backup_is_restore_twice(env, webhook) -> None:
    assert env.run_backup([env.ids[1]], instance=env.instance).success
    backup_id = list_backups("inst", env.ids[1])[0].id
    assert run_restore(env, backup_id).success
    sink = AlertSink(webhook_url=webhook.url)
    again = run_restore(env, backup_id)  # launched by hand: no htd/ tags, the run config says
    on_failure(env, again, sink)
    tagged = run_restore(env, backup_id, **{"htd/type": "inst", "htd/relation_id": "x"})
    on_failure(env, tagged, sink)
    first, second = webhook.received
    assert first["kind"] == second["kind"] == "restore_twice"
    assert first["backup_id"] == second["backup_id"] == str(backup_id)
    assert "already restored" in first["error"] and first["run_id"] == again.run_id
    assert (second["type"], second["relation_id"]) == ("inst", "x")


def test_a_restore_refused_for_another_reason_is_a_plain_failure(env, webhook) -> None:
    on_failure(env, run_restore(env, 424242), AlertSink(webhook_url=webhook.url))
    (alert,) = webhook.received
    assert alert["kind"] == "run_failure" and alert["backup_id"] == "424242"
    assert "424242" in alert["error"]


@op
def explode() -> None:
    raise RuntimeError("not watched")


@job
def unwatched_job() -> None:
    explode()


def test_the_sensor_watches_every_job_of_the_code_location(env, webhook, dead_url, capfd) -> None:
    """Evaluated as the daemon does (cursor, run-status events), not just called."""
    defs = env.defs()
    # every job but Dagster's implicit asset job (__ASSET_JOB)
    jobs = {j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")}
    sensor_def = defs.resolve_sensor_def(RUN_FAILURE_SENSOR)
    assert sorted(j.name for j in sensor_def._monitored_jobs) == sorted(jobs)
    assert "data_table_backup_job" in sensor_def.description
    sink = AlertSink(webhook_url=webhook.url)
    sensor = failure_sensor(env)

    def tick(cursor, sink=sink):
        ctx = build_sensor_context(instance=env.instance, cursor=cursor, resources={"alerts": sink})
        sensor.evaluate_tick(ctx)
        return ctx.cursor

    cursor = tick(None)  # the first tick only sets the cursor
    unwatched_job.execute_in_process(instance=env.instance, raise_on_error=False)
    failed = env.run_backup(["987654"], instance=env.instance)
    # a job that was left out before: a data table that is gone
    env.instance.add_dynamic_partitions(data_tables.name, ["no-such-table"])
    table = defs.resolve_job_def("data_table_backup_job").execute_in_process(
        instance=env.instance, partition_key="no-such-table", raise_on_error=False
    )
    assert not table.success
    cursor = tick(cursor)
    assert [a["run_id"] for a in webhook.received] == [failed.run_id, table.run_id]
    alert = webhook.received[1]
    assert alert["title"] == "data_table_backup_job failed"
    assert (alert["type"], alert["relation_id"]) == ("dataset", "no-such-table")  # run tags
    cursor = tick(cursor)
    assert len(webhook.received) == 2  # once per failed run

    # the webhook is down: logged, the tick still succeeds and moves on
    again = env.run_backup(["987655"], instance=env.instance)
    capfd.readouterr()
    cursor = tick(cursor, AlertSink(webhook_url=dead_url))
    logged = capfd.readouterr().err  # the sensor's context log (the tick's log in the UI)
    assert again.run_id in logged and "not delivered" in logged
    assert len(webhook.received) == 2


# ---------------------------------------------------------------------------------------------
# overdue: markers, verifications, schedules
# ---------------------------------------------------------------------------------------------


@op
def fine() -> None:
    pass


@job
def nightly_job() -> None:
    fine()


def overdue_tick(env, sink: AlertSink, cursor=None, repository_def=None):
    ctx = build_sensor_context(
        instance=env.instance,
        cursor=cursor,
        repository_def=repository_def,
        resources={
            "database": AppDatabase(url=env.url),
            "relations": RelationRegistry(path=env.relations_file),
            "alerts": sink,
        },
    )
    return htd_overdue_alerts(ctx)


def mark(env, ids, at) -> None:
    with env.engine.begin() as conn:
        conn.execute(
            process_session.update()
            .where(process_session.c.id.in_(ids))
            .values(delete_marked_at=at, delete_marked_by="app")
        )


def test_an_overdue_marker_is_alerted_once(env, webhook, monkeypatch) -> None:
    sink = AlertSink(webhook_url=webhook.url)
    now = dt.datetime.now(dt.UTC)
    first = overdue_tick(env, sink)
    assert "nothing overdue" in first.skip_reason.skip_message and webhook.received == []

    old, fresh = env.ids[0], env.ids[1]
    mark(env, [old], now - dt.timedelta(minutes=90))
    mark(env, [fresh], now - dt.timedelta(minutes=10))
    second = overdue_tick(env, sink, first.cursor)
    assert [(a["kind"], a["type"], a["relation_id"]) for a in webhook.received] == [
        ("marker_overdue", "inst", str(old))
    ]
    assert "not backed up" in webhook.received[0]["title"]
    assert "1 alert(s): marker_overdue" in second.skip_reason.skip_message

    third = overdue_tick(env, sink, second.cursor)  # the cursor remembers it
    assert len(webhook.received) == 1 and "nothing overdue" in third.skip_reason.skip_message

    monkeypatch.setenv(alerts.MARKER_DELAY_ENV, "5")  # now the fresh marker is overdue too
    fourth = overdue_tick(env, sink, third.cursor)
    assert [a["relation_id"] for a in webhook.received] == [str(old), str(fresh)]

    # backed up and deleted: the marker leaves the cursor; set again later, it is a new marker
    assert env.run_backup([old], instance=env.instance).success
    fifth = overdue_tick(env, sink, fourth.cursor)
    assert json.loads(fifth.cursor)["markers"] == [
        k for k in json.loads(fourth.cursor)["markers"] if f":{fresh}:" in k
    ]
    mark(env, [fresh], now - dt.timedelta(minutes=30))
    overdue_tick(env, sink, fifth.cursor)
    assert [a["relation_id"] for a in webhook.received] == [str(old), str(fresh), str(fresh)]


def log_verify(env, status: str, backup_id: int, message: str | None = None, action="verify"):
    catalog.log_operation_now(
        env.engine,
        action=action,
        status=status,
        type_name="inst",
        relation_ids=[env.ids[2]],
        backup_ids=[backup_id],
        run_id="4b5f8c1e-verify-run",
        message=message,
    )


def test_a_failed_verification_is_alerted_once(env, webhook) -> None:
    sink = AlertSink(webhook_url=webhook.url)
    log_verify(env, "ok", 1)
    log_verify(env, "failed", 2, "snapshot file session_task.parquet: sha256 mismatch")
    log_verify(env, "failed", 3, "unrelated", action="backup")
    first = overdue_tick(env, sink)
    (alert,) = webhook.received
    assert alert["kind"] == "verify_failed" and alert["backup_id"] == "2"
    assert (alert["type"], alert["relation_id"]) == ("inst", str(env.ids[2]))
    assert "sha256 mismatch" in alert["error"]
    assert alert["run_url"] == "http://127.0.0.1:3000/runs/4b5f8c1e-verify-run"

    overdue_tick(env, sink, first.cursor)
    assert len(webhook.received) == 1
    log_verify(env, "failed", 4, "manifest missing")
    overdue_tick(env, sink, first.cursor)
    assert [a["backup_id"] for a in webhook.received] == ["2", "4"]


def test_a_dead_webhook_does_not_stop_the_overdue_sensor(env, dead_url, capfd) -> None:
    log_verify(env, "failed", 5, "row count 3, manifest says 4")
    log_verify(env, "failed", 6, "file missing")
    capfd.readouterr()
    result = overdue_tick(env, AlertSink(webhook_url=dead_url))
    logged = capfd.readouterr().err
    assert "2 not delivered to the webhook (logged)" in result.skip_reason.skip_message
    assert "row count 3" in logged and "file missing" in logged and "not delivered" in logged
    assert json.loads(result.cursor)["oplog_id"] > 0  # alerted (in the log), not repeated


def test_an_overdue_schedule_is_alerted_once(env, webhook) -> None:
    with instance_for_test() as instance:  # with schedule storage (the states are read)
        env.instance = instance
        check_overdue_schedule(env, webhook)


def check_overdue_schedule(env, webhook) -> None:
    repo = Definitions(
        jobs=[nightly_job],
        schedules=[
            ScheduleDefinition(
                name="nightly",
                job=nightly_job,
                cron_schedule="*/5 * * * *",
                default_status=DefaultScheduleStatus.RUNNING,
            ),
            ScheduleDefinition(name="off", job=nightly_job, cron_schedule="*/5 * * * *"),
        ],
    ).get_repository_def()
    sink = AlertSink(webhook_url=webhook.url)
    first = overdue_tick(env, sink, repository_def=repo)  # the clock starts
    assert webhook.received == []

    state = json.loads(first.cursor)
    an_hour_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    state["schedules"]["nightly"]["since"] = state["schedules"]["off"]["since"] = an_hour_ago
    second = overdue_tick(env, sink, json.dumps(state), repository_def=repo)
    (alert,) = webhook.received  # the stopped schedule owes nothing
    assert alert["kind"] == "schedule_overdue" and "nightly_job is overdue" in alert["title"]
    assert "every 0:05:00" in alert["error"] and "no successful run since" in alert["error"]

    third = overdue_tick(env, sink, second.cursor, repository_def=repo)
    assert len(webhook.received) == 1
    assert nightly_job.execute_in_process(instance=env.instance).success
    overdue_tick(env, sink, third.cursor, repository_def=repo)
    assert len(webhook.received) == 1  # it ran: not overdue


def test_both_sensors_are_in_the_code_location() -> None:
    from htd_pipelines.definitions import build_definitions

    defs = build_definitions()
    repo = defs.get_repository_def()
    overdue = repo.get_sensor_def(OVERDUE_SENSOR)
    assert overdue.minimum_interval_seconds == 300
    assert overdue.default_status.value == "STOPPED"
    assert {"database", "relations", "alerts"} <= set(overdue.required_resource_keys)
    assert "alerts" in repo.get_sensor_def(RUN_FAILURE_SENSOR).required_resource_keys
    with pytest.raises(ValueError, match="no jobs to monitor"):  # [] would watch every job
        build_run_failure_alert_sensor([])


def test_the_webhook_url_is_read_through_envvar(monkeypatch) -> None:
    from htd_pipelines.definitions import build_resources

    assert build_resources()["alerts"].webhook_url is None
    monkeypatch.setenv(alerts.WEBHOOK_URL_ENV, "http://127.0.0.1:9/hook")
    sink = build_resources()["alerts"]
    assert sink.webhook_url == alerts.WEBHOOK_URL_ENV  # an EnvVar: the URL is not in config
    assert sink.process_config_and_initialize().webhook_url == "http://127.0.0.1:9/hook"


def test_a_check_that_cannot_run_does_not_silence_the_others(env, webhook, tmp_path) -> None:
    bad = tmp_path / "relations.yaml"
    bad.write_text(
        "types:\n  inst:\n    root: {table: no_such_table, key: id}\n    tables: []\n"
        "    lifecycle: {delete_marker: delete_marked_at}\n"
    )
    log_verify(env, "failed", 7, "file missing")
    env.relations_file = str(bad)
    result = overdue_tick(env, AlertSink(webhook_url=webhook.url))
    assert [a["backup_id"] for a in webhook.received] == ["7"]
    message = result.skip_reason.skip_message
    assert "could not check deletion markers" in message and "no_such_table" in message
    assert json.loads(result.cursor)["oplog_id"] > 0
