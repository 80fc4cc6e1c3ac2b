"""Benchmark: dagforge's Postgres → S3 → Postgres staging path against a raw psycopg COPY pipe.

Usage (from the repo root)::

    .venv/bin/python bench/pg_s3_pg.py [--rows N] [--reps R] [--format parquet|csv|jsonl] [--keep-dir DIR]
                                       [--profile]

Two throwaway PostgreSQL servers (source, target) and one moto S3 server are started on 127.0.0.1; the
source gets a pgbench_accounts-like table of N rows (the same as ``bench/pg_to_pg.py``). Then, alternating,
R times each:

* project: ``dagforge.stage.extract_load.extract`` (source → part files → S3 bucket, plus a manifest) and
  ``load_staged`` (manifest's parts → staging table on the target), the code the Airflow operators call,
  on a full-mode load; ``project_s`` is the wall time of both together (``extract_s``/``load_s`` as info);
* baseline: ``COPY pgbench_accounts TO STDOUT (FORMAT binary)`` piped chunk by chunk into
  ``COPY bench_copy FROM STDIN (FORMAT binary)`` (``pg_to_pg.baseline_run``).

Every run happens in a fresh spawned child process, which reports its own peak RSS (``ru_maxrss``).
``--profile`` adds one cProfile'd project run (its own bucket, not in the medians) and prints the top entries.

Progress goes to stderr, information to stdout; the last stdout line is
``pg_s3_pg rows=N project_s=… copy_s=… ratio=… peak_rss_mb=…`` (medians; ratio = copy_s / project_s).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import pstats
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import boto3  # noqa: E402
import psycopg  # noqa: E402
import pyarrow as pa  # noqa: E402
from harness import (  # noqa: E402
    RESULTS,
    bench_main,
    bench_parser,
    cpu_s,
    in_child,
    log,
    median,
    parse_checked,
    peak_rss_mb,
    print_last_line,
    process_peak_mb,
    save_summary,
)
from pg_to_pg import (  # noqa: E402
    COPY_TABLE,
    DB,
    SHAPE,
    baseline_run,
    checked,
    count_rows,
    fill_source,
    reset_target,
    runs,
    the_load,
)

from dagforge.devservices.postgres import running_postgres  # noqa: E402
from dagforge.devservices.s3 import running_s3  # noqa: E402
from dagforge.sources.postgres import PostgresSource  # noqa: E402
from dagforge.stage.extract_load import extract, load_staged, run_prefix  # noqa: E402
from dagforge.stage.formats import FORMATS  # noqa: E402
from dagforge.stage.s3_store import S3Store  # noqa: E402
from dagforge.transfer import postgres_load  # noqa: E402

KEY_PREFIX = "staging"
STAGE_CODE = BENCH.parent / "dagforge" / "stage"


def s3_store(endpoint: str, bucket: str) -> S3Store:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="dagforge",
        aws_secret_access_key="dagforge",
        region_name="us-east-1",
    )
    return S3Store(client, bucket)


def drop_bucket(store: S3Store) -> None:
    store.delete_prefix("")
    store.client.delete_bucket(Bucket=store.bucket)


# --- the measured project path (runs in its own child process) -------------------------------------


def project_run(src_dsn: str, dst_dsn: str, endpoint: str, fmt: str, rep: int) -> dict[str, Any]:
    """decide_window (untimed) → extract (extract_s) → load_staged (load_s), into a fresh bucket."""
    load, run_id = the_load(), f"bench-{rep}"
    store = s3_store(endpoint, f"dagforge-bench-{fmt}-{rep}")
    prefix, staging = run_prefix(KEY_PREFIX, load, run_id), load.staging_table(run_id)
    with psycopg.connect(src_dsn, autocommit=True) as src, psycopg.connect(dst_dsn, autocommit=True) as dst:
        window = postgres_load.decide_window(PostgresSource(src), dst, load)
        rss_before, cpu_before = peak_rss_mb(), cpu_s()
        started = time.perf_counter()
        manifest = extract(PostgresSource(src), load, window, store, prefix, fmt, run_id)
        extracted, rss_extract = time.perf_counter(), peak_rss_mb()
        staged = load_staged(dst, load, store, prefix, staging)
        finished = time.perf_counter()
        cpu = cpu_s() - cpu_before
    drop_bucket(store)
    return {
        "seconds": finished - started,
        "extract_s": extracted - started,
        "load_s": finished - extracted,
        "cpu_s": cpu,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_extract_mb": rss_extract,
        "arrow_peak_mb": pa.default_memory_pool().max_memory() / 2**20,
        "manifest_rows": manifest.rows,
        "staged_rows": staged.rows,
        "parts": len(manifest.parts),
        "bytes": sum(p["bytes"] for p in manifest.parts),
        "rows": count_rows(dst_dsn, staging),
    }


def profiled_run(src_dsn: str, dst_dsn: str, endpoint: str, fmt: str, out: str) -> dict[str, Any]:
    """One project run under cProfile; stats saved to ``out``, the top entries returned as text."""
    profiler = cProfile.Profile()
    result = profiler.runcall(project_run, src_dsn, dst_dsn, endpoint, fmt, 0)
    profiler.dump_stats(out)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs()
    stats.sort_stats("tottime").print_stats(20)
    stats.sort_stats("cumulative").print_stats(30)
    return {**result, "profile": text.getvalue()}


# --- setup and bookkeeping in the parent ---------------------------------------------------------


def measure(src: str, dst: str, endpoint: str, args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """Alternate project and baseline runs, ``reps`` each, from an empty target every time."""
    project, baseline = [], []
    copy_ddl = f"CREATE TABLE {COPY_TABLE} ({SHAPE.format(pk='NOT NULL')})"
    for rep, of in ((i, f"{i}/{args.reps}") for i in range(1, args.reps + 1)):
        reset_target(dst)
        result = in_child(project_run, src, dst, endpoint, args.format, rep)
        project.append(checked(check_staged(result, args.rows), args.rows, "project"))
        p = project[-1]
        log(f"rep {of} project: {p['seconds']:.3f} s (extract {p['extract_s']:.3f} + load {p['load_s']:.3f})")
        reset_target(dst, copy_ddl)
        baseline.append(checked(in_child(baseline_run, src, dst, COPY_TABLE), args.rows, "baseline"))
        log(f"rep {of} baseline: copy {baseline[-1]['seconds']:.3f} s")
    reset_target(dst)
    return project, baseline


def check_staged(result: dict[str, Any], expected: int) -> dict[str, Any]:
    if result["manifest_rows"] != expected or result["staged_rows"] != expected:
        raise RuntimeError(f"project: manifest {result['manifest_rows']}, staged {result['staged_rows']} != {expected}")
    return result


def profile(src: str, dst: str, endpoint: str, args: argparse.Namespace) -> dict[str, Any]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"pg_s3_pg_{args.format}_{args.rows}.prof"
    log(f"profiling one project run (cProfile) into {out}")
    reset_target(dst)
    result = in_child(profiled_run, src, dst, endpoint, args.format, str(out))
    reset_target(dst)
    return result


def code_version() -> dict[str, str]:
    """Which dagforge/stage code was measured (the tree changes under the benchmark)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BENCH, capture_output=True, text=True)
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(STAGE_CODE.glob("*.py"))))
    return {"git_head": head.stdout.strip(), "stage_sha1": digest.hexdigest()[:12]}


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
        "project_rows_per_s": args.rows / project_s,
        "copy_rows_per_s": args.rows / copy_s,
        "baseline_peak_rss_mb": max(r["peak_rss_mb"] for r in baseline),
        "staged_mib": project[0]["bytes"] / 2**20,
        "parts": project[0]["parts"],
        "project_runs": project,
        "baseline_runs": baseline,
        **extra,
    }


def peaks(results: list[dict]) -> str:
    each = ", ".join(f"{r['peak_rss_extract_mb']:.0f} → {r['peak_rss_mb']:.0f}" for r in results)
    return f"{each}; pyarrow pool peak {max(r['arrow_peak_mb'] for r in results):.1f}"


def report(s: dict) -> None:
    print(f"info project extract()+load_staged() {runs(s['project_runs'])}")
    print(f"info extract_s={s['extract_s']:.3f} load_s={s['load_s']:.3f} (medians; project_s is their sum per run)")
    print(f"info baseline binary COPY pipe into a logged table {runs(s['baseline_runs'])}")
    print(f"info staged: {s['parts']} {s['format']} part(s), {s['staged_mib']:.1f} MiB in S3 (moto)")
    rss = s["project_runs"][0]["rss_before_mb"]
    print(f"info peak RSS: project child {s['peak_rss_mb']:.1f} MB (before extract {rss:.1f} MB)")
    print(f"info peak RSS per project run (extract → whole run), MB: {peaks(s['project_runs'])}")
    print(f"info peak RSS: baseline child {s['baseline_peak_rss_mb']:.1f} MB")
    if s.get("moto_peak_rss_mb"):
        print(f"info peak RSS: moto_server {s['moto_peak_rss_mb']:.1f} MB (not in peak_rss_mb)")
    print(f"info project rows/s={s['project_rows_per_s']:,.0f} baseline rows/s={s['copy_rows_per_s']:,.0f}")
    print(f"info code: git HEAD {s['git_head']}, dagforge/stage/*.py sha1 {s['stage_sha1']}")
    if "profile" in s:
        print(f"info profile ({s['profile']['seconds']:.3f} s under cProfile):\n{s['profile']['profile']}")
    print_last_line("pg_s3_pg", s)


def save(summary: dict) -> None:
    save_summary(f"pg_s3_pg_{summary['format']}_{summary['rows']}", summary)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser(__doc__, rows=2_000_000, reps=3)
    parser.add_argument("--format", choices=sorted(FORMATS["postgres"]), default="parquet", help="staged file format")
    parser.add_argument("--profile", action="store_true", help="add one cProfile'd project run (not in medians)")
    return parse_checked(parser, argv)


def run(args: argparse.Namespace, base: Path) -> dict:
    log(f"starting two PostgreSQL servers and a moto S3 server under {base}")
    with (
        running_postgres("source", base) as source,
        running_postgres("target", base) as target,
        running_s3(base if args.keep_dir else None) as s3,
    ):
        for server in (source, target):
            server.create_database(DB)
        src, dst = source.dsn(DB), target.dsn(DB)
        fill_source(src, args.rows)
        project, baseline = measure(src, dst, s3.endpoint_url, args)
        extra: dict[str, Any] = {"moto_peak_rss_mb": process_peak_mb(s3.process.pid), **code_version()}
        if args.profile:
            extra["profile"] = profile(src, dst, s3.endpoint_url, args)
        log("stopping servers")
    return summarize(args, project, baseline, extra)


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, save, report)


if __name__ == "__main__":
    sys.exit(main())
