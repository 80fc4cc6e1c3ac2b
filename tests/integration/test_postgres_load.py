"""The load steps on plain connections: hostile names, every common type, missing objects."""

from __future__ import annotations

import psycopg
import pytest

from dagforge.errors import TerminalError
from dagforge.loadspec import TableLoad, TableRef
from dagforge.sources.postgres import PostgresSource
from dagforge.spec.model import LoadMode
from dagforge.transfer import postgres_load
from tests.integration.conftest import Sandbox, table_fingerprint

pytestmark = pytest.mark.integration

HOSTILE = 'x"; drop table victim; --'
TYPES_TABLE = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE src."{name}" (
    id bigint PRIMARY KEY, small smallint, amount numeric(38, 10), ratio double precision, flag boolean,
    label varchar(20), body text, day date, at_local timestamp, at_utc timestamptz, clock time, uid uuid,
    doc jsonb, tags text[], raw bytea, feeling mood
);
INSERT INTO src."{name}" VALUES
    (1, -32768, -1234567890123456789012345678.0123456789, 1e-300, true, 'ação', E'tab\\there\\nline "q" \\\\ end',
     '1900-02-28', '1969-12-31 23:59:59.999999', '2024-03-10 02:30:00+05:30', '23:59:59', gen_random_uuid(),
     '{{"a": [1, 2.5, null], "ü": "ß"}}', ARRAY['a', NULL, 'c,d'], '\\x00ff10', 'happy'),
    (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"""


def make_load(box: Sandbox, table: str, mode: LoadMode = LoadMode.FULL, **extra) -> TableLoad:
    return TableLoad(
        pipeline="p",
        source=TableRef("sales_src", "src", table),
        destination=TableRef("sales_dwh", "dst", table),
        mode=mode,
        primary_key=("id",),
        **extra,
    )


def run_load(box: Sandbox, load: TableLoad, run_id: str = "r1") -> postgres_load.Window:
    source, target = box.connect("source"), box.connect("target")
    window = postgres_load.decide_window(PostgresSource(source), target, load)
    if window.new_rows:
        staged, _ = postgres_load.stage(PostgresSource(source), target, load, window, load.staging_table(run_id))
        postgres_load.publish(target, load, staged, run_id)
    return window


def test_hostile_names_and_every_common_type_round_trip(sandbox: Sandbox) -> None:
    source = sandbox.connect("source")
    source.execute("CREATE SCHEMA src; CREATE TABLE src.victim (id int)")
    source.execute(TYPES_TABLE.format(name=HOSTILE.replace('"', '""')))
    target = sandbox.connect("target")

    run_load(sandbox, make_load(sandbox, HOSTILE))

    quoted = f'"{HOSTILE.replace(chr(34), chr(34) * 2)}"'
    assert table_fingerprint(target, f"dst.{quoted}") == table_fingerprint(source, f"src.{quoted}")
    assert source.execute("SELECT to_regclass('src.victim') IS NOT NULL").fetchone()[0]


def test_incremental_with_numeric_cursor_and_lookback(sandbox: Sandbox) -> None:
    source = sandbox.connect("source")
    source.execute("CREATE SCHEMA src; CREATE TABLE src.ev (id int PRIMARY KEY, v text)")
    source.execute("INSERT INTO src.ev SELECT g, 'v' || g FROM generate_series(1, 100) g")
    load = make_load(sandbox, "ev", LoadMode.INCREMENTAL, cursor="id", lookback=10)
    first = run_load(sandbox, load)
    assert first.reason.startswith("first incremental run")
    source.execute("INSERT INTO src.ev SELECT g, 'v' || g FROM generate_series(101, 105) g")

    second = run_load(sandbox, load, "r2")

    target = sandbox.connect("target")
    assert second.new_rows and second.watermark == "100"
    assert target.execute("SELECT rows_loaded, watermark FROM dst._dagforge_state").fetchone() == (16, "105")
    assert table_fingerprint(target, "dst.ev") == table_fingerprint(source, "src.ev")
    assert not run_load(sandbox, load, "r3").new_rows


def test_missing_source_table_is_terminal(sandbox: Sandbox) -> None:
    sandbox.connect("source").execute("CREATE SCHEMA src")
    with pytest.raises(TerminalError, match=r"source table src\.nope does not exist"):
        run_load(sandbox, make_load(sandbox, "nope"))


def test_missing_cursor_column_is_terminal(sandbox: Sandbox) -> None:
    sandbox.connect("source").execute("CREATE SCHEMA src; CREATE TABLE src.t (id int primary key)")
    load = make_load(sandbox, "t", LoadMode.INCREMENTAL, cursor="updated_at")
    sandbox.connect("target").execute("CREATE SCHEMA dst")
    with pytest.raises(TerminalError, match="has no column"):
        source, target = sandbox.connect("source"), sandbox.connect("target")
        window = postgres_load.Window("incremental", "1", True, "test")
        postgres_load.stage(PostgresSource(source), target, load, window, "stg")


def test_publish_refuses_a_staging_table_that_changed(sandbox: Sandbox) -> None:
    source = sandbox.connect("source")
    source.execute("CREATE SCHEMA src; CREATE TABLE src.t (id int primary key)")
    source.execute("INSERT INTO src.t SELECT generate_series(1, 10)")
    load = make_load(sandbox, "t")
    target = sandbox.connect("target")
    window = postgres_load.decide_window(PostgresSource(source), target, load)
    staged, _ = postgres_load.stage(PostgresSource(source), target, load, window, "stg_t")
    target.execute("DELETE FROM dst.stg_t WHERE id > 5")

    with pytest.raises(TerminalError, match="holds 5 rows, the stage step wrote 10"):
        postgres_load.publish(target, load, staged, "r1")
    assert target.execute("SELECT to_regclass('dst.t')").fetchone()[0] is None


def test_steps_refuse_connections_outside_autocommit(sandbox: Sandbox) -> None:
    conn = psycopg.connect(sandbox.target_server.dsn(sandbox.database))
    try:
        with pytest.raises(ValueError, match="autocommit"):
            postgres_load.decide_window(PostgresSource(conn), conn, make_load(sandbox, "t"))
    finally:
        conn.close()


def test_duration_lookback_on_a_numeric_cursor_is_terminal(sandbox: Sandbox) -> None:
    source = sandbox.connect("source")
    source.execute("CREATE SCHEMA src; CREATE TABLE src.ev (id int PRIMARY KEY)")
    source.execute("INSERT INTO src.ev SELECT generate_series(1, 10)")
    load = make_load(sandbox, "ev", LoadMode.INCREMENTAL, cursor="id", lookback="1h")
    # already the first run (no watermark yet) fails: its stage computes the lookback zone's digest
    with pytest.raises(TerminalError, match="lookback '1h' does not fit a integer cursor: use a number"):
        run_load(sandbox, load)
