"""The steps of a Postgres → Postgres table load, and the publish every Postgres destination shares.

1. :func:`decide_window` reads the table's state from the destination and asks the source whether
   anything is new (:func:`dagforge.sources.postgres.choose_window`).
2. :func:`stage` streams the window into a fresh staging table on the destination, reading the
   source in one snapshot whose time, cursor range and lookback digest travel with it.
3. :func:`publish` moves staging into the final table and writes the state in one transaction,
   under the table's publish lock, by the ordering rules of docs/decisions/0008; then drops staging.

Each step commits its own work (or none of it) and can run again: a publish whose staging was
published already is a no-op, and a staging table that is gone or incomplete is staged again from
the window (``restage``). Connections must be in autocommit mode: every transaction here is
explicit, so a ``with conn.transaction()`` is never silently demoted to a savepoint.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import psycopg

from dagforge.contracts import PublishOutcome, Staged, StagingLost, TableState, Window
from dagforge.errors import TerminalError
from dagforge.loadspec import TableLoad
from dagforge.sources.postgres import (
    MissingTable,
    SourceColumn,
    choose_window,
    consistent_read,
    describe_source,
    require_autocommit,
    window_bound,
    window_facts,
)
from dagforge.spec.model import LoadMode
from dagforge.sql import postgres as sql
from dagforge.sql.types import export_expression
from dagforge.transfer.pg_copy import CopyStats, stream_copy

log = logging.getLogger(__name__)

__all__ = ["MissingTable", "SourceColumn", "decide_window", "prepare_destination", "publish", "stage"]


def prepare_destination(conn: psycopg.Connection, load: TableLoad) -> None:
    """Create the destination schema, the state table and the publish log when missing; upgrade older state."""
    schema = load.destination.schema
    with conn.transaction():
        for statement in sql.ensure_schema_and_state(schema):
            conn.execute(statement)
        missing = [row[0] for row in conn.execute(sql.missing_state_columns(), {"schema": schema})]
        for statement in sql.add_state_columns(schema, missing):
            conn.execute(statement)


def read_state(conn: psycopg.Connection, load: TableLoad) -> TableState:
    params = {"pipeline": load.pipeline, "table": load.destination.table}
    row = conn.execute(sql.read_state(load.destination.schema), params).fetchone()
    return TableState(*row) if row else TableState()


def decide_window(
    source: psycopg.Connection, destination: psycopg.Connection, load: TableLoad, *, force_full: bool = False
) -> Window:
    require_autocommit(source, destination)
    prepare_destination(destination, load)
    return choose_window(source, load, lambda: read_state(destination, load), force_full=force_full)


def stage(
    source: psycopg.Connection,
    destination: psycopg.Connection,
    load: TableLoad,
    window: Window,
    staging_table: str,
    progress: Any = None,
) -> tuple[Staged, CopyStats]:
    """Copy the window's rows into a new staging table; committed when complete."""
    require_autocommit(source, destination)
    columns = describe_source(source, load)
    names = [c.column.name for c in columns]
    bound, params = window_bound(columns, load, window)
    binary = all(c.binary_exact for c in columns)  # else text: exact for every type (dagforge.sql.types)
    exports = ", ".join(export_expression(c.column.name, c.column.type_sql) for c in columns)
    select = sql.select_window(load.source.schema, load.source.table, names, load.cursor, bound, select_list=exports)
    schema = load.destination.schema
    with destination.transaction():
        for statement in sql.create_staging(schema, staging_table, [c.column for c in columns]):
            destination.execute(statement)
        with consistent_read(source) as snapshot_at:
            stats = stream_copy(
                source,
                destination,
                sql.copy_out(select, binary),
                sql.copy_in(schema, staging_table, names, binary),
                params=params,
                progress=progress,
            )
            facts = window_facts(source, load, columns, window, snapshot_at)
    return Staged.of(staging_table, stats.rows, names, window, facts), stats


def restage_direct(
    source: psycopg.Connection, destination: psycopg.Connection, load: TableLoad, staged: Staged
) -> Staged:
    """Stage again from the source, with the window the check step decided."""
    fresh, _ = stage(source, destination, load, staged.source_window, staged.staging_table)
    return fresh


def publish(
    destination: psycopg.Connection,
    load: TableLoad,
    staged: Staged,
    run_id: str,
    restage: Callable[[], Staged] | None = None,
) -> PublishOutcome:
    """Staging → final table and state, in one transaction; rebuilt first by ``restage`` when lost."""
    require_autocommit(destination)
    prepare_destination(destination, load)
    try:
        return _publish_once(destination, load, staged, run_id)
    except StagingLost as lost:
        if restage is None:
            raise TerminalError(f"{lost}; clear the stage task to stage again") from lost
        log.warning("%s: staging it again from the window the check step decided", lost)
        fresh = dataclasses.replace(restage(), stage_id=staged.stage_id)
        return _publish_once(destination, load, fresh, run_id)


def _publish_once(destination: psycopg.Connection, load: TableLoad, staged: Staged, run_id: str) -> PublishOutcome:
    dest = load.destination
    keys = {"pipeline": load.pipeline, "table": dest.table, "stage_id": staged.stage_id or staged.staging_table}
    with destination.transaction():
        destination.execute(sql.publish_lock(), {"lock_key": f"{dest.schema}.{dest.table}"})
        done = destination.execute(sql.find_published(dest.schema), keys).fetchone()
        if done:
            destination.execute(sql.drop_table(dest.schema, staged.staging_table))
            outcome, rows, by_run = done
            return PublishOutcome(rows, outcome == "applied", f"published already by run {by_run} ({outcome})")
        _check_staging(destination, dest.schema, staged)
        newer = destination.execute(
            sql.newer_snapshot_published(dest.schema, staged.load_mode), {**keys, "snapshot_at": staged.snapshot_at}
        ).fetchone()
        if newer:
            result = PublishOutcome(
                0, False, f"not applied: a newer snapshot ({newer[0]:%Y-%m-%d %H:%M:%S.%f %Z}, run {newer[1]}) "
                f"is published already; this {staged.load_mode} one is from {staged.snapshot_at}",
            )  # fmt: skip
        else:
            result = _apply(destination, load, staged, run_id)
        outcome = "applied" if result.applied else "skipped: older snapshot"
        record = {**keys, "run_id": run_id, "outcome": outcome, "rows": result.rows, "snapshot_at": staged.snapshot_at}
        destination.execute(sql.record_published(dest.schema), record)
        destination.execute(sql.prune_published(dest.schema), keys)
        destination.execute(sql.drop_table(dest.schema, staged.staging_table))
    drop_abandoned_staging(destination, dest.schema)
    return result


def drop_abandoned_staging(conn: psycopg.Connection, schema: str) -> None:
    """Drop staging tables of runs that never published (older than a day); a publish that still
    needs one stages it again (StagingLost), so this is safe whatever is running."""
    for (name,) in conn.execute(sql.abandoned_staging(), {"schema": schema}).fetchall():
        log.info("dropping %s.%s: staging of a run that never published", schema, name)
        conn.execute(sql.drop_table(schema, name))


def _apply(destination: psycopg.Connection, load: TableLoad, staged: Staged, run_id: str) -> PublishOutcome:
    dest = load.destination
    exists = destination.execute(sql.table_exists(), {"schema": dest.schema, "table": dest.table}).fetchone()[0]
    if not exists:
        log.info("creating %s.%s from the source's column types", dest.schema, dest.table)
        for statement in sql.create_target_like(dest.schema, dest.table, staged.staging_table, load.primary_key):
            destination.execute(statement)
    applied = 0
    for statement in _publish_statements(load, staged):
        applied = destination.execute(statement).rowcount
    watermark, cursor_type = staged.watermark, None
    if load.cursor:
        if watermark is None:  # staged by an older version, which did not record it
            query = sql.staged_max_cursor(dest.schema, staged.staging_table, load.cursor)
            watermark = destination.execute(query).fetchone()[0]
        column = {"schema": dest.schema, "table": staged.staging_table, "column": load.cursor}
        cursor_type = destination.execute(sql.column_type(), column).fetchone()[0]
    full = staged.load_mode == LoadMode.FULL.value
    state = {
        "pipeline": load.pipeline,
        "table": dest.table,
        "cursor": load.cursor,
        "watermark": watermark,
        "mode": load.mode.value,
        "rows": staged.rows,
        "run_id": run_id,
        "snapshot_at": staged.snapshot_at,
        "zone_digest": staged.zone_digest,
    }
    destination.execute(sql.write_state(dest.schema, cursor_type, full), state)
    kind = "replaced the table with" if full else "upserted"
    return PublishOutcome(applied, True, f"{kind} {staged.rows} staged rows ({applied} written)")


def _check_staging(conn: psycopg.Connection, schema: str, staged: Staged) -> None:
    table = {"schema": schema, "table": staged.staging_table}
    if not conn.execute(sql.table_exists(), table).fetchone()[0]:
        raise StagingLost(f"staging table {schema}.{staged.staging_table} is gone")
    found = conn.execute(sql.count_rows(schema, staged.staging_table)).fetchone()[0]
    if found != staged.rows:
        raise StagingLost(
            f"staging table {schema}.{staged.staging_table} holds {found} rows, the stage step wrote {staged.rows}"
        )


def _publish_statements(load: TableLoad, staged: Staged) -> list[str]:
    dest = load.destination
    if staged.load_mode == LoadMode.INCREMENTAL.value:
        return sql.publish_upsert(
            dest.schema, dest.table, staged.staging_table, staged.columns, load.primary_key, load.cursor
        )
    return sql.publish_replace(dest.schema, dest.table, staged.staging_table, staged.columns)
