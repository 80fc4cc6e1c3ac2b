"""Real faults for the HTTP file source (mode: interval, into the Postgres warehouse through S3):
the extract killed with SIGKILL mid-download, the HTTP server killed mid-download and restarted,
and the publish of a corrected month killed mid-DELETE. After each, the next attempt (a new
process, as Airflow's retry is) leaves exactly the month's file in the table, once."""

from __future__ import annotations

import json
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from dagforge.devservices import tripdata
from dagforge.devservices.process import ChildServer, free_port, start_http_server
from dagforge.loadspec import TableLoad, TableRef
from dagforge.spec.model import INTERVAL_COLUMN, LoadMode
from tests.conftest import Sandbox
from tests.faults.conftest import Child, query_one, run_step, wait_for_no_child_backends, wait_until
from tests.integration.file_loads import month_run

pytestmark = pytest.mark.faults

TEMPLATE = "yellow_tripdata_{{ data_interval_start | month }}.csv.gz"
LOAD = TableLoad(
    "files", TableRef("", "", "trips"), TableRef("", "dst", "trips"), LoadMode.INTERVAL,
    source_kind="http",
    source_options={"url": TEMPLATE, "format": "csv.gz", "columns": tripdata.COLUMNS, "missing": "skip"},
)  # fmt: skip


@pytest.fixture
def files(tmp_path: Path) -> Any:
    root = tmp_path / "files"
    root.mkdir()
    port = free_port()
    server = start_http_server(
        "http-files", [sys.executable, "-m", "dagforge.devservices.http_files", str(root), "--port", str(port)], port
    )
    yield root, server
    server.stop()


def spec(box: Sandbox, server: ChildServer, s3: Any, step: str, run_id: str, **extra: Any) -> dict[str, Any]:
    bucket = f"files-{box.database.replace('_', '-')}"
    return {
        "step": step, "load": LOAD.to_dict(), "target": box.target_server.dsn(box.database), "run_id": run_id,
        "http": {"base": server.url, "backoff": 0.5}, "run": vars(month_run("2024-01")) | {"run_id": run_id},
        "store": {"kind": "s3", "endpoint": s3.endpoint_url, "bucket": bucket}, "format": "parquet",
        "rows_per_part": 20_000, **extra,
    }  # fmt: skip


def file_figures(path: Path) -> tuple:
    """Rows, fare and total sums, first and last pickup of a trip file: what the month must hold."""
    table = pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(column_types={
        "fare_amount": pa.decimal128(10, 2), "total_amount": pa.decimal128(10, 2)}))  # fmt: skip
    pickups = table.column("tpep_pickup_datetime").cast(pa.string()).to_pylist()
    return (table.num_rows, sum(table.column("fare_amount").to_pylist(), Decimal(0)),
            sum(table.column("total_amount").to_pylist(), Decimal(0)), min(pickups), max(pickups))  # fmt: skip


def month_figures(box: Sandbox) -> tuple:
    dsn = box.target_server.dsn(box.database)
    query = (
        "SELECT count(*), sum(fare_amount), sum(total_amount), min(tpep_pickup_datetime)::text, "
        f"max(tpep_pickup_datetime)::text FROM dst.trips WHERE {INTERVAL_COLUMN} = '2024-01-01+00'"
    )
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return tuple(conn.execute(query).fetchone())


def load_month(box: Sandbox, server: ChildServer, s3: Any, run_id: str) -> dict[str, Any]:
    window = run_step(spec(box, server, s3, "check", run_id))
    assert window["new_rows"], window
    run_step(spec(box, server, s3, "extract", run_id, window=window))
    staged = run_step(spec(box, server, s3, "load", run_id, window=window))
    return run_step(spec(box, server, s3, "publish_from_store", run_id, staged=staged))


def assert_month_is_the_file(box: Sandbox, path: Path) -> None:
    assert month_figures(box) == file_figures(path)
    leftovers = query_one(box.target_server.dsn(box.database), "SELECT count(*) FROM pg_tables WHERE tablename LIKE "
                          "'\\_dagforge\\_stg%'")  # fmt: skip
    assert leftovers == 0


def uploaded(s3: Any, bucket: str) -> bool:
    try:
        return s3.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) > 0
    except Exception:  # the bucket is not there yet
        return False


def test_kill_9_mid_download_then_the_retry_loads_the_month_once(sandbox: Sandbox, files: Any, s3_server: Any) -> None:
    root, server = files
    path = tripdata.write_month(root, 2024, 1, 300_000)
    first = spec(sandbox, server, s3_server, "check", "r1")
    window = run_step(first)
    child = Child.start(spec(sandbox, server, s3_server, "extract", "r1", window=window))
    wait_until(lambda: uploaded(s3_server, first["store"]["bucket"]), 60, "the first part in the bucket", 0.01)
    child.kill()

    result = load_month(sandbox, server, s3_server, "r1")  # the retry: check, extract, load, publish
    assert result["applied"]
    assert_month_is_the_file(sandbox, path)


def test_the_http_server_killed_mid_download_and_restarted_the_download_resumes(
    sandbox: Sandbox, files: Any, s3_server: Any
) -> None:
    root, server = files
    path = tripdata.write_month(root, 2024, 1, 1_000_000)  # ~26 MB: the download is paced by the parser
    base = spec(sandbox, server, s3_server, "check", "r1")
    window = run_step(base)
    child = Child.start(spec(sandbox, server, s3_server, "extract", "r1", window=window))
    wait_until(lambda: uploaded(s3_server, base["store"]["bucket"]), 120, "the first part in the bucket", 0.01)
    server.crash_and_restart()  # kill -9, then the same files on the same port
    result = child.result(timeout=240)
    assert result["rows"] == 1_000_000
    bucket, key = base["store"]["bucket"], "raw/files/trips/r1/manifest.json"
    manifest = json.loads(s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    assert manifest["source"]["resumes"] >= 1 and manifest["source"]["size"] == path.stat().st_size
    staged = run_step(spec(sandbox, server, s3_server, "load", "r1", window=window))
    assert run_step(spec(sandbox, server, s3_server, "publish_from_store", "r1", staged=staged))["applied"]
    assert_month_is_the_file(sandbox, path)


def test_kill_9_mid_publish_of_a_corrected_month_keeps_the_old_month_until_the_retry(
    sandbox: Sandbox, files: Any, s3_server: Any
) -> None:
    root, server = files
    tripdata.write_month(root, 2024, 1, 50_000)
    assert load_month(sandbox, server, s3_server, "r1")["applied"]
    before = month_figures(sandbox)
    time.sleep(0.01)
    path = tripdata.write_month(root, 2024, 1, 40_000, seed=9)  # the publisher corrects January
    window = run_step(spec(sandbox, server, s3_server, "check", "r2"))
    assert window["new_rows"] and "changed" in window["reason"]
    run_step(spec(sandbox, server, s3_server, "extract", "r2", window=window))
    staged = run_step(spec(sandbox, server, s3_server, "load", "r2", window=window))

    target = sandbox.connect("target")
    # a killed client is noticed within 100 ms even by a backend that is sleeping
    target.execute(f"ALTER DATABASE {sandbox.database} SET client_connection_check_interval = 100")
    target.execute(
        "CREATE FUNCTION dst.stall() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(120); "
        "RETURN OLD; END $$; CREATE TRIGGER stall BEFORE DELETE ON dst.trips FOR EACH ROW EXECUTE FUNCTION dst.stall()"
    )
    child = Child.start(spec(sandbox, server, s3_server, "publish_from_store", "r2", staged=staged))
    stalled = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
    wait_until(lambda: query_one(sandbox.target_server.dsn(sandbox.database), stalled), 60, "the publish mid-DELETE")
    child.kill()
    wait_for_no_child_backends(sandbox)
    target.execute("DROP TRIGGER stall ON dst.trips")
    assert month_figures(sandbox) == before  # the old month, whole
    files_row = "SELECT run_id FROM dst._dagforge_files WHERE table_name = 'trips'"
    assert query_one(sandbox.target_server.dsn(sandbox.database), files_row) != "r2"

    assert run_step(spec(sandbox, server, s3_server, "publish_from_store", "r2", staged=staged))["applied"]
    assert_month_is_the_file(sandbox, path)
