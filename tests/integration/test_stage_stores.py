"""Postgres → object storage → Postgres staging, on every store (S3 on moto, GCS on its emulator):
every format keeps every value; keys and manifests; retries replace their own objects."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest

from dagforge.devservices.gcp import GcpEmulators
from dagforge.devservices.s3 import S3Server
from dagforge.loadspec import TableLoad, TableRef
from dagforge.sources.pg_relay import RELAY_ENV
from dagforge.sources.postgres import PostgresSource
from dagforge.spec.model import LoadMode
from dagforge.stage.extract_load import MANIFEST, ObjectStore, extract, load_staged, run_prefix
from dagforge.stage.gcs_store import GCSStore
from dagforge.stage.s3_store import S3Store
from dagforge.transfer import postgres_load
from tests.integration.conftest import Sandbox, table_fingerprint
from tests.integration.test_postgres_load import TYPES_TABLE

pytestmark = pytest.mark.integration


@pytest.fixture(params=["s3", "gcs"])
def new_store(request: pytest.FixtureRequest) -> Callable[[], ObjectStore]:
    """Makes a store on a fresh bucket of the kind under test."""
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        return lambda: S3Store(server.client(), f"b-{uuid.uuid4().hex[:10]}")
    emulators: GcpEmulators = request.getfixturevalue("gcp")
    return lambda: GCSStore(emulators.storage_client(), f"b-{uuid.uuid4().hex[:10]}")


def make_load(table: str, mode: LoadMode = LoadMode.FULL, **extra) -> TableLoad:
    return TableLoad("p", TableRef("src", "src", table), TableRef("dst", "dst", table), mode, ("id",), **extra)


def round_trip(box: Sandbox, store: ObjectStore, load: TableLoad, fmt: str, run_id: str) -> tuple[str, object]:
    source, target = box.connect("source"), box.connect("target")
    window = postgres_load.decide_window(PostgresSource(source), target, load)
    prefix = run_prefix("raw", load, run_id)
    manifest = extract(PostgresSource(source), load, window, store, prefix, fmt, run_id)
    staged = load_staged(target, load, store, prefix, load.staging_table(run_id))
    postgres_load.publish(target, load, staged, run_id)
    return prefix, manifest


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_every_type_round_trips_through_each_format(sandbox: Sandbox, new_store, fmt: str) -> None:
    source = sandbox.connect("source")
    source.execute("CREATE SCHEMA src")
    source.execute(TYPES_TABLE.format(name="types"))
    store = new_store()

    prefix, _ = round_trip(sandbox, store, make_load("types"), fmt, "manual__2024-01-01T00:00:00+00:00")

    target = sandbox.connect("target")
    assert table_fingerprint(target, "dst.types") == table_fingerprint(source, "src.types")
    assert prefix == "raw/p/types/manual__2024-01-01T00_00_00_00_00/"
    written = json.loads(store.get_text(prefix + MANIFEST))
    attempt = written["attempt"]
    assert sorted(store.list_keys(prefix)) == [f"{prefix}{attempt}/part-00000.{fmt}", f"{prefix}{MANIFEST}"]
    assert written["rows"] == 2 and written["format"] == fmt
    assert [c["name"] for c in written["columns"]][:3] == ["id", "small", "amount"]


def test_parts_rotate_and_a_retry_replaces_its_own_objects(sandbox: Sandbox, new_store) -> None:
    source = sandbox.connect("source")
    source.execute("CREATE SCHEMA src; CREATE TABLE src.t (id int PRIMARY KEY, ts timestamptz, v text)")
    source.execute(
        "INSERT INTO src.t SELECT g, now() - g * interval '1 min', repeat('x', 60 + g % 50) "
        "FROM generate_series(1, 120000) g"
    )
    store = new_store()
    load = make_load("t", LoadMode.INCREMENTAL, cursor="ts")

    target = sandbox.connect("target")
    window = postgres_load.decide_window(PostgresSource(source), target, load)
    prefix = run_prefix(None, load, "run1")
    extract(PostgresSource(source), load, window, store, prefix, "parquet", "run1", rows_per_part=30_000)
    store.put_text(prefix + "part-00099.parquet", "left over from a crashed attempt")
    manifest = extract(
        PostgresSource(source), load, window, store, prefix, "parquet", "run1", rows_per_part=30_000
    )  # retried
    load_staged(target, load, store, prefix, "stg_t")
    staged = load_staged(target, load, store, prefix, "stg_t")  # the load task retried
    assert staged.rows == 120_000
    assert target.execute("SELECT count(*) FROM dst.stg_t").fetchone()[0] == 120_000
    postgres_load.publish(target, load, staged, "run1")

    assert prefix == "p/t/run1/"
    assert manifest.rows == 120_000 and len(manifest.parts) >= 2
    assert sorted(store.list_keys(prefix)) == sorted([p["key"] for p in manifest.parts] + [prefix + MANIFEST])
    assert manifest.watermark_min is not None and manifest.watermark_max is not None
    assert table_fingerprint(target, "dst.t") == table_fingerprint(source, "src.t")


NASTY_TEXT = r"""
CREATE TABLE src.nasty (id int PRIMARY KEY, a text, b text, c jsonb);
INSERT INTO src.nasty
SELECT g,
       (ARRAY['', NULL, 'plain', E'two\nlines', '"', '""', E'\n', 'end"', 'a, b', E'\r\n', repeat(E'x\n"', 2000)])
           [1 + g % 11],
       repeat('y', g % 300),
       jsonb_build_object('q', E'say "hi"\n', 'g', g)
FROM generate_series(1, 30000) g;
"""


@pytest.mark.parametrize("relay", ["psql", "python", "off"])
@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_every_relay_kind_extracts_quoted_newlines_exactly(
    sandbox: Sandbox, s3_server: S3Server, fmt: str, relay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The extract's rows come through the COPY relay in blocks cut anywhere (or from psycopg in
    process, with the relay off); quoted newlines, doubled quotes and long values split no row."""
    monkeypatch.setenv(RELAY_ENV, relay)
    source = sandbox.connect("source")
    source.execute("CREATE SCHEMA src")
    source.execute(NASTY_TEXT)
    store = S3Store(s3_server.client(), f"b-{uuid.uuid4().hex[:10]}")

    _, manifest = round_trip(sandbox, store, make_load("nasty"), fmt, "run1")

    assert manifest.rows == 30_000 and sum(p["rows"] for p in manifest.parts) == 30_000
    assert table_fingerprint(sandbox.connect("target"), "dst.nasty") == table_fingerprint(source, "src.nasty")
