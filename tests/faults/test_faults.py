"""Real faults against real servers, no mocks: a step killed with SIGKILL mid-COPY and mid-publish,
servers stopped immediately (``pg_ctl -m immediate``: crash recovery, UNLOGGED tables emptied)
mid-stage and between stage and publish, the S3 server killed mid-extract, the BigQuery emulator
killed mid-load, out-of-order and overlapping runs while a writer changes the source.

After each fault the next attempt (a new process, as Airflow's retry is) must converge: the table
equals its source (count and md5 over all columns), no duplicate keys, no staging table or stray
part left, the watermark at the source's newest cursor. While a fault is in the air, the final
table and its watermark stay exactly as they were."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest

from dagforge.contracts import Staged
from dagforge.devservices.writer import SourceWriter
from dagforge.loadspec import TableLoad, TableRef
from dagforge.spec.model import Deletes, LoadMode
from tests.conftest import Sandbox
from tests.faults.conftest import (
    Child,
    assert_converged,
    query_one,
    run_step,
    target_state,
    wait_for_no_child_backends,
    wait_until,
)

pytestmark = pytest.mark.faults

ROWS = 200_000
ITEMS = f"""
CREATE SCHEMA IF NOT EXISTS src;
CREATE TABLE src.items (id int PRIMARY KEY, v text NOT NULL, pad text NOT NULL, updated_at timestamptz NOT NULL);
INSERT INTO src.items SELECT g, 'v1', repeat(md5(g::text), 3), timestamptz '2024-01-01 00:00+00' + g * interval '1 ms'
FROM generate_series(1, {ROWS}) g;
"""
STALLED = (
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dagforge-fault-child' AND wait_event = 'PgSleep'"
)
"""Fault children stalled by a ``pg_sleep`` row trigger (where a test kills them)."""
CHANGE_HALF = "UPDATE src.items SET v = 'v2', updated_at = updated_at + interval '1 day' WHERE id % 2 = 0"


def items_load(mode: LoadMode = LoadMode.INCREMENTAL, lookback: str | None = "1m", **extra: Any) -> TableLoad:
    return TableLoad("p", TableRef("s", "src", "items"), TableRef("t", "dst", "items"), mode, ("id",),
                     cursor="updated_at", lookback=lookback, **extra)  # fmt: skip


def spec(box: Sandbox, step: str, load: TableLoad, run_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "step": step,
        "load": load.to_dict(),
        "source": box.source_server.dsn(box.database),
        "target": box.target_server.dsn(box.database),
        "run_id": run_id,
        **extra,
    }


@pytest.fixture
def items(sandbox: Sandbox) -> Sandbox:
    """200,000 rows in the source, loaded once; then half of them changed (the next run's window)."""
    sandbox.connect("source").execute(ITEMS)
    # a killed client is noticed within 100 ms even by a backend that is waiting or sleeping
    sandbox.connect("target").execute(f"ALTER DATABASE {sandbox.database} SET client_connection_check_interval = 100")
    assert run_step(spec(sandbox, "run_direct", items_load(), "r0"))["applied"]
    sandbox.connect("source").execute(CHANGE_HALF)
    return sandbox


def copying(box: Sandbox) -> bool:
    """A COPY into the destination is under way and has rows already."""
    moved = query_one(box.target_server.dsn(box.database), "SELECT max(tuples_processed) FROM pg_stat_progress_copy")
    return bool(moved)


def window_for(box: Sandbox, load: TableLoad, run_id: str) -> dict[str, Any]:
    window = run_step(spec(box, "check", load, run_id))
    assert window["new_rows"], window
    return window


def stage_and_publish(box: Sandbox, load: TableLoad, run_id: str, window: dict[str, Any]) -> dict[str, Any]:
    staged = run_step(spec(box, "stage", load, run_id, window=window))
    return run_step(spec(box, "publish", load, run_id, staged=staged))


def test_kill_9_mid_copy_changes_nothing_and_the_retry_is_exact(items: Sandbox) -> None:
    load = items_load()
    window = window_for(items, load, "r1")
    before = target_state(items, "items")
    child = Child.start(spec(items, "stage", load, "r1", window=window))

    wait_until(lambda: copying(items), 60, "the COPY to start")
    child.kill()
    wait_for_no_child_backends(items)

    assert target_state(items, "items") == before
    assert (
        query_one(
            items.target_server.dsn(items.database), "SELECT to_regclass(%s)", (f"dst.{load.staging_table('r1')}",)
        )
        is None
    )
    stage_and_publish(items, load, "r1", window)
    assert_converged(items, "items", "updated_at")


def test_kill_9_mid_chunk_leaves_the_other_chunk_and_the_retry_replaces_only_its_own(items: Sandbox) -> None:
    """``chunks:``: two chunks share one staging table. One is killed mid-COPY (its transaction dies
    with it), the other is run again after its commit; neither touches the other chunk's rows, and
    the one publish equals the source, swapped in."""
    load = items_load(LoadMode.FULL, lookback=None, chunks={"by": "id", "count": 2})
    target_dsn, staging = items.target_server.dsn(items.database), f"dst.{load.staging_table('r1')}"
    window = window_for(items, load, "r1")
    chunks = run_step(spec(items, "split", load, "r1", window=window))["chunks"]
    assert len(chunks) == 2
    before = target_state(items, "items")
    parts = {0: run_step(spec(items, "stage", load, "r1", window=chunks[0]))}
    staged_rows = query_one(target_dsn, f"SELECT count(*) FROM {staging}")
    assert staged_rows == parts[0]["rows"] > 0

    child = Child.start(spec(items, "stage", load, "r1", window=chunks[1]))
    wait_until(lambda: copying(items), 60, "chunk 1's COPY to start")
    child.kill()
    wait_for_no_child_backends(items)

    assert query_one(target_dsn, f"SELECT count(*) FROM {staging}") == staged_rows, "the killed chunk left nothing"
    assert target_state(items, "items") == before
    parts[1] = run_step(spec(items, "stage", load, "r1", window=chunks[1]))
    parts[0] = run_step(spec(items, "stage", load, "r1", window=chunks[0]))  # again, after its commit
    assert query_one(target_dsn, f"SELECT count(*) FROM {staging}") == ROWS
    combined = Staged.combine([Staged.from_dict(parts[i]) for i in range(2)])
    outcome = run_step(spec(items, "publish", load, "r1", staged=combined.to_dict()))

    assert outcome["applied"] and "swapped in" in outcome["reason"], outcome
    assert_converged(items, "items", None)


def kill_publish_stalled_at(box: Sandbox, load: TableLoad, staged: dict[str, Any], event: str, row_id: int) -> None:
    """Run publish in a child that a row trigger stalls at ``event`` of row ``row_id``, kill -9 it
    there: the final table and its watermark must be exactly as before."""
    row = "OLD" if event == "DELETE" else "NEW"
    target = box.connect("target")
    target.execute(
        "CREATE FUNCTION dst.stall() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF {row}.id = {row_id} THEN PERFORM pg_sleep(120); END IF; RETURN {row}; END $$;"
        f"CREATE TRIGGER stall BEFORE {event} ON dst.items FOR EACH ROW EXECUTE FUNCTION dst.stall()"
    )
    before = target_state(box, "items")
    child = Child.start(spec(box, "publish", load, "r1", staged=staged))
    wait_until(lambda: query_one(box.target_server.dsn(box.database), STALLED), 60, f"the publish to be mid-{event}")
    child.kill()
    wait_for_no_child_backends(box)
    target.execute("DROP TRIGGER stall ON dst.items")
    assert target_state(box, "items") == before


@pytest.mark.parametrize("mode", [LoadMode.INCREMENTAL, LoadMode.FULL])
def test_kill_9_mid_publish_changes_nothing_and_the_retry_is_exact(items: Sandbox, mode: LoadMode) -> None:
    load = items_load(mode)
    window = window_for(items, load, "r1")
    staged = run_step(spec(items, "stage", load, "r1", window=window))
    kill_publish_stalled_at(items, load, staged, "INSERT", 150000)  # neither the DELETE/upsert nor the watermark

    result = run_step(spec(items, "publish", load, "r1", staged=staged))
    assert result["applied"]
    assert_converged(items, "items", "updated_at")


@pytest.mark.parametrize("server", ["source", "target"])
def test_an_immediate_restart_mid_stage_fails_the_step_and_the_retry_is_exact(items: Sandbox, server: str) -> None:
    load = items_load()
    window = window_for(items, load, "r1")
    before = target_state(items, "items")
    child = Child.start(spec(items, "stage", load, "r1", window=window))

    wait_until(lambda: copying(items), 60, "the COPY to start")
    (items.source_server if server == "source" else items.target_server).crash_and_restart()
    items.connections.clear()  # they died with the server

    assert "OperationalError" in child.failure()
    assert target_state(items, "items") == before
    stage_and_publish(items, load, "r1", window)
    assert_converged(items, "items", "updated_at")


def test_an_immediate_restart_between_stage_and_publish_stages_again(items: Sandbox) -> None:
    """The warehouse restarted after stage: its UNLOGGED staging table came back empty."""
    load = items_load()
    window = window_for(items, load, "r1")
    staged = run_step(spec(items, "stage", load, "r1", window=window))
    items.target_server.crash_and_restart()
    items.connections.clear()
    target_dsn = items.target_server.dsn(items.database)
    table = f"dst.{staged['staging_table']}"
    if query_one(target_dsn, "SELECT to_regclass(%s) IS NOT NULL", (table,)):  # its commit reached disk
        assert query_one(target_dsn, f"SELECT count(*) FROM {table}") == 0  # crash recovery empties UNLOGGED
    # (the test servers run with synchronous_commit=off: the stage's commit itself may be lost)

    child = Child.start(spec(items, "publish", load, "r1", staged=staged))
    result = child.result()

    assert result["applied"] and "staging it again" in child.stderr
    assert_converged(items, "items", "updated_at")


DELETE_SOME = "DELETE FROM src.items WHERE id % 100 = 7"


def test_kill_9_mid_delete_changes_nothing_and_the_retry_deletes_exactly(items: Sandbox) -> None:
    """deletes: hard on an incremental table: the key-set DELETE runs after the upsert, in the same
    transaction; killing the step there leaves the upsert undone too."""
    load = items_load(deletes=Deletes.HARD)
    items.connect("source").execute(DELETE_SOME)
    window = window_for(items, load, "r1")
    staged = run_step(spec(items, "stage", load, "r1", window=window))
    assert staged["key_rows"] == ROWS - ROWS // 100
    kill_publish_stalled_at(items, load, staged, "DELETE", 150007)

    assert run_step(spec(items, "publish", load, "r1", staged=staged))["applied"]
    assert_converged(items, "items", "updated_at")


def test_an_immediate_restart_empties_the_key_set_and_publish_stages_both_again(items: Sandbox) -> None:
    load = items_load(deletes=Deletes.HARD)
    items.connect("source").execute(DELETE_SOME)
    window = window_for(items, load, "r1")
    staged = run_step(spec(items, "stage", load, "r1", window=window))
    items.target_server.crash_and_restart()
    items.connections.clear()

    child = Child.start(spec(items, "publish", load, "r1", staged=staged))
    result = child.result()

    assert result["applied"] and "staging it again" in child.stderr
    assert_converged(items, "items", "updated_at")


WRITER = [
    "UPDATE src.items SET v = 'w' || %(tick)s, updated_at = clock_timestamp() "
    "WHERE id BETWEEN (%(tick)s * 997) %% 199000 AND (%(tick)s * 997) %% 199000 + 500",
    "INSERT INTO src.items SELECT 200000 + %(tick)s, 'new', 'x', clock_timestamp()",
]


def overlapping_runs_under_a_writer(box: Sandbox, run_step_name: str, **extra: Any) -> None:
    """Six runs of one table at once (a backfill), one more publishing late, a writer busy; then
    one more run after the writer stopped. No lookback: a later run must not be able to heal a
    reverted row by re-reading it."""
    load = items_load(lookback=None)
    late_window = window_for(box, load, "late")
    late = run_step(spec(box, "stage", load, "late", window=late_window))
    with SourceWriter(box.source_server.dsn(box.database), WRITER, interval_s=0.05, max_seconds=120) as writer:
        runs = []
        for i in range(6):
            runs.append(Child.start(spec(box, run_step_name, load, f"backfill__{i}", **extra)))
            time.sleep(random.uniform(0, 0.3))
        results = [run.result() for run in runs]
        late_result = run_step(spec(box, "publish", load, "late", staged=late))  # yesterday's, retried now
        writer.wait(ticks=writer.ticks + 3, timeout=30)
    assert writer.ticks > 10 and all("applied" in r or r.get("skipped") for r in results), results
    assert late_result["rows"] >= 0

    final = run_step(spec(box, run_step_name, load, "after", **extra))  # the next scheduled run
    assert final.get("applied") or final.get("skipped")
    assert_converged(box, "items", "updated_at")


def test_out_of_order_and_overlapping_runs_converge_while_the_source_changes(items: Sandbox) -> None:
    overlapping_runs_under_a_writer(items, "run_direct")


def test_overlapping_runs_through_object_storage_converge_while_the_source_changes(
    items: Sandbox, s3_server: Any
) -> None:
    bucket = f"overlap-{items.database.replace('_', '-')}"
    overlapping_runs_under_a_writer(items, "run_store", **store_spec(items, s3_server, bucket))


# ---- object storage and BigQuery ----------------------------------------------------------------


def store_spec(box: Sandbox, s3: Any, bucket: str) -> dict[str, Any]:
    return {"store": {"kind": "s3", "endpoint": s3.endpoint_url, "bucket": bucket}, "format": "parquet",
            "rows_per_part": 20_000}  # fmt: skip


def test_the_s3_server_killed_mid_extract_then_the_retry_is_exact_and_leaves_one_set_of_parts(
    items: Sandbox, s3_server: Any
) -> None:
    load = items_load()
    window = window_for(items, load, "r1")
    bucket = f"faults-{items.database.replace('_', '-')}"
    store = store_spec(items, s3_server, bucket)
    child = Child.start(spec(items, "extract", load, "r1", window=window, **store))
    client = s3_server.client()

    def uploaded() -> bool:
        try:
            return client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) > 0
        except Exception:  # the bucket is not there yet
            return False

    wait_until(uploaded, 60, "the first part in the bucket", 0.01)
    s3_server.crash_and_restart()  # moto keeps nothing: the bucket is gone too
    child.failure()

    run_step(spec(items, "extract", load, "r1", window=window, **store))
    staged = run_step(spec(items, "load", load, "r1", window=window, **store))
    run_step(spec(items, "publish_from_store", load, "r1", staged=staged, **store))

    assert_converged(items, "items", "updated_at")
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))
    manifest = json.loads(client.get_object(Bucket=bucket, Key="raw/p/items/r1/manifest.json")["Body"].read())
    assert keys == sorted([p["key"] for p in manifest["parts"]] + ["raw/p/items/r1/manifest.json"])
    assert len(manifest["parts"]) > 1 and manifest["rows"] == staged["rows"]


def test_files_lost_between_extract_and_load_are_extracted_again(items: Sandbox, s3_server: Any) -> None:
    load = items_load()
    window = window_for(items, load, "r1")
    bucket = f"lost-{items.database.replace('_', '-')}"
    store = store_spec(items, s3_server, bucket)
    run_step(spec(items, "extract", load, "r1", window=window, **store))
    s3_server.crash_and_restart()  # the bucket server lost everything before the load step ran

    child = Child.start(spec(items, "load", load, "r1", window=window, **store))
    staged = child.result()
    assert "extracting items again" in child.stderr
    run_step(spec(items, "publish_from_store", load, "r1", staged=staged, **store))
    assert_converged(items, "items", "updated_at")


def test_the_bigquery_emulator_killed_mid_load_then_the_retry_is_exact(sandbox: Sandbox, gcp: Any) -> None:
    from dagforge.bigquery import load as bq
    from dagforge.devservices.compare import compare_bigquery
    from dagforge.devservices.gcp import PROJECT

    sandbox.connect("source").execute(ITEMS.replace(str(ROWS), "20000"))
    dataset = f"f_{sandbox.database}"
    load = TableLoad("p", TableRef("s", "src", "items"), TableRef("gcp", dataset, "items"), LoadMode.INCREMENTAL,
                     ("id",), cursor="updated_at")  # fmt: skip
    client = gcp.bigquery_client()
    bq.create_dataset(client, bq.Dataset(PROJECT, dataset))
    extra = {
        "store": {"kind": "gcs", "bucket": f"bq-{sandbox.database.replace('_', '-')}"},
        "format": "parquet",
        "encoding": "bigquery",
        "dataset": {"project": PROJECT, "dataset": dataset},
        "bigquery_endpoint": gcp.bigquery.url,
    }
    window = {"load_mode": "incremental", "watermark": None, "new_rows": True, "reason": "first run"}
    run_step(spec(sandbox, "extract", load, "r1", window=window, **extra))
    child = Child.start(spec(sandbox, "bigquery_load", load, "r1", window=window, **extra))
    staging_id = f"{PROJECT}.{dataset}.{load.staging_table('r1')}"

    def staging_created() -> bool:
        try:
            return client.get_table(staging_id) is not None
        except Exception:
            return False

    wait_until(staging_created, 60, "the staging table", 0.01)
    gcp.bigquery.crash_and_restart()
    child.process.wait(timeout=120)  # it may fail, or have finished just before the kill

    staged = run_step(spec(sandbox, "bigquery_load", load, "r1", window=window, **extra))
    run_step(spec(sandbox, "bigquery_publish", load, "r1", staged=staged, **extra))
    client = gcp.bigquery_client()
    result = compare_bigquery(sandbox.connect("source"), client, PROJECT, load)
    assert result.same and result.target_rows == 20000
    assert [t.table_id for t in client.list_tables(f"{PROJECT}.{dataset}") if "_stg_" in t.table_id] == []
