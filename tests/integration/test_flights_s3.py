"""The Postgres → S3 (moto) → Postgres example through Airflow: loads, transforms, skips, params, Slack."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from dagforge.devservices.s3 import S3Server
from dagforge.devservices.webhook import WebhookReceiver, running_webhook
from tests.conftest import without_dbt
from tests.integration.conftest import REPO_ROOT, SEED_DIR, Sandbox, table_fingerprint

pytestmark = pytest.mark.integration

DAG_ID = "flights_to_dwh"
TABLES = ("aircrafts", "airports", "flights", "bookings", "tickets")


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with running_webhook() as receiver:
        yield receiver


@pytest.fixture
def flights(flights_with_dbt: Sandbox) -> Sandbox:
    """The example without its dbt project (a test of its own below)."""
    path = flights_with_dbt.pipelines_dir / "flights_to_dwh.yml"
    path.write_text(without_dbt(path.read_text()))
    return flights_with_dbt


@pytest.fixture
def flights_with_dbt(sandbox: Sandbox, s3_server: S3Server, webhook: WebhookReceiver, monkeypatch) -> Sandbox:
    monkeypatch.setenv("AIRFLOW_CONN_FLIGHTS_DB", sandbox.source_server.airflow_conn_uri(sandbox.database))
    monkeypatch.setenv("AIRFLOW_CONN_FLIGHTS_DWH", sandbox.target_server.airflow_conn_uri(sandbox.database))
    monkeypatch.setenv("AIRFLOW_CONN_MINIO", s3_server.airflow_conn_uri())
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", webhook.airflow_conn_uri())
    shutil.copy(REPO_ROOT / "pipelines" / "defaults.yml", sandbox.pipelines_dir)
    shutil.copytree(REPO_ROOT / "pipelines" / "transforms", sandbox.pipelines_dir / "transforms")
    shutil.copytree(REPO_ROOT / "pipelines" / "dbt" / "flights", sandbox.pipelines_dir / "dbt" / "flights")
    text = (REPO_ROOT / "pipelines" / "flights_to_dwh.yml").read_text()
    # every test gets its own bucket, so objects never mix between tests
    sandbox.write_pipeline(
        "flights_to_dwh.yml", text.replace("flights-lake", f"lake-{sandbox.database.replace('_', '-')}")
    )
    sandbox.connect("source").execute((SEED_DIR / "flights.sql").read_text())
    return sandbox


def assert_staging_matches_source(box: Sandbox) -> None:
    source, target = box.connect("source"), box.connect("target")
    for table in TABLES:
        assert table_fingerprint(target, f"staging.{table}") == table_fingerprint(source, f"bookings.{table}"), table


def revenue_from_source(box: Sandbox) -> list[tuple]:
    return (
        box.connect("source")
        .execute(
            "SELECT (b.book_date AT TIME ZONE 'UTC')::date, f.departure_airport, count(*), sum(t.amount) "
            "FROM bookings.tickets t JOIN bookings.bookings b USING (book_ref) "
            "JOIN bookings.flights f USING (flight_id) "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        )
        .fetchall()
    )


def bucket_keys(server: S3Server, box: Sandbox) -> list[str]:
    client = server.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=f"lake-{box.database.replace('_', '-')}")
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_full_then_incremental_equal_the_source_and_transforms_build(flights: Sandbox, s3_server: S3Server) -> None:
    first = flights.run(DAG_ID)
    assert first.succeeded, first.task_states
    assert_staging_matches_source(flights)
    keys = bucket_keys(s3_server, flights)
    safe_run = first.run_id.replace(":", "_").replace("+", "_")
    for table in TABLES:
        assert f"raw/flights_to_dwh/{table}/{safe_run}/manifest.json" in keys
        parts = [k for k in keys if k.startswith(f"raw/flights_to_dwh/{table}/{safe_run}/") and "/part-" in k]
        assert [p.rsplit("/", 1)[1] for p in parts] == ["part-00000.parquet"]  # one attempt's parts only

    flights.connect("source").execute((SEED_DIR / "changes" / "flights.sql").read_text())
    second = flights.run(DAG_ID)

    assert second.succeeded, second.task_states
    assert_staging_matches_source(flights)
    target = flights.connect("target")
    assert target.execute("SELECT count(*) FROM dwh.dim_aircrafts").fetchone()[0] == 9
    assert target.execute("SELECT * FROM dwh.fct_daily_revenue ORDER BY 1, 2").fetchall() == revenue_from_source(
        flights
    )
    loaded = dict(target.execute("SELECT table_name, rows_loaded FROM staging._dagforge_state").fetchall())
    assert loaded["bookings"] == 101  # 100 new + the one at the watermark (inclusive bound)
    assert loaded["tickets"] == 151


def test_nothing_new_skips_loads_and_their_transform(flights: Sandbox) -> None:
    assert flights.run(DAG_ID).succeeded
    result = flights.run(DAG_ID)

    assert result.succeeded
    states = result.task_states
    for table in ("flights", "bookings", "tickets"):
        assert states[f"{table}.check_{table}"] == "success"
        assert states[f"{table}.extract_{table}"] == "skipped"
        assert states[f"{table}.publish_{table}"] == "skipped"
    assert states["transform_fct_daily_revenue"] == "skipped"
    assert states["transform_dim_aircrafts"] == "success"  # aircrafts is a full table: always reloaded


def test_full_refresh_param_reloads_a_table_in_full(flights: Sandbox) -> None:
    assert flights.run(DAG_ID).succeeded
    source = flights.connect("source")
    source.execute(
        "DELETE FROM bookings.tickets WHERE ticket_no = lpad('5', 13, '0')"
    )  # deletes never flow incrementally

    plain = flights.run(DAG_ID)
    assert plain.task_states["tickets.extract_tickets"] == "skipped"
    forced = flights.run(DAG_ID, conf={"full_refresh_tables": ["tickets"]})

    assert forced.succeeded, forced.task_states
    assert forced.task_states["tickets.publish_tickets"] == "success"
    assert forced.task_states["bookings.extract_bookings"] == "skipped"
    assert table_fingerprint(flights.connect("target"), "staging.tickets") == table_fingerprint(
        source, "bookings.tickets"
    )


def test_slack_gets_failures_with_task_run_log_and_error(flights: Sandbox, webhook: WebhookReceiver) -> None:
    path = flights.pipelines_dir / "flights_to_dwh.yml"
    path.write_text(path.read_text().replace("on: [failure]", "on: [failure, skip, success]") + "retries: 0\n")
    flights.connect("source").execute("ALTER TABLE bookings.airports RENAME TO airports_gone")

    result = flights.run(DAG_ID)

    assert result.state == "failed"
    failures = [t for t in webhook.texts() if ": failure" in t]
    assert len(failures) == 1, webhook.texts()
    text = failures[0]
    assert "dagforge pipeline *flights_to_dwh*: failure" in text
    assert "task `airports.extract_airports`" in text  # full tables are first read by extract
    assert f"run `{result.run_id}`" in text
    assert "log: http" in text
    assert "error: source table bookings.airports does not exist" in text


def test_slack_gets_skips_and_the_run_success(flights: Sandbox, webhook: WebhookReceiver) -> None:
    path = flights.pipelines_dir / "flights_to_dwh.yml"
    path.write_text(path.read_text().replace("on: [failure]", "on: [skip, success]"))
    assert flights.run(DAG_ID).succeeded
    webhook.received.clear()

    result = flights.run(DAG_ID)

    assert result.succeeded
    texts = webhook.texts()
    assert any("task `bookings.extract_bookings`" in t and ": skip" in t for t in texts), texts
    # a transform skipped because all its inputs were skipped never runs, so it sends no callback
    successes = [t for t in texts if ": success" in t]
    assert len(successes) == 1 and f"run `{result.run_id}`" in successes[0]


def test_the_examples_dbt_models_build_on_the_warehouse_and_their_tests_pass(flights_with_dbt: Sandbox) -> None:
    result = flights_with_dbt.run(DAG_ID)

    assert result.succeeded, result.task_states
    dbt = {task: state for task, state in result.task_states.items() if task.startswith("dbt.")}
    assert len(dbt) >= 10 and set(dbt.values()) == {"success"}, dbt
    target, source = flights_with_dbt.connect("target"), flights_with_dbt.connect("source")
    daily = target.execute("SELECT sum(bookings), sum(booked_amount) FROM analytics.fct_bookings_daily").fetchone()
    assert daily == source.execute("SELECT count(*), sum(total_amount) FROM bookings.bookings").fetchone()
    routes = target.execute("SELECT count(*) FROM analytics.dim_routes").fetchone()[0]
    pairs = "SELECT count(DISTINCT (departure_airport, arrival_airport)) FROM bookings.flights"
    assert routes == source.execute(pairs).fetchone()[0]
