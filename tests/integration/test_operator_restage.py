"""The publish operators' own way back from lost staging, through Airflow connections (hooks) to
real servers: staging dropped and the bucket emptied, then each shape's ``restage`` rebuilds it
and the publish completes. (The fault suite runs the same composition in killable processes.)"""

from __future__ import annotations

import uuid

import pytest

from dagforge.contracts import Window
from dagforge.loadspec import TableLoad, TableRef
from dagforge.sources.postgres import PostgresSource
from dagforge.spec.model import LoadMode
from dagforge.stage.extract_load import extract, load_staged, run_prefix
from dagforge.stage.s3_store import S3Store
from dagforge.transfer import postgres_load
from tests.integration.conftest import Sandbox, table_fingerprint

pytestmark = pytest.mark.integration

RUN = "manual__restage"
FIRST = Window("incremental", None, True, "first incremental run: loading every row")


@pytest.fixture
def items(sandbox: Sandbox) -> Sandbox:
    sandbox.connect("source").execute(
        "CREATE SCHEMA src; CREATE TABLE src.items (id int PRIMARY KEY, v text, updated_at timestamptz NOT NULL);"
        "INSERT INTO src.items SELECT g, 'v' || g, now() - g * interval '1 s' FROM generate_series(1, 3000) g"
    )
    return sandbox


def items_load() -> TableLoad:
    return TableLoad("p", TableRef("sales_src", "src", "items"), TableRef("sales_dwh", "dst", "items"),
                     LoadMode.INCREMENTAL, ("id",), cursor="updated_at")  # fmt: skip


def assert_published(box: Sandbox) -> None:
    target = box.connect("target")
    assert table_fingerprint(target, "dst.items") == table_fingerprint(box.connect("source"), "src.items")


def test_the_direct_publish_operator_stages_again(items: Sandbox) -> None:
    from operators.postgres import PostgresPublishTableOperator

    load = items_load()
    source, target = items.connect("source"), items.connect("target")
    postgres_load.prepare_destination(target, load)
    staged, _ = postgres_load.stage(PostgresSource(source), target, load, FIRST, load.staging_table(RUN))
    target.execute(f"DROP TABLE dst.{staged.staging_table}")
    operator = PostgresPublishTableOperator(task_id="publish_items", load=load.to_dict())

    outcome = postgres_load.publish(
        target, load, staged, RUN, lambda: operator.restage(target, staged, {"run_id": RUN})
    )

    assert outcome.applied and outcome.rows == 3000
    assert_published(items)


def test_the_store_publish_operator_extracts_again_when_the_files_are_gone(
    items: Sandbox, s3_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from operators.stage import PostgresPublishFromStoreOperator

    monkeypatch.setenv("AIRFLOW_CONN_MINIO", s3_server.airflow_conn_uri())
    bucket = f"restage-{uuid.uuid4().hex[:8]}"
    stage = {"kind": "s3", "connection": "minio", "bucket": bucket, "prefix": "raw", "format": "parquet",
             "encoding": "postgres"}  # fmt: skip
    load = items_load()
    store = S3Store(s3_server.client(), bucket)
    prefix = run_prefix("raw", load, RUN)
    source, target = items.connect("source"), items.connect("target")
    postgres_load.prepare_destination(target, load)
    extract(PostgresSource(source), load, FIRST, store, prefix, "parquet", RUN)
    staged = load_staged(target, load, store, prefix, load.staging_table(RUN))
    target.execute(f"DROP TABLE dst.{staged.staging_table}")
    store.delete_prefix(prefix)
    operator = PostgresPublishFromStoreOperator(task_id="publish_items", load=load.to_dict(), stage=stage)

    outcome = postgres_load.publish(
        target, load, staged, RUN, lambda: operator.restage(target, staged, {"run_id": RUN})
    )

    assert outcome.applied and outcome.rows == 3000
    assert_published(items)
    assert any(key.endswith("manifest.json") for key in store.list_keys(prefix))


def test_the_bigquery_publish_operator_loads_and_extracts_again(
    items: Sandbox, gcp, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagforge.bigquery import load as bq
    from dagforge.devservices.compare import compare_bigquery
    from dagforge.devservices.gcp import PROJECT
    from dagforge.stage.gcs_store import GCSStore
    from operators.bigquery import BigQueryPublishOperator

    monkeypatch.setenv("AIRFLOW_CONN_GCP", gcp.airflow_conn_uri())
    suffix = uuid.uuid4().hex[:8]
    warehouse = {"connection": "gcp", "project": PROJECT, "dataset": f"restage_{suffix}", "location": None}
    stage = {"kind": "gcs", "connection": "gcp", "bucket": f"restage-{suffix}", "prefix": "raw", "format": "jsonl",
             "encoding": "bigquery"}  # fmt: skip
    load = TableLoad("p", TableRef("sales_src", "src", "items"), TableRef("gcp", warehouse["dataset"], "items"),
                     LoadMode.INCREMENTAL, ("id",), cursor="updated_at")  # fmt: skip
    client, ds = gcp.bigquery_client(), bq.Dataset(PROJECT, warehouse["dataset"])
    bq.create_dataset(client, ds)
    store = GCSStore(gcp.storage_client(), stage["bucket"])
    operator = BigQueryPublishOperator(task_id="publish_items", load=load.to_dict(), stage=stage, warehouse=warehouse)
    staged = operator.load_staging(load.staging_table(RUN), FIRST, {"run_id": RUN})  # no files yet: extracts
    client.delete_table(ds.table_id(staged.staging_table))
    store.delete_prefix(run_prefix("raw", load, RUN))

    def restage():
        return operator.load_staging(staged.staging_table, staged.source_window, {"run_id": RUN})

    bq.publish(client, ds, load, staged, RUN, restage=restage)

    assert compare_bigquery(items.connect("source"), client, PROJECT, load).same
