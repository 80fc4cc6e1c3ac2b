"""BigQuery pieces that need no service: the type map (and its README table), SQL text, job ids,
the plan of a Postgres → GCS → BigQuery pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagforge.bigquery import sql
from dagforge.bigquery.load import Dataset, job_id, publish_script
from dagforge.bigquery.types import TYPE_MAP, BigQueryType, bigquery_type, markdown_table
from dagforge.catalog import build_catalog
from dagforge.contracts import Staged
from dagforge.loadspec import TableLoad, TableRef
from dagforge.spec.model import LoadMode
from dagforge.stage.encodings import ENCODINGS, ndjson_line

REPO = Path(__file__).resolve().parents[2]

EXPECTED = {
    "smallint": BigQueryType("INT64"),
    "integer": BigQueryType("INT64"),
    "bigint": BigQueryType("INT64"),
    "numeric(38,9)": BigQueryType("NUMERIC", precision=38, scale=9),
    "numeric(12,2)": BigQueryType("NUMERIC", precision=12, scale=2),
    "numeric(10,0)": BigQueryType("NUMERIC", precision=10, scale=0),
    "numeric(38,0)": BigQueryType("BIGNUMERIC", precision=38, scale=0),
    "numeric(40,20)": BigQueryType("BIGNUMERIC", precision=40, scale=20),
    "numeric": BigQueryType("BIGNUMERIC"),
    "real": BigQueryType("FLOAT64"),
    "double precision": BigQueryType("FLOAT64"),
    "boolean": BigQueryType("BOOL"),
    "text": BigQueryType("STRING"),
    "character varying(20)": BigQueryType("STRING"),
    "character varying": BigQueryType("STRING"),
    "character(3)": BigQueryType("STRING"),
    "uuid": BigQueryType("STRING"),
    "date": BigQueryType("DATE"),
    "timestamp without time zone": BigQueryType("DATETIME"),
    "timestamp(3) without time zone": BigQueryType("DATETIME"),
    "timestamp with time zone": BigQueryType("TIMESTAMP"),
    "timestamp(0) with time zone": BigQueryType("TIMESTAMP"),
    "time without time zone": BigQueryType("TIME"),
    "json": BigQueryType("JSON"),
    "jsonb": BigQueryType("JSON"),
    "bytea": BigQueryType("BYTES"),
    "integer[]": BigQueryType("INT64", "REPEATED"),
    "text[]": BigQueryType("STRING", "REPEATED"),
    "numeric(12,2)[]": BigQueryType("NUMERIC", "REPEATED", 12, 2),
    "date[]": BigQueryType("DATE", "REPEATED"),
    "numeric(60,50)": BigQueryType("STRING"),
    "time with time zone": BigQueryType("STRING"),
    "interval": BigQueryType("STRING"),
    "inet": BigQueryType("STRING"),
}


@pytest.mark.parametrize("row", TYPE_MAP, ids=lambda row: row.postgres)
def test_every_row_of_the_type_map_maps_its_examples(row) -> None:
    assert row.examples
    for example in row.examples:
        assert bigquery_type(example) == EXPECTED[example], example


def test_the_readme_shows_the_type_map_as_the_code_has_it() -> None:
    assert markdown_table() in (REPO / "README.md").read_text()


def test_numeric_goes_to_the_smallest_type_that_keeps_every_digit() -> None:
    assert bigquery_type("numeric(29,0)").field_type == "NUMERIC"
    assert bigquery_type("numeric(30,0)").field_type == "BIGNUMERIC"  # 30 integer digits
    assert bigquery_type("numeric(10,10)").field_type == "BIGNUMERIC"  # 10 decimal places
    assert bigquery_type("numeric(76,38)").field_type == "BIGNUMERIC"
    assert bigquery_type("numeric(77,38)").field_type == "STRING"
    assert bigquery_type("numeric(12, 2)").field("price") == {
        "name": "price",
        "type": "NUMERIC",
        "mode": "NULLABLE",
        "precision": "12",
        "scale": "2",
    }


def test_literals_and_identifiers_are_escaped() -> None:
    assert sql.literal("it's a \\ test\n") == "'it\\'s a \\\\ test\\n'"
    assert sql.literal(None) == "NULL"
    assert sql.table("my-project", "raw", "orders") == "`my-project.raw.orders`"
    assert sql.ident("we`ird") == "`we\\`ird`"


LOAD = TableLoad(
    "olist", TableRef("db", "olist", "order_items"), TableRef("gcp", "raw", "order_items"), LoadMode.INCREMENTAL,
    ("order_id", "item"), cursor="updated_at",
)  # fmt: skip
DS = Dataset("my-project", "raw", "EU")


def test_publish_is_one_transaction_merging_on_the_key_and_writing_the_watermark() -> None:
    staged = Staged("_stg", 3, ["order_id", "item", "price", "updated_at"], "incremental", "2024-01-01 00:00:00+00",
                    "2024-01-02T00:00:00.000000Z", "3:42", "s1")  # fmt: skip
    script = publish_script(DS, LOAD, staged, "scheduled__x", "TIMESTAMP")
    too_old = (
        "EXISTS (SELECT 1 FROM `my-project.raw._dagforge_state` WHERE pipeline = 'olist' AND table_name = "
        "'order_items' AND full_snapshot_at > CAST('2024-01-02T00:00:00.000000Z' AS TIMESTAMP))"
    )
    assert script.startswith(
        "BEGIN TRANSACTION;\nMERGE `my-project.raw.order_items` T\n"
        f"USING (SELECT * FROM `my-project.raw._stg` WHERE NOT {too_old}) S\n"
    )
    assert "ON T.`order_id` = S.`order_id` AND T.`item` = S.`item`" in script
    assert (
        "WHEN MATCHED AND (T.`updated_at` IS NULL OR S.`updated_at` >= T.`updated_at`) "
        "THEN UPDATE SET `price` = S.`price`, `updated_at` = S.`updated_at`"
    ) in script
    assert "MERGE `my-project.raw._dagforge_state` T" in script
    assert "CAST(S.watermark AS TIMESTAMP) > CAST(T.watermark AS TIMESTAMP)" in script
    assert "watermark = IF((T.watermark IS NULL OR" in script and f"FROM UNNEST([1]) WHERE NOT {too_old}" in script
    assert script.endswith("COMMIT TRANSACTION;\n")

    full = publish_script(DS, LOAD, Staged("_stg", 3, ["order_id", "item"], "full", None, "2024-01-02T00:00:00Z"), "r")
    newer = "AND snapshot_at > CAST('2024-01-02T00:00:00Z' AS TIMESTAMP))"
    assert "DELETE FROM `my-project.raw.order_items` WHERE NOT EXISTS (SELECT 1 FROM" in full
    assert f"{newer};\nINSERT INTO" in full
    assert "WHEN MATCHED" not in full.split("_dagforge_state")[0]
    assert "full_snapshot_at = S.snapshot_at" in full


def test_new_columns_are_added_one_re_runnable_statement_each() -> None:
    columns = [("score", BigQueryType("NUMERIC", precision=5, scale=1)), ("tags", BigQueryType("STRING", "REPEATED"))]
    assert sql.add_columns("`p.d.t`", columns) == [
        "ALTER TABLE `p.d.t` ADD COLUMN IF NOT EXISTS `score` NUMERIC(5, 1)",
        "ALTER TABLE `p.d.t` ADD COLUMN IF NOT EXISTS `tags` ARRAY<STRING>",
    ]


def test_job_ids_are_fixed_per_destination_step_and_run() -> None:
    first = job_id(DS, LOAD, "scheduled__1", "load")
    assert first == job_id(DS, LOAD, "scheduled__1", "load")
    assert first.startswith("dagforge_olist_order_items_load_")
    others = {
        job_id(DS, LOAD, "scheduled__2", "load"),
        job_id(DS, LOAD, "scheduled__1", "publish"),
        job_id(Dataset("my-project", "raw_dev"), LOAD, "scheduled__1", "load"),
    }
    assert first not in others and len(others) == 3


def test_json_lines_are_built_by_postgres_in_column_order() -> None:
    line = ndjson_line(ENCODINGS["bigquery"], [("id", "bigint"), ("amount", "numeric(12,2)"), ("doc", "jsonb")])
    # integers as strings too: BigQuery's JSON loader corrupts numbers beyond ±2^53
    assert line.startswith("""'{"id": ' || COALESCE((to_json("id"::text))::text, 'null')""")
    assert """', "amount": ' || CASE WHEN "amount" IN ('NaN', 'Infinity', '-Infinity') THEN""" in line
    assert """ELSE COALESCE((to_json("amount"::text))::text, 'null') END""" in line
    assert line.endswith("""ELSE COALESCE(("doc"::jsonb)::text, 'null') END || '}'""")


def test_the_bigquery_example_plans_the_dataset_branch_before_every_table() -> None:
    (entry,) = build_catalog([REPO / "pipelines" / "olist_to_bigquery.yml"])
    tasks = entry.config["tasks"]
    assert tasks["check_dataset"]["operator"] == "operators.bigquery.BigQueryDatasetBranchOperator"
    assert tasks["create_dataset"]["dependencies"] == ["check_dataset"]
    assert tasks["dataset_exists"]["dependencies"] == ["check_dataset"]
    checks = [name for name, task in tasks.items() if task.get("operator", "").endswith("BigQueryCheckNewRowsOperator")]
    assert len(checks) == 6
    for name in checks:
        assert tasks[name]["dependencies"] == ["create_dataset", "dataset_exists"]
        assert tasks[name]["trigger_rule"] == "none_failed_min_one_success"
    extract = tasks["extract_orders"]
    assert extract["stage"]["encoding"] == "bigquery" and extract["stage"]["kind"] == "gcs"
    assert extract["stage"]["location"] == "US"  # a bucket dagforge creates lives with the dataset
    model = tasks["fct_orders_run"]
    assert model["operator"] == "operators.dbt.DbtRunModelOperator" and model["task_group_name"] == "dbt"
    assert model["profile"] == {"kind": "bigquery", "connection": "gcp", "schema": "olist_analytics",
                                "project": "dagforge-local", "location": "US"}  # fmt: skip
    assert model["dbt_vars"] == {"dagforge_schema": "olist"}


def test_the_validation_rule_knows_the_formats_each_destination_reads() -> None:
    from dagforge.spec.rules import STAGE_FORMATS_BY_DESTINATION
    from dagforge.stage.formats import FORMATS

    # the rule keeps its own list so that `dagforge validate` does not import pyarrow
    for destination, readable in STAGE_FORMATS_BY_DESTINATION.items():
        assert set(readable) == set(FORMATS[destination])


def test_a_job_aborted_by_a_concurrent_transaction_is_told_apart_from_bad_sql() -> None:
    from google.api_core.exceptions import BadRequest

    from dagforge.bigquery.load import concurrent_update

    aborted = BadRequest("Transaction is aborted due to concurrent update against table p.d.items")
    assert concurrent_update(aborted)
    assert concurrent_update(BadRequest("Could not serialize access to table p.d.t due to concurrent update"))
    assert not concurrent_update(BadRequest("Syntax error: Unexpected keyword MERGE at [2:1]"))


# ---- values BigQuery cannot hold are refused in the export SELECT (dagforge.bigquery.guards) ----

ALL_EXAMPLES = [e for row in TYPE_MAP for e in row.examples] + ["src.mood", "src.pair[]", "xml", "bytea[]"]


@pytest.mark.parametrize("type_sql", ALL_EXAMPLES)
def test_no_export_expression_holds_a_percent_sign(type_sql: str) -> None:
    # an incremental export passes query parameters, where % is a placeholder
    encoding = ENCODINGS["bigquery"]
    assert "%" not in encoding.codec("c", type_sql).select + encoding.ndjson_value("c", type_sql)


@pytest.mark.parametrize(
    ("type_sql", "condition"),
    [
        ("date", """WHEN "c" NOT BETWEEN '0001-01-01' AND '9999-12-31' THEN"""),
        (
            "timestamp with time zone",
            """WHEN "c" NOT BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59.999999+00'""",
        ),
        ("time without time zone", """WHEN "c" > '23:59:59.999999' THEN"""),
        ("numeric(12,2)", """WHEN "c" IN ('NaN', 'Infinity', '-Infinity') THEN"""),
        ("numeric", """OR abs("c") >= 1e38 OR "c" <> round("c", 38) THEN"""),
        ("jsonb", """FROM jsonb_path_query("c"::jsonb, 'strict $.**')"""),
        ("integer[]", """WHEN array_ndims("c") > 1 THEN"""),
        ("text[]", """WHEN num_nulls(VARIADIC "c") > 0 THEN"""),
        ("date[]", """FROM unnest("c") AS u(e) WHERE e NOT BETWEEN '0001-01-01' AND '9999-12-31'"""),
    ],
)
def test_each_type_refuses_in_the_select_what_bigquery_cannot_hold(type_sql: str, condition: str) -> None:
    encoding = ENCODINGS["bigquery"]
    assert condition in encoding.codec("c", type_sql).select
    assert condition in encoding.ndjson_value("c", type_sql)


@pytest.mark.parametrize("type_sql", ["bigint", "double precision", "boolean", "text", "bytea", "interval"])
def test_types_bigquery_holds_whole_are_not_guarded(type_sql: str) -> None:
    encoding = ENCODINGS["bigquery"]
    assert "::integer)::text" not in encoding.codec("c", type_sql).select + encoding.ndjson_value("c", type_sql)


def test_string_columns_leave_as_the_types_output_text() -> None:
    # ::text would strip character(n)'s padding and add inet's /32; a composite of NULLs IS NULL
    assert ENCODINGS["bigquery"].codec("c", "character(3)").select == (
        'CASE WHEN num_nulls("c") = 0 THEN concat("c") END AS "c"'
    )


def test_a_refusal_comes_back_from_the_error_as_column_value_and_reason() -> None:
    from dagforge.bigquery.guards import MARKER, refused_value
    from dagforge.errors import TerminalError

    class Error:  # what psycopg gives for the guard's failed cast
        class diag:
            message_primary = (
                f'invalid input syntax for type integer: "{MARKER}\x1fvalid_to\x1fno infinity\x1finfinity"'
            )

    refused = refused_value(Error())
    assert isinstance(refused, TerminalError)
    assert (refused.column, refused.value, refused.reason) == ("valid_to", "infinity", "no infinity")
    assert str(refused) == "column 'valid_to': BigQuery cannot hold the value infinity: no infinity"

    class Other:
        class diag:
            message_primary = 'invalid input syntax for type integer: "abc"'

    assert refused_value(Other()) is None


@pytest.mark.parametrize("row", TYPE_MAP, ids=lambda row: row.postgres)
def test_every_row_says_what_it_refuses_or_that_it_is_exact(row) -> None:
    from dagforge.bigquery.guards import guarded

    refuses = any(guarded("c", '"c"', bigquery_type(e), "x") != "x" for e in row.examples)
    assert ("refused" in row.note) == refuses or row.postgres.startswith("T[]"), row.note
    assert row.note
