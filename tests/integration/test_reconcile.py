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
