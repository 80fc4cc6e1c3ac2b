"""The source's columns change between two loads: each change under each on_schema_change policy,
through every Postgres shape (direct, and S3 as Parquet, CSV, JSON lines)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import psycopg
import pytest

from dagforge.drift import SchemaChangeRefused
from dagforge.errors import TerminalError
from dagforge.spec.model import LoadMode, SchemaChange
from tests.integration.loads import Loads, make_load

pytestmark = pytest.mark.integration

TABLE = """
CREATE TABLE src.t (id int PRIMARY KEY, n int, s varchar(10), amount numeric(10,2), note text,
                    updated_at timestamptz NOT NULL DEFAULT now());
INSERT INTO src.t (id, n, s, amount, note, updated_at)
SELECT i, i * 10, 'row ' || i, i + 0.25, 'note ' || i, '2024-01-01'::timestamptz + i * interval '1 minute'
FROM generate_series(1, 5) i;
"""


@dataclass(frozen=True)
class Drift:
    name: str
    change: str
    """Run on the source after the first load; it changes row 1 (and bumps its cursor)."""
    evolve: dict[str, tuple[str, str | None]]
    """Under evolve: destination column → (its type, row 1's value as text)."""
    ignore_refused: bool = False
    """Whether a load under ignore is refused (the destination's type cannot hold row 1's new value)."""


BUMP = "UPDATE src.t SET updated_at = now() WHERE id = 1"
DRIFTS = [
    Drift(
        "column_added",
        f"ALTER TABLE src.t ADD COLUMN extra text; UPDATE src.t SET extra = 'x' WHERE id = 1; {BUMP}",
        {"extra": ("text", "x"), "note": ("text", "note 1")},
    ),
    Drift(
        "column_dropped",
        f"ALTER TABLE src.t DROP COLUMN note; {BUMP}",
        {"note": ("text", None), "n": ("integer", "10")},
    ),
    Drift(
        "int_to_bigint_big_value",
        f"ALTER TABLE src.t ALTER COLUMN n TYPE bigint; UPDATE src.t SET n = 2^40 WHERE id = 1; {BUMP}",
        {"n": ("bigint", "1099511627776")},
        True,
    ),
    Drift(
        "varchar_to_text_long_value",
        f"ALTER TABLE src.t ALTER COLUMN s TYPE text; UPDATE src.t SET s = repeat('y', 50) WHERE id = 1; {BUMP}",
        {"s": ("text", "y" * 50)},
        True,
    ),
    Drift(
        "numeric_more_digits",
        f"ALTER TABLE src.t ALTER COLUMN amount TYPE numeric(12,4); UPDATE src.t SET amount = 12345678.1234 "
        f"WHERE id = 1; {BUMP}",
        {"amount": ("numeric(12,4)", "12345678.1234")},
        True,
    ),
    Drift(
        "column_renamed",
        f"ALTER TABLE src.t RENAME COLUMN note TO remark; {BUMP}",
        {"note": ("text", None), "remark": ("text", "note 1")},
    ),
]


def columns(conn: psycopg.Connection, table: str = "t") -> dict[str, str]:
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        (f"dst.{table}",),
    ).fetchall()
    return dict(rows)


def row_one(conn: psycopg.Connection, table: str = "t") -> dict[str, str | None]:
    cur = conn.execute(f"SELECT * FROM dst.{table} WHERE id = 1")
    names = [d.name for d in cur.description]
    values = conn.execute(f"SELECT t::text FROM dst.{table} t WHERE id = 1").fetchone()
    assert values
    return dict(zip(names, [None if v is None else str(v) for v in cur.fetchone()], strict=True))


def state(conn: psycopg.Connection, table: str = "t") -> tuple:
    return conn.execute(
        "SELECT schema_changes, rows_loaded FROM dst._dagforge_state WHERE table_name = %s", (table,)
    ).fetchone()


@pytest.mark.parametrize("drift", DRIFTS, ids=lambda d: d.name)
def test_evolve_adds_widens_and_keeps(loads: Loads, drift: Drift, caplog: pytest.LogCaptureFixture) -> None:
    loads.box.connect("source").execute(TABLE)
    load = make_load("t", on_schema_change=SchemaChange.EVOLVE)
    loads.run(load)
    loads.box.connect("source").execute(drift.change)

    with caplog.at_level(logging.INFO):
        loads.run(load)

    target = loads.box.connect("target")
    found, row = columns(target), row_one(target)
    for column, (type_sql, value) in drift.evolve.items():
        assert found[column] == type_sql, (column, found)
        assert row[column] == value, (column, row)
    changes = json.loads(state(target)[0])
    assert changes, "the change is recorded in the state table"
    if drift.name == "column_renamed":
        assert "a rename is a drop plus an add" in caplog.text
    other = target.execute("SELECT note FROM dst.t WHERE id = 2").fetchone()[0]
    assert other == "note 2", "rows this load did not touch keep their values"


@pytest.mark.parametrize("drift", DRIFTS, ids=lambda d: d.name)
def test_fail_stops_before_anything_is_written(loads: Loads, drift: Drift) -> None:
    loads.box.connect("source").execute(TABLE)
    load = make_load("t", on_schema_change=SchemaChange.FAIL)
    loads.run(load)
    target = loads.box.connect("target")
    before = (columns(target), target.execute("SELECT t::text FROM dst.t t ORDER BY id").fetchall(), state(target))
    loads.box.connect("source").execute(drift.change)

    with pytest.raises(SchemaChangeRefused) as refused:
        loads.run(load)

    after = (columns(target), target.execute("SELECT t::text FROM dst.t t ORDER BY id").fetchall(), state(target))
    assert after == before
    changed = [c for c in drift.evolve if c in str(refused.value)]
    assert changed, f"the error names the column: {refused.value}"
    assert "Nothing was written" in str(refused.value)


@pytest.mark.parametrize("drift", DRIFTS, ids=lambda d: d.name)
def test_ignore_loads_the_columns_both_sides_have(loads: Loads, drift: Drift) -> None:
    loads.box.connect("source").execute(TABLE)
    load = make_load("t", on_schema_change=SchemaChange.IGNORE)
    loads.run(load)
    target = loads.box.connect("target")
    before_columns = columns(target)
    loads.box.connect("source").execute(drift.change)

    if drift.ignore_refused:
        before = target.execute("SELECT t::text FROM dst.t t ORDER BY id").fetchall()
        with pytest.raises(TerminalError, match=r"would not arrive unchanged.*Nothing was written"):
            loads.run(load)
        assert target.execute("SELECT t::text FROM dst.t t ORDER BY id").fetchall() == before
        return
    loads.run(load)

    assert columns(target) == before_columns
    bumped = target.execute("SELECT updated_at > '2024-01-02' FROM dst.t WHERE id = 1").fetchone()[0]
    assert bumped, "the row was loaded"
    kept = target.execute("SELECT note FROM dst.t WHERE id = 1").fetchone()[0]
    assert kept == "note 1", "a column the source no longer has keeps its value"


def test_a_type_that_does_not_widen_is_refused_under_evolve(loads: Loads) -> None:
    loads.box.connect("source").execute(TABLE)
    load = make_load("t")
    loads.run(load)
    loads.box.connect("source").execute(f"ALTER TABLE src.t ALTER COLUMN n TYPE text USING n::text; {BUMP}")

    with pytest.raises(SchemaChangeRefused, match=r"'n' changed type from integer to text"):
        loads.run(load)


def test_full_loads_evolve_too(loads: Loads) -> None:
    loads.box.connect("source").execute(TABLE)
    load = make_load("t", LoadMode.FULL)
    loads.run(load)
    loads.box.connect("source").execute("ALTER TABLE src.t ADD COLUMN extra int DEFAULT 7; ALTER TABLE src.t DROP note")

    loads.run(load)

    target = loads.box.connect("target")
    assert target.execute("SELECT count(*), min(extra), max(extra), count(note) FROM dst.t").fetchone() == (5, 7, 7, 0)


def test_a_table_made_by_an_older_version_with_the_sources_enum_loads_under_ignore(loads: Loads) -> None:
    """Before portable types the destination had to hold the source's enum; ``ignore`` keeps that
    column and casts the staged label to it (checked exact), ``evolve`` names the change."""
    source, target = loads.box.connect("source"), loads.box.connect("target")
    source.execute(
        "CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE TABLE src.e (id int PRIMARY KEY, m mood, "
        "updated_at timestamptz NOT NULL DEFAULT now()); INSERT INTO src.e VALUES (1, 'ok')"
    )
    target.execute(
        "CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE SCHEMA dst; "
        "CREATE TABLE dst.e (id int PRIMARY KEY, m mood, updated_at timestamptz NOT NULL)"
    )

    with pytest.raises(SchemaChangeRefused, match=r"'m' changed type from mood to text"):
        loads.run(make_load("e"))
    loads.run(make_load("e", on_schema_change=SchemaChange.IGNORE))

    assert target.execute("SELECT m::text, pg_typeof(m)::text FROM dst.e").fetchone() == ("ok", "mood")
