"""SQL builders: exact text, identifiers always quoted."""

import pytest

from dagforge.sql import postgres as sql


def test_ident_quotes_and_escapes() -> None:
    assert sql.ident("orders") == '"orders"'
    assert sql.ident('x"; drop table y; --') == '"x""; drop table y; --"'
    with pytest.raises(ValueError):
        sql.ident("a\x00b")


def test_select_window_full_and_incremental() -> None:
    assert sql.select_window("public", "t", ["id", "v"], None, None) == 'SELECT "id", "v" FROM "public"."t"'
    bound = sql.cursor_bound("timestamp with time zone", "D", "10m")
    assert bound == "(CAST(%(watermark)s AS timestamp with time zone) - make_interval(secs => 600))"
    assert (
        sql.select_window("public", "t", ["id"], "ts", bound) == f'SELECT "id" FROM "public"."t" WHERE "ts" >= {bound}'
    )


def test_cursor_bound_by_type_category() -> None:
    assert sql.cursor_bound("bigint", "N", None) == "CAST(%(watermark)s AS bigint)"
    assert sql.cursor_bound("bigint", "N", 100) == "(CAST(%(watermark)s AS bigint) - 100)"
    with pytest.raises(ValueError, match="lookback needs a date/time or numeric cursor"):
        sql.cursor_bound("text", "S", 10)
    with pytest.raises(ValueError, match="lookback '1h' does not fit a bigint cursor: use a number"):
        sql.cursor_bound("bigint", "N", "1h")
    with pytest.raises(ValueError, match="lookback 60 does not fit a date cursor: use a duration"):
        sql.cursor_bound("date", "D", 60)


def test_copy_statements() -> None:
    assert sql.copy_out("SELECT 1", True) == "COPY (SELECT 1) TO STDOUT (FORMAT binary)"
    assert sql.copy_in("s", "t", ["a", "b"], False) == 'COPY "s"."t" ("a", "b") FROM STDIN'


def test_staging_is_unlogged_with_source_types() -> None:
    columns = [sql.Column("id", "integer", True), sql.Column("amount", "numeric(12,2)")]
    assert sql.create_staging("dwh", "stg", columns) == [
        'DROP TABLE IF EXISTS "dwh"."stg"',
        'CREATE UNLOGGED TABLE "dwh"."stg" ("id" integer NOT NULL, "amount" numeric(12,2))',
    ]


def test_publish_upsert_updates_non_key_columns() -> None:
    assert sql.publish_upsert("dwh", "t", "stg", ["id", "a", "b"], ["id"]) == [
        'INSERT INTO "dwh"."t" ("id", "a", "b") SELECT "id", "a", "b" FROM "dwh"."stg" '
        'ON CONFLICT ("id") DO UPDATE SET "a" = EXCLUDED."a", "b" = EXCLUDED."b"'
    ]


def test_publish_upsert_with_only_key_columns_does_nothing_on_conflict() -> None:
    (statement,) = sql.publish_upsert("dwh", "t", "stg", ["k1", "k2"], ["k1", "k2"])
    assert statement.endswith('ON CONFLICT ("k1", "k2") DO NOTHING')


def test_publish_replace_deletes_then_inserts() -> None:
    assert sql.publish_replace("dwh", "t", "stg", ["id"]) == [
        'DELETE FROM "dwh"."t"',
        'INSERT INTO "dwh"."t" ("id") SELECT "id" FROM "dwh"."stg"',
    ]


def test_create_target_like_adds_primary_key() -> None:
    assert sql.create_target_like("dwh", "t", "stg", ["a", "b"]) == [
        'CREATE TABLE "dwh"."t" (LIKE "dwh"."stg" INCLUDING DEFAULTS)',
        'ALTER TABLE "dwh"."t" ADD PRIMARY KEY ("a", "b")',
    ]
    assert len(sql.create_target_like("dwh", "t", "stg", [])) == 1


def test_state_table_and_watermark() -> None:
    statements = sql.ensure_schema_and_state("dwh")
    assert statements[0].startswith("SELECT pg_advisory_xact_lock(")
    assert statements[1] == 'CREATE SCHEMA IF NOT EXISTS "dwh"'
    assert '"dwh"."_dagforge_state"' in statements[2] and "PRIMARY KEY (pipeline, table_name)" in statements[2]
    assert "watermark = COALESCE(EXCLUDED.watermark, s.watermark)" in sql.write_watermark("dwh")


def test_window_with_export_expressions_and_cursor_range() -> None:
    bound = "CAST(%(watermark)s AS bigint)"
    assert sql.select_window("s", "t", ["id"], "id", bound, select_list="x AS id") == (
        f'SELECT x AS id FROM "s"."t" WHERE "id" >= {bound}'
    )
    assert sql.cursor_range("s", "t", "ts", None) == 'SELECT min("ts")::text, max("ts")::text FROM "s"."t"'
    assert sql.cursor_range("s", "t", "id", bound).endswith(f'FROM "s"."t" WHERE "id" >= {bound}')
