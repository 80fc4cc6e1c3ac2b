"""Benchmark: dagforge's Postgres → GCS → BigQuery load (local emulators) against a hand-written pipeline.

Usage (from the repo root)::

    .venv/bin/python bench/pg_gcs_bq.py                                  # smoke run: 200,000 rows, 2 runs of each side
    .venv/bin/python bench/pg_gcs_bq.py --rows 1000000,5000000 --repeat 2
    .venv/bin/python bench/pg_gcs_bq.py --rows 1000000 --profile         # + one cProfile'd project run per size
    .venv/bin/python bench/pg_gcs_bq.py --no-incremental --no-copy-pipe  # full mode, the two GCS sides only

A throwaway PostgreSQL server (``dagforge.devservices.postgres``; a second one for the pg → pg pipe) and
the GCS and BigQuery emulators (``dagforge.devservices.gcp.running_gcp``) are started on 127.0.0.1; the
source gets ``bench/pg_to_pg.py``'s pgbench_accounts-like table of N rows. Then, per size, ``--repeat``
times each, alternating the order, every run in a fresh spawned child:

* project (full mode), **end to end** as the Airflow operators run it, each step on its own connection,
  the window and the staging handed on as JSON (XCom): check (``PostgresSource.decide`` with
  ``bq.read_state``) → ``extract(..., "parquet", encoding="bigquery")`` into a ``GCSStore`` (export COPY,
  part files of 500,000 rows, upload, manifest) → ``read_manifest`` + ``bq.load_staging`` (one load job
  into staging) → ``bq.publish`` (the replace script with the state row in one transaction, the
  reconciliation, staging dropped);
* hand-written (full mode), in a child that never imports dagforge: psycopg ``COPY (SELECT …) TO STDOUT
  (FORMAT csv)`` → blocks of whole rows parsed by ``pyarrow.csv.read_csv`` with the column types →
  ``pq.ParquetWriter`` parts rotated every 500,000 rows (pyarrow's default codec) → each part uploaded with
  ``blob.upload_from_filename`` → one ``load_table_from_uri`` (PARQUET, WRITE_TRUNCATE, explicit schema)
  into the final table. No staging, no transaction with a state row, no checks: it does less;
* pg → pg pipe (today's reference, for information): ``pg_to_pg.baseline_run``, a binary COPY → COPY pipe
  into a second Postgres server (``--no-copy-pipe`` leaves it out);
* incremental (``--no-incremental`` leaves it out): after one untimed first load of each side, the source
  gains a batch of ``--batch-share`` (10 %) new rows before each pair of runs, then the project's
  incremental load (cursor and key ``aid``: the check reads the watermark from ``_dagforge_state``, the
  publish MERGEs) and the hand-written one (``SELECT MAX(aid)`` in BigQuery, ``COPY … WHERE aid > it``, one
  load job WRITE_APPEND) both move that batch.

After every run the BigQuery table must hold the source's row count, ``SUM(aid)`` and ``SUM(bid)``. Each run
also measures the CPU other processes used meanwhile (``/proc/stat`` minus this bench's processes, the
Postgres servers and the emulators); a run during which they took more than ``--max-others`` of a core is
run again (``--retries``). The emulators are stand-ins (BigQuery's runs on DuckDB): indicative only.

Progress goes to stderr, information to stdout: ``info rows=N …`` lines per side and step, ``ratio rows=N
full speed hand-written/project … (target >= 0.9)`` (speed ratio = hand-written s / project s, higher is
faster), and last one line per size ``pg_gcs_bq rows=N project_s=… hand_s=… ratio=… peak_rss_mb=…``.
Everything measured goes to ``bench/results/pg_gcs_bq_<sizes>_<time>.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

# Only light modules at the top: a spawned child imports this module again, and what it imports here
# would count in every side's peak RSS (and pg_to_pg would bring dagforge into the hand-written child).
# Each side imports its own libraries in its function.
from harness import (  # noqa: E402
    RESULTS,
    bench_main,
    code_version,
    cpu_s,
    in_child,
    log,
    machine_busy_s,
    peak_rss_mb,
    print_last_line,
    print_profile,
    process_cpu_s,
    process_peak_mb,
    process_tree_cpu_s,
    save_summary,
    short,
)

PROJECT = "dagforge-local"  # dagforge.devservices.gcp.PROJECT, without importing it here
DATASET = "bench"
LOCATION = "US"
"""As in the examples (a dataset without a location fails on the emulator)."""
KEY_PREFIX = "staging"
DB = "bench"  # pg_to_pg.DB
TABLE = "pgbench_accounts"  # pg_to_pg.TABLE
WARMUP_TABLE = "pgbench_warmup"
SHAPE = "aid integer {pk}, bid integer NOT NULL, abalance integer NOT NULL, filler character(84)"  # pg_to_pg.SHAPE
COLUMNS = ("aid", "bid", "abalance", "filler")
ROWS_PER_PART = 500_000
"""As the project's extract (dagforge.stage.extract_load.ROWS_PER_PART)."""
HAND_BLOCK_BYTES = 4 << 20
"""The hand-written side parses the COPY stream in blocks of whole rows of about this size."""
WARMUP_ROWS = 20_000
COPY_TABLE = "bench_copy"  # pg_to_pg.COPY_TABLE
TABLES = {
    ("full", "project"): TABLE,
    ("full", "hand"): f"{TABLE}_hand",
    ("incremental", "project"): f"{TABLE}_inc",
    ("incremental", "hand"): f"{TABLE}_inc_hand",
}
"""(mode, side) → the BigQuery table it loads."""
SIDE_NAMES = {"project": "project", "hand": "hand-written", "pipe": "pg → pg pipe"}


def clients() -> tuple[Any, Any]:
    """BigQuery and GCS clients with anonymous credentials; the emulators' addresses come from
    ``BIGQUERY_EMULATOR_HOST`` / ``STORAGE_EMULATOR_HOST`` (the parent sets them, children inherit them)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery, storage

    anonymous = AnonymousCredentials()
    return bigquery.Client(project=PROJECT, credentials=anonymous), storage.Client(PROJECT, anonymous)


def _finish(result: dict[str, Any], rss_before: float, cpu_before: float) -> dict[str, Any]:
    result["cpu_s"] = cpu_s() - cpu_before
    result["rss_before_mb"] = rss_before
    result["peak_rss_mb"] = peak_rss_mb()
    if "pyarrow" in sys.modules:
        result["arrow_peak_mb"] = sys.modules["pyarrow"].default_memory_pool().max_memory() / 2**20
    result["imports_dagforge"] = any(name == "dagforge" or name.startswith("dagforge.") for name in sys.modules)
    return result


def _xcom(value: dict[str, Any]) -> dict[str, Any]:
    """What the next task reads: the value as JSON, as Airflow's XCom keeps it."""
    return json.loads(json.dumps(value))


def _steps(marks: list[float], names: tuple[str, ...]) -> dict[str, float]:
    return {"seconds": marks[-1] - marks[0], **{name: marks[i + 1] - marks[i] for i, name in enumerate(names)}}


# --- the project (runs in its own child process) --------------------------------------------------


def _timed_parquet_writer(phases: dict[str, float]) -> None:
    """Count the time spent in ``pq.ParquetWriter.write_table``/``close`` (``write_batch`` calls
    ``write_table``; dagforge.stage.formats looks the class up at call time), as bench/http_to_bq.py does."""
    import pyarrow.parquet as pq

    base = pq.ParquetWriter

    class TimedWriter(base):  # type: ignore[misc, valid-type]
        def write_table(self, *args: Any, **kwargs: Any) -> None:
            started = time.perf_counter()
            super().write_table(*args, **kwargs)
            phases["parquet_write_s"] += time.perf_counter() - started

        def close(self, *args: Any, **kwargs: Any) -> None:
            started = time.perf_counter()
            super().close(*args, **kwargs)
            phases["parquet_write_s"] += time.perf_counter() - started

    pq.ParquetWriter = TimedWriter


def project_load(mode: str, source_table: str, table: str) -> Any:
    """The table load the plan would compile: full (pg_to_pg.the_load's) or incremental on cursor ``aid``."""
    from dagforge.loadspec import TableLoad, TableRef
    from dagforge.spec.model import LoadMode

    incremental = mode == "incremental"
    return TableLoad(
        pipeline="bench_inc" if incremental else "bench",
        source=TableRef("bench_source", "public", source_table),
        destination=TableRef("bench_bigquery", DATASET, table),
        mode=LoadMode.INCREMENTAL if incremental else LoadMode.FULL,
        primary_key=("aid",),
        cursor="aid" if incremental else None,
    )


PROJECT_STEPS = ("check_s", "extract_s", "load_s", "publish_s")


def project_run(src_dsn: str, spec: dict[str, str], fmt: str, run_id: str, profile: str | None = None) -> dict:
    """check → extract → load_staging → publish, each step as its operator runs it (its own source
    connection, the previous step's result through JSON); the clients, the bucket and the dataset exist
    before the timer (a deployment has them; the dataset branch is a task of its own)."""
    import psycopg

    from dagforge.bigquery import load as bq
    from dagforge.contracts import RunInfo, Staged, Window
    from dagforge.sources.postgres import PostgresSource
    from dagforge.stage.extract_load import extract, read_manifest, run_prefix
    from dagforge.stage.gcs_store import GCSStore

    phases = {"parquet_write_s": 0.0, "upload_s": 0.0}

    class TimedStore(GCSStore):
        def upload_file(self, path: Path, key: str) -> None:
            started = time.perf_counter()
            super().upload_file(path, key)
            phases["upload_s"] += time.perf_counter() - started

    def connect() -> Any:
        return psycopg.connect(src_dsn, autocommit=True)  # as operators.base.postgres_connection

    _timed_parquet_writer(phases)
    load = project_load(spec["mode"], spec["source_table"], spec["table"])
    bq_client, gcs_client = clients()
    store = TimedStore(gcs_client, f"project-{run_id}".lower().replace("_", "-"), LOCATION)
    store.ensure_bucket()  # not timed; extract's own check is
    ds = bq.Dataset(PROJECT, DATASET, LOCATION)
    bq.create_dataset(bq_client, ds)  # the dataset branch's job, not timed
    prefix = run_prefix(KEY_PREFIX, load, run_id)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    rss_before, cpu_before = peak_rss_mb(), cpu_s()
    marks = [time.perf_counter()]

    with connect() as src:  # BigQueryCheckNewRowsOperator
        state = lambda interval=None: bq.read_state(bq_client, ds, load, interval)  # noqa: E731
        window = PostgresSource(src).decide(load, state, RunInfo(run_id=run_id))
    xcom = _xcom(window.to_dict())
    marks.append(time.perf_counter())

    window = Window.from_dict(xcom)  # ExtractOperator
    if not window.new_rows:
        raise RuntimeError(f"project: the check step found nothing to load: {window.reason}")
    with connect() as src:
        manifest = extract(PostgresSource(src), load, window, store, prefix, fmt, run_id, encoding="bigquery")
    marks.append(time.perf_counter())
    rss_extract = peak_rss_mb()

    staging = load.staging_table(run_id)  # BigQueryLoadOperator
    staged = bq.load_staging(bq_client, ds, load, read_manifest(store, prefix), staging, run_id)
    xcom = _xcom(staged.to_dict())
    marks.append(time.perf_counter())

    outcome = bq.publish(bq_client, ds, load, Staged.from_dict(xcom), run_id)  # BigQueryPublishOperator
    marks.append(time.perf_counter())
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    result = _steps(marks, PROJECT_STEPS)
    result.update({
        **phases, "window": window.reason, "manifest_rows": manifest.rows, "staged_rows": staged.rows,
        "published_rows": outcome.rows, "applied": outcome.applied, "outcome": outcome.reason,
        "parts": len(manifest.parts), "bytes": sum(p["bytes"] for p in manifest.parts),
        "peak_rss_extract_mb": rss_extract, "table": load.destination.table, "bucket": store.bucket_name,
    })  # fmt: skip
    # export COPY, block gathering, parse and typing, the source's figures, the manifest
    result["copy_parse_s"] = result["extract_s"] - phases["parquet_write_s"] - phases["upload_s"]
    result["rows_moved"] = staged.rows
    return _finish(result, rss_before, cpu_before)


# --- the hand-written pipeline (runs in its own child process, never imports dagforge) --------------


def hand_schemas() -> tuple[Any, list[Any]]:
    """The four columns as a typed Arrow schema (int64: BigQuery's INT64) and as a BigQuery schema."""
    import pyarrow as pa
    from google.cloud import bigquery

    arrow = pa.schema([("aid", pa.int64()), ("bid", pa.int64()), ("abalance", pa.int64()), ("filler", pa.string())])
    kinds = {"int64": "INT64", "string": "STRING"}
    return arrow, [bigquery.SchemaField(f.name, kinds[str(f.type)]) for f in arrow]


HAND_STEPS = ("check_s", "extract_s", "load_s")


class HandParts:
    """Typed blocks → Parquet part files of ROWS_PER_PART rows or a block more, each uploaded when closed."""

    def __init__(self, folder: Path, schema: Any, compression: str, bucket: Any, key_prefix: str):
        self.folder, self.schema, self.compression = folder, schema, compression
        self.bucket, self.key_prefix = bucket, key_prefix
        self.phases = {"copy_parse_s": 0.0, "parquet_write_s": 0.0, "upload_s": 0.0}
        self.uris: list[str] = []
        self.rows, self.bytes, self.in_part, self.writer, self.path = 0, 0, 0, None, folder

    def write(self, table: Any) -> None:
        import pyarrow.parquet as pq

        t = time.perf_counter()
        if self.writer is None:
            self.path = self.folder / f"part-{len(self.uris):05d}.parquet"
            self.writer = pq.ParquetWriter(self.path, self.schema, compression=self.compression)
        self.writer.write_table(table)
        self.rows += table.num_rows
        self.in_part += table.num_rows
        self.phases["parquet_write_s"] += time.perf_counter() - t
        if self.in_part >= ROWS_PER_PART:
            self.close()

    def close(self) -> None:
        if self.writer is None:
            return
        t = time.perf_counter()
        self.writer.close()
        self.phases["parquet_write_s"] += time.perf_counter() - t
        t = time.perf_counter()
        blob = self.bucket.blob(f"{self.key_prefix}{self.path.name}")
        blob.upload_from_filename(str(self.path))
        self.uris.append(f"gs://{self.bucket.name}/{blob.name}")
        self.bytes += self.path.stat().st_size
        self.path.unlink()
        self.phases["upload_s"] += time.perf_counter() - t
        self.writer, self.in_part = None, 0


def hand_copy_to_parts(copy: Any, schema: Any, parts: HandParts) -> None:
    """The COPY stream gathered into blocks of whole rows, each parsed by ``read_csv`` into the column types."""
    import pyarrow as pa
    import pyarrow.csv as pv

    read = pv.ReadOptions(column_names=schema.names)
    convert = pv.ConvertOptions(column_types=schema)
    block, t = bytearray(), time.perf_counter()
    for row in copy:  # one COPY message per row
        block += row
        if len(block) >= HAND_BLOCK_BYTES:
            table = pv.read_csv(pa.py_buffer(block), read_options=read, convert_options=convert)
            parts.phases["copy_parse_s"] += time.perf_counter() - t
            parts.write(table)
            block, t = bytearray(), time.perf_counter()
    if block:
        table = pv.read_csv(pa.py_buffer(block), read_options=read, convert_options=convert)
        parts.phases["copy_parse_s"] += time.perf_counter() - t
        parts.write(table)
    else:
        parts.phases["copy_parse_s"] += time.perf_counter() - t
    parts.close()


def hand_watermark(bq_client: Any, table_id: str) -> int | None:
    """The incremental side's check: the largest aid loaded so far (None: no table yet, load every row)."""
    from google.api_core.exceptions import NotFound

    try:
        bq_client.get_table(table_id)
    except NotFound:
        return None
    return next(iter(bq_client.query(f"SELECT MAX(aid) FROM `{table_id}`", location=LOCATION).result()))[0]


def hand_written_run(src_dsn: str, spec: dict[str, str], run_id: str, compression: str) -> dict:
    """(incremental: MAX(aid) in BigQuery) → COPY … (FORMAT csv) → read_csv per block (typed) →
    ParquetWriter parts → upload each → one load job; phases timed by hand."""
    import tempfile

    import psycopg
    from google.cloud import bigquery

    bq_client, gcs_client = clients()
    bucket = gcs_client.create_bucket(f"hand-{run_id}".lower().replace("_", "-"), location=LOCATION)
    dataset = bigquery.Dataset(f"{PROJECT}.{DATASET}")
    dataset.location = LOCATION
    bq_client.create_dataset(dataset, exists_ok=True)
    schema, bq_schema = hand_schemas()
    table_id = f"{PROJECT}.{DATASET}.{spec['table']}"
    incremental = spec["mode"] == "incremental"
    rss_before, cpu_before = peak_rss_mb(), cpu_s()
    marks = [time.perf_counter()]

    watermark = hand_watermark(bq_client, table_id) if incremental else None
    marks.append(time.perf_counter())

    select, params = f"SELECT {', '.join(COLUMNS)} FROM {spec['source_table']}", None
    if watermark is not None:
        select, params = f"{select} WHERE aid > %(watermark)s", {"watermark": watermark}
    with (
        tempfile.TemporaryDirectory() as tmp,
        psycopg.connect(src_dsn) as conn,
        conn.cursor() as cur,
        cur.copy(f"COPY ({select}) TO STDOUT (FORMAT csv)", params) as copy,
    ):
        parts = HandParts(Path(tmp), schema, compression, bucket, f"accounts/{run_id}/")
        hand_copy_to_parts(copy, schema, parts)
    marks.append(time.perf_counter())

    if parts.uris:
        append = incremental and watermark is not None
        disposition = bigquery.WriteDisposition.WRITE_APPEND if append else bigquery.WriteDisposition.WRITE_TRUNCATE
        config = bigquery.LoadJobConfig(
            schema=bq_schema, source_format=bigquery.SourceFormat.PARQUET, write_disposition=disposition
        )
        bq_client.load_table_from_uri(parts.uris, table_id, job_config=config, location=LOCATION).result()
    marks.append(time.perf_counter())
    result = _steps(marks, HAND_STEPS)
    result.update({**parts.phases, "rows_moved": parts.rows, "watermark": watermark, "parts": len(parts.uris),
                   "bytes": parts.bytes, "table": spec["table"], "bucket": bucket.name})  # fmt: skip
    return _finish(result, rss_before, cpu_before)


# --- today's reference: the pg → pg binary COPY pipe (its own child; imports pg_to_pg, so dagforge) -----


def pipe_run(src_dsn: str, dst_dsn: str) -> dict:
    from pg_to_pg import baseline_run

    result = baseline_run(src_dsn, dst_dsn, COPY_TABLE)
    result["rows_moved"] = result["rows"]
    return result


# --- the parent: servers, tables, alternation, checks -------------------------------------------------


def sql(dsn: str, *statements: str) -> list[tuple]:
    """Run statements in autocommit; the rows of the last one (if any)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows: list[tuple] = []
        for statement in statements:
            cur = conn.execute(statement)
            rows = cur.fetchall() if cur.description else []
        return rows


def fill(dsn: str, table: str, rows: int) -> None:
    """pg_to_pg.fill_source's table (same shape, same rows) under any name."""
    log(f"filling source {table} with {rows:,} rows")
    sql(
        dsn,
        f"DROP TABLE IF EXISTS {table}",  # a reused --keep-dir server still has it
        f"CREATE TABLE {table} ({SHAPE.format(pk='PRIMARY KEY')})",
        f"INSERT INTO {table} SELECT i, (i - 1) / 100000 + 1, 0, '' FROM generate_series(1, {int(rows)}) AS i",
        f"VACUUM ANALYZE {table}",
        "CHECKPOINT",
    )


def source_facts(dsn: str, table: str) -> tuple[int, int, int]:
    """Row count, SUM(aid), SUM(bid): what every loaded table must show."""
    (found,) = sql(dsn, f"SELECT count(*), coalesce(sum(aid), 0), coalesce(sum(bid), 0) FROM {table}")
    return int(found[0]), int(found[1]), int(found[2])


def table_facts(client: Any, table: str) -> tuple[int, int, int]:
    query = f"SELECT COUNT(*), SUM(aid), SUM(bid) FROM `{PROJECT}.{DATASET}.{table}`"
    count, aid, bid = next(iter(client.query(query, location=LOCATION).result()))
    return int(count), int(aid or 0), int(bid or 0)


def reset_dataset(client: Any) -> None:
    client.delete_dataset(f"{PROJECT}.{DATASET}", delete_contents=True, not_found_ok=True)


def drop_bucket(gcs_client: Any, name: str) -> None:
    for blob in gcs_client.list_blobs(name):
        blob.delete()
    gcs_client.bucket(name).delete()


def postmaster_pid(server: Any) -> int | None:
    try:
        return int((server.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


SETTLE_WINDOW_S, SETTLE_CPU_S, SETTLE_MAX_S = 0.5, 0.05, 30.0


def settle(pids: list[int]) -> float:
    """Wait until the emulators are idle (under 10 % of a core over half a second), as bench/http_to_bq.py
    does: the BigQuery emulator keeps working for a while after a dataset is dropped. How long it took."""
    started = time.perf_counter()
    while time.perf_counter() - started < SETTLE_MAX_S:
        before = sum(process_cpu_s(pid) for pid in pids)
        time.sleep(SETTLE_WINDOW_S)
        if sum(process_cpu_s(pid) for pid in pids) - before < SETTLE_CPU_S:
            break
    return time.perf_counter() - started


def _bench_cpu_s() -> float:
    """This process and its reaped children (the side's child)."""
    usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(u.ru_utime + u.ru_stime for u in usage)


class Runner:
    """The servers and one measured, checked run of a side in a fresh child."""

    def __init__(self, args: argparse.Namespace, source: Any, target: Any | None, gcp: Any):
        self.args = args
        self.src, self.dst = source.dsn(DB), target.dsn(DB) if target else None
        self.bq_client, self.gcs_client = clients()
        self.emulators = {"bigquery": gcp.bigquery.process.pid, "gcs": gcp.gcs.process.pid}
        self.servers = {name: pid for name, pid in (("source", postmaster_pid(source)),
                        ("target", postmaster_pid(target) if target else None)) if pid}  # fmt: skip
        self.stamp = time.strftime("%Y%m%dt%H%M%S")
        self.rows = 0

    def child(self, side: str, mode: str, source_table: str, run_id: str, profile: str | None) -> dict:
        if side == "pipe":
            from pg_to_pg import COPY_TABLE as PIPE_TABLE
            from pg_to_pg import SHAPE as PIPE_SHAPE
            from pg_to_pg import reset_target

            assert self.dst and PIPE_TABLE == COPY_TABLE
            reset_target(self.dst, f"CREATE TABLE {COPY_TABLE} ({PIPE_SHAPE.format(pk='NOT NULL')})")
            return in_child(pipe_run, self.src, self.dst)
        spec = {"mode": mode, "source_table": source_table, "table": TABLES[mode, side]}
        if source_table == WARMUP_TABLE:
            spec["table"] = f"warmup_{side}"
        if side == "project":
            return in_child(project_run, self.src, spec, self.args.format, run_id, profile)
        return in_child(hand_written_run, self.src, spec, run_id, self.args.hand_compression)

    def run(self, side: str, mode: str, tag: str, *, source_table: str = TABLE, profile: str | None = None) -> dict:
        """One run; checked against the source: the table's row count, SUM(aid) and SUM(bid)."""
        if mode == "full" and side != "pipe":
            reset_dataset(self.bq_client)  # both GCS sides publish into a new table
        settle_s = settle(list(self.emulators.values()))
        run_id = f"bench__{short(self.rows)}_{mode}_{side}_{tag}_{self.stamp}"
        before = {name: process_cpu_s(pid) for name, pid in self.emulators.items()}
        servers = {name: process_tree_cpu_s(pid) for name, pid in self.servers.items()}
        ours, machine, started = _bench_cpu_s(), machine_busy_s(), time.perf_counter()
        result = self.child(side, mode, source_table, run_id, profile)
        time.sleep(0.1)  # the closed connections' backends exit and are reaped
        result["window_s"] = time.perf_counter() - started  # the child's whole life, imports included
        result["bench_processes_cpu_s"] = _bench_cpu_s() - ours
        known = result["bench_processes_cpu_s"]
        for name, pid in self.emulators.items():
            result[f"{name}_emulator_cpu_s"] = process_cpu_s(pid) - before[name]
            known += result[f"{name}_emulator_cpu_s"]
        for name, pid in self.servers.items():
            result[f"{name}_server_cpu_s"] = process_tree_cpu_s(pid) - servers[name]
            known += result[f"{name}_server_cpu_s"]
        result["others_cpu_s"] = max(0.0, machine_busy_s() - machine - known)
        result["settle_s"], result["run_id"], result["mode"] = settle_s, run_id, mode
        self.check(side, mode, source_table, result)
        return result

    def check(self, side: str, mode: str, source_table: str, result: dict) -> None:
        expected = source_facts(self.src, source_table)
        if side == "pipe":
            found = source_facts(self.dst, COPY_TABLE)
            sql(self.dst, f"DROP TABLE {COPY_TABLE}")
        else:
            found = table_facts(self.bq_client, result["table"])
            drop_bucket(self.gcs_client, result["bucket"])
        result["table_rows"], result["table_sum_aid"], result["table_sum_bid"] = found
        if result.pop("imports_dagforge", False) and side == "hand":
            raise RuntimeError("the hand-written child imported dagforge")
        if found != expected:
            raise RuntimeError(f"{mode} {side}: the table holds (count, sum(aid), sum(bid)) {found}, "
                               f"the source {expected}")  # fmt: skip
        if side == "project" and not result["applied"]:
            raise RuntimeError(f"{mode} project: the publish did not apply: {result['outcome']}")

    def clean_run(self, side: str, mode: str, rep: int) -> dict:
        """One full-mode run; again (up to ``--retries`` times) while other processes took more than
        ``--max-others`` of a core meanwhile."""
        args = self.args
        for attempt in range(args.retries + 1):
            result = self.run(side, mode, f"r{rep}{'abcdefghij'[attempt]}")
            result["discarded_runs"] = attempt
            log(f"rows={self.rows:,} rep {rep}/{args.repeat} {mode} {side}: {describe(side, result)}")
            share = result["others_cpu_s"] / result["window_s"]
            if share <= args.max_others:
                return result
            then = "running it again" if attempt < args.retries else "kept, flagged (others_cpu_s in the results)"
            log(f"other processes used {share:.0%} of a core during that run: {then}")
        return result

    def apply_batch(self) -> int:
        """The source gains ``--batch-share`` of N new rows (aid past the current maximum); how many."""
        n = max(1, int(self.rows * self.args.batch_share))
        sql(
            self.src,
            f"INSERT INTO {TABLE} SELECT m.aid + i, (m.aid + i - 1) / 100000 + 1, 0, '' "
            f"FROM (SELECT max(aid) AS aid FROM {TABLE}) m, generate_series(1, {n}) AS i",
            f"VACUUM ANALYZE {TABLE}",
            "CHECKPOINT",
        )
        return n

    def incremental_pair(self, rep: int) -> dict[str, dict]:
        """A new batch, then both incremental sides (order alternating), each moving that batch; the
        pair again (a new batch) while other processes took more than ``--max-others`` of a core."""
        args = self.args
        order = ("project", "hand") if rep % 2 else ("hand", "project")
        for attempt in range(args.retries + 1):
            batch = self.apply_batch()
            pair = {}
            for side in order:
                pair[side] = self.run(side, "incremental", f"r{rep}{'abcdefghij'[attempt]}")
                pair[side].update(batch_rows=batch, discarded_runs=attempt)
                log(f"rows={self.rows:,} rep {rep}/{args.repeat} incremental {side}: {describe(side, pair[side])}")
            share = max(r["others_cpu_s"] / r["window_s"] for r in pair.values())
            if share <= args.max_others:
                return pair
            then = "a new batch, the pair again" if attempt < args.retries else "kept, flagged"
            log(f"other processes used {share:.0%} of a core during that pair: {then}")
        return pair


def describe(side: str, r: dict) -> str:
    names = {"project": PROJECT_STEPS, "hand": HAND_STEPS}.get(side, ())
    steps = ", ".join(f"{k.removesuffix('_s')} {r[k]:.2f}" for k in names)
    text = f"{r['seconds']:.2f} s" + (f" ({steps})" if steps else "")
    if side != "pipe":
        text += (f"; copy+parse {r['copy_parse_s']:.2f}, parquet {r['parquet_write_s']:.2f}, "
                 f"upload {r['upload_s']:.2f}")  # fmt: skip
    servers = " + ".join(f"{r[k]:.2f}" for k in ("source_server_cpu_s", "target_server_cpu_s") if k in r)
    return (
        f"{text}; {r['rows_moved']:,} rows; client CPU {r['cpu_s']:.2f} s, Postgres {servers} s, emulators "
        f"BigQuery {r['bigquery_emulator_cpu_s']:.2f} + GCS {r['gcs_emulator_cpu_s']:.2f} s; peak RSS "
        f"{r['peak_rss_mb']:.0f} MB (before {r['rss_before_mb']:.0f}); idle after {r['settle_s']:.1f} s; "
        f"other processes' CPU {r['others_cpu_s']:.2f} s"
    )


def warm_up(runner: Runner) -> None:
    """One small run of each GCS side, not counted: the emulators' first jobs are slower."""
    fill(runner.src, WARMUP_TABLE, WARMUP_ROWS)
    for side in ("project", "hand"):
        runner.run(side, "full", "warm", source_table=WARMUP_TABLE)
    sql(runner.src, f"DROP TABLE {WARMUP_TABLE}")
    log("warm-up done")


def measure_size(runner: Runner, rows: int, sides: list[str], args: argparse.Namespace) -> dict[str, Any]:
    runner.rows = rows
    fill(runner.src, TABLE, rows)
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for rep in range(1, args.repeat + 1):
        for side in sides if rep % 2 else sides[::-1]:
            runs[side].append(runner.clean_run(side, "full", rep))
    size: dict[str, Any] = {"rows": rows, **{f"{side}_runs": r for side, r in runs.items()}, "profile": None}
    if args.profile:
        RESULTS.mkdir(parents=True, exist_ok=True)
        profile = str(RESULTS / f"pg_gcs_bq_project_{rows}_{time.strftime('%Y%m%dT%H%M%S')}.prof")
        size["profiled_run"] = runner.run("project", "full", "prof", profile=profile)
        size["profile"] = profile
        log(f"cProfile of one full project run (not in the medians): {profile}")
    if args.incremental:
        reset_dataset(runner.bq_client)
        size["first_loads"] = {side: runner.run(side, "incremental", "first") for side in ("project", "hand")}
        for side, r in size["first_loads"].items():
            log(f"rows={rows:,} first incremental load (every row, not in the medians) {side}: {describe(side, r)}")
        pairs = [runner.incremental_pair(rep) for rep in range(1, args.repeat + 1)]
        size["project_inc_runs"] = [p["project"] for p in pairs]
        size["hand_inc_runs"] = [p["hand"] for p in pairs]
    reset_dataset(runner.bq_client)
    return size


# --- report ---------------------------------------------------------------------------------------

MEDIAN_KEYS = (
    "seconds", *PROJECT_STEPS, "copy_parse_s", "parquet_write_s", "upload_s", "cpu_s", "rows_moved",
    "bigquery_emulator_cpu_s", "gcs_emulator_cpu_s", "source_server_cpu_s", "target_server_cpu_s", "others_cpu_s",
)  # fmt: skip


def medians(runs: list[dict]) -> dict[str, float]:
    found = {key: statistics.median(r[key] for r in runs) for key in MEDIAN_KEYS if key in runs[0]}
    found["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    found["rss_before_mb"] = max(r["rss_before_mb"] for r in runs)
    found["discarded_runs"] = sum(r.get("discarded_runs", 0) for r in runs)
    for key in ("parts", "bytes"):
        if key in runs[0]:
            found[key] = runs[0][key]
    return found


def summarize(args: argparse.Namespace, sizes: list[dict], extra: dict) -> dict:
    for size in sizes:
        for key in [k for k in size if k.endswith("_runs")]:
            size[key.removesuffix("_runs")] = medians(size[key])
        size["speed_ratio"] = size["hand"]["seconds"] / size["project"]["seconds"]
        size["extract_ratio"] = size["hand"]["extract_s"] / size["project"]["extract_s"]
        size["no_upload_ratio"] = (size["hand"]["seconds"] - size["hand"]["upload_s"]) / (
            size["project"]["seconds"] - size["project"]["upload_s"]
        )
        if "pipe" in size:
            size["pipe_ratio"] = size["pipe"]["seconds"] / size["project"]["seconds"]
        if "project_inc" in size:
            size["inc_speed_ratio"] = size["hand_inc"]["seconds"] / size["project_inc"]["seconds"]
    return {"rows": [s["rows"] for s in sizes], "repeat": args.repeat, "format": args.format,
            "hand_compression": args.hand_compression, "batch_share": args.batch_share, "sizes": sizes,
            **extra}  # fmt: skip


def _steps_text(side: str, m: dict) -> str:
    if side == "pipe":
        return f"{m['seconds']:.2f} s"
    names = PROJECT_STEPS if side.startswith("project") else HAND_STEPS
    steps = ", ".join(f"{k.removesuffix('_s')} {m[k]:.2f}" for k in names)
    return (
        f"{m['seconds']:.2f} s ({steps}; inside extract: copy+parse {m['copy_parse_s']:.2f}, parquet write "
        f"{m['parquet_write_s']:.2f}, upload {m['upload_s']:.2f})"
    )


def report_side(n: int, label: str, side: str, m: dict) -> None:
    name = SIDE_NAMES[side.removesuffix("_inc")]
    staged = f"; staged {m['parts']} part(s), {m['bytes'] / 2**20:.1f} MiB" if "parts" in m else ""
    servers = " + ".join(f"{m[k]:.2f}" for k in ("source_server_cpu_s", "target_server_cpu_s") if k in m)
    print(f"info rows={n} {label} {name} {_steps_text(side, m)}, {m['rows_moved']:,.0f} rows moved")
    print(
        f"info rows={n} {label} {name}: peak RSS {m['peak_rss_mb']:.0f} MB (before the timer "
        f"{m['rss_before_mb']:.0f}); client CPU {m['cpu_s']:.2f} s; Postgres CPU {servers} s; emulator CPU BigQuery "
        f"{m['bigquery_emulator_cpu_s']:.2f} s, GCS {m['gcs_emulator_cpu_s']:.2f} s; other processes' CPU "
        f"{m['others_cpu_s']:.2f} s, runs done again {m['discarded_runs']}{staged}"
    )


def report_size(s: dict, size: dict) -> None:
    n = size["rows"]
    print(f"info rows={n}: {s['repeat']} run(s) of each side, medians (project format {s['format']})")
    for side in ("project", "hand", "pipe"):
        if side in size:
            report_side(n, "full", side, size[side])
    print(f"ratio rows={n} full speed hand-written/project {size['speed_ratio']:.2f} (target >= 0.9)")
    print(f"ratio rows={n} full extract hand-written/project {size['extract_ratio']:.2f} (for information)")
    print(f"ratio rows={n} full speed hand-written/project without the uploads {size['no_upload_ratio']:.2f} (for "
          "information: the GCS emulator's upload time depends on the bytes, see --hand-compression)")  # fmt: skip
    if "pipe" in size:
        print(f"ratio rows={n} full pg-to-pg pipe/project {size['pipe_ratio']:.2f} (the former comparison, "
              "for information)")  # fmt: skip
    if "project_inc" in size:
        batch = size["project_inc_runs"][0]["batch_rows"]
        print(f"info rows={n} incremental: a batch of {batch:,} new rows before each pair")
        for side in ("project_inc", "hand_inc"):
            report_side(n, "incremental", side, size[side])
        print(f"ratio rows={n} incremental speed hand-written/project {size['inc_speed_ratio']:.2f} "
              "(for information: the hand-written side appends, the project MERGEs)")  # fmt: skip


def report(s: dict) -> None:
    for size in s["sizes"]:
        report_size(s, size)
    sizes = s["sizes"]
    if len(sizes) > 1:
        first, last = sizes[0], sizes[-1]
        for side in ("project", "hand"):
            value = last[side]["peak_rss_mb"] / first[side]["peak_rss_mb"]
            print(f"ratio rss {short(last['rows'])}/{short(first['rows'])} {SIDE_NAMES[side]} {value:.2f}")
    print(
        "info the hand-written side does less: no staging table, no transaction with a state row, no check, "
        "no reconciliation, no source checksums (so no idempotent, ordered publish): the speed ratio is conservative"
    )
    print(
        f"info hand-written Parquet compression: {s['hand_compression']} (the project writes zstd); the GCS emulator "
        "parses each upload with Python's email parser, which splits the body at every CR byte: snappy parts of "
        "this table hold one per row and upload several times slower than zstd ones (not so on Google's GCS)"
    )
    for name in ("bigquery", "gcs"):
        if s.get(f"{name}_emulator_peak_rss_mb"):
            print(f"info peak RSS: {name} emulator {s[f'{name}_emulator_peak_rss_mb']:.0f} MB (in no side)")
    print(f"info code: git HEAD {s['git_head']}, dagforge sha1 {s['dagforge_sha1']}")
    print("info GCS and BigQuery are local emulators (BigQuery on DuckDB): figures are indicative")
    for size in sizes:
        if size.get("profile"):
            print_profile(size["profile"], what="one full project run (check → publish)")
    for size in sizes:
        line = {"rows": size["rows"], "project_s": size["project"]["seconds"], "hand_s": size["hand"]["seconds"],
                "ratio": size["speed_ratio"], "peak_rss_mb": size["project"]["peak_rss_mb"]}  # fmt: skip
        print_last_line("pg_gcs_bq", line, baseline="hand_s")


def save(summary: dict) -> None:
    save_summary(f"pg_gcs_bq_{'_'.join(short(n) for n in summary['rows'])}", summary)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="200000", help="comma-separated source sizes in rows (default 200000)")
    parser.add_argument("--repeat", "--reps", type=int, default=2,
                        help="runs of each side per size and mode, alternating (default 2)")  # fmt: skip
    parser.add_argument("--keep-dir", type=Path, help="put the servers' data and logs here and keep them")
    parser.add_argument("--format", choices=("parquet", "jsonl"), default="parquet",
                        help="the project's staged file format (default parquet; the hand-written side writes "
                        "Parquet always)")  # fmt: skip
    parser.add_argument("--hand-compression", default="snappy", choices=("snappy", "zstd", "none"),
                        help="the hand-written side's Parquet compression (default: pyarrow's, snappy)")  # fmt: skip
    parser.add_argument("--batch-share", type=float, default=0.10,
                        help="the incremental batch, new rows as a share of N (default 0.10)")  # fmt: skip
    parser.add_argument("--no-incremental", dest="incremental", action="store_false",
                        help="full mode only")  # fmt: skip
    parser.add_argument("--no-copy-pipe", dest="copy_pipe", action="store_false",
                        help="leave out the pg → pg binary COPY pipe (and its target server)")  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="one more full project run per size under cProfile")
    parser.add_argument("--max-others", type=float, default=0.10,
                        help="a run during which other processes used more than this share of a core is run "
                        "again (default 0.10)")  # fmt: skip
    parser.add_argument("--retries", type=int, default=3, help="how often such a run is repeated (default 3)")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the untimed warm-up runs")
    args = parser.parse_args(argv)
    try:
        args.rows = [int(text.replace("_", "")) for text in args.rows.split(",") if text.strip()]
    except ValueError:
        parser.error("--rows takes comma-separated integers")
    if not args.rows or min(args.rows) < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be positive")
    if not 0 < args.batch_share <= 1:
        parser.error("--batch-share must be in (0, 1]")
    if not 0 <= args.retries <= 9:
        parser.error("--retries must be between 0 and 9")
    return args


def run(args: argparse.Namespace, base: Path) -> dict:
    from contextlib import ExitStack

    from dagforge.devservices.gcp import running_gcp
    from dagforge.devservices.postgres import running_postgres

    sides = ["project", "hand", *(["pipe"] if args.copy_pipe else [])]
    log(f"starting PostgreSQL ({'source and target' if args.copy_pipe else 'source'}) and the emulators under {base}")
    with ExitStack() as stack:
        source = stack.enter_context(running_postgres("source", base))
        target = stack.enter_context(running_postgres("target", base)) if args.copy_pipe else None
        gcp = stack.enter_context(running_gcp(base / "gcp", base))
        os.environ.update(gcp.environment())  # before any client is made; the spawned children inherit it
        for server in (source, target):
            if server:
                server.create_database(DB)
        runner = Runner(args, source, target, gcp)
        if args.warmup:
            warm_up(runner)
        sizes = [measure_size(runner, rows, sides, args) for rows in args.rows]
        extra = {
            "bigquery_emulator_peak_rss_mb": process_peak_mb(gcp.bigquery.process.pid),
            "gcs_emulator_peak_rss_mb": process_peak_mb(gcp.gcs.process.pid),
            "parent_peak_rss_mb": peak_rss_mb(),
            **code_version(),
        }
        log("stopping the servers")
    return summarize(args, sizes, extra)


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, save, report)


if __name__ == "__main__":
    sys.exit(main())
