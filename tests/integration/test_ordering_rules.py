"""The ordering rules of docs/decisions/0008 on real servers, run order by run order, through the
same step functions the operators call: late publishes, concurrent publishes, retries after COMMIT,
lost staging, late rows inside lookback, an older state table."""

from __future__ import annotations

import psycopg
import pytest

from dagforge.contracts import Staged
from dagforge.errors import TerminalError
from dagforge.loadspec import TableLoad, TableRef
from dagforge.sources.postgres import PostgresSource
from dagforge.spec.model import LoadMode
from dagforge.transfer import postgres_load
from dagforge.transform import run_postgres_transform
from tests.conftest import run_concurrently
from tests.integration.conftest import Sandbox, table_fingerprint

pytestmark = pytest.mark.integration

ITEMS = """
CREATE SCHEMA src;
CREATE TABLE src.items (id int PRIMARY KEY, v text NOT NULL, updated_at timestamptz NOT NULL);
INSERT INTO src.items SELECT g, 'v1', timestamptz '2024-01-01 00:00+00' + g * interval '1 s'
FROM generate_series(1, 500) g;
"""
UPDATE_ALL = "UPDATE src.items SET v = 'v2', updated_at = updated_at + interval '1 day'"


def make_load(table: str, mode: LoadMode, **extra) -> TableLoad:
    return TableLoad(
        "p", TableRef("sales_src", "src", table), TableRef("sales_dwh", "dst", table), mode, ("id",), **extra
    )


INCREMENTAL = make_load("items", LoadMode.INCREMENTAL, cursor="updated_at", lookback="1h")
FULL = make_load("items", LoadMode.FULL, cursor="updated_at")


def check_and_stage(box: Sandbox, load: TableLoad, run_id: str) -> Staged:
    source, target = box.connect("source"), box.connect("target")
    window = postgres_load.decide_window(PostgresSource(source), target, load)
    assert window.new_rows, window
    staged, _ = postgres_load.stage(PostgresSource(source), target, load, window, load.staging_table(run_id))
    return staged


def publish(box: Sandbox, load: TableLoad, staged: Staged, run_id: str, restage=None):
    return postgres_load.publish(box.connect("target"), load, staged, run_id, restage)


def state(box: Sandbox, load: TableLoad) -> tuple:
    return (
        box.connect("target")
        .execute(
            "SELECT watermark::timestamptz, run_id FROM dst._dagforge_state WHERE table_name = %s",
            (load.destination.table,),
        )
        .fetchone()
    )


def source_max(box: Sandbox) -> object:
    return box.connect("source").execute("SELECT max(updated_at) FROM src.items").fetchone()[0]


def assert_equal_to_source(box: Sandbox) -> None:
    target = box.connect("target")
    assert table_fingerprint(target, "dst.items") == table_fingerprint(box.connect("source"), "src.items")
    leftovers = target.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE '\\_dagforge\\_stg\\_%'")
    assert leftovers.fetchone()[0] == 0


def test_a_late_incremental_publish_never_reverts_rows_or_the_watermark(sandbox: Sandbox) -> None:
    """Run 1's publish failed, run 2 loaded newer versions, then run 1's publish was retried."""
    sandbox.connect("source").execute(ITEMS)
    publish(sandbox, INCREMENTAL, check_and_stage(sandbox, INCREMENTAL, "r0"), "r0")
    sandbox.connect("source").execute("UPDATE src.items SET v = 'v1b', updated_at = updated_at + interval '1 h'")
    run1 = check_and_stage(sandbox, INCREMENTAL, "r1")
    sandbox.connect("source").execute(UPDATE_ALL)
    run2 = check_and_stage(sandbox, INCREMENTAL, "r2")
    publish(sandbox, INCREMENTAL, run2, "r2")

    late = publish(sandbox, INCREMENTAL, run1, "r1")

    assert late.applied and late.rows == 0  # it ran, and replaced no row with its older version
    assert_equal_to_source(sandbox)
    assert state(sandbox, INCREMENTAL)[0] == source_max(sandbox)  # the watermark did not go back


def test_a_late_full_publish_never_brings_an_older_snapshot_back(sandbox: Sandbox) -> None:
    """Yesterday's full publish retried after today's: today's table stays."""
    sandbox.connect("source").execute(ITEMS)
    yesterday = check_and_stage(sandbox, FULL, "yesterday")
    sandbox.connect("source").execute(UPDATE_ALL + "; DELETE FROM src.items WHERE id > 400")
    today = check_and_stage(sandbox, FULL, "today")
    publish(sandbox, FULL, today, "today")

    late = publish(sandbox, FULL, yesterday, "yesterday")

    assert not late.applied and "a newer snapshot" in late.reason and "run today" in late.reason
    assert_equal_to_source(sandbox)
    assert state(sandbox, FULL) == (source_max(sandbox), "today")
    outcomes = sandbox.connect("target").execute("SELECT run_id, outcome FROM dst._dagforge_runs ORDER BY 1")
    assert outcomes.fetchall() == [("today", "applied"), ("yesterday", "skipped: older snapshot")]


def test_an_incremental_publish_older_than_a_full_replace_is_not_applied(sandbox: Sandbox) -> None:
    """A forced full reload published first; a late incremental from before it would revert deletes."""
    sandbox.connect("source").execute(ITEMS)
    publish(sandbox, INCREMENTAL, check_and_stage(sandbox, INCREMENTAL, "r0"), "r0")
    sandbox.connect("source").execute(UPDATE_ALL)
    late = check_and_stage(sandbox, INCREMENTAL, "late")
    sandbox.connect("source").execute("DELETE FROM src.items WHERE id <= 100")
    source, target = sandbox.connect("source"), sandbox.connect("target")
    forced = postgres_load.decide_window(PostgresSource(source), target, INCREMENTAL, force_full=True)
    staged, _ = postgres_load.stage(
        PostgresSource(source), target, INCREMENTAL, forced, INCREMENTAL.staging_table("forced")
    )
    publish(sandbox, INCREMENTAL, staged, "forced")

    outcome = publish(sandbox, INCREMENTAL, late, "late")

    assert not outcome.applied
    assert_equal_to_source(sandbox)  # ids 1..100 stay deleted


def test_concurrent_full_publishes_wait_for_each_other_and_both_succeed(sandbox: Sandbox) -> None:
    """A backfill publishes several full reloads of one table at the same moment."""
    sandbox.connect("source").execute(ITEMS)
    staged = [check_and_stage(sandbox, FULL, f"b{i}") for i in range(4)]
    target_dsn = sandbox.target_server.dsn(sandbox.database)

    def publish_on_own_connection(i: int) -> None:
        with psycopg.connect(target_dsn, autocommit=True) as conn:
            postgres_load.publish(conn, FULL, staged[i], f"b{i}")

    errors = run_concurrently([lambda i=i: publish_on_own_connection(i) for i in range(4)])

    assert errors == []
    assert_equal_to_source(sandbox)
    runs = sandbox.connect("target").execute("SELECT count(*) FROM dst._dagforge_runs").fetchone()[0]
    assert runs == 4


def test_a_publish_retried_after_its_commit_is_a_no_op(sandbox: Sandbox) -> None:
    """The worker died after COMMIT, before Airflow recorded success; Airflow retries publish."""
    sandbox.connect("source").execute(ITEMS)
    staged = check_and_stage(sandbox, INCREMENTAL, "r1")
    first = publish(sandbox, INCREMENTAL, staged, "r1")
    sandbox.connect("source").execute(UPDATE_ALL)  # whatever changed since is the next run's

    again = publish(sandbox, INCREMENTAL, staged, "r1")

    assert again.rows == first.rows == 500 and again.reason == "published already by run r1 (applied)"
    assert sandbox.connect("target").execute("SELECT count(*) FROM dst.items WHERE v = 'v1'").fetchone()[0] == 500


@pytest.mark.parametrize("loss", ["DROP TABLE", "TRUNCATE"])
def test_lost_staging_is_staged_again_from_the_window(sandbox: Sandbox, loss: str) -> None:
    """A manual drop, or an UNLOGGED table emptied by a warehouse restart, before publish."""
    sandbox.connect("source").execute(ITEMS)
    staged = check_and_stage(sandbox, INCREMENTAL, "r1")
    sandbox.connect("target").execute(f"{loss} dst.{staged.staging_table}")
    sandbox.connect("source").execute("INSERT INTO src.items VALUES (501, 'late', now())")

    def restage() -> Staged:
        return postgres_load.restage_direct(
            PostgresSource(sandbox.connect("source")), sandbox.connect("target"), INCREMENTAL, staged
        )

    outcome = publish(sandbox, INCREMENTAL, staged, "r1", restage)

    assert outcome.applied and outcome.rows == 501
    assert_equal_to_source(sandbox)


def test_lost_staging_without_a_way_to_stage_again_says_what_to_do(sandbox: Sandbox) -> None:
    sandbox.connect("source").execute(ITEMS)
    staged = check_and_stage(sandbox, FULL, "r1")
    sandbox.connect("target").execute(f"DROP TABLE dst.{staged.staging_table}")

    with pytest.raises(TerminalError, match=r"staging table dst\._dagforge_stg_items_\w+ is gone; clear the stage"):
        publish(sandbox, FULL, staged, "r1")


def test_a_late_row_inside_lookback_is_loaded_by_the_next_run(sandbox: Sandbox) -> None:
    """A row committed late with a cursor behind the watermark, but inside lookback."""
    sandbox.connect("source").execute(ITEMS)
    publish(sandbox, INCREMENTAL, check_and_stage(sandbox, INCREMENTAL, "r1"), "r1")
    source, target = sandbox.connect("source"), sandbox.connect("target")
    assert not postgres_load.decide_window(PostgresSource(source), target, INCREMENTAL).new_rows
    source.execute("INSERT INTO src.items VALUES (1000, 'late', timestamptz '2024-01-01 00:05:00+00')")

    window = postgres_load.decide_window(PostgresSource(source), target, INCREMENTAL)

    assert window.new_rows and "changed since the last load" in window.reason
    staged, _ = postgres_load.stage(
        PostgresSource(source), target, INCREMENTAL, window, INCREMENTAL.staging_table("r2")
    )
    publish(sandbox, INCREMENTAL, staged, "r2")
    assert_equal_to_source(sandbox)
    assert not postgres_load.decide_window(PostgresSource(source), target, INCREMENTAL).new_rows


def test_a_late_row_at_the_watermark_is_loaded_without_lookback(sandbox: Sandbox) -> None:
    load = make_load("items", LoadMode.INCREMENTAL, cursor="updated_at")
    sandbox.connect("source").execute(ITEMS)
    publish(sandbox, load, check_and_stage(sandbox, load, "r1"), "r1")
    source, target = sandbox.connect("source"), sandbox.connect("target")
    source.execute("INSERT INTO src.items SELECT 2000, 'same cursor', max(updated_at) FROM src.items")

    window = postgres_load.decide_window(PostgresSource(source), target, load)

    assert window.new_rows
    staged, _ = postgres_load.stage(PostgresSource(source), target, load, window, load.staging_table("r2"))
    publish(sandbox, load, staged, "r2")
    assert_equal_to_source(sandbox)


def test_a_state_table_of_an_older_version_is_upgraded_and_reloads_the_zone_once(sandbox: Sandbox) -> None:
    sandbox.connect("source").execute(ITEMS)
    target = sandbox.connect("target")
    target.execute(
        "CREATE SCHEMA dst; CREATE TABLE dst._dagforge_state (pipeline text NOT NULL, table_name text NOT NULL, "
        "cursor_column text, watermark text, mode text NOT NULL, rows_loaded bigint NOT NULL, run_id text, "
        "updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (pipeline, table_name))"
    )
    target.execute("CREATE TABLE dst.items (id int PRIMARY KEY, v text NOT NULL, updated_at timestamptz NOT NULL)")
    target.execute(
        "INSERT INTO dst._dagforge_state VALUES ('p', 'items', 'updated_at', '2024-01-01 00:08:20+00', 'incremental',"
        " 500, 'old')"
    )
    source = sandbox.connect("source")

    window = postgres_load.decide_window(PostgresSource(source), target, INCREMENTAL)

    assert window.new_rows and "no digest" in window.reason
    staged, _ = postgres_load.stage(
        PostgresSource(source), target, INCREMENTAL, window, INCREMENTAL.staging_table("r1")
    )
    publish(sandbox, INCREMENTAL, staged, "r1")
    assert not postgres_load.decide_window(PostgresSource(source), target, INCREMENTAL).new_rows


def test_overlapping_runs_of_a_delete_insert_transform_wait_for_each_other(sandbox: Sandbox) -> None:
    target = sandbox.connect("target")
    target.execute("CREATE TABLE facts (k int PRIMARY KEY, n int)")
    rebuild = "DELETE FROM facts; INSERT INTO facts SELECT g, g FROM generate_series(1, 20000) g"

    def rebuild_on_own_connection() -> None:
        with psycopg.connect(sandbox.target_server.dsn(sandbox.database), autocommit=True) as conn:
            run_postgres_transform(conn, "p.facts", rebuild)

    errors = run_concurrently([rebuild_on_own_connection] * 3)

    assert errors == []
    assert target.execute("SELECT count(*) FROM facts").fetchone()[0] == 20000


def test_staging_of_a_run_that_never_published_is_dropped_a_day_later(sandbox: Sandbox) -> None:
    sandbox.connect("source").execute(ITEMS)
    abandoned = check_and_stage(sandbox, FULL, "abandoned")
    recent = check_and_stage(sandbox, FULL, "recent")
    target = sandbox.connect("target")
    target.execute(f"COMMENT ON TABLE dst.{abandoned.staging_table} IS 'dagforge staging, created 2024-01-01 00:00+00'")

    publish(sandbox, FULL, check_and_stage(sandbox, FULL, "today"), "today")

    left = target.execute("SELECT array_agg(tablename::text) FROM pg_tables WHERE tablename LIKE '\\_dagforge\\_stg%'")
    assert left.fetchone()[0] == [recent.staging_table]  # a run still in flight keeps its staging
