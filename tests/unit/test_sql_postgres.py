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
        "DO $dagforge$ BEGIN EXECUTE format('COMMENT ON TABLE %s IS %L', '\"dwh\".\"stg\"', "
        "'dagforge staging, created ' || now()); END $dagforge$",
    ]
    assert "c.relname LIKE '\\_dagforge\\_stg\\_%%'" in sql.abandoned_staging()


def test_publish_upsert_updates_non_key_columns() -> None:
    assert sql.publish_upsert("dwh", "t", "stg", ["id", "a", "b"], ["id"]) == [
        'INSERT INTO "dwh"."t" AS t ("id", "a", "b") SELECT s."id", s."a", s."b" FROM "dwh"."stg" s '
        'ON CONFLICT ("id") DO UPDATE SET "a" = EXCLUDED."a", "b" = EXCLUDED."b"'
    ]


def test_publish_upsert_never_replaces_a_row_with_an_older_version() -> None:
    (statement,) = sql.publish_upsert("dwh", "t", "stg", ["id", "a", "ts"], ["id"], cursor="ts")
    assert statement.endswith(
        'DO UPDATE SET "a" = EXCLUDED."a", "ts" = EXCLUDED."ts" WHERE t."ts" IS NULL OR EXCLUDED."ts" >= t."ts"'
    )


def test_publish_upsert_with_only_key_columns_does_nothing_on_conflict() -> None:
    (statement,) = sql.publish_upsert("dwh", "t", "stg", ["k1", "k2"], ["k1", "k2"])
    assert statement.endswith('ON CONFLICT ("k1", "k2") DO NOTHING')


def test_publish_replace_deletes_then_inserts() -> None:
    assert sql.publish_replace("dwh", "t", "stg", ["id"]) == [
        'DELETE FROM "dwh"."t"',
        'INSERT INTO "dwh"."t" ("id") SELECT s."id" FROM "dwh"."stg" s',
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
    assert "snapshot_at timestamptz, full_snapshot_at timestamptz, zone_digest text" in statements[2]
    assert '"dwh"."_dagforge_runs"' in statements[3] and "PRIMARY KEY (pipeline, table_name, stage_id)" in statements[3]
    assert sql.add_state_columns("dwh", ["zone_digest"]) == [
        'ALTER TABLE "dwh"."_dagforge_state" ADD COLUMN IF NOT EXISTS "zone_digest" text'
    ]


def test_watermark_only_moves_forwards_compared_as_the_cursor_type() -> None:
    incremental = sql.write_state("dwh", "timestamp with time zone", full=False)
    new, old = "CAST(EXCLUDED.watermark AS timestamp with time zone)", "CAST(s.watermark AS timestamp with time zone)"
    assert f"watermark = CASE WHEN (s.watermark IS NULL OR (EXCLUDED.watermark IS NOT NULL AND ({new} > {old}" in (
        incremental
    )
    assert "THEN EXCLUDED.watermark ELSE s.watermark END" in incremental
    assert "THEN EXCLUDED.zone_digest ELSE s.zone_digest END" in incremental
    assert "full_snapshot_at = NULLIF(s.full_snapshot_at, '-infinity')" in incremental
    full = sql.write_state("dwh", "bigint", full=True)
    assert "watermark = CASE WHEN TRUE THEN EXCLUDED.watermark" in full
    assert "GREATEST(COALESCE(s.full_snapshot_at, '-infinity'), COALESCE(EXCLUDED.snapshot_at, '-infinity'))" in full


def test_an_older_snapshot_is_found_by_mode() -> None:
    full, incremental = sql.newer_snapshot_published("d", "full"), sql.newer_snapshot_published("d", "incremental")
    assert "AND snapshot_at > CAST(%(snapshot_at)s AS timestamptz)" in full
    assert "AND full_snapshot_at > CAST(%(snapshot_at)s AS timestamptz)" in incremental


def test_publish_lock_is_per_destination_table() -> None:
    assert sql.publish_lock() == (
        "SELECT pg_advisory_xact_lock(hashtextextended('dagforge.publish:' || %(lock_key)s, 0))"
    )


def test_zone_digest_is_order_independent_over_key_and_cursor() -> None:
    assert sql.zone_digest("s", "t", ["a", "b"], "ts", "CAST(%(watermark)s AS date)") == (
        'SELECT count(*)::text || \':\' || coalesce(sum(hashtextextended(ROW("a", "b", "ts")::text, 0)), 0)::text '
        'FROM "s"."t" WHERE "ts" >= CAST(%(watermark)s AS date)'
    )


@pytest.mark.parametrize(
    ("type_sql", "kind"),
    [
        ("smallint", "int8"), ("integer", "int8"), ("bigint", "int8"),
        ("text", "text"), ("character varying", "text"), ("character varying(20)", "text"),
        ("character(84)", "bpchar"), ("bpchar", None),  # a bare bpchar keeps trailing spaces its hash drops
        ("uuid", "uuid"),
        ("timestamp without time zone", "timestamp"), ("timestamp(3) without time zone", "timestamp"),
        ("timestamp with time zone", "timestamptz"), ("timestamp(0) with time zone", "timestamptz"),
        ("time without time zone", "time"), ("time(6) without time zone", "time"),
        ("time with time zone", None), ("date", None), ("numeric(12,2)", None), ("numeric", None),
        ("double precision", None), ("real", None), ("interval", None), ("jsonb", None), ("json", None),
        ("boolean", None), ("bytea", None), ("integer[]", None), ("public.mood", None), ("public.integer", None),
    ],
)  # fmt: skip
def test_a_column_is_hashed_by_its_type_only_where_the_hash_is_as_exact_as_its_text(type_sql, kind) -> None:
    assert sql.row_hash_kind(type_sql) == kind


def test_row_checksum_hashes_by_text_unless_told_how_to_hash_each_column() -> None:
    columns = [("id", None), ("at", "timestamp with time zone"), ("amount", None)]
    text = (
        'SELECT count(*), coalesce(sum(hashtextextended(ROW("id", CAST("at" AS timestamp with time zone), "amount")'
        '::text, 0)), 0)::text FROM "s"."t" WHERE x'
    )
    assert sql.row_checksum('"s"."t"', columns, "x") == sql.row_checksum('"s"."t"', columns, "x", {}) == text
    assert sql.row_checksum('"s"."t"', columns, "", {"id": "int8", "at": "timestamptz"}) == (
        "SELECT count(*), coalesce(sum(hashint8extended("
        'coalesce(hashint8extended(CAST("id" AS bigint), 1), 0) # '
        'coalesce(timestamp_hash_extended(CAST(CAST("at" AS timestamp with time zone) AS timestamptz) '
        "AT TIME ZONE 'UTC', 2), 0) # "
        'hashtextextended(ROW("amount")::text, 0), 0)), 0)::text FROM "s"."t"'
    )
    every = sql.row_checksum("r", [("a", None)], "", {"a": "uuid"})
    assert "ROW(" not in every and 'uuid_hash_extended(CAST("a" AS uuid), 1)' in every


def test_window_with_export_expressions_and_cursor_range() -> None:
    bound = "CAST(%(watermark)s AS bigint)"
    assert sql.select_window("s", "t", ["id"], "id", bound, select_list="x AS id") == (
        f'SELECT x AS id FROM "s"."t" WHERE "id" >= {bound}'
    )
    assert sql.cursor_range("s", "t", "ts", None) == 'SELECT min("ts")::text, max("ts")::text FROM "s"."t"'
    assert sql.cursor_range("s", "t", "id", bound).endswith(f'FROM "s"."t" WHERE "id" >= {bound}')
