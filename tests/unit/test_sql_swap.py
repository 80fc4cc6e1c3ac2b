"""The full-load swap's SQL builders (docs/decisions/0013): exact text, identifiers always quoted."""

import pytest

from dagforge.sql import postgres as sql


def test_frozen_copy_and_logged_staging() -> None:
    assert (
        sql.create_staging("s", "stg", [sql.Column("a", "int")], logged=True)[1] == 'CREATE TABLE "s"."stg" ("a" int)'
    )
    assert sql.create_staging("s", "stg", [sql.Column("a", "int")])[1] == 'CREATE UNLOGGED TABLE "s"."stg" ("a" int)'
    assert sql.copy_in("s", "stg", ["a", "b"], True, freeze=True) == (
        'COPY "s"."stg" ("a", "b") FROM STDIN (FORMAT binary, FREEZE)'
    )
    assert sql.copy_in("s", "stg", ["a"], False, freeze=True) == 'COPY "s"."stg" ("a") FROM STDIN (FREEZE)'
    assert sql.copy_in("s", "stg", ["a"], False, csv=True, freeze=True) == (
        'COPY "s"."stg" ("a") FROM STDIN (FORMAT csv, FREEZE)'
    )


def test_indexes_and_keys_are_rebuilt_on_the_staging_table_then_renamed() -> None:
    name = sql.swap_index_name("_dagforge_stg_run_1_t", 0)
    assert name.startswith(sql.SWAP_PREFIX) and name.endswith("_0") and len(name) <= 63
    assert name != sql.swap_index_name("_dagforge_stg_run_2_t", 0)
    assert sql.create_index_as("s", "stg", name, True, "btree (id) INCLUDE (v)") == (
        f'CREATE UNIQUE INDEX "{name}" ON "s"."stg" USING btree (id) INCLUDE (v)'
    )
    assert sql.add_key_using_index("s", "stg", "i", "p", False, False) == (
        'ALTER TABLE "s"."stg" ADD CONSTRAINT "i" PRIMARY KEY USING INDEX "i"'
    )
    assert sql.add_key_using_index("s", "stg", "i", "u", True, True) == (
        'ALTER TABLE "s"."stg" ADD CONSTRAINT "i" UNIQUE USING INDEX "i" DEFERRABLE INITIALLY DEFERRED'
    )
    assert sql.rename_constraint("s", "t", "i", "t_pkey") == 'ALTER TABLE "s"."t" RENAME CONSTRAINT "i" TO "t_pkey"'
    assert sql.rename_index("s", "i", 'odd "x"') == 'ALTER INDEX "s"."i" RENAME TO "odd ""x"""'


def test_the_old_table_is_dropped_without_cascade() -> None:
    assert sql.drop_replaced("s", "t") == 'DROP TABLE "s"."t"'
    assert sql.rename_table("s", "stg", "t") == 'ALTER TABLE "s"."stg" RENAME TO "t"'


def test_options_comments_and_statistics() -> None:
    assert sql.set_storage_options("s", "t", ["fillfactor=90", "autovacuum_enabled=false"]) == (
        'ALTER TABLE "s"."t" SET ("fillfactor" = \'90\', "autovacuum_enabled" = \'false\')'
    )
    assert sql.set_column_options("s", "t", "c", ["n_distinct=-0.5"]) == (
        'ALTER TABLE "s"."t" ALTER COLUMN "c" SET ("n_distinct" = \'-0.5\')'
    )
    assert sql.set_statistics("s", "t", "c", 500) == 'ALTER TABLE "s"."t" ALTER COLUMN "c" SET STATISTICS 500'
    assert sql.set_not_null("s", "t", "c") == 'ALTER TABLE "s"."t" ALTER COLUMN "c" SET NOT NULL'
    assert sql.comment_on_table("s", "t", None) == 'COMMENT ON TABLE "s"."t" IS NULL'
    assert sql.comment_on_table("s", "t", "it's") == "COMMENT ON TABLE \"s\".\"t\" IS 'it''s'"
    assert sql.comment_on_column("s", "t", "c", "EUR") == 'COMMENT ON COLUMN "s"."t"."c" IS \'EUR\''


def test_privileges() -> None:
    assert sql.grant("s", "t", "SELECT", None, False) == 'GRANT SELECT ON TABLE "s"."t" TO PUBLIC'
    assert sql.grant("s", "t", "UPDATE", "Reader", True, "v") == (
        'GRANT UPDATE ("v") ON TABLE "s"."t" TO "Reader" WITH GRANT OPTION'
    )
    assert sql.revoke_all("s", "t", None) == 'REVOKE ALL ON TABLE "s"."t" FROM PUBLIC'
    assert sql.revoke_all("s", "t", "postgres") == 'REVOKE ALL ON TABLE "s"."t" FROM "postgres"'
    with pytest.raises(ValueError, match="not a privilege"):
        sql.grant("s", "t", "SELECT; DROP TABLE x", None, False)


def test_catalog_queries_take_the_three_names() -> None:
    for query in (sql.swap_refusals(), sql.swap_indexes(), sql.swap_columns(), sql.swap_grants()):
        assert "%(schema)s" in query and "%(table)s" in query and "%(staging)s" in query
    assert sql.swap_lock("s", "t", "ACCESS EXCLUSIVE") == 'LOCK TABLE "s"."t" IN ACCESS EXCLUSIVE MODE'
