"""The HTTP file source through every destination, on a real local HTTP server: formats, CSV
options, bad rows, a 404, a dropped connection, and reruns of the same interval."""

from __future__ import annotations

import gzip
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dagforge.devservices import tripdata
from dagforge.devservices.http_files import FileServer
from dagforge.errors import TerminalError
from dagforge.spec.model import INTERVAL_COLUMN, LoadMode
from tests.conftest import Sandbox
from tests.integration.file_loads import DESTINATIONS, FileLoads, month_run

pytestmark = pytest.mark.integration

TRIPS = tripdata.COLUMNS
TEMPLATE = "yellow_tripdata_{{ data_interval_start | month }}.csv.gz"


@pytest.fixture
def files(tmp_path: Path) -> Any:
    root = tmp_path / "files"
    root.mkdir()
    with FileServer(root) as server:
        yield server


def _postgres_world(request: pytest.FixtureRequest) -> dict[str, Any]:
    from dagforge.stage.s3_store import S3Store

    sandbox: Sandbox = request.getfixturevalue("sandbox")
    store = S3Store(request.getfixturevalue("s3_server").client(), f"b-{uuid.uuid4().hex[:10]}")
    return {"target": sandbox.connect("target"), "schema": "dst", "store": store}


def _bigquery_world(request: pytest.FixtureRequest) -> dict[str, Any]:
    world = request.getfixturevalue("world")
    return {**world, "schema": world["dataset"].dataset}


@pytest.fixture(params=DESTINATIONS)
def loads(request: pytest.FixtureRequest, files: FileServer) -> FileLoads:
    world = (_postgres_world if request.param == "postgres" else _bigquery_world)(request)
    return FileLoads(request.param, files, world)


@pytest.fixture
def pg_loads(request: pytest.FixtureRequest, files: FileServer) -> FileLoads:
    return FileLoads("postgres", files, _postgres_world(request))


def test_months_load_and_a_rerun_of_a_month_never_duplicates(loads: FileLoads) -> None:
    for month, rows in (("2024-01", 1200), ("2024-02", 900)):
        tripdata.write_month(loads.root, *map(int, month.split("-")), rows)
    load = loads.load("trips", TEMPLATE, TRIPS)
    assert loads.run(load, "2024-01").rows == 1200
    assert loads.run(load, "2024-02").rows == 900
    assert loads.count(load) == 2100

    again = loads.run(load, "2024-01")  # the same file: nothing new
    assert not again.new_rows and "unchanged" in again.reason and "yellow_tripdata_2024-01.csv.gz" in again.reason
    forced = loads.run(load, "2024-01", force_full=True)  # asked for: the month is replaced, not added
    assert forced.applied and forced.rows == 1200
    assert loads.count(load) == 2100

    tripdata.write_month(loads.root, 2024, 1, 700, seed=7)  # the publisher corrects January
    corrected = loads.run(load, "2024-01")
    assert corrected.applied and "replaced interval" in corrected.reason
    assert loads.count(load) == 1600
    months = loads.rows(load, [INTERVAL_COLUMN], INTERVAL_COLUMN)
    assert sum(1 for (m,) in months if m.startswith("2024-01")) == 700
    assert sum(1 for (m,) in months if m.startswith("2024-02")) == 900


def test_the_values_arrive_as_the_file_has_them(loads: FileLoads) -> None:
    (loads.root / "t.csv").write_text(
        "id,amount,day,at,note,ok\n"
        '1,12.50,2024-01-31,2024-01-31 23:59:59.123456,"a, ""quoted"" note",true\n'
        "2,-0.01,2024-02-29,2024-02-29 00:00:00,,false\n"
        "3,99999999.99,,,plain,\n",
        encoding="utf-8",
    )
    columns = {"id": "integer", "amount": "numeric(10,2)", "day": "date", "at": "timestamp", "note": "text",
               "ok": "boolean"}  # fmt: skip
    load = loads.load("t", "t.csv", columns, LoadMode.FULL, primary_key=["id"])
    assert loads.run(load, "2024-01").rows == 3
    got = loads.rows(load, list(columns), "id")
    assert [r[0] for r in got] == ["1", "2", "3"]
    # as numbers: BigQuery prints NUMERIC without trailing zeros (its emulator with nine)
    assert [Decimal(r[1]) for r in got] == [Decimal("12.50"), Decimal("-0.01"), Decimal("99999999.99")]
    assert got[0][4] == 'a, "quoted" note' and got[2][3] is None and got[2][5] is None
    assert got[0][3].startswith("2024-01-31") and "23:59:59.123456" in got[0][3]


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "jsonl", "jsonl.gz", "parquet"])
def test_every_format_gives_the_same_rows(pg_loads: FileLoads, fmt: str) -> None:
    rows = [{"id": i, "name": f"n{i}", "price": f"{i}.25", "seen": f"2024-03-{i % 28 + 1:02d}"} for i in range(1, 501)]
    columns = {"id": "bigint", "name": "text", "price": "numeric(8,2)", "seen": "date"}
    path = pg_loads.root / f"items.{fmt}"
    _write(path, fmt, rows)
    load = pg_loads.load("items", path.name, columns, LoadMode.FULL)
    assert pg_loads.run(load, "2024-03").rows == 500
    got = pg_loads.rows(load, ["id", "name", "price", "seen"], "id")
    assert got == [(str(r["id"]), r["name"], r["price"], r["seen"]) for r in rows]


def _write(path: Path, fmt: str, rows: list[dict[str, Any]]) -> None:
    if fmt == "parquet":
        table = pa.table({"id": [r["id"] for r in rows], "name": [r["name"] for r in rows],
                          "price": pa.array([r["price"] for r in rows]).cast(pa.decimal128(8, 2)),
                          "seen": pa.array([r["seen"] for r in rows]).cast(pa.date32())})  # fmt: skip
        pq.write_table(table, path)
        return
    if fmt.startswith("csv"):
        text = "id,name,price,seen\n" + "".join(f"{r['id']},{r['name']},{r['price']},{r['seen']}\n" for r in rows)
    else:
        text = "".join(json.dumps(r) + "\n" for r in rows)
    data = text.encode()
    path.write_bytes(gzip.compress(data) if fmt.endswith(".gz") else data)


def test_csv_options(pg_loads: FileLoads) -> None:
    text = "7;'Zoë; the first';31/12/2023;NA\n8;'Ångström';01/01/2024;3,5\n"
    (pg_loads.root / "latin.csv").write_bytes(text.encode("latin-1"))
    options = {"delimiter": ";", "header": False, "quote": "'", "null_values": ["NA"], "encoding": "latin-1",
               "date_formats": ["%d/%m/%Y"]}  # fmt: skip
    columns = {"id": "integer", "name": "text", "day": "date", "score": "text"}
    load = pg_loads.load("latin", "latin.csv", columns, LoadMode.FULL, csv=options)
    assert pg_loads.run(load, "2024-01").rows == 2
    assert pg_loads.rows(load, list(columns), "id") == [
        ("7", "Zoë; the first", "2023-12-31", None),
        ("8", "Ångström", "2024-01-01", "3,5"),
    ]


def test_bad_rows_are_reported_with_their_line_and_skipped_up_to_the_limit(pg_loads: FileLoads) -> None:
    lines = ["id,amount"] + [f"{i},{i}.00" for i in range(1, 11)]
    lines[4] = "4,four"  # line 5 of the file
    lines[8] = "8"  # line 9: a field short
    (pg_loads.root / "bad.csv").write_text("\n".join(lines) + "\n")
    columns = {"id": "integer", "amount": "numeric(6,2)"}
    strict = pg_loads.load("bad", "bad.csv", columns, LoadMode.FULL, max_bad_rows=1)
    with pytest.raises(TerminalError) as failed:
        pg_loads.run(strict, "2024-01")
    assert "line 5" in str(failed.value) and "line 9" in str(failed.value)

    lenient = pg_loads.load("bad", "bad.csv", columns, LoadMode.FULL, max_bad_rows=2)
    assert pg_loads.run(lenient, "2024-01").rows == 8
    facts = pg_loads.manifests[-1].source
    assert facts["bad_rows"] == 2 and [b["line"] for b in facts["bad_row_samples"]] == [5, 9]
    assert [r[0] for r in pg_loads.rows(lenient, ["id"], "id")] == ["1", "2", "3", "5", "6", "7", "9", "10"]


def test_a_month_not_published_yet_is_skipped_and_missing_fail_fails(loads: FileLoads) -> None:
    load = loads.load("trips", TEMPLATE, TRIPS)
    window = loads.run(load, "2031-05")
    assert not window.new_rows and "yellow_tripdata_2031-05.csv.gz" in window.reason and "404" in window.reason
    strict = loads.load("trips", TEMPLATE, TRIPS, missing="fail")
    with pytest.raises(TerminalError, match="404"):
        loads.run(strict, "2031-05")


def test_a_dropped_connection_resumes_where_it_stopped(pg_loads: FileLoads) -> None:
    path = tripdata.write_month(pg_loads.root, 2024, 4, 20_000)
    pg_loads.server.drop_after(path.name, 150_000, times=2)
    load = pg_loads.load("trips", TEMPLATE, TRIPS)
    assert pg_loads.run(load, "2024-04").rows == 20_000
    facts = pg_loads.manifests[-1].source
    assert facts["resumes"] == 2 and facts["size"] == path.stat().st_size
    ranges = [r for (method, p, r) in pg_loads.server.requests if method == "GET" and r]
    assert len(ranges) == 2


def test_an_older_read_of_a_month_published_late_does_not_revert_it(pg_loads: FileLoads) -> None:
    tripdata.write_month(pg_loads.root, 2024, 5, 300)
    load = pg_loads.load("trips", TEMPLATE, TRIPS)
    run = month_run("2024-05")
    window = pg_loads.decide(load, run)
    old = pg_loads.stage(load, window, "old_attempt")  # read first, published last
    tripdata.write_month(pg_loads.root, 2024, 5, 250, seed=3)  # corrected meanwhile
    new_window = pg_loads.decide(load, run)
    pg_loads.publish(load, pg_loads.stage(load, new_window, "new_attempt"), "new_attempt")
    late = pg_loads.publish(load, old, "old_attempt")
    assert not late.applied and "newer" in late.reason
    assert pg_loads.count(load) == 250


def test_append_adds_each_file_once(pg_loads: FileLoads) -> None:
    tripdata.write_month(pg_loads.root, 2024, 6, 100)
    load = pg_loads.load("trips", TEMPLATE, TRIPS, LoadMode.APPEND)
    assert pg_loads.run(load, "2024-06").rows == 100
    assert not pg_loads.run(load, "2024-06").new_rows  # the same file: nothing new
    window = pg_loads.decide(load, month_run("2024-06"), force_full=True)
    late = pg_loads.publish(load, pg_loads.stage(load, window, "again"), "again")
    assert not late.applied and "appended this file" in late.reason
    assert pg_loads.count(load) == 100


def test_months_of_a_backfill_publish_in_any_order(loads: FileLoads) -> None:
    for month, rows in (("2024-07", 400), ("2024-08", 300)):
        tripdata.write_month(loads.root, *map(int, month.split("-")), rows)
    load = loads.load("trips", TEMPLATE, TRIPS)
    july = loads.stage(load, loads.decide(load, month_run("2024-07")), "july")  # read first
    assert loads.run(load, "2024-08").applied  # August reads and publishes meanwhile
    assert loads.publish(load, july, "july").applied  # another interval: not "older"
    assert loads.count(load) == 700


def test_the_connection_gives_headers_and_basic_auth(pg_loads: FileLoads) -> None:
    from airflow.models.connection import Connection

    from dagforge.sources.http import HttpEndpoint

    tripdata.write_month(pg_loads.root, 2024, 9, 50)
    pg_loads.server.require("Authorization", "Basic dXNlcjpzM2NyZXQ=")  # user:s3cret
    pg_loads.server.require("X-Api-Key", "k-123")
    conn = Connection(conn_id="tlc", conn_type="http", host="127.0.0.1", port=pg_loads.server.port, schema="http",
                      login="user", password="s3cret", extra=json.dumps({"X-Api-Key": "k-123"}))  # fmt: skip
    load = pg_loads.load("trips", TEMPLATE, TRIPS)
    with pytest.raises(TerminalError, match="401"):  # without the connection's credentials
        pg_loads.run(load, "2024-09")
    pg_loads.endpoint = HttpEndpoint.from_connection(conn)
    assert pg_loads.run(load, "2024-09").rows == 50
    assert "s3cret" not in json.dumps(pg_loads.manifests[-1].source)
