"""``make demo``: every example pipeline, end to end, on local servers.

Starts a source and a warehouse PostgreSQL server, seeds the source (``compose/seed/*.sql``),
runs every pipeline in ``pipelines/`` through Airflow's ``dag.test()`` (generate pipelines first,
so the others move what they wrote), applies the changes in ``compose/seed/changes/*.sql`` and
runs everything again (generate appends more, incremental tables move only what changed), runs the
file pipelines for two months as a backfill would and one month again (no duplicates), prints
source vs target per table (a file table: every month against its file), and stops the servers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from dagforge.catalog import REPO_ROOT, Entry, build_catalog
from dagforge.devservices.stack import LocalStack, local_stack
from dagforge.loadspec import table_loads
from dagforge.localrun import RunResult, prepare_airflow_env, run_pipeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / ".dagforge" / "demo")
    args = parser.parse_args(argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # task states are printed below
    # generated sources first: the other examples read what they write
    entries = sorted(build_catalog([REPO_ROOT / "pipelines"]), key=_reads_a_source)
    invalid = [str(err) for e in entries for err in e.errors]
    if invalid:
        print("invalid pipelines:\n" + "\n".join(invalid), file=sys.stderr)
        return 1
    with local_stack(args.workdir) as stack:
        stack.seed()
        prepare_airflow_env(args.workdir / "airflow", REPO_ROOT / "pipelines")
        ok = _run_all(entries, "first run")
        stack.apply_changes()
        ok = _run_all(entries, "after source changes") and ok
        ok = _backfill_files(entries, stack) and ok
        ok = _print_summary(entries, stack) and ok
        print(f"\nSlack messages received by the local webhook: {len(stack.slack.received)}")
        for text in stack.slack.texts():
            print("  " + text.replace("\n", " | "))
    print("demo finished: " + ("every table matches its source" if ok else "SOMETHING DID NOT MATCH"))
    return 0 if ok else 1


def _reads_a_source(entry: Entry) -> bool:
    """False for generate pipelines, which the others read from, so they sort first."""
    return entry.pipeline is None or entry.pipeline.source.kind != "generate"


def _run_all(entries: list[Entry], label: str) -> bool:
    ok = True
    for entry in entries:
        result = run_pipeline(entry.dag_id)
        print(f"\n== {entry.dag_id} ({label}): {result.state}")
        _print_states(result)
        ok = ok and result.succeeded
    return ok


FILE_RUNS = (
    ("2024-01-01", None, "backfill: January"),
    ("2024-02-01", None, "backfill: February"),
    ("2024-01-01", None, "January again: the same file, nothing new"),
    ("2024-01-01", {"full_refresh": True}, "January reloaded on request: its rows replaced, not added"),
)
"""File pipelines: the months the demo runs them for (logical date, conf, what it shows)."""


def _backfill_files(entries: list[Entry], stack: LocalStack) -> bool:
    """Each file pipeline for two months, as a backfill runs them, then one month again twice:
    the month's rows are never duplicated (the summary compares every month with its file)."""
    ok = True
    for entry in entries:
        if entry.pipeline is None or entry.pipeline.source.kind != "http":
            continue
        for day, conf, label in FILE_RUNS:
            when = datetime.fromisoformat(day).replace(tzinfo=UTC)
            result = run_pipeline(entry.dag_id, logical_date=when, conf=conf)
            print(f"\n== {entry.dag_id} ({label}): {result.state}")
            _print_states(result)
            ok = ok and result.succeeded
    return ok


def _print_states(result: RunResult) -> None:
    for task_id, state in result.task_states.items():
        print(f"   {state:<10} {task_id}")


def _print_summary(entries: list[Entry], stack: LocalStack) -> bool:
    print(f"\n{'pipeline':<20} {'source table':<28} {'rows':>8}   {'target table':<30} {'rows':>8}  same data")
    ok = True
    for entry in entries:
        for load in table_loads(entry.config):
            result = stack.compare(entry, load)
            ok = ok and result.same
            print(
                f"{entry.dag_id:<20} {load.source.label:<28} {result.source_rows:>8}   "
                f"{load.destination.schema + '.' + load.destination.table:<30} {result.target_rows:>8}  "
                f"{'yes' if result.same else 'NO'}"
            )
    return ok


if __name__ == "__main__":
    sys.exit(main())
