"""Benchmark: dagforge's Postgres → GCS → BigQuery path (on the local emulators) against a raw psycopg COPY pipe.

Usage (from the repo root)::

    .venv/bin/python bench/pg_gcs_bq.py [--rows N] [--reps R] [--format parquet|jsonl] [--keep-dir DIR]

Two throwaway PostgreSQL servers (source, and a target for the baseline only), a GCS emulator and a
BigQuery emulator (``dagforge.devservices.gcp.running_gcp``, from ``.venv-emulators``) are started on
127.0.0.1; the source gets a pgbench_accounts-like table of N rows (the same as ``bench/pg_to_pg.py``).
Then, alternating, R times each:

* project: what the Airflow operators call on a full-mode load, ``extract(..., encoding="bigquery")``
  (source → part files → GCS bucket, plus a manifest), then ``read_manifest`` + ``load_staging`` (a
  BigQuery load job from the gs:// URIs into a staging table) and ``publish`` (the replace script and the
  state row, staging dropped); ``project_s`` is the wall time of all three (``extract_s``/``load_s``/
  ``publish_s`` as info), and the final table must hold N rows;
* baseline: ``COPY pgbench_accounts TO STDOUT (FORMAT binary)`` piped chunk by chunk into
  ``COPY bench_copy FROM STDIN (FORMAT binary)`` (``pg_to_pg.baseline_run``).

Every run happens in a fresh spawned child process, which reports its own peak RSS (``ru_maxrss``).
The emulators are stand-ins (the BigQuery one runs on DuckDB): their figures are indicative only.

Progress goes to stderr, information to stdout; the last stdout line is
``pg_gcs_bq rows=N project_s=… copy_s=… ratio=… peak_rss_mb=…`` (medians; ratio = copy_s / project_s).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import psycopg  # noqa: E402
import pyarrow as pa  # noqa: E402
from harness import (  # noqa: E402
    bench_main,
    bench_parser,
    cpu_s,
    in_child,
    log,
    median,
    parse_checked,
    peak_rss_mb,
    print_last_line,
    process_cpu_s,
    process_peak_mb,
    save_summary,
)
from pg_to_pg import (  # noqa: E402
    COPY_TABLE,
    DB,
    SHAPE,
    baseline_run,
    checked,
    fill_source,
    reset_target,
    runs,
    the_load,
)

from dagforge.bigquery import load as bq  # noqa: E402
from dagforge.devservices.gcp import PROJECT, running_gcp  # noqa: E402
from dagforge.devservices.postgres import running_postgres  # noqa: E402
from dagforge.sources.postgres import PostgresSource, choose_window  # noqa: E402
from dagforge.stage.extract_load import extract, read_manifest, run_prefix  # noqa: E402
from dagforge.stage.formats import FORMATS  # noqa: E402
from dagforge.stage.gcs_store import GCSStore  # noqa: E402

# pg_s3_pg's helpers are imported inside the parent-side functions below, not here: a spawned child
# imports this module again, and pg_s3_pg would bring boto3 (about 26 MB) into the measured peak RSS.

KEY_PREFIX = "staging"
DATASET = "bench"
LOCATION = "US"
"""As in the examples."""
BIGQUERY_CODE = BENCH.parent / "dagforge" / "bigquery"


def clients() -> tuple[Any, Any]:
    """BigQuery and GCS clients with anonymous credentials; the emulators' addresses come from
    ``BIGQUERY_EMULATOR_HOST`` / ``STORAGE_EMULATOR_HOST`` (the parent sets them, children inherit them)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery, storage

    anonymous = AnonymousCredentials()
    return bigquery.Client(project=PROJECT, credentials=anonymous), storage.Client(PROJECT, anonymous)


def drop_bucket(store: GCSStore) -> None:
    store.delete_prefix("")
    store.bucket.delete()


def final_table(client: Any, ds: bq.Dataset, table: str) -> tuple[int, int]:
    """Row count and ``sum(aid)`` of the published table (N and N(N+1)/2 when every row arrived once)."""
    query = f"SELECT COUNT(*), SUM(aid) FROM {ds.table_sql(table)}"
    count, total = next(iter(client.query(query, location=ds.location).result()))
    return int(count), int(total or 0)


# --- the measured project path (runs in its own child process) -------------------------------------


def project_run(src_dsn: str, fmt: str, run_id: str) -> dict[str, Any]:
    """choose_window (untimed) → extract (extract_s) → load_staging (load_s) → publish (publish_s)."""
    load = the_load()
    bq_client, gcs_client = clients()
    store = GCSStore(gcs_client, f"dagforge-{run_id}".lower(), LOCATION)
    ds = bq.Dataset(PROJECT, DATASET, LOCATION)
    prefix, staging = run_prefix(KEY_PREFIX, load, run_id), load.staging_table(run_id)
    bq.create_dataset(bq_client, ds)  # the dataset branch's job, not timed
    with psycopg.connect(src_dsn, autocommit=True) as src:
        window = choose_window(src, load, lambda: bq.read_state(bq_client, ds, load))
        rss_before, cpu_before = peak_rss_mb(), cpu_s()
        started = time.perf_counter()
        manifest = extract(PostgresSource(src), load, window, store, prefix, fmt, run_id, encoding="bigquery")
        extracted, rss_extract = time.perf_counter(), peak_rss_mb()
    staged = bq.load_staging(bq_client, ds, load, read_manifest(store, prefix), staging, run_id)
    loaded = time.perf_counter()
    published_rows = bq.publish(bq_client, ds, load, staged, run_id)
    finished = time.perf_counter()
    cpu = cpu_s() - cpu_before
    rss_after = peak_rss_mb()
    rows, aid_sum = final_table(bq_client, ds, load.destination.table)
    drop_bucket(store)
    return {
        "seconds": finished - started,
        "extract_s": extracted - started,
        "load_s": loaded - extracted,
        "publish_s": finished - loaded,
        "cpu_s": cpu,
        "rss_before_mb": rss_before,
        "peak_rss_mb": rss_after,
        "peak_rss_extract_mb": rss_extract,
        "arrow_peak_mb": pa.default_memory_pool().max_memory() / 2**20,
        "manifest_rows": manifest.rows,
        "staged_rows": staged.rows,
        "published_rows": published_rows,
        "parts": len(manifest.parts),
        "bytes": sum(p["bytes"] for p in manifest.parts),
        "rows": rows,
        "aid_sum": aid_sum,
    }


# --- setup and bookkeeping in the parent ---------------------------------------------------------


def reset_dataset(client: Any) -> None:
    """Drop the dataset and everything in it: every project run publishes into a new, empty table."""
    client.delete_dataset(f"{PROJECT}.{DATASET}", delete_contents=True, not_found_ok=True)


def check_published(result: dict[str, Any], expected: int) -> dict[str, Any]:
    if result["aid_sum"] != expected * (expected + 1) // 2:
        raise RuntimeError(f"project: sum(aid) in BigQuery is {result['aid_sum']}, not 1 + … + {expected}")
    return result


def measure(src: str, dst: str, gcp: Any, args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """Alternate project and baseline runs, ``reps`` each, from an empty dataset/target every time."""
    from pg_s3_pg import check_staged  # manifest and staging row counts

    project, baseline = [], []
    copy_ddl = f"CREATE TABLE {COPY_TABLE} ({SHAPE.format(pk='NOT NULL')})"
    bq_client = gcp.bigquery_client(PROJECT)
    emulators = {"bigquery": gcp.bigquery.process.pid, "gcs": gcp.gcs.process.pid}
    started = time.strftime("%Y%m%dt%H%M%S")
    for rep, of in ((i, f"{i}/{args.reps}") for i in range(1, args.reps + 1)):
        reset_dataset(bq_client)
        cpu_before = {name: process_cpu_s(pid) for name, pid in emulators.items()}
        # a run id of its own: job ids derive from it, and a job id found again is re-attached, not rerun
        result = in_child(project_run, src, args.format, f"bench-{args.format}-{started}-{rep}")
        for name, pid in emulators.items():  # the whole child: untimed setup and checks included
            result[f"{name}_emulator_cpu_s"] = process_cpu_s(pid) - cpu_before[name]
        project.append(checked(check_published(check_staged(result, args.rows), args.rows), args.rows, "project"))
        p = project[-1]
        log(
            f"rep {of} project: {p['seconds']:.3f} s (extract {p['extract_s']:.3f} + load {p['load_s']:.3f}"
            f" + publish {p['publish_s']:.3f}); emulator CPU: BigQuery {p['bigquery_emulator_cpu_s']:.2f} s,"
            f" GCS {p['gcs_emulator_cpu_s']:.2f} s"
        )
        reset_target(dst, copy_ddl)
        baseline.append(checked(in_child(baseline_run, src, dst, COPY_TABLE), args.rows, "baseline"))
        log(f"rep {of} baseline: copy {baseline[-1]['seconds']:.3f} s")
    reset_dataset(bq_client)
    reset_target(dst)
    return project, baseline


def code_version() -> dict[str, str]:
    """pg_s3_pg's (git HEAD, dagforge/stage/*.py sha1) plus the sha1 of dagforge/bigquery/*.py."""
    from pg_s3_pg import code_version as stage_version

    digest = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(BIGQUERY_CODE.glob("*.py"))))
    return {**stage_version(), "bigquery_sha1": digest.hexdigest()[:12]}


def emulator_peaks(gcp: Any) -> dict[str, float | None]:
    return {
        "bigquery_emulator_peak_rss_mb": process_peak_mb(gcp.bigquery.process.pid),
        "gcs_emulator_peak_rss_mb": process_peak_mb(gcp.gcs.process.pid),
    }


# --- report --------------------------------------------------------------------------------------


def summarize(args: argparse.Namespace, project: list[dict], baseline: list[dict], extra: dict) -> dict:
    project_s, copy_s = median(project, "seconds"), median(baseline, "seconds")
    return {
        "rows": args.rows,
        "reps": args.reps,
        "format": args.format,
        "project_s": project_s,
        "copy_s": copy_s,
        "ratio": copy_s / project_s,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in project),
        "extract_s": median(project, "extract_s"),
        "load_s": median(project, "load_s"),
        "publish_s": median(project, "publish_s"),
        "bigquery_emulator_cpu_s": median(project, "bigquery_emulator_cpu_s"),
        "gcs_emulator_cpu_s": median(project, "gcs_emulator_cpu_s"),
        "project_rows_per_s": args.rows / project_s,
        "copy_rows_per_s": args.rows / copy_s,
        "baseline_peak_rss_mb": max(r["peak_rss_mb"] for r in baseline),
        "staged_mib": project[0]["bytes"] / 2**20,
        "parts": project[0]["parts"],
        "project_runs": project,
        "baseline_runs": baseline,
        **extra,
    }


def report(s: dict) -> None:
    from pg_s3_pg import peaks

    print(f"info project extract()+load_staging()+publish() {runs(s['project_runs'])}")
    print(
        f"info extract_s={s['extract_s']:.3f} load_s={s['load_s']:.3f} publish_s={s['publish_s']:.3f} "
        "(medians; project_s is their sum per run)"
    )
    print(
        f"info emulator CPU per project run (median, whole child): BigQuery {s['bigquery_emulator_cpu_s']:.2f} s, "
        f"GCS {s['gcs_emulator_cpu_s']:.2f} s"
    )
    print(f"info baseline binary COPY pipe into a logged table {runs(s['baseline_runs'])}")
    print(f"info staged: {s['parts']} {s['format']} part(s), {s['staged_mib']:.1f} MiB in GCS (emulator)")
    rss = s["project_runs"][0]["rss_before_mb"]
    print(f"info peak RSS: project child {s['peak_rss_mb']:.1f} MB (before extract {rss:.1f} MB)")
    print(f"info peak RSS per project run (extract → whole run), MB: {peaks(s['project_runs'])}")
    print(f"info peak RSS: baseline child {s['baseline_peak_rss_mb']:.1f} MB")
    for name in ("bigquery", "gcs"):
        if s.get(f"{name}_emulator_peak_rss_mb"):
            print(f"info peak RSS: {name} emulator {s[f'{name}_emulator_peak_rss_mb']:.1f} MB (not in peak_rss_mb)")
    print(f"info project rows/s={s['project_rows_per_s']:,.0f} baseline rows/s={s['copy_rows_per_s']:,.0f}")
    print(
        f"info code: git HEAD {s['git_head']}, dagforge/stage/*.py sha1 {s['stage_sha1']}, "
        f"dagforge/bigquery/*.py sha1 {s['bigquery_sha1']}"
    )
    print("info the BigQuery and GCS servers are local emulators (DuckDB-based BigQuery): figures are indicative")
    print_last_line("pg_gcs_bq", s)


def save(summary: dict) -> None:
    save_summary(f"pg_gcs_bq_{summary['format']}_{summary['rows']}", summary)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser(__doc__, rows=2_000_000, reps=3)
    parser.add_argument("--format", choices=sorted(FORMATS["bigquery"]), default="parquet", help="staged file format")
    return parse_checked(parser, argv)


def run(args: argparse.Namespace, base: Path) -> dict:
    log(f"starting two PostgreSQL servers and the GCS and BigQuery emulators under {base}")
    with (
        running_postgres("source", base) as source,
        running_postgres("target", base) as target,
        running_gcp(base / "gcp", base) as gcp,
    ):
        os.environ.update(gcp.environment())  # before any client is made; the spawned children inherit it
        for server in (source, target):
            server.create_database(DB)
        src, dst = source.dsn(DB), target.dsn(DB)
        fill_source(src, args.rows)
        project, baseline = measure(src, dst, gcp, args)
        extra: dict[str, Any] = {**emulator_peaks(gcp), **code_version()}
        log("stopping servers")
    return summarize(args, project, baseline, extra)


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, save, report)


if __name__ == "__main__":
    sys.exit(main())
