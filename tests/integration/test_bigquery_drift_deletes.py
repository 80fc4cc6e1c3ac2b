"""Postgres → GCS (emulator) → BigQuery (emulator): schema drift policies, hard and soft deletes
(full, incremental key sets, a source's own delete flag), reconciliation and ``checks:``.

Each test changes several tables of its own dataset at once, so every scenario costs one or two
loads. The emulator's catalog drops NUMERIC precision and scale, so numeric(10,2) → numeric(12,4)
shows as no change there (BigQuery widens it); the values must arrive exact either way.
"""

from __future__ import annotations

import decimal
import json
from typing import Any

import pytest

from dagforge.bigquery import load as bq
from dagforge.drift import SchemaChangeRefused
from dagforge.loadspec import TableLoad
from dagforge.reconcile import ChecksFailed
from dagforge.spec.model import DELETED_AT, Deletes, LoadMode, SchemaChange
from tests.integration.test_bigquery import load_once, make_load, stage_for_bigquery

pytestmark = pytest.mark.integration
FORMATS = ["parquet", "jsonl"]


def rows(world: dict[str, Any], table: str, columns: str = "*") -> dict[int, dict[str, Any]]:
    query = f"SELECT {columns} FROM `{world['dataset'].table_id(table)}`"
    return {int(r["id"]): dict(r.items()) for r in world["client"].query(query).result()}


def state(world: dict[str, Any], table: str) -> dict[str, Any]:
    query = f"SELECT * FROM `{world['dataset'].table_id('_dagforge_state')}` WHERE table_name = '{table}'"
    return dict(next(iter(world["client"].query(query).result())).items())


def incremental(world: dict[str, Any], table: str, **extra: Any) -> TableLoad:
    return make_load(table, world["dataset"].dataset, LoadMode.INCREMENTAL, cursor="seq", **extra)


# ---- schema drift ------------------------------------------------------------------------------

DRIFT = (
    "CREATE TABLE src.drift (id integer PRIMARY KEY, seq integer NOT NULL, gone text, b integer, "
    "n numeric(10,2), v varchar(10), old_name text);"
    "INSERT INTO src.drift VALUES (1, 1, 'g1', 1, 1.25, 'short', 'o1'), (2, 2, 'g2', 2, 2.50, 'x', 'o2'), "
    "(9, 0, 'g9', 9, 9.99, 'nine', 'o9');"
    "CREATE TABLE src.retype (id integer PRIMARY KEY, seq integer NOT NULL, code text);"
    "INSERT INTO src.retype VALUES (1, 1, 'abcde')"
)
CHANGE = (
    "ALTER TABLE src.drift DROP COLUMN gone, ALTER COLUMN b TYPE bigint, ALTER COLUMN n TYPE numeric(12,4), "
    "ALTER COLUMN v TYPE text, ADD COLUMN extra text;"
    "ALTER TABLE src.drift RENAME COLUMN old_name TO new_name;"
    "UPDATE src.drift SET seq = 3, b = 3000000000, n = 12345678.1234, v = 'longer than ten', new_name = 'r1', "
    "extra = 'x1' WHERE id = 1;"
    "INSERT INTO src.drift VALUES (3, 3, 3, 0.0001, 'new', 'r3', 'x3');"
    "ALTER TABLE src.retype ALTER COLUMN code TYPE integer USING length(code);"
    "UPDATE src.retype SET seq = 2"
)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("policy", list(SchemaChange))
def test_each_drift_case_under_each_policy(world: dict[str, Any], policy: SchemaChange, fmt: str) -> None:
    world["source"].execute(DRIFT)
    drift, retype = (incremental(world, t, on_schema_change=policy) for t in ("drift", "retype"))
    load_once(world, drift, fmt, "r1")
    load_once(world, retype, fmt, "r1")
    before = rows(world, "drift")
    world["source"].execute(CHANGE)
    messages: list[str] = []

    if policy is SchemaChange.FAIL:
        with pytest.raises(SchemaChangeRefused) as refused:
            load_once(world, drift, fmt, "r2", messages)
        text = str(refused.value)
        for part in ("'extra' (STRING) is new", "'new_name' (STRING) is new", "'gone' (STRING) is gone",
                     "'old_name' (STRING) is gone", "on_schema_change: fail", "Nothing was written"):  # fmt: skip
            assert part in text, text
        assert "'b'" not in text and "'v'" not in text  # int → bigint, varchar(10) → text: the same BigQuery types
        assert rows(world, "drift") == before and state(world, "drift")["watermark"] == "2"
    else:
        load_once(world, drift, fmt, "r2", messages)
        after = rows(world, "drift")
        assert after[1]["b"] == 3000000000 and after[1]["v"] == "longer than ten"
        assert after[1]["n"] == decimal.Decimal("12345678.1234") and after[3]["n"] == decimal.Decimal("0.0001")
        assert {k: after[9][k] for k in before[9]} == before[9]  # not in this window: untouched
        changes = json.loads(state(world, "drift")["schema_changes"])
        assert {(c["column"], c["change"]) for c in changes} >= {
            ("extra", "added"), ("new_name", "added"), ("gone", "dropped"), ("old_name", "dropped")
        }  # fmt: skip
        assert not {c["column"] for c in changes} & {"b", "v"}
        assert any("a rename is a drop plus an add" in m for m in messages), messages
    if policy is SchemaChange.EVOLVE:
        after = rows(world, "drift")
        assert (after[1]["gone"], after[1]["old_name"], after[1]["new_name"], after[1]["extra"]) == (
            None,
            None,
            "r1",
            "x1",
        )
        assert [after[2][c] for c in ("gone", "old_name", "new_name")] == [None, None, "o2"]  # re-read (bound)
        assert (after[9]["new_name"], after[9]["extra"]) == (None, None)
        assert any("adding column 'extra' STRING" in m for m in messages), messages
    if policy is SchemaChange.IGNORE:
        after = rows(world, "drift")
        assert "extra" not in after[1] and "new_name" not in after[1]
        assert (after[1]["gone"], after[1]["old_name"]) == ("g1", "o1")  # kept, not written
        assert any("on_schema_change: ignore" in m for m in messages), messages

    if policy is SchemaChange.IGNORE:
        load_once(world, retype, fmt, "r2")
        assert rows(world, "retype")[1]["code"] == "5"  # the staged INT64 written as the target's STRING
    else:
        with pytest.raises(SchemaChangeRefused, match=r"column 'code' changed type from STRING to INT64"):
            load_once(world, retype, fmt, "r2")
        assert rows(world, "retype")[1]["code"] == "abcde"


# ---- deletes -----------------------------------------------------------------------------------


def seed(world: dict[str, Any], *tables: str, extra: str = "") -> None:
    for table in tables:
        world["source"].execute(
            f"CREATE TABLE src.{table} (id integer PRIMARY KEY, seq integer NOT NULL, v text{extra});"
            f"INSERT INTO src.{table} (id, seq, v) SELECT g, g, 'v' || g FROM generate_series(1, 5) g"
        )


def change_all(world: dict[str, Any], *tables: str) -> None:
    """Delete 5 and 2, update 1, insert 6 in one run."""
    for table in tables:
        world["source"].execute(
            f"DELETE FROM src.{table} WHERE id IN (2, 5); UPDATE src.{table} SET v = 'new', seq = 10 WHERE id = 1;"
            f"INSERT INTO src.{table} VALUES (6, 11, 'v6')"
        )


@pytest.mark.parametrize("fmt", FORMATS)
def test_full_loads_replace_soft_delete_or_keep_rows_the_source_deleted(world: dict[str, Any], fmt: str) -> None:
    seed(world, "hard", "soft", "keep")
    ds = world["dataset"].dataset
    loads = {
        t: make_load(t, ds, deletes=d) for t, d in (("hard", None), ("soft", Deletes.SOFT), ("keep", Deletes.NONE))
    }
    for load in loads.values():
        load_once(world, load, fmt, "r1")
    change_all(world, *loads)
    for load in loads.values():
        load_once(world, load, fmt, "r2")

    assert {i: r["v"] for i, r in rows(world, "hard").items()} == {1: "new", 3: "v3", 4: "v4", 6: "v6"}
    keep = rows(world, "keep")
    assert sorted(keep) == [1, 2, 3, 4, 5, 6] and keep[1]["v"] == "new" and DELETED_AT not in keep[1]
    soft = rows(world, "soft")
    assert sorted(soft) == [1, 2, 3, 4, 5, 6] and soft[1]["v"] == "new"
    marked = {i for i, r in soft.items() if r[DELETED_AT] is not None}
    assert marked == {2, 5}
    world["source"].execute("INSERT INTO src.soft VALUES (5, 12, 'back')")
    load_once(world, loads["soft"], fmt, "r3")
    again = rows(world, "soft")
    assert again[5][DELETED_AT] is None and again[5]["v"] == "back"  # back in the source: live again
    assert again[2][DELETED_AT] == soft[2][DELETED_AT]  # marked once, kept
    assert json.loads(state(world, "soft")["reconciliation"])["results"][0]["ok"] is True


@pytest.mark.parametrize("fmt", FORMATS)
def test_incremental_key_sets_delete_or_mark_with_updates_in_the_same_run(world: dict[str, Any], fmt: str) -> None:
    seed(world, "ihard", "isoft")
    loads = {t: incremental(world, t, deletes=d) for t, d in (("ihard", Deletes.HARD), ("isoft", Deletes.SOFT))}
    for load in loads.values():
        load_once(world, load, fmt, "r1")
    change_all(world, *loads)
    for load in loads.values():
        load_once(world, load, fmt, "r2")

    assert {i: r["v"] for i, r in rows(world, "ihard").items()} == {1: "new", 3: "v3", 4: "v4", 6: "v6"}
    soft = rows(world, "isoft")
    assert {i: (r["v"], r[DELETED_AT] is not None) for i, r in soft.items()} == {
        1: ("new", False), 2: ("v2", True), 3: ("v3", False), 4: ("v4", False), 5: ("v5", True), 6: ("v6", False)
    }  # fmt: skip
    for table in loads:
        recorded = json.loads(state(world, table)["reconciliation"])
        assert recorded["run_id"] == "r2" and recorded["results"][0]["ok"] is True, recorded


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_source_delete_flag_deletes_or_marks_its_rows(world: dict[str, Any], fmt: str) -> None:
    seed(world, "fhard", extra=", deleted boolean")
    seed(world, "fsoft", extra=", removed_on date")
    world["source"].execute("UPDATE src.fhard SET deleted = true WHERE id = 3; UPDATE src.fsoft SET removed_on = "
                            "'2024-05-01' WHERE id = 3")  # fmt: skip
    hard = incremental(world, "fhard", deletes=Deletes.HARD, deleted_flag="deleted")
    soft = incremental(world, "fsoft", deleted_flag="removed_on")  # soft by default
    for load in (hard, soft):
        load_once(world, load, fmt, "r1")
    assert sorted(rows(world, "fhard")) == [1, 2, 4, 5]  # flagged: never inserted
    assert {i for i, r in rows(world, "fsoft").items() if r[DELETED_AT]} == {3}

    world["source"].execute("UPDATE src.fhard SET deleted = true, seq = 20 WHERE id = 1;"
                            "UPDATE src.fhard SET deleted = false, seq = 21 WHERE id = 2;"
                            "UPDATE src.fsoft SET removed_on = '2024-06-01', seq = 20 WHERE id = 1;"
                            "UPDATE src.fsoft SET removed_on = NULL, v = 'back', seq = 21 WHERE id = 3")  # fmt: skip
    for load in (hard, soft):
        load_once(world, load, fmt, "r2")
    assert sorted(rows(world, "fhard")) == [2, 4, 5]
    fsoft = rows(world, "fsoft")
    assert {i for i, r in fsoft.items() if r[DELETED_AT]} == {1} and fsoft[3]["v"] == "back"


def test_a_late_older_publish_deletes_nothing_a_newer_one_published(world: dict[str, Any]) -> None:
    seed(world, "late")
    load = incremental(world, "late", deletes=Deletes.HARD)
    load_once(world, load, "parquet", "r0")
    world["source"].execute("UPDATE src.late SET seq = 7, v = 'r1' WHERE id = 1")
    older = stage_for_bigquery(world, load, "r1")  # its key set has no 6
    world["source"].execute("INSERT INTO src.late VALUES (6, 8, 'v6')")
    client, ds = world["client"], world["dataset"]
    bq.publish(client, ds, load, stage_for_bigquery(world, load, "r2"), "r2")

    bq.publish(client, ds, load, older, "r1")

    assert sorted(rows(world, "late")) == [1, 2, 3, 4, 5, 6]


# ---- reconciliation and checks -----------------------------------------------------------------


def test_a_row_vanished_from_bigquery_fails_the_next_load_after_its_publish(world: dict[str, Any]) -> None:
    seed(world, "vanish")
    load = incremental(world, "vanish")
    load_once(world, load, "jsonl", "r1")
    world["client"].query(f"DELETE FROM `{world['dataset'].table_id('vanish')}` WHERE id = 3").result()
    world["source"].execute("INSERT INTO src.vanish VALUES (6, 6, 'v6')")

    with pytest.raises(ChecksFailed, match=r"reconcile rows: MISMATCH: destination 5 live rows, source 6 at ") as e:
        load_once(world, load, "jsonl", "r2")

    assert "which stays" in str(e.value)
    assert sorted(rows(world, "vanish")) == [1, 2, 4, 5, 6]  # the publish stays
    recorded = json.loads(state(world, "vanish")["reconciliation"])
    assert recorded["results"][0]["ok"] is False and state(world, "vanish")["watermark"] == "6"


def test_checks_fail_after_the_publish_warn_only_logs_and_a_retry_checks_again(world: dict[str, Any]) -> None:
    world["source"].execute(
        "CREATE TABLE src.checked (id integer PRIMARY KEY, code text, v text);"
        "INSERT INTO src.checked VALUES (1, 'a', 'x'), (2, 'a', NULL), (3, NULL, 'y'), (4, NULL, 'z')"
    )
    checks = ({"min_rows": 100, "on_fail": "warn"}, {"not_null": ["v"]}, {"unique": ["code"]}, {"unique": ["id"]})
    load = make_load("checked", world["dataset"].dataset, checks=checks)
    messages: list[str] = []
    staged = stage_for_bigquery(world, load, "r1")
    progress = lambda *args: messages.append(args[0] % args[1:])  # noqa: E731
    with pytest.raises(ChecksFailed) as failed:
        bq.publish(world["client"], world["dataset"], load, staged, "r1", progress)
    text = str(failed.value)
    assert "2 check(s) failed" in text and "not_null v: 1 rows with NULL" in text
    assert "unique code: 2 duplicate rows" in text and "min_rows" not in text  # NULLs are equal: a and NULL twice
    assert any("min_rows 100: failed (warn): 4 live rows" in m for m in messages), messages
    assert any("unique id: ok" in m for m in messages)
    assert len(rows(world, "checked")) == 4  # published

    retry: list[str] = []  # the task retried after its publish committed (its staging is gone)
    with pytest.raises(ChecksFailed, match="not_null v: 1 rows with NULL"):
        bq.publish(world["client"], world["dataset"], load, staged, "r1", lambda *a: retry.append(a[0] % a[1:]))
    assert any("reconciliation skipped: an earlier attempt committed this publish" in m for m in retry), retry


def test_a_delete_alone_is_something_new_and_then_nothing_is(world: dict[str, Any]) -> None:
    """No cursor moved: the key digest in the state tells the check that a row went."""
    seed(world, "alone")
    load = incremental(world, "alone", deletes=Deletes.HARD)
    load_once(world, load, "parquet", "r1")
    world["source"].execute("DELETE FROM src.alone WHERE id = 2")

    window = load_once(world, load, "parquet", "r2")

    assert window.new_rows and "keys changed" in window.reason
    assert sorted(rows(world, "alone")) == [1, 3, 4, 5]
    assert not load_once(world, load, "parquet", "r3").new_rows


def test_a_late_older_publish_never_brings_a_deleted_row_back(world: dict[str, Any]) -> None:
    """r1 stages row 2's new version; the source deletes row 2; r2 publishes the delete; r1 comes late."""
    seed(world, "back")
    load = incremental(world, "back", deletes=Deletes.HARD)
    load_once(world, load, "parquet", "r0")
    world["source"].execute("UPDATE src.back SET seq = 7, v = 'a' WHERE id = 2")
    older = stage_for_bigquery(world, load, "r1")
    world["source"].execute("DELETE FROM src.back WHERE id = 2; UPDATE src.back SET seq = 8 WHERE id = 3")
    client, ds = world["client"], world["dataset"]
    bq.publish(client, ds, load, stage_for_bigquery(world, load, "r2"), "r2")

    outcome = bq.publish(client, ds, load, older, "r1")

    assert not outcome.applied
    assert sorted(rows(world, "back")) == [1, 3, 4, 5]
