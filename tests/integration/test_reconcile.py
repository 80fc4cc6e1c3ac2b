"""After each publish the destination is reconciled with the source (row counts; checksums for full
loads) and the table's checks run; failures fail the task after the publish, naming the figures."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from dagforge.contracts import Staged
from dagforge.reconcile import ChecksFailed
from dagforge.spec.model import Deletes, LoadMode, SchemaChange
from dagforge.sql import postgres as sql
from tests.integration.loads import Loads, make_load

pytestmark = pytest.mark.integration

TABLE = """
CREATE TABLE src.t (id int PRIMARY KEY, email text, note text, updated_at timestamptz NOT NULL);
INSERT INTO src.t SELECT i, 'u' || i || '@x', 'n' || i, '2024-01-01'::timestamptz + i * interval '1 minute'
FROM generate_series(1, 20) i;
"""


def reconciliation(loads: Loads) -> dict:
    text = loads.box.connect("target").execute("SELECT reconciliation FROM dst._dagforge_state").fetchone()[0]
    return {r["name"]: r for r in json.loads(text)["results"]}


def test_a_row_that_vanished_from_the_destination_fails_the_next_load(loads: Loads) -> None:
    loads.box.connect("source").execute(TABLE)
    load = make_load("t", deletes=Deletes.HARD)
    loads.run(load)
    assert reconciliation(loads)["reconcile rows"]["ok"]
    loads.box.connect("target").execute("DELETE FROM dst.t WHERE id = 7")  # behind our back
    loads.box.connect("source").execute("INSERT INTO src.t VALUES (21, 'u21@x', 'n21', now())")

    with pytest.raises(ChecksFailed, match=r"reconcile rows: MISMATCH: destination 20 live rows, source 21"):
        loads.run(load)

    target = loads.box.connect("target")
    assert target.execute("SELECT count(*) FROM dst.t WHERE id = 21").fetchone()[0] == 1, "the publish stays"
    assert not reconciliation(loads)["reconcile rows"]["ok"], "the failure is recorded in the state table"


def test_without_deletes_the_destination_may_hold_more_but_never_fewer(loads: Loads) -> None:
    loads.box.connect("source").execute(TABLE)
    load = make_load("t")
    loads.run(load)
    loads.box.connect("source").execute(
        "DELETE FROM src.t WHERE id = 3; INSERT INTO src.t VALUES (21, 'u21@x', 'n21', now())"
    )
    loads.run(load)
    assert reconciliation(loads)["reconcile rows"]["ok"]
    loads.box.connect("target").execute("DELETE FROM dst.t WHERE id IN (1, 2)")
    loads.box.connect("source").execute("INSERT INTO src.t VALUES (22, 'u22@x', 'n22', now())")

    with pytest.raises(ChecksFailed, match=r"destination 20 live rows, source 21"):
        loads.run(load)


def test_a_full_load_compares_every_row_and_names_the_column_its_publish_changed(loads: Loads) -> None:
    """A trigger on the destination changes a value behind the load's back: the rows' checksums differ,
    and the publish names the column (the trigger keeps the copy: the staging is there to compare with)."""
    loads.box.connect("source").execute(TABLE)
    load = make_load("t", LoadMode.FULL)
    loads.run(load)
    checks = reconciliation(loads)
    assert checks["reconcile checksum"]["ok"], checks
    loads.box.connect("target").execute(
        "CREATE FUNCTION dst.meddle() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.id = 5 THEN NEW.note := 'meddled'; END IF; RETURN NEW; END $$; "
        "CREATE TRIGGER meddle BEFORE INSERT ON dst.t FOR EACH ROW EXECUTE FUNCTION dst.meddle()"
    )

    with pytest.raises(
        ChecksFailed, match=r"reconcile checksum: checksums of the rows differ: the publish changed column\(s\) 'note' "
    ):
        loads.run(load)
    assert loads.box.connect("target").execute("SELECT note FROM dst.t WHERE id = 5").fetchone()[0] == "meddled"


def test_rows_changed_after_the_stage_fail_the_checksum_of_a_swapped_load(loads: Loads) -> None:
    """The staging table is changed between the stage and the publish (which swaps it in): one value
    in one row, same count; the rows' checksums say the staged rows are not the source's."""
    loads.box.connect("source").execute(TABLE)
    load = make_load("t", LoadMode.FULL)
    loads.run(load, "r1")
    staged = loads.stage(load, "r2")
    assert staged is not None
    loads.box.connect("target").execute(f"UPDATE dst.{staged.staging_table} SET email = 'x@y' WHERE id = 12")

    with pytest.raises(ChecksFailed, match=r"the values changed between the source and the staging table"):
        loads.publish(load, staged, "r2")
    assert reconciliation(loads)["reconcile rows"]["ok"], "same count: only the checksum sees it"


def test_an_ignored_new_column_is_left_out_of_the_destinations_checksum(loads: Loads) -> None:
    """on_schema_change: ignore with a column the source gained: the written columns are compared
    (staging against table) and every staged column (source against staging)."""
    loads.box.connect("source").execute(TABLE)
    load = make_load("t", LoadMode.FULL, on_schema_change=SchemaChange.IGNORE)
    loads.run(load)
    loads.box.connect("source").execute("ALTER TABLE src.t ADD COLUMN extra int DEFAULT 7")
    loads.box.connect("target").execute(
        "CREATE FUNCTION dst.meddle() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.id = 5 THEN NEW.email := 'meddled'; END IF; RETURN NEW; END $$; "
        "CREATE TRIGGER meddle BEFORE INSERT ON dst.t FOR EACH ROW EXECUTE FUNCTION dst.meddle()"
    )
    loads.box.connect("source").execute("INSERT INTO src.t VALUES (21, 'u21@x', 'n21', now())")

    with pytest.raises(ChecksFailed, match=r"the publish changed column\(s\) 'email' "):
        loads.run(load, "r2")
    loads.box.connect("target").execute("DROP TRIGGER meddle ON dst.t")
    loads.box.connect("source").execute("INSERT INTO src.t VALUES (22, 'u22@x', 'n22', now())")
    loads.run(load, "r3")
    checks = reconciliation(loads)
    assert checks["reconcile checksum"]["ok"] and checks["reconcile rows"]["ok"], checks
    columns = [r[0] for r in loads.box.connect("target").execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'dst' AND table_name = 't'"
    )]  # fmt: skip
    assert "extra" not in columns


def test_a_staging_of_an_older_version_is_compared_column_by_column(loads: Loads) -> None:
    """A stage that ran before an upgrade recorded per-column sums, not a row checksum: its publish,
    after the upgrade, still compares them (and finds a column a trigger changed)."""
    source = loads.box.connect("source")
    source.execute(TABLE)
    load = make_load("t", LoadMode.FULL)
    loads.run(load, "r1")
    staged = loads.stage(load, "r2")
    assert staged is not None and staged.row_checksum is not None
    source.execute("; ".join(sql.PIN_TEXT_FORMS).replace("SET LOCAL", "SET"))

    def as_older(staged: Staged) -> Staged:
        query = sql.column_checksums("src.t", [(n, None) for n in staged.columns], [("id", None)])
        sums = dict(zip(staged.columns, source.execute(query).fetchone(), strict=True))
        return dataclasses.replace(staged, row_checksum=None, checksums=sums)

    loads.publish(load, as_older(staged), "r2")
    checks = reconciliation(loads)
    assert checks["reconcile checksum"]["ok"] and "columns' checksums equal" in checks["reconcile checksum"]["detail"]

    staged = loads.stage(load, "r3")
    assert staged is not None
    loads.box.connect("target").execute(f"UPDATE dst.{staged.staging_table} SET note = 'x' WHERE id = 3")
    with pytest.raises(ChecksFailed, match=r"checksums differ in column\(s\) 'note'"):
        loads.publish(load, as_older(staged), "r3")


def test_checks_fail_or_warn_after_the_publish(loads: Loads, caplog: pytest.LogCaptureFixture) -> None:
    loads.box.connect("source").execute(TABLE + "UPDATE src.t SET email = 'dup@x' WHERE id IN (1, 2, 3);"
                                        "UPDATE src.t SET note = NULL WHERE id = 4;")  # fmt: skip
    checks = (
        {"min_rows": 20},
        {"not_null": ["note"], "on_fail": "warn"},
        {"unique": ["email"]},
        {"min_rows": 25, "on_fail": "warn"},
    )
    load = make_load("t", checks=checks)

    with caplog.at_level(logging.INFO), pytest.raises(ChecksFailed) as failed:
        loads.run(load, "r1")

    assert "1 check(s) failed" in str(failed.value)
    assert "unique email: 2 duplicate rows" in str(failed.value)
    assert "not_null note: failed (warn): 1 rows with NULL" in caplog.text
    assert "min_rows 25: failed (warn): 20 live rows" in caplog.text
    assert "min_rows 20: ok" in caplog.text
    assert loads.box.connect("target").execute("SELECT count(*) FROM dst.t").fetchone()[0] == 20


def test_a_retried_publish_runs_the_checks_again(loads: Loads) -> None:
    """Airflow retries (or a user clears) the failed publish: it was applied, but the table still fails."""
    loads.box.connect("source").execute(TABLE + "UPDATE src.t SET email = 'dup@x' WHERE id IN (1, 2);")
    load = make_load("t", checks=({"unique": ["email"]},))
    staged = loads.stage(load, "r1")
    assert staged
    with pytest.raises(ChecksFailed):
        loads.publish(load, staged, "r1")

    with pytest.raises(ChecksFailed, match="unique email: 1 duplicate rows"):
        loads.publish(load, staged, "r1")


def test_the_figures_computed_alongside_the_rows_see_the_reads_snapshot(sandbox) -> None:
    """The whole-table figures run on a second connection while the rows stream; it imports the
    read's snapshot, so a commit in between changes neither them nor the rows."""
    from dagforge.contracts import Window
    from dagforge.sources.postgres import consistent_read, describe_source, figures_alongside, table_figures

    source = sandbox.connect("source")
    source.execute("CREATE SCHEMA src;" + TABLE)
    load = make_load("t", LoadMode.FULL)
    full = Window("full", None, True, "test")
    columns = describe_source(source, load)
    with consistent_read(source):
        before = table_figures(source, load, columns, full)
    with consistent_read(source), figures_alongside(source, load, columns, full) as figures:
        source.execute("SELECT count(*) FROM src.t").fetchone()  # the snapshot is taken
        sandbox.connect("source").execute("UPDATE src.t SET note = 'later' WHERE id = 1")  # commits meanwhile
        alongside = figures()

    assert alongside == before
    with consistent_read(source):
        assert table_figures(source, load, columns, full) != before, "the commit did change the table"


HASHED_VALUES = {
    "int8": ("integer", ["0", "1", "-1", "2147483647", "-2147483648", "NULL"]),
    "text": ("text", ["''", "' '", "'a'", "'A'", "'a '", "'NULL'", "'\\N'", "'é'", "'e' || chr(769)", "NULL"]),
    "bpchar": ("character(3)", ["''", "'a'", "' a'", "'a b'", "'ab'", "NULL"]),
    "uuid": ("uuid", ["'00000000-0000-0000-0000-000000000000'", "'00000000-0000-0000-0000-000000000001'", "NULL"]),
    "timestamp": (
        "timestamp(6) without time zone",
        [
            "'2024-01-01 00:00'",
            "'2024-01-01 00:00:00.000001'",
            "'1999-12-31 23:59:59.999999'",
            "'infinity'",
            "'-infinity'",
            "'4713-01-01 BC'",
            "NULL",
        ],
    ),
    "timestamptz": (
        "timestamp with time zone",
        [
            "'2024-01-01 00:00+00'",
            "'2024-01-01 00:00+01'",
            "'2024-01-01 00:00:00.000001+00'",
            "'infinity'",
            "'-infinity'",
            "NULL",
        ],
    ),
    "time": ("time without time zone", ["'00:00'", "'24:00'", "'00:00:00.000001'", "'23:59:59.999999'", "NULL"]),
}


def typed_checksum(conn, values: str, kind: str, cast: str | None = None) -> tuple[int, str]:
    """The row checksum of ``values`` (``SELECT …`` of columns k, c), ``c`` hashed by ``kind``."""
    return conn.execute(sql.row_checksum(f"({values}) v", [("k", None), ("c", cast)], "", {"c": kind})).fetchone()


@pytest.mark.parametrize("kind", sorted(HASHED_VALUES))
def test_a_column_hashed_by_its_type_tells_apart_every_value_its_text_tells_apart(sandbox, kind: str) -> None:
    """Values whose text differs (NULL and the empty string, 24:00 and 00:00, one microsecond, the same
    wall clock in two zones, a composed and a decomposed é) give distinct checksums; so do two rows
    that swap their values, which a plain sum of per-column hashes would not see."""
    type_sql, values = HASHED_VALUES[kind]
    assert sql.row_hash_kind(type_sql) == kind
    conn = sandbox.connect("source")
    with conn.transaction():
        for statement in sql.PIN_TEXT_FORMS:
            conn.execute(statement)
        one = [typed_checksum(conn, f"SELECT 1 AS k, CAST({v} AS {type_sql}) AS c", kind)[1] for v in values]
        assert len(set(one)) == len(values), dict(zip(values, one, strict=True))
        a, b = values[0], values[1]
        pair = "SELECT {} AS k, CAST({} AS {t}) AS c UNION ALL SELECT {}, CAST({} AS {t})"
        forward = typed_checksum(conn, pair.format(1, a, 2, b, t=type_sql), kind)
        assert typed_checksum(conn, pair.format(2, b, 1, a, t=type_sql), kind) == forward, "same rows, other order"
        assert typed_checksum(conn, pair.format(1, b, 2, a, t=type_sql), kind) != forward, "values swapped"


def test_a_destination_of_another_type_or_zone_hashes_the_staged_value_alike(sandbox) -> None:
    """The destination reads a column of another type as the staged type (``cast``) and runs in its own
    session: an int8 read as integer, a text read as character(3), the same instant under another
    TimeZone hash as the source's value; a case-insensitive collation does not fold 'A' into 'a'."""
    conn = sandbox.connect("source")
    conn.execute("CREATE SCHEMA hk; CREATE COLLATION hk.ci (provider = icu, locale = 'und-u-ks-level2', "
                 "deterministic = false)")  # fmt: skip
    source = typed_checksum(conn, "SELECT 1 AS k, 5::integer AS c", "int8")
    assert typed_checksum(conn, "SELECT 1 AS k, 5::bigint AS c", "int8", "integer") == source
    source = typed_checksum(conn, "SELECT 1 AS k, 'ab'::character(3) AS c", "bpchar")
    assert typed_checksum(conn, "SELECT 1 AS k, 'ab '::text AS c", "bpchar", "character(3)") == source
    instant = "SELECT 1 AS k, '2024-03-31 01:30+00'::timestamptz AS c"
    conn.execute("SET TimeZone = 'UTC'")
    in_utc = typed_checksum(conn, instant, "timestamptz")
    conn.execute("SET TimeZone = 'Europe/Berlin'")
    assert typed_checksum(conn, instant, "timestamptz") == in_utc
    assert typed_checksum(conn, "SELECT 1 AS k, 'A' COLLATE hk.ci AS c", "text") != typed_checksum(
        conn, "SELECT 1 AS k, 'a' COLLATE hk.ci AS c", "text"
    )


HASHED_TABLE = """
CREATE TABLE src.h (id int PRIMARY KEY, i2 smallint, i8 bigint, t text, v varchar(12), c character(4), u uuid,
  ts timestamp(3), tz timestamptz, tm time, n numeric(8,2), d date, updated_at timestamptz NOT NULL);
INSERT INTO src.h SELECT i, i - 3, i::bigint * 1000000007, 't' || i, 'v' || i, 'c' || i % 10, md5(i::text)::uuid,
  '2024-01-01'::timestamp + i * interval '1.001 second', '2024-06-01 12:00+02'::timestamptz + i * interval '1 hour',
  time '00:00' + i * interval '1 minute', i / 4.0, date '2024-01-01' + i, now()
FROM generate_series(1, 30) i;
INSERT INTO src.h (id, updated_at) VALUES (0, now());
"""


def test_a_full_load_hashes_each_column_by_its_type_and_finds_any_staged_value_changed(loads: Loads) -> None:
    """Every column of a hashed kind is recorded as hashed so (numeric and date by their text); a
    value changed in the staging table, in any of them, fails the publish's checksum."""
    loads.box.connect("source").execute(HASHED_TABLE)
    load = make_load("h", LoadMode.FULL)
    staged = loads.stage(load, "r0")
    assert staged is not None
    assert staged.row_hashes == {"id": "int8", "i2": "int8", "i8": "int8", "t": "text", "v": "text", "c": "bpchar",
                                 "u": "uuid", "ts": "timestamp", "tz": "timestamptz", "tm": "time",
                                 "updated_at": "timestamptz"}  # fmt: skip
    loads.publish(load, staged, "r0")
    assert reconciliation(loads)["reconcile checksum"]["ok"]
    changes = {"i2": "i2 + 1", "t": "t || ' '", "c": "'c1 '", "u": "NULL", "ts": "ts + interval '1 ms'",
               "tz": "tz + interval '1 microsecond'", "tm": "'24:00'", "n": "n + 0.01", "d": "NULL"}  # fmt: skip
    target = loads.box.connect("target")
    for run, (column, change) in enumerate(changes.items(), 1):
        staged = loads.stage(load, f"r{run}")
        assert staged is not None
        row = 0 if column in ("c", "tm") else 2  # c2 → 'c1 ', and row 0 is all NULLs
        target.execute(f"UPDATE dst.{staged.staging_table} SET {column} = {change} WHERE id = {row}")
        with pytest.raises(ChecksFailed, match=r"checksums of the rows differ"):
            loads.publish(load, staged, f"r{run}")


def test_a_staging_that_hashed_every_column_by_its_text_is_compared_so(loads: Loads) -> None:
    """A stage of the version before typed hashes recorded the text method's checksum and no
    ``row_hashes``: its publish computes that method, and still finds a changed value."""
    source = loads.box.connect("source")
    source.execute(HASHED_TABLE)
    load = make_load("h", LoadMode.FULL)
    source.execute("; ".join(sql.PIN_TEXT_FORMS).replace("SET LOCAL", "SET"))

    def as_older(staged: Staged) -> Staged:
        figure = source.execute(sql.row_checksum("src.h", [(n, None) for n in staged.columns])).fetchone()[1]
        assert figure != staged.row_checksum
        return dataclasses.replace(staged, row_checksum=figure, row_hashes=None)

    staged = loads.stage(load, "r1")
    assert staged is not None
    loads.publish(load, as_older(staged), "r1")
    assert reconciliation(loads)["reconcile checksum"]["ok"]
    staged = loads.stage(load, "r2")
    assert staged is not None
    loads.box.connect("target").execute(
        f"UPDATE dst.{staged.staging_table} SET tz = tz + interval '1 hour' WHERE id = 3"
    )
    with pytest.raises(ChecksFailed, match=r"checksums of the rows differ"):
        loads.publish(load, as_older(staged), "r2")
