"""Benchmark: whole table loads as a user runs them (check + stage/extract + load + publish) against raw COPY pipes.

Usage (from the repo root)::

    .venv/bin/python bench/load_e2e.py [--rows 200000] [--repeat 2] [--keep-dir DIR]
    .venv/bin/python bench/load_e2e.py --rows 2000000,10000000
    .venv/bin/python bench/load_e2e.py --sides e2e_full,psycopg_pipe,psql_pipe --profile

Two throwaway PostgreSQL servers (source, target) and one moto S3 server are started on 127.0.0.1. The
source gets ``pgbench_accounts`` (``bench/pg_to_pg.py``'s table, N rows) and ``pgbench_accounts_inc``
(the same columns plus ``updated_at timestamptz``, indexed, N rows). Per size, ``--repeat`` times each,
in the order of SIDES (reversed in even repetitions), every run in a fresh spawned child:

* ``e2e_full``: a full-mode load pg → pg as the three operators run it, ``decide_window`` → ``stage`` →
  ``publish`` (``dagforge.transfer.postgres_load``), each step on its connections of its own, the window
  and the staging handed on as JSON (XCom), into a target table that holds the previous load: the
  publish replaces an existing table (DELETE + INSERT … SELECT), as a daily full reload does;
* ``s3_full``: pg → S3 (Parquet) → pg, the object-storage operators' functions: ``decide_window`` →
  ``extract`` → ``load_staged`` → ``publish``, into a target that holds the previous load;
* ``e2e_incremental``: an incremental load (cursor ``updated_at``, primary key ``aid``) after the source
  gained a batch of new and changed rows (``--batch-share`` of N: half updated, half inserted), into a
  target that holds every row before the batch;
* ``e2e_chunked``: the full load split by ``chunks: {by: aid, count: --chunk-count}``: the check plans the
  chunks (``dagforge.transfer.chunks.plan_chunks`` if that module exists, else ``PostgresSource.split`` as
  ``PostgresCheckChunksOperator`` calls it), each chunk is staged by ``postgres_load.stage`` in a process of
  its own, concurrently, then one publish of the combined staging (``Staged.combine``); skipped with a
  message in a checkout without chunked loads;
* ``psycopg_pipe``: ``pg_to_pg.py``'s baseline, a raw psycopg binary COPY → COPY pipe into a fresh table;
* ``psycopg_pipe_inc``: the same pipe, of the rows the incremental load moves (``updated_at >=`` its
  watermark), into a fresh table: the incremental side's reference;
* ``psql_pipe``: ``psql -c "COPY … TO STDOUT (FORMAT binary)" | psql -c "COPY … FROM STDIN (FORMAT binary)"``,
  two real psql processes (``pg_config --bindir``) joined by an OS pipe, timed from start to both exits:
  the machine's C-level limit.

After every run the target's row count and sums are checked against the source. Each run also records the
CPU the servers, moto and other processes used meanwhile; a run during which other processes took more
than ``--max-others`` of a core is run again (``--retries``). ``--profile`` adds one cProfile'd e2e_full,
s3_full and e2e_incremental run per size (not in the medians), with the SQL statements that took 5 ms or more.

Progress goes to stderr, information to stdout (``info …`` lines, ``ratio rows=N …`` lines with their
targets; speed ratio = reference time / side time, higher is faster); everything measured goes to
``bench/results/load_e2e_<sizes>_<time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

# Only light modules at the top: a spawned child imports this module again, and what it imports here
# would count in every side's peak RSS. Each side imports its own libraries in its function.
from harness import (  # noqa: E402
    RESULTS,
    bench_main,
    code_version,
    cpu_s,
    in_child,
    in_own_process,
    log,
    machine_busy_s,
    peak_rss_mb,
    print_profile,
    process_cpu_s,
    process_peak_mb,
    process_tree_cpu_s,
    save_summary,
    short,
)

DB = "bench"  # pg_to_pg.DB
TABLE = "pgbench_accounts"  # pg_to_pg.TABLE: the full loads' source
INC_TABLE = "pgbench_accounts_inc"
COLUMNS = ("aid", "bid", "abalance", "filler")  # pg_to_pg.COLUMNS
INC_COLUMNS = (*COLUMNS, "updated_at")
COPY_TABLE = "bench_copy"  # pg_to_pg.COPY_TABLE
PSQL_TABLE = "bench_psql"
COPY_INC_TABLE = "bench_copy_inc"
KEY_PREFIX = "staging"
INC_SHAPE = "aid integer {pk}, bid integer NOT NULL, abalance integer NOT NULL, filler character(84), " \
            "updated_at timestamptz NOT NULL"  # fmt: skip
INC_START = "2024-01-01 00:00:00+00"
"""The initial rows' updated_at: INC_START + aid seconds."""

FULL_SIDES = ("psycopg_pipe", "psql_pipe", "e2e_full", "s3_full", "e2e_chunked")
INC_SIDES = ("e2e_incremental", "psycopg_pipe_inc")
SIDES = (*FULL_SIDES, *INC_SIDES)
PROJECT_SIDES = ("e2e_full", "s3_full", "e2e_chunked", "e2e_incremental")
KEPT = {"e2e_full": TABLE, "s3_full": f"{TABLE}_s3", "e2e_chunked": f"{TABLE}_chunked", "e2e_incremental": INC_TABLE}
"""The target tables that stay from one run to the next (each side's previous load)."""
FRESH = {"psycopg_pipe": COPY_TABLE, "psql_pipe": PSQL_TABLE, "psycopg_pipe_inc": COPY_INC_TABLE}
"""The pipes' target tables, created empty before each run and dropped after it."""
STEPS = {
    "e2e_full": ("check_s", "stage_s", "publish_s"),
    "e2e_chunked": ("check_s", "stage_s", "publish_s"),
    "e2e_incremental": ("check_s", "stage_s", "publish_s"),
    "s3_full": ("check_s", "extract_s", "load_s", "publish_s"),
}


class SideSkipped(Exception):
    """A side that cannot run here (a module or a binary is missing)."""


# --- the loads ---------------------------------------------------------------------------------------


def load_dicts(chunk_count: int) -> dict[str, dict[str, Any]]:
    """Each project side's ``TableLoad.to_dict()``: what the operators get from the plan."""
    from dagforge.loadspec import TableLoad, TableRef
    from dagforge.spec.model import LoadMode

    def full(pipeline: str, table: str) -> TableLoad:
        return TableLoad(pipeline=pipeline, source=TableRef("bench_source", "public", TABLE),
                         destination=TableRef("bench_target", "public", table), mode=LoadMode.FULL,
                         primary_key=("aid",))  # fmt: skip

    incremental = TableLoad(pipeline="bench_inc", source=TableRef("bench_source", "public", INC_TABLE),
                            destination=TableRef("bench_target", "public", INC_TABLE), mode=LoadMode.INCREMENTAL,
                            primary_key=("aid",), cursor="updated_at")  # fmt: skip
    chunked = full("bench_chunked", KEPT["e2e_chunked"]).to_dict()
    chunked["chunks"] = {"by": "aid", "count": chunk_count}  # as the plan resolves `chunks: {by: aid, count: 4}`
    return {
        "e2e_full": full("bench", KEPT["e2e_full"]).to_dict(),  # pg_to_pg.the_load()
        "s3_full": full("bench_s3", KEPT["s3_full"]).to_dict(),
        "e2e_chunked": chunked,
        "e2e_incremental": incremental.to_dict(),
    }


def _connect(dsn: str) -> Any:
    import psycopg

    return psycopg.connect(dsn, autocommit=True)  # as operators.base.postgres_connection


def _xcom(value: dict[str, Any]) -> dict[str, Any]:
    """What the next task reads: the value as JSON, as Airflow's XCom keeps it."""
    return json.loads(json.dumps(value))


def _finish(result: dict[str, Any], rss_before: float, cpu_before: float) -> dict[str, Any]:
    result["cpu_s"] = cpu_s() - cpu_before
    result["rss_before_mb"] = rss_before
    result["peak_rss_mb"] = peak_rss_mb()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["children_peak_rss_mb"] = children.ru_maxrss / 1024
    result["children_cpu_s"] = children.ru_utime + children.ru_stime
    return result


class _Profiler:
    """With ``out`` set: cProfile over the timed steps (the main thread), dumped to ``out``, and the SQL
    statements (``Connection.execute``, every thread) that took 5 ms or more, in :attr:`statements`."""

    def __init__(self, out: str | None):
        import cProfile

        self.out, self.profile = out, cProfile.Profile() if out else None
        self.statements: list[tuple[float, str]] = []

    def __enter__(self) -> None:
        if not self.profile:
            return
        import psycopg

        self.execute = execute = psycopg.Connection.execute

        def timed(conn: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return execute(conn, query, *args, **kwargs)
            finally:
                seconds = time.perf_counter() - started
                if seconds >= 0.005:
                    text = query if isinstance(query, str) else repr(query)
                    self.statements.append((seconds, " ".join(text.split())[:200]))

        psycopg.Connection.execute = timed  # type: ignore[method-assign]
        self.profile.enable()

    def __exit__(self, *exc: Any) -> None:
        if self.profile:
            import psycopg

            self.profile.disable()
            self.profile.dump_stats(self.out)
            psycopg.Connection.execute = self.execute  # type: ignore[method-assign]


# --- the project sides (each runs in its own child process) -------------------------------------------


def e2e_run(src_dsn: str, dst_dsn: str, load_dict: dict, run_id: str, profile: str | None = None) -> dict[str, Any]:
    """check (decide_window) → stage → publish, each step with its own connections, as the operators of
    ``operators/postgres.py`` do; full or incremental by the load's mode."""
    from dagforge.contracts import Staged
    from dagforge.loadspec import TableLoad
    from dagforge.sources.postgres import PostgresSource
    from dagforge.transfer import postgres_load

    rss_before, cpu_before = peak_rss_mb(), cpu_s()
    marks = [time.perf_counter()]
    profiler = _Profiler(profile)
    with profiler:
        window = _check_step(src_dsn, dst_dsn, load_dict)
        marks.append(time.perf_counter())

        load = TableLoad.from_dict(load_dict)  # PostgresStageTableOperator
        with _connect(src_dsn) as src, _connect(dst_dsn) as dst:
            staged, stats = postgres_load.stage(PostgresSource(src), dst, load, window, load.staging_table(run_id))
        xcom = _xcom(staged.to_dict())
        marks.append(time.perf_counter())
        rss_stage = peak_rss_mb()

        load = TableLoad.from_dict(load_dict)  # PostgresPublishTableOperator
        with _connect(dst_dsn) as dst:
            outcome = postgres_load.publish(dst, load, Staged.from_dict(xcom), run_id)
        marks.append(time.perf_counter())
    result = _steps(marks, STEPS["e2e_full"])
    result.update({
        "window": window.reason, "staged_rows": staged.rows, "bytes": stats.bytes, "published_rows": outcome.rows,
        "applied": outcome.applied, "outcome": outcome.reason, "peak_rss_stage_mb": rss_stage,
    })  # fmt: skip
    if profile:
        result["slow_statements"] = sorted(profiler.statements, reverse=True)
    return _finish(result, rss_before, cpu_before)


def _check_step(src_dsn: str, dst_dsn: str, load_dict: dict) -> Any:
    """The check step as ``PostgresCheckNewRowsOperator`` runs it; its window as the next step reads
    it back from XCom (a RuntimeError when it found nothing to load)."""
    from dagforge.contracts import Window
    from dagforge.loadspec import TableLoad
    from dagforge.sources.postgres import PostgresSource
    from dagforge.transfer import postgres_load

    with _connect(src_dsn) as src, _connect(dst_dsn) as dst:
        window = postgres_load.decide_window(PostgresSource(src), dst, TableLoad.from_dict(load_dict))
    window = Window.from_dict(_xcom(window.to_dict()))
    if not window.new_rows:
        raise RuntimeError(f"the check step found nothing to load: {window.reason}")
    return window


def _steps(marks: list[float], names: tuple[str, ...]) -> dict[str, float]:
    steps = {name: marks[i + 1] - marks[i] for i, name in enumerate(names)}
    return {"seconds": marks[-1] - marks[0], **steps}


def s3_store(endpoint: str, bucket: str) -> Any:
    """An S3Store on moto (pg_s3_pg.s3_store, not imported: that module imports pyarrow and boto3 at its top)."""
    import boto3

    from dagforge.stage.s3_store import S3Store

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="dagforge",
                          aws_secret_access_key="dagforge", region_name="us-east-1")  # fmt: skip
    return S3Store(client, bucket)


def s3_run(
    src_dsn: str, dst_dsn: str, endpoint: str, fmt: str, load_dict: dict, run_id: str, profile: str | None = None
) -> dict[str, Any]:
    """check → extract → load → publish, the functions ``operators/stage.py`` calls, into a bucket that
    exists (made before the timer, as a deployment's does); each step its own client and connections."""
    import pyarrow as pa

    # what _s3_steps imports, imported before the timer (as the operators' modules are, at parse)
    import dagforge.contracts
    import dagforge.loadspec
    import dagforge.sources.postgres
    import dagforge.stage.extract_load
    import dagforge.transfer.postgres_load  # noqa: F401

    bucket = f"load-e2e-{run_id}".lower().replace("_", "-")[:63]
    s3_store(endpoint, bucket).ensure_bucket()
    rss_before, cpu_before = peak_rss_mb(), cpu_s()
    marks = [time.perf_counter()]
    profiler = _Profiler(profile)
    with profiler:
        manifest, staged, outcome, window, rss_extract = _s3_steps(src_dsn, dst_dsn, endpoint, bucket, fmt,
                                                                   load_dict, run_id, marks)  # fmt: skip
    store = s3_store(endpoint, bucket)
    store.delete_prefix("")
    store.client.delete_bucket(Bucket=bucket)
    result = _steps(marks, STEPS["s3_full"])
    result.update({
        "window": window.reason, "manifest_rows": manifest.rows, "staged_rows": staged.rows,
        "published_rows": outcome.rows, "applied": outcome.applied, "outcome": outcome.reason,
        "parts": len(manifest.parts), "bytes": sum(p["bytes"] for p in manifest.parts),
        "peak_rss_extract_mb": rss_extract, "arrow_peak_mb": pa.default_memory_pool().max_memory() / 2**20,
    })  # fmt: skip
    if profile:
        result["slow_statements"] = sorted(profiler.statements, reverse=True)
    return _finish(result, rss_before, cpu_before)


def _s3_steps(
    src_dsn: str, dst_dsn: str, endpoint: str, bucket: str, fmt: str, load_dict: dict, run_id: str, marks: list
) -> tuple:
    from dagforge.contracts import Staged
    from dagforge.loadspec import TableLoad
    from dagforge.sources.postgres import PostgresSource
    from dagforge.stage.extract_load import extract, load_staged, run_prefix
    from dagforge.transfer import postgres_load

    window = _check_step(src_dsn, dst_dsn, load_dict)
    marks.append(time.perf_counter())

    load = TableLoad.from_dict(load_dict)  # ExtractOperator
    prefix, store = run_prefix(KEY_PREFIX, load, run_id), s3_store(endpoint, bucket)
    with _connect(src_dsn) as src:
        manifest = extract(PostgresSource(src), load, window, store, prefix, fmt, run_id, encoding="postgres")
    xcom = _xcom({"key_prefix": prefix, "rows": manifest.rows, "parts": len(manifest.parts),
                  "window": window.to_dict()})  # fmt: skip
    marks.append(time.perf_counter())
    rss_extract = peak_rss_mb()

    load, store = TableLoad.from_dict(load_dict), s3_store(endpoint, bucket)  # PostgresLoadOperator
    with _connect(dst_dsn) as dst:
        staged = load_staged(dst, load, store, xcom["key_prefix"], load.staging_table(run_id))
    xcom = _xcom(staged.to_dict())
    marks.append(time.perf_counter())

    load = TableLoad.from_dict(load_dict)  # PostgresPublishFromStoreOperator
    with _connect(dst_dsn) as dst:
        outcome = postgres_load.publish(dst, load, Staged.from_dict(xcom), run_id)
    marks.append(time.perf_counter())
    return manifest, staged, outcome, window, rss_extract


def _chunk_worker_ready(_: int) -> int:
    time.sleep(0.2)  # long enough that every worker takes one of these
    return os.getpid()


def _chunk_worker_init() -> None:
    import dagforge.sources.postgres
    import dagforge.transfer.postgres_load  # noqa: F401


def stage_chunk(src_dsn: str, dst_dsn: str, load_dict: dict, window_dict: dict, staging_table: str) -> dict[str, Any]:
    """One chunk's stage task: ``postgres_load.stage`` of its window, on connections of its own."""
    from dagforge.contracts import Window
    from dagforge.loadspec import TableLoad
    from dagforge.sources.postgres import PostgresSource
    from dagforge.transfer import postgres_load

    started, cpu_before = time.perf_counter(), cpu_s()
    load, window = TableLoad.from_dict(load_dict), Window.from_dict(window_dict)
    with _connect(src_dsn) as src, _connect(dst_dsn) as dst:
        staged, stats = postgres_load.stage(PostgresSource(src), dst, load, window, staging_table)
    return {"staged": _xcom(staged.to_dict()), "rows": stats.rows, "bytes": stats.bytes,
            "seconds": time.perf_counter() - started, "cpu_s": cpu_s() - cpu_before, "peak_rss_mb": peak_rss_mb(),
            "pid": os.getpid()}  # fmt: skip


def chunk_api() -> tuple[Any, Any, str] | None:
    """How this checkout plans and combines chunks: ``dagforge.transfer.chunks`` (``plan_chunks(source_conn,
    load, window)``, ``combine``) when it exists, else what the committed operators call
    (``PostgresCheckChunksOperator``: ``PostgresSource.split(load, window)`` inside the check;
    ``PostgresPublishChunksOperator``: ``Staged.combine``); None: no chunked loads here."""
    from dagforge.contracts import Staged
    from dagforge.sources.postgres import PostgresSource

    if importlib.util.find_spec("dagforge.transfer.chunks") is not None:
        from dagforge.transfer import chunks

        return chunks.plan_chunks, getattr(chunks, "combine", Staged.combine), "dagforge.transfer.chunks"
    if hasattr(PostgresSource, "split") and hasattr(Staged, "combine"):

        def plan(conn: Any, load: Any, window: Any) -> list[Any]:
            return PostgresSource(conn).split(load, window)

        return plan, Staged.combine, "PostgresSource.split + Staged.combine (no dagforge.transfer.chunks)"
    return None


def e2e_chunked_run(src_dsn: str, dst_dsn: str, load_dict: dict, run_id: str) -> dict[str, Any]:
    """check (decide_window + the chunk plan) → every chunk staged by ``postgres_load.stage`` in its own
    process at once (into the run's one staging table, each chunk its own table joining it) → combine + one
    publish. Started with :func:`harness.in_own_process` (a pool's worker may not start processes); the chunk
    processes are started and warm before the timer, as Airflow's task processes would be."""
    import signal
    from multiprocessing import get_context

    from dagforge.contracts import Staged
    from dagforge.loadspec import TableLoad
    from dagforge.sources.postgres import PostgresSource
    from dagforge.transfer import postgres_load

    api = chunk_api()
    if api is None:
        raise SideSkipped(
            "no chunked loads in this checkout (neither dagforge.transfer.chunks nor PostgresSource.split)"
        )
    plan_chunks, combine, api_name = api

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # leave the pool's with-block: it terminates the chunk processes

    signal.signal(signal.SIGTERM, stop)
    count = int((load_dict.get("chunks") or {}).get("count") or 4)
    with get_context("spawn").Pool(count, initializer=_chunk_worker_init) as pool:
        workers = set(pool.map(_chunk_worker_ready, range(count), chunksize=1))
        rss_before, cpu_before = peak_rss_mb(), cpu_s()
        marks = [time.perf_counter()]
        load = TableLoad.from_dict(load_dict)  # the check task
        if load.chunks is None:
            raise SideSkipped("TableLoad.from_dict dropped `chunks` (no chunks field)")
        with _connect(src_dsn) as src, _connect(dst_dsn) as dst:
            window = postgres_load.decide_window(PostgresSource(src), dst, load)
            windows = plan_chunks(src, load, window)
        xcom = [_xcom(w.to_dict()) for w in windows]
        marks.append(time.perf_counter())

        staging = load.staging_table(run_id)  # the stage tasks, mapped: one per chunk, at once
        args = [(src_dsn, dst_dsn, load_dict, w, staging) for w in xcom]
        staged_chunks = pool.starmap(stage_chunk, args, chunksize=1)
        marks.append(time.perf_counter())

        load = TableLoad.from_dict(load_dict)  # the publish task
        staged = combine([Staged.from_dict(c["staged"]) for c in staged_chunks])
        with _connect(dst_dsn) as dst:
            outcome = postgres_load.publish(dst, load, staged, run_id)
        marks.append(time.perf_counter())
    result = _steps(marks, STEPS["e2e_chunked"])
    result.update({
        "window": window.reason, "chunk_api": api_name, "chunks": len(windows),
        "chunk_rows": [c["rows"] for c in staged_chunks], "chunk_seconds": [c["seconds"] for c in staged_chunks],
        "staged_rows": staged.rows, "bytes": sum(c["bytes"] for c in staged_chunks), "published_rows": outcome.rows,
        "applied": outcome.applied, "outcome": outcome.reason,
        "chunk_processes": len(workers | {c["pid"] for c in staged_chunks}),
        "chunk_peak_rss_mb": max(c["peak_rss_mb"] for c in staged_chunks),
    })  # fmt: skip
    result = _finish(result, rss_before, cpu_before)
    result["children_cpu_s"] = sum(c["cpu_s"] for c in staged_chunks)  # their stage calls, not their start-up
    return result


# --- the reference pipes (each runs in its own child process) -----------------------------------------


def psycopg_pipe_run(src_dsn: str, dst_dsn: str, select: str, params: dict | None, table: str) -> dict[str, Any]:
    """``pg_to_pg.baseline_run`` over a SELECT: the rows the incremental load moves, into an empty table."""
    out_sql = f"COPY ({select}) TO STDOUT (FORMAT binary)"
    in_sql = f"COPY {table} ({', '.join(INC_COLUMNS)}) FROM STDIN (FORMAT binary)"
    with _connect(src_dsn) as src, _connect(dst_dsn) as dst:
        rss_before, cpu_before = peak_rss_mb(), cpu_s()
        started = time.perf_counter()
        with (
            src.cursor() as out_cur,
            dst.cursor() as in_cur,
            out_cur.copy(out_sql, params) as copy_out,
            in_cur.copy(in_sql) as copy_in,
        ):
            for chunk in copy_out:
                copy_in.write(chunk)
        seconds = time.perf_counter() - started
    return _finish({"seconds": seconds}, rss_before, cpu_before)


def full_pipe_run(src_dsn: str, dst_dsn: str, table: str) -> dict[str, Any]:
    """pg_to_pg.py's baseline itself (imported here, in the child only: pg_to_pg imports dagforge)."""
    from pg_to_pg import baseline_run

    result = baseline_run(src_dsn, dst_dsn, table)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["children_peak_rss_mb"], result["children_cpu_s"] = children.ru_maxrss / 1024, 0.0
    return result


def psql_pipe_run(psql: str, src_dsn: str, dst_dsn: str, table: str) -> dict[str, Any]:
    """``psql -c "COPY … TO STDOUT (FORMAT binary)" | psql -c "COPY … FROM STDIN (FORMAT binary)"``: two psql
    processes, the first one's stdout the second one's stdin (an OS pipe), timed from the start of the
    first to the exit of both."""
    cols = ", ".join(COLUMNS)
    common = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    out_cmd = [*common, "-d", src_dsn, "-c", f"COPY {TABLE} ({cols}) TO STDOUT (FORMAT binary)"]
    in_cmd = [*common, "-d", dst_dsn, "-c", f"COPY {table} ({cols}) FROM STDIN (FORMAT binary)"]
    rss_before, cpu_before = peak_rss_mb(), cpu_s()
    started = time.perf_counter()
    reader = subprocess.Popen(out_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    writer = subprocess.Popen(in_cmd, stdin=reader.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout is not None
    reader.stdout.close()  # the pipe is the two psql processes' own now
    writer_out, writer_err = writer.communicate()
    reader_err = reader.stderr.read() if reader.stderr else b""
    reader.wait()
    seconds = time.perf_counter() - started
    if reader.returncode or writer.returncode:
        raise RuntimeError(f"psql pipe failed ({reader.returncode}/{writer.returncode}): "
                           f"{reader_err.decode()} {writer_err.decode()}")  # fmt: skip
    return _finish({"seconds": seconds, "psql_out": writer_out.decode().strip()}, rss_before, cpu_before)


# --- the parent: servers, tables, alternation, checks -------------------------------------------------


def find_psql() -> str | None:
    """psql from ``pg_config --bindir`` (not /usr/bin's wrapper script), else the servers' bindir."""
    bindir = None
    if shutil.which("pg_config"):
        bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()
    if not bindir or not (Path(bindir) / "psql").is_file():
        from dagforge.devservices.postgres import find_pg_bindir

        found = find_pg_bindir()
        bindir = str(found) if found else None
    return str(Path(bindir) / "psql") if bindir and (Path(bindir) / "psql").is_file() else None


def postmaster_pid(server: Any) -> int:
    return int((server.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])


def sql(dsn: str, *statements: str, params: dict | None = None) -> list[tuple]:
    """Run statements in autocommit; the rows of the last one (if any)."""
    with _connect(dsn) as conn:
        rows: list[tuple] = []
        for statement in statements:
            cur = conn.execute(statement, params)
            rows = cur.fetchall() if cur.description else []
        return rows


class Runner:
    """The servers, the per-size state of the source and target, and one measured run of a side."""

    def __init__(self, args: argparse.Namespace, source: Any, target: Any, s3: Any, psql: str | None):
        self.args, self.src, self.dst = args, source.dsn(DB), target.dsn(DB)
        self.endpoint, self.psql = s3.endpoint_url, psql
        self.servers = {"source": postmaster_pid(source), "target": postmaster_pid(target)}
        self.moto = s3.process.pid
        self.loads = load_dicts(args.chunk_count)
        self.stamp = time.strftime("%Y%m%dt%H%M%S")
        self.rows, self.batches, self.full_sums = 0, 0, (0, 0, 0)
        self.inc_since, self.inc_moved = "", 0

    # setup, untimed

    def prepare_size(self, rows: int) -> None:
        from pg_to_pg import fill_source

        self.rows, self.batches = rows, 0
        sql(self.dst, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")  # every kept table and the state
        fill_source(self.src, rows)
        log(f"filling source {INC_TABLE} with {rows:,} rows (updated_at indexed)")
        sql(
            self.src,
            f"DROP TABLE IF EXISTS {INC_TABLE}",
            f"CREATE TABLE {INC_TABLE} ({INC_SHAPE.format(pk='PRIMARY KEY')})",
            f"INSERT INTO {INC_TABLE} SELECT i, (i - 1) / 100000 + 1, 0, '', "
            f"TIMESTAMPTZ '{INC_START}' + i * INTERVAL '1 second' FROM generate_series(1, {rows}) AS i",
            f"CREATE INDEX ON {INC_TABLE} (updated_at)",
            f"VACUUM ANALYZE {INC_TABLE}",
        )
        self.full_sums = self.sums(self.src, TABLE)

    def apply_batch(self) -> int:
        """The source gains new and changed rows: ``--batch-share`` of N, half of them updates of existing
        rows (abalance + 1, a later updated_at), half new rows; every updated_at past the last one. Returns
        how many rows the next incremental load reads (``updated_at >=`` the current maximum)."""
        self.batches += 1
        n = max(2, int(self.rows * self.args.batch_share))
        every = max(1, round(2 * self.rows / n))  # one row in `every` is updated
        (since,) = sql(self.src, f"SELECT max(updated_at)::text FROM {INC_TABLE}")[0]
        sql(
            self.src,
            f"UPDATE {INC_TABLE} t SET abalance = t.abalance + 1, "
            f"updated_at = m.top + t.aid * INTERVAL '1 microsecond' "
            f"FROM (SELECT max(updated_at) AS top FROM {INC_TABLE}) m WHERE t.aid % {every} = {self.batches % every}",
            f"INSERT INTO {INC_TABLE} SELECT m.aid + i, 1, 0, '', m.top + i * INTERVAL '1 microsecond' "
            f"FROM (SELECT max(aid) AS aid, max(updated_at) AS top FROM {INC_TABLE}) m, "
            f"generate_series(1, {n // 2}) AS i",
            f"VACUUM ANALYZE {INC_TABLE}",
            "CHECKPOINT",
        )
        self.inc_since = since
        query = f"SELECT count(*) FROM {INC_TABLE} WHERE updated_at >= CAST(%(s)s AS timestamptz)"
        self.inc_moved = sql(self.src, query, params={"s": since})[0][0]
        return self.inc_moved

    def before(self, side: str) -> None:
        if side in FRESH:
            from pg_to_pg import SHAPE  # the pipes' tables: no primary key, like staging

            shape = (INC_SHAPE if side == "psycopg_pipe_inc" else SHAPE).format(pk="NOT NULL")
            sql(self.dst, f"DROP TABLE IF EXISTS {FRESH[side]}", f"CREATE TABLE {FRESH[side]} ({shape})")
        elif self.exists(KEPT[side]):  # the previous load, vacuumed as autovacuum would have since
            sql(self.dst, f"VACUUM ANALYZE {KEPT[side]}")
        sql(self.dst, "CHECKPOINT")
        sql(self.src, "CHECKPOINT")

    def exists(self, table: str) -> bool:
        return sql(self.dst, f"SELECT to_regclass('public.{table}') IS NOT NULL")[0][0]

    @staticmethod
    def sums(dsn: str, table: str, where: str = "", params: dict | None = None) -> tuple:
        return sql(dsn, f"SELECT count(*), coalesce(sum(aid), 0), coalesce(sum(abalance), 0) FROM {table} {where}",
                   params=params)[0]  # fmt: skip

    # one run

    def child(self, side: str, run_id: str, profile: str | None = None) -> dict[str, Any]:
        args, loads = self.args, self.loads
        if side in ("e2e_full", "e2e_incremental"):
            return in_child(e2e_run, self.src, self.dst, loads[side], run_id, profile)
        if side == "s3_full":
            return in_child(s3_run, self.src, self.dst, self.endpoint, args.format, loads[side], run_id, profile)
        if side == "e2e_chunked":
            return in_own_process(e2e_chunked_run, self.src, self.dst, loads[side], run_id)
        if side == "psycopg_pipe":
            return in_child(full_pipe_run, self.src, self.dst, COPY_TABLE)
        if side == "psql_pipe":
            return in_child(psql_pipe_run, self.psql, self.src, self.dst, PSQL_TABLE)
        select = f"SELECT {', '.join(INC_COLUMNS)} FROM {INC_TABLE} WHERE updated_at >= CAST(%(since)s AS timestamptz)"
        return in_child(psycopg_pipe_run, self.src, self.dst, select, {"since": self.inc_since}, COPY_INC_TABLE)

    def run(self, side: str, tag: str, profile: str | None = None) -> dict[str, Any]:
        self.before(side)
        run_id = f"bench__{short(self.rows)}_{side}_{tag}_{self.stamp}"
        usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = sum(u.ru_utime + u.ru_stime for u in usage)
        servers = {name: process_tree_cpu_s(pid) for name, pid in self.servers.items()}
        moto, machine, started = process_cpu_s(self.moto), machine_busy_s(), time.perf_counter()
        result = self.child(side, run_id, profile)
        time.sleep(0.1)  # the closed connections' backends exit and are reaped
        result["window_s"] = time.perf_counter() - started  # the child's whole life, imports and setup included
        usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        result["bench_processes_cpu_s"] = sum(u.ru_utime + u.ru_stime for u in usage) - ours  # this, the child, psql
        for name, pid in self.servers.items():
            result[f"{name}_server_cpu_s"] = process_tree_cpu_s(pid) - servers[name]
        result["moto_cpu_s"] = process_cpu_s(self.moto) - moto
        known = result["bench_processes_cpu_s"] + result["moto_cpu_s"]
        known += result["source_server_cpu_s"] + result["target_server_cpu_s"]
        result["others_cpu_s"] = max(0.0, machine_busy_s() - machine - known)
        result["run_id"] = run_id
        self.check(side, result)
        if side in FRESH:
            sql(self.dst, f"DROP TABLE {FRESH[side]}")
        return result

    def check(self, side: str, result: dict[str, Any]) -> None:
        """The target holds what the source does: row count, sum(aid), sum(abalance)."""
        if side == "e2e_incremental":
            expected, found = self.sums(self.src, INC_TABLE), self.sums(self.dst, INC_TABLE)
        elif side == "psycopg_pipe_inc":
            where = "WHERE updated_at >= CAST(%(s)s AS timestamptz)"
            expected = self.sums(self.src, INC_TABLE, where, {"s": self.inc_since})
            found = self.sums(self.dst, COPY_INC_TABLE)
        else:
            expected, found = self.full_sums, self.sums(self.dst, KEPT.get(side) or FRESH[side])
        result["target_rows"], result["target_sum_aid"] = found[0], found[1]
        result["rows_moved"] = result.get("staged_rows", found[0])
        if found != expected:
            raise RuntimeError(f"{side}: the target holds (count, sum(aid), sum(abalance)) {found}, "
                               f"the source {expected}")  # fmt: skip
        if side == "e2e_incremental" and self.batches and result["staged_rows"] != self.inc_moved:
            raise RuntimeError(f"{side}: staged {result['staged_rows']} rows, the batch left {self.inc_moved} to read")
        if side in PROJECT_SIDES and not result.get("applied"):
            raise RuntimeError(f"{side}: the publish did not apply: {result.get('outcome')}")

    def clean_run(self, side: str, rep: int) -> dict[str, Any]:
        """One run; again (up to ``--retries`` times, an incremental one after a new batch) while other
        processes took more than ``--max-others`` of a core meanwhile."""
        args = self.args
        for attempt in range(args.retries + 1):
            if side == "e2e_incremental" and attempt:
                self.apply_batch()
            result = self.run(side, f"r{rep}{'abcdefghij'[attempt]}")
            result["discarded_runs"] = attempt
            share = result["others_cpu_s"] / result["window_s"]
            log(f"rows={self.rows:,} rep {rep}/{args.repeat} {side}: {describe(side, result)}")
            if share <= args.max_others:
                return result
            then = "running it again" if attempt < args.retries else "kept, flagged (others_cpu_s in the results)"
            log(f"other processes used {share:.0%} of a core during that run: {then}")
        return result


def describe(side: str, r: dict[str, Any]) -> str:
    steps = ", ".join(f"{k.removesuffix('_s')} {r[k]:.2f}" for k in STEPS.get(side, ()))
    text = f"{r['seconds']:.3f} s" + (f" ({steps})" if steps else "")
    if r.get("chunks"):
        text += f"; {r['chunks']} chunks, each {', '.join(f'{s:.2f}' for s in r['chunk_seconds'])} s"
    rss = r["peak_rss_mb"] if side != "psql_pipe" else r["children_peak_rss_mb"]
    return (
        f"{text}; {r['rows_moved']:,} rows; client CPU {r['cpu_s'] + r.get('children_cpu_s', 0):.2f} s, servers "
        f"{r['source_server_cpu_s']:.2f} + {r['target_server_cpu_s']:.2f} s, moto {r['moto_cpu_s']:.2f} s; "
        f"peak RSS {rss:.0f} MB; other processes' CPU {r['others_cpu_s']:.2f} s"
    )


def available_sides(args: argparse.Namespace, psql: str | None) -> tuple[list[str], dict[str, str]]:
    """The sides that can run here, and notes: why a side is left out, which chunk API e2e_chunked uses."""
    notes: dict[str, str] = {}
    if "e2e_chunked" in args.sides:
        api = chunk_api()
        if api is None:
            notes["e2e_chunked"] = "skipped: no chunked loads here (neither dagforge.transfer.chunks nor " \
                "PostgresSource.split)"  # fmt: skip
        else:
            notes["e2e_chunked_api"] = api[2]
            log(f"e2e_chunked plans and combines chunks with {api[2]}")
    if "psql_pipe" in args.sides and psql is None:
        notes["psql_pipe"] = "skipped: no psql binary found (pg_config --bindir)"
    return [s for s in args.sides if s not in notes], notes


def first_loads(runner: Runner, sides: list[str]) -> dict[str, dict]:
    """Each project side once into an empty target (not in the medians): afterwards the target holds a
    previous load, as it does on every day but the first."""
    first = {}
    for side in (s for s in PROJECT_SIDES if s in sides):
        first[side] = runner.run(side, "first")
        log(f"rows={runner.rows:,} first load (empty target, not in the medians) {side}: {describe(side, first[side])}")
    return first


def measure_size(runner: Runner, rows: int, sides: list[str], args: argparse.Namespace) -> dict[str, Any]:
    runner.prepare_size(rows)
    first = first_loads(runner, sides)
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    batches = []
    for rep in range(1, args.repeat + 1):
        full = [s for s in FULL_SIDES if s in sides]
        inc = [s for s in INC_SIDES if s in sides]
        if rep % 2 == 0:
            full, inc = full[::-1], inc[::-1]
        for side in full:
            runs[side].append(runner.clean_run(side, rep))
        if inc:
            moved = runner.apply_batch()
            batches.append(moved)
            log(f"rows={rows:,} rep {rep}: the source gained a batch; the incremental load reads {moved:,} rows")
            for side in inc:
                runs[side].append(runner.clean_run(side, rep))
    profiles = {}
    for side in (s for s in ("e2e_full", "s3_full", "e2e_incremental") if args.profile and s in sides):
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = str(RESULTS / f"load_e2e_{side}_{short(rows)}_{time.strftime('%Y%m%dT%H%M%S')}.prof")
        if side == "e2e_incremental":
            runner.apply_batch()
        profiles[side] = {"path": path, "run": runner.run(side, "prof", path)}
        seconds = profiles[side]["run"]["seconds"]
        log(f"cProfile of one {side} run (not in the medians, {seconds:.2f} s under cProfile): {path}")
    return {"rows": rows, "first_runs": first, "runs": runs, "batches": batches, "profiles": profiles}


# --- report ---------------------------------------------------------------------------------------------

MEDIAN_KEYS = ("seconds", "check_s", "stage_s", "extract_s", "load_s", "publish_s", "cpu_s", "children_cpu_s",
               "source_server_cpu_s", "target_server_cpu_s", "moto_cpu_s", "others_cpu_s", "rows_moved")  # fmt: skip
TARGETS = {
    "e2e_full/psycopg_pipe": ("e2e_full", "seconds", "psycopg_pipe", "seconds", ">= 0.8"),
    "stage/psql_pipe": ("e2e_full", "stage_s", "psql_pipe", "seconds", ">= 0.8"),
    "s3_full/psycopg_pipe": ("s3_full", "seconds", "psycopg_pipe", "seconds", ">= 0.8"),
    "e2e_incremental/psycopg_pipe(same rows)": ("e2e_incremental", "seconds", "psycopg_pipe_inc", "seconds",
                                                ">= 0.8, the full load's; none set for incremental"),
    "e2e_chunked/psycopg_pipe": ("e2e_chunked", "seconds", "psycopg_pipe", "seconds", ">= 0.8, the full load's"),
    "e2e_chunked/e2e_full": ("e2e_chunked", "seconds", "e2e_full", "seconds",
                             ">= 1.0: the chunks no slower than one stream"),
}  # fmt: skip
INFO_RATIOS = {
    "stage/psycopg_pipe": ("e2e_full", "stage_s", "psycopg_pipe", "seconds"),
    "psycopg_pipe/psql_pipe": ("psycopg_pipe", "seconds", "psql_pipe", "seconds"),
    "e2e_full/psql_pipe": ("e2e_full", "seconds", "psql_pipe", "seconds"),
    "s3_full/psql_pipe": ("s3_full", "seconds", "psql_pipe", "seconds"),
    "e2e_chunked stage/psql_pipe": ("e2e_chunked", "stage_s", "psql_pipe", "seconds"),
}


def side_peak_rss(side: str, runs: list[dict]) -> float:
    """The side's peak RSS: the child's own; for psql_pipe the larger psql process; for e2e_chunked the
    largest of the coordinator and its chunk processes."""
    if side == "psql_pipe":
        return max(r["children_peak_rss_mb"] for r in runs)
    if side == "e2e_chunked":
        return max(max(r["peak_rss_mb"], r["chunk_peak_rss_mb"]) for r in runs)
    return max(r["peak_rss_mb"] for r in runs)


def summarize(args: argparse.Namespace, sizes: list[dict], extra: dict) -> dict:
    for size in sizes:
        size["medians"] = {}
        for side, runs in size["runs"].items():
            m = {k: statistics.median(r[k] for r in runs) for k in MEDIAN_KEYS if k in runs[0]}
            m["peak_rss_mb"] = side_peak_rss(side, runs)
            m["rss_before_mb"] = max(r["rss_before_mb"] for r in runs)
            m["min_s"] = min(r["seconds"] for r in runs)
            size["medians"][side] = m
        med = size["medians"]
        size["ratios"] = {}
        for name, (side, key, ref, ref_key, *_) in (*TARGETS.items(), *INFO_RATIOS.items()):
            if side in med and ref in med and key in med[side]:
                size["ratios"][name] = med[ref][ref_key] / med[side][key]
    rss_ratio = {}
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        for side in large["medians"]:
            if side in small["medians"]:
                rss_ratio[side] = large["medians"][side]["peak_rss_mb"] / small["medians"][side]["peak_rss_mb"]
    return {"rows": [s["rows"] for s in sizes], "repeat": args.repeat, "format": args.format,
            "batch_share": args.batch_share, "chunk_count": args.chunk_count, "sides": args.sides,
            "max_others": args.max_others, "rss_ratio": rss_ratio, "sizes": sizes, **extra}  # fmt: skip


def report_side(n: int, side: str, m: dict[str, Any]) -> None:
    steps = ", ".join(f"{k.removesuffix('_s')} {m[k]:.3f}" for k in STEPS.get(side, ()) if k in m)
    client = m["cpu_s"] + m.get("children_cpu_s", 0)
    print(
        f"info rows={n} {side} total {m['seconds']:.3f} s" + (f" ({steps})" if steps else "")
        + f", min {m['min_s']:.3f} s; {m['rows_moved']:,.0f} rows; peak RSS {m['peak_rss_mb']:.0f} MB "
        f"(before the timer {m['rss_before_mb']:.0f}); client CPU {client:.2f} s, "
        f"servers {m['source_server_cpu_s']:.2f} + {m['target_server_cpu_s']:.2f} s, "
        f"other processes {m['others_cpu_s']:.2f} s"
    )  # fmt: skip


def report_size(size: dict[str, Any], repeat: int) -> None:
    n, med = size["rows"], size["medians"]
    print(f"info rows={n} {repeat} run(s) of each side, medians; order reversed in even repetitions")
    for side in (s for s in SIDES if s in med):
        report_side(n, side, med[side])
    for side, r in size["first_runs"].items():
        print(f"info rows={n} {side} first load into an empty target (not in the medians): {r['seconds']:.3f} s")
    if size["batches"]:
        print(f"info rows={n} incremental batches: {', '.join(f'{b:,}' for b in size['batches'])} rows read")
    for name, (*_, target) in TARGETS.items():
        if name in size["ratios"]:
            print(f"ratio rows={n} {name} {size['ratios'][name]:.2f} (target {target})")
    for name in (x for x in INFO_RATIOS if x in size["ratios"]):
        print(f"ratio rows={n} {name} {size['ratios'][name]:.2f} (for information)")
    for side in (s for s in SIDES if s in med):
        target = " (target <= 300 MB)" if side in PROJECT_SIDES else ""
        print(f"info rows={n} peak RSS {side} {med[side]['peak_rss_mb']:.0f} MB{target}")


def report(s: dict) -> None:
    for name, why in s["notes"].items():
        print(f"info {name} {why}" if name in SIDES else f"info {name}: {why}")
    for size in s["sizes"]:
        report_size(size, s["repeat"])
    if s["rss_ratio"]:
        small, large = s["sizes"][0]["rows"], s["sizes"][-1]["rows"]
        for side, value in s["rss_ratio"].items():
            target = " (target: flat)" if side in PROJECT_SIDES else ""
            print(f"ratio rss {short(large)}/{short(small)} {side} {value:.2f}{target}")
    moto = s.get("moto_peak_rss_mb")
    if moto:
        print(f"info peak RSS: moto_server {moto:.0f} MB (in no side)")
    print(f"info code: git HEAD {s['git_head']}, dagforge sha1 {s['dagforge_sha1']}; {s['versions']}")
    for size in s["sizes"]:
        for side, profiled in size["profiles"].items():
            print_profile(profiled["path"], what=f"one {side} run at {short(size['rows'])} rows")
            r = profiled["run"]
            steps = ", ".join(f"{k.removesuffix('_s')} {r[k]:.3f}" for k in STEPS[side])
            print(f"info SQL statements of 5 ms or more in that run ({r['seconds']:.3f} s: {steps}), any thread:")
            for seconds, text in r["slow_statements"]:
                print(f"info   {seconds:7.3f} s  {text}")


def versions(runner: Runner) -> str:
    found = [f"PostgreSQL {sql(runner.src, 'SHOW server_version')[0][0]}", f"Python {platform.python_version()}"]
    for package in ("psycopg", "pyarrow", "boto3", "moto"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{package} {metadata.version(package)}")
    if runner.psql:
        found.append(subprocess.run([runner.psql, "--version"], capture_output=True, text=True).stdout.strip())
    return ", ".join(found)


def save(summary: dict) -> None:
    save_summary(f"load_e2e_{'_'.join(short(n) for n in summary['rows'])}", summary)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="200000", help="comma-separated table sizes in rows (default 200000)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each side per size (default 2)")
    parser.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated subset of {', '.join(SIDES)}")
    parser.add_argument("--keep-dir", type=Path, help="put the servers here and keep them (logs) afterwards")
    parser.add_argument("--format", default="parquet", choices=("parquet", "csv", "jsonl"),
                        help="s3_full's staged file format (default parquet)")  # fmt: skip
    parser.add_argument("--batch-share", type=float, default=0.10,
                        help="new + changed rows per incremental batch, as a share of N (default 0.10)")  # fmt: skip
    parser.add_argument("--chunk-count", type=int, default=4, help="e2e_chunked's chunks: count (default 4)")
    parser.add_argument("--profile", action="store_true",
                        help="one more e2e_full and e2e_incremental run per size under cProfile")  # fmt: skip
    parser.add_argument("--max-others", type=float, default=0.10,
                        help="a run during which other processes used more than this share of a core is run "
                        "again (default 0.10)")  # fmt: skip
    parser.add_argument("--retries", type=int, default=2, help="how often such a run is repeated (default 2)")
    args = parser.parse_args(argv)
    try:
        args.rows = [int(text.replace("_", "")) for text in args.rows.split(",") if text.strip()]
    except ValueError:
        parser.error("--rows takes comma-separated integers")
    args.sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = sorted(set(args.sides) - set(SIDES))
    if unknown:
        parser.error(f"unknown side(s) {', '.join(unknown)}; choose from {', '.join(SIDES)}")
    if not args.rows or min(args.rows) < 10 or args.repeat < 1 or not 0 < args.batch_share <= 1:
        parser.error("--rows (at least 10 each) and --repeat must be positive, --batch-share in (0, 1]")
    return args


def run(args: argparse.Namespace, base: Path) -> dict:
    from dagforge.devservices.postgres import running_postgres
    from dagforge.devservices.s3 import running_s3

    psql = find_psql()
    sides, notes = available_sides(args, psql)
    for name, why in notes.items():
        if name in SIDES:
            log(f"{name} {why}")
    log(f"starting two PostgreSQL servers and a moto S3 server under {base}; sides: {', '.join(sides)}")
    with (
        running_postgres("source", base) as source,
        running_postgres("target", base) as target,
        running_s3(base if args.keep_dir else None) as s3,
    ):
        for server in (source, target):
            server.create_database(DB)
            # the bench VACUUMs what it keeps before every run: no autovacuum worker starts during one
            sql(server.dsn(DB), "ALTER SYSTEM SET autovacuum = off", "SELECT pg_reload_conf()")
        runner = Runner(args, source, target, s3, psql)
        sizes = [measure_size(runner, rows, sides, args) for rows in args.rows]
        extra = {"notes": notes, "moto_peak_rss_mb": process_peak_mb(s3.process.pid), "psql": psql,
                 "versions": versions(runner), "parent_peak_rss_mb": peak_rss_mb(), **code_version(),
                 "loads": runner.loads}  # fmt: skip
        log("stopping the servers")
    return summarize(args, sizes, extra)


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, save, report)


if __name__ == "__main__":
    sys.exit(main())
