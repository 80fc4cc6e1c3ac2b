"""Benchmark: dagforge's generate path (``generate_run``) against a hand-written Faker loop + COPY.

Usage (from the repo root)::

    .venv/bin/python bench/generate.py [--rows N] [--reps R] [--keep-dir DIR]

One throwaway PostgreSQL server is started. Both paths write the library example of
``pipelines/library_generate.yml`` (library_member, books_table, rent_table) with N rows in total,
split 1 : 1 : 3 (members : books : rentals, the example's proportions). Then, alternating, R times each:

* project: ``dagforge.generate.postgres_writer.generate_run`` (the operator's code path) on an
  autocommit connection into a fresh schema; ``project_s`` is the wall time of that one call;
* baseline: a plain Faker loop (same providers, ``random`` for choice/range/FK columns), hand-written
  ``CREATE TABLE`` with primary and foreign keys, every row sent with ``cursor.copy().write_row()``, one
  transaction; ``baseline_s`` is its wall time, table creation included.

Every run happens in a fresh spawned child process, which reports its own peak RSS (``ru_maxrss``).
After every run the row counts (per table, total N) and the rent_table foreign keys (join) are checked.

Progress goes to stderr, information to stdout; the last stdout line is
``generate rows=N project_s=… baseline_s=… ratio=… peak_rss_mb=…`` (medians; ratio = baseline_s / project_s).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import yaml
from faker import Faker
from harness import (  # puts the repository on sys.path
    ROOT,
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

from dagforge.devservices.postgres import running_postgres

DB = "bench"
SCHEMA = "library"
PIPELINE = ROOT / "pipelines" / "library_generate.yml"
TABLES = ("library_member", "books_table", "rent_table")
SHARES = {"library_member": 1, "books_table": 1, "rent_table": 3}


def proc_status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in MB; 0.0 where there is none (not Linux)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith(f"{field}:")), 0.0)


def reset_rss_high_water() -> None:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5), so VmHWM afterwards is the timed call's peak."""
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def rss_figures(peak_before: float, rss_before: float) -> dict[str, float]:
    call_peak = proc_status_mb("VmHWM")
    return {
        "rss_before_mb": rss_before,
        "call_peak_rss_mb": call_peak,
        "call_growth_mb": call_peak - rss_before,
        "peak_before_mb": peak_before,
        "peak_rss_mb": peak_rss_mb(),
    }


def split_rows(total: int) -> dict[str, int]:
    """Fixed rows per table summing to ``total``, members : books : rentals = 1 : 1 : 3."""
    unit = total // sum(SHARES.values())
    counts = {name: unit * share for name, share in SHARES.items()}
    counts["rent_table"] += total - sum(counts.values())
    return counts


def load_example(total: int) -> dict[str, Any]:
    """The example's table specs with fixed ``rows_per_run``, plus its locale and seed."""
    spec = yaml.safe_load(PIPELINE.read_text())
    counts = split_rows(total)
    tables = [{**table, "rows_per_run": counts[table["name"]]} for table in spec["tables"]]
    return {"tables": tables, "counts": counts, "locale": spec["source"]["locale"], "seed": spec["source"]["seed"]}


# --- project path (child process) ----------------------------------------------------------------


def project_run(dsn: str, example: dict[str, Any]) -> dict[str, Any]:
    """``generate_run`` as the operator calls it (specs parsed before the timer, as the operator does)."""
    from dagforge.generate.postgres_writer import generate_run
    from dagforge.generate.tables import GeneratedTable

    tables = [GeneratedTable.from_dict(t) for t in example["tables"]]
    Faker(example["locale"])  # load the locale's providers (imports) before the timer, as the baseline does
    with psycopg.connect(dsn, autocommit=True) as conn:
        peak_before, rss_before, cpu_before = peak_rss_mb(), proc_status_mb("VmRSS"), cpu_s()
        reset_rss_high_water()
        started = time.perf_counter()
        written = generate_run(conn, SCHEMA, tables, locale=example["locale"], seed=example["seed"], progress=log)
        seconds = time.perf_counter() - started
        cpu = cpu_s() - cpu_before
    return {"seconds": seconds, "cpu_s": cpu, "written": written, **rss_figures(peak_before, rss_before)}


# --- baseline (child process): what one would write by hand, no dagforge ------------------------

BASELINE_DDL = [
    "CREATE SCHEMA {s}",
    "CREATE TABLE {s}.library_member (member_id bigint PRIMARY KEY, full_name text, email text UNIQUE, "
    "phone text, city text, joined_on date)",
    "CREATE TABLE {s}.books_table (book_id bigint PRIMARY KEY, title text, author text, isbn text, genre text, "
    "published_year integer, price numeric(4, 2))",
    "CREATE TABLE {s}.rent_table (rent_id bigint PRIMARY KEY, "
    "member_id bigint REFERENCES {s}.library_member (member_id), "
    "book_id bigint REFERENCES {s}.books_table (book_id), rent_date date, return_date date, fee numeric(3, 2))",
]
GENRES = ["fiction", "mystery", "science", "history", "poetry"]
GENRE_WEIGHTS = [5, 3, 2, 2, 1]


def members(fake: Faker, rng: random.Random, ids: list[int]) -> Iterator[tuple]:
    emails: set[str] = set()
    for member_id in ids:
        email = fake.email()
        while email in emails:
            email = fake.email()
        emails.add(email)
        phone = None if rng.random() < 0.2 else fake.phone_number()
        joined_on = fake.date_between(start_date="-3y", end_date="today")
        yield member_id, fake.name(), email, phone, fake.city(), joined_on


def books(fake: Faker, rng: random.Random, ids: list[int]) -> Iterator[tuple]:
    for book_id in ids:
        genre = rng.choices(GENRES, weights=GENRE_WEIGHTS)[0]
        price = round(rng.uniform(4.99, 89.99), 2)
        yield book_id, fake.catch_phrase(), fake.name(), fake.isbn13(), genre, rng.randint(1950, 2025), price


def rentals(fake: Faker, rng: random.Random, n: int, member_ids: list, book_ids: list) -> Iterator[tuple]:
    for rent_id in range(1, n + 1):
        rent_date = fake.date_between(start_date="-30d", end_date="today")
        return_date = None if rng.random() < 0.3 else rent_date + timedelta(days=rng.randint(1, 21))
        fee = round(rng.uniform(0.5, 9.5), 2)
        yield rent_id, rng.choice(member_ids), rng.choice(book_ids), rent_date, return_date, fee


def copy_rows(cur: psycopg.Cursor, table: str, rows: Iterator[tuple]) -> None:
    with cur.copy(f"COPY {SCHEMA}.{table} FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def write_baseline(dsn: str, counts: dict[str, int], locale: str, seed: int) -> None:
    fake = Faker(locale)
    fake.seed_instance(seed)
    rng = random.Random(seed)
    member_ids = list(range(1, counts["library_member"] + 1))
    book_ids = list(range(1000, 1000 + counts["books_table"]))
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:  # one transaction, committed on exit
        for statement in BASELINE_DDL:
            cur.execute(statement.format(s=SCHEMA))
        copy_rows(cur, "library_member", members(fake, rng, member_ids))
        copy_rows(cur, "books_table", books(fake, rng, book_ids))
        copy_rows(cur, "rent_table", rentals(fake, rng, counts["rent_table"], member_ids, book_ids))


def baseline_run(dsn: str, example: dict[str, Any]) -> dict[str, Any]:
    Faker(example["locale"])  # same untimed warm-up as the project child
    peak_before, rss_before, cpu_before = peak_rss_mb(), proc_status_mb("VmRSS"), cpu_s()
    reset_rss_high_water()
    started = time.perf_counter()
    write_baseline(dsn, example["counts"], example["locale"], example["seed"])
    seconds = time.perf_counter() - started
    cpu = cpu_s() - cpu_before
    return {"seconds": seconds, "cpu_s": cpu, **rss_figures(peak_before, rss_before)}


# --- setup and checks in the parent --------------------------------------------------------------


def reset_schema(dsn: str) -> None:
    """Drop the schema a run writes (the next run creates it afresh) and checkpoint."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute("CHECKPOINT")


def verify(dsn: str, counts: dict[str, int], what: str) -> dict[str, int]:
    """Row counts per table must match; every rental must join to a member and a book."""
    with psycopg.connect(dsn) as conn:
        found = {t: conn.execute(f"SELECT count(*) FROM {SCHEMA}.{t}").fetchone()[0] for t in TABLES}
        joined = conn.execute(
            f"SELECT count(*) FROM {SCHEMA}.rent_table r JOIN {SCHEMA}.library_member m USING (member_id) "
            f"JOIN {SCHEMA}.books_table b USING (book_id)"
        ).fetchone()[0]
    if found != counts or joined != counts["rent_table"]:
        raise RuntimeError(f"{what}: tables hold {found} ({joined} rentals join), expected {counts}")
    return found


def measure(dsn: str, example: dict[str, Any], reps: int) -> tuple[list[dict], list[dict]]:
    """Alternate project and baseline runs, ``reps`` each, from a dropped schema every time."""
    project, baseline = [], []
    for rep in range(1, reps + 1):
        for name, fn, results in (("project", project_run, project), ("baseline", baseline_run, baseline)):
            reset_schema(dsn)
            result = in_child(fn, dsn, example)
            result["rows"] = verify(dsn, example["counts"], name)
            results.append(result)
            log(f"rep {rep}/{reps} {name}: {result['seconds']:.3f} s, peak RSS {result['peak_rss_mb']:.1f} MB")
    reset_schema(dsn)
    return project, baseline


# --- report --------------------------------------------------------------------------------------


def code_version() -> str:
    """Last commit touching dagforge/generate, ``+dirty`` if it has uncommitted changes (read-only git)."""
    git = ["git", "-C", str(ROOT)]
    try:
        last = subprocess.run([*git, "log", "-1", "--format=%h", "--", "dagforge/generate"], capture_output=True)
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "dagforge/generate"], capture_output=True)
    except OSError:
        return "unknown"
    return (last.stdout.decode().strip() or "unknown") + ("+dirty" if dirty.stdout.strip() else "")


def summarize(args: argparse.Namespace, example: dict, runs: tuple[list[dict], list[dict]], version: str) -> dict:
    project, baseline = runs
    project_s = median(project, "seconds")
    baseline_s = median(baseline, "seconds")
    return {
        "rows": args.rows,
        "reps": args.reps,
        "counts": example["counts"],
        "code_version": version,
        "project_s": project_s,
        "baseline_s": baseline_s,
        "ratio": baseline_s / project_s,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in project),
        "baseline_peak_rss_mb": max(r["peak_rss_mb"] for r in baseline),
        "call_growth_mb": max(r["call_growth_mb"] for r in project),
        "baseline_call_growth_mb": max(r["call_growth_mb"] for r in baseline),
        "project_rows_per_s": args.rows / project_s,
        "baseline_rows_per_s": args.rows / baseline_s,
        "project_runs": project,
        "baseline_runs": baseline,
    }


def describe_runs(results: list[dict]) -> str:
    walls = " ".join(f"{r['seconds']:.3f}" for r in results)
    cpu = median(results, "cpu_s")
    return f"runs (s): {walls}; min {min(r['seconds'] for r in results):.3f}; median client CPU {cpu:.3f} s"


def report(s: dict) -> None:
    counts = ", ".join(f"{t}={n}" for t, n in s["counts"].items())
    print(f"info rows per table: {counts}; dagforge/generate at {s['code_version']}")
    print(f"info project generate_run() {describe_runs(s['project_runs'])}")
    print(f"info baseline Faker loop + COPY {describe_runs(s['baseline_runs'])}")
    for name in ("project", "baseline"):
        results = s[f"{name}_runs"]
        peak, before = max(r["peak_rss_mb"] for r in results), max(r["peak_before_mb"] for r in results)
        call, growth = max(r["call_peak_rss_mb"] for r in results), max(r["call_growth_mb"] for r in results)
        print(
            f"info peak RSS: {name} child {peak:.1f} MB (already {before:.1f} MB before the timed call: imports); "
            f"peak during the call {call:.1f} MB, {growth:+.1f} MB over the RSS before it"
        )
    print(f"info project rows/s={s['project_rows_per_s']:,.0f} baseline rows/s={s['baseline_rows_per_s']:,.0f}")
    print_last_line("generate", s, "baseline_s")


def save(summary: dict) -> None:
    save_summary(f"generate_{summary['rows']}", summary)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser(
        __doc__,
        rows=200_000,
        reps=3,
        rows_help="rows per run, all tables",
        keep_help="put the server here and keep it (log) afterwards",
    )
    args = parse_checked(parser, argv)
    if args.rows < 5:
        parser.error("--rows must be at least 5")
    return args


def run(args: argparse.Namespace, base: Path) -> dict:
    example, version = load_example(args.rows), code_version()
    log(f"dagforge/generate at {version}; rows per table {example['counts']}")
    log(f"starting a PostgreSQL server under {base}")
    with running_postgres("generate", base) as server:
        server.create_database(DB)
        runs = measure(server.dsn(DB), example, args.reps)
        log("stopping server")
    if code_version() != version:
        log(f"warning: dagforge/generate changed during the run ({version} -> {code_version()})")
    return summarize(args, example, runs, version)


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, save, report)


if __name__ == "__main__":
    sys.exit(main())
