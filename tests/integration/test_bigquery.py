"""Postgres → GCS (emulator) → BigQuery (emulator): the type map value by value, re-attaching jobs,
and the olist example through Airflow (dataset branch both ways, full and incremental, transforms).

The BigQuery emulator keeps tables in DuckDB, whose decimals stop at 38 digits: it cannot create a
BIGNUMERIC column at all. Those rows of the type map are checked up to the staged file (the exact
digits BigQuery's loader reads); see docs/decisions/0007-bigquery-destination.md.
"""

from __future__ import annotations

import base64
import decimal
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from dagforge.bigquery import load as bq
from dagforge.bigquery.types import TYPE_MAP, bigquery_type
from dagforge.contracts import Window
from dagforge.devservices.compare import compare_bigquery, postgres_rows_as_bigquery
from dagforge.devservices.gcp import PROJECT, GcpEmulators
from dagforge.loadspec import TableLoad, TableRef
from dagforge.sources.postgres import PostgresSource, choose_window
from dagforge.spec.model import LoadMode
from dagforge.stage.extract_load import extract, read_manifest, run_prefix, with_extract_again
from tests.conftest import run_concurrently, without_dbt
from tests.integration.conftest import REPO_ROOT, SEED_DIR, Sandbox

pytestmark = pytest.mark.integration

# One column per example type of every row of the type map, and values at the edges.
EDGE_VALUES: dict[str, list[str]] = {
    "smallint": ["-32768", "32767"],
    "integer": ["-2147483648", "0"],
    "bigint": ["-9223372036854775808", "9223372036854775807"],
    "numeric(38,9)": ["-12345678901234567890123456789.123456789", "0.000000001"],
    "numeric(12,2)": ["-9999999999.99", "0.10"],
    "numeric(10,0)": ["-9999999999", "1"],
    "numeric(38,0)": ["-99999999999999999999999999999999999999", "12345678901234567890123456789012345678"],
    "numeric(40,20)": ["-12345678901234567890.12345678901234567890", "0.00000000000000000001"],
    "numeric": ["-1234567890123456789012345678901234567.5", "0.12345678901234567890123456789012345678"],
    "real": ["-3.25", "1.5e-10"],
    "double precision": ["-1.7976931348623157e308", "0.1"],
    "boolean": ["true", "false"],
    "text": ["'São Paulo ☃ 🚀 ''quoted'' \\ back\\slash'", "'line one\nline two\ttab'"],
    "character varying(20)": ["'Kraków'", "''"],
    "character varying": ["'日本語テキスト'", "'x'"],
    "character(3)": ["'ab'", "'xyz'"],
    "uuid": ["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'00000000-0000-0000-0000-000000000000'"],
    "date": ["'1969-07-20'", "'0001-01-01'"],
    "timestamp without time zone": ["'1969-07-20 20:17:40.123456'", "'2038-01-19 03:14:08'"],
    "timestamp(3) without time zone": ["'1900-01-01 00:00:00.123'", "'2024-02-29 23:59:59.999'"],
    "timestamp with time zone": ["'1969-07-20 20:17:40.5+05:30'", "'2024-03-31 01:30:00-08:00'"],
    "timestamp(0) with time zone": ["'1950-06-15 12:00:00+00'", "'2024-10-27 02:30:00+02'"],
    "time without time zone": ["'23:59:59.999999'", "'00:00:00'"],
    "json": ["""'{"a": [1, 2.5, null], "ü": "x", "nested": {"b": true}}'""", "'[]'"],
    "jsonb": ["""'{"k": "v", "n": -1}'""", "'\"just a string\"'"],
    "bytea": ["'\\xdeadbeef00ff'", "''"],
    "integer[]": ["'{1,-2,3}'", "'{}'"],
    "text[]": ["""'{"a b","ç",""}'""", "'{}'"],
    "numeric(12,2)[]": ["'{1.10,-2.25}'", "'{}'"],
    "date[]": ["'{1969-07-20,2024-01-01}'", "'{}'"],
    "numeric(60,50)": ["-1.12345678901234567890123456789012345678901234567890", "3"],
    "time with time zone": ["'12:00:00+02'", "'00:00:00-05'"],
    "interval": ["'1 year 2 days 03:04:05'", "'-1 day'"],
    "inet": ["'192.168.0.1/24'", "'::1'"],
}
BIGNUMERIC_EXAMPLES = {e for row in TYPE_MAP if row.bigquery.startswith("BIGNUMERIC") for e in row.examples}


def column_name(type_sql: str) -> str:
    return "c_" + "".join(ch if ch.isalnum() else "_" for ch in type_sql.replace("[]", " array")).strip("_")


def types_table(conn, table: str, types: list[str]) -> None:
    """``id`` plus one column per type; rows: the two edge values of each, then all NULL."""
    columns = ", ".join(f"{column_name(t)} {t}" for t in types)
    conn.execute(f"CREATE TABLE src.{table} (id integer PRIMARY KEY, {columns})")
    for row in range(2):
        values = ", ".join(f"({EDGE_VALUES[t][row]})::{t}" for t in types)
        conn.execute(f"INSERT INTO src.{table} VALUES ({row + 1}, {values})")
    conn.execute(f"INSERT INTO src.{table} (id) VALUES (3)")


def make_load(table: str, dataset: str, mode: LoadMode = LoadMode.FULL, **extra: Any) -> TableLoad:
    return TableLoad("p", TableRef("src", "src", table), TableRef("gcp", dataset, table), mode, ("id",), **extra)


def load_once(world: dict[str, Any], load: TableLoad, fmt: str, run_id: str, messages: list | None = None) -> Any:
    """check → extract → load → publish, as the operators call them."""
    client, ds, source, store = world["client"], world["dataset"], world["source"], world["store"]
    progress = (lambda *args: messages.append(args[0] % args[1:])) if messages is not None else bq.log.info
    window = choose_window(source, load, lambda: bq.read_state(client, ds, load))
    if not window.new_rows:
        return window
    prefix = run_prefix("raw", load, run_id)
    extract(PostgresSource(source), load, window, store, prefix, fmt, run_id, encoding="bigquery")
    manifest = read_manifest(store, prefix)
    staged = bq.load_staging(client, ds, load, manifest, load.staging_table(run_id), run_id, progress)
    bq.publish(client, ds, load, staged, run_id, progress)
    return window


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_every_type_of_the_map_round_trips_with_its_value(world: dict[str, Any], fmt: str) -> None:
    types = [t for t in EDGE_VALUES if t not in BIGNUMERIC_EXAMPLES]
    if fmt == "jsonl":
        # the emulator stores a JSON line's base64 text for BYTES instead of decoding it (BigQuery
        # decodes it); test_jsonl_bytes_are_base64_of_the_exact_bytes checks those lines
        types.remove("bytea")
    types_table(world["source"], "types", types)
    load = make_load("types", world["dataset"].dataset)

    load_once(world, load, fmt, "manual__1")

    table = world["client"].get_table(world["dataset"].table_id("types"))
    got = {f.name: (f.field_type, f.mode) for f in table.schema}
    legacy = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN"}
    for type_sql in types:
        want = bigquery_type(type_sql)
        assert got[column_name(type_sql)] in {(want.field_type, want.mode), (legacy.get(want.field_type), want.mode)}
    result = compare_bigquery(world["source"], world["client"], PROJECT, load)
    assert result.source_rows == 3 and result.same, _first_difference(world, load)


def _first_difference(world: dict[str, Any], load: TableLoad) -> str:
    from dagforge.devservices.compare import bigquery_rows

    names, source = postgres_rows_as_bigquery(world["source"], "src", load.source.table)
    target = bigquery_rows(world["client"], world["dataset"].table_id(load.destination.table), names)
    for src_row, dst_row in zip(source, target, strict=False):
        for name, a, b in zip(names, src_row, dst_row, strict=True):
            if a != b:
                return f"{name}: source {a!r} != bigquery {b!r}"
    return f"rows: {len(source)} vs {len(target)}"


def test_every_row_of_the_type_map_has_an_edge_value_case() -> None:
    examples = {e for row in TYPE_MAP for e in row.examples}
    assert examples == set(EDGE_VALUES)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_bignumeric_values_reach_the_staged_file_with_every_digit(world: dict[str, Any], fmt: str) -> None:
    types = sorted(BIGNUMERIC_EXAMPLES)
    types_table(world["source"], "big", types)
    load = make_load("big", world["dataset"].dataset)
    window = Window("full", None, True, "test")
    prefix = run_prefix("raw", load, "manual__1")
    manifest = extract(
        PostgresSource(world["source"]), load, window, world["store"], prefix, fmt, "manual__1", encoding="bigquery"
    )
    schema = bq.schema_for(manifest.columns)
    assert {f.name: (f.field_type, f.precision, f.scale) for f in schema if f.name != "id"} == {
        "c_numeric_38_0": ("BIGNUMERIC", 38, 0),
        "c_numeric_40_20": ("BIGNUMERIC", 40, 20),
        "c_numeric": ("BIGNUMERIC", None, None),
    }
    local = world["store"].bucket.blob(manifest.parts[0]["key"]).download_as_bytes()
    if fmt == "parquet":
        path = f"/tmp/{uuid.uuid4().hex}.parquet"
        with open(path, "wb") as out:
            out.write(local)
        rows = pq.read_table(path).to_pylist()
    else:
        rows = [json.loads(line, parse_float=decimal.Decimal) for line in local.decode().splitlines()]
    by_id = {int(row["id"]): row for row in rows}  # jsonl: INT64 as a string
    for index in range(2):
        for type_sql in types:
            value = by_id[index + 1][column_name(type_sql)]
            assert decimal.Decimal(str(value)) == decimal.Decimal(EDGE_VALUES[type_sql][index]), type_sql
    assert all(by_id[3][column_name(t)] is None for t in types)


def test_jsonl_bytes_are_base64_of_the_exact_bytes(world: dict[str, Any]) -> None:
    types_table(world["source"], "bin", ["bytea"])
    load = make_load("bin", world["dataset"].dataset)
    prefix = run_prefix("raw", load, "manual__1")
    window = Window("full", None, True, "test")
    manifest = extract(
        PostgresSource(world["source"]), load, window, world["store"], prefix, "jsonl", "manual__1", encoding="bigquery"
    )
    lines = world["store"].bucket.blob(manifest.parts[0]["key"]).download_as_bytes().decode().splitlines()
    values = {int(row["id"]): row["c_bytea"] for row in map(json.loads, lines)}
    assert values == {1: base64.b64encode(bytes.fromhex("deadbeef00ff")).decode(), 2: "", 3: None}


def test_incremental_merges_changes_and_a_retry_reattaches_instead_of_repeating(world: dict[str, Any]) -> None:
    source = world["source"]
    source.execute(
        "CREATE TABLE src.items (id integer PRIMARY KEY, name text, price numeric(10,2), updated_at timestamptz)"
    )
    source.execute(
        "INSERT INTO src.items SELECT g, 'item ' || g, g * 1.25, "
        "timestamptz '2024-01-01 00:00+00' + g * interval '1 min' FROM generate_series(1, 500) g"
    )
    load = make_load("items", world["dataset"].dataset, LoadMode.INCREMENTAL, cursor="updated_at")
    first = load_once(world, load, "parquet", "scheduled__1")
    assert first.reason == "first incremental run: loading every row"
    assert compare_bigquery(source, world["client"], PROJECT, load).same

    source.execute("UPDATE src.items SET price = -1, updated_at = updated_at + interval '1 day' WHERE id <= 10")
    source.execute("INSERT INTO src.items VALUES (501, 'new', 9.99, timestamptz '2024-02-01 00:00+00')")
    client, ds, store = world["client"], world["dataset"], world["store"]
    window = choose_window(source, load, lambda: bq.read_state(client, ds, load))
    assert window.load_mode == "incremental" and window.watermark.startswith("2024-01-01 08:20:00")
    prefix = run_prefix("raw", load, "scheduled__2")
    extract(PostgresSource(source), load, window, store, prefix, "parquet", "scheduled__2", encoding="bigquery")
    manifest = read_manifest(store, prefix)
    staging = load.staging_table("scheduled__2")

    # every step runs twice, as a retried task would: the second time finds its job and waits for it
    messages: list[str] = []
    progress = lambda *args: messages.append(args[0] % args[1:])  # noqa: E731
    for _ in range(2):
        staged = bq.load_staging(client, ds, load, manifest, staging, "scheduled__2", progress)
    for _ in range(2):
        bq.publish(client, ds, load, staged, "scheduled__2", progress)
    assert messages[0].startswith("loading 1 part(s), ") and ", 12 rows from gs://" in messages[0]
    messages = [m for m in messages if not m.startswith("loading ") and " job " in m]  # not the checks' lines
    verbs = [m.split(" job ")[0] for m in messages]
    assert verbs == ["submitted", "re-attached to", "submitted", "re-attached to"], messages
    assert bq.publish_job_id(ds, load, "scheduled__2", staged) in messages[2]

    assert staged.rows == 12  # the inclusive bound reloads the last row; MERGE makes it harmless
    assert compare_bigquery(source, client, PROJECT, load).same
    state = list(client.query(f"SELECT watermark, rows_loaded FROM `{ds.table_id('_dagforge_state')}`").result())
    assert [(r[0][:19], r[1]) for r in state] == [("2024-02-01 00:00:00", 12)]

    assert load_once(world, load, "parquet", "scheduled__3").new_rows is False


def test_new_source_columns_are_added_and_changed_types_stop_with_their_names(world: dict[str, Any]) -> None:
    source = world["source"]
    source.execute("CREATE TABLE src.evolving (id integer PRIMARY KEY, name text, updated_at integer)")
    source.execute("INSERT INTO src.evolving VALUES (1, 'a', 1), (2, 'b', 2)")
    load = make_load("evolving", world["dataset"].dataset, LoadMode.INCREMENTAL, cursor="updated_at")
    load_once(world, load, "parquet", "scheduled__1")

    source.execute("ALTER TABLE src.evolving ADD COLUMN score numeric(5,1), ADD COLUMN tags text[]")
    source.execute("INSERT INTO src.evolving VALUES (3, 'c', 3, 9.5, '{x,y}')")
    messages: list[str] = []
    load_once(world, load, "parquet", "scheduled__2", messages)
    assert any(m.startswith("adding column(s) score, tags to ") for m in messages), messages
    assert compare_bigquery(source, world["client"], PROJECT, load).same  # old rows: NULL score, no tags

    source.execute("ALTER TABLE src.evolving ALTER COLUMN name TYPE integer USING length(name)")
    source.execute("UPDATE src.evolving SET updated_at = 4 WHERE id = 1")
    changed = r"evolving: the source's columns changed: column 'name' changed type from STRING to INT64"
    with pytest.raises(bq.SchemaChanged, match=changed):
        load_once(world, load, "parquet", "scheduled__3")
    state = world["client"].query(f"SELECT watermark FROM `{world['dataset'].table_id('_dagforge_state')}`")
    assert [r[0] for r in state.result()] == ["3"]  # nothing applied


def test_a_forced_full_reload_replaces_an_incremental_table_and_restarts_its_watermark(world: dict[str, Any]) -> None:
    source, client, ds = world["source"], world["client"], world["dataset"]
    source.execute("CREATE TABLE src.facts (id integer PRIMARY KEY, v text, seq integer NOT NULL)")
    source.execute("INSERT INTO src.facts SELECT g, 'v' || g, g FROM generate_series(1, 50) g")
    load = make_load("facts", ds.dataset, LoadMode.INCREMENTAL, cursor="seq")
    load_once(world, load, "jsonl", "scheduled__1")
    source.execute("DELETE FROM src.facts WHERE id > 40")  # deletes never reach an incremental load

    window = choose_window(source, load, lambda: bq.read_state(client, ds, load), force_full=True)
    assert window.load_mode == "full"
    prefix = run_prefix("raw", load, "manual__full")
    extract(PostgresSource(source), load, window, world["store"], prefix, "jsonl", "manual__full", encoding="bigquery")
    manifest = read_manifest(world["store"], prefix)
    staged = bq.load_staging(client, ds, load, manifest, load.staging_table("manual__full"), "manual__full")
    bq.publish(client, ds, load, staged, "manual__full")

    result = compare_bigquery(source, client, PROJECT, load)
    assert result.same and result.target_rows == 40
    assert bq.read_state(client, ds, load).watermark == "40"


def test_a_dataset_without_location_is_created_where_bigquery_puts_it_by_default(gcp: GcpEmulators) -> None:
    client = gcp.bigquery_client()
    ds = bq.Dataset(PROJECT, f"d_{uuid.uuid4().hex[:10]}")
    assert not bq.dataset_exists(client, ds)
    bq.create_dataset(client, ds)
    bq.create_dataset(client, ds)  # a second time (another run got there first) is fine
    assert bq.dataset_exists(client, ds)


def test_a_failed_job_is_submitted_again_under_the_next_id(world: dict[str, Any]) -> None:
    source = world["source"]
    source.execute("CREATE TABLE src.small (id integer PRIMARY KEY, v text)")
    source.execute("INSERT INTO src.small VALUES (1, 'a'), (2, 'b')")
    load = make_load("small", world["dataset"].dataset)
    client, ds, store = world["client"], world["dataset"], world["store"]
    window = choose_window(source, load, lambda: bq.read_state(client, ds, load))
    prefix = run_prefix("raw", load, "manual__9")
    extract(PostgresSource(source), load, window, store, prefix, "jsonl", "manual__9", encoding="bigquery")
    staged = bq.load_staging(client, ds, load, read_manifest(store, prefix), load.staging_table("manual__9"), "m")
    base = bq.publish_job_id(ds, load, "manual__9", staged)
    with pytest.raises(Exception, match="earlier attempt"):
        client.query("SELECT ERROR('earlier attempt')", job_id=base, job_retry=None).result()

    messages: list[str] = []
    bq.publish(client, ds, load, staged, "manual__9", lambda *args: messages.append(args[0] % args[1:]))

    assert any(m.startswith(f"job {base} failed before") for m in messages), messages
    assert f"submitted job {base}_2" in messages
    assert compare_bigquery(source, client, PROJECT, load).same


# ---- the example, through Airflow ----------------------------------------------------------

OLIST_TABLES = ("customers", "sellers", "products", "orders", "order_items", "payments")


OLIST_SQL = """transform:
  sql:
    - name: sales_by_category
      sql: transforms/olist/sales_by_category.sql
      depends_on: [order_items, products, orders]
    - {name: orders_by_state, sql: transforms/olist/orders_by_state.sql, depends_on: [orders, customers, payments]}
"""


@pytest.fixture
def olist(sandbox: Sandbox, gcp: GcpEmulators, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    monkeypatch.setenv("AIRFLOW_CONN_OLIST_DB", sandbox.source_server.airflow_conn_uri(sandbox.database))
    monkeypatch.setenv("AIRFLOW_CONN_GCP", gcp.airflow_conn_uri())
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", json.dumps({"conn_type": "slackwebhook", "password": "x"}))
    shutil.copy(REPO_ROOT / "pipelines" / "defaults.yml", sandbox.pipelines_dir)
    shutil.copytree(REPO_ROOT / "pipelines" / "dbt" / "olist", sandbox.pipelines_dir / "dbt" / "olist")
    # BigQuery SQL transforms beside the example's dbt models (the SQL the models replaced)
    shutil.copytree(Path(__file__).parent / "sql" / "olist", sandbox.pipelines_dir / "transforms" / "olist")
    text = (REPO_ROOT / "pipelines" / "olist_to_bigquery.yml").read_text().replace("transform:\n", OLIST_SQL, 1)
    text = text.replace("olist-lake", f"lake-{sandbox.database.replace('_', '-')}")
    sandbox.write_pipeline("olist_to_bigquery.yml", text.replace("dataset: olist", f"dataset: {sandbox.database}"))
    sandbox.connect("source").execute((SEED_DIR / "olist.sql").read_text())
    return sandbox


def test_olist_example_branches_loads_merges_and_models(olist: Sandbox, gcp: GcpEmulators) -> None:
    client, source = gcp.bigquery_client(), olist.connect("source")

    def loads(table: str) -> TableLoad:
        return make_load(table, olist.database).__class__(
            "olist_to_bigquery", TableRef("olist_db", "olist", table), TableRef("gcp", olist.database, table),
            LoadMode.FULL,
        )  # fmt: skip

    abandoned = "md5('order-abandoned')::uuid"  # an order without items or payments: deleted before run 2
    source.execute(f"INSERT INTO olist.orders SELECT {abandoned}, md5('customer1')::uuid, 'created', "
                   "localtimestamp(0), NULL, NULL, current_date + 20, now()")  # fmt: skip
    first = olist.run("olist_to_bigquery")
    assert first.succeeded, first.task_states
    assert first.task_states["create_dataset"] == "success" and first.task_states["dataset_exists"] == "skipped"
    for table in OLIST_TABLES:
        assert compare_bigquery(source, client, PROJECT, loads(table)).same, table

    # the example's dbt project, run by dbt-bigquery against the emulator, in the first run only
    # (each model is a task of seconds): the SQL transforms' rows, and one fact row per order
    dbt = {task: state for task, state in first.task_states.items() if task.startswith("dbt.")}
    assert len(dbt) >= 10 and set(dbt.values()) == {"success"}, dbt
    analytics = f"{PROJECT}.{olist.database}_analytics"
    query = f"SELECT state, orders, customers FROM `{analytics}.int_orders_by_state`"
    transformed = f"SELECT state, orders, customers FROM `{PROJECT}.{olist.database}.orders_by_state`"
    assert {tuple(r) for r in client.query(query)} == {tuple(r) for r in client.query(transformed)}
    (orders,) = source.execute("SELECT count(*) FROM olist.orders").fetchone()
    assert next(iter(client.query(f"SELECT count(*) FROM `{analytics}.fct_orders`").result()))[0] == orders
    pipeline = olist.pipelines_dir / "olist_to_bigquery.yml"
    pipeline.write_text(without_dbt(pipeline.read_text()))

    source.execute((SEED_DIR / "changes" / "olist.sql").read_text())
    source.execute(f"DELETE FROM olist.orders WHERE order_id = {abandoned}")  # orders has deletes: hard
    second = olist.run("olist_to_bigquery")
    assert second.succeeded, second.task_states
    assert second.task_states["create_dataset"] == "skipped" and second.task_states["dataset_exists"] == "success"
    assert second.task_states["customers.publish_customers"] == "success"
    for table in OLIST_TABLES:
        assert compare_bigquery(source, client, PROJECT, loads(table)).same, table
    state = client.query(f"SELECT reconciliation FROM `{PROJECT}.{olist.database}._dagforge_state` "
                         "WHERE table_name = 'orders'").result()  # fmt: skip
    results = {r["name"]: r["ok"] for r in json.loads(next(iter(state))[0])["results"]}
    assert results == {"reconcile rows": True, "not_null customer_id": True, "min_rows 1": True}

    by_state = {
        r[0]: (r[1], r[2])
        for r in client.query(f"SELECT state, orders, customers FROM `{PROJECT}.{olist.database}.orders_by_state`")
    }
    expected = source.execute(
        "SELECT c.state, count(DISTINCT o.order_id), count(DISTINCT o.customer_id) FROM olist.orders o "
        "JOIN olist.customers c USING (customer_id) GROUP BY c.state"
    ).fetchall()
    assert by_state == {state: (orders, customers) for state, orders, customers in expected}
    assert {r[0] for r in client.query(f"SELECT category FROM `{PROJECT}.{olist.database}.sales_by_category`")} >= {
        "unknown",
        "toys",
    }

    third = olist.run("olist_to_bigquery")
    assert third.succeeded, third.task_states
    assert third.task_states["payments.extract_payments"] == "skipped"  # nothing new
    assert third.task_states["sellers.publish_sellers"] == "success"  # full tables always reload


# ---- the ordering rules (docs/decisions/0008) in BigQuery ---------------------------------------


def stage_for_bigquery(world: dict[str, Any], load: TableLoad, run_id: str, fmt: str = "parquet") -> Any:
    """check → extract → load, as the operators call them; the staged result for publish."""
    client, ds, source, store = world["client"], world["dataset"], world["source"], world["store"]
    window = choose_window(source, load, lambda: bq.read_state(client, ds, load))
    prefix = run_prefix("raw", load, run_id)
    extract(PostgresSource(source), load, window, store, prefix, fmt, run_id, encoding="bigquery")
    return bq.load_staging(client, ds, load, read_manifest(store, prefix), load.staging_table(run_id), run_id)


ITEMS = (
    "CREATE TABLE src.items (id integer PRIMARY KEY, v text, updated_at timestamptz NOT NULL);"
    "INSERT INTO src.items SELECT g, 'v1', timestamptz '2024-01-01 00:00+00' + g * interval '1 s' "
    "FROM generate_series(1, 200) g"
)


def test_a_late_merge_never_reverts_rows_or_the_watermark(world: dict[str, Any]) -> None:
    source, client, ds = world["source"], world["client"], world["dataset"]
    source.execute(ITEMS)
    load = make_load("items", ds.dataset, LoadMode.INCREMENTAL, cursor="updated_at", lookback="1h")
    bq.publish(client, ds, load, stage_for_bigquery(world, load, "r0"), "r0")
    source.execute("UPDATE src.items SET v = 'v1b', updated_at = updated_at + interval '1 hour'")
    run1 = stage_for_bigquery(world, load, "r1")
    source.execute("UPDATE src.items SET v = 'v2', updated_at = updated_at + interval '1 day'")
    bq.publish(client, ds, load, stage_for_bigquery(world, load, "r2"), "r2")

    bq.publish(client, ds, load, run1, "r1")  # run 1's publish, retried after run 2's

    assert compare_bigquery(source, client, PROJECT, load).same
    newest = source.execute("SELECT max(updated_at)::text FROM src.items").fetchone()[0]
    assert bq.read_state(client, ds, load).watermark == newest


def test_a_late_full_replace_never_brings_an_older_snapshot_back(world: dict[str, Any]) -> None:
    source, client, ds = world["source"], world["client"], world["dataset"]
    source.execute(ITEMS)
    load = make_load("items", ds.dataset, LoadMode.FULL)
    yesterday = stage_for_bigquery(world, load, "yesterday", "jsonl")
    source.execute("UPDATE src.items SET v = 'v2'; DELETE FROM src.items WHERE id > 150")
    bq.publish(client, ds, load, stage_for_bigquery(world, load, "today", "jsonl"), "today")

    late = bq.publish(client, ds, load, yesterday, "yesterday")

    assert not late.applied and late.reason.startswith("not applied: a newer snapshot is published already")
    result = compare_bigquery(source, client, PROJECT, load)
    assert result.same and result.target_rows == 150
    runs = list(client.query(f"SELECT run_id FROM `{ds.table_id('_dagforge_state')}`").result())
    assert [r[0] for r in runs] == ["today"]


def test_lost_bigquery_staging_is_loaded_again_before_the_merge(world: dict[str, Any]) -> None:
    source, client, ds, store = world["source"], world["client"], world["dataset"], world["store"]
    source.execute(ITEMS)
    load = make_load("items", ds.dataset, LoadMode.INCREMENTAL, cursor="updated_at")
    staged = stage_for_bigquery(world, load, "r1")
    client.delete_table(ds.table_id(staged.staging_table))  # expired, or dropped by hand
    prefix = run_prefix("raw", load, "r1")
    store.delete_prefix(prefix)  # and the bucket was cleaned too: extract again

    def restage() -> Any:
        def load_parts() -> Any:
            return bq.load_staging(client, ds, load, read_manifest(store, prefix), staged.staging_table, "r1")

        def again() -> Any:
            return extract(
                PostgresSource(source), load, staged.source_window, store, prefix, "parquet", "r1", encoding="bigquery"
            )

        return with_extract_again(load_parts, again, "items")

    bq.publish(client, ds, load, staged, "r1", restage=restage)

    assert compare_bigquery(source, client, PROJECT, load).same
    assert (
        bq.read_state(client, ds, load).watermark
        == source.execute("SELECT max(updated_at)::text FROM src.items").fetchone()[0]
    )


def test_bigquery_staging_that_lost_rows_is_loaded_again_before_the_merge(world: dict[str, Any]) -> None:
    source, client, ds, store = world["source"], world["client"], world["dataset"], world["store"]
    source.execute(ITEMS)
    load = make_load("items", ds.dataset, LoadMode.INCREMENTAL, cursor="updated_at")
    staged = stage_for_bigquery(world, load, "r1")
    client.query(f"DELETE FROM {ds.table_sql(staged.staging_table)} WHERE id <= 10").result()  # rows gone
    prefix = run_prefix("raw", load, "r1")

    def restage() -> Any:
        return bq.load_staging(client, ds, load, read_manifest(store, prefix), staged.staging_table, "r1")

    bq.publish(client, ds, load, staged, "r1", restage=restage)

    assert compare_bigquery(source, client, PROJECT, load).same


def test_concurrent_publishes_of_one_table_all_succeed_and_converge(world: dict[str, Any]) -> None:
    """A backfill: four runs publish one table at once (the emulator may serialize or abort them)."""
    source, client, ds = world["source"], world["client"], world["dataset"]
    source.execute(ITEMS)
    load = make_load("items", ds.dataset, LoadMode.INCREMENTAL, cursor="updated_at")
    bq.publish(client, ds, load, stage_for_bigquery(world, load, "r0"), "r0")
    staged = []
    for i in range(4):
        source.execute(
            f"UPDATE src.items SET v = 'v{i}', updated_at = updated_at + interval '1 day' WHERE id % 4 = {i}"
        )
        staged.append(stage_for_bigquery(world, load, f"b{i}"))
    publishes = [lambda i=i: bq.publish(client, ds, load, staged[i], f"b{i}") for i in range(4)]

    errors = run_concurrently(publishes)

    assert errors == []
    assert compare_bigquery(source, client, PROJECT, load).same
    newest = source.execute("SELECT max(updated_at)::text FROM src.items").fetchone()[0]
    assert bq.read_state(client, ds, load).watermark == newest
