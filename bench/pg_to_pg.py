"""Benchmark: dagforge's Postgres → Postgres transfer path against a raw psycopg COPY pipe.

Usage (from the repo root)::

    .venv/bin/python bench/pg_to_pg.py [--rows N] [--reps R] [--keep-dir DIR] [--insert-rows-n M]

Two throwaway PostgreSQL servers (source, target) are started; the source gets a pgbench_accounts-like
table of N rows. Then, alternating, R times each:

* project: ``dagforge.transfer.postgres_load.stage`` (the operator's code path) on a full-mode load;
  ``project_s`` is the wall time of ``stage()`` alone, ``publish()`` is timed separately (information);
* baseline: ``COPY pgbench_accounts TO STDOUT (FORMAT binary)`` piped chunk by chunk into
  ``COPY bench_copy FROM STDIN (FORMAT binary)`` with psycopg ``cursor.copy`` on both sides.

Every run happens in a fresh spawned child process, which reports its own peak RSS (``ru_maxrss``).
A reference run of Airflow's ``PostgresHook.insert_rows`` (one INSERT per row; with psycopg 3 the hook
sends them with ``executemany``, ``commit_every`` rows per transaction) loads M rows.

Progress goes to stderr, information to stdout; the last stdout line is
``pg_to_pg rows=N project_s=… copy_s=… ratio=… peak_rss_mb=…`` (medians; ratio = copy_s / project_s).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from harness import (  # puts the repository on sys.path
    bench_main,
    bench_parser,
    cpu_s,
    in_child,
    log,
    median,
    parse_checked,
    peak_rss_mb,
    print_last_line,
    save_summary,
)

from dagforge.devservices.postgres import PostgresServer, running_postgres
from dagforge.loadspec import TableLoad, TableRef
from dagforge.sources.postgres import PostgresSource
from dagforge.spec.model import LoadMode
from dagforge.transfer import postgres_load

DB = "bench"
TABLE = "pgbench_accounts"
COPY_TABLE = "bench_copy"
INSERT_TABLE = "bench_insert_rows"
COLUMNS = ("aid", "bid", "abalance", "filler")
SHAPE = "aid integer {pk}, bid integer NOT NULL, abalance integer NOT NULL, filler character(84)"


def the_load() -> TableLoad:
    """A full-mode load of pgbench_accounts into the target's public schema."""
    return TableLoad(
        pipeline="bench",
        source=TableRef("bench_source", "public", TABLE),
        destination=TableRef("bench_target", "public", TABLE),
        mode=LoadMode.FULL,
        primary_key=("aid",),
    )


def count_rows(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]


# --- the two measured paths (each runs in its own child process) -----------------------------------


def project_run(src_dsn: str, dst_dsn: str, rep: int) -> dict[str, Any]:
    """decide_window (untimed) → stage (project_s) → publish (publish_s), as the operator does."""
    load = the_load()
    with psycopg.connect(src_dsn, autocommit=True) as src, psycopg.connect(dst_dsn, autocommit=True) as dst:
        window = postgres_load.decide_window(PostgresSource(src), dst, load)
        rss_before, cpu_before = peak_rss_mb(), cpu_s()
        started = time.perf_counter()
        staged, stats = postgres_load.stage(PostgresSource(src), dst, load, window, load.staging_table(f"bench-{rep}"))
        stage_s = time.perf_counter() - started
        cpu = cpu_s() - cpu_before
        rss_after = peak_rss_mb()
        started = time.perf_counter()
        postgres_load.publish(dst, load, staged, f"bench-{rep}")
        publish_s = time.perf_counter() - started
    return {
        "seconds": stage_s,
        "cpu_s": cpu,
        "publish_s": publish_s,
        "staged_rows": staged.rows,
        "bytes": stats.bytes,
        "rss_before_mb": rss_before,
        "peak_rss_mb": rss_after,
        "rows": count_rows(dst_dsn, TABLE),
    }


def baseline_run(src_dsn: str, dst_dsn: str, table: str) -> dict[str, Any]:
    """Raw binary COPY → COPY pipe into an existing empty table; nothing else."""
    out_sql = f"COPY {TABLE} ({', '.join(COLUMNS)}) TO STDOUT (FORMAT binary)"
    in_sql = f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN (FORMAT binary)"
    with psycopg.connect(src_dsn, autocommit=True) as src, psycopg.connect(dst_dsn, autocommit=True) as dst:
        rss_before, cpu_before = peak_rss_mb(), cpu_s()
        started = time.perf_counter()
        with (
            src.cursor() as out_cur,
            dst.cursor() as in_cur,
            out_cur.copy(out_sql) as copy_out,
            in_cur.copy(in_sql) as copy_in,
        ):
            for chunk in copy_out:
                copy_in.write(chunk)
        seconds = time.perf_counter() - started
        cpu = cpu_s() - cpu_before
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "rows": count_rows(dst_dsn, table),
    }


def insert_rows_run(src_dsn: str, env: dict[str, str], limit: int) -> dict[str, Any]:
    """Reference: rows read with a psycopg cursor, written by PostgresHook.insert_rows (an INSERT per row)."""
    os.dup2(2, 1)  # Airflow logs to stdout; keep the parent's stdout for results only
    os.environ.update(env)
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    hook = PostgresHook(postgres_conn_id="bench_target")
    cold_s = timed_insert_rows(hook, src_dsn, 1)  # first call loads Airflow's plugins (lineage): not timed
    with psycopg.connect(env["BENCH_TARGET_DSN"], autocommit=True) as dst:
        dst.execute(f"TRUNCATE {INSERT_TABLE}")
    seconds = timed_insert_rows(hook, src_dsn, limit)
    return {"seconds": seconds, "first_call_s": cold_s, "rows": count_rows(env["BENCH_TARGET_DSN"], INSERT_TABLE)}


def timed_insert_rows(hook: Any, src_dsn: str, limit: int) -> float:
    select = f"SELECT {', '.join(COLUMNS)} FROM {TABLE} ORDER BY aid LIMIT %s"
    with psycopg.connect(src_dsn) as src, src.cursor(name="bench_rows") as cur:
        started = time.perf_counter()
        cur.execute(select, (limit,))
        hook.insert_rows(INSERT_TABLE, cur, target_fields=list(COLUMNS), commit_every=1000)
        return time.perf_counter() - started


# --- setup and bookkeeping in the parent ---------------------------------------------------------


def fill_source(dsn: str, rows: int) -> None:
    log(f"filling source {TABLE} with {rows:,} rows")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")  # a reused --keep-dir server still has it
        conn.execute(f"CREATE TABLE {TABLE} ({SHAPE.format(pk='PRIMARY KEY')})")
        conn.execute(
            f"INSERT INTO {TABLE} SELECT i, (i - 1) / 100000 + 1, 0, '' FROM generate_series(1, %s) AS i",
            (rows,),
        )
        conn.execute(f"VACUUM ANALYZE {TABLE}")
        size = conn.execute(f"SELECT pg_size_pretty(pg_table_size('{TABLE}'))").fetchone()[0]
    log(f"source table ready ({size})")


def reset_target(dsn: str, create: str | None = None) -> None:
    """Drop every table a run writes; optionally create one fresh empty table; checkpoint."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for (name,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> '_dagforge_state'"
        ).fetchall():
            conn.execute(f'DROP TABLE "{name}"')
        if create:
            conn.execute(create)
        conn.execute("CHECKPOINT")


def checked(result: dict[str, Any], expected: int, what: str) -> dict[str, Any]:
    if result["rows"] != expected:
        raise RuntimeError(f"{what}: target holds {result['rows']} rows, expected {expected}")
    return result


def measure(src: str, dst: str, rows: int, reps: int, unlogged: bool) -> tuple[list[dict], list[dict]]:
    """Alternate project and baseline runs, ``reps`` each, from an empty target every time."""
    project, baseline = [], []
    copy_ddl = f"CREATE {'UNLOGGED ' if unlogged else ''}TABLE {COPY_TABLE} ({SHAPE.format(pk='NOT NULL')})"
    for rep in range(1, reps + 1):
        reset_target(dst)
        project.append(checked(in_child(project_run, src, dst, rep), rows, "project"))
        log(f"rep {rep}/{reps} project: stage {project[-1]['seconds']:.3f} s, publish {project[-1]['publish_s']:.3f} s")
        reset_target(dst, copy_ddl)
        baseline.append(checked(in_child(baseline_run, src, dst, COPY_TABLE), rows, "baseline"))
        log(f"rep {rep}/{reps} baseline: copy {baseline[-1]['seconds']:.3f} s")
    reset_target(dst)
    return project, baseline


def insert_rows_reference(src: str, target: PostgresServer, base: Path, limit: int) -> dict[str, Any]:
    dst = target.dsn(DB)
    reset_target(dst, f"CREATE TABLE {INSERT_TABLE} ({SHAPE.format(pk='NOT NULL')})")
    env = {
        "AIRFLOW_HOME": str(base / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW_CONN_BENCH_TARGET": target.airflow_conn_uri(DB),
        "BENCH_TARGET_DSN": dst,
    }
    log(f"insert_rows reference: {limit:,} rows")
    result = checked(in_child(insert_rows_run, src, env, limit), limit, "insert_rows")
    reset_target(dst)
    return result


# --- report --------------------------------------------------------------------------------------


def summarize(args: argparse.Namespace, project: list[dict], baseline: list[dict], ref: dict | None) -> dict:
    project_s = median(project, "seconds")
    copy_s = median(baseline, "seconds")
    summary = {
        "rows": args.rows,
        "reps": args.reps,
        "project_s": project_s,
        "copy_s": copy_s,
        "ratio": copy_s / project_s,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in project),
        "publish_s": median(project, "publish_s"),
        "project_rows_per_s": args.rows / project_s,
        "copy_rows_per_s": args.rows / copy_s,
        "baseline_peak_rss_mb": max(r["peak_rss_mb"] for r in baseline),
        "mb_moved": project[0]["bytes"] / 2**20,
        "project_runs": project,
        "baseline_runs": baseline,
        "baseline_table": "unlogged" if args.unlogged_baseline else "logged",
    }
    if ref:
        summary["insert_rows"] = {**ref, "rows_per_s": ref["rows"] / ref["seconds"]}
        summary["speedup_vs_insert_rows"] = summary["project_rows_per_s"] / summary["insert_rows"]["rows_per_s"]
    return summary


def runs(results: list[dict]) -> str:
    walls = " ".join(f"{r['seconds']:.3f}" for r in results)
    best = min(r["seconds"] for r in results)
    cpu = median(results, "cpu_s")
    return f"runs (s): {walls}; min {best:.3f}; median client CPU {cpu:.3f} s"


def report(s: dict) -> None:
    print(f"info project stage() {runs(s['project_runs'])}")
    print(f"info baseline COPY pipe into a {s['baseline_table']} table {runs(s['baseline_runs'])}")
    print(f"info publish_s={s['publish_s']:.3f} (median; in-server INSERT ... SELECT, not in project_s)")
    print(f"info data moved: {s['mb_moved']:.1f} MiB of binary COPY stream")
    rss = s["project_runs"][0]["rss_before_mb"]
    print(f"info peak RSS: project child {s['peak_rss_mb']:.1f} MB (before stage {rss:.1f} MB)")
    print(f"info peak RSS: baseline child {s['baseline_peak_rss_mb']:.1f} MB")
    print(f"info project rows/s={s['project_rows_per_s']:,.0f} baseline rows/s={s['copy_rows_per_s']:,.0f}")
    if "insert_rows" in s:
        ref = s["insert_rows"]
        print(
            f"info insert_rows reference: rows={ref['rows']} seconds={ref['seconds']:.3f} "
            f"rows/s={ref['rows_per_s']:,.0f} (after an untimed 1-row first call of {ref['first_call_s']:.3f} s); "
            f"project rows/s={s['project_rows_per_s']:,.0f}, {s['speedup_vs_insert_rows']:.1f}x faster"
        )
    print_last_line("pg_to_pg", s)


def save(summary: dict) -> None:
    save_summary(f"pg_to_pg_{summary['rows']}", summary)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser(__doc__, rows=2_000_000, reps=5)
    parser.add_argument("--insert-rows-n", type=int, default=20_000, help="rows for the insert_rows reference")
    parser.add_argument("--unlogged-baseline", action="store_true", help="COPY into an UNLOGGED baseline table")
    return parse_checked(parser, argv)


def run(args: argparse.Namespace, base: Path) -> dict:
    log(f"starting two PostgreSQL servers under {base}")
    with running_postgres("source", base) as source, running_postgres("target", base) as target:
        for server in (source, target):
            server.create_database(DB)
        src, dst = source.dsn(DB), target.dsn(DB)
        fill_source(src, args.rows)
        project, baseline = measure(src, dst, args.rows, args.reps, args.unlogged_baseline)
        ref = None
        if args.insert_rows_n:
            ref = insert_rows_reference(src, target, base, min(args.insert_rows_n, args.rows))
        log("stopping servers")
    return summarize(args, project, baseline, ref)


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, save, report)


if __name__ == "__main__":
    sys.exit(main())
