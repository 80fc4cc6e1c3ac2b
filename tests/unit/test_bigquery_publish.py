"""The BigQuery publish script of each delete mode and drift resolution, and the widening rules,
as text (no services); tests/integration/test_bigquery_drift_deletes.py runs them for real."""

from __future__ import annotations

import pytest

from dagforge.bigquery import drift, sql
from dagforge.bigquery.checks import figures_query, measures
from dagforge.bigquery.load import Dataset, publish_script
from dagforge.bigquery.types import BigQueryType
from dagforge.contracts import Staged
from dagforge.drift import Resolution, SchemaChangeRefused, resolve
from dagforge.loadspec import TableLoad, TableRef
from dagforge.spec.model import DELETED_AT, Deletes, LoadMode

DS = Dataset("p", "d")
STATE = "`p.d._dagforge_state`"
SNAP = "2024-01-02T00:00:00Z"
COLUMNS = ["id", "seq", "v"]


def table_load(mode: LoadMode = LoadMode.INCREMENTAL, **extra) -> TableLoad:
    cursor = "seq" if mode is LoadMode.INCREMENTAL else None
    return TableLoad("pl", TableRef("s", "s", "t"), TableRef("g", "d", "t"), mode, ("id",), cursor=cursor, **extra)


def staged(mode: str = "incremental", key_table: str | None = None, columns=COLUMNS) -> Staged:
    return Staged("_dagforge_stg_t_1", 3, list(columns), mode, "3", SNAP, None, "s1", None, key_table, 5)


def statements(script: str) -> list[str]:
    return script.removeprefix("BEGIN TRANSACTION;\n").removesuffix("COMMIT TRANSACTION;\n").split(";\n")[:-1]


def newer(column: str) -> str:
    return (
        f"EXISTS (SELECT 1 FROM {STATE} WHERE pipeline = 'pl' AND table_name = 't' AND {column} > "
        f"CAST('{SNAP}' AS TIMESTAMP))"
    )


def test_full_hard_replaces_and_full_none_upserts_without_deleting() -> None:
    hard = statements(publish_script(DS, table_load(LoadMode.FULL), staged("full"), "r"))
    assert hard[0] == f"DELETE FROM `p.d.t` WHERE NOT {newer('snapshot_at')}"
    assert hard[1].startswith("INSERT INTO `p.d.t` (`id`, `seq`, `v`) SELECT `id`, `seq`, `v` FROM")
    none = statements(publish_script(DS, table_load(LoadMode.FULL, deletes=Deletes.NONE), staged("full"), "r"))
    assert len(none) == 2 and none[0].startswith("MERGE `p.d.t` T\n") and "DELETE" not in none[0]
    assert "WHEN MATCHED THEN UPDATE SET `seq` = S.`seq`, `v` = S.`v`" in none[0]  # full: no cursor guard


def test_full_soft_upserts_live_rows_then_marks_the_missing_ones_once() -> None:
    script = statements(publish_script(DS, table_load(LoadMode.FULL, deletes=Deletes.SOFT), staged("full"), "r"))
    merge, mark = script[0], script[1]
    assert f"`v` = S.`v`, `{DELETED_AT}` = NULL" in merge
    assert f"INSERT (`id`, `seq`, `v`, `{DELETED_AT}`) VALUES (S.`id`, S.`seq`, S.`v`, NULL)" in merge
    assert mark == (
        f"UPDATE `p.d.t` T SET `{DELETED_AT}` = CAST('{SNAP}' AS TIMESTAMP) WHERE T.`{DELETED_AT}` IS NULL "
        f"AND NOT {newer('snapshot_at')} AND NOT EXISTS (SELECT 1 FROM `p.d._dagforge_stg_t_1` K WHERE "
        "K.`id` = T.`id`)"
    )


@pytest.mark.parametrize("deletes", [Deletes.HARD, Deletes.SOFT])
def test_incremental_key_sets_delete_after_the_upsert_unless_a_newer_snapshot_is_published(deletes) -> None:
    load = table_load(deletes=deletes)
    script = statements(publish_script(DS, load, staged(key_table="_dagforge_key_t_1"), "r", "INT64"))
    assert newer("full_snapshot_at") in script[0]  # the upsert yields to a newer full replace only
    missing = "NOT EXISTS (SELECT 1 FROM `p.d._dagforge_key_t_1` K WHERE K.`id` = T.`id`)"
    if deletes is Deletes.HARD:
        assert script[1] == f"DELETE FROM `p.d.t` T WHERE NOT {newer('snapshot_at')} AND {missing}"
    else:
        assert script[1].startswith(f"UPDATE `p.d.t` T SET `{DELETED_AT}` = CAST(")
        assert script[1].endswith(f"AND NOT {newer('snapshot_at')} AND {missing}")
    assert script[2].startswith(f"MERGE {STATE} T")


def test_a_hard_delete_flag_deletes_matched_rows_and_never_inserts_flagged_ones() -> None:
    load = table_load(deletes=Deletes.HARD, deleted_flag="gone")
    merge = statements(publish_script(DS, load, staged(columns=[*COLUMNS, "gone"]), "r", "INT64", flag_type="BOOL"))[0]
    guard = "(T.`seq` IS NULL OR S.`seq` >= T.`seq`)"
    assert f"WHEN MATCHED AND {guard} AND S.`gone` IS TRUE THEN DELETE\nWHEN MATCHED AND {guard} THEN UPDATE" in merge
    assert "WHEN NOT MATCHED AND NOT S.`gone` IS TRUE THEN INSERT" in merge


def test_a_soft_delete_flag_of_any_type_sets_keeps_and_clears_the_deletion_time() -> None:
    load = table_load(deleted_flag="removed_on")
    assert load.delete_mode is Deletes.SOFT
    script = publish_script(DS, load, staged(columns=[*COLUMNS, "removed_on"]), "r", "INT64", flag_type="DATE")
    merge = statements(script)[0]
    flagged, d, when = "S.`removed_on` IS NOT NULL", f"`{DELETED_AT}`", f"CAST('{SNAP}' AS TIMESTAMP)"
    assert f"{d} = IF({flagged}, COALESCE(T.{d}, {when}), NULL)" in merge
    assert f"VALUES (S.`id`, S.`seq`, S.`v`, S.`removed_on`, IF({flagged}, {when}, NULL))" in merge
    assert "DELETE" not in merge


def test_a_forced_full_reload_of_an_incremental_table_that_keeps_deletes_replaces_it() -> None:
    assert table_load().deletes_for(staged("full").load_mode) is Deletes.HARD
    assert table_load(deletes=Deletes.SOFT).deletes_for(staged("full").load_mode) is Deletes.SOFT
    assert table_load().deletes_for(staged().load_mode) is Deletes.NONE


def test_drift_writes_the_resolved_columns_null_fills_dropped_ones_and_records_the_changes() -> None:
    resolution = resolve(
        "evolve", {"id": "INT64", "seq": "INT64", "v": "STRING", "gone": "STRING"},
        {"id": "INT64", "seq": "INT64", "v": "STRING", "extra": "INT64"}, widens=drift.bigquery_widens, table="t",
    )  # fmt: skip
    script = publish_script(DS, table_load(), staged(columns=["id", "seq", "v", "extra"]), "r", "INT64",
                            resolution=resolution, casts={"v": "NUMERIC(12, 4)"})  # fmt: skip
    merge, state = statements(script)[0], statements(script)[1]
    assert "`v` = CAST(S.`v` AS NUMERIC(12, 4)), `extra` = S.`extra`, `gone` = NULL" in merge
    assert "VALUES (S.`id`, S.`seq`, CAST(S.`v` AS NUMERIC(12, 4)), S.`extra`)" in merge
    assert '"column": "extra", "change": "added"' in state and "COALESCE(S.schema_changes, T.schema_changes)" in state


@pytest.mark.parametrize(
    ("old", "new", "widens"),
    [
        ("NUMERIC(10, 2)", "NUMERIC(12, 4)", True),
        ("NUMERIC(10, 2)", "NUMERIC(12, 2)", True),
        ("NUMERIC(12, 4)", "NUMERIC(10, 2)", False),
        ("NUMERIC(10, 2)", "NUMERIC(10, 4)", False),  # two integer digits fewer
        ("NUMERIC(10, 2)", "NUMERIC", True),
        ("INT64", "NUMERIC", True),
        ("INT64", "NUMERIC(20, 0)", True),
        ("INT64", "NUMERIC(12, 2)", False),
        ("INT64", "BIGNUMERIC", False),  # not in place: see dagforge/bigquery/drift.py
        ("NUMERIC(10, 2)", "BIGNUMERIC(40, 20)", False),
        ("STRING", "INT64", False),
        ("INT64", "STRING", False),
        ("ARRAY<INT64>", "ARRAY<NUMERIC>", False),
        ("ARRAY<STRING>", "ARRAY<STRING>", True),
        ("INT64", "ARRAY<INT64>", False),
    ],
)
def test_bigquery_widens_only_what_set_data_type_does_without_changing_a_value(old, new, widens) -> None:
    assert drift.bigquery_widens(old, new) is widens


def test_evolve_refuses_a_type_that_does_not_widen_naming_the_column() -> None:
    with pytest.raises(SchemaChangeRefused, match=r"column 'code' changed type from STRING to INT64"):
        resolve("evolve", {"code": "STRING"}, {"code": "INT64"}, widens=drift.bigquery_widens, table="t")


def test_the_ddl_adds_widens_and_relaxes_re_runnably_and_the_catalog_follows() -> None:
    column, kind = drift.Column, BigQueryType
    target = [column("id", kind("INT64", "REQUIRED")), column("n", kind("NUMERIC", "NULLABLE", 10, 2)),
              column("gone", kind("STRING", "REQUIRED"))]  # fmt: skip
    staged_columns = [column("id", kind("INT64")), column("n", kind("NUMERIC", "NULLABLE", 12, 4)),
                      column("tags", kind("STRING", "REPEATED"))]  # fmt: skip
    resolution = resolve("evolve", drift.type_texts(target), drift.type_texts(staged_columns),
                         widens=drift.bigquery_widens, primary_key=("id",), table="t")  # fmt: skip
    assert drift.ddl("`p.d.t`", resolution, target, staged_columns) == [
        "ALTER TABLE `p.d.t` ADD COLUMN IF NOT EXISTS `tags` ARRAY<STRING>",
        "ALTER TABLE `p.d.t` ALTER COLUMN `n` SET DATA TYPE NUMERIC(12, 4)",
        "ALTER TABLE `p.d.t` ALTER COLUMN `gone` DROP NOT NULL",
    ]
    followed = drift.followed_schema(target, resolution, staged_columns, soft_deletes=True)
    assert [(c.name, c.type_sql, c.kind.mode) for c in followed] == [
        ("id", "INT64", "REQUIRED"), ("n", "NUMERIC(12, 4)", "NULLABLE"), ("gone", "STRING", "NULLABLE"),
        ("tags", "ARRAY<STRING>", "REPEATED"), (DELETED_AT, "TIMESTAMP", "NULLABLE"),
    ]  # fmt: skip
    assert drift.casts(Resolution(write=("n",)), target, staged_columns) == {"n": "NUMERIC(10, 2)"}


def test_one_query_reads_the_guards_live_rows_and_every_check_measure() -> None:
    checks = ({"min_rows": 1}, {"not_null": ["a", "b"]}, {"unique": ["a"]}, {"not_null": ["a", "b"], "on_fail": "warn"})
    assert measures(checks) == [("not_null", ("a", "b")), ("unique", ("a",))]
    query, _ = figures_query(DS, table_load(checks=checks), staged(), "_dagforge_state", {"id", DELETED_AT})
    live = f"`{DELETED_AT}` IS NULL"
    assert query.startswith(f"SELECT {newer('full_snapshot_at')} AS f0, EXISTS (SELECT 1 FROM {STATE} WHERE")
    assert f"(SELECT COUNT(*) FROM `p.d.t` WHERE {live}) AS live_rows" in query
    assert f"(SELECT COUNT(*) FROM `p.d.t` WHERE (`a` IS NULL OR `b` IS NULL) AND {live}) AS m0" in query
    assert (
        f"(SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM `p.d.t` WHERE {live} GROUP BY `a` "
        "HAVING COUNT(*) > 1)) AS m1"
    ) in query
    assert sql.key_table_name("_dagforge_stg_t_1") == "_dagforge_key_t_1"
